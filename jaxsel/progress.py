"""Progress that reads well both in a terminal and in a log file.

``bar(...)`` takes tqdm's arguments and returns a tqdm bar when standard error is a terminal (or a
notebook), and otherwise a :class:`Lines` reporter with the same interface that prints single lines
(stage, done/total, rate, ETA, the postfix) when it starts, at most every ``INTERVAL`` seconds, and
when it ends, instead of redrawing a bar with carriage returns.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from jaxsel.errors import say

INTERVAL = 30.0  # seconds between two lines of the same stage in a log


def interactive() -> bool:
    """Whether progress goes to a person: a terminal, or a Jupyter kernel."""
    return (sys.stderr is not None and sys.stderr.isatty()) or "ipykernel" in sys.modules


def bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
        leave: bool = True, initial: int = 0):
    """A tqdm bar in a terminal or notebook, else a :class:`Lines` reporter (nothing when ``disable``,
    nor in a multi-process run's processes other than 0, which report for all)."""
    from jaxsel.io import writes_files
    disable = disable or not writes_files() or sys.stderr is None  # nowhere to draw it (errors.say)
    if disable or interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial)
    return Lines(iterable, total=total, desc=desc, unit=unit, initial=initial)


def write(message: str) -> None:
    """An informational line on standard error (with the progress lines: standard output holds
    results only, e.g. ``jaxsel data --json``) that does not break a bar being drawn; none in a
    multi-process run's processes other than 0, as for :func:`bar`."""
    from jaxsel.io import writes_files
    if writes_files():
        say(message, beside_bars=True)


class Lines:
    """tqdm's interface (iteration, ``update``, ``set_postfix``, ``set_postfix_str``, ``close``, ``with``),
    printing ``desc: done/total unit (pct) rate/s, ETA m:ss, postfix`` lines to standard error."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float = INTERVAL, clock=time.monotonic):
        self.iterable, self.desc, self.unit, self.interval, self.clock = iterable, desc, unit, interval, clock
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n, self.start_n, self.postfix, self.closed, self.shown = initial, initial, "", False, None
        self.start = self.last = clock()
        self._print()

    def _print(self) -> None:
        elapsed = self.clock() - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [f"{self.desc}: {done}" + (f" ({self.n / self.total:.0%})" if self.total else "")]
        if self.n > self.start_n and elapsed > 0:
            parts.append(f"{rate:.3g} {self.unit}/s, {elapsed:.0f}s")
            if self.total and rate > 0 and self.n < self.total:
                eta = (self.total - self.n) / rate
                parts.append(f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        if self.postfix:
            parts.append(self.postfix)
        say(", ".join(parts))
        self.last, self.shown = self.clock(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.shown != self.n:  # the last line already says where it ended
                self._print()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
