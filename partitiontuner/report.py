"""Why every op runs where it runs: the placement report, fallbacks and strict mode.

Reason codes, in order of precedence:

- ``pinned``: a ``--pin`` rule put the op on its PU.
- ``unsupported``: every other PU cannot run the op (the rules that exclude it given).
- ``forbidden``: every other PU is excluded and at least one by a ``--forbid`` rule.
- ``memory``: a faster PU exists but moving the op there would exceed its memory.
- ``cost``: chosen by cost; the detail gives its latency on each PU and
  ``transfer_avoided_us``, the transfer time its placement saves against its fastest
  alternative PU: positive when the placement avoids transfers, negative when it costs
  that much more transfer (and was chosen for its compute time).

Independently of the reason, an op is a *fallback* when it runs on a CPU-kind PU and
no NPU-kind PU of the platform supports it (a ``--pin`` aside). On ``cpu-npu`` such an
op has reason ``unsupported``; on a platform with two CPU-like PUs (``big-little-npu``)
its reason is ``cost`` (it chose between the CPUs), and it is a fallback all the same.
The one-line warning and ``--strict`` are about fallbacks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, memory_use
from partitiontuner.problem import Problem
from partitiontuner.simulate import SimResult

REASONS = ("pinned", "unsupported", "forbidden", "memory", "cost")


@dataclass(frozen=True)
class OpPlacement:
    op: str
    op_type: str
    device: str
    partition: int
    start_us: float
    end_us: float
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    device_kind: str = "cpu"
    #: why no NPU can run the op (e.g. ``Softmax``, ``grouped Conv``) when it fell back
    #: to a CPU-kind PU; ``None`` otherwise
    fallback: str | None = None


@dataclass(frozen=True)
class PartitionSummary:
    index: int
    device: str
    ops: tuple[str, ...]
    start_us: float
    end_us: float
    predicted_us: float
    parallel_with: tuple[int, ...]


@dataclass(frozen=True)
class PlacementReport:
    ops: tuple[OpPlacement, ...]
    partitions: tuple[PartitionSummary, ...]

    def fallbacks(self) -> list[OpPlacement]:
        """Ops on a CPU only because no other PU can run them (none if the plan uses
        no other PU at all: nothing fell back then, everything stayed)."""
        if all(o.device_kind == "cpu" for o in self.ops):
            return []
        return [o for o in self.ops if o.fallback is not None]

    def fallback_summary(self) -> str | None:
        """One line: how many ops fell back to the CPU, and why."""
        fb = self.fallbacks()
        if not fb:
            return None
        why = Counter(o.fallback for o in fb)
        parts = ", ".join(f"{n} x {w}" for w, n in why.most_common())
        one = len(fb) == 1
        return f"{len(fb)} op{'' if one else 's'} fell back to the CPU because no NPU can run {'it' if one else 'them'} ({parts})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "placement": [
                {"op": o.op, "op_type": o.op_type, "device": o.device, "partition": o.partition,
                 "start_us": round(o.start_us, 3), "end_us": round(o.end_us, 3), "reason": o.reason,
                 "detail": o.detail, "fallback": o.fallback}
                for o in self.ops
            ],
            "partitions": [
                {"id": p.index, "device": p.device, "ops": list(p.ops), "start_us": round(p.start_us, 3),
                 "end_us": round(p.end_us, 3), "predicted_us": round(p.predicted_us, 3),
                 "parallel_with": list(p.parallel_with)}
                for p in self.partitions
            ],
        }


def placement_report(problem: Problem, plan: Plan, sim: SimResult) -> PlacementReport:
    g, names = problem.graph, problem.pus
    device_of = [names.index(d) for d in plan.device_of(g.num_ops)]
    owner = {v: i for i, p in enumerate(plan.partitions) for v in p.ops}
    pairs = sim.parallel_pairs()
    parallel: dict[int, list[int]] = {i: [] for i in range(plan.num_partitions)}
    for a, b in pairs:
        parallel[a].append(b)
        parallel[b].append(a)
    # op times inside a partition: laid out in op order after the dispatch overhead,
    # scaled when a fused group is faster than the sum of its ops
    op_span: dict[int, tuple[float, float]] = {}
    for t in sim.partitions:
        p = plan.partitions[t.index]
        j = names.index(p.device)
        raw = [float(problem.op_time[v, j]) for v in p.ops]
        scale = t.work_us / sum(raw) if sum(raw) > 0 else 0.0
        cursor = t.start_us + t.overhead_us
        for v, r in zip(p.ops, raw, strict=True):
            op_span[v] = (cursor, cursor + r * scale)
            cursor += r * scale
    mem = memory_use(problem, plan)
    kinds = [d.kind for d in problem.platform.devices]
    npus = [k for k, kind in enumerate(kinds) if kind == "npu"]
    ops = []
    for v, node in enumerate(g.nodes):
        j = device_of[v]
        reason, detail = _reason(problem, plan, v, j, device_of, mem)
        s, e = op_span[v]
        fell_back = (kinds[j] == "cpu" and npus and reason != "pinned"
                     and all(not problem.supported[v, k] for k in npus))
        ops.append(OpPlacement(node.name, node.op_type, names[j], owner[v], s, e, reason, detail, kinds[j],
                               _short_why(problem, v) if fell_back else None))
    parts = tuple(
        PartitionSummary(t.index, t.device, tuple(g.nodes[v].name for v in plan.partitions[t.index].ops),
                         t.start_us, t.end_us, t.end_us - t.start_us, tuple(sorted(parallel[t.index])))
        for t in sim.partitions
    )
    return PlacementReport(tuple(ops), parts)


def _reason(problem: Problem, plan: Plan, v: int, j: int, device_of: list[int], mem: list[int]) -> tuple[str, dict[str, Any]]:
    names = problem.pus
    others = [k for k in range(problem.num_pus) if k != j]
    excluded = {k: problem.excluded_reason(v, k) for k in others}
    on_cpu = problem.platform.devices[j].kind == "cpu"
    if v in problem.placement.pinned:
        return "pinned", {"rule": problem.placement.pinned[v]}
    if others and all(excluded[k] is not None for k in others):
        rules = {names[k]: excluded[k] for k in others}
        if all(not problem.supported[v, k] for k in others):
            why = _short_why(problem, v)
            return "unsupported", {"excluded_by": rules, "on_cpu": on_cpu, "why": why}
        return "forbidden", {"excluded_by": rules}
    lat = {names[k]: (None if not problem.supported[v, k] else round(float(problem.op_time[v, k]), 3)) for k in range(problem.num_pus)}
    allowed = [k for k in range(problem.num_pus) if problem.allowed[v, k]]
    best = min(allowed, key=lambda k: (problem.op_time[v, k], k))
    if best != j:
        need = problem.weight_bytes[v] + problem.activation_bytes((v,))
        if mem[best] + need > problem.memory_capacity[best]:
            return "memory", {"faster_pu": names[best], "capacity_mib": round(problem.memory_capacity[best] / 2**20, 3),
                              "needed_extra_mib": round(need / 2**20, 3), "latency_us": lat}
    alt = best if best != j else min((k for k in allowed if k != j), key=lambda k: problem.op_time[v, k], default=None)
    avoided = 0.0
    if alt is not None:
        avoided = _transfers(problem, v, alt, device_of) - _transfers(problem, v, j, device_of)
    return "cost", {"latency_us": lat, "alternative": names[alt] if alt is not None else None,
                    "transfer_avoided_us": round(avoided, 3)}


def _transfers(problem: Problem, v: int, pu: int, device_of: list[int]) -> float:
    """Transfer time the op's own tensors would cost if it ran on ``pu``."""
    g = problem.graph
    total = 0.0
    for e in g.in_edges[v]:
        total += problem.transfer_us(device_of[e.src], pu, e.size_bytes)
    for e in g.out_edges[v]:
        total += problem.transfer_us(pu, device_of[e.dst], e.size_bytes)
    for t in g.inputs:
        if v in g.input_consumers[t.name]:
            total += problem.transfer_us(problem.host, pu, t.size_bytes)
    for t in g.outputs:
        if g.output_producers[t.name] == v:
            total += problem.transfer_us(pu, problem.host, t.size_bytes)
    return total


def _short_why(problem: Problem, v: int) -> str:
    node = problem.graph.nodes[v]
    if node.op_type in ("Conv", "ConvTranspose") and int(node.attributes.get("group", 1)) > 1:
        return f"grouped {node.op_type}"
    return node.op_type


def check_strict(problem: Problem, report: PlacementReport) -> None:
    """``--strict``: an op on the CPU only because the NPU cannot run it is an error."""
    fb = report.fallbacks()
    if fb:
        shown = ", ".join(f"{o.op} ({o.op_type})" for o in fb[:8])
        more = f" and {len(fb) - 8} more" if len(fb) > 8 else ""
        raise InfeasiblePlanError(f"--strict: {len(fb)} op(s) fall back to the CPU because no NPU can run them: {shown}{more}")
