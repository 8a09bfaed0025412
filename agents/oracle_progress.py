"""A progress line on stderr while the oracle searches: incumbent, bound, gap, elapsed.

A long search must not look hung, and where it stops it should already have said how
good its plan is. A daemon thread asks the search for its current incumbent and lower
bound (``snapshot``) and prints one line every :data:`EVERY_S` seconds once
:data:`AFTER_S` seconds have passed: short solves print nothing. Only to stderr (never
into ``--json`` stdout), and only when asked or when stderr is a terminal.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

#: first line after this many seconds
AFTER_S = 3.0
#: then one line every this many seconds
EVERY_S = 5.0


def format_progress(elapsed_s: float, incumbent_us: float, bound_us: float, detail: str = "") -> str:
    """One progress line (``incumbent_us`` may be ``inf``: no plan yet)."""
    if math.isfinite(incumbent_us) and incumbent_us > 0:
        gap = max(0.0, (incumbent_us - bound_us) / incumbent_us)
        text = f"incumbent {incumbent_us:.3f} us, bound {bound_us:.3f} us, gap {100 * gap:.2f} %"
    else:
        text = f"no plan yet, bound {bound_us:.3f} us"
    return f"oracle: {elapsed_s:.1f} s, {text}" + (f", {detail}" if detail else "")


class Progress:
    """Prints :func:`format_progress` lines from a background thread.

    Args:
        snapshot: returns ``(incumbent_us, bound_us, detail)`` at any moment (called
            from the progress thread; it must only read).
        stream: where to print (default: stderr).
    """

    def __init__(self, snapshot: Callable[[], tuple[float, float, str]] | None = None, stream: TextIO | None = None):
        self.snapshot = snapshot
        self.stream = stream if stream is not None else sys.stderr
        self.lines = 0
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="oracle-progress", daemon=True)

    @staticmethod
    def wanted(progress: bool | None) -> bool:
        """``progress`` if given, else whether stderr is a terminal."""
        if progress is not None:
            return progress
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def __enter__(self) -> Progress:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        if self._stop.wait(AFTER_S):
            return
        while True:
            self.emit()
            if self._stop.wait(EVERY_S):
                return

    def emit(self) -> None:
        """Print one line now (if the search has something to say)."""
        if self.snapshot is None:
            return
        try:
            incumbent, bound, detail = self.snapshot()
        except Exception:  # noqa: BLE001 - the search is mid-update; try again next time
            return
        self.stream.write(format_progress(time.perf_counter() - self._t0, incumbent, bound, detail) + "\n")
        self.stream.flush()
        self.lines += 1
