"""Where the time of a real run goes: a Chrome / Perfetto trace of an executed plan.

The trace (JSON "trace events", open it in https://ui.perfetto.dev or
``chrome://tracing``) has two processes: **measured**, the median timed run of
:func:`partitiontuner.execute.run_plan`, and **simulated**, the cost model's timing of
the same plan. In each, one track (``tid``) per PU worker thread holds a complete
event ("X") per partition and an ``idle`` event per gap between them; one more track
per link direction holds each hand-off, from the producer's end to the time the
receiver may use the tensor. Partition events carry their simulated times (and the
measured ones in the simulated process) as ``args``, so a slow partition or a late
hand-off is one click away.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from partitiontuner.atomic import write_text_atomic
from partitiontuner.execute import ExecutionResult
from partitiontuner.simulate import SimResult

MEASURED_PID, SIMULATED_PID = 1, 2
#: gaps shorter than this (us) are not drawn as idle
MIN_IDLE_US = 1.0


def _meta(pid: int, tid: int | None, key: str, name: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"ph": "M", "pid": pid, "name": key, "args": {"name": name}}
    if tid is not None:
        ev["tid"] = tid
    return ev


def _x(pid: int, tid: int, name: str, cat: str, ts: float, dur: float, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat, "ts": round(ts, 3),
            "dur": round(max(dur, 0.0), 3), "args": args or {}}


def _idle(pid: int, tid: int, spans: list[tuple[float, float]]) -> list[dict[str, Any]]:
    out, t = [], 0.0
    for s, e in sorted(spans):
        if s - t >= MIN_IDLE_US:
            out.append(_x(pid, tid, "idle", "idle", t, s - t))
        t = max(t, e)
    return out


def trace_events(res: ExecutionResult, sim: SimResult, pus: tuple[str, ...]) -> list[dict[str, Any]]:
    """The trace events of one executed plan (see the module docstring)."""
    tid = {pu: k + 1 for k, pu in enumerate(pus)}
    links = sorted({(t.src_device, t.dst_device) for t in res.transfers} | {(t.src_device, t.dst_device) for t in sim.transfers})
    for k, ab in enumerate(links):
        tid[ab] = len(pus) + 1 + k
    ev: list[dict[str, Any]] = [_meta(MEASURED_PID, None, "process_name", f"measured (median of {res.repeat} runs)"),
                                _meta(SIMULATED_PID, None, "process_name", f"simulated ({res.cost_model})")]
    for pid in (MEASURED_PID, SIMULATED_PID):
        ev += [_meta(pid, tid[pu], "thread_name", f"PU {pu}") for pu in pus]
        ev += [_meta(pid, tid[ab], "thread_name", f"link {ab[0]}->{ab[1]}") for ab in links]
    spans: dict[str, list[tuple[float, float]]] = {pu: [] for pu in pus}
    for q in res.partitions:
        label = f"P{q.index}" + (" (emulated)" if q.emulated else "")
        ev.append(_x(MEASURED_PID, tid[q.device], label, "partition", q.measured_start_us, q.measured_us,
                     {"ops": len(q.ops), "first_op": q.ops[0], "last_op": q.ops[-1], "pu_free_us": round(q.measured_free_us, 3),
                      "simulated_start_us": round(q.simulated_start_us, 3), "simulated_us": round(q.simulated_us, 3),
                      "median_us_over_runs": round(q.measured_us_median, 3)}))
        spans[q.device].append((q.measured_start_us, q.measured_end_us))
    for t in res.transfers:
        ev.append(_x(MEASURED_PID, tid[(t.src_device, t.dst_device)], t.tensor, "transfer", t.start_us, t.end_us - t.start_us,
                     {"bytes": t.size_bytes, "src_partition": t.src_partition, "dst_partition": t.dst_partition,
                      "handed_over_us": round(t.handed_us, 3)}))
    for pu in pus:
        ev += _idle(MEASURED_PID, tid[pu], spans[pu])
    sim_spans: dict[str, list[tuple[float, float]]] = {pu: [] for pu in pus}
    for p, q in zip(sim.partitions, res.partitions, strict=True):
        ev.append(_x(SIMULATED_PID, tid[p.device], f"P{p.index}", "partition", p.start_us, p.end_us - p.start_us,
                     {"work_us": round(p.work_us, 3), "overhead_us": round(p.overhead_us, 3),
                      "measured_start_us": round(q.measured_start_us, 3), "measured_us": round(q.measured_us, 3)}))
        sim_spans[p.device].append((p.start_us, p.end_us))
    for x in sim.transfers:
        ev.append(_x(SIMULATED_PID, tid[(x.src_device, x.dst_device)], x.tensor, "transfer", x.start_us, x.end_us - x.start_us,
                     {"bytes": x.size_bytes}))
    for pu in pus:
        ev += _idle(SIMULATED_PID, tid[pu], sim_spans[pu])
    return ev


def write_trace(res: ExecutionResult, sim: SimResult, pus: tuple[str, ...], path: str | Path) -> None:
    """Write the trace of ``res`` (and the simulated ``sim``) as JSON, atomically."""
    doc = {"traceEvents": trace_events(res, sim, pus), "displayTimeUnit": "ms",
           "otherData": {"model": res.model, "platform": res.platform, "method": res.method,
                         "measured_makespan_us": round(res.measured_makespan_us, 3),
                         "simulated_makespan_us": round(res.simulated_makespan_us, 3), "cost_model": res.cost_model}}
    write_text_atomic(path, json.dumps(doc, separators=(",", ":")))


def write_run_pictures(problem: Any, plan: Any, res: ExecutionResult, trace: str | None, gantt: str | None) -> None:
    """``run --trace F`` and ``run --gantt G``: the median run beside the simulation."""
    if not (trace or gantt):
        return
    from partitiontuner.simulate import simulate

    sim = simulate(problem, plan)
    if trace:
        write_trace(res, sim, problem.pus, trace)
    if gantt:
        from partitiontuner.viz import gantt_measured_vs_simulated

        gantt_measured_vs_simulated(problem, plan, sim, res, gantt)
