"""The oracle's static lower bounds (agents/oracle_bounds.py) against brute force.

Every bound must stay at or below the true optimum (the brute force over the whole
plan space, tests/brute_force.py), on plain random DAGs, modular graphs (cut
vertices, so the bounds compose through the decomposition), graphs with strong
fusion groups and constrained problems (pins and forbids shrink the PUs an op may
use, which the load bound reads).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from brute_force import brute_force
from graphs import chain, problem, two_pu_platform
from test_oracle import modular_graph, random_constraints, with_random_groups

from partitiontuner.agents.oracle import OraclePlanner
from partitiontuner.agents.oracle_bounds import (
    block_lower_bound,
    critical_path_bound,
    load_bound,
    op_lower_work,
)
from partitiontuner.agents.oracle_model import BlockModel, IntTables, rounding_error_us
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.problem import Problem
from partitiontuner.synthetic import random_graph, random_platform, random_profiles

ORACLE = OraclePlanner(time_limit_s=60.0)


def random_problem(seed: int) -> Problem | None:
    rng = np.random.default_rng(seed)
    kind = seed % 4
    n = int(rng.integers(2, 7))
    num_pus = 3 if n <= 4 and rng.random() < 0.5 else 2
    graph = modular_graph(rng, max(n, 3)) if kind == 1 else random_graph(rng, n, max_fan_in=int(rng.integers(1, 3)))
    platform = random_platform(rng, num_pus)
    prof = random_profiles(rng, graph, platform, unsupported=float(rng.uniform(0.0, 0.5)))
    prof = with_random_groups(rng, graph, prof, int(rng.integers(0, 4)) if kind != 2 else 4)
    constraints = random_constraints(rng, graph, platform) if kind == 3 else None
    try:
        return Problem(graph, platform, prof, constraints) if constraints is not None else Problem(graph, platform, prof)
    except InfeasiblePlanError:  # a pin onto a PU that cannot run the op
        return None


@pytest.mark.parametrize("seed", range(220))
def test_every_bound_is_below_the_brute_force_optimum(seed):
    prob = random_problem(seed)
    if prob is None:
        return
    best, _ = brute_force(prob)
    if math.isinf(best):
        return
    tab = IntTables.build(prob)
    err = rounding_error_us(prob.num_ops)
    whole = BlockModel(tab, [(v,) for v in range(prob.num_ops)], None, None)
    lw = op_lower_work(whole)
    if any(all(x is None for x in row) for row in lw):
        return
    for units in (critical_path_bound(whole, lw), load_bound(whole, lw), block_lower_bound(whole)):
        assert tab.to_us(units) - err <= best + 1e-9, (seed, units, best)
    composed = ORACLE.static_lower_bound_us(prob)
    assert composed <= best + 1e-9, (seed, composed, best)
    if seed % 4 == 0:  # the oracle's reported bound mixes these with CP-SAT's and stays valid
        assert ORACLE.plan(prob).info["lower_bound_us"] <= best + 1e-3


def test_chain_bound_is_the_sum_of_the_cheapest_times():
    """On a chain with no fusion, the critical path is every op at its cheapest PU."""
    g = chain(4)
    prob = problem(g, two_pu_platform(), {n.name: [10.0 * (i + 1), 25.0 - 5 * i] for i, n in enumerate(g.nodes)})
    tab = IntTables.build(prob)
    whole = BlockModel(tab, [(v,) for v in range(prob.num_ops)], None, None)
    lw = op_lower_work(whole)
    cheapest = sum(min(t for t in tab.time[v] if t is not None) for v in range(prob.num_ops))
    assert critical_path_bound(whole, lw) == pytest.approx(cheapest)
    assert block_lower_bound(whole) >= cheapest
    assert 0 < ORACLE.static_lower_bound_us(prob) <= ORACLE.plan(prob).info["makespan_us"]


def test_load_bound_counts_ops_only_one_pu_may_run():
    """Ops restricted to one PU load that PU alone: the bound is at least their sum."""
    g = chain(3)
    prob = problem(g, two_pu_platform(), {g.nodes[0].name: [30.0, None], g.nodes[1].name: [40.0, None],
                                          g.nodes[2].name: [5.0, 1.0]})
    tab = IntTables.build(prob)
    whole = BlockModel(tab, [(v,) for v in range(prob.num_ops)], None, None)
    lw = op_lower_work(whole)
    only = [row for row in lw if sum(x is not None for x in row) == 1]
    assert len(only) == 2
    assert load_bound(whole, lw) == pytest.approx(70 / tab.unit_us)  # the CPU-only ops, not (70 + 1) / 2
