"""Benchmark statistics: median and spread of repeats, host load, rank agreement.

Measured times on a shared machine are noisy and skewed (a preempted run is late,
never early), so every measurement is reported as its median with the 10th and 90th
percentiles, and a warning is raised when the spread or the host's load makes the
number doubtful. Kendall's tau says how well a predicted order (the simulator's)
agrees with a measured one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: a (p90 - p10) / median spread above this is reported as doubtful
MAX_SPREAD = 0.10
#: a 1-minute load average above this fraction of the cores is reported as "loaded"
MAX_LOAD_PER_CORE = 0.5


@dataclass(frozen=True)
class Summary:
    """Median and 10th / 90th percentiles of repeated measurements (same unit)."""

    median: float
    p10: float
    p90: float
    n: int

    @property
    def spread(self) -> float:
        """``(p90 - p10) / median``: 0 for perfectly repeatable runs."""
        return (self.p90 - self.p10) / self.median if self.median > 0 else 0.0


def summarize(values: Sequence[float]) -> Summary:
    """Median, p10 and p90 (linear interpolation, as ``numpy.percentile``)."""
    if not len(values):
        raise ValueError("summarize() needs at least one value")
    a = np.asarray(values, dtype=np.float64)
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return Summary(float(med), float(p10), float(p90), len(a))


def spread_warning(s: Summary, what: str = "the measured makespan") -> str | None:
    """A one-line warning when the repeats disagree by more than :data:`MAX_SPREAD`."""
    if s.n >= 3 and s.spread > MAX_SPREAD:
        return (f"{what} varies by {100 * s.spread:.0f}% between repeats (p10 {s.p10:.1f}, p90 {s.p90:.1f} us); "
                "use more --repeat or a quieter machine")
    return None


def host_load() -> tuple[float, int]:
    """The 1-minute load average (NaN where unknown) and the number of usable cores."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = float("nan")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return load, cores


def load_warning(load: float | None = None, cores: int | None = None) -> str | None:
    """A one-line warning when other processes compete for the cores a run measures on."""
    if load is None or cores is None:
        load, cores = host_load()
    if load == load and load > MAX_LOAD_PER_CORE * cores:  # load == load: not NaN
        return (f"the host is loaded (load average {load:.2f} on {cores} cores): measured times include "
                "waiting for a core and are too high")
    return None


def kendall_tau(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Kendall's tau-b between two orders of the same items (1 = same order, -1 = reversed).

    Ties count as neither concordant nor discordant, and tau-b divides by the number of
    pairs untied in each sequence, so a tie in the prediction does not count against
    the agreement. NaN when either sequence is constant or shorter than 2.
    """
    x = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau: {len(x)} predicted vs {len(y)} measured values")
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float(np.sum(sx * sy) / denom) if denom > 0 else float("nan")
