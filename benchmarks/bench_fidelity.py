"""Does the cost model tell the truth? Measured vs simulated makespan of real runs.

For every zoo model and four plans (``cpu-only``, ``npu-first`` = the paper's static
type-based baseline, and two mixed plans: ``greedy``, the paper's profiling-based
baseline, and ``partitiontuner``, the paper's algorithm), run the plan with :func:`partitiontuner.execute.run_plan` (one thread per
PU, CPU partitions in ONNX Runtime, NPU partitions emulated) and compare the median
measured makespan with the simulator's. Target (issue 5): within 10 %.

The simulator is fed measured profiles of this machine
(:func:`partitiontuner.profiling.build.build_profiles`, cached on disk, so only the
first run profiles). CPU partitions are real, so their measured time is where the
cost model can be wrong (per-op profiles summed vs one fused session, cold caches after
a PU switch, the per-run overhead); NPU partitions take the emulator's time by
construction, so on them only the executor's waiting precision and the transfers'
bookkeeping are tested. The machine must be quiet: other processes on its cores show
up directly as measured time.

Run::

    python benchmarks/bench_fidelity.py                          # every zoo model
    python benchmarks/bench_fidelity.py --models squeezenet resnet18 --repeat 20
    python benchmarks/bench_fidelity.py --profiles fixture --out fidelity.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as host
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import PartitionTunerError
from partitiontuner.execute import SPIN_MARGIN_S, ExecutionResult, measure_wait_precision, run_plan
from partitiontuner.plan import Plan, make_plan
from partitiontuner.problem import Problem
from partitiontuner.workflow import ProblemSpec, load_problem
from partitiontuner.zoo import ZOO

TARGET = 0.10


@dataclass(frozen=True)
class Args:
    """Benchmark settings.

    Attributes:
        models: zoo models to run (default: all).
        methods: planners whose plans are run.
        platform: platform preset or YAML.
        profiles: ``measure`` (this machine, cached), ``fixture`` or a profile JSON.
        repeat: timed runs per plan (median reported).
        warmup: untimed runs first.
        out: also write the rows as JSON here.
    """

    models: tuple[str, ...] = tuple(ZOO)
    methods: tuple[str, ...] = ("cpu-only", "npu-first", "greedy", "partitiontuner")
    platform: str = "cpu-npu"
    profiles: str = "measure"
    repeat: int = 10
    warmup: int = 2
    out: str | None = None


def parse_args(argv: list[str] | None = None) -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(d.models), choices=list(ZOO), metavar="MODEL")
    p.add_argument("--methods", nargs="+", default=list(d.methods), metavar="METHOD")
    p.add_argument("--platform", default=d.platform)
    p.add_argument("--profiles", default=d.profiles)
    p.add_argument("--repeat", type=int, default=d.repeat)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--out", default=None, help="write the rows as JSON")
    a = p.parse_args(argv)
    return Args(tuple(a.models), tuple(a.methods), a.platform, a.profiles, a.repeat, a.warmup, a.out)


def _runs(problem: Problem, pu_of: list[int]) -> list[tuple[list[int], int]]:
    """Maximal runs of consecutive ops (topological order, hence convex) on one PU."""
    parts: list[tuple[list[int], int]] = []
    for v, pu in enumerate(pu_of):
        if parts and parts[-1][1] == pu:
            parts[-1][0].append(v)
        else:
            parts.append(([v], pu))
    return parts


def fallback_plan(problem: Problem, method: str) -> Plan:
    """Plans built here when the planner registry is not available."""
    host_pu = problem.host
    if method == "cpu-only":
        return make_plan(problem, [(list(range(problem.num_ops)), host_pu)], "cpu-only")
    if method == "npu-first":
        npus = [j for j, d in enumerate(problem.platform.devices) if d.kind == "npu"]
        pu_of = [next((j for j in npus if problem.allowed[v, j]), host_pu) for v in range(problem.num_ops)]
        return make_plan(problem, _runs(problem, pu_of), "npu-first")
    pu_of = [int(np.argmin(np.where(problem.allowed[v], problem.op_time[v], np.inf))) for v in range(problem.num_ops)]
    return make_plan(problem, _runs(problem, pu_of), f"{method}(fastest-pu fallback)")


def make(problem: Problem, method: str) -> Plan:
    try:
        from partitiontuner.agents.registry import make_planner
    except ImportError:
        return fallback_plan(problem, method)
    return make_planner(method).plan(problem)


def busy_ratios(res: ExecutionResult) -> dict[str, float]:
    """Per PU: summed measured partition time (median over runs) over summed simulated
    time. A CPU ratio near the makespan ratio says the gap is in the CPU work (profiles
    or machine load), not in dispatching or transfers."""
    meas: dict[str, float] = {}
    sim: dict[str, float] = {}
    for q in res.partitions:
        meas[q.device] = meas.get(q.device, 0.0) + q.measured_us_median
        sim[q.device] = sim.get(q.device, 0.0) + q.simulated_us
    return {k: meas[k] / sim[k] for k in meas if sim[k] > 0}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"host: {host.processor() or host.machine()}, {os.cpu_count()} cores, load average {load:.2f}, "
          f"python {host.python_version()}")
    w = measure_wait_precision()
    print(f"wait_until precision ({w.samples} waits of {w.duration_us:.0f} us, spin margin {SPIN_MARGIN_S * 1e6:.0f} us): "
          f"late median {w.median_late_us:.1f} us, p90 {w.p90_late_us:.1f} us, max {w.max_late_us:.1f} us; "
          f"CPU busy {100 * w.cpu_fraction:.0f}% of the wait; time.sleep alone: {w.sleep_only_median_late_us:.1f} us late")
    print(f"platform {args.platform}, profiles {args.profiles}, {args.repeat} timed runs (+{args.warmup} warm-up) per plan; "
          f"target |measured / simulated - 1| <= {TARGET:.0%}\n")
    head = (f"{'model':<13} {'plan':<16} {'parts':>5} {'simulated us':>13} {'measured us':>12} {'ratio':>6} {'ok':>3} "
            f"{'outputs':>8}  busy meas./sim. per PU")
    print(head)
    print("-" * len(head))
    rows = []
    for model in args.models:
        try:
            problem = load_problem(ProblemSpec(model=model, platform=args.platform, profiles=args.profiles, progress=False))
        except PartitionTunerError as exc:
            print(f"{model:<13} skipped: {exc}")
            continue
        for method in args.methods:
            t = time.perf_counter()
            try:
                plan = make(problem, method)
                res = run_plan(problem, plan, repeat=args.repeat, warmup=args.warmup)
            except PartitionTunerError as exc:
                print(f"{model:<13} {method:<16} failed: {exc}")
                continue
            ok = abs(res.ratio - 1.0) <= TARGET
            busy = busy_ratios(res)
            rows.append({"model": model, "method": plan.method, "partitions": plan.num_partitions,
                         "simulated_us": round(res.simulated_makespan_us, 1), "measured_us": round(res.measured_makespan_us, 1),
                         "ratio": round(res.ratio, 4), "within_target": ok, "outputs_match": res.outputs_match,
                         "runs_us": [round(x, 1) for x in res.makespan_runs_us], "emulated_pus": list(res.emulated_pus),
                         "busy_ratio": {k: round(v, 4) for k, v in busy.items()}, "seconds": round(time.perf_counter() - t, 1)})
            print(f"{model:<13} {plan.method[:16]:<16} {plan.num_partitions:>5} {res.simulated_makespan_us:>13.1f} "
                  f"{res.measured_makespan_us:>12.1f} {res.ratio:>6.3f} {'yes' if ok else 'NO':>3} "
                  f"{'match' if res.outputs_match else 'DIFFER':>8}  "
                  + " ".join(f"{k} {v:.2f}" for k, v in busy.items()))
            sys.stdout.flush()
    if rows:
        ratios = [r["ratio"] for r in rows]
        within = sum(r["within_target"] for r in rows)
        print(f"\n{within}/{len(rows)} plans within {TARGET:.0%}; ratio geometric mean "
              f"{math.exp(statistics.fmean(math.log(x) for x in ratios)):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; "
              f"outputs match in {sum(r['outputs_match'] for r in rows)}/{len(rows)}")
        for method in dict.fromkeys(r["method"] for r in rows):
            rs = [r["ratio"] for r in rows if r["method"] == method]
            print(f"  {method:<16} median ratio {statistics.median(rs):.3f} over {len(rs)} models")
    if args.out:
        write_text_atomic(args.out, json.dumps({"load_average": load, "wait_precision": w.__dict__, "args": args.__dict__,
                                                "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
