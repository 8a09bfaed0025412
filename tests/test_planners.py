"""Planners: validity everywhere, hand-computed answers on small graphs, constraints,
the paper's DP against brute force, the registry."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from graphs import build, chain, diamond, fork, problem, two_pu_platform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitiontuner import synthetic
from partitiontuner.agents import registry
from partitiontuner.agents.baselines import CpuOnlyPlanner, NpuFirstPlanner
from partitiontuner.agents.greedy import GreedyPlanner
from partitiontuner.agents.heft import HeftPlanner, _earliest_slot
from partitiontuner.agents.paper import PartitionTunerPlanner, parallel_blocks
from partitiontuner.agents.random_search import RandomPlanner
from partitiontuner.constraints import Constraints, parse_rule
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.plan import make_plan, memory_use, validate_plan
from partitiontuner.platform import platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.repair import repair
from partitiontuner.runs import maximal_runs, order_partitions
from partitiontuner.simulate import Simulator, simulate

#: every planner except the oracle and the learned policy
CLASSICAL_METHODS = ("cpu-only", "npu-first", "greedy", "partitiontuner", "heft", "random")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def planner(method: str):
    return registry.make_planner(method, samples=8 if method == "random" else None)


def makespan(p: Problem, plan) -> float:
    validate_plan(p, plan)
    return Simulator(p).plan_makespan(plan)


def devices(p: Problem, plan) -> list[str]:
    return plan.device_of(p.num_ops)


def random_problem(seed: int, num_ops: int | None = None, num_pus: int | None = None, constraints: Constraints | None = None) -> Problem:
    rng = np.random.default_rng(seed)
    g = synthetic.random_graph(rng, num_ops or int(rng.integers(2, 16)))
    pl = synthetic.random_platform(rng, num_pus or int(rng.integers(2, 4)))
    return Problem(g, pl, synthetic.random_profiles(rng, g, pl, unsupported=0.3), constraints or Constraints())


# ---------------------------------------------------------------------------------
# every planner is valid


@FAST
@given(seed=st.integers(0, 10_000))
def test_every_planner_gives_a_valid_plan_on_random_graphs(seed):
    p = random_problem(seed)
    sim = Simulator(p)
    for m in CLASSICAL_METHODS:
        plan = planner(m).plan(p)
        validate_plan(p, plan)
        assert plan.method == m
        assert np.isfinite(sim.plan_makespan(plan))


# ---------------------------------------------------------------------------------
# hand-built cases


def test_cpu_only_on_a_chain_is_the_sum_of_op_times_plus_one_dispatch():
    p = problem(chain(4), two_pu_platform(cpu_overhead=1.0), {"op0": [10, 1], "op1": [20, 1], "op2": [30, 1], "op3": [40, 1]})
    plan = CpuOnlyPlanner().plan(p)
    assert [(q.ops, q.device) for q in plan.partitions] == [((0, 1, 2, 3), "cpu")]
    assert makespan(p, plan) == pytest.approx(101.0)


def test_cpu_only_fails_clearly_when_an_op_is_pinned_elsewhere():
    c = Constraints(pins=(parse_rule("op1=npu", "=", "pin"),))
    p = problem(chain(3), two_pu_platform(), {"op0": [1, 1], "op1": [1, 1], "op2": [1, 1]}, constraints=c)
    with pytest.raises(InfeasiblePlanError, match="cpu-only: op 'op1' may not run on the host 'cpu': pinned elsewhere"):
        CpuOnlyPlanner().plan(p)


def test_npu_first_puts_exactly_the_supported_ops_on_the_npu():
    times = {"op0": [10, 50], "op1": [10, None], "op2": [1, 50], "op3": [1, 50]}
    p = problem(chain(4), two_pu_platform(), times)
    plan = NpuFirstPlanner().plan(p)
    assert [(q.ops, q.device) for q in plan.partitions] == [((0,), "npu"), ((1,), "cpu"), ((2, 3), "npu")]


@FAST
@given(seed=st.integers(0, 10_000))
def test_npu_first_uses_the_first_npu_that_may_run_each_op(seed):
    p = random_problem(seed, num_pus=3)
    dev = devices(p, NpuFirstPlanner().plan(p))
    for v in range(p.num_ops):
        expect = "npu0" if p.allowed[v, 1] else ("npu1" if p.allowed[v, 2] else "cpu")
        assert dev[v] == expect


def test_greedy_picks_the_fastest_pu_when_transfers_and_dispatch_are_free():
    pl = two_pu_platform(cpu_overhead=0.0, npu_overhead=0.0, latency_us=0.0, bandwidth_gbps=1e9)
    p = problem(chain(4), pl, {"op0": [5, 9], "op1": [7, 3], "op2": [4, 4.5], "op3": [10, 2]})
    plan = GreedyPlanner().plan(p)
    assert devices(p, plan) == ["cpu", "npu", "cpu", "npu"]
    assert makespan(p, plan) == pytest.approx(14.0, abs=1e-3)


def test_greedy_counts_dispatch_and_the_transfers_it_causes():
    # 1,000-byte tensors over a 10 us + 1 GB/s link: 11 us per crossing
    p = problem(chain(3), two_pu_platform(), {"op0": [10, 1], "op1": [30, 1], "op2": [5, 1]})
    plan = GreedyPlanner().plan(p)
    # op0: cpu 10+1 < npu 1+2+11; op1: npu 1+2+11 < cpu 30+1; op2: npu 1+2 < cpu 5+1+11
    assert [(q.ops, q.device) for q in plan.partitions] == [((0,), "cpu"), ((1, 2), "npu")]
    # cpu 0..11, tensor arrives 22, npu 22..26, output back on the host at 37
    assert makespan(p, plan) == pytest.approx(37.0)


def test_heft_runs_the_branches_of_a_fork_in_parallel():
    p = problem(fork(2), two_pu_platform(latency_us=1.0), {"b0": [100, 100], "b1": [100, 100], "join": [1, 1]})
    plan = HeftPlanner().plan(p)
    dev = devices(p, plan)
    assert {dev[0], dev[1]} == {"cpu", "npu"} and dev[2] == "cpu"
    # b0 on cpu 0..101; b1 on npu 2..104, its output on the cpu at 106; join 106..108
    assert makespan(p, plan) == pytest.approx(108.0)
    assert simulate(p, plan).parallel_pairs()
    assert plan.info["grouping"] == "single-ops"  # merging join into b0's partition would wait for b1


def test_heft_insertion_finds_the_earliest_idle_gap():
    starts, ends = [0.0, 20.0, 40.0], [10.0, 30.0, 50.0]
    assert _earliest_slot(starts, ends, 5.0, 5.0) == 10.0
    assert _earliest_slot(starts, ends, 5.0, 10.0) == 10.0
    assert _earliest_slot(starts, ends, 5.0, 11.0) == 50.0
    assert _earliest_slot(starts, ends, 31.0, 9.0) == 31.0
    assert _earliest_slot([], [], 3.0, 100.0) == 3.0


def test_partitiontuner_runs_parallel_branches_on_different_pus():
    # two equal branches of two ops; one PU alone needs 4 x 50 us, two PUs half that
    g = build([("a0", "Relu", ["x"], "a"), ("a1", "Relu", ["a"], "a_"), ("b0", "Relu", ["x"], "b"), ("b1", "Relu", ["b"], "b_"),
               ("join", "Add", ["a_", "b_"], "out")], ["out"])
    times = {"a0": [50, 50], "a1": [50, 50], "b0": [50, 50], "b1": [50, 50], "join": [1, 1]}
    p = problem(g, two_pu_platform(latency_us=1.0), times)
    assert parallel_blocks(g) == [((0, 1), (2, 3))]
    plan = PartitionTunerPlanner().plan(p)
    dev = devices(p, plan)
    assert dev[0] == dev[1] != dev[2] == dev[3]
    assert plan.info["parallel_blocks"] == 1
    assert makespan(p, plan) < 200.0
    serial = PartitionTunerPlanner(parallel=False).plan(p)
    assert makespan(p, plan) < makespan(p, serial)


def _blocks_graph(rng: np.random.Generator):
    """Fork-join blocks of 2-3 branches of 1-3 ops; the last may end without a join."""
    nodes, prev, outputs = [], "x", None
    num_blocks = int(rng.integers(1, 4))
    for b in range(num_blocks):
        outs = []
        for k in range(int(rng.integers(2, 4))):
            t = prev
            for j in range(int(rng.integers(1, 4))):
                nodes.append((f"b{b}_{k}_{j}", "Relu", [t], f"t{b}_{k}_{j}"))
                t = f"t{b}_{k}_{j}"
            outs.append(t)
        if b == num_blocks - 1 and rng.random() < 0.3:
            outputs = outs
            break
        nodes.append((f"join{b}", "Sum", outs, f"join{b}"))
        prev = f"join{b}"
        if rng.random() < 0.5:
            nodes.append((f"after{b}", "Relu", [prev], f"after{b}"))
            prev = f"after{b}"
    return build(nodes, outputs or [prev])


@FAST
@given(seed=st.integers(0, 100_000))
def test_partition_scheduler_window_ranks_mappings_like_the_whole_plan(seed):
    """The scheduler scores a block on its window alone: the whole plan's makespan must
    differ from the window's by the same constant for every mapping of the block."""
    from partitiontuner.agents import paper

    rng = np.random.default_rng(seed)
    g = _blocks_graph(rng)
    pl = two_pu_platform(cpu_overhead=float(rng.uniform(0, 10)), npu_overhead=float(rng.uniform(0, 20)),
                         latency_us=float(rng.uniform(0, 20)), extra_npus=int(rng.integers(0, 2)))
    p = Problem(g, pl, synthetic.random_profiles(rng, g, pl, unsupported=0.2))
    sim = Simulator(p)
    placement = paper.backend_finder(p, sim)
    regions = paper._regions(g)
    assert regions
    block_of = [-1] * g.num_ops
    for k, r in enumerate(regions):
        for v in r.gap:
            block_of[v] = k
    base = paper.blocked_partitions(g, placement, block_of)
    owner = {v: i for i, (ops, _) in enumerate(base) for v in ops}
    for r in regions:
        window = paper._Window(sim, r, base[owner[r.fork]] if r.fork >= 0 else None, base[owner[r.join]] if r.join < g.num_ops else None)
        offsets = []
        for _ in range(5):
            choice = [int(rng.integers(p.num_pus)) if rng.random() < 0.6 else None for _ in r.branches]
            choice = [c if c is not None and p.allowed[list(br), c].all() else None for c, br in zip(choice, r.branches, strict=True)]
            trial = placement.copy()
            paper._map_in_place(trial, r.branches, choice)
            whole = order_partitions(g, paper.blocked_partitions(g, trial, block_of))
            offsets.append(sim.makespan([o for o, _ in whole], [q for _, q in whole]) - window.makespan(trial, paper._rules(trial)["merged"], False))
        assert max(offsets) - min(offsets) < 1e-6


def _chain_makespan(p: Problem, parts: list[list[int]], pus: list[int]) -> float:
    """A chain's plans run one partition after the other: the input crosses from the
    host, each partition waits for its predecessor's tensor, the output goes back."""
    size = 1000  # every tensor of the hand-built chains
    t, prev = 0.0, p.host
    for ops, q in zip(parts, pus, strict=True):
        t += p.transfer_us(prev, q, size) + p.partition_time(ops, q) + p.overhead[q]
        prev = q
    return t + p.transfer_us(prev, p.host, size)


def _brute_force_chain(p: Problem) -> float:
    """Every placement and every cut of a chain into contiguous partitions, each costed
    by :meth:`Problem.partition_time` (the fusion rule) and checked against the simulator."""
    sim = Simulator(p)
    n, best = p.num_ops, np.inf
    for assign in itertools.product(range(p.num_pus), repeat=n):
        if not all(p.allowed[v, assign[v]] for v in range(n)):
            continue
        forced = [assign[i] != assign[i + 1] for i in range(n - 1)]
        free = [i for i in range(n - 1) if not forced[i]]
        for cuts in itertools.product([False, True], repeat=len(free)):
            cut = list(forced)
            for i, c in zip(free, cuts, strict=True):
                cut[i] = c
            parts, cur = [], [0]
            for i in range(1, n):
                if cut[i - 1]:
                    parts.append(cur)
                    cur = []
                cur.append(i)
            parts.append(cur)
            pus = [assign[q[0]] for q in parts]
            t = _chain_makespan(p, parts, pus)
            assert t == pytest.approx(sim.makespan(parts, pus), rel=1e-12, abs=1e-9)
            best = min(best, t)
    return best


def _random_chain_problem(rng: np.random.Generator, n: int) -> Problem:
    """A chain of ``n`` ops on 2-3 PUs, some ops unsupported off the host, random
    profiled pairs and triples (some slower than their ops, some unsupported)."""
    num_pus = int(rng.integers(2, 4))
    pl = two_pu_platform(cpu_overhead=float(rng.uniform(0, 10)), npu_overhead=float(rng.uniform(0, 30)),
                         latency_us=float(rng.uniform(0, 20)), bandwidth_gbps=float(rng.uniform(0.1, 2)), extra_npus=num_pus - 2)
    times = {}
    for i in range(n):
        row = [float(rng.uniform(1, 100)) for _ in range(num_pus)]
        for j in range(1, num_pus):
            if rng.random() < 0.25:
                row[j] = None
        times[f"op{i}"] = row
    groups = {}
    for k in (2, 3):
        for s in range(n - k + 1):
            if rng.random() < 0.6:
                names = tuple(f"op{i}" for i in range(s, s + k))
                groups[names] = [None if any(times[x][j] is None for x in names) else
                                 sum(times[x][j] for x in names) * float(rng.uniform(0.3, 1.1)) for j in range(num_pus)]
    return problem(chain(n), pl, times, groups)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), n=st.integers(2, 5))
def test_paper_dp_matches_brute_force_on_a_single_chain(seed, n):
    """On a one-chain graph the backend finder alone (no scheduler, no fallback) is exact."""
    from partitiontuner.agents import paper

    p = _random_chain_problem(np.random.default_rng(seed), n)
    sim = Simulator(p)
    pl = paper.backend_finder(p, sim)
    parts = maximal_runs(p.graph, pl.assign, lambda v, u: pl.segment[v] == pl.segment[u])
    best = _brute_force_chain(p)
    assert sim.makespan([o for o, _ in parts], [q for _, q in parts]) == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert makespan(p, PartitionTunerPlanner().plan(p)) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_paper_dp_keeps_a_fused_group_inside_a_larger_partition():
    times = {"op0": [100, 40], "op1": [100, 40], "op2": [100, 40], "op3": [100, 40]}
    # op1+op2 fused on the npu in 10 us: one npu partition of 40 + 10 + 40, plus 2 dispatch
    p = problem(chain(4), two_pu_platform(latency_us=0.0), times, {("op1", "op2"): [150, 10]})
    plan = PartitionTunerPlanner().plan(p)
    assert [(q.ops, q.device) for q in plan.partitions] == [((0, 1, 2, 3), "npu")]
    assert plan.info["fused_groups"] == 1
    assert makespan(p, plan) == pytest.approx(1 + 90 + 2 + 1)


def test_paper_dp_follows_a_fused_group_to_its_pu():
    # alone each op is faster on the npu (11 + 20 + 2 + 11 = 44 vs 61 on the cpu), but
    # the pair fused on the cpu takes 15 us: 15 + 1 = 16
    times = {"op0": [30, 10], "op1": [30, 10]}
    p = problem(chain(2), two_pu_platform(), times, {("op0", "op1"): [15, 25]})
    plan = PartitionTunerPlanner().plan(p)
    assert [(q.ops, q.device) for q in plan.partitions] == [((0, 1), "cpu")]
    assert makespan(p, plan) == pytest.approx(16.0)
    # a slower group time is no saving: the ops run one by one on the npu
    p = problem(chain(2), two_pu_platform(), times, {("op0", "op1"): [70, 25]})
    plan = PartitionTunerPlanner().plan(p)
    assert [(q.ops, q.device) for q in plan.partitions] == [((0, 1), "npu")]
    assert plan.info["fused_groups"] == 0
    assert makespan(p, plan) == pytest.approx(44.0)


@FAST
@given(seed=st.integers(0, 10_000))
def test_partitiontuner_is_never_worse_than_the_paper_baselines(seed):
    p = random_problem(seed, num_ops=int(np.random.default_rng(seed).integers(2, 40)))
    sim = Simulator(p)
    pt = sim.plan_makespan(PartitionTunerPlanner().plan(p))
    for base in (GreedyPlanner(), NpuFirstPlanner()):
        assert pt <= sim.plan_makespan(base.plan(p)) + 1e-9


@FAST
@given(seed=st.integers(0, 10_000))
def test_repair_merge_costs_track_the_simulators_fused_work(seed):
    """The merger updates fusion savings incrementally; they must equal Simulator.work."""
    from partitiontuner.repair import Merger

    rng = np.random.default_rng(seed)
    g = synthetic.random_graph(rng, int(rng.integers(4, 20)), max_fan_in=int(rng.integers(1, 3)))  # fan-in 1: long chains
    pl = synthetic.random_platform(rng, int(rng.integers(2, 4)))
    p = Problem(g, pl, synthetic.random_profiles(rng, g, pl, unsupported=0.2))
    sim = Simulator(p)
    parts = order_partitions(p.graph, [([v], int(rng.choice(np.flatnonzero(p.allowed[v])))) for v in range(p.num_ops)])
    m = Merger(p, sim, parts)
    for _ in range(p.num_ops):
        pairs = sorted(m.pairs([]))
        rng.shuffle(pairs)
        for a, b in pairs:
            seq = m.merged_sequence(a, b)
            common = np.flatnonzero(m.allow[a] & m.allow[b])
            if seq is None or not len(common):
                continue
            for q in common:
                q = int(q)
                assert m.merged_cost(a, b, q) == pytest.approx(sim.work(m.ops[a] + m.ops[b], q) + sim.overhead[q], rel=1e-12, abs=1e-9)
            keep, gone = (a, b) if a in seq else (b, a)
            m.apply(keep, gone, int(rng.choice(common)), seq)
            assert m.cost(keep) == pytest.approx(sim.work(m.ops[keep], m.pu[keep]) + sim.overhead[m.pu[keep]], rel=1e-12, abs=1e-9)
            break
        else:
            break


def test_random_search_is_seeded_and_more_samples_never_hurt():
    p = random_problem(7, num_ops=14, num_pus=3)
    a = RandomPlanner(samples=10, seed=3).plan(p)
    b = RandomPlanner(samples=10, seed=3).plan(p)
    assert a.partitions == b.partitions
    more = RandomPlanner(samples=40, seed=3).plan(p)
    assert makespan(p, more) <= makespan(p, a) + 1e-9


# ---------------------------------------------------------------------------------
# partitions from placements


def test_runs_merge_branches_at_a_join():
    g = diamond()
    # a on npu; b, c, d on cpu: d joins b's and c's partitions into one
    parts = maximal_runs(g, [1, 0, 0, 0])
    assert sorted((tuple(o), q) for o, q in parts) == [((0,), 1), ((1, 2, 3), 0)]


def test_runs_refuse_a_join_that_would_make_a_cycle():
    g = build([("a", "Relu", ["x"], "ta"), ("b", "Relu", ["ta"], "tb"), ("c", "Add", ["ta", "tb"], "tc")], ["tc"])
    parts = maximal_runs(g, [0, 1, 0])  # c reads a (cpu) and b (npu), and b reads a
    assert parts == [([0], 0), ([1], 1), ([2], 0)]


@FAST
@given(seed=st.integers(0, 10_000), join=st.floats(0, 1))
def test_runs_are_always_valid_and_one_pu_gives_one_partition_per_component(seed, join):
    p = random_problem(seed, num_ops=int(np.random.default_rng(seed).integers(2, 30)))
    rng = np.random.default_rng(seed + 1)
    assign = [int(rng.choice(np.flatnonzero(row))) for row in p.allowed]
    joins = rng.random(p.num_ops) < join
    parts = maximal_runs(p.graph, assign, lambda v, u: bool(joins[v]))
    for key in (None, rng.random(len(parts)).tolist()):
        validate_plan(p, make_plan(p, order_partitions(p.graph, parts, key), "x"))
    host_only = maximal_runs(p.graph, [p.host] * p.num_ops)
    assert len(host_only) == _weak_components(p)


def _weak_components(p: Problem) -> int:
    parent = list(range(p.num_ops))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for e in p.graph.edges:
        parent[find(e.src)] = find(e.dst)
    return len({find(v) for v in range(p.num_ops)})


# ---------------------------------------------------------------------------------
# constraints


def test_every_planner_obeys_pins_and_forbids():
    fast_npu = {"a": [50, 1], "b": [50, 1], "c": [50, 1], "d": [50, 1]}
    c = Constraints(pins=(parse_rule("c=cpu", "=", "pin"),), forbids=(parse_rule("a:npu", ":", "forbid"),))
    p = problem(diamond(), two_pu_platform(), fast_npu, constraints=c)
    for m in CLASSICAL_METHODS:
        if m == "cpu-only":
            continue
        dev = devices(p, planner(m).plan(p))
        assert dev[2] == "cpu" and dev[0] == "cpu", m
    c = Constraints(forbids=(parse_rule("Relu:npu", ":", "forbid"),))
    p = problem(diamond(), two_pu_platform(), fast_npu, constraints=c)
    for m in CLASSICAL_METHODS:
        dev = devices(p, planner(m).plan(p))
        assert dev[:3] == ["cpu", "cpu", "cpu"], m


@FAST
@given(seed=st.integers(0, 10_000), limit=st.integers(1, 4), min_ops=st.integers(1, 3))
def test_every_planner_obeys_partition_limits(seed, limit, min_ops):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 20))
    p = random_problem(seed, num_ops=n, constraints=Constraints(max_partitions=limit, min_partition_ops=min(min_ops, n)))
    for m in CLASSICAL_METHODS:
        plan = planner(m).plan(p)
        validate_plan(p, plan)  # checks the constraints too
        assert plan.num_partitions <= limit
        assert min(len(q.ops) for q in plan.partitions) >= min(min_ops, n)


def test_memory_capacity_splits_and_moves_work_off_the_npu():
    # 1,000-byte tensors: a partition of k chain ops holds k + 1 tensors on the npu
    pl = two_pu_platform(npu_memory_mib=3000 / 2**20)
    p = problem(chain(4), pl, {f"op{i}": [50, 1] for i in range(4)})
    for m in CLASSICAL_METHODS:
        plan = planner(m).plan(p)
        validate_plan(p, plan)
        assert memory_use(p, plan)[1] <= 3000
        assert all(len(q.ops) <= 2 for q in plan.partitions if q.device == "npu"), m
    assert devices(p, NpuFirstPlanner().plan(p)).count("npu") >= 2


@FAST
@given(seed=st.integers(0, 10_000), share=st.floats(0.05, 0.9))
def test_every_planner_obeys_weight_memory_on_random_graphs(seed, share):
    rng = np.random.default_rng(seed)
    g = synthetic.random_graph(rng, int(rng.integers(4, 18)))
    total = float(sum(nd.weight_bytes for nd in g.nodes))
    biggest_act = max(_act(g, v) for v in range(g.num_ops))
    cap = share * total + biggest_act
    pl = platform_from_dict({
        "name": "mem", "pus": [
            {"name": "cpu", "kind": "cpu", "dispatch_overhead_us": 2.0},
            {"name": "npu", "kind": "npu", "dispatch_overhead_us": 5.0, "supports": ["Conv", "Concat"], "memory_mib": cap / 2**20,
             "npu": {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0}}],
        "links": [{"between": ["cpu", "npu"], "latency_us": 3.0, "bandwidth_gbps": 1.0}]})
    prof = synthetic.random_profiles(rng, g, pl, unsupported=0.0)
    prof.op_latency_us[:, 1] *= 0.1  # the npu is attractive: planners want to overfill it
    p = Problem(g, pl, prof)
    for m in CLASSICAL_METHODS:
        plan = planner(m).plan(p)
        validate_plan(p, plan)
        assert memory_use(p, plan)[1] <= cap


def _act(g, v):
    return sum(g.tensors[t].size_bytes for t in (*g.nodes[v].inputs, *g.nodes[v].outputs))


def test_impossible_partition_limit_names_the_two_ops():
    c = Constraints(pins=(parse_rule("op0=npu", "=", "pin"),), max_partitions=1)
    p = problem(chain(3), two_pu_platform(), {"op0": [1, 1], "op1": [1, None], "op2": [1, 1]}, constraints=c)
    for m in CLASSICAL_METHODS:
        msg = "may not run on the host" if m == "cpu-only" else \
            "--max-partitions 1 cannot be met: op 'op0' may only run on npu and op 'op1' only on cpu"
        with pytest.raises(InfeasiblePlanError, match=msg):
            planner(m).plan(p)


def test_impossible_min_partition_ops_and_memory_are_clear():
    p = problem(chain(4), two_pu_platform(), {f"op{i}": [1, 1] for i in range(4)}, constraints=Constraints(min_partition_ops=5))
    with pytest.raises(InfeasiblePlanError, match="--min-partition-ops 5 cannot be met: model 'chain4' has only 4 ops"):
        GreedyPlanner().plan(p)
    c = Constraints(pins=(parse_rule("op0=npu", "=", "pin"),))
    p = problem(chain(2), two_pu_platform(npu_memory_mib=1500 / 2**20), {"op0": [1, 1], "op1": [1, 1]}, constraints=c)
    for m in ("npu-first", "greedy", "partitiontuner", "heft"):
        with pytest.raises(InfeasiblePlanError, match=r"memory of npu \(1.5 KiB\) cannot be met: 1 op\(s\) may only run on npu \(e.g. 'op0'\)"):
            planner(m).plan(p)


def test_min_partition_ops_that_isolates_a_pinned_op_is_reported():
    c = Constraints(pins=(parse_rule("op1=npu", "=", "pin"),), forbids=(parse_rule("op0:npu", ":", "forbid"), parse_rule("op2:npu", ":", "forbid")),
                    min_partition_ops=2)
    p = problem(chain(3), two_pu_platform(), {f"op{i}": [1, 1] for i in range(3)}, constraints=c)
    with pytest.raises(InfeasiblePlanError, match="--min-partition-ops 2 cannot be met: the partition holding op 'op0' \\(which may only run on cpu\\) can be merged with no neighbour \\(e.g. op 'op1' next to it may only run on npu\\)"):
        GreedyPlanner().plan(p)


def test_repair_leaves_unconstrained_plans_alone_and_merges_by_makespan():
    p = problem(chain(4), two_pu_platform(latency_us=0.0), {"op0": [10, 1], "op1": [10, 1], "op2": [1, 10], "op3": [1, 10]})
    parts = [([0, 1], 1), ([2, 3], 0)]
    assert repair(p, parts) == parts
    c = Constraints(max_partitions=1)
    p1 = problem(chain(4), two_pu_platform(latency_us=0.0), {"op0": [10, 1], "op1": [10, 1], "op2": [1, 10], "op3": [1, 10]}, constraints=c)
    # one partition: cpu 22 + 1 vs npu 22 + 2 plus the input and output transfers
    assert repair(p1, parts) == [([0, 1, 2, 3], 0)]


# ---------------------------------------------------------------------------------
# registry


def test_registry_rejects_unknown_methods_and_options():
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        registry.make_planner("magic")
    with pytest.raises(ConfigError, match="method 'greedy' has no option 'samples'"):
        registry.make_planner("greedy", samples=3)
    with pytest.raises(ConfigError, match="samples must be a positive integer"):
        registry.make_planner("random", samples=0)
    with pytest.raises(ConfigError, match="time limit must be a positive number"):
        registry.make_planner("oracle", time_limit_s=0)
    with pytest.raises(ConfigError, match="switch_penalty_us must be a number >= 0"):
        registry.make_planner("partitiontuner", switch_penalty_us=-1.0)
    assert isinstance(registry.make_planner("random", samples=None, seed=None), RandomPlanner)
    assert registry.make_planner("random", samples=5, seed=2).samples == 5
    for m in CLASSICAL_METHODS:
        assert registry.make_planner(m).name == m
    help_text = registry.planner_options_help()
    assert all(help_text.count(f"{m}:") >= 1 for m in registry.METHODS)


def test_registry_imports_oracle_and_rl_only_when_asked(monkeypatch):
    code = "import sys, partitiontuner.agents.registry; print(any(m.endswith(('.oracle', '.rl_planner')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(registry._CLASSES, "oracle", "partitiontuner.agents.no_such_module:OraclePlanner")
    with pytest.raises(ConfigError, match="method 'oracle' is not available"):
        registry.make_planner("oracle")


# ---------------------------------------------------------------------------------
# the zoo on every preset (committed fixture profiles)

PRESETS = ("cpu-npu", "cpu-2npu", "big-little-npu", "zcu102-vta")


def _zoo_models():
    from partitiontuner.zoo import ZOO

    return list(ZOO)


@pytest.mark.parametrize("model", _zoo_models())
def test_every_planner_on_every_zoo_model_and_preset(model):
    from partitiontuner.profiling.fixtures import fixture_dir
    from partitiontuner.workflow import ProblemSpec, load_problem

    assert (fixture_dir() / f"{model}.json").is_file(), f"committed fixture profiles for {model} are missing"
    for preset in PRESETS:
        p = load_problem(ProblemSpec(model, preset, profiles="fixture", progress=False))
        sim = Simulator(p)
        spans = {}
        for m in CLASSICAL_METHODS:
            plan = registry.make_planner(m, samples=3 if m == "random" else None).plan(p)
            validate_plan(p, plan)
            spans[m] = sim.plan_makespan(plan)
        # the paper's algorithm is at least as good as its two baselines here
        assert spans["partitiontuner"] <= min(spans["npu-first"], spans["greedy"]) * (1 + 1e-9), (preset, spans)
