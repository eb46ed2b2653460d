"""What a piece of the evaluation cost: wall-clock and CPU seconds.

CPU seconds are ``time.process_time``: every thread of this process (PyTorch's intra-op
threads included), nothing of other processes sharing the machine, so they measure the work
a method needed rather than how busy the machine was. On a 2-core CPU fully used, CPU
seconds are about twice the wall-clock seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Stopwatch:
    """Accumulates wall-clock and CPU seconds over the intervals it runs (``pause`` /
    ``resume`` leave out, e.g., a learning curve's evaluation between two budgets)."""

    wall: float = 0.0
    cpu: float = 0.0
    _since: tuple[float, float] | None = None

    @classmethod
    def started(cls) -> Stopwatch:
        return cls().resume()

    def resume(self) -> Stopwatch:
        if self._since is None:
            self._since = (time.perf_counter(), time.process_time())
        return self

    def pause(self) -> Stopwatch:
        if self._since is not None:
            wall, cpu = self._since
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu
            self._since = None
        return self

    def seconds(self) -> float:
        """Wall-clock seconds so far."""
        running = 0.0 if self._since is None else time.perf_counter() - self._since[0]
        return self.wall + running

    def cpu_seconds(self) -> float:
        """CPU seconds so far."""
        running = 0.0 if self._since is None else time.process_time() - self._since[1]
        return self.cpu + running
