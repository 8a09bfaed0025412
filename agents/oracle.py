"""The oracle: the exact optimum over the whole plan space, under the simulator's costs.

Plan space: every partition of the ops into convex sets (connected or not), an
allowed PU for each, and any run order per PU that respects the data dependencies;
cost = the simulator's makespan. :mod:`partitiontuner.agents.oracle_model` solves one
*block* of ops exactly with CP-SAT; this module splits the graph into blocks at cut
vertices and joins the block optima with a dynamic program.

Why the decomposition is exact. Let ``c`` be a cut vertex (every op before it is an
ancestor, every op after it a descendant, and no edge, graph input or graph output
jumps over it; :func:`verified_cut_vertices` checks the first two, which an op without
inputs could break) and ``S`` the partition holding it. Every other partition lies
entirely before or after ``c`` and runs entirely before or after ``S`` (convexity), so
nothing else runs while ``S`` runs and the makespan splits into phases. ``S`` is
``B + core + A``: ``core`` the cut vertices ``c_f..c_l`` it holds and every op
between them (the whole gaps between them: convexity), ``B`` a successor-closed set of
the gap before ``c_f``, ``A`` a predecessor-closed set of the gap after ``c_l``.

Fusion (:mod:`partitiontuner.fusion`): a partition's work is the sum of its ops' times
minus the best total saving of disjoint profiled groups inside it; groups are runs of
2-3 consecutive ops of one sequential branch. Lemma: such a run never joins a cut
vertex to a gap op. A link ``u -> v`` of a sequential branch means ``v`` is ``u``'s
only consumer and ``u`` is ``v``'s only producer (``u`` writes no graph output, ``v``
reads no graph input). If ``u = c`` is a cut vertex, every later op descends from
``c``, so from ``v``: hence ``v = c + 1``, and no edge, input or output jumps over
``v`` (it would jump over ``c`` or be the link itself), so ``v`` is a cut vertex;
symmetrically ``v = c`` makes ``u = c - 1`` one. A link between two gap ops is an edge,
so it does not jump over a cut vertex. So every group lies inside one gap or consists
of consecutive cut vertices (with empty gaps between them). The oracle checks this
rather than assuming it: it decomposes only at the cut vertices ``K`` for which every
group with a saving lies inside one gap of ``K`` or inside ``K``
(:func:`decomposition_cut_vertices`, a fixpoint; by the lemma ``K`` is every verified
cut vertex).

Accounting. Charge ``t(B)`` to the block before ``S`` and ``t(A)`` to the block after
it, each its summed op times minus the groups fused inside it (chosen by the block
model), and charge ``S``'s dispatch overhead, each interior gap ``g`` at
``sum(g) - best_saving(g)`` and each cut vertex its op time, or a group of cut
vertices at its group time, in the dynamic program. The makespan is then

    sum over blocks of block_cost(PU on the left, PU on the right)
    + sum over cut partitions of (dispatch overhead + core time),

where ``block_cost`` (:class:`~partitiontuner.agents.oracle_model.BlockModel`) is
the time from the end of the left partition's core to the start of the right one,
plus ``t(A)`` and ``t(B)``, minimised over ``A``, ``B``, the fused groups and the
block's own partitions. The dynamic program runs over the cut vertices; its states
are ``("open", i, q, X)`` (a cut partition on ``q`` holds cut ``i`` and may merge into
cut ``i + 1``; ``X`` = the later cut vertices already in a group fused at an earlier
cut vertex) and ``("closed", i, q)`` (it ended at cut ``i``; needs ``X`` empty). A cut
partition starts at cut ``i`` with cut ``i`` unfused or with a group of cut vertices
starting there; a merge into cut ``i + 1`` adds the gap before it and either finds
``c_{i+1}`` in ``X`` (already paid) or leaves it unfused or starts a group there that
avoids ``X``.

Exactness. (Value >= makespan.) On every path the groups credited to a cut
partition are disjoint and lie inside it (interior-gap groups avoid the other ops by
the lemma; cut-vertex groups avoid each other through ``X``; ``A``/``B`` groups are
block ops and the block model keeps them disjoint), so each partition's charged work is
at least its true work; each block's solution is a timed schedule valid for its run
orders, so the simulator, which starts everything as early as those orders allow, gives
a makespan at most the path's value. (Optimum >= value.) Take an optimal plan and for
each cut partition a best disjoint cover. Each of its groups lies in ``B``, in ``A``,
in an interior gap or among ``S``'s cut vertices (lemma). The path that starts, merges
and closes as the plan does and starts, at each cut vertex, the cover's group that
starts there (if any) is a valid path; its interior-gap charges are at most the
cover's (``best_saving`` is the maximum), and each block's optimum is at most the
plan's restriction to that block with the cover's groups in ``A`` and ``B``. So the
shortest path equals the optimum (up to the time rounding of
:mod:`partitiontuner.agents.oracle_model`).

Global constraints (``max_partitions``, ``min_partition_ops``, memory capacities)
do not decompose. Then the oracle first solves the relaxation (pins and forbids
only) by decomposition: if its plan satisfies the constraints it is optimal;
otherwise one CP-SAT model of the whole graph with the constraints is solved, with
the relaxation's optimum as lower bound, started from the best quick plan that
satisfies them (over single ops up to :data:`EXACT_MAX_OPS` ops; above that over
coarser units, the relaxed partitions cut into runs of consecutive ops, which gives a
valid plan but proves optimality only if it reaches the lower bound). With global
constraints the relaxation gets half of the time limit.

Time limit: a budget for the whole ``plan`` call (tables, model building, solves and
the quick incumbents; :data:`RESERVE` of it is kept for the work after the search).
The block solves share it, smallest first, ``workers`` at a time, each its weight's
share; unproven blocks get a second round with what is left; every solve ends by the
deadline (building its model counts). Deterministic mode (the default, ``workers``
not given): the shares are CP-SAT deterministic time (:data:`DET_PER_S` per second of
budget), fixed before the solves start, so which thread finishes first changes
nothing and two runs give the same bound and plan, unless the wall clock stops a
search first (``info["reproducible"]`` says so). A block left without a solution
gives no plan; the quick planners' best plan is returned then (and a quick feasible
solution per block only when none of them applies). A block that was not proven
contributes its best bound: the larger of CP-SAT's and the static bound of
:mod:`partitiontuner.agents.oracle_bounds`, which also enters its model as a lower
bound on its objective; bounds only grow during a run. ``proven_optimal`` holds when
the dynamic program over lower bounds meets its value. ``gap``: each block solve
stops within the relative gap (CP-SAT's ``relative_gap_limit``), which composes: the
DP over bounds is at least ``(1 - gap)`` times the DP over values, since the shortest
path over bounds is at least ``(1 - gap)`` times the value of its own path; the
second round is skipped once the whole DP is within the gap.

Why one file of ~870 lines: the decomposition, the dynamic program joining the block
optima, the time-budgeted block solves and the whole-graph model for global
constraints are one exactness argument (above); the per-block model, the larger half,
already lives in :mod:`partitiontuner.agents.oracle_model`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from partitiontuner.agents.base import Planner
from partitiontuner.agents.oracle_bounds import block_lower_bound
from partitiontuner.agents.oracle_model import (
    TIME_UNIT_US,
    BlockModel,
    BlockResult,
    Boundary,
    GlobalLimits,
    IntTables,
    SolveLimits,
    rounding_error_us,
)
from partitiontuner.agents.oracle_progress import Progress
from partitiontuner.branches import cut_vertices
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.plan import Plan, check_plan_constraints, make_plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator

#: whole-graph constrained models over single ops up to this many ops (else units)
EXACT_MAX_OPS = 60
#: about how many units the whole-graph constrained model uses above EXACT_MAX_OPS
CHUNKS = 40
#: below this share of the budget a block gets a quick fallback solution, no search
MIN_SOLVE_S = 0.1
#: deterministic mode: CP-SAT deterministic time granted per second of budget. One
#: worker does 0.15-0.9 deterministic seconds per wall second here (measured on
#: inception_v2 blocks and a 24-op random DAG at load average 4-10); a low rate lets
#: the deterministic budget, not the clock, stop most searches, at the price of
#: leaving wall time unused when the machine is idle
DET_PER_S = 0.25
#: share of the budget kept for the work after the search (quick incumbents, simulation)
RESERVE = 0.05
#: seconds the RL incumbent may need to load (torch) when it is not loaded yet
RL_LOAD_S = 10.0
#: deterministic mode: the RL incumbent joins from this time limit on
RL_MIN_BUDGET_S = 60.0


def verified_cut_vertices(problem: Problem) -> tuple[int, ...]:
    """Cut vertices (:func:`partitiontuner.branches.cut_vertices`) at which the graph
    really splits: every earlier op is an ancestor and every later op a descendant
    (an op with no inputs at all could otherwise run beside the cut vertex)."""
    g = problem.graph
    n = g.num_ops
    anc = [0] * n
    for v in range(n):
        for u in g.preds[v]:
            anc[v] |= anc[u] | (1 << u)
    desc = [0] * n
    for v in reversed(range(n)):
        for w in g.succs[v]:
            desc[v] |= desc[w] | (1 << w)
    out = []
    for c in cut_vertices(g):
        before = (1 << c) - 1
        after = ((1 << n) - 1) ^ ((1 << (c + 1)) - 1)
        if anc[c] == before and desc[c] == after:
            out.append(c)
    return tuple(out)


def decomposition_cut_vertices(cuts: Sequence[int], groups: Iterable[frozenset[int]]) -> tuple[int, ...]:
    """The cut vertices the oracle decomposes at: the largest subset ``K`` of ``cuts``
    such that every profiled group (with a saving) lies inside one gap of ``K`` or
    inside ``K``, found by dropping the cut vertices a group crosses until none is left
    to drop. For groups that are runs of sequential branches this is all of ``cuts``
    (the lemma in the module docstring); the check keeps the decomposition exact even
    if groups were ever defined otherwise (dropping a cut vertex only merges blocks)."""
    kept = set(cuts)
    groups = [frozenset(g) for g in groups]
    changed = True
    while changed:
        changed = False
        for ops in groups:
            if ops <= kept:
                continue
            lo, hi = min(ops), max(ops)
            crossed = {c for c in kept if lo <= c <= hi}
            if crossed:
                kept -= crossed
                changed = True
    return tuple(sorted(kept))


def _shortest(edges: list[_Transition], weight: Callable[[_BlockRef], float]) -> tuple[float, dict]:
    """Shortest source-sink path of the DP (edges in a topological order), each block
    weighted by ``weight`` (its value, or its lower bound): ``(length, via)``."""
    dist: dict = {"source": 0}
    via: dict = {}
    for e in edges:
        if e.src not in dist:
            continue
        d = dist[e.src] + (0 if e.block is None else weight(e.block)) + e.cost
        if d < dist.get(e.dst, math.inf):
            dist[e.dst] = d
            via[e.dst] = e
    return dist.get("sink", math.inf), via


def _state_key(state: tuple) -> tuple:
    """A sort key for DP states (their fused-ahead sets are frozensets)."""
    return tuple(sorted(x) if isinstance(x, frozenset) else x for x in state)


@dataclass
class _BlockRef:
    """A block solve: the ops (as units) and the result (shared between equal blocks)."""

    units: list[tuple[int, ...]]
    model: BlockModel
    result: BlockResult | None = None
    #: :func:`~partitiontuner.agents.oracle_bounds.block_lower_bound`
    static_bound: int = 0
    #: best incumbent and bound reported while its search runs (for progress lines)
    live_value: float = math.inf
    live_bound: int = 0

    @property
    def value(self) -> float:
        return math.inf if self.result is None or self.result.value is None else self.result.value

    @property
    def bound(self) -> float:
        """The best lower bound known: CP-SAT's and the static one (never below either)."""
        if self.result is not None and self.result.infeasible:
            return math.inf
        return max(self.static_bound, self.live_bound, 0 if self.result is None else self.result.bound)

    def current(self) -> tuple[float, float]:
        """(incumbent, bound) now, while the search may still run."""
        value = min(self.value, self.live_value)
        return value, min(self.bound, value)


class _Transition(NamedTuple):
    """A DP edge: ``cost`` (units) plus the block's value, if it crosses a block;
    ``action`` says what it does to the cut partitions: ("start", i, q, group),
    ("merge", i, q, group) (``group``: the profiled group of cut vertices fused from cut
    ``i`` on, or ``None``), ("close", i, q), ("sink",)."""

    src: Any
    dst: Any
    block: _BlockRef | None
    cost: int
    action: tuple


@dataclass
class _Search:
    """State of one :meth:`OraclePlanner.plan` call."""

    problem: Problem
    tab: IntTables
    deadline: float
    workers: int
    #: deterministic mode: CP-SAT deterministic time budget (None: wall clock only)
    det_budget: float | None = None
    gap: float | None = None
    progress: Progress | None = None
    cache: dict[tuple, list[_BlockRef]] = field(default_factory=dict)
    solves: int = 0
    cache_hits: int = 0
    #: deterministic time spent so far, per worker thread
    det_used: float = 0.0
    #: searches that the wall clock stopped before their deterministic budget
    wall_stops: int = 0
    #: the dynamic program: (edges, cut vertices, gaps, ops per block)
    dp: tuple = ()
    #: () -> (incumbent, bound) of the whole DP now, in units (set by ``_watch``)
    current: Callable[[], tuple[float, float]] | None = None

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def det_left(self) -> float:
        return math.inf if self.det_budget is None else self.det_budget - self.det_used

    def limits(self, ref: _BlockRef | None = None, det_time_s: float | None = None) -> SolveLimits:
        report = None
        if ref is not None and self.progress is not None:
            def report(value: int | None, bound: int) -> None:
                if value is not None:
                    ref.live_value = min(ref.live_value, value)
                ref.live_bound = max(ref.live_bound, bound)
        return SolveLimits(self.deadline, det_time_s, self.gap, report)


class OraclePlanner(Planner):
    """Exact optimum over the full plan space (see the module docstring).

    Args:
        time_limit_s: total search budget in seconds (``None``: no limit). When it
            runs out, the best plan found is returned with ``proven_optimal`` false.
        workers: threads: blocks are solved ``workers`` at a time with one CP-SAT
            worker each (faster than several workers on one small model, measured);
            a whole-graph model gets ``workers`` CP-SAT workers. ``None`` (default):
            deterministic mode with 2 threads (module docstring).
        gap: stop once the plan is proven within this relative gap (``None``: 0).
        progress: print progress lines on stderr (``None``: when it is a terminal).

    ``plan.info``: ``proven_optimal``; ``lower_bound_us`` (a true lower bound on the
    optimal simulated makespan, rounding included); ``gap`` = (makespan - lower
    bound) / makespan (about 1e-6 when proven: the time rounding);
    ``makespan_us`` (simulated); ``blocks`` (ops per block: gap plus closing cut
    vertex; ``[num_ops]`` without cut vertices); ``cut_vertices`` (the ones decomposed
    at); ``mode`` (``decomposition``, ``whole-graph``, or ``constrained`` when the
    global constraints needed the whole-graph model); ``cut_groups`` (profiled groups
    of cut vertices fused in the plan's cut partitions); ``block_solves`` and ``cache_hits``
    (CP-SAT solves, and blocks equal to one already solved); ``solve_time_s``;
    ``time_unit_us`` and ``rounding_error_us`` (see
    :mod:`partitiontuner.agents.oracle_model`); ``incumbent``: ``search``, or the quick
    planner (the classical ones or the shipped RL policy, greedy) whose plan beat the
    search's when it stopped unproven (the lower bound
    still comes from the search); ``deterministic``, ``reproducible`` and
    ``gap_limit`` (see the module docstring). Times are rounded to 0.001 us, the gap
    to 6 significant digits.
    """

    name = "oracle"

    def __init__(self, time_limit_s: float | None = 600.0, workers: int | None = None, gap: float | None = None,
                 progress: bool | None = None):
        if time_limit_s is not None and not time_limit_s > 0:
            raise ConfigError(f"oracle time limit must be > 0 seconds, got {time_limit_s}")
        if workers is not None and workers < 1:
            raise ConfigError(f"oracle workers must be >= 1, got {workers}")
        if gap is not None and not 0 <= gap < 1:
            raise ConfigError(f"oracle gap must be in [0, 1), got {gap}")
        self.time_limit_s = time_limit_s
        #: deterministic mode (the default): budgets in CP-SAT deterministic time
        self.deterministic = workers is None
        self.workers = 2 if workers is None else workers
        self.gap = gap
        self.progress = progress

    def __repr__(self) -> str:
        workers = "None" if self.deterministic else self.workers
        return f"OraclePlanner(time_limit_s={self.time_limit_s}, workers={workers}, gap={self.gap})"

    # --- entry point ----------------------------------------------------------------------
    def plan(self, problem: Problem) -> Plan:
        """The optimal plan (or the best found within the time limit), see the class.

        Raises:
            InfeasiblePlanError: no plan satisfies the problem's constraints.
        """
        t0 = time.perf_counter()
        budget = self.time_limit_s if self.time_limit_s is not None else 1e9
        search_budget = budget * (1 - RESERVE)
        tab = IntTables.build(problem)
        sim = Simulator(problem)
        err = rounding_error_us(problem.num_ops)
        constrained = not problem.is_unconstrained
        share = 0.5 if constrained else 1.0
        det = DET_PER_S * search_budget * share if self.deterministic else None
        search = _Search(problem, tab, t0 + search_budget * share, self.workers, det, self.gap)
        if Progress.wanted(self.progress):
            search.progress = Progress()
        with search.progress or contextlib.nullcontext():
            parts, value, bound, blocks, ncuts, fused = self._decompose(search)
            relaxed_lb = bound
            mode = "decomposition" if len(blocks) > 1 else "whole-graph"
            plan = None if parts is None else make_plan(problem, parts, self.name)
            if constrained and plan is not None:
                try:
                    check_plan_constraints(problem, plan)
                except InfeasiblePlanError:
                    search.deadline = t0 + search_budget
                    if search.det_budget is not None:
                        search.det_budget = DET_PER_S * search_budget
                    parts, value, bound = self._constrained(search, parts, relaxed_lb, sim)
                    mode = "constrained"
                    plan = make_plan(problem, parts, self.name)
        makespan, incumbent = math.inf, "search"
        if plan is not None:
            validate_plan(problem, plan)
            makespan = sim.plan_makespan(plan)
        proven = value is not None and bound >= value
        if not proven:  # an anytime search should never return worse than the quick planners
            for name, other in self._heuristic_plans(problem, t0 + budget * 1.1 + 1.0):
                m = sim.plan_makespan(other)
                if m < makespan - err:
                    plan, makespan, incumbent = other, m, name
        if plan is None:  # no time for any block and no quick plan: quick block solutions
            self._fill_fallbacks(search)
            parts, value, _, blocks, ncuts, fused = self._decompose_solved(search)
            plan = make_plan(problem, parts, self.name)
            validate_plan(problem, plan)
            makespan = sim.plan_makespan(plan)
        lb_us = max(0.0, min(makespan, tab.to_us(bound) - err))
        gap = max(0.0, (makespan - lb_us) / makespan) if makespan > 0 else 0.0
        info: dict[str, Any] = {
            "proven_optimal": proven,
            "lower_bound_us": round(lb_us, 3),
            "gap": float(f"{gap:.6g}"),
            "makespan_us": round(makespan, 3),
            "blocks": blocks,
            "solve_time_s": round(time.perf_counter() - t0, 3),
            "mode": mode,
            "cut_vertices": ncuts,
            "cut_groups": fused if mode != "constrained" else 0,
            "block_solves": search.solves,
            "cache_hits": search.cache_hits,
            "time_unit_us": TIME_UNIT_US,
            "rounding_error_us": round(err, 6),
            "incumbent": incumbent,
            "deterministic": self.deterministic,
            # deterministic mode and no search was cut short by the clock: the same
            # bound and plan on every run (on any machine of similar speed)
            "reproducible": self.deterministic and search.wall_stops == 0,
            "gap_limit": self.gap,
        }
        return make_plan(problem, [(p.ops, p.device) for p in plan.partitions], self.name, info)

    def static_lower_bound_us(self, problem: Problem) -> float:
        """The lower bound without any search: the dynamic program over the blocks'
        :func:`~partitiontuner.agents.oracle_bounds.block_lower_bound` (valid for the
        problem without its global constraints, hence for it too)."""
        tab = IntTables.build(problem)
        s = _Search(problem, tab, math.inf, 1)
        edges, *_ = self._dp_edges(s)
        bound, _ = _shortest(edges, lambda ref: ref.static_bound)
        return max(0.0, tab.to_us(bound) - rounding_error_us(problem.num_ops))

    def _heuristic_plans(self, problem: Problem, deadline: float = math.inf) -> Iterable[tuple[str, Plan]]:
        """The quick planners' plans (those that satisfy the problem's constraints):
        incumbents when the search is stopped before proving optimality. The shipped
        RL policy's greedy plan is one of them when the policy can be loaded in time:
        in deterministic mode when the time limit is at least :data:`RL_MIN_BUDGET_S`
        (a rule on the inputs, not the clock), else when torch is already imported or
        :data:`RL_LOAD_S` are left before ``deadline`` (importing torch can take longer
        than a short time limit). Outside deterministic mode no planner starts after
        ``deadline`` once one plan is in hand."""
        from partitiontuner.agents.registry import quick_planners

        planners: list[Planner] = quick_planners()
        if self.deterministic:
            with_rl = self.time_limit_s is None or self.time_limit_s >= RL_MIN_BUDGET_S
            deadline = math.inf
        else:
            with_rl = "torch" in sys.modules or deadline - time.perf_counter() > RL_LOAD_S
        if with_rl:
            try:
                from partitiontuner.agents.rl_planner import RLPlanner

                planners.append(RLPlanner(budget_s=0))  # the policy alone: an incumbent, not a search
            except (ImportError, ConfigError):
                pass  # no torch or no shipped policy: the classical incumbents only
        found = False
        for planner in planners:
            if found and time.perf_counter() > deadline:
                break
            try:
                plan = planner.plan(problem)
                validate_plan(problem, plan)
                check_plan_constraints(problem, plan)
            except InfeasiblePlanError:
                continue
            found = True
            yield planner.name, plan

    # --- decomposition -----------------------------------------------------------------------
    def _decompose(self, s: _Search) -> tuple[list[tuple[list[int], int]] | None, int | None, int, list[int], int, int]:
        """Optimum of the problem without global constraints: ``(partitions in
        sequence, value, lower bound, ops per block, cut vertices, fused groups of cut
        vertices)``; value and bound in units; partitions and value ``None`` when a
        block has no solution yet (the time ran out)."""
        s.dp = self._dp_edges(s)
        self._watch(s, s.dp[0])
        self._solve_all(s)
        return self._decompose_solved(s)

    def _decompose_solved(self, s: _Search) -> tuple[list[tuple[list[int], int]] | None, int | None, int, list[int], int, int]:
        """:meth:`_decompose` once the blocks of ``s.dp`` have their results."""
        edges, cuts, gaps, blocks = s.dp
        m = len(cuts)
        if not cuts:
            ref = edges[0].block
            r = ref.result
            if r.infeasible:
                raise InfeasiblePlanError("no plan satisfies the problem's pins, forbids and supported ops")
            if r.value is None:
                return None, None, int(ref.bound), blocks, 0, 0
            parts = [([op for u in units for op in ref.units[u]], pu) for units, pu, _ in sorted(r.slots, key=lambda x: (x[2], x[0]))]
            return parts, r.value, int(min(ref.bound, r.value)), blocks, 0, 0
        lower, _ = _shortest(edges, lambda ref: ref.bound)
        value, via = _shortest(edges, lambda ref: ref.value)
        if not math.isfinite(lower):
            raise InfeasiblePlanError("no plan satisfies the problem's pins, forbids and supported ops")
        if not math.isfinite(value):  # a block without a solution yet: no plan from the search
            return None, None, int(lower), blocks, m, 0
        path = []
        node = "sink"
        while node != "source":
            e = via[node]
            path.append(e)
            node = e.src
        path.reverse()
        parts = self._assemble(path, cuts, gaps)
        fused = sum(1 for e in path if e.action[0] in ("start", "merge") and e.action[3] is not None)
        return parts, int(value), int(min(lower, value)), blocks, m, fused

    def _dp_edges(self, s: _Search) -> tuple[list[_Transition], tuple[int, ...], list[list[int]], list[int]]:
        """The dynamic program's edges in a topological order, with their blocks
        registered in ``s.cache`` (not solved yet): ``(edges, cut vertices, gaps, ops
        per block)``. Without cut vertices, one edge holding the whole graph."""
        problem, tab = s.problem, s.tab
        n, P = problem.num_ops, problem.num_pus
        cuts = decomposition_cut_vertices(verified_cut_vertices(problem), tab.savings)
        if not cuts:
            ref = self._block(s, list(range(n)), None, None)
            return [_Transition("source", "sink", ref, 0, ("sink",))], cuts, [list(range(n))], [n]
        m = len(cuts)
        bounds = [-1, *cuts, n]
        gaps = [list(range(bounds[i] + 1, bounds[i + 1])) for i in range(m + 1)]  # gaps[i] before cuts[i]; gaps[m] the tail
        blocks = [len(gaps[i]) + 1 for i in range(m)] + ([len(gaps[m])] if gaps[m] else [])
        ovh = tab.overhead
        index = {c: i for i, c in enumerate(cuts)}
        # fusable groups of cut vertices by their first cut vertex and PU: (group, later
        # cut vertices in it, its work on the PU)
        starting: dict[tuple[int, int], list[tuple[frozenset[int], frozenset[int], int]]] = {}
        for ops, saving in tab.savings.items():
            if not ops <= index.keys():
                continue
            first = min(ops)
            for q in range(P):
                if saving[q] > 0:
                    starting.setdefault((index[first], q), []).append((ops, ops - {first}, tab.sum_time(ops, q) - saving[q]))
        for options in starting.values():
            options.sort(key=lambda o: sorted(o[0]))

        def boundary(i: int, q: int) -> Boundary:
            return Boundary(q, frozenset({cuts[i]}), True)

        # DP nodes: "source", "sink", ("open", i, q, X), ("closed", i, q); see the module
        # docstring. Edges are listed in a topological order of the nodes.
        edges: list[_Transition] = []
        opened: list[set] = [set() for _ in range(m)]
        closed: list[set] = [set() for _ in range(m)]
        for i in range(m):
            c = cuts[i]
            # a cut partition starts at cut i
            for lstate in (["source"] if i == 0 else sorted(closed[i - 1])):
                left = None if lstate == "source" else boundary(i - 1, lstate[2])
                for q in range(P):
                    tq = tab.time[c][q]
                    if tq is None:
                        continue
                    ref = self._block(s, gaps[i], left, boundary(i, q))
                    for group, ahead, work in [(None, frozenset(), tq), *starting.get((i, q), [])]:
                        dst = ("open", i, q, ahead)
                        edges.append(_Transition(lstate, dst, ref, ovh[q] + work, ("start", i, q, group)))
                        opened[i].add(dst)
            # an open cut partition merges into cut i: the gap before it (its best
            # fusion), then cut i already fused, unfused, or starting a group
            if i > 0:
                for src in sorted(opened[i - 1], key=_state_key):
                    _, _, q, ahead = src
                    inner = tab.work(gaps[i], q)
                    if inner is None:
                        continue
                    if c in ahead:
                        options = [(None, ahead - {c}, 0)]
                    elif tab.time[c][q] is None:
                        continue
                    else:
                        options = [(None, ahead, tab.time[c][q])]
                        options += [(g, ahead | rest, w) for g, rest, w in starting.get((i, q), []) if not g & ahead]
                    for group, nxt, work in options:
                        dst = ("open", i, q, nxt)
                        edges.append(_Transition(src, dst, None, inner + work, ("merge", i, q, group)))
                        opened[i].add(dst)
            # or it ends at cut i (no fused group may reach past it)
            for src in sorted(opened[i], key=_state_key):
                _, _, q, ahead = src
                if not ahead:
                    dst = ("closed", i, q)
                    edges.append(_Transition(src, dst, None, 0, ("close", i, q)))
                    closed[i].add(dst)
        for lstate in sorted(closed[m - 1]):
            ref = self._block(s, gaps[m], boundary(m - 1, lstate[2]), None)
            edges.append(_Transition(lstate, "sink", ref, 0, ("sink",)))

        return edges, cuts, gaps, blocks

    def _assemble(self, path: list[_Transition], cuts: tuple[int, ...], gaps: list[list[int]]) -> list[tuple[list[int], int]]:
        """Partitions in an execution sequence from a DP path."""
        sequence: list[tuple[list[int], int]] = []
        current: list[int] | None = None  # ops of the open cut partition
        for _src, _dst, ref, _cost, action in path:
            grown_right: list[int] = []
            if ref is not None:
                r = ref.result
                for units, pu, _ in sorted(r.slots, key=lambda x: (x[2], x[0])):
                    sequence.append(([op for u in units for op in ref.units[u]], pu))
                grown_left = [op for u in r.grown_left for op in ref.units[u]]
                grown_right = [op for u in r.grown_right for op in ref.units[u]]
                if grown_left:
                    assert current is not None
                    current.extend(grown_left)
            kind = action[0]
            if kind == "start":
                _, i, q, _group = action
                current = [*grown_right, cuts[i]]
                sequence.append((current, q))
            elif kind == "merge":
                _, i, _q, _group = action
                assert current is not None
                current.extend([*gaps[i], cuts[i]])
        # the sequence lists each block's partitions before the cut partition after it,
        # and cut partitions in order: a valid execution sequence
        return [(sorted(ops), pu) for ops, pu in sequence]

    # --- block solves --------------------------------------------------------------------------
    def _block(self, s: _Search, ops: Sequence[int], left: Boundary | None, right: Boundary | None) -> _BlockRef:
        units = [(v,) for v in ops]
        model = BlockModel(s.tab, units, left, right)
        refs = s.cache.setdefault(model.key(), [])
        ref = _BlockRef(units, model, static_bound=refs[0].static_bound if refs else block_lower_bound(model))
        refs.append(ref)
        return ref

    @staticmethod
    def _watch(s: _Search, edges: list[_Transition]) -> None:
        """Let the search's progress line and its gap test see the DP over ``edges``."""

        def current() -> tuple[float, float]:
            heads = {id(ref): refs[0] for refs in s.cache.values() for ref in refs}
            value, _ = _shortest(edges, lambda ref: heads[id(ref)].current()[0])
            bound, _ = _shortest(edges, lambda ref: heads[id(ref)].current()[1])
            return value, min(bound, value)

        def snapshot() -> tuple[float, float, str]:
            value, bound = current()
            done = sum(1 for refs in s.cache.values() if refs[0].result is not None and refs[0].result.proven)
            return s.tab.to_us(value), s.tab.to_us(bound), f"blocks proven {done}/{len(s.cache)}"

        s.current = current
        if s.progress is not None:
            s.progress.snapshot = snapshot

    def _solve_all(self, s: _Search) -> None:
        """Solve every distinct block once, smallest first, sharing the time budget;
        unproven blocks get a second round with what is left, unless the global gap
        (:attr:`gap`) is already reached."""
        pending = sorted(s.cache.values(), key=lambda refs: len(refs[0].units))
        self._solve_round(s, pending)
        unproven = [refs for refs in pending if not refs[0].result.proven]
        if unproven and s.gap is not None and s.current is not None:
            value, bound = s.current()
            if math.isfinite(value) and value - bound <= s.gap * value:
                unproven = []
        left = s.det_left() if s.det_budget is not None else s.remaining()
        if unproven and left > MIN_SOLVE_S and s.remaining() > MIN_SOLVE_S:
            self._solve_round(s, unproven, second=True)
        for refs in pending:
            for ref in refs[1:]:
                ref.result = refs[0].result
            if refs[0].units:
                s.cache_hits += len(refs) - 1

    def _solve_round(self, s: _Search, pending: list[list[_BlockRef]], second: bool = False) -> None:
        """Solve the heads of ``pending`` on ``s.workers`` threads (CP-SAT releases the
        GIL; one CP-SAT worker per block is faster than several on these small
        models). Each solve gets its weight's share of the time left: in deterministic
        mode a fixed share of the deterministic budget, decided before any solve starts
        (so it does not depend on which thread finishes first); else its share of the
        wall time left when it starts. Model building counts against the deadline."""
        todo = [refs[0] for refs in pending]
        for head in todo:
            if not head.units:
                head.result = head.model.solve(0, 1)
        todo = [h for h in todo if h.units]
        weights = {id(h): max(1, len(h.units)) ** 2 for h in todo}
        state = {"weight": float(sum(weights.values()))}
        lock = threading.Lock()
        det_share: dict[int, float] = {}
        if s.det_budget is not None:  # as limit_for below, with every solve using its share
            left, total, used, floor = max(0.0, s.det_left()), state["weight"], 0.0, MIN_SOLVE_S * DET_PER_S
            for h in todo:
                w = weights[id(h)]
                rest = left - used / s.workers
                det_share[id(h)] = 0.0 if rest < floor else max(floor, rest * min(1.0, s.workers * w / total))
                total -= w
                used += det_share[id(h)]

        def limit_for(head: _BlockRef) -> float:
            with lock:
                w = weights[id(head)]
                share = s.remaining() * min(1.0, s.workers * w / state["weight"])
                state["weight"] -= w
            return max(MIN_SOLVE_S, share)

        def run(head: _BlockRef) -> tuple[_BlockRef, BlockResult, int]:
            det = det_share.get(id(head))
            if det is not None:
                limit = s.remaining() if det > 0 else 0.0
            else:
                limit = limit_for(head) if s.remaining() >= MIN_SOLVE_S else 0.0
            hint = None
            if second and head.result is not None and head.result.value is not None:
                hint = [([op for u in units for op in head.units[u]], pu) for units, pu, _ in head.result.slots]
            left, right = head.model.left, head.model.right
            res, count = None, 0
            if limit > 0:
                lb = head.static_bound if head.static_bound > 0 else None
                res = BlockModel(s.tab, head.units, left, right).solve(limit, 1, hint, lb, s.limits(head, det))
                count += 1
            elif det:
                s.wall_stops += 1  # the clock, not the deterministic budget, left no time
            return head, res or BlockResult(None, 0, False), count

        if s.workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=s.workers) as pool:
                results = list(pool.map(run, todo))
        else:
            results = [run(h) for h in todo]
        for head, res, count in results:
            s.solves += count
            s.det_used += res.det_s / s.workers
            s.wall_stops += int(res.by_wall)
            old = head.result
            if old is None or (res.value is not None and (old.value is None or res.value <= old.value)):
                if old is not None:
                    res.bound = max(res.bound, old.bound)
                head.result = res
            else:
                old.bound = max(old.bound, res.bound)

    def _fill_fallbacks(self, s: _Search) -> None:
        """A quick feasible solution for every block the search left without one (no
        time, or none found yet), so the dynamic program has a plan when no quick
        planner gives one either."""
        for refs in s.cache.values():
            head = refs[0]
            if head.result is None or (head.result.value is None and not head.result.infeasible):
                bound = 0 if head.result is None else head.result.bound
                head.result = BlockModel(s.tab, head.units, head.model.left, head.model.right).fallback()
                head.result.bound = bound
                for ref in refs[1:]:
                    ref.result = head.result

    # --- global constraints ------------------------------------------------------------------------
    def _constrained(self, s: _Search, relaxed: list[tuple[list[int], int]], relaxed_lb: int, sim: Simulator) -> tuple[list[tuple[list[int], int]], int | None, int]:
        """One whole-graph model with the global constraints: ``(partitions, value or
        None if an incumbent is returned, lower bound)``."""
        problem, tab = s.problem, s.tab
        n = problem.num_ops
        c = problem.constraints
        limits = GlobalLimits(c.max_partitions, c.min_partition_ops if (c.min_partition_ops or 1) > 1 else None, problem.has_memory_limits)
        incumbents = self._incumbents(problem, relaxed, sim)
        exact = n <= EXACT_MAX_OPS
        units = [(v,) for v in range(n)] if exact else self._coarse_units(problem, relaxed)
        unit_of = {v: i for i, u in enumerate(units) for v in u}
        expressible = [
            parts for parts, _ in incumbents
            if all(sum(len(units[u]) for u in {unit_of[v] for v in ops}) == len(ops) for ops, _ in parts)
        ]
        model = BlockModel(tab, units, None, None, limits)
        det = max(MIN_SOLVE_S, s.det_left()) * s.workers if s.det_budget is not None else None
        res = model.solve(max(MIN_SOLVE_S, s.remaining()), s.workers, expressible[0] if expressible else None, relaxed_lb,
                          s.limits(None, det))
        s.wall_stops += int(res.by_wall)
        s.solves += 1
        best = incumbents[0] if incumbents else None
        if res.value is not None:
            parts = [([op for u in us for op in units[u]], pu) for us, pu, _ in sorted(res.slots, key=lambda x: (x[2], x[0]))]
            bound = max(relaxed_lb, res.bound) if exact else relaxed_lb
            if res.value <= relaxed_lb:
                bound = res.value
            found = sim.plan_makespan(make_plan(problem, parts, self.name))
            if best is not None and best[1] < found - rounding_error_us(n):
                return best[0], None, bound
            return parts, res.value, bound
        if res.infeasible and exact:
            raise InfeasiblePlanError(f"no plan satisfies the constraints ({self._describe(problem)})")
        if best is not None:
            return best[0], None, relaxed_lb
        raise InfeasiblePlanError(f"the oracle found no plan satisfying the constraints ({self._describe(problem)}) within its time limit")

    def _incumbents(self, problem: Problem, relaxed: list[tuple[list[int], int]], sim: Simulator) -> list[tuple[list[tuple[list[int], int]], float]]:
        """Quick plans that satisfy the constraints, best first: the relaxed optimum
        repaired by :mod:`partitiontuner.repair` (if that module is there) and
        one partition on one PU."""
        options = []
        try:
            from partitiontuner.repair import repair

            options.append([(list(ops), int(p)) for ops, p in repair(problem, relaxed, sim)])
        except (ImportError, InfeasiblePlanError):
            pass
        ops = list(range(problem.num_ops))
        options += [[(ops, p)] for p in range(problem.num_pus) if problem.allowed[:, p].all()]
        out = []
        for parts in options:
            plan = make_plan(problem, parts, self.name)
            try:
                validate_plan(problem, plan)
            except InfeasiblePlanError:
                continue
            out.append((parts, sim.plan_makespan(plan)))
        return sorted(out, key=lambda x: x[1])

    @staticmethod
    def _coarse_units(problem: Problem, relaxed: list[tuple[list[int], int]]) -> list[tuple[int, ...]]:
        """Units for a large constrained graph (the search then groups, places and
        orders whole units only): the relaxed optimum's partitions cut into runs of
        consecutive ops (both convex, so their intersections are), or just the runs
        if that gives more than 1.5 x :data:`CHUNKS` units."""
        chunks = OraclePlanner._chunks(problem)
        chunk_of = {v: i for i, c in enumerate(chunks) for v in c}
        cells: dict[tuple[int, int], list[int]] = {}
        for j, (ops, _) in enumerate(relaxed):
            for v in ops:
                cells.setdefault((j, chunk_of[v]), []).append(v)
        units = sorted(tuple(sorted(c)) for c in cells.values())
        return units if len(units) <= int(1.5 * CHUNKS) else chunks

    @staticmethod
    def _describe(problem: Problem) -> str:
        c = problem.constraints
        parts = []
        if c.max_partitions is not None:
            parts.append(f"--max-partitions {c.max_partitions}")
        if c.min_partition_ops is not None:
            parts.append(f"--min-partition-ops {c.min_partition_ops}")
        for j, cap in enumerate(problem.memory_capacity):
            if math.isfinite(cap):
                parts.append(f"{problem.pus[j]} memory {cap / 2**20:.1f} MiB")
        if c.pins or c.forbids:
            parts.append("pins/forbids")
        return ", ".join(parts)

    @staticmethod
    def _chunks(problem: Problem) -> list[tuple[int, ...]]:
        """At most about :data:`CHUNKS` convex units: runs of consecutive ops (in
        topological order) that share an allowed PU (any run of consecutive ops of a
        topological order is convex)."""
        n = problem.num_ops
        size = max(1, math.ceil(n / CHUNKS))
        units, cur, allowed = [], [], None
        for v in range(n):
            row = problem.allowed[v]
            nxt = row if allowed is None else allowed & row
            if cur and (len(cur) >= size or not nxt.any()):
                units.append(tuple(cur))
                cur, nxt = [], row
            cur.append(v)
            allowed = nxt
        units.append(tuple(cur))
        return units
