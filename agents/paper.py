"""The paper's algorithm (PartitionTuner, ETRI Journal 2023) as NEST-C implements it.

Modules, in the paper's order, and the choices this implementation makes:

1. **Branch extractor.** Sequential branches are the maximal chains of
   :func:`partitiontuner.branches.sequential_branches` (only a chain's first op has
   inputs from outside it, only its last op feeds outside). Parallel branches are the
   weakly connected components of the ops between two consecutive cut vertices
   (:func:`partitiontuner.branches.cut_vertices`): they leave the same fork and meet at
   the same join (inception modules, residual shortcuts, fire modules).
2. **Backend finder.** Chains are visited in topological order; for each, a
   Viterbi-style dynamic program over (op, PU) chooses every op's PU and how the chain
   is cut into partitions. The state is (op, PU) with a partition open on that PU.
   Staying on a PU adds the op's profiled time to the open partition or, when it is
   cheaper, replaces the last 2-3 ops' times by a profiled fused group's time
   (Conv+Relu, Conv+BN+Relu, ...: the step then covers the whole group, which must
   be allowed on the PU) without closing the partition. This is exactly the
   simulator's fusion rule (:mod:`partitiontuner.fusion`: a partition's work is its
   ops' times minus the best saving of disjoint profiled groups inside it, and groups
   are runs of one chain), so within a chain the DP's cost of a segmentation is the
   simulated work of its partitions. Switching PU at an edge adds the tensor's
   transfer (so an excursion to another PU pays the transfer in and the transfer
   out) plus a fixed switch penalty, and so does opening any new partition (a cut on
   the same PU pays the penalty alone). The penalty is the new partition's PU
   dispatch overhead (what the simulator charges per partition) unless
   ``switch_penalty_us`` is given. At a chain's start the predecessors' PUs are
   already fixed: the cost of starting on a PU is the largest transfer from them
   (transfers run concurrently in the simulator; graph inputs come from the host)
   plus the penalty, waived when a predecessor's partition on that PU may be
   continued. A chain ending in a graph output pays the transfer back to the host;
   transfers to later chains are charged by those chains. On a graph that is one
   chain the DP is therefore exact (the tests check it against brute force).
   Choice beyond the paper: that last rule is myopic, so up to ``LOOKAHEAD_PASSES``
   further passes charge each chain's end the largest transfer to its consumers'
   PUs of the previous pass; a pass is kept only while the simulated makespan
   improves (it pays on zcu102-vta's inception_v2 and shufflenet). The previous
   cost rule (a group's time only for a partition that is exactly that group) needed
   a second DP run without groups; under the current rule that run never won on the
   zoo, so it is gone.
3. **Graph partitioner.** Partitions are the DP's segments; where a chain's segment
   continues a predecessor chain's segment on the same PU they are merged (maximal
   runs, :mod:`partitiontuner.runs`: merging never loses a fusion, since
   groups never span chains). Both the merged and the unmerged partitioning are
   built and the simulator keeps the better (unmerged wins after the partition
   scheduler on some models, e.g. inception_v2).
4. **Partition scheduler.** Parallel branches meeting at a join are placed so they run
   on different PUs at the same time, one branch per PU at once. For each block of
   parallel branches (in order), every mapping of branches to distinct PUs is tried
   (a mapped branch runs whole on its PU, which must be allowed for all its ops; an
   unmapped branch keeps its DP placement), exhaustively up to ``max_mappings``
   mappings and otherwise branch by branch (most work first); then a branch-by-branch
   pass (repeated while it helps, at most ``REFINE_PASSES`` times) may also move one
   branch onto a PU another branch uses (they then run one after the other). A
   mapping is kept only if it lowers the simulated makespan. Mappings are scored
   exactly but locally (:func:`schedule_parallel`): with partitions that do not cross
   the block's fork and join, the simulated makespan of the window from the fork's
   partition to the join's partition differs from the whole plan's by a constant, so
   a block costs time proportional to its size, not the graph's (10,000-op graphs
   with 1,400 blocks plan in seconds). After the last block, all partitionings (step
   3 and the block-respecting one) are built again and the simulator keeps the best,
   falling back to the unscheduled plan if that is better. Execution sequences are
   Kahn orders of the partition graph by first op or by critical path, whichever
   simulates faster. Parallelism nested inside one branch is left to the DP.
5. **Fallback (choice beyond the paper).** The plans of the paper's two baselines
   (``greedy`` and ``npu-first``, :mod:`~partitiontuner.agents.greedy`,
   :mod:`~partitiontuner.agents.baselines`) are simulated too and replace the result
   if strictly faster (``info["partitioning"]`` then says so), so this planner is
   never worse than either baseline on an unconstrained problem. With the zoo's
   fixture profiles on every preset it never triggers; on random DAGs (no cut
   vertices, one-op chains) greedy sometimes wins.

Global constraints (partition count, memory) are then repaired
(:mod:`partitiontuner.repair`); pins and forbids restrict the DP's states.

Why one file of ~600 lines: it is one algorithm of the paper, its four modules in the
paper's order, each short and each calling the next; split, the choices listed above
would be separated from the code that makes them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partitiontuner.agents.base import Planner
from partitiontuner.agents.baselines import npu_first_assignment
from partitiontuner.agents.greedy import greedy_assignment
from partitiontuner.branches import connected_components, cut_vertices
from partitiontuner.errors import ConfigError
from partitiontuner.graph import OpGraph
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.repair import finish_plan
from partitiontuner.runs import (
    JoinRule,
    Parts,
    critical_path_key,
    maximal_runs,
    order_partitions,
    partition_edges,
    runs_in_sequence,
)
from partitiontuner.simulate import Simulator

#: window op visits (4 per op per scored mapping) the partition scheduler may spend in total
SCHEDULER_BUDGET = 40_000_000
#: passes of the branch-by-branch refinement of the partition scheduler
REFINE_PASSES = 3
#: extra backend-finder passes that look ahead at the previous pass's successor PUs
LOOKAHEAD_PASSES = 2


@dataclass
class Placement:
    """The backend finder's result: PU and DP segment of every op."""

    assign: list[int]
    segment: list[int]  # op -> segment id (segments never span chains)
    chain_of: list[int]  # op -> chain index
    num_segments: int

    def copy(self) -> Placement:
        return Placement(list(self.assign), list(self.segment), self.chain_of, self.num_segments)


class PartitionTunerPlanner(Planner):
    """The paper's backend finder, graph partitioner and partition scheduler.

    Args:
        switch_penalty_us: fixed penalty for starting a partition in the DP; ``None``
            uses the PU's dispatch overhead.
        parallel: run the parallel-branch scheduler (off = backend finder only).
        max_mappings: exhaustive branch-to-PU mappings tried per block before falling
            back to branch-by-branch choice.
    """

    name = "partitiontuner"

    def __init__(self, switch_penalty_us: float | None = None, parallel: bool = True, max_mappings: int = 256):
        if switch_penalty_us is not None and (not isinstance(switch_penalty_us, (int, float)) or isinstance(switch_penalty_us, bool)
                                              or not math.isfinite(switch_penalty_us) or switch_penalty_us < 0):
            raise ConfigError(f"partitiontuner: switch_penalty_us must be a number >= 0, got {switch_penalty_us!r}")
        if isinstance(max_mappings, bool) or not isinstance(max_mappings, int) or max_mappings < 1:
            raise ConfigError(f"partitiontuner: max_mappings must be a positive integer, got {max_mappings!r}")
        self.switch_penalty_us = None if switch_penalty_us is None else float(switch_penalty_us)
        self.parallel = bool(parallel)
        self.max_mappings = max_mappings

    def __repr__(self) -> str:
        return f"PartitionTunerPlanner(switch_penalty_us={self.switch_penalty_us}, parallel={self.parallel})"

    def plan(self, problem: Problem) -> Plan:
        sim = Simulator(problem)
        builder = _Builder(problem, sim)
        placement = backend_finder(problem, sim, self.switch_penalty_us)
        best_t, best_parts, how = builder.best(placement)
        info: dict[str, object] = {"backend_finder_us": round(best_t, 3)}
        passes = 0
        for _ in range(LOOKAHEAD_PASSES):
            trial = backend_finder(problem, sim, self.switch_penalty_us, lookahead=placement.assign)
            t, parts, h = builder.best(trial)
            if t >= best_t - 1e-9:
                break
            best_t, best_parts, how, placement = t, parts, h, trial
            passes += 1
        info["lookahead_passes"] = passes
        if self.parallel:
            scheduled, changed, block_of = schedule_parallel(problem, sim, placement, self.max_mappings)
            info["parallel_blocks"] = changed
            if changed:
                t, parts, h = _Builder(problem, sim, block_of).best(scheduled)
                if t < best_t:
                    best_t, best_parts, how = t, parts, h
        info["partitioning"] = how
        # the two baselines' own plans, kept only if strictly faster (never on the zoo with fixture profiles)
        for name, assign in (("greedy", greedy_assignment(problem, sim)), ("npu-first", npu_first_assignment(problem))):
            parts = runs_in_sequence(problem.graph, assign)
            t = sim.makespan([o for o, _ in parts], [p for _, p in parts])
            if t < best_t - 1e-9:
                best_t, best_parts = t, parts
                info["partitioning"] = f"fallback: the {name} plan"
        info["fused_groups"] = sum(len(problem.fusion.cover(ops, p)) for ops, p in best_parts)
        return finish_plan(problem, best_parts, self.name, info, sim)


# ---------------------------------------------------------------------------------
# backend finder


def backend_finder(problem: Problem, sim: Simulator, switch_penalty_us: float | None = None,
                   lookahead: Sequence[int] | None = None) -> Placement:
    """Per chain, in topological order, the Viterbi DP described in the module docstring.

    ``cost[i][p]`` is the cheapest way to run the chain's first ``i + 1`` ops with op
    ``i`` on ``p`` in a partition still open. A step covers one op (its time) or, when
    it saves time on ``p``, a profiled group of the last 2-3 ops (its fused time); it
    either extends the open partition on ``p`` or opens a new one after the best
    ``cost[s - 1][q]`` plus the transfer from ``q`` and the switch penalty.

    Args:
        problem: the problem (``allowed`` restricts the states).
        sim: its simulator (op times, transfers, overheads).
        switch_penalty_us: penalty per new partition; ``None``: the PU's dispatch overhead.
        lookahead: op -> PU of a previous pass; a chain's end then also pays the
            largest transfer to its consumers' PUs there.
    """
    g = problem.graph
    fusion = problem.fusion
    n, num_pus, host = g.num_ops, problem.num_pus, problem.host
    chains = fusion.chains
    chain_of = list(fusion.chain)
    allowed = problem.allowed.tolist()
    ot = sim.op_time
    pen = [sim.overhead[p] if switch_penalty_us is None else switch_penalty_us for p in range(num_pus)]
    savings, max_len = fusion.savings, fusion.max_len
    link_bytes: dict[tuple[int, int], int] = {}  # chain link -> largest tensor (transfers run concurrently)
    for e in g.edges:
        link_bytes[(e.src, e.dst)] = max(link_bytes.get((e.src, e.dst), 0), e.size_bytes)
    assign = [-1] * n
    segment = [-1] * n
    num_segments = 0
    inf = math.inf
    pus = range(num_pus)
    for c in sorted(range(len(chains)), key=lambda c: chains[c][0]):
        chain = chains[c]
        m = len(chain)
        first = chain[0]
        # entry: largest incoming transfer; penalty unless a predecessor's partition on p continues
        entry = [0.0] * num_pus
        for p in pus:
            worst = sim.transfer(host, p, sim.input_bytes[first]) if sim.reads_input[first] else 0.0
            cont = False
            for u, size in sim.in_edges[first]:
                worst = max(worst, sim.transfer(assign[u], p, size))
                cont = cont or assign[u] == p
            entry[p] = worst + (0.0 if cont else pen[p])
        cost = [[inf] * num_pus for _ in range(m)]
        back: list[list[tuple[int, int]]] = [[(0, 0)] * num_pus for _ in range(m)]  # (ops in the step, from: -2 extend, -1 entry, q)
        opened = [[inf] * num_pus for _ in range(m)]  # cost before a new partition opening at position s on p
        opened_from = [[-1] * num_pus for _ in range(m)]
        opened[0] = entry
        for i in range(m):
            v = chain[i]
            if i > 0:  # a partition may open at i: best predecessor state plus transfer and penalty
                size = link_bytes[(chain[i - 1], v)]
                prev = cost[i - 1]
                for p in pus:
                    best, arg = inf, -1
                    for q in pus:
                        if prev[q] < inf:
                            x = prev[q] + sim.transfer(q, p, size) + pen[p]
                            if x < best:
                                best, arg = x, q
                    opened[i][p], opened_from[i][p] = best, arg
            row, brow = cost[i], back[i]
            for p in pus:
                if not allowed[v][p]:
                    continue
                t = ot[v][p]
                if i > 0 and cost[i - 1][p] <= opened[i][p]:
                    row[p], brow[p] = cost[i - 1][p] + t, (1, -2)
                else:
                    row[p], brow[p] = opened[i][p] + t, (1, opened_from[i][p])
            for k in range(2, min(max_len, i + 1) + 1):
                s = i - k + 1
                sav = savings.get((c, s, k))
                if sav is None:
                    continue
                ops = chain[s:i + 1]
                for p in pus:
                    if sav[p] <= 0.0 or not all(allowed[u][p] for u in ops):
                        continue
                    w = sum(ot[u][p] for u in ops) - sav[p]
                    if s > 0 and cost[s - 1][p] + w < row[p]:
                        row[p], brow[p] = cost[s - 1][p] + w, (k, -2)
                    if opened[s][p] + w < row[p]:
                        row[p], brow[p] = opened[s][p] + w, (k, opened_from[s][p])
        last = chain[-1]
        out = sim.output_bytes[last]
        final = []
        for p in pus:
            x = sim.transfer(p, host, out) if out >= 0 else 0.0
            if lookahead is not None:
                for e in g.out_edges[last]:
                    x = max(x, sim.transfer(p, lookahead[e.dst], e.size_bytes))
            final.append(cost[m - 1][p] + x)
        p = min(pus, key=lambda p: (final[p], p))
        assert final[p] < inf, "every op has an allowed PU"
        # backtrack: segments (first position, PU) from the end of the chain
        segs: list[tuple[int, int]] = []
        i = m - 1
        while i >= 0:
            k, q = back[i][p]
            i -= k
            if q != -2:
                segs.append((i + 1, p))
                p = q
        segs.reverse()
        for k, (s, p) in enumerate(segs):
            e = segs[k + 1][0] if k + 1 < len(segs) else m
            for v in chain[s:e]:
                assign[v], segment[v] = p, num_segments
            num_segments += 1
    return Placement(assign, segment, chain_of, num_segments)


# ---------------------------------------------------------------------------------
# graph partitioner


def _rules(pl: Placement) -> dict[str, JoinRule]:
    """Join rules of the graph partitioner: ``merged`` continues segments across
    chains, ``segments`` keeps exactly the DP's segments."""
    seg, chain_of = pl.segment, pl.chain_of
    return {
        "merged": lambda v, u: seg[v] == seg[u] or chain_of[v] != chain_of[u],
        "segments": lambda v, u: seg[v] == seg[u],
    }


class _Builder:
    """Partitions and sequences from a placement, scored by the simulator.

    With ``block_of`` (op -> parallel block whose branches contain it, else -1), a
    third partitioning, ``blocked``, is built too: ``merged`` without joins across the
    fork or join of a parallel block (the partition scheduler's view, see
    :func:`schedule_parallel`).
    """

    def __init__(self, problem: Problem, sim: Simulator, block_of: list[int] | None = None):
        self.problem, self.sim, self.g = problem, sim, problem.graph
        self.block_of = block_of

    def partitionings(self, pl: Placement) -> dict[str, Parts]:
        rules = _rules(pl)
        out = {name: maximal_runs(self.g, pl.assign, rule) for name, rule in rules.items()}
        if self.block_of is not None:
            out["blocked"] = blocked_partitions(self.g, pl, self.block_of)
        return out

    def candidates(self, pl: Placement) -> dict[str, Parts]:
        out = {}
        for name, parts in self.partitionings(pl).items():
            edges = partition_edges(self.g, parts)
            out[f"{name}/topological"] = order_partitions(self.g, parts, None, edges)
            out[f"{name}/critical-path"] = order_partitions(self.g, parts, critical_path_key(self.sim, self.g, parts, edges), edges)
        return out

    def best(self, pl: Placement) -> tuple[float, Parts, str]:
        """The best (makespan, parts, name) over the candidates."""
        best = None
        for how, parts in self.candidates(pl).items():
            t = self.sim.makespan([o for o, _ in parts], [p for _, p in parts])
            if best is None or t < best[0]:
                best = (t, parts, how)
        assert best is not None
        return best


# ---------------------------------------------------------------------------------
# partition scheduler: parallel branches


@dataclass(frozen=True)
class _Region:
    """Parallel branches between the cut vertices ``fork`` (-1: none) and ``join``
    (``num_ops``: none)."""

    fork: int
    join: int
    branches: tuple[tuple[int, ...], ...]

    @property
    def gap(self) -> list[int]:
        return list(range(self.fork + 1, self.join))


def _regions(graph: OpGraph) -> list[_Region]:
    bounds = [-1, *cut_vertices(graph), graph.num_ops]
    out = []
    for a, b in itertools.pairwise(bounds):
        if b - a <= 2:
            continue
        comps = connected_components(graph, tuple(range(a + 1, b)))
        if len(comps) >= 2:
            out.append(_Region(a, b, comps))
    return out


def parallel_blocks(graph: OpGraph) -> list[tuple[tuple[int, ...], ...]]:
    """Groups of >= 2 parallel branches: the weakly connected components of the ops
    strictly between consecutive cut vertices (and before the first / after the last)."""
    return [r.branches for r in _regions(graph)]


def schedule_parallel(problem: Problem, sim: Simulator, placement: Placement, max_mappings: int) -> tuple[Placement, int, list[int] | None]:
    """Map each block's parallel branches to PUs (see the module docstring).

    Each mapping is scored exactly but locally: with partitions that do not cross the
    block's fork and join (``blocked``), every op before the fork's partition has
    finished and every PU is free when that partition starts, and everything after
    the join waits for the join's partition, so the simulated makespan of the window
    (fork's partition, the branches' partitions, join's partition) ranks mappings as
    the whole plan's makespan does. The window is simulated by the simulator itself
    with the fork partition's inputs from before the window dropped (they arrive at
    the same time whatever the mapping).

    Returns:
        The new placement, how many blocks changed, and ``block_of`` (op -> region,
        -1 outside) for the ``blocked`` partitioning (None without regions).
    """
    g = problem.graph
    regions = _regions(g)
    if not regions:
        return placement, 0, None
    block_of = [-1] * g.num_ops
    for k, r in enumerate(regions):
        for v in r.gap:
            block_of[v] = k
    base = blocked_partitions(g, placement, block_of)
    owner = [0] * g.num_ops
    for i, (ops, _) in enumerate(base):
        for v in ops:
            owner[v] = i
    budget = [SCHEDULER_BUDGET]
    fastest = np.where(problem.allowed, problem.op_time, np.inf).min(axis=1)
    changed = 0
    for r in regions:
        window = _Window(sim, r, base[owner[r.fork]] if r.fork >= 0 else None, base[owner[r.join]] if r.join < g.num_ops else None)
        better = _map_region(problem, window, placement, max_mappings, budget, fastest)
        if better is not None:
            placement = better
            changed += 1
    return placement, changed, block_of


def blocked_partitions(graph: OpGraph, pl: Placement, block_of: Sequence[int]) -> Parts:
    """The ``merged`` partitioning without joins across a parallel block's fork or join."""
    merged = _rules(pl)["merged"]
    return maximal_runs(graph, pl.assign, lambda v, u: block_of[v] == block_of[u] and merged(v, u))


class _Window:
    """One block's window: the fork's partition, the branches, the join's partition.

    ``head`` and ``tail`` are the fork's and the join's partitions in the blocked
    partitioning (they do not depend on the branches' mapping). The window runs on the
    simulator itself (a shallow copy whose head ops ignore inputs from before the
    window: they arrive at the same time whatever the mapping).
    """

    def __init__(self, sim: Simulator, region: _Region, head: tuple[list[int], int] | None, tail: tuple[list[int], int] | None):
        self.g = sim.problem.graph
        self.region, self.head, self.tail = region, head, tail
        self.gap = region.gap
        self.sim = sim
        if head is not None:
            in_edges = list(sim.in_edges)
            inside = set(head[0])
            for v in head[0]:
                in_edges[v] = [(u, b) for u, b in sim.in_edges[v] if u in inside]
            self.sim = sim.with_in_edges(in_edges)
        self.size = len(self.gap) + len(head[0] if head else ()) + len(tail[0] if tail else ()) + 1

    def makespan(self, pl: Placement, rule: JoinRule, critical_path: bool, parts: Parts | None = None) -> float:
        """Simulated makespan of the window with the branches partitioned by ``rule``
        (``parts``: that partitioning, if already built)."""
        g, head, tail = self.g, self.head, self.tail
        if parts is None:
            parts = maximal_runs(g, pl.assign, rule, self.gap)
        key = None
        if critical_path:
            key = critical_path_key(self.sim, g, parts + [tail] if tail is not None else parts)[:len(parts)]
        window = ([head] if head is not None else []) + order_partitions(g, parts, key) + ([tail] if tail is not None else [])
        return self.sim.makespan([o for o, _ in window], [p for _, p in window])

    def best(self, pl: Placement) -> float:
        """The best over both rules of step 3 and both orders (order only matters
        when some PU runs several of the branches' partitions)."""
        best = math.inf
        seen = []
        for rule in _rules(pl).values():
            parts = maximal_runs(self.g, pl.assign, rule, self.gap)
            if parts in seen:
                continue
            seen.append(parts)
            several = len({p for _, p in parts}) < len(parts)
            for critical_path in (False, True) if several else (False,):
                best = min(best, self.makespan(pl, rule, critical_path, parts))
        return best


def _map_region(problem: Problem, window: _Window, placement: Placement, max_mappings: int, budget: list[int],
                fastest: np.ndarray) -> Placement | None:
    """The best mapping of one region's branches, or None if none beats the DP's."""
    r = window.region
    cost_per_eval = 4 * window.size
    pl = placement.copy()  # mapped in place per trial, restored after

    def local(choice: Sequence[int | None]) -> float:
        undo = _map_in_place(pl, r.branches, choice)
        t = window.best(pl)
        _undo(pl, undo)
        return t

    allowed = problem.allowed
    options = [[None, *(int(p) for p in np.flatnonzero(allowed[list(br)].all(axis=0)))] for br in r.branches]
    work = [float(fastest[list(br)].sum()) for br in r.branches]
    by_work = sorted(range(len(r.branches)), key=lambda b: -work[b])
    ref_t = local((None,) * len(r.branches))
    picked: tuple[int | None, ...] = (None,) * len(r.branches)
    improved = False

    def consider(trial: tuple[int | None, ...]) -> None:
        nonlocal ref_t, picked, improved
        budget[0] -= cost_per_eval
        t = local(trial)
        if t < ref_t - 1e-9:
            ref_t, picked, improved = t, trial, True

    mappings = _injective(options, max_mappings)
    if mappings is not None and len(mappings) * cost_per_eval <= budget[0]:
        for choice in mappings:
            consider(choice)
    else:  # branch by branch, the branch with the most work first, each on a free PU
        for b in by_work:
            for opt in options[b][1:]:
                if budget[0] >= cost_per_eval and opt not in picked:
                    consider((*picked[:b], opt, *picked[b + 1:]))
    # refinement: one branch at a time may move, also onto a PU another branch uses
    for _ in range(REFINE_PASSES):
        before = ref_t
        for b in by_work:
            for opt in options[b]:
                if budget[0] >= cost_per_eval and opt != picked[b]:
                    consider((*picked[:b], opt, *picked[b + 1:]))
        if ref_t >= before - 1e-9:
            break
    if not improved:
        return None
    _map_in_place(pl, r.branches, picked)
    return pl


def _injective(options: Sequence[Sequence[int | None]], limit: int) -> list[tuple[int | None, ...]] | None:
    """Every choice of distinct PUs for some of the branches (``None``: keep the DP
    placement), except all-``None``; ``None`` if there are more than ``limit``."""
    out: list[tuple[int | None, ...]] = []

    def rec(k: int, used: frozenset[int], prefix: tuple[int | None, ...]) -> bool:
        if k == len(options):
            if any(c is not None for c in prefix):
                out.append(prefix)
            return len(out) <= limit
        for c in options[k]:
            if c is not None and c in used:
                continue
            if not rec(k + 1, used | {c} if c is not None else used, (*prefix, c)):
                return False
        return True

    return out if rec(0, frozenset(), ()) else None


def _map_in_place(pl: Placement, branches: Sequence[Sequence[int]], choice: Sequence[int | None]) -> tuple[int, list[tuple[int, int, int]]]:
    """Put each mapped branch whole on its PU as one new segment; returns what
    :func:`_undo` needs."""
    undo = (pl.num_segments, [])
    for br, p in zip(branches, choice, strict=True):
        if p is None:
            continue
        sid = pl.num_segments
        pl.num_segments += 1
        for v in br:
            undo[1].append((v, pl.assign[v], pl.segment[v]))
            pl.assign[v] = p
            pl.segment[v] = sid
    return undo


def _undo(pl: Placement, undo: tuple[int, list[tuple[int, int, int]]]) -> None:
    num_segments, changes = undo
    for v, p, sid in reversed(changes):
        pl.assign[v], pl.segment[v] = p, sid
    pl.num_segments = num_segments
