"""Progress lines of long loops: how much is done, the rate and the time left, printed at most every ``interval_s``
seconds and once at the end, so a long evaluation run headless (papermill ``--log-output``, a terminal, a log file)
says what it is doing without flooding the output.

    evaluate: 1200/5000 images (24%), 41.3 img/s, ETA 1m32s
    evaluate: 5000 images in 2m01s, 41.3 img/s
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "duration"]


def duration(seconds: float) -> str:
    """``3725`` -> ``'1h02m'``, ``185`` -> ``'3m05s'``, ``42`` -> ``'42s'`` (an ETA)."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Counts images done of ``total`` (None: unknown, no ETA) for the loop named ``what``; :meth:`update` after each
    batch prints a line once ``interval_s`` has passed since the last one, :meth:`close` prints the final line.
    ``clock`` is the time source (``time.perf_counter``)."""

    def __init__(self, what: str, total: int | None, *, interval_s: float = 10.0, unit: str = "images",
                 stream: TextIO | None = None, clock=time.perf_counter) -> None:
        self.what, self.total, self.interval_s, self.unit = what, total, interval_s, unit
        self.stream, self.clock = stream, clock
        self.done = 0
        self.start = self.last = clock()

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def _rate(self, now: float) -> float:
        return self.done / (now - self.start) if now > self.start else 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.last < self.interval_s:
            return
        self.last = now
        rate = self._rate(now)
        if self.total:
            eta = duration((self.total - self.done) / rate) if rate > 0 else "?"
            self._print(f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), "
                        f"{rate:.1f} {self.unit}/s, ETA {eta}")
        else:
            self._print(f"{self.what}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s")

    def close(self) -> None:
        now = self.clock()
        took = now - self.start
        self._print(f"{self.what}: {self.done} {self.unit} in {duration(took) if took >= 60 else f'{took:.1f}s'}, "
                    f"{self._rate(now):.1f} {self.unit}/s")
