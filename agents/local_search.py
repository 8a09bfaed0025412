"""Anytime local search over valid plans, costed by the simulator.

A plan is a list of partitions ``(ops, pu)`` in execution sequence. The search starts
from a valid plan and applies one move at a time, keeping it only when the simulated
makespan drops, or stays equal while the sum of partition end times drops (so moves
that give slack to paths off the critical one are kept too; the pair strictly
decreases, so the search ends). Moves:

* **retarget**: a whole partition to another PU that may run all its ops;
* **move op**: an op on a partition's boundary leaves it, alone on any allowed PU or
  into a neighbouring partition (one holding a predecessor or successor of it);
* **merge**: two partitions adjacent in the partition graph or consecutive on one PU,
  onto any PU that may run both;
* **split**: a partition cut at a position of its ops' topological order (both parts
  stay convex: a path between two ops of a convex set stays inside it, and the graph's
  op indices are topological), the second part on any allowed PU;
* **isolate**: a partition cut in three around one of its ops (those before it, the op
  alone on any allowed PU, those after it: convex by the same argument), which is
  how a branch leaves a partition it shares with a parallel one;
* **swap**: two partitions consecutive on one PU trade their turns when neither needs
  the other.

Validity: a set of partitions is a valid plan exactly when its partition graph is
acyclic (a path leaving a partition and coming back is a cycle), so every structural
move is re-sequenced by :func:`partitiontuner.runs.order_partitions` (Kahn's
algorithm, keyed by the old positions so per-PU orders are kept where they can be),
which raises on a cycle. Pins and forbids live in ``problem.allowed`` and are checked
when a PU is chosen; partition limits and memory by
:func:`partitiontuner.plan.check_plan_constraints`. The cost of a candidate is one
:meth:`Simulator.run`; nothing here computes a cost itself.

First-improvement in a seeded random order; the clock is checked before every
candidate, so a deadline is honoured within one simulation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, check_plan_constraints, make_plan
from partitiontuner.problem import Problem
from partitiontuner.repair import needs_repair
from partitiontuner.runs import Parts, order_partitions, partition_edges
from partitiontuner.simulate import Simulator

#: split points tried per partition, at most (evenly spaced over its ops)
MAX_SPLITS = 8


@dataclass(frozen=True)
class SearchResult:
    """The best plan found (partitions in execution sequence) and how the search went.

    ``local_optimum`` is True when no move improves it (False: stopped by the deadline).
    """

    parts: Parts
    makespan_us: float
    moves_tried: int
    moves_applied: int
    local_optimum: bool


class LocalSearch:
    """First-improvement local search on one problem (see the module docstring).

    Args:
        problem: the problem (its constraints are respected).
        sim: its simulator (built if not given).
        seed: seed of the move order.
    """

    def __init__(self, problem: Problem, sim: Simulator | None = None, seed: int = 0):
        self.problem = problem
        self.sim = sim or Simulator(problem)
        self.rng = np.random.default_rng(seed)
        self.graph = problem.graph
        self.allowed = problem.allowed
        self.constrained = needs_repair(problem)

    # -- public --------------------------------------------------------------------
    def improve(self, parts: Sequence[tuple[Sequence[int], int]], deadline: float) -> SearchResult:
        """Improve ``parts`` (a valid plan, in execution sequence) until no move helps
        or ``time.perf_counter()`` passes ``deadline``."""
        cur: Parts = [(sorted(int(v) for v in ops), int(p)) for ops, p in parts]
        score = self.score(cur)
        tried = applied = 0
        while True:
            improved = False
            for cand in self.neighbours(cur):
                if time.perf_counter() >= deadline:
                    return SearchResult(cur, score[0], tried, applied, False)
                tried += 1
                if cand is None or not self.feasible(cand):
                    continue
                s = self.score(cand)
                if s[0] < score[0] - 1e-9 or (s[0] <= score[0] and s[1] < score[1] - 1e-9):
                    cur, score, improved = cand, s, True
                    applied += 1
                    break
            if not improved:
                return SearchResult(cur, score[0], tried, applied, True)

    def improve_plan(self, plan: Plan, deadline: float) -> tuple[Plan, SearchResult]:
        """:meth:`improve` on a :class:`Plan`; the result keeps its method and info."""
        names = self.problem.pus
        res = self.improve([(p.ops, names.index(p.device)) for p in plan.partitions], deadline)
        return make_plan(self.problem, res.parts, plan.method, plan.info), res

    def kick(self, parts: Parts, moves: int) -> Parts:
        """``moves`` random valid moves regardless of cost: a perturbation for iterated
        local search."""
        cur: Parts = [(sorted(int(v) for v in ops), int(p)) for ops, p in parts]
        for _ in range(moves):
            for cand in self.neighbours(cur):
                if cand is not None and self.feasible(cand):
                    cur = cand
                    break
        return cur

    def score(self, parts: Parts) -> tuple[float, float]:
        """Simulated makespan, then the sum of partition end times (tie-break)."""
        makespan, _, end = self.sim.run([ops for ops, _ in parts], [p for _, p in parts])
        return makespan, sum(end)

    def feasible(self, parts: Parts) -> bool:
        """Partition limits and memory (pins and forbids are checked by the moves)."""
        if not self.constrained:
            return True
        try:
            check_plan_constraints(self.problem, make_plan(self.problem, parts, "search"))
        except InfeasiblePlanError:
            return False
        return True

    # -- moves -----------------------------------------------------------------------
    def neighbours(self, parts: Parts) -> Iterator[Parts | None]:
        """Candidate plans, lazily, in a random order of move kinds and moves; ``None``
        for a move that turned out invalid (counted as tried)."""
        n = len(parts)
        owner, preds, succs = partition_edges(self.graph, parts)
        moves: list[tuple] = []
        num_pus = self.problem.num_pus
        for i, (ops, p) in enumerate(parts):
            ok = self.allowed[ops].all(axis=0)
            moves.extend(("retarget", i, q) for q in range(num_pus) if q != p and ok[q])
            for j in preds[i] | succs[i]:
                if i < j:
                    moves.append(("merge", i, j))
            if len(ops) > 1:
                cuts = sorted({int(k) for k in np.linspace(1, len(ops) - 1, min(MAX_SPLITS, len(ops) - 1))})
                moves.extend(("split", i, k) for k in cuts)
        last: dict[int, int] = {}
        for i, (_, p) in enumerate(parts):
            if p in last:
                j = last[p]
                if i not in succs[j]:
                    moves.append(("merge", j, i))
                    moves.append(("swap", j, i))
            last[p] = i
        gp, gs = self.graph.preds, self.graph.succs
        for v in range(self.graph.num_ops):
            i = owner[v]
            near = {owner[u] for u in gp[v]} | {owner[u] for u in gs[v]}
            if len(parts[i][0]) > 1:
                moves.extend(("isolate", v, q) for q in range(num_pus) if self.allowed[v, q])
            if i in near and len(near) == 1 and gp[v] and gs[v]:
                continue  # interior: leaving would break the partition's convexity
            moves.extend(("op", v, j) for j in near if j != i)
            moves.extend(("alone", v, q) for q in range(num_pus) if self.allowed[v, q] and (q != parts[i][1] or len(parts[i][0]) > 1))
        for k in self.rng.permutation(len(moves)):
            yield self._apply(parts, moves[int(k)], n)

    def _apply(self, parts: Parts, move: tuple, n: int) -> Parts | None:
        kind, a, b = move
        if kind == "retarget":
            out = list(parts)
            out[a] = (parts[a][0], b)
            return out
        if kind == "split":
            ops, p = parts[a]
            head, tail = ops[:b], ops[b:]
            ok = self.allowed[tail].all(axis=0)
            q = int(self.rng.choice(np.flatnonzero(ok)))
            return [*parts[:a], (head, p), (tail, q), *parts[a + 1:]]
        if kind == "merge":
            ops = sorted(parts[a][0] + parts[b][0])
            ok = np.flatnonzero(self.allowed[ops].all(axis=0))
            if not len(ok):
                return None
            prefer = [q for q in (parts[a][1], parts[b][1]) if q in ok]
            q = prefer[int(self.rng.integers(len(prefer)))] if prefer else int(self.rng.choice(ok))
            rest = [(o, p) for k, (o, p) in enumerate(parts) if k not in (a, b)]
            keys = [float(k) for k in range(n) if k not in (a, b)]
            return self._sequence([*rest, (ops, q)], [*keys, float(a)])
        if kind == "swap":
            keys = [float(k) for k in range(n)]
            keys[b] = a - 0.5
            out = self._sequence(list(parts), keys)
            if out is None or out == parts:
                return None
            return out
        # op moves: v = a leaves its partition
        v = a
        i = next(k for k, (o, _) in enumerate(parts) if v in o)
        if kind == "isolate":
            ops, p = parts[i]
            head, tail = [u for u in ops if u < v], [u for u in ops if u > v]
            return [*parts[:i], *([(head, p)] if head else []), ([v], b), *([(tail, p)] if tail else []), *parts[i + 1:]]
        rest_ops = [u for u in parts[i][0] if u != v]
        new = [(o, p) for k, (o, p) in enumerate(parts)]
        keys = [float(k) for k in range(n)]
        if kind == "op":
            j = b
            if not self.allowed[v, parts[j][1]]:
                return None
            new[j] = (sorted(parts[j][0] + [v]), parts[j][1])
        else:
            new.append(([v], b))
            keys.append(i + 0.5 if any(u in rest_ops for u in self.graph.preds[v]) else i - 0.5)
        if rest_ops:
            new[i] = (rest_ops, parts[i][1])
        else:
            del new[i]
            del keys[i]
        return self._sequence(new, keys)

    def _sequence(self, parts: Parts, keys: list[float]) -> Parts | None:
        try:
            return order_partitions(self.graph, parts, keys)
        except InfeasiblePlanError:
            return None
