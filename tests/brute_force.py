"""Brute force over the entire plan space of a small problem: the oracle's reference.

Written independently of ``agents/oracle*.py`` and as plainly as possible: enumerate
every partition of the ops into convex sets, every allowed PU for each set, and every
combination of per-PU run orders that respects the data dependencies (deadlocked
combinations are skipped); cost each with the simulator (the one cost model) and keep
the cheapest plan that satisfies the problem's constraints. Exponential: only for
graphs of up to about 8 ops.

The simulator charges a partition its ops' times minus the best total saving of
disjoint profiled groups inside it; :func:`fused_work` recomputes that by trying every
set of disjoint groups, and the brute force checks the simulator against it for every
partition it costs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, check_plan_constraints, make_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator


def set_partitions(n: int) -> Iterator[list[list[int]]]:
    """Every partition of ``0..n-1`` into non-empty sets (restricted growth strings)."""
    def rec(v: int, blocks: list[list[int]]) -> Iterator[list[list[int]]]:
        if v == n:
            yield [list(b) for b in blocks]
            return
        for b in blocks:
            b.append(v)
            yield from rec(v + 1, blocks)
            b.pop()
        blocks.append([v])
        yield from rec(v + 1, blocks)
        blocks.pop()

    yield from rec(0, [])


def _descendants(problem: Problem) -> list[set[int]]:
    g = problem.graph
    desc: list[set[int]] = [set() for _ in range(g.num_ops)]
    for v in reversed(range(g.num_ops)):
        for s in g.succs[v]:
            desc[v] |= {s} | desc[s]
    return desc


def _convex(block: list[int], desc: list[set[int]]) -> bool:
    """No op outside the block lies on a path between two ops of the block."""
    inside = set(block)
    for a in block:
        for m in desc[a] - inside:
            if desc[m] & inside:
                return False
    return True


def _topological(n: int, deps: list[set[int]]) -> list[int] | None:
    """A topological order of ``n`` nodes (``deps[i]`` must come before ``i``), or None."""
    order, done = [], [False] * n
    while len(order) < n:
        ready = [i for i in range(n) if not done[i] and all(done[j] for j in deps[i])]
        if not ready:
            return None
        done[ready[0]] = True
        order.append(ready[0])
    return order


def _orders_on(pu_blocks: list[int], before: list[set[int]]) -> Iterator[tuple[int, ...]]:
    """Permutations of one PU's partitions that respect the (transitive) dependencies."""
    for perm in itertools.permutations(pu_blocks):
        if all(perm[j] not in before[perm[i]] for i in range(len(perm)) for j in range(i + 1, len(perm))):
            yield perm


def fused_work(problem: Problem, ops: list[int], pu: int) -> float:
    """Work of a partition: its ops' times minus the largest total saving
    ``max(0, sum of a group's op times - its group time)`` over every set of pairwise
    disjoint profiled groups lying inside it (each such set is tried)."""
    inside = set(ops)
    savings = []
    for group, gt in problem.group_time.items():
        if group <= inside:
            total = sum(problem.op_time[v, pu] for v in group)
            if math.isfinite(gt[pu]) and math.isfinite(total) and total > gt[pu]:
                savings.append((group, total - gt[pu]))

    def best(i: int, used: frozenset[int]) -> float:
        if i == len(savings):
            return 0.0
        group, s = savings[i]
        skip = best(i + 1, used)
        return max(skip, s + best(i + 1, used | group)) if not group & used else skip

    return sum(problem.op_time[v, pu] for v in ops) - best(0, frozenset())


def brute_force(problem: Problem) -> tuple[float, Plan | None]:
    """The minimum simulated makespan over every valid plan that satisfies the
    constraints, and one plan achieving it (``(inf, None)`` if there is none)."""
    g, sim = problem.graph, Simulator(problem)
    n, num_pus = g.num_ops, problem.num_pus
    desc = _descendants(problem)
    best, best_plan = math.inf, None
    checked: set[tuple[frozenset[int], int]] = set()
    for blocks in set_partitions(n):
        if not all(_convex(b, desc) for b in blocks):
            continue
        k = len(blocks)
        owner = {v: i for i, b in enumerate(blocks) for v in b}
        deps = [{owner[u] for v in b for u in g.preds[v]} - {i} for i, b in enumerate(blocks)]
        if _topological(k, deps) is None:
            continue  # the partitions depend on each other in a cycle
        before = [set() for _ in range(k)]  # transitive predecessors among partitions
        for i in _topological(k, deps):
            for j in deps[i]:
                before[i] |= {j} | before[j]
        pu_choices = [[p for p in range(num_pus) if all(problem.allowed[v, p] for v in b)] for b in blocks]
        for b, choices in zip(blocks, pu_choices, strict=True):
            for p in choices:
                key = (frozenset(b), p)
                if key not in checked:
                    checked.add(key)
                    assert math.isclose(sim.work(b, p), fused_work(problem, b, p), rel_tol=1e-9, abs_tol=1e-9), (b, p)
        for pus in itertools.product(*pu_choices):
            per_pu = [[i for i in range(k) if pus[i] == p] for p in range(num_pus)]
            for orders in itertools.product(*(list(_orders_on(bl, before)) for bl in per_pu)):
                full = [set(d) for d in deps]
                for seq in orders:
                    for a, b in zip(seq, seq[1:], strict=False):
                        full[b].add(a)
                sequence = _topological(k, full)
                if sequence is None:
                    continue  # the per-PU orders deadlock
                parts = [blocks[i] for i in sequence]
                part_pus = [pus[i] for i in sequence]
                makespan = sim.makespan(parts, part_pus)
                if makespan >= best:
                    continue
                plan = make_plan(problem, list(zip(parts, part_pus, strict=True)), "brute-force")
                try:
                    check_plan_constraints(problem, plan)
                except InfeasiblePlanError:
                    continue
                best, best_plan = makespan, plan
    return best, best_plan
