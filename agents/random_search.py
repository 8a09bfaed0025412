"""Random search: the best of N random valid plans, a sanity floor for every planner.

Each sample draws an allowed PU per op uniformly, a join probability ``q`` uniformly in
[0, 1] (each op may join its same-PU predecessors' partition with probability ``q``,
so samples range from single-op partitions to maximal runs), and a random execution
sequence (Kahn's algorithm with random priorities). Samples that break a global
constraint are repaired (:mod:`partitiontuner.repair`). The simulator picks
the best; the seed makes the result reproducible.
"""

from __future__ import annotations

import numpy as np

from partitiontuner.agents.base import Planner
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.plan import Plan, make_plan
from partitiontuner.problem import Problem
from partitiontuner.repair import needs_repair, repair
from partitiontuner.runs import maximal_runs, order_partitions
from partitiontuner.simulate import Simulator


class RandomPlanner(Planner):
    """Best of ``samples`` random plans drawn with ``seed``."""

    name = "random"

    def __init__(self, samples: int = 200, seed: int = 0):
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ConfigError(f"random: samples must be a positive integer, got {samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"random: seed must be a non-negative integer, got {seed!r}")
        self.samples = int(samples)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"RandomPlanner(samples={self.samples}, seed={self.seed})"

    def plan(self, problem: Problem) -> Plan:
        g = problem.graph
        n = g.num_ops
        rng = np.random.default_rng(self.seed)
        sim = Simulator(problem)
        choices = [np.flatnonzero(row) for row in problem.allowed]
        counts = np.array([len(c) for c in choices])
        repairing = needs_repair(problem)
        best = None
        error: InfeasiblePlanError | None = None
        for _ in range(self.samples):
            picks = (rng.random(n) * counts).astype(np.int64)
            assign = [int(choices[v][picks[v]]) for v in range(n)]
            joins = (rng.random(n) < rng.random()).tolist()
            parts = maximal_runs(g, assign, lambda v, u, joins=joins: joins[v])
            parts = order_partitions(g, parts, rng.random(len(parts)).tolist())
            if repairing:
                try:
                    parts = repair(problem, parts, sim)
                except InfeasiblePlanError as exc:
                    error = exc
                    continue
            t = sim.makespan([o for o, _ in parts], [p for _, p in parts])
            if best is None or t < best[0]:
                best = (t, parts)
        if best is None:
            assert error is not None
            raise error
        return make_plan(problem, best[1], self.name, {"samples": self.samples, "seed": self.seed})
