"""Tune by measurement: run the best few candidate plans and keep the fastest measured.

The simulator ranks plans; near the top its errors are larger than the margins
between them. ``plan --tune K`` takes the K candidates it predicts fastest among
distinct plans from: the requested planner's own plan, extra samples where the planner
samples (``rl`` and ``random`` with other seeds), and every quick heuristic of the
registry (the oracle's incumbents are among them). It runs them on the executor with
interleaved repeats (:func:`partitiontuner.measure.measure_interleaved`) and returns
the measured-fastest, with predicted vs measured for each and the rank agreement
(Kendall's tau-b: 1 = the simulator ordered them exactly as they measured).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from partitiontuner.errors import ConfigError, PartitionTunerError
from partitiontuner.execute import ExecutionResult
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator
from partitiontuner.stats import kendall_tau

#: heuristics always considered (quick, deterministic)
QUICK_METHODS = ("cpu-only", "npu-first", "greedy", "partitiontuner", "heft", "random")
#: planners that sample: tried again with these seeds
SAMPLING_SEEDS = (1, 2)


@dataclass(frozen=True)
class Candidate:
    source: str
    plan: Plan
    predicted_us: float
    measured: ExecutionResult | None = None


@dataclass(frozen=True)
class TuneResult:
    """The measured candidates (predicted order), the index of the chosen one, and
    Kendall's tau of predicted vs measured makespans."""

    candidates: tuple[Candidate, ...]
    chosen: int
    kendall_tau: float

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "kendall_tau": None if self.kendall_tau != self.kendall_tau else round(self.kendall_tau, 4),
                "candidates": [{"source": c.source, "method": c.plan.method, "num_partitions": c.plan.num_partitions,
                                "predicted_us": round(c.predicted_us, 3),
                                "measured_us": round(c.measured.measured_makespan_us, 3) if c.measured else None,
                                "measured_p10_us": round(c.measured.measured_p10_us, 3) if c.measured else None,
                                "measured_p90_us": round(c.measured.measured_p90_us, 3) if c.measured else None}
                               for c in self.candidates]}


def _key(plan: Plan) -> tuple:
    return tuple((p.ops, p.device) for p in plan.partitions)


def candidates(problem: Problem, method: str, plan: Plan, k: int) -> list[Candidate]:
    """The ``k`` distinct plans predicted fastest (see the module docstring)."""
    from partitiontuner.agents.registry import make_planner

    pool: list[tuple[str, Plan]] = [(method, plan)]
    if method in ("rl", "random"):
        for seed in SAMPLING_SEEDS:
            try:
                pool.append((f"{method} seed {seed}", make_planner(method, seed=seed).plan(problem)))
            except PartitionTunerError:
                pass
    for m in QUICK_METHODS:
        if m != method:
            try:
                pool.append((m, make_planner(m).plan(problem)))
            except PartitionTunerError:  # e.g. a constraint the heuristic cannot meet
                pass
    sim = Simulator(problem)
    seen: dict[tuple, Candidate] = {}
    for source, p in pool:
        key = _key(p)
        if key not in seen:
            seen[key] = Candidate(source, p, sim.plan_makespan(p))
    return sorted(seen.values(), key=lambda c: c.predicted_us)[:k]


def tune(problem: Problem, method: str, plan: Plan, k: int, *, repeat: int = 10, rounds: int = 5, pin_cores: bool = False,
         progress: Callable[[int, int], None] | None = None) -> TuneResult:
    """Measure the ``k`` best candidates and pick the measured-fastest (ties: predicted order)."""
    from partitiontuner.measure import measure_interleaved

    if k < 1:
        raise ConfigError(f"--tune must be >= 1, got {k}")
    cands = candidates(problem, method, plan, k)
    results = measure_interleaved([(problem, c.plan) for c in cands], repeat=repeat, rounds=rounds, pin_cores=pin_cores,
                                  progress=progress)
    measured = tuple(Candidate(c.source, c.plan, c.predicted_us, r) for c, r in zip(cands, results, strict=True))
    chosen = min(range(len(measured)), key=lambda i: (measured[i].measured.measured_makespan_us, i))
    tau = kendall_tau([c.predicted_us for c in measured], [c.measured.measured_makespan_us for c in measured])
    return TuneResult(measured, chosen, tau)

