"""From a placement (op -> PU) to partitions in a valid execution sequence.

:func:`maximal_runs` grows partitions in topological order: an op joins the partition
of a predecessor on the same PU when the partition graph stays acyclic (which also
keeps every partition convex: a path that left a partition and came back would be a
cycle between partitions). If the op links several same-PU predecessor partitions,
they are merged with it where that stays acyclic too, so each partition is a maximal
connected same-PU run. The partition graph is kept in a topological order under edge
insertions and contractions with Pearce and Kelly's dynamic topological sort, so a
join costs a search bounded to the part of the order it can disturb, not a pass over
the whole graph.

:func:`order_partitions` turns partitions into an execution sequence (Kahn's
algorithm; among ready partitions the smallest key first), so planners choose the
per-PU order with a key: smallest op index (default), HEFT start time, critical path.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.graph import OpGraph
from partitiontuner.simulate import Simulator

Parts = list[tuple[list[int], int]]
"""Partitions as ``(ops, pu index)`` pairs; ops ascending."""

PartitionGraph = tuple[dict[int, int], list[set[int]], list[set[int]]]
"""Op -> partition, and each partition's predecessor and successor partitions."""

JoinRule = Callable[[int, int], bool]
"""``may_join(v, u)``: may op ``v`` join the partition of its same-PU predecessor ``u``?"""


class _Dag:
    """A DAG kept in a topological order ``ord`` (Pearce & Kelly, JEA 2006).

    Nodes are partitions. ``add_edge`` and ``contract`` assume the result is acyclic
    (callers check with :meth:`reaches` first) and repair ``ord`` by reordering only
    the nodes between the two endpoints' positions that the new edge affects.
    """

    __slots__ = ("succ", "pred", "ord", "_next")

    def __init__(self) -> None:
        self.succ: list[set[int]] = []
        self.pred: list[set[int]] = []
        self.ord: list[int] = []
        self._next = 0

    def add_node(self) -> int:
        self.succ.append(set())
        self.pred.append(set())
        self.ord.append(self._next)
        self._next += 1
        return len(self.succ) - 1

    def reaches(self, starts: Sequence[int], targets: set[int], bound: int) -> bool:
        """Is a node of ``targets`` reachable from ``starts`` (paths of length >= 0)?

        Only nodes with ``ord <= bound`` are visited: in a topological order nothing
        past ``bound`` can lead back to a target at or before it.
        """
        order, succ = self.ord, self.succ
        stack = [s for s in starts if order[s] <= bound]
        seen = set(stack)
        while stack:
            x = stack.pop()
            if x in targets:
                return True
            for y in succ[x]:
                if y not in seen and order[y] <= bound:
                    seen.add(y)
                    stack.append(y)
        return False

    def add_edge(self, x: int, y: int) -> None:
        if y in self.succ[x]:
            return
        self.succ[x].add(y)
        self.pred[y].add(x)
        lb, ub = self.ord[y], self.ord[x]
        if lb < ub:
            self._reorder(x, y, lb, ub)

    def _reorder(self, x: int, y: int, lb: int, ub: int) -> None:
        order, succ, pred = self.ord, self.succ, self.pred
        fwd, stack, seen = [], [y], {y}
        while stack:
            a = stack.pop()
            fwd.append(a)
            for b in succ[a]:
                if b == x:
                    raise AssertionError("partition graph would get a cycle")
                if b not in seen and order[b] < ub:
                    seen.add(b)
                    stack.append(b)
        bwd, stack, seen = [], [x], {x}
        while stack:
            a = stack.pop()
            bwd.append(a)
            for b in pred[a]:
                if b not in seen and order[b] > lb:
                    seen.add(b)
                    stack.append(b)
        bwd.sort(key=order.__getitem__)
        fwd.sort(key=order.__getitem__)
        moved = bwd + fwd
        for a, slot in zip(moved, sorted(order[a] for a in moved), strict=True):
            order[a] = slot

    def contract(self, keep: int, gone: int) -> None:
        """Merge ``gone`` into ``keep``; no path of length >= 2 may join them."""
        succ, pred = self.succ, self.pred
        g_pred, g_succ = pred[gone], succ[gone]
        pred[gone], succ[gone] = set(), set()
        for x in g_pred:
            succ[x].discard(gone)
        for s in g_succ:
            pred[s].discard(gone)
        succ[keep].discard(gone)
        pred[keep].discard(gone)
        for x in g_pred:
            if x != keep:
                self.add_edge(x, keep)
        for s in g_succ:
            if s != keep:
                self.add_edge(keep, s)


def maximal_runs(graph: OpGraph, assign: Sequence[int], may_join: JoinRule | None = None, ops: Sequence[int] | None = None) -> Parts:
    """One partition per maximal connected run of same-PU ops.

    Args:
        graph: the op graph (nodes in topological order).
        assign: PU index of every op.
        may_join: optional rule restricting which same-PU predecessor links may be
            joined (e.g. only inside the same original group); ``None`` joins all.
        ops: partition only these ops (ascending); edges from other ops are ignored.

    Returns:
        Partitions in a valid execution sequence (a topological order of the
        partition graph; use :func:`order_partitions` to choose a different one).
    """
    n = graph.num_ops
    if len(assign) != n:
        raise ValueError(f"assignment has {len(assign)} entries, the graph {n} ops")
    subset = ops is not None  # then owner is a dict over the subset only
    preds = graph.preds
    dag = _Dag()
    parent: list[int] = []
    members: list[list[int]] = []
    pu_of: list[int] = []
    owner: list[int] | dict[int, int] = {} if subset else [-1] * n
    order = dag.ord

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for v in (ops if subset else range(n)):
        p = assign[v]
        pv = preds[v]
        if subset:
            pv = [u for u in pv if u in owner]
        if len(pv) == 1:
            # fast path (chains): join the only predecessor's partition if allowed
            u = pv[0]
            P = find(owner[u])
            if pu_of[P] == p and (may_join is None or may_join(v, u)):
                members[P].append(v)
                owner[v] = P
                continue
        roots = [(u, find(owner[u])) for u in pv]
        pred_parts = {r for _, r in roots}
        cands = [P for P in pred_parts if pu_of[P] == p]
        if may_join is not None and cands:
            cands = [P for P in cands if any(r == P and may_join(v, u) for u, r in roots)]
        cands.sort(key=lambda P: -order[P])
        target = -1
        for P in cands:
            others = pred_parts - {P}
            if not others or not dag.reaches([P], others, max(order[Q] for Q in others)):
                target = P
                break
        if target < 0:
            target = dag.add_node()
            parent.append(target)
            members.append([])
            pu_of.append(p)
        members[target].append(v)
        owner[v] = target
        for Q in pred_parts:
            if Q != target:
                dag.add_edge(Q, target)
        for P2 in cands:
            P2 = find(P2)
            if P2 == target:
                continue
            # P2 -> target exists now; merging is acyclic unless a longer path joins them
            starts = [s for s in dag.succ[P2] if s != target]
            if starts and dag.reaches(starts, {target}, order[target]):
                continue
            keep, gone = (target, P2) if len(members[target]) >= len(members[P2]) else (P2, target)
            dag.contract(keep, gone)
            members[keep].extend(members[gone])
            members[gone] = []
            parent[gone] = keep
            target = keep
    roots = sorted((i for i in range(len(parent)) if parent[i] == i), key=order.__getitem__)
    return [(sorted(members[i]), pu_of[i]) for i in roots]


def partition_edges(graph: OpGraph, parts: Sequence[tuple[Sequence[int], int]]) -> PartitionGraph:
    """Op -> partition owner (ops in ``parts`` only), and the partition graph's
    predecessor and successor sets (edges from ops outside ``parts`` are ignored)."""
    owner = {v: i for i, (ops, _) in enumerate(parts) for v in ops}
    preds: list[set[int]] = [set() for _ in parts]
    succs: list[set[int]] = [set() for _ in parts]
    gp = graph.preds
    for b, (ops, _) in enumerate(parts):
        for v in ops:
            for u in gp[v]:
                a = owner.get(u, -1)
                if a != b and a >= 0:
                    succs[a].add(b)
                    preds[b].add(a)
    return owner, preds, succs


def order_partitions(graph: OpGraph, parts: Sequence[tuple[Sequence[int], int]], key: Sequence[float] | None = None,
                     edges: PartitionGraph | None = None) -> Parts:
    """An execution sequence of ``parts``: Kahn's algorithm, smallest ``key`` first.

    Args:
        graph: the op graph.
        parts: partitions in any order (each convex, the partition graph acyclic).
        key: per-partition priority; default the partition's smallest op index.
        edges: :func:`partition_edges` of ``parts`` if already computed.

    Raises:
        InfeasiblePlanError: the partition graph has a cycle.
    """
    _, preds, succs = edges or partition_edges(graph, parts)
    first = [min(ops) for ops, _ in parts]
    if key is None:
        key = first
    missing = [len(p) for p in preds]
    heap = [(key[i], first[i], i) for i in range(len(parts)) if missing[i] == 0]
    heapq.heapify(heap)
    out: Parts = []
    while heap:
        _, _, i = heapq.heappop(heap)
        out.append((sorted(parts[i][0]), parts[i][1]))
        for j in succs[i]:
            missing[j] -= 1
            if missing[j] == 0:
                heapq.heappush(heap, (key[j], first[j], j))
    if len(out) < len(parts):
        stuck = next(i for i in range(len(parts)) if missing[i] > 0)
        raise InfeasiblePlanError(f"the partitions depend on each other in a cycle (partition with op {graph.nodes[first[stuck]].name!r})")
    return out


def critical_path_key(sim: Simulator, graph: OpGraph, parts: Sequence[tuple[Sequence[int], int]],
                      edges: PartitionGraph | None = None) -> list[float]:
    """Minus each partition's upward rank (its time plus the longest chain of
    transfers and partition times after it), so Kahn runs the critical path first.

    ``parts`` must be in a valid execution sequence (as :func:`maximal_runs` returns).
    """
    owner, _, succs = edges or partition_edges(graph, parts)
    out_bytes: list[dict[int, int]] = [{} for _ in parts]
    in_edges = graph.in_edges
    for b, (ops, _) in enumerate(parts):
        for v in ops:
            for e in in_edges[v]:
                a = owner.get(e.src, -1)
                if a != b and a >= 0 and e.size_bytes > out_bytes[a].get(b, -1):
                    out_bytes[a][b] = e.size_bytes
    rank = [0.0] * len(parts)
    for i in range(len(parts) - 1, -1, -1):
        p = parts[i][1]
        tail = 0.0
        for j in succs[i]:
            assert j > i, "parts must be in execution sequence"
            t = sim.transfer(p, parts[j][1], out_bytes[i][j]) + rank[j]
            if t > tail:
                tail = t
        rank[i] = sim.work(parts[i][0], p) + sim.overhead[p] + tail
    return [-r for r in rank]


def runs_in_sequence(graph: OpGraph, assign: Sequence[int], may_join: JoinRule | None = None, key_of: Callable[[Parts], Sequence[float]] | None = None) -> Parts:
    """:func:`maximal_runs` then :func:`order_partitions` (default key: smallest op)."""
    parts = maximal_runs(graph, assign, may_join)
    return order_partitions(graph, parts, key_of(parts) if key_of is not None else None)
