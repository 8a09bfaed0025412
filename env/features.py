"""Features of a problem and of a partial schedule, as the policy sees them.

Everything is a dimensionless number of order one, so that one policy serves graphs
from 20 to 10,000 ops and platforms of 2 to 4 PUs:

* times are divided by the problem's time scale ``tau`` (the mean over ops of the
  op's fastest allowed latency) and passed through ``slog(x) = sign(x) log(1 + |x|)``;
* sizes (FLOPs, bytes) are ``log1p`` scaled;
* latencies on a PU are relative to the op's fastest allowed PU.

Op (node) features are PU-agnostic: the encoder never sees PU slots, so it does not
learn a platform's PU order. What differs per PU goes to the PU rows and to the
per-action rows, which the policy's head scores with shared weights, one row per PU.

Columns (``SCHEMA_VERSION`` changes whenever any list below changes):

* node static (:data:`NODE_STATIC`): op type one-hot, sizes, graph input/output,
  position in the visit order, critical-path rank, latency spread over the PUs,
  allowed PUs, degrees, how much grouping can save;
* node dynamic (:data:`NODE_DYNAMIC`): decided, current, chosen PU slot, in a
  joinable partition;
* edge (:data:`EDGE`): tensor bytes, transfer time over the links;
* PU (:data:`PU`): kind, host, dispatch overhead, how many ops it can run and how fast,
  its link to the host; dynamic: when it is free, its open partition;
* action (:data:`ACTION`), one row per (ready op, PU, join bit), computed with the exact
  incremental schedule: where the op would start and end, the partial
  makespan after it (also relative to the op's best action), added work, idle time, the
  saving of a profiled group, the op's latency there, and a static lookahead (how many
  of the following ops of the chain this PU can run, and how much slower than per-op
  best that run would be); and the cost-to-go of the rest of the chain on the PU after
  this action, from the per-PU dynamic program over partitionings of the run
  (:attr:`ProblemContext.dp_table`): its regret against the other join bit, per op of
  the run against the best action, and as a finish time (start + cost-to-go) against
  the best action. The myopic features alone make a greedy policy fall into one huge
  partition that forfeits every fused group; the dynamic program shows the phase of
  the grouping, and the policy learns when to trust it over transfers and PU load;
* global (:data:`GLOBAL`): progress, partial makespan, size, number of PUs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator

from .state import ScheduleState, upward_rank, visit_order

SCHEMA_VERSION = 1

#: op types with their own one-hot column; anything else is "other"
OP_TYPES = (
    "Conv", "Gemm", "MatMul", "Relu", "Clip", "BatchNormalization", "Add", "Sum", "Mul", "Concat",
    "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Transpose", "Softmax", "LRN",
)
NODE_STATIC = (
    *[f"type_{t}" for t in OP_TYPES], "type_other",
    "log_flops", "log_bytes", "log_weight_bytes", "reads_input", "writes_output", "position", "rank",
    "log_best_time", "log_host_ratio", "log_worst_ratio", "frac_pus_allowed", "host_allowed",
    "log_in_degree", "log_out_degree", "group_saving",
)
NODE_DYNAMIC = ("decided", "current", "joinable", "pu0", "pu1", "pu2", "pu3")
EDGE = ("log_bytes", "transfer_mean", "transfer_min")
PU = (
    "valid", "kind_cpu", "kind_npu", "is_host", "overhead", "frac_runnable", "median_slowdown",
    "total_slowdown", "link_latency", "link_transfer",
    "free", "open_size", "joinable",
)
PU_STATIC = 10
ACTION = (
    "valid", "join", "end", "makespan_delta", "makespan_regret", "end_regret", "idle", "work",
    "group_saving", "group_potential", "slowdown", "is_host", "is_npu", "run_length", "run_slowdown",
    "open_size", "free", "dp_bit_regret", "dp_rate_regret", "dp_finish_regret",
)
GLOBAL = ("progress", "makespan_ref", "log_makespan", "log_ops", "num_pus", "partitions", "log_ref")

#: largest platform the features describe (slot one-hots of the dynamic node columns)
MAX_PUS = 4
#: the lookahead run stops after this many ops
MAX_RUN = 32


def slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def _slog_np(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(eq=False)
class ProblemContext:
    """Everything about one problem the environment and the planner compute once.

    Attributes:
        problem: the problem.
        sim: its compiled simulator.
        order: the visit order; ``position[v]`` is ``v``'s step.
        tau: time scale in us (mean fastest allowed op latency).
        ref_makespan: ``T_ref`` of the reward (:meth:`reference`).
    """

    problem: Problem

    def __post_init__(self) -> None:
        if self.problem.num_pus > MAX_PUS:
            from partitiontuner.errors import ConfigError

            raise ConfigError(
                f"platform {self.problem.platform.name!r} has {self.problem.num_pus} PUs; the RL features describe at most {MAX_PUS}"
            )
        self.sim = Simulator(self.problem)
        self.order = visit_order(self.problem)
        pos = np.empty(self.problem.num_ops, dtype=np.int64)
        pos[self.order] = np.arange(self.problem.num_ops)
        self.position = pos
        t = np.where(self.problem.allowed, self.problem.op_time, np.inf)
        self.best_time = t.min(axis=1)
        self.tau = float(max(np.mean(self.best_time), 1e-6))
        self.ref_makespan = self.reference()

    # --- the reward's reference ---------------------------------------------------------
    def reference(self) -> float:
        """``T_ref``: the best single-PU plan (one partition on a PU that may run every
        op), or, when no PU may run every op (pins, forbids), the best of the plans
        that prefer one PU and put each other op on its fastest allowed PU."""
        pr, sim = self.problem, self.sim
        topo = list(range(pr.num_ops))
        full = [p for p in range(pr.num_pus) if pr.allowed[:, p].all()]
        if full:
            return min(sim.run([topo], [p])[0] for p in full)
        best = math.inf
        for p in range(pr.num_pus):
            st = ScheduleState(pr, self.order, sim)
            while not st.done:
                v = st.current
                q = p if pr.allowed[v, p] else int(np.argmin(np.where(pr.allowed[v], pr.op_time[v], np.inf)))
                st.apply(q, st.joinable(q))
            parts = st.partitions()
            best = min(best, sim.run([o for o, _ in parts], [q for _, q in parts])[0])
        return best

    @cached_property
    def graph_key(self) -> int:
        """A 62-bit digest of the problem, so a batch of observations can encode each
        distinct graph once."""
        pr = self.problem
        h = hashlib.sha256()
        h.update(pr.graph.content_hash.encode())
        h.update(repr(pr.platform.names).encode())
        h.update(np.ascontiguousarray(pr.op_time).tobytes())
        h.update(np.ascontiguousarray(pr.allowed).tobytes())
        h.update(np.ascontiguousarray(pr.overhead).tobytes())
        h.update(np.ascontiguousarray(pr.link_latency).tobytes())
        h.update(np.ascontiguousarray(pr.link_us_per_byte).tobytes())
        for k in sorted(tuple(sorted(x)) for x in pr.group_time):
            h.update(repr(k).encode())
            h.update(pr.group_time[frozenset(k)].tobytes())
        return int.from_bytes(h.digest()[:8], "little") >> 2

    # --- static arrays --------------------------------------------------------------------
    @cached_property
    def node_static(self) -> np.ndarray:
        """``(num_ops, len(NODE_STATIC))`` float32."""
        pr, g = self.problem, self.problem.graph
        n, tau = g.num_ops, self.tau
        x = np.zeros((n, len(NODE_STATIC)), dtype=np.float32)
        type_col = {t: i for i, t in enumerate(OP_TYPES)}
        other = len(OP_TYPES)
        c = other + 1
        allowed = pr.allowed
        t = np.where(allowed, pr.op_time, np.nan)
        best = self.best_time
        worst = np.nanmax(t, axis=1)
        host = pr.host
        rank = upward_rank(pr)
        rank_max = max(float(rank.max()), 1e-9)
        saving = np.zeros(n)
        for ops, gt in pr.group_time.items():
            idx = list(ops)
            s = pr.op_time[idx].sum(axis=0)
            ok = np.isfinite(gt) & np.isfinite(s) & (s > 0)
            if ok.any():
                frac = float(np.max(np.where(ok, (s - np.where(ok, gt, 0)) / np.where(ok, s, 1), 0.0)))
                for v in idx:
                    saving[v] = max(saving[v], frac)
        for node in g.nodes:
            v = node.index
            x[v, type_col.get(node.op_type, other)] = 1.0
            x[v, c + 0] = math.log1p(node.flops) / 20.0
            x[v, c + 1] = math.log1p(node.bytes_read + node.bytes_written) / 16.0
            x[v, c + 2] = math.log1p(node.weight_bytes) / 16.0
            x[v, c + 3] = float(self.sim.reads_input[v])
            x[v, c + 4] = float(self.sim.output_bytes[v] >= 0)
            x[v, c + 5] = self.position[v] / max(n - 1, 1)
            x[v, c + 6] = rank[v] / rank_max
            x[v, c + 7] = slog(best[v] / tau)
            x[v, c + 8] = min(math.log(t[v, host] / best[v]), 5.0) if allowed[v, host] and best[v] > 0 else 0.0
            x[v, c + 9] = min(math.log(worst[v] / best[v]), 5.0) if best[v] > 0 else 0.0
            x[v, c + 10] = allowed[v].sum() / pr.num_pus
            x[v, c + 11] = float(allowed[v, host])
            x[v, c + 12] = math.log1p(len(g.preds[v])) / 2.0
            x[v, c + 13] = math.log1p(len(g.succs[v])) / 2.0
            x[v, c + 14] = saving[v]
        return x

    @cached_property
    def edge_index(self) -> np.ndarray:
        """``(2, num_edges)`` int64: producer -> consumer, one column per distinct pair."""
        pairs = sorted({(e.src, e.dst) for e in self.problem.graph.edges})
        return np.array(pairs, dtype=np.int64).reshape(-1, 2).T.copy()

    @cached_property
    def edge_attr(self) -> np.ndarray:
        """``(num_edges, len(EDGE))`` float32 (bytes summed over a pair's tensors)."""
        pr = self.problem
        size: dict[tuple[int, int], int] = {}
        for e in pr.graph.edges:
            size[(e.src, e.dst)] = size.get((e.src, e.dst), 0) + e.size_bytes
        p = pr.num_pus
        off = ~np.eye(p, dtype=bool)
        lat = pr.link_latency[off] if p > 1 else np.zeros(1)
        upb = pr.link_us_per_byte[off] if p > 1 else np.zeros(1)
        out = np.zeros((self.edge_index.shape[1], len(EDGE)), dtype=np.float32)
        for i, (a, b) in enumerate(self.edge_index.T):
            s = size[(int(a), int(b))]
            tr = lat + s * upb
            out[i] = (math.log1p(s) / 16.0, slog(float(tr.mean()) / self.tau), slog(float(tr.min()) / self.tau))
        return out

    @cached_property
    def pu_static(self) -> np.ndarray:
        """``(num_pus, PU_STATIC)`` float32: the static PU columns."""
        pr = self.problem
        p, tau, host = pr.num_pus, self.tau, pr.host
        out = np.zeros((p, PU_STATIC), dtype=np.float32)
        mean_bytes = float(np.mean([e.size_bytes for e in pr.graph.edges])) if pr.graph.edges else 0.0
        best = self.best_time
        for j, dev in enumerate(pr.platform.devices):
            ok = pr.allowed[:, j] & (best > 0)
            ratio = np.log(pr.op_time[ok, j] / best[ok]) if ok.any() else np.zeros(1)
            total = float(np.sum(pr.op_time[ok, j]) / max(np.sum(best[ok]), 1e-9)) if ok.any() else 1.0
            lat = pr.link_latency[j, host] + pr.link_latency[host, j]
            tr = pr.transfer_us(j, host, mean_bytes) + pr.transfer_us(host, j, mean_bytes)
            out[j] = (
                1.0, float(dev.kind == "cpu"), float(dev.kind == "npu"), float(j == host),
                slog(pr.overhead[j] / tau), float(pr.allowed[:, j].mean()), float(np.median(ratio)),
                math.log(max(total, 1e-9)), slog(lat / 2 / tau), slog(tr / 2 / tau),
            )
        return out

    @cached_property
    def run_length(self) -> np.ndarray:
        """``(num_ops, num_pus)`` int: the run of ops starting at ``v`` in the visit order,
        each the successor of the previous (a chain), that the PU may run (0 if it may
        not run ``v``)."""
        pr, g = self.problem, self.problem.graph
        n, p = pr.num_ops, pr.num_pus
        length = np.zeros((n, p), dtype=np.int64)
        order = self.order
        for i in range(n - 1, -1, -1):
            v = order[i]
            chained = i + 1 < n and order[i + 1] in g.succs[v]
            for q in range(p):
                if pr.allowed[v, q]:
                    length[v, q] = 1 + (length[order[i + 1], q] if chained else 0)
        return length

    @cached_property
    def lookahead(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (op, PU), over the first ``MAX_RUN`` ops of :attr:`run_length`: the run's
        length, and ``slog((run time on PU - run time at per-op best) / tau)``."""
        pr = self.problem
        n = pr.num_ops
        length = np.minimum(self.run_length, MAX_RUN)
        extra = np.where(pr.allowed, pr.op_time - self.best_time[:, None], 0.0)[self.order]  # by position
        prefix = np.vstack([np.zeros((1, pr.num_pus)), np.cumsum(extra, axis=0)])
        pos = self.position
        idx = np.minimum(pos[:, None] + length, n)
        slower = np.take_along_axis(prefix, idx, axis=0) - prefix[pos]
        return length, _slog_np(slower / self.tau)

    @cached_property
    def _groups_by_op(self) -> tuple[dict[int, list[tuple[tuple[int, ...], list[float]]]], dict[int, list[tuple[tuple[int, ...], list[float]]]]]:
        """Profiled groups with a saving, by their first op and by each later op."""
        fusion = self.problem.fusion
        first: dict[int, list] = {}
        later: dict[int, list] = {}
        for (c, start, length), sv in fusion.savings.items():
            ops = tuple(fusion.chains[c][start:start + length])
            first.setdefault(ops[0], []).append((ops, sv))
            for u in ops[1:]:
                later.setdefault(u, []).append((ops, sv))
        return first, later

    @cached_property
    def dp_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(run_sum, run_saving)``, each ``(num_pus, num_ops + 1)`` by visit position:
        the summed op times of PU ``p``'s run from position ``i`` on (:attr:`run_length`)
        and the best saving of fused groups inside it (a weighted-interval dynamic
        program from the run's end). One partition holding the whole run is the best
        way to run it on ``p`` (fusion savings only grow with a partition and each
        partition pays one dispatch), so a new partition at ``i`` costs
        ``run_sum - run_saving + overhead`` (:func:`dp_costs`)."""
        pr, sim = self.problem, self.sim
        n, order = pr.num_ops, self.order
        run_sum = np.zeros((pr.num_pus, n + 1))
        run_save = np.zeros((pr.num_pus, n + 1))
        first, _ = self._groups_by_op
        lengths = self.run_length
        for p in range(pr.num_pus):
            for i in range(n - 1, -1, -1):
                v = order[i]
                length = int(lengths[v, p])
                if not length:
                    run_sum[p, i] = math.inf
                    continue
                cont = length > 1
                run_sum[p, i] = sim.op_time[v][p] + (run_sum[p, i + 1] if cont else 0.0)
                best = run_save[p, i + 1] if cont else 0.0
                for ops, sv in first.get(v, ()):
                    size = len(ops)
                    if size <= length and tuple(order[i:i + size]) == ops:
                        gain = sv[p] + (run_save[p, i + size] if size < length else 0.0)
                        if gain > best:
                            best = gain
                run_save[p, i] = best
        return run_sum, run_save

    def dp_costs(self, state: ScheduleState, p: int, v: int | None = None) -> tuple[float, float]:
        """What the rest of ready op ``v``'s run (default the current op) on ``p`` costs
        if it opens a new partition there, and if it (and the run) join ``p``'s open
        partition instead (also keeping groups that start inside that partition and go
        on through the run); ``inf`` for a join that is not possible."""
        if v is None:
            v = state.current
        i = int(self.position[v])
        run_sum, run_save = self.dp_table
        new = self.sim.finish(0.0, run_sum[p, i] - run_save[p, i], p)
        k = state.open[p]
        if k < 0:
            return new, math.inf
        length = int(self.run_length[v, p])
        best = run_save[p, i]
        _, later = self._groups_by_op
        held = state.parts[k]
        order = self.order
        for ops, sv in later.get(v, ()):
            at = ops.index(v)
            rest = len(ops) - at
            if rest <= length and all(u in held[-4:] for u in ops[:at]) and tuple(order[i:i + rest]) == ops[at:]:
                gain = sv[p] + (run_save[p, i + rest] if rest < length else 0.0)
                if gain > best:
                    best = gain
        return new, run_sum[p, i] - best

    @cached_property
    def fusion_potential(self) -> tuple[np.ndarray, np.ndarray]:
        """``(num_ops, num_pus)`` twice: the largest saving of a profiled group that starts
        at the op (what a new partition opened with it can fuse), and of one that
        contains it but starts earlier (what joining the partition holding its
        predecessors can keep fusing)."""
        pr = self.problem
        start = np.zeros((pr.num_ops, pr.num_pus))
        through = np.zeros((pr.num_ops, pr.num_pus))
        first, later = self._groups_by_op
        for v, items in first.items():
            for _, sv in items:
                start[v] = np.maximum(start[v], sv)
        for v, items in later.items():
            for _, sv in items:
                through[v] = np.maximum(through[v], sv)
        return start, through


def pu_features(ctx: ProblemContext, state: ScheduleState, max_pus: int) -> np.ndarray:
    """``(max_pus, len(PU))`` float32: static columns plus when each PU is free
    (relative to the partial makespan) and its open partition."""
    out = np.zeros((max_pus, len(PU)), dtype=np.float32)
    p = state.num_pus
    out[:p, :PU_STATIC] = ctx.pu_static
    m, tau = state.makespan, ctx.tau
    for q in range(p):
        k = state.open[q]
        free = state.part_end[k] if k >= 0 else 0.0
        out[q, PU_STATIC] = slog((free - m) / tau)
        out[q, PU_STATIC + 1] = math.log1p(len(state.parts[k])) / 3.0 if k >= 0 else 0.0
        out[q, PU_STATIC + 2] = float(state.joinable(q))
    return out


def action_features(ctx: ProblemContext, state: ScheduleState, ops: list[int], masks: np.ndarray,
                    max_pus: int) -> np.ndarray:
    """``(len(ops) * 2 * max_pus, len(ACTION))`` float32: row ``i * 2 * max_pus + 2 * pu +
    join`` describes putting ``ops[i]`` on ``pu`` (see module docstring); zero rows for
    masked actions.

    The regret columns compare each action with the best allowed action of the *same*
    op (what a policy that decided one given op at a time learned them as); the
    absolute columns (end, partial makespan after the action, idle time, work) compare
    the ready ops with each other.

    Args:
        ops: the candidate ops (ready), e.g. :meth:`ScheduleState.ready_ops`.
        masks: ``(len(ops), num_pus, 2)`` bool, their allowed actions.
    """
    width = 2 * max_pus
    out = np.zeros((len(ops) * width, len(ACTION)), dtype=np.float32)
    cands = {}
    for i, v in enumerate(ops):
        for q in range(state.num_pus):
            for b in (0, 1):
                if masks[i, q, b]:
                    cands[(i, q, b)] = state.evaluate(q, bool(b), v)
    if not cands:
        return out
    tau, m = ctx.tau, state.makespan
    run_len, run_slow = ctx.lookahead
    pot_start, pot_through = ctx.fusion_potential
    min_m: dict[int, float] = {}
    min_e: dict[int, float] = {}
    for (i, _, _), c in cands.items():
        min_m[i] = min(c.makespan_us, min_m.get(i, math.inf))
        min_e[i] = min(c.end_us, min_e.get(i, math.inf))
    costs = {(i, q): ctx.dp_costs(state, q, ops[i]) for i, q, _ in cands}
    dp = {a: costs[a[:2]][a[2]] for a in cands}
    dp_pu: dict[tuple[int, int], float] = {}
    for (i, q, _), x in dp.items():
        dp_pu[(i, q)] = min(x, dp_pu.get((i, q), math.inf))
    rate = {a: dp[a] / max(int(ctx.run_length[ops[a[0]], a[1]]), 1) for a in cands}
    finish = {a: cands[a].end_us - cands[a].work_delta_us + dp[a] for a in cands}
    min_rate: dict[int, float] = {}
    min_finish: dict[int, float] = {}
    for a in cands:
        min_rate[a[0]] = min(rate[a], min_rate.get(a[0], math.inf))
        min_finish[a[0]] = min(finish[a], min_finish.get(a[0], math.inf))
    devices = ctx.problem.platform.devices
    host = ctx.problem.host
    for (i, q, b), c in cands.items():
        v = ops[i]
        best_t = ctx.best_time[v]
        k = state.open[q]
        free = state.part_end[k] if k >= 0 else 0.0
        t = ctx.sim.op_time[v][q]
        a = (i, q, b)
        out[i * width + 2 * q + b] = (
            1.0, float(b), slog((c.end_us - m) / tau), slog((c.makespan_us - m) / tau),
            slog((c.makespan_us - min_m[i]) / tau), slog((c.end_us - min_e[i]) / tau), slog(c.idle_us / tau),
            slog(c.work_delta_us / tau), slog(c.group_saving_us / tau),
            slog((max(pot_start[v, q], pot_through[v, q]) if b else pot_start[v, q]) / tau),
            min(math.log(t / best_t), 5.0) if best_t > 0 else 0.0,
            float(q == host), float(devices[q].kind == "npu"),
            math.log1p(run_len[v, q]) / 3.0, float(run_slow[v, q]),
            math.log1p(len(state.parts[k])) / 3.0 if k >= 0 else 0.0, slog((free - m) / tau),
            slog((dp[a] - dp_pu[(i, q)]) / tau), slog((rate[a] - min_rate[i]) / tau),
            slog((finish[a] - min_finish[i]) / tau),
        )
    return out


def global_features(ctx: ProblemContext, state: ScheduleState) -> np.ndarray:
    """``(len(GLOBAL),)`` float32."""
    n = ctx.problem.num_ops
    m = state.makespan
    return np.array(
        [
            state.step_index / n, m / ctx.ref_makespan, slog(m / ctx.tau) / 5.0, math.log(n) / 7.0,
            state.num_pus / MAX_PUS, state.num_partitions / n, slog(ctx.ref_makespan / ctx.tau) / 5.0,
        ],
        dtype=np.float32,
    )
