"""Serial vs Ray: wall time of an evaluation (models x presets x methods, oracle included).

Runs the same batch of (model, preset, method) jobs serially and with ``--ray`` (a
local Ray instance with ``--workers`` CPUs, or the cluster at ADDRESS), ``--repeat``
times each, alternating, and prints side by side: wall time (min / median / max over
the repeats), the speed-up of the medians, the machine's load average around each run
(the machine may be shared: a busy one slows both, not always equally) and whether
the results are identical (every row's makespan and partition count and every plan,
planning times aside; an oracle that did not prove optimality within its limit may
legitimately differ, and is reported apart).

Then a scaling estimate from the measured task durations (the serial run's planning
time of each job, CPUs as each job declares them): the wall time of the batch on 1, 8
and 64 workers by list scheduling, longest job first (LPT). It ignores Ray's
per-task overhead and counts an oracle job as its declared threads; it is a lower
bound for the wall time on that many CPUs, and the longest job is the floor.

Run::

    python benchmarks/bench_ray.py                                   # zoo x 3 presets, oracle 60 s
    python benchmarks/bench_ray.py --models alexnet squeezenet resnet18 --time-limit 30
    python benchmarks/bench_ray.py --ray HEAD:6379 --repeat 3
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import sys
import time

from partitiontuner.agents.registry import METHODS
from partitiontuner.distributed import LOCAL
from partitiontuner.errors import run_entry_point
from partitiontuner.evaluate import Evaluation, evaluate_platforms
from partitiontuner.zoo import ZOO

PRESETS = ("cpu-npu", "cpu-2npu", "big-little-npu")


def lpt_makespan(jobs: list[tuple[float, int]], workers: int) -> float:
    """Wall time of ``(duration_s, cpus)`` jobs on ``workers`` CPUs, longest first; a job
    takes its CPUs (at most ``workers``) from the earliest-free ones and starts when the
    last of them is free."""
    free = [0.0] * workers
    end = 0.0
    for dur, cpus in sorted(jobs, key=lambda j: -j[0]):
        taken = [heapq.heappop(free) for _ in range(min(cpus, workers))]
        finish = max(taken) + dur
        for _ in taken:
            heapq.heappush(free, finish)
        end = max(end, finish)
    return end


def fingerprint(evs: dict[str, Evaluation]) -> dict[tuple[str, str, str], tuple]:
    """What must match between runs: each job's makespan, partition count and plan,
    and for the oracle whether it proved optimality. (Not the ratios: they follow the
    oracle's makespan, which an unproven solve may change.)"""
    out = {}
    for preset, ev in evs.items():
        for (model, method), (_, plan, sim) in ev.plans.items():
            proven = bool(plan.info.get("proven_optimal", False)) if method == "oracle" else None
            out[(preset, model, method)] = (sim.makespan_us, plan.num_partitions, plan.partitions, proven)
    return out


def run(args: argparse.Namespace, ray_address: str | None) -> tuple[float, float, float, dict[str, Evaluation]]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    evs = evaluate_platforms(args.models, args.methods, args.presets, "fixture", oracle_time_limit_s=args.time_limit,
                             ray_address=ray_address)
    wall = time.perf_counter() - t0
    return wall, load0, os.getloadavg()[0], evs


def spread(xs: list[float]) -> str:
    return f"{min(xs):7.1f} {statistics.median(xs):7.1f} {max(xs):7.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--models", nargs="+", default=list(ZOO))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--time-limit", type=float, default=60.0, help="oracle time limit per job, s (default 60)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each mode, alternating (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    ap.add_argument("--ray", default=LOCAL, metavar="ADDRESS", help="local (default) or a cluster's address")
    args = ap.parse_args()
    import ray  # this benchmark is about Ray; the runs below reuse this one instance

    if args.ray == LOCAL:
        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="warning")
        startup = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        ray.init(address=args.ray, logging_level="warning")
        startup = time.perf_counter() - t0
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    print(f"host: {os.cpu_count()} CPUs; Ray: {cluster_cpus:.0f} CPUs ({args.ray}), started in {startup:.1f} s "
          f"(not in the times below); jobs: {len(args.models)} models x {len(args.presets)} presets x "
          f"{len(args.methods)} methods, oracle limit {args.time_limit:.0f} s", flush=True)
    walls: dict[str, list[float]] = {"serial": [], "ray": []}
    loads: dict[str, list[tuple[float, float]]] = {"serial": [], "ray": []}
    prints: dict[str, dict] = {}
    serial_evs = None
    for i in range(args.repeat):
        for mode, address in (("serial", None), ("ray", args.ray)):
            wall, l0, l1, evs = run(args, address)
            walls[mode].append(wall)
            loads[mode].append((l0, l1))
            prints.setdefault(mode, fingerprint(evs))
            if mode == "serial" and serial_evs is None:
                serial_evs = evs
            print(f"  run {i + 1} {mode:6s} {wall:7.1f} s   load avg {l0:.2f} -> {l1:.2f}", flush=True)
    ray.shutdown()

    print("\n| mode | wall s (min med max) | load avg before -> after (per run) |")
    print("|---|---|---|")
    for mode in ("serial", "ray"):
        print(f"| {mode} | {spread(walls[mode])} | " + ", ".join(f"{a:.2f} -> {b:.2f}" for a, b in loads[mode]) + " |")
    speedup = statistics.median(walls["serial"]) / statistics.median(walls["ray"])
    print(f"\nspeed-up (median serial / median ray): {speedup:.2f}x on {cluster_cpus:.0f} Ray CPUs")

    a, b = prints["serial"], prints["ray"]
    same = [k for k in a if a[k] == b.get(k)]
    differ = [k for k in a if a[k] != b.get(k)]
    unproven = [k for k in differ if k[2] == "oracle" and not (a[k][3] and b.get(k, (0, 0, 0, False))[3])]
    print(f"identical results: {len(same)}/{len(a)} jobs"
          + (f"; differing: {len(differ)} ({len(unproven)} of them unproven oracle solves: "
             + ", ".join("/".join(k) for k in unproven) + ")" if differ else ""))
    real_diff = [k for k in differ if k not in unproven]
    if real_diff:
        print("DIFFERENT deterministic results: " + ", ".join("/".join(k) for k in real_diff))

    from partitiontuner.evaluate import job_cpus, plan_jobs  # durations come with their CPU needs

    durations = []
    for preset, ev in serial_evs.items():
        jobs = plan_jobs(args.models, args.methods, preset, "fixture", oracle_time_limit_s=args.time_limit)
        for job, row in zip(jobs, ev.rows, strict=True):
            durations.append((row.planning_time_s, job_cpus(job)))
    total = sum(d for d, _ in durations)
    longest = max(d for d, _ in durations)
    print(f"\nscaling estimate (LPT over {len(durations)} measured job durations; sum {total:.1f} s, "
          f"longest {longest:.1f} s):")
    print("| workers | estimated wall s | speed-up vs 1 |")
    print("|---|---|---|")
    one = lpt_makespan(durations, 1)
    for w in (1, 2, 8, 64):
        est = lpt_makespan(durations, w)
        print(f"| {w} | {est:.1f} | {one / est:.2f}x |")
    return 0 if not real_diff else 1


if __name__ == "__main__":
    sys.exit(run_entry_point(main, prog="bench_ray"))
