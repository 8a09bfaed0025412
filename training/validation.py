"""Checkpoint selection: greedy decoding of unseen-by-PPO reference problems.

Training validates on the training zoo models on ``cpu-npu`` (the corpus's ``zoo``
entries) against a reference makespan: the best of the quick planners
(:data:`partitiontuner.agents.registry.QUICK_METHODS`) or the oracle. The checkpoint
whose mean ratio is lowest is kept as ``<out stem>-best.pt``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.env.features import ProblemContext
from partitiontuner.problem import Problem

#: one validation problem: model name, problem, reference makespan (us)
ValidationProblem = tuple[str, Problem, float]


def validation_set(entries: Iterable, reference: str) -> list[ValidationProblem]:
    """``(name, problem, reference makespan)`` for the corpus entries of group ``zoo``
    (training zoo models on cpu-npu); ``reference`` is ``baselines`` or ``oracle``."""
    from partitiontuner.agents.registry import make_planner, quick_planners
    from partitiontuner.simulate import Simulator

    out = []
    for e in entries:
        if e.group != "zoo":
            continue
        pr = e.problem
        sim = Simulator(pr)
        planners = [make_planner("oracle")] if reference == "oracle" else quick_planners()
        ref = min(sim.plan_makespan(planner.plan(pr)) for planner in planners)
        out.append((pr.graph.name, pr, ref))
    return out


def validate(agent: GNNPolicy, val: Sequence[ValidationProblem]) -> dict[str, float]:
    """Greedy-decode every validation problem: makespan / reference per model, mean and max."""
    from partitiontuner.agents.rl_planner import decode

    ratios = {}
    agent.eval()
    for name, pr, ref in val:
        ctx = ProblemContext(pr)
        plan = decode(agent, ctx, 1)[0]
        ratios[name] = ctx.sim.plan_makespan(plan) / ref
    agent.train()
    vals = list(ratios.values())
    return {"mean": float(np.mean(vals)), "max": float(np.max(vals)), **ratios} if vals else {}
