"""Progress of long loops: a tqdm bar on a terminal, plain log lines when output is redirected.

tqdm redraws its bar with carriage returns; written to a file or a pipe (SLURM logs,
``python train.py > log``) those pile up on one line and the next log line starts in the middle
of the bar. Off a terminal, :func:`progress` therefore logs one complete line at most every
``every_s`` seconds instead (``epoch 3/120: 1200/5005 steps (24%), 2.1 steps/s, loss=2.31``):
short loops print nothing and the caller's own summary line follows.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

log = logging.getLogger("fst.progress")


def plural(unit: str) -> str:
    """``step`` -> ``steps``, ``batch`` -> ``batches``."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x", "z")) else "s")


class LineProgress:
    """The subset of tqdm's interface the engine uses (``update``, ``set_postfix``, ``close``),
    reported as a log line at most every ``every_s`` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, every_s: float):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s = every_s
        self.postfix: dict[str, Any] = {}
        self._start_n, self._t0 = initial, time.monotonic()
        self._last = self._t0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        rate = (self.n - self._start_n) / max((now or time.monotonic()) - self._t0, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = "".join(f", {k}={v}" for k, v in self.postfix.items())
        units = plural(self.unit)
        return f"{self.desc}: {done} {units}{pct}, {rate:.3g} {units}/s{post}"

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        pass


class _Off(LineProgress):
    def __init__(self):
        super().__init__(None, "", "step", 0, every_s=float("inf"))

    def update(self, n: int = 1) -> None:
        pass


def progress(
    total: int | None,
    desc: str,
    *,
    enabled: bool = True,
    unit: str = "step",
    initial: int = 0,
    leave: bool = True,
    every_s: float = 60.0,
    stream: TextIO | None = None,
):
    """A progress reporter for ``total`` units: a tqdm bar if ``stream`` (default stderr) is a
    terminal, else a :class:`LineProgress`; nothing when ``enabled`` is false."""
    if not enabled:
        return _Off()
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            leave=leave,
            dynamic_ncols=True,
            file=stream,
        )
    return LineProgress(total, desc, unit, initial, every_s)


def track(iterable: Iterable, desc: str, *, total: int | None = None, **kwargs) -> Iterator:
    """``for x in track(loader, "eval"): ...`` with :func:`progress` (``total``: ``len()`` if
    the iterable has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress(total, desc, **kwargs)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
