"""``immunodiff predict`` in a separate process, as the Slicer module runs it, so that the
application stays responsive while a case is computed: the command line, its progress lines,
cancel.

The child prints ``PROGRESS <fraction> <message>`` lines (``--progress-lines``) and stops as
soon as its cancel file exists (``--cancel-file``), writing nothing (outputs are written
atomically at the end). :class:`BackgroundJob` reads its output on a thread; the caller polls
(the module with a QTimer), so nothing here blocks and nothing here needs Qt.

    job = BackgroundJob(predict_command(sys.executable, ct, out, point, clinical_file), cancel)
    job.start()
    while not job.finished:
        for kind, *values in job.poll(): ...     # ("progress", 0.42, "generating"), ("log", line)
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

PROGRESS_PREFIX = "PROGRESS "
CANCEL_GRACE_S = 10.0  # after the cancel file, how long the child may take to stop by itself
LIBRARY_PARENT = Path(__file__).resolve().parents[1]  # the folder that holds ImmunoDiffLib/


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """(fraction, message) of a ``PROGRESS`` line; None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    number, _, message = line[len(PROGRESS_PREFIX):].strip().partition(" ")
    try:
        fraction = float(number)
    except ValueError:
        return None
    return min(max(fraction, 0.0), 1.0), message


def predict_command(python: str, ct: str | os.PathLike, output: str | os.PathLike,
                    point_lps: Sequence[float] | None, clinical_file: str | os.PathLike, *,
                    cancel_file: str | os.PathLike, bundle: str | os.PathLike | None = None,
                    anatomy: str = "auto", steps: int = 25, samples: int = 2, seed: int = 0,
                    device: str = "cpu", mask: str | os.PathLike | None = None,
                    scenarios: bool = False, case_id: str = "case",
                    followup: str | os.PathLike | None = None,
                    recist_scenarios: bool = False) -> list[str]:
    """The argv of ``immunodiff predict`` for one case, progress as lines: the tumour given by
    ``point_lps`` (mm) or by a drawn ``mask`` (whose centre is then the point), not both.
    ``followup``: the patient's real follow-up CT, aligned and compared after the prediction
    (``--followup``). ``recist_scenarios``: also the follow-ups "if it reaches CR / PR / SD /
    PD" (``--recist-scenarios``)."""
    if (point_lps is None) == (mask is None):
        raise ValueError("Give either the tumour point or a tumour mask.")
    point = [] if point_lps is None else ["--point", *(repr(float(v)) for v in point_lps)]
    command = [str(python), "-m", "ImmunoDiffLib.cli", "predict", "--ct", str(ct), *point,
               "--clinical", str(clinical_file), "--id", case_id, "-o", str(output),
               "--anatomy", anatomy, "--steps", str(steps),
               "--samples", str(samples), "--seed", str(seed), "--device", device,
               "--progress-lines", "--cancel-file", str(cancel_file)]
    if bundle:
        command += ["--bundle", str(bundle)]
    if mask:
        command += ["--mask", str(mask)]
    if scenarios:
        command.append("--scenarios")
    if recist_scenarios:
        command.append("--recist-scenarios")
    if followup:
        command += ["--followup", str(followup)]
    return command


def library_environment(base: dict | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the library's parent folder first
    on PYTHONPATH, so that ``python -m ImmunoDiffLib.cli`` finds this copy of the library."""
    environment = dict(os.environ if base is None else base)
    paths = [str(LIBRARY_PARENT)] + [p for p in environment.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environment


def _popen(command: list[str], environment: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                            errors="replace", bufsize=1, env=environment)


class BackgroundJob:
    """One child process: its output lines as events, its exit code, cancel.

    ``launch(command, environment)`` starts the process (default: :mod:`subprocess`; the
    Slicer module passes one built on ``slicer.util.launchConsoleProcess``) and must return a
    Popen-like object whose stdout yields text lines (stderr merged)."""

    def __init__(self, command: list[str], cancel_file: str | os.PathLike,
                 environment: dict[str, str] | None = None,
                 launch: Callable[[list[str], dict], subprocess.Popen] = _popen,
                 keep_lines: int = 200):
        self.command = command
        self.cancel_file = Path(cancel_file)
        self.environment = library_environment() if environment is None else environment
        self._launch = launch
        self._events: queue.Queue = queue.Queue()
        self._process = None
        self._reader = None
        self._tail: deque[str] = deque(maxlen=keep_lines)
        self.cancelled = False
        self.returncode: int | None = None

    def start(self) -> BackgroundJob:
        self.cancel_file.unlink(missing_ok=True)
        self._process = self._launch(self.command, self.environment)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for raw in self._process.stdout:
            line = raw.rstrip("\n")
            progress = parse_progress_line(line)
            self._events.put(("progress", *progress) if progress else ("log", line))
        self._process.stdout.close()
        self.returncode = self._process.wait()

    @property
    def finished(self) -> bool:
        """True once the child has exited and every line was read."""
        return self._reader is not None and not self._reader.is_alive()

    @property
    def succeeded(self) -> bool:
        return self.finished and self.returncode == 0 and not self.cancelled

    def poll(self) -> list[tuple]:
        """Events since the last call: ("progress", fraction, message) or ("log", line)."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            if event[0] == "log":
                self._tail.append(event[1])
            events.append(event)

    def output_tail(self, lines: int = 20) -> str:
        """The last log lines seen by :meth:`poll` (for an error message)."""
        return "\n".join(list(self._tail)[-lines:])

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the child to stop (its cancel file); kill it if it has not stopped after
        ``grace_s`` seconds. Returns at once."""
        self.cancelled = True
        self.cancel_file.parent.mkdir(parents=True, exist_ok=True)
        self.cancel_file.touch()
        threading.Thread(target=self._kill_after, args=(grace_s,), daemon=True).start()

    def _kill_after(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return
            time.sleep(0.1)
        self._process.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the child has exited (tests and scripts; the panel polls instead)."""
        if self._reader is not None:
            self._reader.join(timeout)
        return self.returncode


def python_executable() -> str:
    """The Python to run the child with: Slicer's PythonSlicer where there is one, else this
    interpreter."""
    return shutil.which("PythonSlicer") or sys.executable
