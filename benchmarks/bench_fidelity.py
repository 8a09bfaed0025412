"""Does the cost model tell the truth? Measured vs simulated makespan of real runs.

For every zoo model, every planner (``cpu-only`` ... ``rl`` and ``oracle``, the oracle
with a time limit), on ``cpu-npu`` and ``cpu-2npu``, with the uncalibrated and the
calibrated cost model (this host's ``partitiontuner calibrate`` result, if any): plan,
then run all of a model's plans on the executor with repeats interleaved across the
plans (:func:`partitiontuner.measure.measure_interleaved`; one thread per PU, CPU
partitions in ONNX Runtime, NPU partitions emulated), and compare the median measured
makespan with the simulator's. Per model it prints whether the plan predicted fastest
is the measured fastest (within ``--tie`` noise) and Kendall's tau of predicted vs
measured order. Targets (issue 14): every plan within 10 % calibrated, geometric mean
0.97-1.03, tau >= 0.8 on googlenet, inception_v2, resnext50, densenet121, shufflenet.

The simulator is fed measured profiles of this machine (cached on disk, so only the
first run profiles). The machine must be quiet: other processes on its cores show up
directly as measured time (the script prints the load average and warns).

Run::

    python benchmarks/bench_fidelity.py                          # everything (long: idle machine)
    python benchmarks/bench_fidelity.py --models squeezenet --platforms cpu-npu --methods greedy npu-first
    python benchmarks/bench_fidelity.py --cost-models uncalibrated --out fidelity.json
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

from partitiontuner.agents.registry import METHODS, make_planner
from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import PartitionTunerError
from partitiontuner.execute import ExecutionResult
from partitiontuner.measure import measure_interleaved
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.stats import kendall_tau, load_warning
from partitiontuner.waiting import SPIN_MARGIN_S, measure_wait_precision
from partitiontuner.workflow import ProblemSpec, load_problem
from partitiontuner.zoo import ZOO

TARGET = 0.10


@dataclass(frozen=True)
class Args:
    """Benchmark settings.

    Attributes:
        models: zoo models to run (default: all).
        methods: planners whose plans are run (default: all, including rl and oracle).
        platforms: platform presets or YAML files.
        cost_models: ``uncalibrated`` and / or ``calibrated`` (skipped with a note when
            this host has no calibration of the platform).
        profiles: ``measure`` (this machine, cached), ``fixture`` or a profile JSON.
        repeat: timed runs per plan (median reported), interleaved across the plans.
        oracle_time_limit: seconds for the oracle per model.
        tie: measured makespans within this fraction count as equally fast.
        out: also write the rows as JSON here.
    """

    models: tuple[str, ...] = tuple(ZOO)
    methods: tuple[str, ...] = METHODS
    platforms: tuple[str, ...] = ("cpu-npu", "cpu-2npu")
    cost_models: tuple[str, ...] = ("uncalibrated", "calibrated")
    profiles: str = "measure"
    repeat: int = 10
    oracle_time_limit: float = 60.0
    tie: float = 0.01
    out: str | None = None


def parse_args(argv: list[str] | None = None) -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(d.models), choices=list(ZOO), metavar="MODEL")
    p.add_argument("--methods", nargs="+", default=list(d.methods), choices=list(METHODS), metavar="METHOD")
    p.add_argument("--platforms", nargs="+", default=list(d.platforms))
    p.add_argument("--cost-models", nargs="+", default=list(d.cost_models), choices=["uncalibrated", "calibrated"])
    p.add_argument("--profiles", default=d.profiles)
    p.add_argument("--repeat", type=int, default=d.repeat)
    p.add_argument("--oracle-time-limit", type=float, default=d.oracle_time_limit)
    p.add_argument("--tie", type=float, default=d.tie)
    p.add_argument("--out", default=None, help="write the rows as JSON")
    a = p.parse_args(argv)
    return Args(tuple(a.models), tuple(a.methods), tuple(a.platforms), tuple(a.cost_models), a.profiles, a.repeat,
                a.oracle_time_limit, a.tie, a.out)


def make(problem: Problem, method: str, oracle_time_limit: float) -> Plan:
    opts = {"time_limit_s": oracle_time_limit} if method == "oracle" else {}
    return make_planner(method, **opts).plan(problem)


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


def agreement(rows: list[dict], tie: float) -> tuple[bool, float]:
    """Is the predicted-fastest plan the measured fastest (within ``tie``)? And Kendall's tau."""
    pred = min(rows, key=lambda r: r["simulated_us"])
    best = min(r["measured_us"] for r in rows)
    tau = kendall_tau([r["simulated_us"] for r in rows], [r["measured_us"] for r in rows])
    return pred["measured_us"] <= best * (1 + tie), tau


def bench_model(args: Args, model: str, platform: str, cost_model: str) -> list[dict]:
    """Plan ``model`` with every method, measure the plans interleaved, print the rows."""
    spec = ProblemSpec(model=model, platform=platform, profiles=args.profiles, progress=False, cost_model=cost_model)
    problem = load_problem(spec)
    plans: list[tuple[str, Plan, float]] = []
    for method in args.methods:
        t = time.perf_counter()
        try:
            plans.append((method, make(problem, method, args.oracle_time_limit), time.perf_counter() - t))
        except PartitionTunerError as exc:
            print(f"{model:<13} {method:<16} failed: {exc}")
    results = measure_interleaved([(problem, plan) for _, plan, _ in plans], repeat=args.repeat)
    rows = []
    for (method, plan, secs), res in zip(plans, results, strict=True):
        ok = abs(res.ratio - 1.0) <= TARGET
        busy = busy_ratios(res)
        rows.append({"model": model, "platform": platform, "cost_model": res.cost_model, "method": method,
                     "partitions": plan.num_partitions, "simulated_us": round(res.simulated_makespan_us, 1),
                     "measured_us": round(res.measured_makespan_us, 1), "p10_us": round(res.measured_p10_us, 1),
                     "p90_us": round(res.measured_p90_us, 1), "ratio": round(res.ratio, 4), "within_target": ok,
                     "outputs_match": res.outputs_match, "planning_s": round(secs, 2),
                     "busy_ratio": {k: round(v, 4) for k, v in busy.items()}, "warnings": list(res.warnings)})
        print(f"{model:<13} {method[:16]:<16} {plan.num_partitions:>5} {res.simulated_makespan_us:>13.1f} "
              f"{res.measured_makespan_us:>12.1f} {res.measured_p10_us:>9.1f} {res.measured_p90_us:>9.1f} "
              f"{res.ratio:>6.3f} {'yes' if ok else 'NO':>3} {'match' if res.outputs_match else 'DIFFER':>7}  "
              + " ".join(f"{k} {v:.2f}" for k, v in busy.items()))
    if len(rows) > 1:
        same, tau = agreement(rows, args.tie)
        print(f"{model:<13} predicted-best is measured-best: {'yes' if same else 'NO'}; Kendall tau {tau:.2f}")
    sys.stdout.flush()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"host: {host.processor() or host.machine()}, {os.cpu_count()} cores, load average {load:.2f}, "
          f"python {host.python_version()}")
    if (w := load_warning()) is not None:
        print(f"WARNING: {w}")
    w = measure_wait_precision()
    print(f"wait_until precision ({w.samples} waits of {w.duration_us:.0f} us, spin margin {SPIN_MARGIN_S * 1e6:.0f} us): "
          f"late median {w.median_late_us:.1f} us, p90 {w.p90_late_us:.1f} us, max {w.max_late_us:.1f} us; "
          f"CPU busy {100 * w.cpu_fraction:.0f}% of the wait; time.sleep alone: {w.sleep_only_median_late_us:.1f} us late")
    rows: list[dict] = []
    summary = []
    for platform in args.platforms:
        for cost_model in args.cost_models:
            print(f"\n== {platform}, {cost_model} cost model, profiles {args.profiles}, {args.repeat} interleaved runs "
                  f"per plan; target |measured / simulated - 1| <= {TARGET:.0%}")
            head = (f"{'model':<13} {'plan':<16} {'parts':>5} {'simulated us':>13} {'measured us':>12} {'p10':>9} {'p90':>9} "
                    f"{'ratio':>6} {'ok':>3} {'outputs':>7}  busy meas./sim. per PU")
            print(head)
            print("-" * len(head))
            block = []
            for model in args.models:
                try:
                    block += bench_model(args, model, platform, cost_model)
                except PartitionTunerError as exc:  # e.g. no calibration of this platform yet
                    print(f"{model:<13} skipped: {exc}")
            if block:
                ratios = [r["ratio"] for r in block]
                per_model = [agreement([r for r in block if r["model"] == m], args.tie)
                             for m in dict.fromkeys(r["model"] for r in block) if sum(r["model"] == m for r in block) > 1]
                line = (f"{platform} {cost_model}: {sum(r['within_target'] for r in block)}/{len(block)} plans within "
                        f"{TARGET:.0%}; ratio geometric mean {math.exp(statistics.fmean(math.log(x) for x in ratios)):.3f} "
                        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); predicted-best = measured-best on "
                        f"{sum(s for s, _ in per_model)}/{len(per_model)} models; outputs match "
                        f"{sum(r['outputs_match'] for r in block)}/{len(block)}")
                print(line)
                summary.append(line)
            rows += block
    print("\n" + "\n".join(summary))
    if args.out:
        write_text_atomic(args.out, json.dumps({"load_average": load, "wait_precision": w.__dict__,
                                                "args": {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in args.__dict__.items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
