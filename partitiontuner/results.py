"""What each command computes, as records with ``to_dict()``: the ``--json`` shapes.

The CLI builds one of these, then either prints ``to_dict()`` as one JSON object or
hands the record to :mod:`partitiontuner.render` for a table. Keeping the numbers here
and the layout there means the JSON keys documented in the README cannot drift from
what the tables show. (The executor's, exporter's and evaluator's results carry their
own ``to_dict()``: :class:`~partitiontuner.execute.ExecutionResult`,
:class:`~partitiontuner.export.ExportResult`,
:class:`~partitiontuner.evaluate.Evaluation`.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from partitiontuner.branches import GraphStructure, analyse
from partitiontuner.calibrate import cost_model_of
from partitiontuner.graph import OpGraph
from partitiontuner.plan import Plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.report import PlacementReport, check_strict, placement_report
from partitiontuner.simulate import SimResult, simulate

# ---------------------------------------------------------------------------------
# models / graph


@dataclass(frozen=True)
class ModelInfo:
    """One built-in model, as ``models`` lists it."""

    name: str
    description: str
    paper: bool
    num_ops: int
    input_shape: tuple[int, ...]
    gflops: float
    rl_split: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape)}


def list_models() -> list[ModelInfo]:
    """Every zoo model with its size (loads each graph once)."""
    from partitiontuner.zoo import UNSEEN_MODELS, ZOO, load_model

    rows = []
    for name, m in ZOO.items():
        g = load_model(name)
        rows.append(ModelInfo(name, m.description, bool(m.paper), g.num_ops, tuple(g.inputs[0].shape),
                              round(g.total_flops / 1e9, 3), "unseen" if name in UNSEEN_MODELS else "train"))
    return rows


@dataclass(frozen=True)
class GraphSummary:
    """A graph and its branch structure (``graph`` command)."""

    graph: OpGraph
    structure: GraphStructure

    @classmethod
    def of(cls, graph: OpGraph) -> GraphSummary:
        return cls(graph, analyse(graph))

    def to_dict(self) -> dict[str, Any]:
        g, s = self.graph, self.structure
        names = [n.name for n in g.nodes]
        return {
            "model": g.name, "hash": g.content_hash, "num_ops": g.num_ops,
            "gflops": round(g.total_flops / 1e9, 6), "num_edges": len(g.edges),
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.outputs],
            "num_blocks": len(s.blocks), "max_block_ops": s.max_block_ops,
            "max_parallel_width": s.max_parallel_width,
            "cut_vertices": [names[c] for c in s.cut_vertices],
            "blocks": [{"ops": [names[v] for v in b.ops], "width": b.width,
                        "branches": [[names[v] for v in br] for br in b.branches]} for b in s.blocks],
            "sequential_branches": [[names[v] for v in br] for br in s.sequential_branches],
            "ops": [{"name": n.name, "op_type": n.op_type,
                     "output_shape": list(n.output_shapes[0]) if n.output_shapes else [],
                     "flops": n.flops, "bytes_read": n.bytes_read, "bytes_written": n.bytes_written,
                     "weight_bytes": n.weight_bytes} for n in g.nodes],
        }


# ---------------------------------------------------------------------------------
# plan / simulate


@dataclass(frozen=True)
class PlanResult:
    """A plan with its simulated timing and placement report (``plan`` command).

    Attributes:
        problem, plan, sim, report: the plan, its simulation and why each op runs where.
        planning_time_s: wall time of ``planner.plan``.
        warnings: one-line warnings (ops that fell back to the CPU).
        out: where the plan file was written, if it was.
        files: every file written (plan, Gantt chart, DOT), by kind.
    """

    problem: Problem
    plan: Plan
    sim: SimResult
    report: PlacementReport
    planning_time_s: float
    warnings: tuple[str, ...] = ()
    out: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compute(cls, problem: Problem, planner: Any) -> PlanResult:
        """Plan, validate, simulate and explain; ``--strict`` fallbacks raise.

        Raises:
            InfeasiblePlanError: the plan is invalid, or ``--strict`` and an op fell back.
        """
        t0 = time.perf_counter()
        plan = planner.plan(problem)
        return cls.of_plan(problem, plan, time.perf_counter() - t0)

    @classmethod
    def of_plan(cls, problem: Problem, plan: Plan, planning_time: float) -> PlanResult:
        """Validate, simulate and explain a plan made elsewhere (e.g. by ``--tune``)."""
        validate_plan(problem, plan)
        sim = simulate(problem, plan)
        report = placement_report(problem, plan, sim)
        if problem.constraints.strict:
            check_strict(problem, report)
        warning = report.fallback_summary()
        return cls(problem, plan, sim, report, planning_time, (warning,) if warning else ())

    def to_dict(self) -> dict[str, Any]:
        rep = self.report.to_dict()
        return {
            "model": self.problem.graph.name, "platform": self.problem.platform.name, "method": self.plan.method,
            "makespan_us": round(self.sim.makespan_us, 3), "planning_time_s": round(self.planning_time_s, 4),
            "num_partitions": self.plan.num_partitions, "profiles": self.problem.profiles.source,
            "cost_model": cost_model_of(self.problem),
            "partitions": [{"id": p["id"], "device": p["device"], "ops": p["ops"], "start_us": p["start_us"],
                            "end_us": p["end_us"], "parallel_with": p["parallel_with"]} for p in rep["partitions"]],
            "placement": rep["placement"],
            "info": dict(self.plan.info),
            "warnings": list(self.warnings),
            "out": self.out,
            "files": dict(self.files),
        }


@dataclass(frozen=True)
class SimulationResult:
    """A saved plan's simulated timing (``simulate`` command).

    Attributes:
        platform_source: ``plan`` (the platform saved in the plan file) or ``option``
            (``--platform``).
    """

    problem: Problem
    plan: Plan
    sim: SimResult
    platform_source: str = "option"
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compute(cls, problem: Problem, plan: Plan, platform_source: str = "option") -> SimulationResult:
        return cls(problem, plan, simulate(problem, plan), platform_source)

    def report(self) -> PlacementReport:
        return placement_report(self.problem, self.plan, self.sim)

    def to_dict(self) -> dict[str, Any]:
        g, sim = self.problem.graph, self.sim
        return {
            "model": g.name, "platform": self.problem.platform.name, "platform_source": self.platform_source,
            "method": self.plan.method, "makespan_us": round(sim.makespan_us, 3),
            "num_partitions": self.plan.num_partitions, "profiles": self.problem.profiles.source,
            "cost_model": cost_model_of(self.problem),
            "partitions": [{"id": t.index, "device": t.device,
                            "ops": [g.nodes[v].name for v in self.plan.partitions[t.index].ops],
                            "start_us": round(t.start_us, 3), "end_us": round(t.end_us, 3),
                            "work_us": round(t.work_us, 3), "overhead_us": round(t.overhead_us, 3)}
                           for t in sim.partitions],
            "transfers": [{"tensor": x.tensor, "size_bytes": x.size_bytes, "src": x.src_device, "dst": x.dst_device,
                           "src_partition": x.src_partition, "dst_partition": x.dst_partition,
                           "start_us": round(x.start_us, 3), "end_us": round(x.end_us, 3)} for x in sim.transfers],
            "files": dict(self.files),
        }


# ---------------------------------------------------------------------------------
# profile


def _latencies(pus: Sequence[str], values: Any) -> dict[str, float | None]:
    return {pu: None if math.isnan(v) else round(float(v), 3) for pu, v in zip(pus, values, strict=True)}


@dataclass(frozen=True)
class ProfileTable:
    """Every op's and op group's latency on every PU (``profile`` command)."""

    problem: Problem
    export: str | None = None

    @property
    def pus(self) -> tuple[str, ...]:
        return self.problem.pus

    def ops(self) -> list[dict[str, Any]]:
        prof, pus = self.problem.profiles, self.pus
        out = []
        for n in self.problem.graph.nodes:
            lat = _latencies(pus, prof.op_latency_us[n.index])
            finite = [(v, pu) for pu, v in lat.items() if v is not None]
            out.append({"name": n.name, "op_type": n.op_type, "latency_us": lat,
                        "spread": _latencies(pus, prof.op_spread[n.index]),
                        "fastest": min(finite)[1] if finite else ""})
        return out

    def groups(self) -> list[dict[str, Any]]:
        prof, nodes = self.problem.profiles, self.problem.graph.nodes
        out = []
        for key, values in sorted(prof.groups.items()):
            members = prof.op_latency_us[list(key)].sum(axis=0)
            out.append({"ops": [nodes[i].name for i in key], "op_types": [nodes[i].op_type for i in key],
                        "latency_us": _latencies(self.pus, values), "sum_us": _latencies(self.pus, members)})
        return out

    def totals_us(self) -> dict[str, float]:
        lat = self.problem.profiles.op_latency_us
        return {pu: float(np.nansum(lat[:, j])) for j, pu in enumerate(self.pus)}

    def to_dict(self) -> dict[str, Any]:
        prof = self.problem.profiles
        return {"model": self.problem.graph.name, "platform": self.problem.platform.name, "pus": list(self.pus),
                "source": prof.source, "host": prof.host, "ops": self.ops(), "groups": self.groups(),
                "export": self.export}
