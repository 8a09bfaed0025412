"""Make a planner's partitions obey the global constraints, or say which cannot be met.

Planners honour per-op constraints (``problem.allowed``: support, pins, forbids)
themselves. The global ones are repaired here, after planning:

1. **Memory** (a PU's capacity: resident weights of all its ops plus the activations of
   its largest partition, :func:`partitiontuner.plan.memory_use`). Partitions whose
   activations alone overflow the PU are split into single ops; then, while the PU
   still overflows, ops leave it for the allowed PU with room that runs them fastest,
   cheapest first (smallest extra op time per freed byte). Partitions are rebuilt as
   maximal runs inside the original groups, in the original order.
2. **Partition count** (``max_partitions``, ``min_partition_ops``). A large excess is
   first cut in bulk (:func:`_coarsen`: small partitions move onto a neighbour's PU,
   then maximal runs are rebuilt; linear per round). Then pairs of partitions
   are merged, keeping the partition graph acyclic (so every partition convex), onto a
   PU every op of both may use, without breaking memory. Candidate merges (neighbours
   in the partition graph or in the sequence; with ``min_partition_ops`` those of the
   smallest partition) are ranked by the change in work (with the fusion of the
   profiled groups a merged partition contains), dispatch overhead and transfers
   (the simulator's primitives) and the best few are compared with the
   simulator; the best simulated makespan wins. The number simulated per step shrinks
   on large graphs to keep repair near-linear.
3. If merging gets stuck, repair restarts from a placement with the fewest PU changes
   (every op on the host where allowed, as maximal runs), then (up to
   ``AGGLOMERATIVE_MAX_OPS`` ops) from every op alone, on the planner's PU and on the
   fewest-changes PU, and finally tries one partition for the whole graph. If nothing
   works it raises :class:`InfeasiblePlanError` naming the constraint (e.g. two ops
   that may only run on different PUs for ``--max-partitions 1``). This is a
   heuristic (it merges and moves whole partitions, never splits one to regroup its
   ops), so it can give up on a satisfiable request; the oracle is the exact method.

Why one file of ~640 lines: the three stages share one bookkeeping class (the merger's
partition graph, cached costs and fusion savings) and fall back on one another in the
order above; apart, each would need the others' internals.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, make_plan
from partitiontuner.problem import Problem
from partitiontuner.runs import Parts, maximal_runs, order_partitions, partition_edges
from partitiontuner.simulate import Simulator

#: total simulator work (op + edge visits) repair may spend comparing merge candidates
SIM_BUDGET = 5_000_000
#: merge candidates compared with the simulator per step, at most
MAX_CANDIDATES = 12
#: up to this many ops, a stuck repair also retries by merging up from single ops
AGGLOMERATIVE_MAX_OPS = 500
#: above this many surplus (or undersized) partitions, repair first coarsens in bulk
COARSE_GAP = 64
_MIB = 2**20


def needs_repair(problem: Problem) -> bool:
    """Does the problem have global constraints (partition count or memory)?"""
    c = problem.constraints
    return c.max_partitions is not None or (c.min_partition_ops or 1) > 1 or problem.has_memory_limits


def finish_plan(problem: Problem, parts: Sequence[tuple[Sequence[int], int]], method: str, info: Mapping[str, Any] | None = None,
                simulator: Simulator | None = None) -> Plan:
    """Repair ``parts`` (in execution sequence) if needed and build the plan."""
    parts = [(sorted(int(v) for v in ops), int(p)) for ops, p in parts]
    info = dict(info or {})
    if needs_repair(problem):
        before = len(parts)
        parts = repair(problem, parts, simulator)
        if before != len(parts):
            info["repaired_partitions"] = [before, len(parts)]
    return make_plan(problem, parts, method, info)


def repair(problem: Problem, parts: Sequence[tuple[Sequence[int], int]], simulator: Simulator | None = None) -> Parts:
    """Partitions (in execution sequence) that satisfy max_partitions, min_partition_ops
    and PU memory capacities.

    Raises:
        InfeasiblePlanError: naming the constraint that cannot be met.
    """
    sim = simulator or Simulator(problem)
    out: Parts = [(sorted(int(v) for v in ops), int(p)) for ops, p in parts]
    _check_allowed(problem, out)
    c = problem.constraints
    k = c.min_partition_ops or 1
    if k > problem.num_ops:
        raise InfeasiblePlanError(f"--min-partition-ops {k} cannot be met: model {problem.graph.name!r} has only {problem.num_ops} ops")
    if problem.has_memory_limits:
        out = _fix_memory(problem, out)
    if c.max_partitions is None and k <= 1:
        return out
    try:
        return Merger(problem, sim, _coarsen(problem, out)).run()
    except _Stuck as first:
        assign = [0] * problem.num_ops
        for ops, p in out:
            for v in ops:
                assign[v] = p
        few = _fewest_switches(problem)
        restarts = [lambda: _coarsen(problem, maximal_runs(problem.graph, few))]
        if problem.num_ops <= AGGLOMERATIVE_MAX_OPS:
            restarts.append(lambda: [([v], assign[v]) for v in range(problem.num_ops)])
            restarts.append(lambda: [([v], few[v]) for v in range(problem.num_ops)])
        for start in restarts:
            try:
                return Merger(problem, sim, start()).run()
            except (_Stuck, InfeasiblePlanError):
                pass
        whole = _single_partition(problem, sim)
        if whole is not None:
            return whole
        raise InfeasiblePlanError(_explain(problem, first)) from None


def _coarsen(problem: Problem, parts: Parts) -> Parts:
    """Cut a large excess of partitions fast, before the simulated pairwise merging.

    While more than ``COARSE_GAP`` partitions are too many (or too small), rounds of:
    move the smallest partitions (by work) onto the PU of the neighbour they exchange
    the most bytes with, where every op of theirs may run there, then rebuild maximal
    runs. Each round is linear in the graph; a round moves at most as many partitions
    as are in excess, so the result lands near the limit rather than far below it.
    """
    g, c = problem.graph, problem.constraints
    k_min = c.min_partition_ops or 1
    limit = c.max_partitions
    allowed = problem.allowed
    rebuilt = False
    for _ in range(64):
        count = len(parts)
        excess = count - limit if limit is not None else 0
        small = [i for i, (ops, _) in enumerate(parts) if len(ops) < k_min]
        if excess <= COARSE_GAP and len(small) <= COARSE_GAP:
            break
        assign = [0] * g.num_ops
        for ops, p in parts:
            for v in ops:
                assign[v] = p
        if not rebuilt:  # first, plain maximal runs of the placement as it is
            rebuilt = True
            runs = order_partitions(g, maximal_runs(g, assign))
            if len(runs) < count:
                parts = runs
                continue
        owner, preds, succs = partition_edges(g, parts)
        flow: dict[tuple[int, int], int] = {}
        for e in g.edges:
            a, b = owner[e.src], owner[e.dst]
            if a != b:
                key = (min(a, b), max(a, b))
                flow[key] = flow.get(key, 0) + e.size_bytes
        allow_all = [allowed[ops].all(axis=0) for ops, _ in parts]
        work = [problem.partition_time(ops, p) for ops, p in parts]
        quota = max(excess - COARSE_GAP // 2, len(small) - COARSE_GAP // 2, 1)
        touched: set[int] = set()
        moved = 0
        for i in sorted(range(count), key=lambda i: (len(parts[i][0]) >= k_min, work[i])):
            if moved >= quota:
                break
            if i in touched:
                continue
            p = parts[i][1]
            best = None
            for j in preds[i] | succs[i]:
                q = parts[j][1]
                if j in touched or q == p or not allow_all[i][q]:
                    continue
                f = flow.get((min(i, j), max(i, j)), 0)
                if best is None or f > best[0]:
                    best = (f, j, q)
            if best is None:
                continue
            _, j, q = best
            for v in parts[i][0]:
                assign[v] = q
            touched |= {i, j}
            moved += 1
        if not moved:
            break
        parts = order_partitions(g, maximal_runs(g, assign))
    if problem.has_memory_limits:
        parts = _fix_memory(problem, parts)
    return parts


def _check_allowed(problem: Problem, parts: Parts) -> None:
    for ops, p in parts:
        for v in ops:
            if not problem.allowed[v, p]:
                why = problem.excluded_reason(v, p)
                raise InfeasiblePlanError(f"op {problem.graph.nodes[v].name!r} may not run on {problem.pus[p]!r}: {why}")


# ---------------------------------------------------------------------------------
# memory


def _memory(problem: Problem, parts: Parts) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per-PU resident weights, per-PU largest activation, per-partition activation."""
    w = problem.weight_bytes
    weights = np.zeros(problem.num_pus)
    act_max = np.zeros(problem.num_pus)
    acts = []
    for ops, p in parts:
        weights[p] += float(w[ops].sum())
        a = problem.activation_bytes(ops)
        acts.append(a)
        act_max[p] = max(act_max[p], a)
    return weights, act_max, acts


def _fix_memory(problem: Problem, parts: Parts) -> Parts:
    """Split and move partitions until every PU's memory use fits (module docstring)."""
    g, cap, names = problem.graph, problem.memory_capacity, problem.pus
    group = [0] * g.num_ops
    assign = [0] * g.num_ops
    for i, (ops, p) in enumerate(parts):
        for v in ops:
            group[v], assign[v] = i, p
    position = list(range(len(parts)))  # group -> original sequence position
    banned: set[tuple[int, int]] = set()
    w = problem.weight_bytes
    single_act = [problem.activation_bytes((v,)) for v in range(g.num_ops)]
    for _ in range(4 * g.num_ops + 8):
        weights, act_max, acts = _memory(problem, parts)
        over = [j for j in range(problem.num_pus) if weights[j] + act_max[j] > cap[j]]
        if not over:
            return parts
        j = over[0]
        # 1. split partitions whose activations do not fit beside the weights
        split = [i for i, (ops, p) in enumerate(parts) if p == j and len(ops) > 1 and weights[j] + acts[i] > cap[j]]
        if split:
            for i in split:
                for v in parts[i][0]:
                    position.append(position[group[v]] + 0.5 * (v + 1) / (g.num_ops + 1))
                    group[v] = len(position) - 1
        else:
            # 2. move ops off j, cheapest extra time per freed byte first
            need = weights[j] + act_max[j] - cap[j]
            used = weights.copy()
            cands = []
            for v in range(g.num_ops):
                if assign[v] != j:
                    continue
                others = [k for k in range(problem.num_pus) if k != j and problem.allowed[v, k] and (v, k) not in banned]
                if others:
                    k = min(others, key=lambda k: problem.op_time[v, k])
                    extra = max(problem.op_time[v, k] - problem.op_time[v, j], 0.0) + 1e-9
                    cands.append((extra / (w[v] + single_act[v] + 1.0), v))
            cands.sort()
            freed, moved = 0.0, 0
            for _, v in cands:
                if freed >= need:
                    break
                room = [k for k in range(problem.num_pus) if k != j and problem.allowed[v, k] and (v, k) not in banned
                        and used[k] + w[v] + single_act[v] <= cap[k]]
                if not room:
                    continue
                k = min(room, key=lambda k: problem.op_time[v, k])
                assign[v] = k
                used[k] += w[v]
                freed += w[v] + single_act[v]  # weights leave; activations may shrink
                moved += 1
                banned.add((v, j))
                position.append(position[group[v]] + 0.5 * (v + 1) / (g.num_ops + 1))
                group[v] = len(position) - 1
            if not moved:
                raise InfeasiblePlanError(_memory_message(problem, j, assign))
        runs = maximal_runs(g, assign, lambda v, u: group[v] == group[u])
        parts = order_partitions(g, runs, [min(position[group[v]] for v in ops) for ops, _ in runs])
    raise InfeasiblePlanError(f"PU memory capacities cannot be met ({', '.join(f'{names[j]} {_size(cap[j])}' for j in range(len(names)) if np.isfinite(cap[j]))})")


def _size(b: float) -> str:
    if b >= _MIB:
        return f"{b / _MIB:.2f} MiB"
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{int(b)} B"


def _memory_message(problem: Problem, j: int, assign: list[int]) -> str:
    g, name = problem.graph, problem.pus[j]
    head = f"memory of {name} ({_size(problem.memory_capacity[j])}) cannot be met"
    stuck = [v for v in range(g.num_ops) if assign[v] == j]
    only = [v for v in stuck if problem.allowed[v].sum() == 1]
    if only:
        need = sum(int(problem.weight_bytes[v]) for v in only) + max(problem.activation_bytes((v,)) for v in only)
        v = max(only, key=lambda v: problem.weight_bytes[v] + problem.activation_bytes((v,)))
        return f"{head}: {len(only)} op(s) may only run on {name} (e.g. {g.nodes[v].name!r}) and need {_size(need)}"
    if stuck:
        return f"{head}: no other allowed PU has room for its {len(stuck)} remaining op(s) (e.g. {g.nodes[stuck[0]].name!r})"
    return head


# ---------------------------------------------------------------------------------
# partition count


class _Stuck(Exception):
    """No valid merge left while a count constraint is still broken."""

    def __init__(self, what: str, count: int, small_ops: list[int] | None = None, neighbour_ops: list[int] | None = None):
        super().__init__(what)
        self.what, self.count = what, count
        self.small_ops, self.neighbour_ops = small_ops or [], neighbour_ops or []


class Merger:
    """Greedy pairwise merging of partitions in sequence (see module docstring).

    Public so the tests can check its incremental merge costs against
    :meth:`Simulator.work`: it is a view of the cost model, not a second one.
    """

    def __init__(self, problem: Problem, sim: Simulator, parts: Parts):
        self.problem, self.sim = problem, sim
        self.g = problem.graph
        n = len(parts)
        self.ops: list[list[int]] = [list(o) for o, _ in parts]
        self.pu: list[int] = [p for _, p in parts]
        _, self.preds, self.succs = partition_edges(self.g, parts)
        self.seq: list[int] = list(range(n))  # partition ids in execution sequence
        self.pos: dict[int, int] = {x: x for x in self.seq}
        self._cost: dict[int, float] = {}
        self._scored: dict[tuple[int, int], list[tuple[float, int]]] = {}
        self._cyclic: set[tuple[int, int]] = set()
        ot = problem.op_time
        al = problem.allowed
        self.time_sum: list[np.ndarray] = [ot[o].sum(axis=0) for o in self.ops]
        self.allow: list[np.ndarray] = [al[o].all(axis=0) for o in self.ops]
        # fusion savings per partition and PU, and each partition's ops per chain, so
        # a merge's saving is recomputed only on the chains both partitions touch
        self.fusion = problem.fusion
        self.fuses = bool(self.fusion.savings)
        self.num_pus = problem.num_pus
        self.by_chain: list[dict[int, list[int]]] = [self._chains(o) for o in self.ops]
        self.saving: list[list[float]] = [self._saving(o) for o in self.ops]
        self.check_memory = problem.has_memory_limits
        if self.check_memory:
            weights, _, acts = _memory(problem, parts)
            self.weights = weights
            self.act = acts
        owner = [-1] * self.g.num_ops
        for i, o in enumerate(self.ops):
            for v in o:
                owner[v] = i
        # bytes crossing between partitions, per direction
        self.flow: list[dict[int, float]] = [{} for _ in range(n)]
        for e in self.g.edges:
            a, b = owner[e.src], owner[e.dst]
            if a != b:
                self.flow[a][b] = self.flow[a].get(b, 0.0) + e.size_bytes

    # -- bookkeeping ------------------------------------------------------------
    def count(self) -> int:
        return len(self.seq)

    def _chains(self, ops: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        if self.fuses:
            chain = self.fusion.chain
            for v in ops:
                out.setdefault(chain[v], []).append(v)
        return out

    def _saving(self, ops: list[int]) -> list[float]:
        if not self.fuses or len(ops) < 2:
            return [0.0] * self.num_pus
        return [self.fusion.saving(ops, p) for p in range(self.num_pus)]

    def merged_saving(self, a: int, b: int, p: int) -> float:
        """Fusion saving of ``a`` and ``b`` merged, on ``p`` (the sum of both savings
        unless they share a chain: groups are runs of one chain)."""
        s = self.saving[a][p] + self.saving[b][p]
        ca, cb = self.by_chain[a], self.by_chain[b]
        if len(ca) > len(cb):
            ca, cb = cb, ca
        for c, ops in ca.items():
            other = cb.get(c)
            if other is not None:
                f = self.fusion
                s += f.saving(ops + other, p) - f.saving(ops, p) - f.saving(other, p)
        return s

    def cost(self, i: int) -> float:
        """Work plus dispatch overhead of partition ``i`` on its PU (cached); the work
        is the simulator's (:meth:`Simulator.work`), kept up to date incrementally."""
        c = self._cost.get(i)
        if c is None:
            p = self.pu[i]
            c = self.sim.finish(0.0, float(self.time_sum[i][p]) - self.saving[i][p], p)
            self._cost[i] = c
        return c

    def merged_cost(self, a: int, b: int, p: int) -> float:
        return self.sim.finish(0.0, float(self.time_sum[a][p] + self.time_sum[b][p]) - self.merged_saving(a, b, p), p)

    def proxy(self, a: int, b: int, p: int) -> float:
        """Change in busy time: merged work + overhead - parts, minus transfers saved."""
        sim = self.sim
        delta = self.merged_cost(a, b, p) - self.cost(a) - self.cost(b)
        pa, pb = self.pu[a], self.pu[b]
        for x, y, px, py in ((a, b, pa, pb), (b, a, pb, pa)):
            size = self.flow[x].get(y)
            if size:
                delta -= sim.transfer(px, py, size)
        return delta

    def memory_ok(self, a: int, b: int, p: int) -> bool:
        if not self.check_memory:
            return True
        problem = self.problem
        w = problem.weight_bytes
        weights = self.weights.copy()
        for i in (a, b):
            weights[self.pu[i]] -= float(w[self.ops[i]].sum())
        weights[p] += float(w[self.ops[a]].sum() + w[self.ops[b]].sum())
        act_new = problem.activation_bytes(self.ops[a] + self.ops[b])
        for j in range(problem.num_pus):
            acts = [self.act[i] for i in self.seq if self.pu[i] == j and i not in (a, b)]
            if j == p:
                acts.append(act_new)
            if weights[j] + max(acts, default=0) > problem.memory_capacity[j]:
                return False
        return True

    def merged_sequence(self, a: int, b: int) -> list[int] | None:
        """The sequence with ``a`` and ``b`` merged (as ``a``), or None if a path of
        length >= 2 joins them (the merge would make a cycle)."""
        pos = self.pos
        i, j = pos[a], pos[b]
        if i > j:
            i, j, a, b = j, i, b, a
        window = self.seq[i + 1:j]
        anc = {b}
        stack = [b]
        while stack:
            x = stack.pop()
            for y in self.preds[x]:
                if y not in anc and i < pos[y] < j:
                    anc.add(y)
                    stack.append(y)
        if any(s in anc for s in self.succs[a] if s != b):
            return None
        return self.seq[:i] + [x for x in window if x in anc] + [a] + [x for x in window if x not in anc] + self.seq[j + 1:]

    def apply(self, a: int, b: int, p: int, seq: list[int]) -> None:
        """Merge ``b`` into ``a`` on ``p``; ``seq`` is the merged sequence (lists ``a``)."""
        self.ops[a] = sorted(self.ops[a] + self.ops[b])
        self.pu[a] = p
        self.saving[a] = [self.merged_saving(a, b, q) for q in range(self.num_pus)]
        for c, ops in self.by_chain[b].items():
            self.by_chain[a].setdefault(c, []).extend(ops)
        self.by_chain[b] = {}
        self.time_sum[a] = self.time_sum[a] + self.time_sum[b]
        self.allow[a] = self.allow[a] & self.allow[b]
        for y in self.preds[b]:
            self.succs[y].discard(b)
            if y != a:
                self.succs[y].add(a)
                self.preds[a].add(y)
        for y in self.succs[b]:
            self.preds[y].discard(b)
            if y != a:
                self.preds[y].add(a)
                self.succs[a].add(y)
        self.preds[a].discard(b)
        self.succs[a].discard(b)
        for y, size in self.flow[b].items():
            if y != a:
                self.flow[a][y] = self.flow[a].get(y, 0.0) + size
        for x in self.preds[a] | self.succs[a]:
            if b in self.flow[x]:
                self.flow[x][a] = self.flow[x].get(a, 0.0) + self.flow[x].pop(b)
        self.flow[a].pop(b, None)
        self.flow[b] = {}
        self.preds[b], self.succs[b] = set(), set()
        self.seq = [x for x in seq if x != b]
        self.pos = {x: k for k, x in enumerate(self.seq)}
        self._cost.pop(a, None)
        # cached scores and cycle verdicts stay valid unless they involve a or b (a
        # path of length >= 2 between two other partitions survives any contraction)
        self._scored = {k: v for k, v in self._scored.items() if a not in k and b not in k}
        self._cyclic = {k for k in self._cyclic if a not in k and b not in k}
        if self.check_memory:
            w = self.problem.weight_bytes
            self.weights = np.zeros(self.problem.num_pus)
            for i in self.seq:
                self.weights[self.pu[i]] += float(w[self.ops[i]].sum())
            self.act[a] = self.problem.activation_bytes(self.ops[a])

    def parts(self, seq: list[int] | None = None, merge: tuple[int, int, int] | None = None) -> Parts:
        seq = self.seq if seq is None else seq
        out = []
        for i in seq:
            if merge is not None and i == merge[0]:
                out.append((self.ops[i] + self.ops[merge[1]], merge[2]))
            elif merge is None or i != merge[1]:
                out.append((self.ops[i], self.pu[i]))
        return out

    # -- search -------------------------------------------------------------------
    def pairs(self, small: list[int], wide: bool = False) -> set[tuple[int, int]]:
        """Candidate pairs: each focus partition (all if ``small`` is empty) with its
        neighbours in the partition graph and in the sequence (``wide``: with every
        partition, for a small partition whose neighbours cannot take it)."""
        out: set[tuple[int, int]] = set()
        focus = small if small else self.seq
        pos = self.pos
        for a in focus:
            k = pos[a]
            near = set(self.seq) - {a} if wide else set(self.preds[a]) | set(self.succs[a])
            for d in (-1, 1):
                if 0 <= k + d < len(self.seq):
                    near.add(self.seq[k + d])
            for b in near:
                out.add((min(a, b), max(a, b)))
        return out

    def best_merge(self, focus: list[int], steps: int, wide: bool = False) -> tuple[float, int, int, int, list[int]] | None:
        """The best simulated merge among the pairs around ``focus`` (all if empty)."""
        options = []
        for pair in self.pairs(focus, wide):
            if pair in self._cyclic:
                continue
            scored = self._scored.get(pair)
            if scored is None:
                a, b = pair
                scored = [(self.proxy(a, b, int(p)), int(p)) for p in np.flatnonzero(self.allow[a] & self.allow[b])]
                self._scored[pair] = scored
            options.extend((d, pair[0], pair[1], p) for d, p in scored)
        options.sort()
        want = int(max(1, min(MAX_CANDIDATES, self.budget // max(1, self.size * max(steps, 1)))))
        best = None
        tried = 0
        bad_pairs: set[tuple[int, int]] = set()
        for _, a, b, p in options:
            if tried >= want:
                break
            if (a, b) in bad_pairs:
                continue
            seq = self.merged_sequence(a, b)
            if seq is None:
                bad_pairs.add((a, b))
                self._cyclic.add((a, b))
                continue
            if not self.memory_ok(a, b, p):
                continue
            keep, gone = (a, b) if a in seq else (b, a)
            parts = self.parts(seq, (keep, gone, p))
            makespan = self.sim.makespan([o for o, _ in parts], [q for _, q in parts])
            self.budget -= self.size
            tried += 1
            if best is None or makespan < best[0]:
                best = (makespan, keep, gone, p, seq)
        return best

    def run(self) -> Parts:
        c = self.problem.constraints
        k_min = c.min_partition_ops or 1
        max_parts = c.max_partitions
        self.size = self.g.num_ops + len(self.g.edges) + 1
        self.budget = SIM_BUDGET
        while True:
            small = sorted((i for i in self.seq if len(self.ops[i]) < k_min), key=lambda i: len(self.ops[i]))
            too_many = max_parts is not None and self.count() > max_parts
            if not small and not too_many:
                return self.parts()
            best = None
            if small:
                # the smallest partition that can merge with a neighbour
                for wide in (False, True):
                    for i in small:
                        best = self.best_merge([i], len(small), wide)
                        if best is not None:
                            break
                    if best is not None:
                        break
            else:
                best = self.best_merge([], self.count() - (max_parts or 0))
            if best is None:
                focus = small[:1]
                near = {x for pair in self.pairs(focus) for x in pair} - set(focus)
                raise _Stuck("min_partition_ops" if small else "max_partitions", self.count(),
                             [v for i in focus for v in self.ops[i]], sorted(v for i in near for v in self.ops[i]))
            _, keep, gone, p, seq = best
            self.apply(keep, gone, p, seq)


def _fewest_switches(problem: Problem) -> list[int]:
    host = problem.host
    return [host if problem.allowed[v, host] else int(np.flatnonzero(problem.allowed[v])[0]) for v in range(problem.num_ops)]


def _single_partition(problem: Problem, sim: Simulator) -> Parts | None:
    everyone = np.flatnonzero(problem.allowed.all(axis=0))
    ops = list(range(problem.num_ops))
    best = None
    for p in everyone:
        p = int(p)
        if problem.has_memory_limits:
            need = float(problem.weight_bytes.sum()) + problem.activation_bytes(ops)
            if need > problem.memory_capacity[p]:
                continue
        t = sim.makespan([ops], [p])
        if best is None or t < best[0]:
            best = (t, p)
    return None if best is None else [(ops, best[1])]


def _explain(problem: Problem, stuck: _Stuck) -> str:
    g, c, names = problem.graph, problem.constraints, problem.pus
    allowed = problem.allowed

    def pus_of(v: int) -> str:
        return "/".join(names[j] for j in np.flatnonzero(allowed[v]))

    if stuck.what == "max_partitions":
        head = f"--max-partitions {c.max_partitions} cannot be met"
        if c.max_partitions == 1 and not allowed.all(axis=0).any():
            # two ops with no PU in common, if there are any (one op per allowed-PU pattern)
            first: dict[bytes, int] = {}
            for v in range(g.num_ops):
                first.setdefault(allowed[v].tobytes(), v)
            reps = sorted(first.values())
            for u, v in itertools.combinations(reps, 2):
                if not (allowed[u] & allowed[v]).any():
                    return f"{head}: op {g.nodes[u].name!r} may only run on {pus_of(u)} and op {g.nodes[v].name!r} only on {pus_of(v)}"
            return f"{head}: no PU may run every op (pins, forbids and unsupported ops)"
        why = "PU restrictions of the ops (pins, forbids, unsupported ops)" if not allowed.all(axis=0).any() else "memory capacities"
        return f"{head}: merging stopped at {stuck.count} partitions; {why} block further merges"
    head = f"--min-partition-ops {c.min_partition_ops} cannot be met"
    if stuck.small_ops:
        v = min(stuck.small_ops, key=lambda v: (allowed[v].sum(), v))
        text = f"{head}: the partition holding op {g.nodes[v].name!r} (which may only run on {pus_of(v)}) can be merged with no neighbour"
        apart = [u for u in stuck.neighbour_ops if not (allowed[u] & allowed[v]).any()]
        if apart:
            u = min(apart)
            return f"{text} (e.g. op {g.nodes[u].name!r} next to it may only run on {pus_of(u)})"
        return f"{text} (PU restrictions or memory)"
    return head
