"""The simulator: hand-computed makespans and invariants on random plans."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import chain, diamond, fork, problem, two_pu_platform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_reference import event_makespan

from partitiontuner.plan import from_orders, make_plan
from partitiontuner.platform import platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator, simulate
from partitiontuner.synthetic import random_graph, random_platform, random_profiles

# two_pu_platform: cpu overhead 1, npu overhead 2, link 10 us + 1,000 bytes/us; every
# tensor of the hand-built graphs is 1,000 bytes, so each crossing costs 11 us.


def test_chain_on_cpu_is_sum_of_ops_and_overheads():
    p = problem(chain(3), two_pu_platform(), {"op0": [10, 2], "op1": [10, 2], "op2": [10, None]})
    plan = make_plan(p, [([0], 0), ([1], 0), ([2], 0)], "test")
    assert simulate(p, plan).makespan_us == pytest.approx(3 * (10 + 1))
    one = make_plan(p, [([0, 1, 2], 0)], "test")
    assert simulate(p, one).makespan_us == pytest.approx(30 + 1)


def test_chain_with_npu_partition_pays_transfers_in_and_out():
    p = problem(chain(3), two_pu_platform(), {"op0": [10, 2], "op1": [10, 2], "op2": [10, None]})
    plan = make_plan(p, [([0, 1], 1), ([2], 0)], "test")
    r = simulate(p, plan)
    # input host->npu 11; npu partition 2+2+2 -> ends 17; to cpu +11 -> 28; op2 10+1 -> 39
    assert r.partitions[0].start_us == pytest.approx(11)
    assert r.partitions[0].end_us == pytest.approx(17)
    assert r.partitions[1].start_us == pytest.approx(28)
    assert r.makespan_us == pytest.approx(39)
    assert [(t.src_device, t.dst_device) for t in r.transfers] == [("cpu", "npu"), ("npu", "cpu")]


def test_output_on_npu_must_come_back_to_host():
    p = problem(chain(2), two_pu_platform(), {"op0": [10, 2], "op1": [10, 2]})
    plan = make_plan(p, [([0, 1], 1)], "test")
    # 11 in, 2+2+2 work, 11 out
    assert simulate(p, plan).makespan_us == pytest.approx(11 + 6 + 11)


def test_diamond_branches_run_in_parallel_on_two_pus():
    p = problem(diamond(), two_pu_platform(), {"a": [5, 5], "b": [20, 20], "c": [20, 20], "d": [5, 5]})
    plan = make_plan(p, [([0], 0), ([1], 0), ([2], 1), ([3], 0)], "test")
    r = simulate(p, plan)
    # a: 0..6; b on cpu: 6..27; c on npu: starts 6+11=17, ends 17+22=39; back to cpu at 50; d: 50..56
    assert [round(t.end_us, 6) for t in r.partitions] == [6, 27, 39, 56]
    assert r.makespan_us == pytest.approx(56)
    assert r.parallel_pairs() == [(1, 2)]
    serial = make_plan(p, [([0], 0), ([1], 0), ([2], 0), ([3], 0)], "test")
    assert simulate(p, serial).makespan_us == pytest.approx(6 + 21 + 21 + 6)


def test_transfer_bound_case_prefers_staying_put():
    # a 1 MB tensor over 1 GB/s costs 10 + 1000 us: moving the middle op is a loss
    plat = two_pu_platform()
    p = problem(chain(3, elems=250_000), plat, {"op0": [10, 1], "op1": [100, 1], "op2": [10, 1]})
    stay = make_plan(p, [([0, 1, 2], 0)], "test")
    move = make_plan(p, [([0], 0), ([1], 1), ([2], 0)], "test")
    assert simulate(p, stay).makespan_us == pytest.approx(121)
    assert simulate(p, move).makespan_us == pytest.approx(11 + 1010 + 3 + 1010 + 11)


def test_partition_runs_its_cheapest_cover_by_profiled_groups():
    p = problem(chain(4), two_pu_platform(), {"op0": [10, 2], "op1": [10, 2], "op2": [10, 2], "op3": [10, 2]},
                groups={("op0", "op1"): [12, None], ("op1", "op2"): [25, 3], ("op1", "op2", "op3"): [16, 5],
                        ("op2", "op3"): [11, 5]})
    sim = Simulator(p)
    assert sim.work([0, 1], 0) == pytest.approx(12)  # exactly a group, fused faster than 20
    assert sim.work([1, 2], 0) == pytest.approx(20)  # group slower than the sum: run one by one
    assert sim.work([1, 2], 1) == pytest.approx(3)
    assert sim.work([0, 1, 2], 0) == pytest.approx(22)  # {op0,op1} fused + op2
    assert sim.work([0, 1, 2, 3], 0) == pytest.approx(12 + 11)  # {op0,op1} + {op2,op3} beats op0 + {op1..op3}
    assert sim.work([1, 2, 3], 0) == pytest.approx(16)
    assert sim.work([0, 2], 0) == pytest.approx(20)  # not a run: nothing fuses
    assert sim.work([0, 1, 2, 3], 1) == pytest.approx(2 + 5)  # npu: op0 + {op1..op3}
    assert p.fusion.cover([0, 1, 2, 3], 0) == [(0, 1), (2, 3)]
    assert sim.work([0, 1, 2, 3], 0) == pytest.approx(p.partition_time([0, 1, 2, 3], 0))


def test_fork_same_tensor_crosses_once():
    p = problem(fork(3), two_pu_platform(), {"b0": [5, 1], "b1": [5, 1], "b2": [5, 1], "join": [1, 1]})
    plan = make_plan(p, [([0], 1), ([1], 1), ([2], 0), ([3], 0)], "test")
    r = simulate(p, plan)
    crossings = [(t.tensor, t.dst_device) for t in r.transfers]
    assert crossings.count(("x", "npu")) == 1


# ---------------------------------------------------------------------------------
# invariants on random DAGs and random valid plans


def random_plan(rng: np.random.Generator, p: Problem):
    """Random PU per op; an op joins the last partition on its PU when the plan stays
    valid (convex, no deadlock), else opens a new one."""
    g = p.graph
    pu = [int(rng.choice(np.flatnonzero(p.allowed[v]))) for v in range(g.num_ops)]
    parts: list[list[int]] = []
    for v in range(g.num_ops):
        mine = [i for i in range(len(parts)) if pu[parts[i][0]] == pu[v]]
        if mine and rng.random() < 0.6:
            parts[mine[-1]].append(v)
            if _valid(p, parts, pu):
                continue
            parts[mine[-1]].pop()
        parts.append([v])
    return _as_plan(p, parts, pu)


def _as_plan(p: Problem, parts, pu):
    names = p.pus
    orders = {n: [i for i in range(len(parts)) if names[pu[parts[i][0]]] == n] for n in names}
    return from_orders(p, [(ops, names[pu[ops[0]]]) for ops in parts], orders, "random")


def _valid(p: Problem, parts, pu) -> bool:
    from partitiontuner.errors import InfeasiblePlanError

    done = {v for ops in parts for v in ops}
    try:
        return _as_plan_partial(p, parts, pu, done)
    except InfeasiblePlanError:
        return False


def _as_plan_partial(p: Problem, parts, pu, done) -> bool:
    """Convexity and deadlock-freedom of a partial plan (ops decided so far)."""
    from partitiontuner.errors import InfeasiblePlanError

    g = p.graph
    owner = {v: i for i, ops in enumerate(parts) for v in ops}
    # convex: no path from a partition through other ops back into it
    for ops in parts:
        inside = set(ops)
        reach: set[int] = set()
        for v in sorted(done):
            if v in inside:
                if any(u in reach for u in g.preds[v]):
                    raise InfeasiblePlanError("not convex")
            elif any(u in inside or u in reach for u in g.preds[v]):
                reach.add(v)
    # no deadlock: partition graph + per-PU creation order is acyclic
    n = len(parts)
    deps = [set() for _ in range(n)]
    for i, ops in enumerate(parts):
        for v in ops:
            deps[i].update(owner[u] for u in g.preds[v] if owner[u] != i)
    for j in set(pu):
        seq = [i for i in range(n) if pu[parts[i][0]] == j]
        for a, b in zip(seq, seq[1:], strict=False):
            deps[b].add(a)
    state = [0] * n

    def visit(i):
        if state[i] == 1:
            raise InfeasiblePlanError("deadlock")
        if state[i] == 0:
            state[i] = 1
            for k in deps[i]:
                visit(k)
            state[i] = 2

    for i in range(n):
        visit(i)
    return True


@st.composite
def random_case(draw, groups: bool = True):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = random_graph(rng, draw(st.integers(1, 12)))
    plat = random_platform(rng, draw(st.integers(2, 3)))
    prof = random_profiles(rng, g, plat, groups=groups)
    return Problem(g, plat, prof), rng


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_fast_simulator_equals_event_simulation(case):
    p, rng = case
    plan = random_plan(rng, p)
    assert simulate(p, plan).makespan_us == pytest.approx(event_makespan(p, plan), rel=1e-9, abs=1e-9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case(groups=False))
def test_makespan_lower_bounds(case):
    p, rng = case
    plan = random_plan(rng, p)
    r = simulate(p, plan)
    g = p.graph
    best = p.op_time.min(axis=1)
    longest = np.zeros(g.num_ops)
    for v in range(g.num_ops):
        longest[v] = best[v] + max((longest[u] for u in g.preds[v]), default=0.0)
    assert r.makespan_us >= longest.max() - 1e-6
    busy = sum(t.end_us - t.start_us for t in r.partitions)
    assert r.makespan_us >= busy / p.num_pus - 1e-6
    assert max(r.busy_us().values()) <= r.makespan_us + 1e-6


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_single_pu_plan_is_sum_of_partitions(case):
    p, rng = case
    plan = make_plan(p, [([v], p.host) for v in range(p.num_ops)], "cpu")
    expected = sum(p.op_time[v, p.host] + p.overhead[p.host] for v in range(p.num_ops))
    assert simulate(p, plan).makespan_us == pytest.approx(expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_renaming_pus_changes_nothing(case):
    p, rng = case
    plan = random_plan(rng, p)
    rename = {n: f"unit_{k}" for k, n in enumerate(reversed(p.pus))}
    devices = []
    for d in p.platform.devices:
        devices.append({"name": rename[d.name], "kind": d.kind, "dispatch_overhead_us": d.dispatch_overhead_us,
                        **({"supports": sorted(d.supports)} if d.supports is not None else {}),
                        **({"npu": dict(d.npu.__dict__)} if d.npu else {})})
    links = [{"from": rename[a], "to": rename[b], "latency_us": lk.latency_us, "bandwidth_gbps": lk.bandwidth_gbps}
             for (a, b), lk in p.platform.links.items()]
    plat2 = platform_from_dict({"name": "renamed", "pus": devices, "links": links, "host": rename[p.platform.host]})
    from partitiontuner.profiling.profiles import Profiles

    prof2 = Profiles(p.graph.name, p.graph.content_hash, "renamed", plat2.names, p.profiles.op_names,
                     p.profiles.op_latency_us, p.profiles.op_spread, p.profiles.groups)
    p2 = Problem(p.graph, plat2, prof2)
    plan2 = make_plan(p2, [(q.ops, rename[q.device]) for q in plan.partitions], "renamed")
    assert simulate(p2, plan2).makespan_us == pytest.approx(simulate(p, plan).makespan_us)
