"""HEFT (Topcuoglu, Hariri and Wu, IEEE TPDS 2002) over ops, then partitions.

Durations and transfers are the simulator's primitives: an op scheduled alone lasts
its profiled time plus the PU's dispatch overhead; a tensor crossing PUs takes the
link's latency plus bytes over bandwidth. HEFT itself sees single ops only; the
groupings below are simulated, so a partition gets the fusion of the profiled groups
inside it. Upward rank uses the mean duration over the
PUs allowed for the op and the mean transfer over all ordered pairs of distinct PUs.
Ops are taken by decreasing rank (ties: lower index) and each goes to the allowed PU
where it finishes earliest, inserted into an idle gap when one is long enough. Where
this module chose beyond the classic algorithm:

* graph inputs start on the host and an op that writes a graph output is charged the
  transfer back to the host when its PU is compared (the simulator charges both);
* HEFT schedules single ops but plans are partitions: three groupings of HEFT's
  placement are built and the simulator picks the best: maximal same-PU runs (the
  issue's definition), runs of ops that are consecutive on their PU in HEFT's
  schedule, and every op alone. Each is sequenced by HEFT's start times (Kahn's
  algorithm on the partition graph, earliest start first, so the order stays valid).
"""

from __future__ import annotations

import bisect

import numpy as np

from partitiontuner.agents.base import Planner
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.repair import finish_plan
from partitiontuner.runs import Parts, maximal_runs, order_partitions
from partitiontuner.simulate import Simulator


class HeftPlanner(Planner):
    name = "heft"

    def plan(self, problem: Problem) -> Plan:
        sim = Simulator(problem)
        g = problem.graph
        assign, start, estimate = heft_schedule(problem, sim)
        prev_on_pu = [-1] * g.num_ops
        for p in range(problem.num_pus):
            mine = sorted((start[v], v) for v in range(g.num_ops) if assign[v] == p)
            for (_, a), (_, b) in zip(mine, mine[1:], strict=False):
                prev_on_pu[b] = a

        def by_start(parts: Parts) -> Parts:
            return order_partitions(g, parts, [min(start[v] for v in ops) for ops, _ in parts])

        candidates = {
            "maximal-runs": by_start(maximal_runs(g, assign)),
            "consecutive-runs": by_start(maximal_runs(g, assign, lambda v, u: prev_on_pu[v] == u)),
            "single-ops": by_start([([v], assign[v]) for v in range(g.num_ops)]),
        }
        scored = {k: sim.makespan([o for o, _ in parts], [p for _, p in parts]) for k, parts in candidates.items()}
        best = min(scored, key=lambda k: (scored[k], list(candidates).index(k)))
        info = {"heft_estimate_us": estimate, "grouping": best}
        return finish_plan(problem, candidates[best], self.name, info, sim)


def heft_schedule(problem: Problem, sim: Simulator) -> tuple[list[int], list[float], float]:
    """HEFT's placement, start times and its own makespan estimate."""
    g = problem.graph
    n, num_pus, host = g.num_ops, problem.num_pus, problem.host
    allowed = [np.flatnonzero(row).tolist() for row in problem.allowed]
    ot, oh = sim.op_time, sim.overhead
    mean_w = [sum(ot[v][p] + oh[p] for p in allowed[v]) / len(allowed[v]) for v in range(n)]
    pairs = [(p, q) for p in range(num_pus) for q in range(num_pus) if p != q]
    mean_lat = sum(sim.lat[p][q] for p, q in pairs) / len(pairs) if pairs else 0.0
    mean_upb = sum(sim.upb[p][q] for p, q in pairs) / len(pairs) if pairs else 0.0
    rank = [0.0] * n
    for v in range(n - 1, -1, -1):
        tail = 0.0
        for e in g.out_edges[v]:
            t = mean_lat + e.size_bytes * mean_upb + rank[e.dst]
            if t > tail:
                tail = t
        rank[v] = mean_w[v] + tail
    order = sorted(range(n), key=lambda v: (-rank[v], v))
    starts: list[list[float]] = [[] for _ in range(num_pus)]  # per PU, sorted slots
    ends: list[list[float]] = [[] for _ in range(num_pus)]
    assign = [-1] * n
    aft = [0.0] * n
    ast = [0.0] * n
    out_bytes = sim.output_bytes
    for v in order:
        best = None
        for p in allowed[v]:
            ready = 0.0
            for u, size in sim.in_edges[v]:
                a = aft[u] + sim.transfer(assign[u], p, size)
                if a > ready:
                    ready = a
            if sim.reads_input[v]:
                ready = max(ready, sim.transfer(host, p, sim.input_bytes[v]))
            dur = ot[v][p] + oh[p]
            s = _earliest_slot(starts[p], ends[p], ready, dur)
            finish = s + dur
            score = finish + (sim.transfer(p, host, out_bytes[v]) if out_bytes[v] >= 0 else 0.0)
            if best is None or score < best[0]:
                best = (score, p, s, finish)
        _, p, s, finish = best
        k = bisect.bisect_left(starts[p], s)
        starts[p].insert(k, s)
        ends[p].insert(k, finish)
        assign[v], ast[v], aft[v] = p, s, finish
    estimate = max(aft) if n else 0.0
    for v in range(n):
        if out_bytes[v] >= 0:
            estimate = max(estimate, aft[v] + sim.transfer(assign[v], host, out_bytes[v]))
    return assign, ast, estimate


def _earliest_slot(starts: list[float], ends: list[float], ready: float, dur: float) -> float:
    """Earliest start >= ready of an idle gap of length dur on a PU (insertion policy)."""
    k = bisect.bisect_right(ends, ready)  # slots ending after ready
    s = ready
    while k < len(starts):
        if s + dur <= starts[k]:
            return s
        if ends[k] > s:
            s = ends[k]
        k += 1
    return s
