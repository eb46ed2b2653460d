"""How the command line shows progress and hears a cancel request.

A command's long work takes ``progress(fraction, message)`` and ``cancel()`` callables
(:mod:`ImmunoDiffLib.progress`); here they become a tqdm bar on stderr, or
``PROGRESS <fraction> <message>`` lines on stdout for a program that runs ``immunodiff``
(the Slicer module), and a cancel flag that is set once a given file exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


class TerminalProgress:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on stderr."""

    def __init__(self, description: str):
        self._bar = tqdm(total=1000, desc=description, unit="permille", leave=True, file=sys.stderr,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str = "") -> None:
        self._bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        self._bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """A ``progress(fraction, message)`` callback printing ``PROGRESS <fraction> <message>``
    lines on stdout, flushed, for a parent process (the Slicer module) to parse with
    :func:`ImmunoDiffLib.background.parse_progress_line`."""

    def __call__(self, fraction: float, message: str = "") -> None:
        text = " ".join(message.split())
        print(f"PROGRESS {min(max(fraction, 0.0), 1.0):.4f} {text}", flush=True)

    def close(self) -> None:
        pass


class Silent:
    """No display, for a command whose page shows its own progress."""

    def __call__(self, fraction: float, message: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def progress_display(args, description: str) -> TerminalProgress | LineProgress:
    """The display the command line asked for (``--progress-lines`` where the command has it)."""
    return LineProgress() if getattr(args, "progress_lines", False) else TerminalProgress(
        description)


def cancel_file_flag(path: Path | None):
    """A cancel flag that is set once ``path`` exists (None without a path)."""
    return None if path is None else path.exists
