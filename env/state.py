"""The scheduling state machine under the environment: one op decided per step.

Each step takes one *ready* op (every predecessor decided) and puts it on a PU, either
*joining* that PU's open partition (the last one created there) or opening a *new*
partition there. Which ready op comes next is part of the action: the environment and
the planner let the policy choose among all of :meth:`ScheduleState.ready_ops`. A
suggested op is kept as :attr:`ScheduleState.current` (:meth:`ScheduleState.next_op`:
after an op comes its ready successor if that could start right when the op's
partition ends; otherwise the ready op anywhere that could start earliest, ties by the
critical-path-first reference order of :func:`visit_order`); the heuristics and the
reward's reference follow it. Each PU runs its partitions in creation order.

Why this action space is complete. Take any valid plan: a sequence of convex
partitions, each on a PU, every partition after the partitions it reads from, each PU
running its partitions in sequence order. Decide its ops partition by partition in
sequence order, each partition's ops in a topological order: the first op opens a new
partition on the partition's PU, the others join it. Every op is ready when its turn
comes (its producers sit in earlier partitions or earlier in its own), the partition
being filled is its PU's last one, and nothing reads from it yet, so every join is
allowed; creation order per PU equals the plan's order per PU, so the simulator gives
the identical makespan (:func:`partitiontuner.env.replay.actions_for_plan` builds this
sequence, and the tests replay random plans and the oracle's through it). Joining an
*earlier* partition is never needed: any plan that such a join would build is also
built partition by partition.

Why joins are restricted to open partitions without consumers. A join is allowed only
if no partition created since depends on the open partition (no op outside it reads
its outputs yet). This one local rule gives three things at once:

* convexity: a path that left the partition and came back to the joining op would
  pass through an op outside it that reads from it;
* a valid sequence: nothing that runs after the partition feeds it, so no deadlock
  between the per-PU orders and the data dependencies;
* exact incremental costs: a partition that nobody depends on can change its start and
  end without moving any other partition, so deciding an op costs
  ``O(in-degree + PUs)`` (the environment's features then evaluate every ready op's
  actions, ``O(ready ops x (in-degree + PUs))`` per step).

It gives up nothing (see above): a plan that grows a partition after another one reads
from it is reached by deciding the partition's ops before the reader's.

The timing rules are those of :class:`~partitiontuner.simulate.Simulator` (start = PU
free and inputs arrived; end = start + work + dispatch overhead; cross-PU tensors pay
the link; outputs must reach the host), evaluated incrementally from the simulator's
own compiled tables (``work``, ``transfer``, edges). The tests check, after every step
of random episodes, that :attr:`ScheduleState.makespan` equals ``Simulator.run`` on the
partial plan, and the environment's final reward is computed by the simulator itself.

Why one file of ~560 lines: :meth:`ScheduleState.apply`, :meth:`~ScheduleState.undo`,
the masks and the incremental costs read and write the same per-partition lists, and
every field that ``apply`` changes ``undo`` must restore; they change together.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partitiontuner.fusion import cover_step
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator

#: how many ready ops (first in the reference order) the visit order compares when it
#: leaves a chain
CANDIDATES = 16


def upward_rank(problem: Problem) -> np.ndarray:
    """Longest path to a graph output, in mean allowed op time (HEFT's upward rank without
    transfers): what is left behind each op on the critical path."""
    t = np.where(problem.allowed, problem.op_time, np.nan)
    mean = np.nanmean(t, axis=1)
    g = problem.graph
    rank = np.zeros(g.num_ops)
    for v in range(g.num_ops - 1, -1, -1):
        rank[v] = mean[v] + max((rank[w] for w in g.succs[v]), default=0.0)
    return rank


def visit_order(problem: Problem) -> list[int]:
    """A topological order that follows chains and takes the critical path first.

    After an op, the next one is its successor that has just become ready (the one with
    the largest upward rank); only when a branch ends at an op still waiting for other
    inputs does the order jump to the ready op with the largest rank anywhere. So the
    ops of a branch are consecutive, and a partition can grow along it by joins.
    """
    g = problem.graph
    n = g.num_ops
    rank = upward_rank(problem)
    missing = [len(g.preds[v]) for v in range(n)]
    heap = [(-rank[v], v) for v in range(n) if missing[v] == 0]
    heapq.heapify(heap)
    done = [False] * n
    order: list[int] = []
    nxt: int | None = None
    while len(order) < n:
        if nxt is None:
            while True:
                _, v = heapq.heappop(heap)
                if not done[v]:
                    break
        else:
            v = nxt
        done[v] = True
        order.append(v)
        best: int | None = None
        for w in g.succs[v]:
            missing[w] -= 1
            if missing[w] == 0:
                heapq.heappush(heap, (-rank[w], w))
                if best is None or (rank[w], -w) > (rank[best], -best):
                    best = w
        nxt = best
    return order


@dataclass(frozen=True)
class Candidate:
    """The effect of one action on the partial schedule (times in us)."""

    start_us: float  # start of the op's partition after the action
    end_us: float  # end of the op's partition (when the op's output exists)
    makespan_us: float  # partial makespan after the action
    arrival_us: float  # latest arrival of the op's inputs on the PU
    work_delta_us: float  # work the action adds to the PU (incl. a new partition's overhead)
    idle_us: float  # new: gap left on the PU before the op; join: how far the partition's start moves
    group_saving_us: float  # join: how much the partition's fused-group cover saves more with the op


class ScheduleState:
    """Partitions built so far, with their exact start/end times (see module docstring).

    Args:
        problem: the problem being scheduled.
        order: the reference order that breaks ties between ops that could start at the
            same time (default :func:`visit_order`).
        simulator: a compiled simulator to take the cost tables from.
    """

    def __init__(self, problem: Problem, order: Sequence[int] | None = None, simulator: Simulator | None = None):
        self.problem = problem
        self.sim = simulator or Simulator(problem)
        self.order = list(order) if order is not None else visit_order(problem)
        self.ref_pos = [0] * problem.num_ops
        for i, v in enumerate(self.order):
            self.ref_pos[v] = i
        self._succs = problem.graph.succs
        self._num_preds = [len(x) for x in problem.graph.preds]
        self.num_pus = problem.num_pus
        self.allowed = problem.allowed
        self._allowed_rows: list[list[bool]] = problem.allowed.tolist()
        fusion = problem.fusion
        self._chain_of, self._chain_pos = fusion.chain, fusion.pos
        self._savings, self._max_len = fusion.savings, fusion.max_len
        cap = problem.memory_capacity
        self.memory_capacity = cap
        self.track_memory = bool(np.isfinite(cap).any())
        g = problem.graph
        if self.track_memory:
            self._tensors_of = [tuple(dict.fromkeys(g.nodes[v].inputs + g.nodes[v].outputs)) for v in range(g.num_ops)]
            self._tensor_bytes = {t: info.size_bytes for t, info in g.tensors.items()}
            self._weights = problem.weight_bytes.tolist()
        self.max_partitions = problem.constraints.max_partitions
        self.reset()

    # --- state -------------------------------------------------------------------------
    def reset(self) -> None:
        n, p = self.problem.num_ops, self.num_pus
        self.history: list[int] = []  # decided ops, in visiting order
        self.missing = list(self._num_preds)
        self.ready = {v for v in range(n) if self.missing[v] == 0}
        self._ready_heap = [(self.ref_pos[v], v) for v in self.ready]
        heapq.heapify(self._ready_heap)
        self.owner = [-1] * n
        self.pu_of = [-1] * n
        self.parts: list[list[int]] = []
        self.part_pu: list[int] = []
        self.part_prev_free: list[float] = []  # end of the PU's previous partition
        self.part_arrival: list[float] = []  # latest input arrival
        self.part_sum: list[float] = []  # sum of op times
        self.part_work: list[float] = []  # work (group profile if cheaper)
        self.part_start: list[float] = []
        self.part_end: list[float] = []
        self.part_out: list[float] = []  # largest graph-output tensor written (-1: none)
        self.part_contrib: list[float] = []  # end, or arrival of its graph outputs at the host
        self.part_has_consumer: list[bool] = []
        self.part_touched: list[int] = []  # step of the last change (gives a valid sequence)
        # per partition, per chain: (chain positions held, best fusion saving of each prefix)
        self.part_chains: list[dict[int, tuple[list[int], list[float]]]] = []
        self.open = [-1] * p
        self.closed_makespan = 0.0
        self.makespan = 0.0
        if self.track_memory:
            self.part_tensors: list[set[str]] = []
            self.part_act: list[int] = []
            self.pu_weights = [0] * p
            self.pu_act = [0] * p  # largest activation footprint among closed partitions
        self.current = self.next_op(-1)

    @property
    def step_index(self) -> int:
        """How many ops are decided."""
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.current < 0

    def earliest_start(self, u: int) -> float:
        """When ``u``'s inputs could be on some PU that may run it (PU load ignored)."""
        row = self._allowed_rows[u]
        return min(self._arrival(u, p, -1) for p in range(self.num_pus) if row[p])

    def next_op(self, last: int) -> int:
        """The op to visit after ``last`` (``-1``: the first; ``-1`` returned when every
        op is decided).

        Continue the chain: a ready successor of ``last`` that could start as soon as
        ``last``'s partition ends (no transfer to wait for) comes next, so a partition
        can grow along a branch. Otherwise, of the first :data:`CANDIDATES` ready ops in
        the reference order, the one that could start earliest (ties: successors of
        ``last``, then the reference order): a branch whose inputs are already there is
        visited before one waiting on another PU. (The cap keeps a step cheap on wide
        graphs; DNN graphs rarely have that many ready ops.)
        """
        ready = self.ready
        if not ready:
            return -1
        ref = self.ref_pos
        succs = [w for w in self._succs[last] if w in ready] if last >= 0 else []
        if succs:
            end = self.part_end[self.owner[last]]
            est = {w: self.earliest_start(w) for w in succs}
            cont = [w for w in succs if est[w] <= end + 1e-9]
            if cont:
                return min(cont, key=lambda u: (est[u], ref[u]))
        pool = self._first_ready(CANDIDATES)
        if len(pool) == 1:
            return pool[0]
        first = set(succs)
        return min(pool, key=lambda u: (self.earliest_start(u), u not in first, ref[u]))

    def _first_ready(self, k: int) -> list[int]:
        """The ``k`` ready ops first in the reference order (a lazy heap: entries of ops
        no longer ready are dropped; every op that becomes ready is pushed again)."""
        heap, ready = self._ready_heap, self.ready
        out: list[int] = []
        seen: set[int] = set()
        while heap and len(out) < k:
            r, u = heapq.heappop(heap)
            if u in ready and u not in seen:
                seen.add(u)
                out.append(u)
        for u in out:
            heapq.heappush(heap, (self.ref_pos[u], u))
        return out

    def ready_ops(self) -> list[int]:
        """Every op that may be decided now (all predecessors decided), in the reference
        order: the ops an action may choose from."""
        return sorted(self.ready, key=self.ref_pos.__getitem__)

    @property
    def num_partitions(self) -> int:
        return len(self.parts)

    def joinable(self, pu: int) -> bool:
        """The PU's open partition exists and nothing reads from it yet."""
        k = self.open[pu]
        return k >= 0 and not self.part_has_consumer[k]

    # --- masks -------------------------------------------------------------------------------
    def candidate_masks(self) -> tuple[list[int], np.ndarray]:
        """The ready ops (:meth:`ready_ops`) and their masks ``(len(ops), num_pus, 2)``
        bool (:meth:`action_mask`). The global limits are relaxed only when they would
        forbid every action of every ready op."""
        ops = self.ready_ops()
        masks = np.zeros((len(ops), self.num_pus, 2), dtype=bool)
        for i, v in enumerate(ops):
            masks[i] = self.action_mask(v, relax=False)
        if not masks.any():
            for i, v in enumerate(ops):
                masks[i] = self.action_mask(v)
        return ops, masks

    def action_mask(self, v: int | None = None, relax: bool = True) -> np.ndarray:
        """``(num_pus, 2)`` bool for ready op ``v`` (default :attr:`current`): ``[pu, 0]``
        new partition, ``[pu, 1]`` join.

        Forbids PUs the op may not run on (unsupported, pinned elsewhere, forbidden) and
        joins that are not allowed (see module docstring); with a partition limit, new
        partitions once the limit is reached; with memory capacities, placements that
        would overflow the PU. If the global limits alone would forbid everything, they
        are relaxed unless ``relax`` is False (the planner's repair step then enforces
        them or says why it cannot).
        """
        if v is None:
            v = self.current
        mask = np.zeros((self.num_pus, 2), dtype=bool)
        if v < 0:
            return mask
        row = self._allowed_rows[v]
        for p in range(self.num_pus):
            if row[p]:
                mask[p, 0] = True
                mask[p, 1] = self.joinable(p)
        relaxed = mask.copy()
        if self.max_partitions is not None and len(self.parts) >= self.max_partitions:
            mask[:, 0] = False
        if self.track_memory:
            for p in range(self.num_pus):
                for b in (0, 1):
                    if mask[p, b] and not self._fits(v, p, bool(b)):
                        mask[p, b] = False
        if relax and not mask.any():
            mask = relaxed
        return mask

    def _fits(self, v: int, p: int, join: bool) -> bool:
        cap = self.memory_capacity[p]
        if not np.isfinite(cap):
            return True
        if join:
            k = self.open[p]
            act = self._act_bytes(self.part_tensors[k] | set(self._tensors_of[v]))
        else:
            act = self._act_bytes(set(self._tensors_of[v]))
        k = self.open[p]
        open_act = self.part_act[k] if (k >= 0 and not join) else 0
        return self.pu_weights[p] + self._weights[v] + max(self.pu_act[p], open_act, act) <= cap

    def _act_bytes(self, tensors: set[str]) -> int:
        tb = self._tensor_bytes
        return sum(tb[t] for t in tensors)

    # --- costs of a candidate action ------------------------------------------------------------
    def _arrival(self, v: int, p: int, skip: int) -> float:
        """Latest arrival on ``p`` of ``v``'s inputs that come from outside partition ``skip``
        (:meth:`Simulator.arrival` on the partitions so far)."""
        return self.sim.arrival_fast(v, p, self.owner, self.part_pu, self.part_end, skip)

    def _contrib(self, end: float, p: int, out_bytes: float) -> float:
        return self.sim.to_host(end, p, out_bytes)

    def _others_makespan(self, skip: int) -> float:
        m = self.closed_makespan
        for k in self.open:
            if k >= 0 and k != skip and self.part_contrib[k] > m:
                m = self.part_contrib[k]
        return m

    def _fusion_gain(self, k: int, v: int, p: int) -> float:
        """How much more the best fused-group cover of partition ``k`` saves on ``p``
        with ``v`` added (:class:`partitiontuner.fusion.FusionTable`'s dynamic program
        along ``v``'s chain, extended by one position with :func:`~partitiontuner.fusion.cover_step`:
        ops of a chain join in chain order)."""
        c = self._chain_of[v]
        entry = self.part_chains[k].get(c)
        if entry is None or c < 0:
            return 0.0
        positions, best = entry
        m = len(positions)
        return cover_step(self._savings, self._max_len, c, positions, best, m + 1, self._chain_pos[v], p) - best[m]

    def evaluate(self, p: int, join: bool, v: int | None = None) -> Candidate:
        """What placing ready op ``v`` (default :attr:`current`) on ``p`` (joining or
        not) would do. Pure."""
        if v is None:
            v = self.current
        sim = self.sim
        t_v = sim.op_time[v][p]
        out_v = sim.output_bytes[v]
        if join:
            k = self.open[p]
            arr = max(self.part_arrival[k], self._arrival(v, p, k))
            start = max(self.part_prev_free[k], arr)
            gain = self._fusion_gain(k, v, p)
            work = self.part_work[k] + t_v - gain
            end = sim.finish(start, work, p)
            contrib = self._contrib(end, p, max(self.part_out[k], out_v))
            makespan = max(self._others_makespan(k), contrib)
            return Candidate(start, end, makespan, arr, work - self.part_work[k], start - self.part_start[k], gain)
        k = self.open[p]
        free = self.part_end[k] if k >= 0 else 0.0
        arr = self._arrival(v, p, -1)
        start = max(free, arr)
        end = sim.finish(start, t_v, p)
        contrib = self._contrib(end, p, out_v)
        makespan = max(self.makespan, contrib)
        return Candidate(start, end, makespan, arr, t_v + sim.overhead[p], start - free, 0.0)

    # --- transition ---------------------------------------------------------------------------------
    def apply(self, p: int, join: bool, v: int | None = None) -> tuple:
        """Decide ready op ``v`` (default :attr:`current`): put it on PU ``p``, joining
        its open partition or not.

        The caller checks the mask; this only asserts the structural rules. Returns an
        undo record for :meth:`undo` (lookahead features try actions and take them back).
        """
        suggested = self.current
        if v is None:
            v = suggested
        assert v >= 0, "episode is over"
        assert v in self.ready, "only a ready op can be decided"
        sim = self.sim
        t_v = sim.op_time[v][p]
        out_v = sim.output_bytes[v]
        saved_makespans = (self.closed_makespan, self.makespan)
        if join:
            k = self.open[p]
            assert k >= 0 and not self.part_has_consumer[k], "join into a partition that is not open"
            old = (self.part_arrival[k], self.part_sum[k], self.part_work[k], self.part_start[k], self.part_end[k],
                   self.part_out[k], self.part_contrib[k], self.part_touched[k])
            arr = max(self.part_arrival[k], self._arrival(v, p, k))
            total = self.part_sum[k] + t_v
            gain = self._fusion_gain(k, v, p)
            work = self.part_work[k] + t_v - gain
            c = self._chain_of[v]
            entry = self.part_chains[k].get(c)
            if entry is None:
                self.part_chains[k][c] = ([self._chain_pos[v]], [0.0, 0.0])
            else:
                entry[0].append(self._chain_pos[v])
                entry[1].append(entry[1][-1] + gain)
            self.parts[k].append(v)
            self.part_arrival[k] = arr
            self.part_sum[k] = total
            self.part_work[k] = work
            start = max(self.part_prev_free[k], arr)
            self.part_start[k] = start
            self.part_end[k] = sim.finish(start, work, p)
            self.part_out[k] = max(self.part_out[k], out_v)
            self.part_contrib[k] = self._contrib(self.part_end[k], p, self.part_out[k])
            record: tuple = ("join", p, k, old)
        else:
            prev = self.open[p]
            free = 0.0
            old_act = self.pu_act[p] if self.track_memory else 0
            if prev >= 0:
                free = self.part_end[prev]
                if self.part_contrib[prev] > self.closed_makespan:
                    self.closed_makespan = self.part_contrib[prev]
                if self.track_memory:
                    self.pu_act[p] = max(self.pu_act[p], self.part_act[prev])
            k = len(self.parts)
            arr = self._arrival(v, p, -1)
            start = max(free, arr)
            self.parts.append([v])
            self.part_pu.append(p)
            self.part_prev_free.append(free)
            self.part_arrival.append(arr)
            self.part_sum.append(t_v)
            self.part_work.append(t_v)
            self.part_start.append(start)
            self.part_end.append(sim.finish(start, t_v, p))
            self.part_out.append(out_v)
            self.part_contrib.append(self._contrib(self.part_end[k], p, out_v))
            self.part_has_consumer.append(False)
            self.part_touched.append(0)
            self.part_chains.append({self._chain_of[v]: ([self._chain_pos[v]], [0.0, 0.0])})
            self.open[p] = k
            if self.track_memory:
                self.part_tensors.append(set())
                self.part_act.append(0)
            record = ("new", p, prev, old_act)
        self.owner[v] = k
        self.pu_of[v] = p
        self.part_touched[k] = self.step_index
        flipped = []
        for u, _ in sim.in_edges[v]:
            j = self.owner[u]
            if j != k and not self.part_has_consumer[j]:
                self.part_has_consumer[j] = True
                flipped.append(j)
        added: list[str] = []
        old_part_act = 0
        if self.track_memory:
            self.pu_weights[p] += self._weights[v]
            added = [t for t in self._tensors_of[v] if t not in self.part_tensors[k]]
            self.part_tensors[k].update(added)
            old_part_act = self.part_act[k]
            self.part_act[k] = self._act_bytes(self.part_tensors[k])
        self.makespan = self._others_makespan(-1)
        self.history.append(v)
        self.ready.discard(v)
        newly = []
        for w in self._succs[v]:
            self.missing[w] -= 1
            if self.missing[w] == 0:
                newly.append(w)
        self.ready.update(newly)
        for w in newly:
            heapq.heappush(self._ready_heap, (self.ref_pos[w], w))
        self.current = self.next_op(v)
        return (*record, saved_makespans, flipped, added, old_part_act, newly, suggested)

    def undo(self, record: tuple) -> None:
        """Take back the last :meth:`apply` (``record`` is what it returned)."""
        kind, p = record[0], record[1]
        (closed, makespan), flipped, added, old_part_act, newly, suggested = record[-6:]
        v = self.history.pop()
        self.current = suggested
        self.ready.difference_update(newly)
        for w in self._succs[v]:
            self.missing[w] += 1
        self.ready.add(v)
        heapq.heappush(self._ready_heap, (self.ref_pos[v], v))
        k = self.owner[v]
        for j in flipped:
            self.part_has_consumer[j] = False
        self.owner[v] = -1
        self.pu_of[v] = -1
        if self.track_memory:
            self.pu_weights[p] -= self._weights[v]
            self.part_tensors[k].difference_update(added)
            self.part_act[k] = old_part_act
        if kind == "join":
            self.parts[k].pop()
            entry = self.part_chains[k][self._chain_of[v]]
            if len(entry[0]) == 1:
                del self.part_chains[k][self._chain_of[v]]
            else:
                entry[0].pop()
                entry[1].pop()
            (self.part_arrival[k], self.part_sum[k], self.part_work[k], self.part_start[k], self.part_end[k],
             self.part_out[k], self.part_contrib[k], self.part_touched[k]) = record[3]
        else:
            for lst in (self.parts, self.part_pu, self.part_prev_free, self.part_arrival, self.part_sum, self.part_work,
                        self.part_start, self.part_end, self.part_out, self.part_contrib, self.part_has_consumer,
                        self.part_touched, self.part_chains):
                lst.pop()
            self.open[p] = record[2]
            if self.track_memory:
                self.part_tensors.pop()
                self.part_act.pop()
                self.pu_act[p] = record[3]
        self.closed_makespan, self.makespan = closed, makespan

    # --- results ------------------------------------------------------------------------------------
    def sequence(self) -> list[int]:
        """Partition indices in a valid execution sequence.

        A partition changes only while nothing depends on it, so ordering by the step of
        its last change puts every partition after its producers and after the
        partitions created before it on its PU.
        """
        return sorted(range(len(self.parts)), key=self.part_touched.__getitem__)

    def partitions(self) -> list[tuple[list[int], int]]:
        """``(ops, pu)`` in a valid execution sequence (partial plans too)."""
        return [(sorted(self.parts[k]), self.part_pu[k]) for k in self.sequence()]

    def per_pu_orders(self) -> dict[int, list[int]]:
        """PU -> its partitions (indices into :attr:`parts`) in creation = run order."""
        out: dict[int, list[int]] = {p: [] for p in range(self.num_pus)}
        for k, p in enumerate(self.part_pu):
            out[p].append(k)
        return out
