"""Progress reporting and cancellation shared by every long task.

A task takes ``progress(fraction, message)`` (any callable, or None) and ``cancel`` (a
``threading.Event``, a callable returning True to stop, or None) and calls
:meth:`Task.check` between steps; on cancel it raises :class:`Cancelled`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import ImmunoDiffError

ProgressCallback = Callable[[float, str], None]
CancelFlag = threading.Event | Callable[[], bool] | None


class Cancelled(ImmunoDiffError):
    """The user cancelled the work; nothing partial was kept."""


def is_cancelled(cancel: CancelFlag) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class Task:
    """Reports progress of one piece of work inside the range [start, end] of its caller's bar."""

    def __init__(self, progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                 start: float = 0.0, end: float = 1.0):
        self.progress, self.cancel, self.start, self.end = progress, cancel, start, end

    def check(self) -> None:
        if is_cancelled(self.cancel):
            raise Cancelled("Cancelled by the user.")

    def report(self, fraction: float, message: str = "") -> None:
        self.check()
        if self.progress is not None:
            self.progress(self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0),
                          message)

    def callback(self) -> ProgressCallback:
        """A plain ``progress(fraction, message)`` callable reporting into this task's range."""
        return self.report

    def sub(self, start: float, end: float) -> Task:
        """A child task covering [start, end] of this task's range."""
        span = self.end - self.start
        return Task(self.progress, self.cancel, self.start + span * start,
                    self.start + span * end)
