"""Local search on the simulator: every result is a valid plan that obeys the
constraints and is never worse than its start; on small graphs it reaches the brute
force's optimum at least sometimes; hand-made cases need each kind of move."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from brute_force import brute_force
from graphs import chain, fork, problem, two_pu_platform

from partitiontuner import synthetic
from partitiontuner.agents.local_search import LocalSearch
from partitiontuner.agents.random_search import RandomPlanner
from partitiontuner.constraints import Constraints, PlacementRule
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import make_plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator

FOREVER = math.inf  # small graphs reach a local optimum long before any deadline matters


def random_problem(rng: np.random.Generator, num_ops: int, num_pus: int) -> Problem:
    g = synthetic.random_graph(rng, num_ops, max_fan_in=int(rng.integers(1, 3)))
    plat = synthetic.random_platform(rng, num_pus)
    prof = synthetic.random_profiles(rng, g, plat, unsupported=float(rng.uniform(0.0, 0.4)))
    kind = int(rng.integers(0, 4))
    names = [n.name for n in g.nodes]
    if kind == 1:
        c = Constraints(max_partitions=int(rng.integers(1, 4)))
    elif kind == 2:
        c = Constraints(min_partition_ops=2)
    elif kind == 3:
        c = Constraints(pins=(PlacementRule(str(rng.choice(names)), "cpu", "name"),),
                        forbids=(PlacementRule(str(rng.choice(names)), plat.names[1], "name"),))
    else:
        c = Constraints()
    try:
        return Problem(g, plat, prof, c)
    except InfeasiblePlanError:
        return Problem(g, plat, prof)


def start_plan(pr: Problem, seed: int):
    """A random valid plan (the random planner's first sample), or None if infeasible."""
    try:
        return RandomPlanner(samples=1, seed=seed).plan(pr)
    except InfeasiblePlanError:
        return None


@pytest.mark.parametrize("seed", range(60))
def test_result_is_valid_and_never_worse(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 14))
    pr = random_problem(rng, n, int(rng.integers(2, 4)))
    start = start_plan(pr, seed)
    if start is None:
        return
    sim = Simulator(pr)
    plan, res = LocalSearch(pr, sim, seed).improve_plan(start, FOREVER)
    validate_plan(pr, plan)  # convex, ordered, pins, forbids, partition limits, memory
    assert res.makespan_us == pytest.approx(sim.plan_makespan(plan))
    assert res.makespan_us <= sim.plan_makespan(start)
    assert res.local_optimum


def test_reaches_the_brute_force_optimum_on_small_graphs():
    hits = tried = 0
    for seed in range(24):
        rng = np.random.default_rng(1000 + seed)
        n = int(rng.integers(3, 6))
        pr = random_problem(rng, n, 2)
        best, _ = brute_force(pr)
        start = start_plan(pr, seed)
        if start is None or math.isinf(best):
            continue
        _, res = LocalSearch(pr, seed=seed).improve_plan(start, FOREVER)
        tried += 1
        assert res.makespan_us >= best - 1e-6  # nothing beats the exhaustive optimum
        hits += res.makespan_us <= best + 1e-6
    assert tried >= 15
    assert hits >= tried // 3, (hits, tried)


def test_merges_a_chain_split_into_single_ops():
    """Every op alone on the NPU pays the dispatch overhead five times; one partition
    pays it once (a merge chain reaches it)."""
    g = chain(5)
    pr = problem(g, two_pu_platform(npu_overhead=20.0), {f"op{i}": [50.0, 5.0] for i in range(5)})
    start = make_plan(pr, [([v], 1) for v in range(5)], "manual")
    plan, res = LocalSearch(pr).improve_plan(start, FOREVER)
    assert [(p.ops, p.device) for p in plan.partitions] == [((0, 1, 2, 3, 4), "npu")]
    assert res.moves_applied >= 4


def test_splits_and_moves_ops_to_run_branches_in_parallel():
    """Two long branches on one PU run one after the other; the optimum puts one on
    each PU (a split, a retarget or op moves get there)."""
    g = fork(2)
    times = {"b0": [100.0, 100.0], "b1": [100.0, 100.0], "join": [1.0, 1.0]}
    pr = problem(g, two_pu_platform(latency_us=1.0), times)
    start = make_plan(pr, [([0, 1, 2], 0)], "manual")
    sim = Simulator(pr)
    plan, res = LocalSearch(pr, sim).improve_plan(start, FOREVER)
    assert res.makespan_us < sim.plan_makespan(start) - 50
    assert res.makespan_us == pytest.approx(brute_force(pr)[0])


def test_swaps_turns_on_a_pu():
    """The long branch should run first on the shared PU; the start runs it last."""
    g = fork(2)
    times = {"b0": [5.0, None], "b1": [100.0, None], "join": [1.0, None]}
    pr = problem(g, two_pu_platform(), times)
    # b0, b1 on the cpu in that order, then join: order does not matter for one PU;
    # with the npu unable to help, the start is already optimal and must stay valid
    start = make_plan(pr, [([0], 0), ([1], 0), ([2], 0)], "manual")
    plan, res = LocalSearch(pr).improve_plan(start, FOREVER)
    validate_plan(pr, plan)
    assert res.makespan_us == pytest.approx(brute_force(pr)[0])


def test_a_passed_deadline_returns_the_start_untouched():
    rng = np.random.default_rng(5)
    pr = random_problem(rng, 12, 3)
    start = start_plan(pr, 5)
    plan, res = LocalSearch(pr).improve_plan(start, time.perf_counter() - 1.0)
    assert res.moves_tried == 0 and not res.local_optimum
    assert [p.ops for p in plan.partitions] == [p.ops for p in start.partitions]


def test_kicks_keep_plans_valid():
    rng = np.random.default_rng(9)
    pr = random_problem(rng, 10, 3)
    start = start_plan(pr, 9)
    ls = LocalSearch(pr, seed=1)
    names = pr.pus
    parts = [(list(p.ops), names.index(p.device)) for p in start.partitions]
    for _ in range(20):
        parts = ls.kick(parts, 3)
        validate_plan(pr, make_plan(pr, parts, "kick"))
