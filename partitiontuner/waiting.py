"""Waiting for a time point precisely, from a worker thread (the executor's clock).

Timing uses ``time.perf_counter``. Waiting for a time point (transfer arrivals, the
emulated NPU time, the little-core pad, the common start ``t = 0``) uses
:func:`wait_until`: sleep until :data:`SPIN_MARGIN_S` before the deadline, then spin.
``time.sleep`` alone overshoots by ~75 us on Linux (the default 50 us timer slack plus
wake-up latency); the workers lower their timer slack to 1 ns (``prctl``), which
brings a sleep's overshoot to ~25 us on this 2-core VM, and the final spin (with
``os.sched_yield`` so the GIL and the core are offered to others) removes the rest:
median lateness 0.4 us, p90 0.7 us, at the price of ~60 us of spinning per wait
(:func:`measure_wait_precision` reproduces these numbers). Waiting for another
worker's result blocks on a ``threading.Event``, which wakes ~20-40 us late on this VM
(an idle vCPU must be woken) and would add that to every PU switch; so a waiting
worker blocks only until :data:`SPIN_AHEAD_S` before the producer is expected to end
(the producer's actual start plus its simulated duration) and then spins, for at most
:data:`MAX_SPIN_S`. Spinning yields with ``os.sched_yield``: a spin that keeps the GIL
(or releases it with ``time.sleep(0)``) starves the other workers for up to the 5 ms
GIL switch interval (measured: ~200 us extra per PU switch). The spin is capped at
0.5 ms: a longer spin (it was 2 ms) occupies a core whenever a producer runs longer
than its simulated time, which on ``cpu-2npu`` (three workers on two cores) can take
the core the late producer needs; past the cap a blocked wait's ~30 us is cheaper.
With a calibrated cost model the expected ends are close and the cap is rarely hit.
All of this assumes a
quiet machine: on a loaded one every wake-up waits for a time slice, and measured
times grow with the load.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

#: sleep until this long before a deadline, then spin (see the module docstring)
SPIN_MARGIN_S = 60e-6

_PR_SET_TIMERSLACK = 29
_libc: Any = None




def lower_timer_slack() -> None:
    """Set the calling thread's timer slack to 1 ns (Linux; a no-op elsewhere).

    The default 50 us slack lets the kernel wake a sleeping thread up to 50 us late so
    it can batch wake-ups; the executor wants its sleeps to end on time.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: sleeps are just less precise
        pass


def wait_until(deadline: float, spin_margin_s: float = SPIN_MARGIN_S) -> float:
    """Block until ``time.perf_counter() >= deadline``; return how late it returned (s).

    Sleeps until ``spin_margin_s`` before the deadline, then spins calling
    ``os.sched_yield`` (which releases the GIL, so a spinning worker does not hold up
    a worker whose ONNX Runtime call just returned).
    """
    now = time.perf_counter()
    remaining = deadline - now
    if remaining <= 0:
        return 0.0
    if remaining > spin_margin_s:
        time.sleep(remaining - spin_margin_s)
    while (now := time.perf_counter()) < deadline:
        os.sched_yield()
    return now - deadline


@dataclass(frozen=True)
class WaitPrecision:
    """Lateness of :func:`wait_until` (us) over ``samples`` waits of ``duration_us``,
    and the fraction of the waiting time the thread spent on a CPU."""

    duration_us: float
    samples: int
    median_late_us: float
    p90_late_us: float
    max_late_us: float
    cpu_fraction: float
    sleep_only_median_late_us: float


def measure_wait_precision(duration_us: float = 500.0, samples: int = 200, spin_margin_s: float = SPIN_MARGIN_S) -> WaitPrecision:
    """Measure :func:`wait_until` on this machine (run in a fresh thread, as the workers do)."""
    out: list[WaitPrecision] = []

    def probe() -> None:
        lower_timer_slack()
        d = duration_us * 1e-6
        late, plain = [], []
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        for _ in range(samples):
            late.append(wait_until(time.perf_counter() + d, spin_margin_s) * 1e6)
        cpu = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
        for _ in range(max(10, samples // 4)):
            t = time.perf_counter()
            time.sleep(d)
            plain.append((time.perf_counter() - t - d) * 1e6)
        late.sort()
        out.append(WaitPrecision(duration_us, samples, late[len(late) // 2], late[int(0.9 * (len(late) - 1))],
                                 late[-1], cpu, statistics.median(plain)))

    th = threading.Thread(target=probe, name="wait-probe")
    th.start()
    th.join()
    return out[0]
