"""The cost model: when each partition of a plan starts and ends, and the makespan.

Semantics (DESIGN.md step 5). A partition starts when its PU is free (its turn in that
PU's order has come) and all its input tensors have arrived. It lasts its work time
(:meth:`Problem.partition_time`: the sum of its ops' times minus the fusion saving of
the profiled groups it contains, i.e. the cheapest cover of its ops by fused groups
and single ops; op and group times are the profiled ones times the PU's ``work_scale``,
1 unless calibrated, applied once in :attr:`Problem.op_time` / :attr:`Problem.group_time`)
plus the PU's dispatch overhead. Its outputs exist only when it completes. A tensor
produced on PU ``q`` and
read on PU ``p != q`` arrives ``latency(q, p) + bytes / bandwidth(q, p)`` after its
producer ends; transfers never contend with each other nor occupy a PU, so a tensor
read by several partitions on the same PU crosses once. Graph inputs are on the host
PU at time 0; graph outputs must reach the host. The makespan is the time the last
partition ends or the last output reaches the host.

With no contention this discrete-event semantics reduces to a longest path over the
partitions in their execution sequence, which is what :class:`Simulator` computes (the
tests check it against a literal event-queue simulation). It is the only cost function
in the project: planners, the oracle and the RL environment all call it. Each rule has
one implementation: the arrival of a partition's inputs (:meth:`Simulator.arrival`),
its end (:meth:`Simulator.finish`), its outputs' way to the host
(:meth:`Simulator.to_host`), its work (:meth:`Simulator.work`, with the fusion cover
of :mod:`partitiontuner.fusion`). The environment's incremental costs
(:class:`~partitiontuner.env.state.ScheduleState`), its lookahead table, plan repair's
merge costs and the oracle's integer tables are views that call these (the oracle
runs the same cover dynamic program on integers); tests check each equals
:meth:`Simulator.run`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from partitiontuner.plan import Plan, validate_plan
from partitiontuner.problem import Problem


@dataclass(frozen=True)
class PartitionTiming:
    index: int
    device: str
    start_us: float
    end_us: float
    work_us: float
    overhead_us: float


@dataclass(frozen=True)
class TransferTiming:
    """One tensor crossing from ``src_device`` to ``dst_device``.

    ``src_partition`` is -1 for a graph input; ``dst_partition`` is -1 for a graph output
    going back to the host (else the first partition on ``dst_device`` that reads it).
    """

    tensor: str
    size_bytes: int
    src_device: str
    dst_device: str
    src_partition: int
    dst_partition: int
    start_us: float
    end_us: float


@dataclass(frozen=True)
class SimResult:
    makespan_us: float
    partitions: tuple[PartitionTiming, ...]
    transfers: tuple[TransferTiming, ...]

    def busy_us(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.partitions:
            out[p.device] = out.get(p.device, 0.0) + p.end_us - p.start_us
        return out

    def parallel_pairs(self) -> list[tuple[int, int]]:
        """Pairs of partitions (on different PUs) whose run times overlap."""
        parts = sorted(self.partitions, key=lambda p: p.start_us)
        pairs = []
        for a_i, a in enumerate(parts):
            for b in parts[a_i + 1:]:
                if b.start_us >= a.end_us - 1e-9:
                    break
                if b.device != a.device:
                    pairs.append(tuple(sorted((a.index, b.index))))
        return sorted(pairs)


class Simulator:
    """The cost model compiled for one problem: plain lists, so one plan costs O(edges).

    ``run(parts, pus)`` takes partitions as op lists in execution sequence and PU
    indices; it trusts them to be valid (planners build valid plans; use
    :func:`simulate` for anything from outside).
    """

    def __init__(self, problem: Problem):
        g = problem.graph
        self.problem = problem
        self.num_ops = g.num_ops
        self.num_pus = problem.num_pus
        self.host = problem.host
        self.op_time: list[list[float]] = problem.op_time.tolist()
        self.overhead: list[float] = problem.overhead.tolist()
        self.lat: list[list[float]] = problem.link_latency.tolist()
        self.upb: list[list[float]] = problem.link_us_per_byte.tolist()
        self.in_edges: list[list[tuple[int, int]]] = [[(e.src, e.size_bytes) for e in g.in_edges[v]] for v in range(g.num_ops)]
        in_bytes = [0] * g.num_ops
        reads_input = [False] * g.num_ops
        for t in g.inputs:
            for v in g.input_consumers[t.name]:
                reads_input[v] = True
                in_bytes[v] = max(in_bytes[v], t.size_bytes)
        self.reads_input = reads_input
        self.input_bytes = in_bytes
        out_bytes = [-1] * g.num_ops
        for t in g.outputs:
            v = g.output_producers[t.name]
            out_bytes[v] = max(out_bytes[v], t.size_bytes)
        self.output_bytes = out_bytes
        self.fusion = problem.fusion
        self.arrival_fast = self._compile_arrival()

    def transfer(self, src: int, dst: int, size_bytes: float) -> float:
        if src == dst:
            return 0.0
        return self.lat[src][dst] + size_bytes * self.upb[src][dst]

    def work(self, ops: Sequence[int], pu: int) -> float:
        """Work time of a partition (see :meth:`Problem.partition_time`)."""
        ot = self.op_time
        total = 0.0
        for v in ops:
            total += ot[v][pu]
        if len(ops) > 1:
            total -= self.fusion.saving(ops, pu)
        return total

    def arrival(self, v: int, p: int, owner: Sequence[int], part_pu: Sequence[int], part_end: Sequence[float], skip: int) -> float:
        """When the last of ``v``'s inputs from outside partition ``skip`` is on PU ``p``.

        The arrival rule: a tensor from a partition on ``p`` is there when its producer
        ends; one from another PU ``q`` after the link's transfer (``latency + bytes /
        bandwidth``); a graph input starts on the host at time 0.

        Args:
            v: the reading op.
            p: the PU that would run it.
            owner: partition index of every op read (``owner[u]`` for ``u`` in ``v``'s
                predecessors).
            part_pu: PU of each partition.
            part_end: end time of each partition.
            skip: the partition whose own tensors do not count (``-1``: none).
        """
        return self.arrival_fast(v, p, owner, part_pu, part_end, skip)

    def with_in_edges(self, in_edges: list[list[tuple[int, int]]]) -> Simulator:
        """A copy that sees only these input edges (``(producer, bytes)`` per op): a
        window of the graph, as the paper's scheduler scores one block alone."""
        other = copy.copy(self)
        other.in_edges = in_edges
        other.arrival_fast = other._compile_arrival()
        return other

    def _compile_arrival(self) -> Callable[[int, int, Sequence[int], Sequence[int], Sequence[float], int], float]:
        """:meth:`arrival` with the tables bound as closure variables, kept as
        :attr:`arrival_fast` (the same rule, not a second one): it runs once per op of
        every simulated plan and several times per environment step, so attribute
        lookups would be most of its cost."""
        lat, upb, host = self.lat, self.upb, self.host
        in_edges, reads_input, input_bytes = self.in_edges, self.reads_input, self.input_bytes

        def arrival(v: int, p: int, owner: Sequence[int], part_pu: Sequence[int], part_end: Sequence[float], skip: int) -> float:
            a = 0.0
            for u, b in in_edges[v]:
                j = owner[u]
                if j != skip:
                    q = part_pu[j]
                    t = part_end[j] if q == p else part_end[j] + lat[q][p] + b * upb[q][p]
                    if t > a:
                        a = t
            if reads_input[v] and p != host:
                t = lat[host][p] + input_bytes[v] * upb[host][p]
                if t > a:
                    a = t
            return a

        return arrival

    def finish(self, start_us: float, work_us: float, p: int) -> float:
        """End of a partition on ``p`` that starts at ``start_us`` with ``work_us`` of work:
        the work plus the PU's dispatch overhead."""
        return start_us + work_us + self.overhead[p]

    def to_host(self, end_us: float, p: int, out_bytes: float) -> float:
        """When a partition on ``p`` ending at ``end_us`` is done for the makespan: its
        largest graph output (``out_bytes``; ``-1``: none) must also reach the host."""
        if out_bytes >= 0 and p != self.host:
            return max(end_us, end_us + self.lat[p][self.host] + out_bytes * self.upb[p][self.host])
        return end_us

    def run(self, parts: Sequence[Sequence[int]], pus: Sequence[int]) -> tuple[float, list[float], list[float]]:
        """Makespan and per-partition start and end times."""
        owner = [-1] * self.num_ops
        for i, ops in enumerate(parts):
            for v in ops:
                owner[v] = i
        n = len(parts)
        start = [0.0] * n
        end = [0.0] * n
        free = [0.0] * self.num_pus
        host, out_bytes, arrival = self.host, self.output_bytes, self.arrival_fast
        makespan = 0.0
        for i in range(n):
            ops = parts[i]
            p = pus[i]
            s = free[p]
            for v in ops:
                a = arrival(v, p, owner, pus, end, i)
                if a > s:
                    s = a
            e = self.finish(s, self.work(ops, p), p)
            start[i] = s
            end[i] = e
            free[p] = e
            if e > makespan:
                makespan = e
            if p != host:
                largest = -1
                for v in ops:
                    if out_bytes[v] > largest:
                        largest = out_bytes[v]
                if largest >= 0:
                    e = self.to_host(e, p, largest)
                    if e > makespan:
                        makespan = e
        return makespan, start, end

    def makespan(self, parts: Sequence[Sequence[int]], pus: Sequence[int]) -> float:
        return self.run(parts, pus)[0]

    def plan_makespan(self, plan: Plan) -> float:
        names = self.problem.pus
        return self.run([p.ops for p in plan.partitions], [names.index(p.device) for p in plan.partitions])[0]


def simulate(problem: Problem, plan: Plan, simulator: Simulator | None = None) -> SimResult:
    """Validate ``plan`` and return its full timing (partitions and transfers)."""
    validate_plan(problem, plan, check_constraints=False)
    sim = simulator or Simulator(problem)
    g, names = problem.graph, problem.pus
    parts = [p.ops for p in plan.partitions]
    pus = [names.index(p.device) for p in plan.partitions]
    makespan, start, end = sim.run(parts, pus)
    timings = tuple(
        PartitionTiming(i, names[pus[i]], start[i], end[i], end[i] - start[i] - sim.overhead[pus[i]], sim.overhead[pus[i]])
        for i in range(len(parts))
    )
    owner = {v: i for i, ops in enumerate(parts) for v in ops}
    transfers: dict[tuple[str, int], TransferTiming] = {}
    host = problem.host
    for i, ops in enumerate(parts):
        p = pus[i]
        for v in ops:
            for t in g.nodes[v].inputs:
                if t in g.producer:
                    j = owner[g.producer[t]]
                    q, t0 = pus[j], end[j]
                else:
                    j, q, t0 = -1, host, 0.0
                if j == i or q == p or (t, p) in transfers:
                    continue
                size = g.tensors[t].size_bytes
                transfers[(t, p)] = TransferTiming(t, size, names[q], names[p], j, i, t0, t0 + sim.transfer(q, p, size))
    for t in g.outputs:
        j = owner[g.output_producers[t.name]]
        if pus[j] != host:
            transfers[(t.name, host)] = TransferTiming(
                t.name, t.size_bytes, names[pus[j]], names[host], j, -1, end[j], end[j] + sim.transfer(pus[j], host, t.size_bytes)
            )
    assert math.isfinite(makespan), "a valid plan has a finite makespan"
    return SimResult(makespan, timings, tuple(sorted(transfers.values(), key=lambda x: (x.start_us, x.tensor))))
