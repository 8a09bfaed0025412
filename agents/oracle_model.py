"""The oracle's CP-SAT model: the optimal plan of one block of ops, exactly.

A *block* is a set of ops (in the decomposition, the ops strictly between two cut
vertices; without decomposition, the whole graph) plus what bounds it: on the left
the partition holding the previous cut vertex (or the host at time 0 holding the
graph inputs), on the right the partition holding the next cut vertex (or the host
waiting for the graph outputs). The model chooses the free partitions of the block
(any convex op sets, connected or not), their PUs and their timing, and, when a
boundary partition may *grow*, which ops of the block join it.

Formulation (all times in integer units of :data:`TIME_UNIT_US`):

* Partitions are *slots* named by their first unit ("leader"): unit ``v`` may join
  slot ``k`` only if ``k <= v``, and slot ``k`` exists iff ``k`` is in it. Each
  partition has exactly one representation, so there is no slot symmetry.
* A slot's duration is its PU's dispatch overhead plus its ops' times on that PU,
  minus the savings of the profiled groups it runs fused (:mod:`partitiontuner.fusion`):
  a literal ``u[G, k, p]`` fuses group ``G`` in slot ``k`` on PU ``p`` and implies that
  every op of ``G`` is in slot ``k`` and that the slot is on ``p``; the groups fused
  anywhere in the block share no op (at most one literal per op). CP-SAT picks the
  groups: fusing only shortens a slot, so the optimum takes the best disjoint cover,
  which is exactly :meth:`Problem.partition_time` (a redundant cap, each op's largest
  share of a group saving, speeds up the proofs). Durations are at least one unit
  (positive durations are what make the time constraints imply convexity: a path
  leaving a slot and coming back would need the slot to end before it starts;
  likewise no cycle between slots).
* Each unit ``v`` has an availability time ``A_v`` (its slot's end) and a need time
  ``R_v`` (its slot's start). An edge ``u -> v`` across slots requires
  ``A_u + transfer(PU(u), PU(v), bytes) <= R_v``; one PU runs one slot at a time
  (no-overlap of optional intervals). Graph inputs start on the host at 0; graph
  outputs must reach the host.
* Boundary partitions: the left one may take a predecessor-closed set ``A`` of the
  block (it then ends at ``T_L = t(A)``, and its outputs are available then), the
  right one a successor-closed set ``B`` (the cost adds ``t(B)``); the closures keep
  them convex. ``t(A)`` and ``t(B)`` are their ops' summed times minus the savings of
  the groups fused inside them (literals ``uA[G]`` / ``uB[G]``, in the same per-op
  disjointness constraints): the boundary partition's other ops lie outside the block
  and no profiled group joins them to block ops (see :mod:`partitiontuner.agents.oracle`),
  so charging these savings here credits each of its groups once. Every block op
  descends from the left cut vertex and precedes the right one, so free slots start
  after ``T_L`` and end before the right partition starts (redundant constraints
  that help propagation).
* Global constraints (whole graph only): at most ``max_partitions`` leaders, at
  least ``min_partition_ops`` ops per slot, and per PU the weights of its ops plus
  each of its slots' activations within its capacity (as
  :func:`partitiontuner.plan.memory_use` counts them).
* The simulator starts every partition as early as its PU order and inputs allow;
  every timed schedule here is feasible for those orders, so its makespan is at
  least the simulator's, and the simulator's own schedule is one of the solutions:
  the optimum of this model is the simulator's optimum (up to the time rounding).

Rounding: op times, group times, overheads and transfers are rounded to the nearest
unit (durations at least one unit), so a plan's model cost differs from its simulated
makespan by at most ``(2.5 n + 0.5)`` units (half a unit per op, overhead and transfer
on the critical path, one unit per partition for the one-unit floor; for any fixed
set of fused groups a partition's integer work, ``sum of rounded op times - sum of
max(0, rounded sum - rounded group time)``, is within half a unit per op of the true
one, hence so is its best cover); the oracle's plan
is therefore within twice that, :func:`rounding_error_us`, of the true optimum.

Why one file of ~840 lines: the formulation above and the code stating it are read
together; :class:`BlockModel` adds it to CP-SAT one part per method, in the order of
this docstring, and its integer tables (:class:`IntTables`) exist only for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from partitiontuner.fusion import cover_dp
from partitiontuner.problem import Problem

#: the integer time unit of the model, in microseconds (0.1 ns)
TIME_UNIT_US = 1e-4


def rounding_error_us(num_ops: int, unit_us: float = TIME_UNIT_US) -> float:
    """How far the time rounding can put the oracle's plan above the true optimum
    (twice the largest gap between a plan's model cost and its simulated makespan, see
    the module docstring); also subtracted from the model's bound for a lower bound."""
    return (5 * num_ops + 2) * unit_us


@dataclass(frozen=True, eq=False)
class IntTables:
    """The problem's costs in integer time units, built once per problem.

    ``time[v][p]`` is ``None`` where ``v`` may not run on ``p`` (unsupported, pinned
    elsewhere or forbidden).
    """

    problem: Problem
    unit_us: float
    time: list[list[int | None]]
    overhead: list[int]
    groups: dict[frozenset[int], list[int | None]]
    edge_bytes: dict[tuple[int, int], int]
    input_bytes: list[int]
    output_bytes: list[int]
    #: profiled groups with a positive integer saving on some PU -> saving per PU
    #: (``max(0, sum of the rounded op times - rounded group time)``; 0 where a member
    #: or the group may not run, and where smaller groups inside it save as much)
    savings: dict[frozenset[int], list[int]] = field(default_factory=dict)
    #: the same savings keyed by (sequential branch, first position, length)
    run_savings: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    max_run: int = 1

    @classmethod
    def build(cls, problem: Problem, unit_us: float = TIME_UNIT_US) -> IntTables:
        g = problem.graph
        n, num_pus = problem.num_ops, problem.num_pus

        def scale(x: float) -> int:
            return int(round(x / unit_us))

        t = [[scale(problem.op_time[v, p]) if problem.allowed[v, p] else None for p in range(num_pus)] for v in range(n)]
        groups = {}
        for ops, lat in problem.group_time.items():
            if len(ops) > 1:
                groups[ops] = [scale(x) if math.isfinite(x) and all(problem.allowed[v, p] for v in ops) else None for p, x in enumerate(lat)]
        edge_bytes: dict[tuple[int, int], int] = {}
        for e in g.edges:
            key = (e.src, e.dst)
            edge_bytes[key] = max(edge_bytes.get(key, 0), e.size_bytes)
        in_bytes = [-1] * n
        for tinfo in g.inputs:
            for v in g.input_consumers[tinfo.name]:
                in_bytes[v] = max(in_bytes[v], tinfo.size_bytes)
        out_bytes = [-1] * n
        for tinfo in g.outputs:
            if tinfo.name in g.output_producers:
                v = g.output_producers[tinfo.name]
                out_bytes[v] = max(out_bytes[v], tinfo.size_bytes)
        savings: dict[frozenset[int], list[int]] = {}
        run_savings: dict[tuple[int, int, int], list[int]] = {}
        fusion = problem.fusion
        for ops, gt in groups.items():
            row = []
            for p in range(num_pus):
                total = sum(t[v][p] for v in ops) if all(t[v][p] is not None for v in ops) else None
                row.append(0 if total is None or gt[p] is None else max(0, total - gt[p]))
            if any(row):
                first = min(ops, key=lambda v: fusion.pos[v])
                run_savings[(fusion.chain[first], fusion.pos[first], len(ops))] = row
        max_run = max((key[2] for key in run_savings), default=1)
        # a group that saves no more than the best cover of its own ops by smaller groups
        # is never needed (swap it for that cover): drop it on that PU, so the CP-SAT
        # models have fewer choices; the best cover of any op set is unchanged
        dominated = {
            key: [p for p in range(num_pus) if row[p] and cover_dp(run_savings, max_run, key[0], list(range(key[1], key[1] + key[2])), p, skip=key)[-1] >= row[p]]
            for key, row in run_savings.items()
        }
        for key, pus in dominated.items():
            row = run_savings[key] = [0 if p in pus else x for p, x in enumerate(run_savings[key])]
            if any(row):
                c, start, length = key
                savings[frozenset(fusion.chains[c][start:start + length])] = row
        run_savings = {key: row for key, row in run_savings.items() if any(row)}
        return cls(problem, unit_us, t, [scale(x) for x in problem.overhead], groups, edge_bytes, in_bytes, out_bytes, savings, run_savings, max_run)

    @property
    def host(self) -> int:
        return self.problem.host

    @property
    def num_pus(self) -> int:
        return self.problem.num_pus

    def transfer(self, src: int, dst: int, size_bytes: int) -> int:
        if src == dst:
            return 0
        return int(round(self.problem.transfer_us(src, dst, size_bytes) / self.unit_us))

    def sum_time(self, ops: Sequence[int] | frozenset[int], pu: int) -> int | None:
        """Sum of the ops' times on ``pu`` (``None`` if one of them may not run there)."""
        total = 0
        for v in ops:
            t = self.time[v][pu]
            if t is None:
                return None
            total += t
        return total

    def best_saving(self, ops: Sequence[int] | frozenset[int], pu: int) -> int:
        """Largest total saving on ``pu`` of disjoint profiled groups inside ``ops`` (the
        integer :meth:`partitiontuner.fusion.FusionTable.saving`: groups are runs of one
        sequential branch, so a weighted-interval dynamic program along each branch)."""
        if not self.run_savings:
            return 0
        fusion = self.problem.fusion
        by_chain: dict[int, list[int]] = {}
        for v in ops:
            by_chain.setdefault(fusion.chain[v], []).append(fusion.pos[v])
        return sum(cover_dp(self.run_savings, self.max_run, c, sorted(positions), pu)[-1] for c, positions in by_chain.items() if len(positions) > 1)

    def work(self, ops: Sequence[int] | frozenset[int], pu: int) -> int | None:
        """Integer :meth:`Problem.partition_time`: the summed op times minus the best
        disjoint fusion saving (``None`` if an op may not run on ``pu``)."""
        total = self.sum_time(ops, pu)
        if total is None:
            return None
        return total - self.best_saving(ops, pu)

    def to_us(self, units: float) -> float:
        return units * self.unit_us


@dataclass(frozen=True)
class Boundary:
    """The partition holding a cut vertex, as the neighbouring block sees it.

    Attributes:
        pu: its PU.
        ops: its ops that touch the block: the cut vertex (the decomposition passes
            just that), plus any block ops fixed to it.
        grow: it may take further ops of the block, charged at their summed time minus
            the savings of the groups fused among them (left: a predecessor-closed set
            ``A``; right: a successor-closed set ``B``).
    """

    pu: int
    ops: frozenset[int]
    grow: bool


@dataclass(frozen=True)
class GlobalLimits:
    """Whole-plan constraints, modelled only when the block is the whole graph."""

    max_partitions: int | None = None
    min_partition_ops: int | None = None
    memory: bool = False


@dataclass
class BlockResult:
    """Best solution found for a block, in terms of the block's unit indices.

    ``value`` and ``bound`` are in integer units; ``value`` is ``None`` when no solution
    was found (infeasible, or the time ran out). ``slots`` are the free partitions as
    ``(units, pu, start)``; ``grown_left`` / ``grown_right`` the units the boundary
    partitions took.
    """

    value: int | None
    bound: int
    proven: bool
    infeasible: bool = False
    slots: list[tuple[tuple[int, ...], int, int]] = field(default_factory=list)
    grown_left: tuple[int, ...] = ()
    grown_right: tuple[int, ...] = ()
    wall_s: float = 0.0
    #: CP-SAT's deterministic time spent (reproducible, unlike ``wall_s``)
    det_s: float = 0.0
    #: the search was stopped by the wall clock before its deterministic budget ran out
    by_wall: bool = False


@dataclass(frozen=True)
class SolveLimits:
    """How one CP-SAT search stops, beyond its wall-time limit.

    Attributes:
        deadline: ``time.perf_counter()`` value the search must end by; model building
            counts against it (the wall limit is cut to what is left after building).
        det_time_s: CP-SAT's deterministic-time budget: a search stopped by it finds the
            same incumbent and bound on every run (deterministic mode).
        gap: stop once (incumbent - bound) / incumbent <= gap (``relative_gap_limit``).
        on_progress: called with ``(incumbent or None, bound)`` in integer units as the
            search improves either (from CP-SAT's threads).
    """

    deadline: float | None = None
    det_time_s: float | None = None
    gap: float | None = None
    on_progress: Callable[[int | None, int], None] | None = None


def solve_block(
    tab: IntTables,
    units: Sequence[Sequence[int]],
    left: Boundary | None,
    right: Boundary | None,
    *,
    limits: GlobalLimits | None = None,
    time_limit_s: float = 60.0,
    workers: int = 2,
    hint: Sequence[tuple[Sequence[int], int]] | None = None,
    lower_bound: int | None = None,
) -> BlockResult:
    """Minimise the block's cost over all its plans (see :class:`BlockModel`)."""
    return BlockModel(tab, units, left, right, limits).solve(time_limit_s, workers, hint, lower_bound)


class BlockModel:
    """One block's data, its cache key and its CP-SAT model.

    Cost minimised: with a right boundary, the time from the left boundary's
    reference point (the end of its fixed part; time 0 for the source block) to the
    start of the right boundary partition, plus the summed time of the units the
    right partition takes; without one (the sink), the time until the last partition
    ends and every graph output has reached the host.

    Args:
        tab: the problem's integer tables.
        units: the block's ops grouped into units that stay together (singletons for
            an exact search), in a topological order.
        left, right: the boundary partitions (``None``: source / sink).
        limits: whole-plan constraints (only for the whole graph as one block).
    """

    def __init__(self, tab: IntTables, units: Sequence[Sequence[int]], left: Boundary | None, right: Boundary | None, limits: GlobalLimits | None = None):
        self.tab, self.left, self.right, self.limits = tab, left, right, limits
        self.units = [tuple(sorted(u)) for u in units]
        self.unit_of = {v: i for i, u in enumerate(self.units) for v in u}
        self.num_pus = tab.num_pus
        self._unit_tables()

    def key(self) -> tuple:
        """Everything the block's optimum depends on (within one problem): blocks with
        equal keys have equal solutions up to renaming units."""
        side = lambda b: None if b is None else (b.pu, b.grow)  # noqa: E731
        return (
            tuple(tuple(r) for r in self.ut), tuple(len(u) for u in self.units),
            tuple(sorted(self.edges.items())), tuple(sorted(self.l_edges.items())), tuple(sorted(self.r_edges.items())),
            self.lr_bytes, tuple(self.unit_in), tuple(self.unit_out), self.r_in, self.l_out,
            tuple((mem, local, tuple(sv)) for mem, local, sv in self.groups),
            side(self.left), side(self.right), self.limits,
        )

    # --- data --------------------------------------------------------------------------
    def _unit_tables(self) -> None:
        tab, n, P = self.tab, len(self.units), self.num_pus
        self.ut = [[tab.sum_time(u, p) for p in range(P)] for u in self.units]
        self.allowed = [[self.ut[v][p] is not None for p in range(P)] for v in range(n)]
        edges: dict[tuple[int, int], int] = {}
        self.l_edges: dict[int, int] = {}  # unit -> bytes from the left partition
        self.r_edges: dict[int, int] = {}  # unit -> bytes into the right partition
        self.lr_bytes = -1
        lops = self.left.ops if self.left else frozenset()
        rops = self.right.ops if self.right else frozenset()
        for (a, b), size in tab.edge_bytes.items():
            ua, ub = self.unit_of.get(a), self.unit_of.get(b)
            if ua is not None and ub is not None:
                if ua != ub:
                    edges[(ua, ub)] = max(edges.get((ua, ub), 0), size)
            elif a in lops and ub is not None:
                self.l_edges[ub] = max(self.l_edges.get(ub, 0), size)
            elif ua is not None and b in rops:
                self.r_edges[ua] = max(self.r_edges.get(ua, 0), size)
            elif a in lops and b in rops:
                self.lr_bytes = max(self.lr_bytes, size)
        self.edges = edges
        self.unit_in = [max((tab.input_bytes[v] for v in u), default=-1) for u in self.units]
        self.unit_out = [max((tab.output_bytes[v] for v in u), default=-1) for u in self.units]
        self.r_in = max((tab.input_bytes[v] for v in rops), default=-1) if self.left is None else -1
        self.l_out = max((tab.output_bytes[v] for v in lops), default=-1) if self.right is None else -1
        # profiled groups (with a saving) whose ops all lie in this block's units:
        # (member units, the ops as (unit, position in unit), saving per PU)
        self.groups: list[tuple[tuple[int, ...], tuple[tuple[int, int], ...], list[int]]] = []
        for ops, saving in tab.savings.items():
            if any(v not in self.unit_of for v in ops):
                continue
            local = tuple(sorted((self.unit_of[v], self.units[self.unit_of[v]].index(v)) for v in ops))
            members = tuple(sorted({u for u, _ in local}))
            self.groups.append((members, local, list(saving)))
        self.groups.sort()

    def _horizon(self) -> int:
        tab, P = self.tab, self.num_pus
        h = max(tab.overhead) * len(self.units) + 1
        for v in range(len(self.units)):
            h += max(t for t in self.ut[v] if t is not None) + len(self.units[v])
        trmax = max((tab.transfer(p, q, 0) for p in range(P) for q in range(P)), default=0)
        upb = max((tab.transfer(p, q, 10**9) - tab.transfer(p, q, 0) for p in range(P) for q in range(P) if p != q), default=0) / 10**9
        total_bytes = sum(self.edges.values()) + sum(self.l_edges.values()) + sum(self.r_edges.values()) + max(self.lr_bytes, 0)
        total_bytes += sum(max(b, 0) for b in self.unit_in) + sum(max(b, 0) for b in self.unit_out) + max(self.r_in, 0) + max(self.l_out, 0)
        transfers = len(self.edges) + len(self.l_edges) + len(self.r_edges) + 2 * len(self.units) + 4
        h += int(math.ceil(total_bytes * upb)) + (trmax + 2) * transfers
        return h

    # --- model -------------------------------------------------------------------------
    # Each ``_add_*`` step adds one part of the formulation (module docstring) to
    # ``self.m``, in this order: the order in which variables and constraints are created
    # is part of what the solver sees, so it is kept fixed.
    def _build(self) -> None:
        self.m = cp_model.CpModel()
        self.H = self._horizon()
        self._add_membership()
        self._add_slot_pus()
        self._add_fused_groups()
        self.share = self._saving_shares()
        self._add_durations()
        self._add_boundary()
        self._add_unit_times()
        self._add_block_edges()
        self._add_left_edges()
        self._add_right_edges()
        self._add_input_arrivals()
        self._add_objective()
        if self.limits is not None:
            self._add_limits()

    def _add_membership(self) -> None:
        """``x[v, k]``: unit ``v`` is in the slot opened by unit ``k <= v``; ``a[v]`` /
        ``b[v]``: ``v`` joins the left / right boundary partition (predecessor- /
        successor-closed, so the boundary partitions stay convex)."""
        m, n, P = self.m, len(self.units), self.num_pus
        left, right = self.left, self.right
        x: dict[tuple[int, int], cp_model.IntVar] = {}
        for v in range(n):
            for k in range(v + 1):
                if any(self.allowed[v][p] and self.allowed[k][p] for p in range(P)):
                    x[v, k] = m.new_bool_var(f"x{v}_{k}")
        a: dict[int, cp_model.IntVar] = {}
        b: dict[int, cp_model.IntVar] = {}
        if left is not None and left.grow:
            for v in range(n):
                if self.allowed[v][left.pu]:
                    a[v] = m.new_bool_var(f"a{v}")
        if right is not None and right.grow:
            for v in range(n):
                if self.allowed[v][right.pu]:
                    b[v] = m.new_bool_var(f"b{v}")
        self.x, self.a, self.b = x, a, b
        for v in range(n):
            m.add_exactly_one([x[v, k] for k in range(v + 1) if (v, k) in x] + ([a[v]] if v in a else []) + ([b[v]] if v in b else []))
            for k in range(v):
                if (v, k) in x:
                    m.add_implication(x[v, k], x[k, k])
        for (u, v) in self.edges:
            # A is closed under predecessors, B under successors (convexity of the
            # boundary partitions)
            if v in a:
                if u in a:
                    m.add_implication(a[v], a[u])
                else:
                    m.add(a[v] == 0)
            if u in b:
                if v in b:
                    m.add_implication(b[u], b[v])
                else:
                    m.add(b[u] == 0)

    def _add_slot_pus(self) -> None:
        """``y[k, p]``: slot ``k`` runs on PU ``p``; ``xz[v, k, p]``: unit ``v`` is in
        slot ``k`` on ``p``; ``z[v, p]``: unit ``v`` runs on ``p`` (in a slot or a
        boundary partition)."""
        m, n, P = self.m, len(self.units), self.num_pus
        x, a, b, left, right = self.x, self.a, self.b, self.left, self.right
        y: dict[tuple[int, int], cp_model.IntVar] = {}
        for k in range(n):
            if (k, k) not in x:
                continue
            ys = []
            for p in range(P):
                if self.allowed[k][p]:
                    y[k, p] = m.new_bool_var(f"y{k}_{p}")
                    ys.append(y[k, p])
            m.add(sum(ys) == x[k, k])
        xz: dict[tuple[int, int, int], cp_model.IntVar] = {}
        for (v, k), xv in x.items():
            opts = []
            for p in range(P):
                if (k, p) not in y:
                    continue
                if not self.allowed[v][p]:
                    m.add_bool_or([xv.Not(), y[k, p].Not()])
                    continue
                if v == k:
                    xz[v, k, p] = y[k, p]
                else:
                    xz[v, k, p] = m.new_bool_var(f"xz{v}_{k}_{p}")
                    m.add_implication(xz[v, k, p], xv)
                    m.add_implication(xz[v, k, p], y[k, p])
                opts.append(xz[v, k, p])
            if v != k:
                m.add(sum(opts) == xv)
        self.y, self.xz = y, xz
        z: dict[tuple[int, int], cp_model.IntVar | int] = {}
        for v in range(n):
            for p in range(P):
                if not self.allowed[v][p]:
                    continue
                terms = [xz[v, k, p] for k in range(v + 1) if (v, k, p) in xz]
                if v in a and left.pu == p:
                    terms.append(a[v])
                if v in b and right.pu == p:
                    terms.append(b[v])
                if len(terms) == 1:
                    z[v, p] = terms[0]
                else:
                    zv = m.new_bool_var(f"z{v}_{p}")
                    m.add(zv == sum(terms))
                    z[v, p] = zv
        self.z = z

    def _add_fused_groups(self) -> None:
        """Fused groups: ``u[G, k, p]`` fuses ``G`` in slot ``k`` on PU ``p`` (every op
        of ``G`` in slot ``k``); ``uA[G]`` / ``uB[G]`` fuse ``G`` inside the grown part of
        the left / right partition; groups sharing an op are never fused together.
        Sets ``group_terms`` (per slot: (PU, saving, literal)) and ``a_saving`` /
        ``b_saving`` (saving terms of the grown boundary parts)."""
        m, n, P = self.m, len(self.units), self.num_pus
        x, y, a, b, left, right = self.x, self.y, self.a, self.b, self.left, self.right
        group_terms: dict[int, list] = {k: [] for k in range(n)}
        a_saving: list = []
        b_saving: list = []
        fused: dict[tuple[int, int], list] = {}  # op (unit, position) -> literals fusing a group holding it
        for members, local, saving in self.groups:
            lits = []
            for k in range(members[0] + 1):
                if any((v, k) not in x for v in members):
                    continue
                for p in range(P):
                    if saving[p] > 0 and (k, p) in y:
                        u = m.new_bool_var("")
                        for v in members:
                            m.add_implication(u, x[v, k])
                        m.add_implication(u, y[k, p])
                        group_terms[k].append((p, saving[p], u))
                        lits.append(u)
            for side, grown, terms in ((left, a, a_saving), (right, b, b_saving)):
                if side is not None and saving[side.pu] > 0 and all(v in grown for v in members):
                    u = m.new_bool_var("")
                    for v in members:
                        m.add_implication(u, grown[v])
                    terms.append(saving[side.pu] * u)
                    lits.append(u)
            for op in local:
                fused.setdefault(op, []).extend(lits)
        for lits in fused.values():
            if len(lits) > 1:
                m.add_at_most_one(lits)
        self.group_terms, self.a_saving, self.b_saving = group_terms, a_saving, b_saving

    def _saving_shares(self) -> list[list[int]]:
        """Per unit and PU, the summed largest shares of its ops in a group saving.

        A redundant bound on each fused saving: every op's largest share of a group
        saving (rounded up); disjoint groups save at most the shares of the ops they
        cover, which is tighter than the sum over overlapping groups while the slots
        are being decided (faster proofs, measured).
        """
        P = self.num_pus
        op_share: dict[tuple[int, int], list[int]] = {}
        for _members, local, saving in self.groups:
            for op in local:
                row = op_share.setdefault(op, [0] * P)
                for p in range(P):
                    row[p] = max(row[p], -(-saving[p] // len(local)))
        share = [[0] * P for _ in range(len(self.units))]
        for (unit, _), row in op_share.items():
            for p in range(P):
                share[unit][p] += row[p]
        return share

    def _bounded(self, terms: list, cap: list) -> cp_model.IntVar | int:
        """The sum of ``terms`` (fused savings), also capped by the shares ``cap``."""
        if not terms:
            return 0
        m = self.m
        total = m.new_int_var(0, self.H, "")
        m.add(total == sum(terms))
        m.add(total <= sum(cap))
        return total

    def _add_durations(self) -> None:
        """Per slot: duration = dispatch overhead + its units' times - fused savings
        (at least one unit when used), start and end, and an optional interval on each
        PU; slots on one PU do not overlap."""
        m, tab, n, P, H = self.m, self.tab, len(self.units), self.num_pus, self.H
        x, y, xz, share = self.x, self.y, self.xz, self.share
        start, end = {}, {}
        intervals: list[list] = [[] for _ in range(P)]
        for k in range(n):
            if (k, k) not in x:
                continue
            d = m.new_int_var(0, H, f"d{k}")
            expr = sum(tab.overhead[p] * y[k, p] for p in range(P) if (k, p) in y)
            expr += sum(self.ut[v][p] * xz[v, k, p] for v in range(k, n) for p in range(P) if (v, k, p) in xz)
            expr -= self._bounded([sv * u for _, sv, u in self.group_terms[k]],
                                  [share[v][p] * xz[v, k, p] for v in range(k, n) for p in range(P) if (v, k, p) in xz and share[v][p]])
            m.add(d == expr)
            m.add(d >= 1).only_enforce_if(x[k, k])
            s = m.new_int_var(0, H, f"s{k}")
            e = m.new_int_var(0, H, f"e{k}")
            m.add(e == s + d)
            start[k], end[k] = s, e
            for p in range(P):
                if (k, p) in y:
                    intervals[p].append(m.new_optional_interval_var(s, d, e, y[k, p], f"i{k}_{p}"))
        for p in range(P):
            if len(intervals[p]) > 1:
                m.add_no_overlap(intervals[p])
        self.start, self.end = start, end

    def _add_boundary(self) -> None:
        """``TL``: the work of the left partition's grown part (its end, relative to the
        reference point); ``SR``: the start of the right boundary partition."""
        m, left, right, a, H = self.m, self.left, self.right, self.a, self.H
        if left is not None and left.grow and a:
            TL = m.new_int_var(0, H, "TL")
            m.add(TL == sum(self.ut[v][left.pu] * a[v] for v in a)
                  - self._bounded(self.a_saving, [self.share[v][left.pu] * a[v] for v in a if self.share[v][left.pu]]))
        else:
            TL = 0
        SR = m.new_int_var(0, H, "SR") if right is not None else None
        self.TL, self.SR = TL, SR

    def _add_unit_times(self) -> None:
        """``avail[v]``: when unit ``v``'s outputs exist (its partition's end);
        ``need[v]``: when its inputs must be there (its partition's start)."""
        m, n, H = self.m, len(self.units), self.H
        x, a, b, TL, SR = self.x, self.a, self.b, self.TL, self.SR
        avail, need = {}, {}
        for v in range(n):
            avail[v] = m.new_int_var(0, H, f"A{v}")
            need[v] = m.new_int_var(0, H, f"R{v}")
            for k in range(v + 1):
                if (v, k) in x:
                    m.add(avail[v] == self.end[k]).only_enforce_if(x[v, k])
                    m.add(need[v] == self.start[k]).only_enforce_if(x[v, k])
            if v in a:
                m.add(avail[v] == TL).only_enforce_if(a[v])
                m.add(need[v] == 0).only_enforce_if(a[v])
            if v in b:
                m.add(need[v] == SR).only_enforce_if(b[v])
                m.add(avail[v] == SR).only_enforce_if(b[v])
        self.avail, self.need = avail, need

    def _add_block_edges(self) -> None:
        """Edges inside the block: a consumer in another partition starts after its
        producer ends, plus the transfer when the two run on different PUs."""
        m, tab, P = self.m, self.tab, self.num_pus
        x, a, b, z, avail, need = self.x, self.a, self.b, self.z, self.avail, self.need
        for (u, v), size in self.edges.items():
            same_terms = []
            for k in range(u + 1):
                if (u, k) in x and (v, k) in x:
                    s_ = m.new_bool_var("")
                    m.add_implication(s_, x[u, k])
                    m.add_implication(s_, x[v, k])
                    m.add_bool_or([x[u, k].Not(), x[v, k].Not(), s_])
                    same_terms.append(s_)
            if v in a:
                same_terms.append(a[v])
            if u in b:
                same_terms.append(b[u])
            if same_terms:
                same = m.new_bool_var("")
                m.add(same == sum(same_terms))
                m.add(avail[u] <= need[v]).only_enforce_if(same.Not())
            else:
                m.add(avail[u] <= need[v])
            for r in range(P):
                for s in range(P):
                    if r != s and (u, r) in z and (v, s) in z:
                        m.add(avail[u] + tab.transfer(r, s, size) <= need[v]).only_enforce_if([z[u, r], z[v, s]])

    def _add_left_edges(self) -> None:
        """Edges from the left partition, which every block op descends from."""
        left = self.left
        if left is None:
            return
        m, tab, P, z, TL = self.m, self.tab, self.num_pus, self.z, self.TL
        p = left.pu
        for v, size in self.l_edges.items():
            for s in range(P):
                if s != p and (v, s) in z:
                    m.add(TL + tab.transfer(p, s, size) <= self.need[v]).only_enforce_if(z[v, s])
        for k in self.start:
            m.add(self.start[k] >= TL)  # every block op descends from the left cut vertex

    def _add_right_edges(self) -> None:
        """Edges into the right partition, which every block op precedes."""
        right = self.right
        if right is None:
            return
        m, tab, P, z, b, left, TL, SR = self.m, self.tab, self.num_pus, self.z, self.b, self.left, self.TL, self.SR
        q = right.pu
        for u, size in self.r_edges.items():
            for r in range(P):
                if (u, r) not in z:
                    continue
                lits = [z[u, r]] + ([b[u].Not()] if u in b else [])
                m.add(self.avail[u] + tab.transfer(r, q, size) <= SR).only_enforce_if(lits)
        if self.lr_bytes >= 0 and left is not None:
            m.add(TL + tab.transfer(left.pu, q, self.lr_bytes) <= SR)
        if left is not None:
            m.add(SR >= TL)
        for k in self.start:
            m.add(SR >= self.end[k]).only_enforce_if(self.x[k, k])  # every block op precedes it
        if left is None and self.r_in >= 0:
            m.add(SR >= tab.transfer(tab.host, q, self.r_in))

    def _add_input_arrivals(self) -> None:
        """Graph inputs start on the host at time 0 (only the source block reads them)."""
        if self.left is not None:
            return
        m, tab, P, z = self.m, self.tab, self.num_pus, self.z
        for v in range(len(self.units)):
            if self.unit_in[v] >= 0:
                for s in range(P):
                    if s != tab.host and (v, s) in z:
                        m.add(self.need[v] >= tab.transfer(tab.host, s, self.unit_in[v])).only_enforce_if(z[v, s])

    def _add_objective(self) -> None:
        """The sink block: the makespan (last end, last graph output at the host); any
        other block: the right partition's start plus the work of its grown part."""
        m, tab, P, H, TL = self.m, self.tab, self.num_pus, self.H, self.TL
        left, right, b = self.left, self.right, self.b
        if right is None:
            M = m.new_int_var(0, 2 * H, "makespan")
            for k in self.start:
                m.add(M >= self.end[k])
            m.add(M >= TL)
            for v in range(len(self.units)):
                if self.unit_out[v] >= 0:
                    for r in range(P):
                        if r != tab.host and (v, r) in self.z:
                            m.add(M >= self.avail[v] + tab.transfer(r, tab.host, self.unit_out[v])).only_enforce_if(self.z[v, r])
            if left is not None and self.l_out >= 0:
                m.add(M >= TL + tab.transfer(left.pu, tab.host, self.l_out))
            self.objective = M
        else:
            share = self.share
            grow_cost = sum(self.ut[v][right.pu] * b[v] for v in b) - self._bounded(self.b_saving, [share[v][right.pu] * b[v] for v in b if share[v][right.pu]]) if b else 0
            obj = m.new_int_var(0, 2 * H, "cost")
            m.add(obj == self.SR + grow_cost)
            self.objective = obj
        m.minimize(self.objective)

    def _add_limits(self) -> None:
        m, tab, n, P = self.m, self.tab, len(self.units), self.num_pus
        lim, x, y, z = self.limits, self.x, self.y, self.z
        prob = tab.problem
        leaders = [x[k, k] for k in range(n) if (k, k) in x]
        if lim.max_partitions is not None:
            m.add(sum(leaders) <= lim.max_partitions)
        if lim.min_partition_ops is not None:
            for k in range(n):
                if (k, k) in x:
                    size = sum(len(self.units[v]) * x[v, k] for v in range(k, n) if (v, k) in x)
                    m.add(size >= lim.min_partition_ops).only_enforce_if(x[k, k])
        if lim.memory:
            g = prob.graph
            unit_w = [int(sum(prob.weight_bytes[v] for v in u)) for u in self.units]
            unit_t = [{t for v in u for t in (*g.nodes[v].inputs, *g.nodes[v].outputs)} for u in self.units]
            for p in range(P):
                cap = prob.memory_capacity[p]
                if not math.isfinite(cap):
                    continue
                cap = int(cap)
                weights = sum(unit_w[v] * z[v, p] for v in range(n) if (v, p) in z)
                m.add(weights <= cap)
                for k in range(n):
                    if (k, p) not in y:
                        continue
                    touch: dict[str, cp_model.IntVar] = {}
                    for v in range(k, n):
                        if (v, k) not in x:
                            continue
                        for t in unit_t[v]:
                            if t not in touch:
                                touch[t] = m.new_bool_var("")
                            m.add_implication(x[v, k], touch[t])
                    act = sum(g.tensors[t].size_bytes * lit for t, lit in touch.items())
                    m.add(weights + act <= cap).only_enforce_if(y[k, p])

    # --- solve -------------------------------------------------------------------------------------
    def _add_hint(self, hint: Sequence[tuple[Sequence[int], int]]) -> None:
        for ops, pu in hint:
            us = sorted({self.unit_of[v] for v in ops})
            k = us[0]
            for v in us:
                if (v, k) in self.x:
                    self.m.add_hint(self.x[v, k], 1)
            for p in range(self.num_pus):
                if (k, p) in self.y:
                    self.m.add_hint(self.y[k, p], int(p == pu))
        for v in self.a:
            self.m.add_hint(self.a[v], 0)
        for v in self.b:
            self.m.add_hint(self.b[v], 0)

    def _trivial(self) -> BlockResult:
        """No ops between the boundaries: the cost is the transfers between them."""
        tab, left, right = self.tab, self.left, self.right
        value = 0
        if left is not None and right is not None and self.lr_bytes >= 0:
            value = tab.transfer(left.pu, right.pu, self.lr_bytes)
        elif left is None and right is not None and self.r_in >= 0:
            value = tab.transfer(tab.host, right.pu, self.r_in)
        elif right is None and left is not None and self.l_out >= 0:
            value = tab.transfer(left.pu, tab.host, self.l_out)
        return BlockResult(value, value, True)

    def fallback(self) -> BlockResult:
        """A quick feasible solution when there is no time to search: the right
        partition takes every unit if it can, else every unit is its own partition
        (on the right partition's PU, the left one's, the host or any, whichever may
        run it). Its value is an upper bound; its bound is 0."""
        if not self.units:
            return self._trivial()
        self._build()
        m, n = self.m, len(self.units)
        everything_right = len(self.b) == n and n > 0
        for (v, k), var in self.x.items():
            m.add(var == int(k == v and not everything_right))
        for var in self.a.values():
            m.add(var == 0)
        for var in self.b.values():
            m.add(var == int(everything_right))
        if not everything_right:
            prefer = [b.pu for b in (self.right, self.left) if b is not None] + [self.tab.host, *range(self.num_pus)]
            for k in range(n):
                pu = next(p for p in prefer if (k, p) in self.y)
                for p in range(self.num_pus):
                    if (k, p) in self.y:
                        m.add(self.y[k, p] == int(p == pu))
        res = self._run(10.0, 1, presolve=False, first=True)
        res.proven, res.bound = False, 0
        return res

    def solve(self, time_limit_s: float, workers: int, hint: Sequence[tuple[Sequence[int], int]] | None = None,
              lower_bound: int | None = None, limits: SolveLimits | None = None) -> BlockResult:
        """Solve with CP-SAT (an empty block is solved in closed form).

        ``time_limit_s`` caps the wall time of the search; ``limits`` adds a wall-clock
        deadline that model building counts against, a deterministic-time budget and a
        relative gap (see :class:`SolveLimits`).
        """
        if not self.units:
            return self._trivial()
        self._build()
        if hint:
            self._add_hint(hint)
        if lower_bound is not None:
            self.m.add(self.objective >= lower_bound)
        return self._run(time_limit_s, workers, limits=limits)

    def _run(self, time_limit_s: float, workers: int, presolve: bool = True, first: bool = False,
             limits: SolveLimits | None = None) -> BlockResult:
        t0 = time.perf_counter()
        limits = limits or SolveLimits()
        wall_limit = min(time_limit_s, limits.deadline - t0) if limits.deadline is not None else time_limit_s
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(wall_limit, 0.001)
        solver.parameters.num_workers = max(1, workers)
        solver.parameters.random_seed = 0
        if limits.det_time_s is not None:
            solver.parameters.max_deterministic_time = max(limits.det_time_s, 0.001)
            if workers > 1:  # several workers, one deterministic interleaved search
                solver.parameters.interleave_search = True
        if limits.gap is not None:
            solver.parameters.relative_gap_limit = limits.gap
        # the LP relaxation of these disjunctive models is weak and slow: without it
        # CP-SAT proves the GoogLeNet blocks 5-10x faster (measured)
        solver.parameters.linearization_level = 0
        solver.parameters.cp_model_presolve = presolve
        solver.parameters.stop_after_first_solution = first
        callback = None
        if limits.on_progress is not None:
            callback = _ProgressCallback(limits.on_progress)
            solver.best_bound_callback = callback.on_bound
        status = solver.solve(self.m, callback)
        wall = time.perf_counter() - t0
        det = solver.deterministic_time
        # stopped by the wall clock, not by the deterministic budget: not reproducible
        by_wall = limits.det_time_s is not None and status != cp_model.OPTIMAL and status != cp_model.INFEASIBLE \
            and det < 0.98 * limits.det_time_s and not first
        if status == cp_model.INFEASIBLE:
            return BlockResult(None, 0, True, infeasible=True, wall_s=wall, det_s=det)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            bound = int(math.ceil(solver.best_objective_bound)) if status == cp_model.UNKNOWN else 0
            return BlockResult(None, max(bound, 0), False, wall_s=wall, det_s=det, by_wall=by_wall)
        value = int(round(solver.objective_value))
        proven = status == cp_model.OPTIMAL and limits.gap is None
        bound = value if proven else int(math.ceil(solver.best_objective_bound - 1e-6))
        proven = proven or bound >= value
        slots = []
        for k in range(len(self.units)):
            if (k, k) in self.x and solver.boolean_value(self.x[k, k]):
                members = tuple(v for v in range(k, len(self.units)) if (v, k) in self.x and solver.boolean_value(self.x[v, k]))
                pu = next(p for p in range(self.num_pus) if (k, p) in self.y and solver.boolean_value(self.y[k, p]))
                slots.append((members, pu, int(solver.value(self.start[k]))))
        grown_l = tuple(v for v in sorted(self.a) if solver.boolean_value(self.a[v]))
        grown_r = tuple(v for v in sorted(self.b) if solver.boolean_value(self.b[v]))
        return BlockResult(value, min(bound, value), proven, False, slots, grown_l, grown_r, wall, det, by_wall)


class _ProgressCallback(cp_model.CpSolverSolutionCallback):
    """Passes each new incumbent and bound (integer units) to ``report(value, bound)``."""

    def __init__(self, report):
        super().__init__()
        self.report = report

    def on_solution_callback(self) -> None:
        self.report(int(round(self.objective_value)), int(math.ceil(self.best_objective_bound - 1e-6)))

    def on_bound(self, bound: float) -> None:
        self.report(None, int(math.ceil(bound - 1e-6)))
