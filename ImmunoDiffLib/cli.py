"""The ``immunodiff`` command: builds the parser from :mod:`ImmunoDiffLib.commands` and
dispatches; each command lives in its own module there.

    immunodiff data fetch [--dest DIR]
    immunodiff crop CT (--point X Y Z | --mask LABEL) -o OUT.nii.gz [--png OUT.png]
    immunodiff segment CT -o DIR [--backend auto|paper|lungmask|totalsegmentator|classic]
    immunodiff simulate [--n 40] [--seed 0] [-o DIR]
    immunodiff train STAGE --cohort CSV -o DIR   (STAGE: 1A, 1B, 1C, 2, heads, all)
    immunodiff predict --ct CT --point X Y Z --var age=64 ... -o DIR  (or --cohort CSV)
    immunodiff evaluate --cohort CSV -o DIR  (5-fold CV: the paper's Tables 1-3)
    immunodiff demo [--output DIR]
    immunodiff review [CT] [--port 8080] [--open]  (the review in the browser)
Exit status: 0 done, 2 bad input (one line naming what is wrong), 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import __version__
from .commands import (
    align,
    crop,
    data,
    demo,
    evaluate,
    predict,
    review,
    segment,
    simulate,
    train,
)
from .commands.terminal import Silent, cancel_file_flag, progress_display
from .errors import ImmunoDiffError
from .progress import Cancelled

CANCELLED_EXIT = 130  # the shell's code for a command stopped by the user
BAD_INPUT_EXIT = 2  # argparse's code for a bad command line
COMMANDS = {"data": data, "crop": crop, "segment": segment, "align": align, "simulate": simulate,
            "train": train, "predict": predict, "evaluate": evaluate, "demo": demo,
            "review": review}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="immunodiff",
        description="ImmunoDiff: immunotherapy response prediction from chest CT "
                    "(research use only; not for clinical decisions).")
    parser.add_argument("--version", action="version", version=f"immunodiff {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def _tolerate_plain_terminals() -> None:
    """Print characters such as ± and µ as escapes on terminals that only take ASCII."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _terminate_as_interrupt() -> None:
    """SIGTERM (a parent stopping this process) unwinds like Ctrl-C: outputs being written
    are discarded, nothing partial is kept."""
    if threading.current_thread() is threading.main_thread():
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    _tolerate_plain_terminals()
    _terminate_as_interrupt()
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        progress = (progress_display(args, command.TITLE)
                    if getattr(command, "SHOWS_PROGRESS", True) else Silent())
        try:
            result = command.run(args, progress, cancel_file_flag(getattr(args, "cancel_file",
                                                                          None)))
        finally:
            progress.close()
    except Cancelled as error:
        print(f"immunodiff: cancelled: {error}", file=sys.stderr)
        return CANCELLED_EXIT
    except ImmunoDiffError as error:
        print(f"immunodiff: error: {error}", file=sys.stderr)
        return BAD_INPUT_EXIT
    except KeyboardInterrupt:
        print("immunodiff: cancelled; no partial output was kept.", file=sys.stderr)
        return CANCELLED_EXIT
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
