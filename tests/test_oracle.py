"""The oracle is exact: it equals an independent brute force over the whole plan space
(with and without constraints), wins the hand-built cases for the right reason, is
never beaten by another planner, and degrades gracefully under a time limit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest
from brute_force import brute_force
from graphs import build, chain, diamond, fork, problem, two_pu_platform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.agents import registry
from partitiontuner.agents.oracle import (
    OraclePlanner,
    decomposition_cut_vertices,
    verified_cut_vertices,
)
from partitiontuner.agents.oracle_model import (
    TIME_UNIT_US,
    BlockModel,
    IntTables,
    rounding_error_us,
    solve_block,
)
from partitiontuner.branches import chain_groups
from partitiontuner.constraints import Constraints, PlacementRule
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.plan import check_plan_constraints, validate_plan
from partitiontuner.platform import Platform, load_platform, platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.profiling import fixtures
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.simulate import Simulator, simulate
from partitiontuner.synthetic import random_graph, random_platform, random_profiles

ORACLE = OraclePlanner(time_limit_s=120.0)


def hyp(examples: int) -> settings:
    """Fixed examples (derandomized, no database): the same ~1,000 problems each run."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------
# random problems


def modular_graph(rng: np.random.Generator, num_ops: int) -> OpGraph:
    """A chain of modules (a single 1x1 Conv, or 2-3 parallel branches of 1-2 Convs
    joined by a Concat): many cut vertices with gaps between them, like the zoo's CNNs."""
    nodes, inits, ch = [], [], {"x": 4}
    cur, i = "x", 0

    def conv(src: str) -> str:
        nonlocal i
        out, cout = f"t{i}", int(rng.integers(1, 9))
        w = numpy_helper.from_array(rng.standard_normal((cout, ch[src], 1, 1)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [src, f"w{i}"], [out], name=f"op{i}", kernel_shape=[1, 1]))
        ch[out] = cout
        i += 1
        return out

    while i < num_ops:
        left = num_ops - i
        if left >= 3 and rng.random() < 0.6:
            k = int(rng.integers(2, 4)) if left >= 4 else 2
            ends = []
            for _ in range(k):
                t = cur
                for _ in range(int(rng.integers(1, 3)) if i + 2 < num_ops else 1):
                    if i < num_ops - 1:
                        t = conv(t)
                ends.append(t)
            ends = [e for e in dict.fromkeys(ends) if e != cur] or [cur]
            if len(ends) > 1:
                out = f"t{i}"
                nodes.append(helper.make_node("Concat", ends, [out], name=f"op{i}", axis=1))
                ch[out] = sum(ch[e] for e in ends)
                i += 1
                cur = out
            else:
                cur = ends[0]
        else:
            cur = conv(cur)
    graph = helper.make_graph(
        nodes, "modular", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, ch[cur], 4, 4])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return load_graph(model, name="modular")


def with_random_groups(rng: np.random.Generator, graph: OpGraph, prof: Profiles, count: int) -> Profiles:
    """Sharper, sparser fusion: ``count`` random chain groups (runs of 2-3 ops of a
    sequential branch, the only groups profiles may hold) get 0.2-0.9x the sum of
    their ops on each PU, and each other group is left unprofiled with probability 0.3
    (so overlapping groups, cut-vertex groups and gap groups compete)."""
    groups = dict(prof.groups)
    keys = sorted(groups)
    for key in keys:
        if rng.random() < 0.3:
            del groups[key]
    for _ in range(count if keys else 0):
        ops = keys[int(rng.integers(len(keys)))]
        groups[ops] = prof.op_latency_us[list(ops)].sum(axis=0) * rng.uniform(0.2, 0.9, size=prof.op_latency_us.shape[1])
    return dataclasses.replace(prof, groups=groups)


def memory_platform(rng: np.random.Generator, base: Platform, graph: OpGraph) -> Platform:
    """``base`` with a memory capacity on every NPU, sized so it sometimes binds."""
    weights = sum(nd.weight_bytes for nd in graph.nodes)
    act = max(t.size_bytes for t in graph.tensors.values())
    pus = []
    for d in base.devices:
        raw = {"name": d.name, "kind": d.kind, "dispatch_overhead_us": d.dispatch_overhead_us}
        if d.kind == "npu":
            raw["supports"] = sorted(d.supports)
            raw["npu"] = {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0}
            raw["memory_mib"] = (weights * rng.uniform(0.1, 0.9) + act * rng.uniform(1.0, 4.0)) / 2**20
        pus.append(raw)
    links = [{"from": a, "to": b, "latency_us": lk.latency_us, "bandwidth_gbps": lk.bandwidth_gbps} for (a, b), lk in base.links.items()]
    return platform_from_dict({"name": base.name + "-mem", "pus": pus, "links": links})


def random_constraints(rng: np.random.Generator, graph: OpGraph, platform: Platform) -> Constraints:
    n, kind = graph.num_ops, int(rng.integers(0, 4))
    if kind == 0:
        return Constraints(max_partitions=int(rng.integers(1, 4)))
    if kind == 1:
        return Constraints(min_partition_ops=int(rng.integers(2, 4)))
    if kind == 2:
        return Constraints(max_partitions=int(rng.integers(2, 5)), min_partition_ops=2)
    pin = PlacementRule(graph.nodes[int(rng.integers(n))].name, platform.names[int(rng.integers(platform.num_pus))], "name")
    forbid = PlacementRule(graph.nodes[int(rng.integers(n))].name, platform.names[1], "name")
    return Constraints(pins=(pin,), forbids=(forbid,))


def check_against_brute_force(prob: Problem) -> None:
    best, best_plan = brute_force(prob)
    n = prob.num_ops
    if math.isinf(best):
        with pytest.raises(InfeasiblePlanError):
            ORACLE.plan(prob)
        return
    plan = ORACLE.plan(prob)
    validate_plan(prob, plan)  # includes the constraints
    makespan = Simulator(prob).plan_makespan(plan)
    tol = rounding_error_us(n)
    assert makespan == pytest.approx(best, abs=tol), (makespan, best, best_plan)
    assert plan.info["makespan_us"] == pytest.approx(makespan, abs=5e-4)  # rounded to 0.001 us
    assert plan.info["proven_optimal"]
    assert plan.info["lower_bound_us"] <= makespan
    assert plan.info["lower_bound_us"] >= best - 2 * tol
    assert 0.0 <= plan.info["gap"] <= 2 * tol / best


def sizes(rng: np.random.Generator, max_ops: int) -> tuple[int, int]:
    """Ops and PUs: 3 PUs only up to 5 ops, so the brute force stays fast."""
    n = int(rng.integers(1, max_ops + 1))
    return n, (int(rng.integers(2, 4)) if n <= 5 else 2)


# ---------------------------------------------------------------------------------
# exactness: >= 1,000 random problems in total


@hyp(450)
@given(seed=st.integers(0, 2**32 - 1))
def test_exact_on_random_dags(seed):
    rng = np.random.default_rng(seed)
    n, num_pus = sizes(rng, 7)
    graph = random_graph(rng, n, max_fan_in=int(rng.integers(1, 3)))
    platform = random_platform(rng, num_pus)
    prof = random_profiles(rng, graph, platform, unsupported=float(rng.uniform(0.0, 0.5)))
    prof = with_random_groups(rng, graph, prof, int(rng.integers(0, 3)))
    check_against_brute_force(Problem(graph, platform, prof))


@hyp(250)
@given(seed=st.integers(0, 2**32 - 1))
def test_exact_on_modular_graphs(seed):
    """Graphs with cut vertices and gaps: every decomposition path, incl. groups of
    cut vertices fused inside cut partitions and gap groups in blocks."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8)) if rng.random() < 0.96 else 8
    num_pus = 3 if n <= 5 and rng.random() < 0.4 else 2
    graph = modular_graph(rng, n)
    platform = random_platform(rng, num_pus)
    prof = random_profiles(rng, graph, platform, unsupported=float(rng.uniform(0.0, 0.4)))
    prof = with_random_groups(rng, graph, prof, int(rng.integers(1, 5)))
    check_against_brute_force(Problem(graph, platform, prof))


@hyp(100)
@given(seed=st.integers(0, 2**32 - 1))
def test_exact_with_strong_fusion(seed):
    """Every profiled group at 0.2-0.7x the sum of its ops: optimal plans run large
    partitions holding several fused groups, cut-vertex groups inside partitions that
    also hold gap ops, and gap groups in the grown parts of cut partitions."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 8))
    num_pus = 3 if n <= 5 and rng.random() < 0.3 else 2
    graph = modular_graph(rng, n) if rng.random() < 0.6 else random_graph(rng, n, max_fan_in=1)
    platform = random_platform(rng, num_pus)
    prof = random_profiles(rng, graph, platform, unsupported=float(rng.uniform(0.0, 0.3)))
    lat = prof.op_latency_us
    groups = {ops: lat[list(ops)].sum(axis=0) * rng.uniform(0.2, 0.7, size=num_pus) for ops in prof.groups if rng.random() < 0.8}
    check_against_brute_force(Problem(graph, platform, dataclasses.replace(prof, groups=groups)))


@hyp(250)
@given(seed=st.integers(0, 2**32 - 1))
def test_exact_under_constraints(seed):
    rng = np.random.default_rng(seed)
    n, num_pus = sizes(rng, 6)
    graph = modular_graph(rng, max(n, 3)) if rng.random() < 0.5 else random_graph(rng, n)
    platform = random_platform(rng, num_pus)
    prof = random_profiles(rng, graph, platform)
    prof = with_random_groups(rng, graph, prof, int(rng.integers(0, 3)))
    if rng.random() < 0.3:
        platform = memory_platform(rng, platform, graph)
        prof = dataclasses.replace(prof, platform=platform.name)
        constraints = Constraints()
    else:
        constraints = random_constraints(rng, graph, platform)
    try:
        prob = Problem(graph, platform, prof, constraints)
    except InfeasiblePlanError:
        return  # a pin onto a PU that cannot run the op
    check_against_brute_force(prob)


@pytest.mark.parametrize("seed", [1002, 1003, 1006, 1007])
def test_decomposition_equals_the_whole_graph_model_beyond_brute_force(seed):
    """9-12 op graphs with 3-6 op gaps and fused cut-vertex groups: the decomposition's
    optimum equals one CP-SAT model of the whole graph (no decomposition)."""
    rng = np.random.default_rng(seed)
    graph = modular_graph(rng, int(rng.integers(9, 13)))
    platform = random_platform(rng, 2)
    prob = Problem(graph, platform, with_random_groups(rng, graph, random_profiles(rng, graph, platform), 4))
    plan = ORACLE.plan(prob)
    assert plan.info["mode"] == "decomposition" and max(plan.info["blocks"]) >= 4
    assert plan.info["cut_groups"] >= 1
    tab = IntTables.build(prob)
    whole = solve_block(tab, [(v,) for v in range(graph.num_ops)], None, None, time_limit_s=60.0)
    assert whole.proven and plan.info["proven_optimal"]
    assert plan.info["makespan_us"] == pytest.approx(tab.to_us(whole.value), abs=rounding_error_us(graph.num_ops))


def test_constrained_cases_exercise_the_whole_graph_model():
    """The constrained cross-check is not vacuous: the relaxed optimum breaks the
    constraint, so the whole-graph model decides."""
    rng = np.random.default_rng(7)
    modes = []
    for _ in range(6):
        graph = modular_graph(rng, 6)
        platform = random_platform(rng, 2)
        prof = random_profiles(rng, graph, platform, unsupported=0.0)
        prob = Problem(graph, platform, prof, Constraints(max_partitions=1))
        check_against_brute_force(prob)
        modes.append(ORACLE.plan(prob).info["mode"])
    assert "constrained" in modes


# ---------------------------------------------------------------------------------
# hand-built cases


def _pu_order(prob: Problem, plan) -> dict[str, list[tuple[int, ...]]]:
    return {pu: [plan.partitions[i].ops for i in idx] for pu, idx in plan.orders(prob.pus).items()}


def test_chain_fuses_a_profiled_group_inside_one_partition():
    """Every op of a chain is a cut vertex; the group (op1, op2) is 4x cheaper fused,
    and the partition holding it may also hold op0 and op3 (one overhead)."""
    g = chain(4)
    prob = problem(g, two_pu_platform(cpu_overhead=1.0, npu_overhead=2.0),
                   {f"op{i}": [10.0, None] for i in range(4)}, groups={("op1", "op2"): [5.0, None]})
    plan = ORACLE.plan(prob)
    # {op0, op1, op2, op3} [0, 1 + 10 + 5 + 10 = 26]
    assert plan.info["makespan_us"] == pytest.approx(26.0, abs=1e-6)
    assert [p.ops for p in plan.partitions] == [(0, 1, 2, 3)]
    assert plan.info["cut_groups"] == 1
    assert verified_cut_vertices(prob) == (0, 1, 2, 3)
    assert brute_force(prob)[0] == pytest.approx(26.0)


def test_best_disjoint_cover_of_overlapping_groups_along_a_chain():
    """One partition of six cut vertices; the oracle must pick the best disjoint groups:
    (op1, op2) + (op3, op4, op5) save 8 + 12 = 20, more than (op0, op1) + (op2, op3) +
    (op4, op5) = 5 + 4 + 6 = 15 or any other disjoint choice."""
    g = chain(6)
    groups = {("op0", "op1"): [15.0, None], ("op1", "op2"): [12.0, None], ("op2", "op3"): [16.0, None],
              ("op4", "op5"): [14.0, None], ("op3", "op4", "op5"): [18.0, None]}
    prob = problem(g, two_pu_platform(cpu_overhead=1.0), {f"op{i}": [10.0, None] for i in range(6)}, groups=groups)
    plan = ORACLE.plan(prob)
    # 1 + 60 - 20
    assert plan.info["makespan_us"] == pytest.approx(41.0, abs=1e-6)
    assert [p.ops for p in plan.partitions] == [tuple(range(6))]
    assert prob.fusion.cover(range(6), 0) == [(1, 2), (3, 4, 5)]
    assert plan.info["cut_groups"] == 2
    assert brute_force(prob)[0] == pytest.approx(41.0)


def _gap_chains():
    """a -> (b1 -> b2 -> b3) and (c1 -> c2) -> d: cut vertices a and d, two chains in the gap."""
    return build([("a", "Relu", ["x"], "ta"), ("b1", "Relu", ["ta"], "tb1"), ("b2", "Relu", ["tb1"], "tb2"),
                  ("b3", "Relu", ["tb2"], "tb3"), ("c1", "Relu", ["ta"], "tc1"), ("c2", "Relu", ["tc1"], "tc2"),
                  ("d", "Add", ["tb3", "tc2"], "td")], ["td"])


def test_a_large_npu_partition_fuses_groups_of_two_chains():
    """The gap's five ops run as one NPU partition (a free slot of the block model) that
    fuses (b2, b3) and (c1, c2); (b1, b2) saves less than (b2, b3) and overlaps it."""
    g = _gap_chains()
    times = {"a": [1.0, None], "d": [1.0, None], **{v: [None, 10.0] for v in ("b1", "b2", "b3", "c1", "c2")}}
    groups = {("b1", "b2"): [None, 12.0], ("b2", "b3"): [None, 11.0], ("b1", "b2", "b3"): [None, 25.0], ("c1", "c2"): [None, 15.0]}
    prob = problem(g, two_pu_platform(cpu_overhead=1.0, npu_overhead=2.0), times, groups=groups)
    plan = ORACLE.plan(prob)
    # a [0, 2]; x1 = 11 us transfer; {b1, b2, b3, c1, c2} npu [13, 13 + 2 + 50 - 9 - 5 = 51];
    # back at 62; d [62, 64]. Two NPU partitions would cost 21 + 2 and 15 + 2 one after the other: 66.
    assert plan.info["makespan_us"] == pytest.approx(64.0, abs=1e-6)
    gap = tuple(sorted(g.index[v] for v in ("b1", "b2", "b3", "c1", "c2")))
    assert (gap, "npu") in [(p.ops, p.device) for p in plan.partitions]
    assert prob.fusion.cover(gap, 1) == sorted([(g.index["b2"], g.index["b3"]), (g.index["c1"], g.index["c2"])])
    assert brute_force(prob)[0] == pytest.approx(64.0)


def test_cut_vertex_group_inside_a_spanning_partition_with_a_fused_gap_chain():
    """p -> q -> (b1 -> b2, c) -> d; p, q, d are cut vertices. The optimum's CPU
    partition {p, q, b1, b2} spans the cut vertex q: it fuses the cut-vertex group
    (p, q) (credited by the dynamic program) and the gap group (b1, b2) in its A part
    (credited by the block model). c and d go to the NPU."""
    g = build([("p", "Relu", ["x"], "tp"), ("q", "Relu", ["tp"], "tq"), ("b1", "Relu", ["tq"], "tb1"),
               ("b2", "Relu", ["tb1"], "tb2"), ("c", "Relu", ["tq"], "tc"), ("d", "Add", ["tb2", "tc"], "td")], ["td"])
    times = {"p": [10.0, None], "q": [10.0, None], "b1": [5.0, None], "b2": [5.0, None], "c": [None, 30.0], "d": [None, 1.0]}
    groups = {("p", "q"): [12.0, None], ("b1", "b2"): [1.0, None]}
    prob = problem(g, two_pu_platform(cpu_overhead=20.0, npu_overhead=10.0), times, groups=groups)
    plan = ORACLE.plan(prob)
    # {p, q, b1, b2} cpu [0, 20 + 12 + 1 = 33]; tq, tb2 reach the npu at 44;
    # {c, d} npu [44, 44 + 10 + 31 = 85]; td back on the host at 96
    assert plan.info["makespan_us"] == pytest.approx(96.0, abs=1e-6)
    idx = g.index
    assert [(p.ops, p.device) for p in plan.partitions] == [
        (tuple(sorted(idx[v] for v in ("p", "q", "b1", "b2"))), "cpu"), (tuple(sorted((idx["c"], idx["d"]))), "npu")]
    assert verified_cut_vertices(prob) == (idx["p"], idx["q"], idx["d"])
    assert plan.info["cut_groups"] == 1
    timing = simulate(prob, plan).partitions[0]
    assert timing.work_us == pytest.approx(13.0)
    assert brute_force(prob)[0] == pytest.approx(96.0)


def test_diamond_runs_its_branches_on_two_pus_in_parallel():
    g = diamond()
    times = {"a": [1.0, None], "b": [50.0, 50.0], "c": [50.0, 50.0], "d": [1.0, None]}
    prob = problem(g, two_pu_platform(cpu_overhead=1.0, npu_overhead=2.0), times)
    plan = ORACLE.plan(prob)
    # a cpu [0, 2]; b cpu [2, 53]; c npu [13, 65]; d cpu [76, 78] (transfers 11 us)
    assert plan.info["makespan_us"] == pytest.approx(78.0, abs=1e-6)
    assert simulate(prob, plan).parallel_pairs()
    assert brute_force(prob)[0] == pytest.approx(78.0)


def test_two_unrelated_ops_share_a_partition():
    """b0 and b1 are independent; one partition saves the CPU's large overhead."""
    g = fork(2)
    times = {"b0": [10.0, None], "b1": [10.0, None], "join": [None, 5.0]}
    prob = problem(g, two_pu_platform(cpu_overhead=20.0, npu_overhead=2.0), times)
    plan = ORACLE.plan(prob)
    # {b0, b1} cpu [0, 40]; join npu [51, 58]; output back on the host at 69
    assert plan.info["makespan_us"] == pytest.approx(69.0, abs=1e-6)
    b0, b1 = g.index["b0"], g.index["b1"]
    assert tuple(sorted((b0, b1))) in [p.ops for p in plan.partitions]
    assert not set(g.succs[b0]) & {b1} and not set(g.succs[b1]) & {b0}
    assert brute_force(prob)[0] == pytest.approx(69.0)


def test_optimum_runs_a_later_op_first():
    """p1 feeds the long NPU op, so the CPU must run p1 before p0 (against creation order)."""
    g = build([("p0", "Relu", ["x"], "t0"), ("p1", "Relu", ["x"], "t1"), ("q0", "Relu", ["t0"], "u0"),
               ("q1", "Relu", ["t1"], "u1"), ("join", "Add", ["u0", "u1"], "out")], ["out"])
    times = {"p0": [10.0, None], "p1": [10.0, None], "q0": [1.0, None], "q1": [None, 100.0], "join": [1.0, None]}
    prob = problem(g, two_pu_platform(cpu_overhead=1.0, npu_overhead=2.0), times)
    plan = ORACLE.plan(prob)
    # cpu: p1 [0, 11], p0 [11, 22], q0 [22, 24]; npu: q1 [22, 124]; join cpu [135, 137]
    assert plan.info["makespan_us"] == pytest.approx(137.0, abs=1e-6)
    p0, p1 = g.index["p0"], g.index["p1"]
    assert p0 < p1
    cpu = _pu_order(prob, plan)["cpu"]
    first = lambda op: next(k for k, ops in enumerate(cpu) if op in ops)  # noqa: E731
    assert first(p1) < first(p0)
    assert brute_force(prob)[0] == pytest.approx(137.0)


def test_memory_limit_splits_the_npu_partition():
    """Both ops belong on the NPU; its memory holds the activations of one op at a time."""
    g = build([("a", "Relu", ["x"], "ta"), ("b", "Relu", ["ta"], "tb")], ["tb"])
    times = {"a": [100.0, 10.0], "b": [100.0, 10.0]}
    free = problem(g, two_pu_platform(), times)
    plan = ORACLE.plan(free)
    # x to the npu at 11; {a, b} [11, 33]; tb back at 44
    assert plan.info["makespan_us"] == pytest.approx(44.0, abs=1e-6)
    assert [(p.ops, p.device) for p in plan.partitions] == [((0, 1), "npu")]
    # x, ta, tb are 1,000 bytes each: a partition of both ops needs 3,000 bytes
    tight = problem(g, two_pu_platform(npu_memory_mib=2500 / 2**20), times)
    plan = ORACLE.plan(tight)
    check_plan_constraints(tight, plan)
    # {a} [11, 23], {b} [23, 35], tb back at 46
    assert plan.info["makespan_us"] == pytest.approx(46.0, abs=1e-6)
    assert [(p.ops, p.device) for p in plan.partitions] == [((0,), "npu"), ((1,), "npu")]
    assert plan.info["proven_optimal"] and plan.info["mode"] == "constrained"
    assert brute_force(tight)[0] == pytest.approx(46.0)


def test_infeasible_constraints_are_reported():
    g = chain(3)
    prob = problem(g, two_pu_platform(), {f"op{i}": [1.0, 1.0] for i in range(3)}, constraints=Constraints(min_partition_ops=4))
    with pytest.raises(InfeasiblePlanError, match="min-partition-ops 4"):
        ORACLE.plan(prob)


# ---------------------------------------------------------------------------------
# the model and its pieces


def test_rounding_is_within_the_stated_bound():
    rng = np.random.default_rng(3)
    graph = random_graph(rng, 6)
    platform = random_platform(rng, 2)
    prob = Problem(graph, platform, random_profiles(rng, graph, platform))
    tab = IntTables.build(prob)
    res = solve_block(tab, [(v,) for v in range(6)], None, None)
    plan = ORACLE.plan(prob)
    assert res.proven
    assert abs(tab.to_us(res.value) - plan.info["makespan_us"]) <= rounding_error_us(6)
    assert rounding_error_us(6) == pytest.approx(32 * TIME_UNIT_US)


@hyp(60)
@given(seed=st.integers(0, 2**32 - 1))
def test_groups_never_join_a_cut_vertex_to_a_gap_op(seed):
    """The lemma behind the decomposition (module docstring of the oracle): a chain
    group holding a verified cut vertex holds only verified cut vertices, so the oracle
    decomposes at all of them."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 13))
    graph = modular_graph(rng, max(n, 3)) if rng.random() < 0.5 else random_graph(rng, n, max_fan_in=int(rng.integers(1, 3)))
    prob = Problem(graph, random_platform(rng, 2), random_profiles(rng, graph, random_platform(rng, 2)))
    cuts = verified_cut_vertices(prob)
    for ops in chain_groups(graph):
        if set(ops) & set(cuts):
            assert set(ops) <= set(cuts), (ops, cuts)
    assert decomposition_cut_vertices(cuts, [frozenset(o) for o in chain_groups(graph)]) == cuts


@pytest.mark.parametrize("model", ["googlenet", "resnet50", "squeezenet", "inception_v2"])
def test_zoo_groups_never_join_a_cut_vertex_to_a_gap_op(zoo_graph, model):
    g = zoo_graph(model)
    prob = problem(g, two_pu_platform(), {nd.name: [1.0, 1.0] for nd in g.nodes})
    cuts = verified_cut_vertices(prob)
    groups = [frozenset(o) for o in chain_groups(g)]
    assert any(gr <= set(cuts) for gr in groups)  # there are cut-vertex groups
    assert decomposition_cut_vertices(cuts, groups) == cuts


def test_decomposition_drops_cut_vertices_that_a_group_crosses():
    """Were a group ever to cross a cut vertex, decomposing there would be wrong: the
    cut vertex is dropped (its blocks merge), repeatedly, until no group crosses one."""
    cuts = (0, 3, 6, 9)
    assert decomposition_cut_vertices(cuts, [frozenset({1, 2}), frozenset({6, 9})]) == cuts
    assert decomposition_cut_vertices(cuts, [frozenset({2, 4})]) == (0, 6, 9)  # spans cut 3
    assert decomposition_cut_vertices(cuts, [frozenset({3, 4})]) == (0, 6, 9)  # cut 3 with a gap op
    # dropping 3 makes {3, 6} cross the kept cut 6, which goes too
    assert decomposition_cut_vertices(cuts, [frozenset({3, 6}), frozenset({2, 4})]) == (0, 9)


@hyp(40)
@given(seed=st.integers(0, 2**32 - 1))
def test_integer_work_matches_the_partition_time(seed):
    """The model's integer partition work (best disjoint cover, dominated groups pruned)
    equals :meth:`Problem.partition_time` up to half a time unit per op."""
    rng = np.random.default_rng(seed)
    graph = random_graph(rng, int(rng.integers(2, 10)), max_fan_in=1)
    platform = random_platform(rng, 2)
    prof = with_random_groups(rng, graph, random_profiles(rng, graph, platform, unsupported=0.0), 3)
    prob = Problem(graph, platform, prof)
    tab = IntTables.build(prob)
    for _ in range(10):
        ops = sorted(int(v) for v in rng.choice(graph.num_ops, size=int(rng.integers(1, graph.num_ops + 1)), replace=False))
        for pu in range(2):
            assert tab.to_us(tab.work(ops, pu)) == pytest.approx(prob.partition_time(ops, pu), abs=0.5 * TIME_UNIT_US * len(ops) + 1e-9)


def test_dominated_groups_are_pruned():
    """(op0, op1, op2) saves 5 but (op0, op1) alone saves 8: the triple is never needed."""
    prob = problem(chain(3), two_pu_platform(), {f"op{i}": [10.0, 10.0] for i in range(3)},
                   groups={("op0", "op1"): [12.0, 20.0], ("op0", "op1", "op2"): [25.0, 10.0]})
    tab = IntTables.build(prob)
    unit = round(1 / TIME_UNIT_US)
    assert tab.savings[frozenset({0, 1})] == [8 * unit, 0]
    assert tab.savings[frozenset({0, 1, 2})] == [0, 20 * unit]  # kept on the npu, where it saves 20
    assert tab.work([0, 1, 2], 0) == 22 * unit and tab.work([0, 1, 2], 1) == 10 * unit


def test_cut_vertices_are_verified():
    prob = problem(diamond(), two_pu_platform(), {"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [1.0, 1.0], "d": [1.0, 1.0]})
    assert verified_cut_vertices(prob) == (0, 3)


def test_bad_time_limit_is_a_config_error():
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="time limit"):
            OraclePlanner(time_limit_s=bad)
    with pytest.raises(ConfigError, match="workers"):
        OraclePlanner(workers=0)


def test_tiny_time_limit_still_returns_a_valid_plan(zoo_graph):
    g = zoo_graph("googlenet")
    platform = load_platform("cpu-npu")
    prob = Problem(g, platform, fixtures.fixture_profiles(g, platform))
    plan = OraclePlanner(time_limit_s=0.01).plan(prob)
    validate_plan(prob, plan)
    info = plan.info
    assert not info["proven_optimal"]
    assert 0 < info["lower_bound_us"] <= info["makespan_us"]
    assert info["gap"] > 0
    assert len(info["blocks"]) == 25 and max(info["blocks"]) == 14


# ---------------------------------------------------------------------------------
# never beaten by another planner (fixture profiles of small zoo models)

OTHERS = ("cpu-only", "npu-first", "greedy", "partitiontuner", "heft", "random")


@pytest.mark.parametrize("model", ["squeezenet", "alexnet", "resnet18"])
@pytest.mark.parametrize("platform_name", ["cpu-npu", "cpu-2npu"])
def test_never_beaten_on_zoo_models(zoo_graph, model, platform_name):
    g = zoo_graph(model)
    platform = load_platform(platform_name)
    prob = Problem(g, platform, fixtures.fixture_profiles(g, platform))
    sim = Simulator(prob)
    plan = OraclePlanner(time_limit_s=60.0).plan(prob)
    validate_plan(prob, plan)
    assert plan.info["proven_optimal"]
    best = plan.info["makespan_us"]
    tol = rounding_error_us(prob.num_ops)
    for method in OTHERS:
        makespan = sim.plan_makespan(registry.make_planner(method).plan(prob))
        assert best <= makespan + tol, (method, best, makespan)


def test_unproven_oracle_is_never_worse_than_the_quick_planners(zoo_graph, monkeypatch):
    """Stopped before it proves optimality, the oracle returns the better of its
    search's plan and the quick planners', and still reports the search's lower bound
    with a positive gap. The stop is deterministic, not a race against the clock:
    every block solve returns what the solver has when its budget runs out before a
    search, the block's quick feasible solution with no proof."""
    monkeypatch.setattr(BlockModel, "solve", lambda self, *args, **kwargs: self.fallback())
    # and no static bounds (on squeezenet they alone prove the fallback plan optimal)
    monkeypatch.setattr("partitiontuner.agents.oracle.block_lower_bound", lambda model: 0)
    g = zoo_graph("squeezenet")
    platform = load_platform("cpu-2npu")
    prob = Problem(g, platform, fixtures.fixture_profiles(g, platform))
    sim = Simulator(prob)
    plan = OraclePlanner(time_limit_s=600.0, workers=1).plan(prob)
    validate_plan(prob, plan)
    info = plan.info
    assert not info["proven_optimal"] and info["gap"] > 0
    assert 0 < info["lower_bound_us"] < info["makespan_us"] == pytest.approx(sim.plan_makespan(plan))
    assert info["incumbent"] in ("search", "npu-first", "greedy", "partitiontuner", "heft", "rl")
    for method in ("npu-first", "greedy", "partitiontuner", "heft", "rl"):
        other = sim.plan_makespan(registry.make_planner(method).plan(prob))
        assert info["makespan_us"] <= other + rounding_error_us(prob.num_ops), method


# ---------------------------------------------------------------------------------
# reproducible and anytime (issue 15, item 3)


def _inception(platform_name: str = "cpu-2npu") -> Problem:
    """inception_v2 on cpu-2npu: blocks of up to 37 ops that CP-SAT cannot prove in
    seconds (the issue's hard case)."""
    g = load_graph_cached("inception_v2")
    platform = load_platform(platform_name)
    return Problem(g, platform, fixtures.fixture_profiles(g, platform))


def load_graph_cached(name: str):
    from partitiontuner.zoo import load_model

    return load_model(name)


def test_time_limit_is_honoured_including_model_building():
    """The issue's acceptance rule: planning time <= 1.1 x limit + 2 s, measured
    around the whole ``plan`` call (tables, model building, the quick incumbents)."""
    import time

    prob = _inception()
    limit = 3.0
    t0 = time.perf_counter()
    plan = OraclePlanner(time_limit_s=limit).plan(prob)
    elapsed = time.perf_counter() - t0
    assert elapsed <= 1.1 * limit + 2.0, elapsed
    validate_plan(prob, plan)
    info = plan.info
    assert not info["proven_optimal"] and 0 < info["lower_bound_us"] < info["makespan_us"]


def _hard_random_dag() -> Problem:
    """A 24-op random DAG on 3 PUs without cut vertices: one block CP-SAT does not
    prove within a fraction of a second of deterministic time."""
    rng = np.random.default_rng(7)
    graph = random_graph(rng, 24, max_fan_in=2)
    platform = random_platform(rng, 3)
    return Problem(graph, platform, random_profiles(rng, graph, platform, unsupported=0.1))


def test_deterministic_mode_gives_the_same_bound_and_plan_twice(monkeypatch):
    """Without ``workers`` the budget is CP-SAT deterministic time fixed before the
    solves start: two runs give the same bound and plan. The deterministic budget is
    made small here so that it, not the wall clock, stops every search even on a
    loaded machine (``reproducible`` says so)."""
    import partitiontuner.agents.oracle as oracle_module

    monkeypatch.setattr(oracle_module, "DET_PER_S", 0.02)
    prob = _hard_random_dag()
    runs = [OraclePlanner(time_limit_s=10.0).plan(prob) for _ in range(2)]
    for plan in runs:
        assert plan.info["deterministic"] and plan.info["reproducible"]
        assert plan.info["block_solves"] > 0 and not plan.info["proven_optimal"]
    a, b = (r.info for r in runs)
    assert a["lower_bound_us"] == b["lower_bound_us"] and a["makespan_us"] == b["makespan_us"]
    assert [(p.ops, p.device) for p in runs[0].partitions] == [(p.ops, p.device) for p in runs[1].partitions]


def test_bound_never_decreases_with_more_time(monkeypatch):
    """Deterministic mode: a longer limit gives every block at least the same budget
    (and the static bounds), so the bound cannot drop."""
    import partitiontuner.agents.oracle as oracle_module

    monkeypatch.setattr(oracle_module, "DET_PER_S", 0.02)
    prob = _hard_random_dag()
    bounds = [OraclePlanner(time_limit_s=t).plan(prob).info["lower_bound_us"] for t in (10.0, 40.0)]
    assert bounds[0] <= bounds[1]
    assert bounds[0] >= OraclePlanner().static_lower_bound_us(prob) - 1e-6


def test_gap_limit_stops_within_the_gap():
    """``gap``: each block stops within the gap of its bound, which composes to the
    same gap over the whole plan (the DP over bounds is within the same ratio)."""
    prob = _hard_random_dag()
    plan = OraclePlanner(time_limit_s=30.0, gap=0.6).plan(prob)
    info = plan.info
    assert info["gap_limit"] == 0.6 and not info["proven_optimal"]
    assert info["gap"] <= 0.6 + 1e-6
    with pytest.raises(ConfigError, match="gap"):
        OraclePlanner(gap=1.5)


def test_progress_line_on_stderr():
    """A progress line carries incumbent, bound, gap and elapsed time."""
    import io

    from partitiontuner.agents.oracle_progress import Progress, format_progress

    line = format_progress(12.34, 200.0, 150.0, "blocks proven 3/4")
    assert line == "oracle: 12.3 s, incumbent 200.000 us, bound 150.000 us, gap 25.00 %, blocks proven 3/4"
    assert "no plan yet" in format_progress(1.0, math.inf, 10.0)
    out = io.StringIO()
    p = Progress(lambda: (100.0, 90.0, ""), stream=out)
    p.emit()
    assert out.getvalue().startswith("oracle: ") and "gap 10.00 %" in out.getvalue()
    assert Progress.wanted(True) and not Progress.wanted(False)


def test_info_numbers_are_rounded(zoo_graph):
    g = zoo_graph("squeezenet")
    platform = load_platform("cpu-npu")
    prob = Problem(g, platform, fixtures.fixture_profiles(g, platform))
    info = OraclePlanner(time_limit_s=60.0).plan(prob).info
    for key in ("lower_bound_us", "makespan_us"):
        assert info[key] == round(info[key], 3)
    assert info["gap"] == float(f"{info['gap']:.6g}")
