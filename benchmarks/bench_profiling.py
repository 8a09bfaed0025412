"""Benchmark of the profiler: cold and warm profiling time, measurement spread, and how
much a group measured as one ORT session differs from the sum of its ops.

Run: ``python benchmarks/bench_profiling.py [--models squeezenet resnet50] [--platform cpu-npu]``

* cold: an empty cache (a temporary directory): every distinct op and group measured.
* warm: the same again with a fresh cache object on the same directory: all from disk.
  Targets (issue 4): SqueezeNet cold < 60 s, warm < 1 s, on 2 cores.
* spread: median robust coefficient of variation of the CPU measurements.
* group / sum: for every profiled chain group, its measured CPU time over the sum of
  its ops' measured times (< 1: fusion and fewer tensor round trips pay off).

Times are wall clock on a possibly shared machine; the CPU measurements themselves use
thread CPU time at 1 thread, so load from other jobs mostly lengthens the cold run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partitiontuner.platform import load_platform
from partitiontuner.profiling.build import build_profiles
from partitiontuner.profiling.cache import ProfileCache
from partitiontuner.profiling.cpu_profiler import CpuProfiler
from partitiontuner.zoo import load_model

COLD_TARGET_S = 60.0
WARM_TARGET_S = 1.0


@dataclass
class Args:
    """Benchmark options."""

    models: tuple[str, ...] = ("squeezenet", "resnet50")
    """zoo models to profile"""
    platform: str = "cpu-npu"
    """platform preset (its CPU PUs are measured, its NPUs emulated)"""
    out: str | None = None
    """also write the figures as JSON here"""


def bench_model(model: str, platform_name: str) -> dict:
    graph = load_model(model)
    platform = load_platform(platform_name)
    cpu = next(j for j, d in enumerate(platform.devices) if d.kind == "cpu")
    with tempfile.TemporaryDirectory(prefix="pt-bench-cache-") as tmp:
        profilers: dict[int, CpuProfiler] = {}
        t0 = time.perf_counter()
        prof = build_profiles(graph, platform, progress=False, cache=ProfileCache(tmp), profilers=profilers)
        cold = time.perf_counter() - t0
        sessions = sum(p.sessions_created for p in profilers.values())
        t0 = time.perf_counter()
        warm_cache = ProfileCache(tmp)
        build_profiles(graph, platform, progress=False, cache=warm_cache)
        warm = time.perf_counter() - t0
        entries = len(list(Path(tmp).rglob("*.json")))
    lat = prof.op_latency_us[:, cpu]
    ratios = []
    for key, g in prof.groups.items():
        members = lat[list(key)].sum()
        if np.isfinite(g[cpu]) and members > 0:
            ratios.append(g[cpu] / members)
    r = np.array(ratios)
    gspread = np.array([s[cpu] for s in prof.group_spread.values()])
    return {
        "model": model, "ops": graph.num_ops, "groups": len(prof.groups), "units_measured": entries,
        "sessions": sessions, "cold_s": cold, "warm_s": warm, "warm_hits": warm_cache.hits,
        "cv_ops_median": float(np.nanmedian(prof.op_spread[:, cpu])),
        "cv_groups_median": float(np.nanmedian(gspread)) if len(gspread) else float("nan"),
        "group_over_sum_p10": float(np.percentile(r, 10)), "group_over_sum_median": float(np.median(r)),
        "group_over_sum_p90": float(np.percentile(r, 90)), "groups_faster_than_sum": float((r < 1).mean()),
        "cpu_sum_of_ops_us": float(np.nansum(lat)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(Args.models))
    p.add_argument("--platform", default=Args.platform)
    p.add_argument("--out", default=None)
    ns = p.parse_args(argv)
    args = Args(models=tuple(ns.models), platform=ns.platform, out=ns.out)
    rows = []
    for model in args.models:
        row = bench_model(model, args.platform)
        rows.append(row)
        print(f"{model}: {row['ops']} ops + {row['groups']} groups -> {row['units_measured']} distinct units, "
              f"{row['sessions']} ORT sessions", file=sys.stderr)
    print(f"\nProfiling benchmark ({args.platform}; targets: cold < {COLD_TARGET_S:.0f} s, warm < {WARM_TARGET_S:.0f} s)")
    head = f"{'model':<11} {'cold s':>8} {'/target':>8} {'warm s':>8} {'/target':>8} {'cold/warm':>10} " \
           f"{'CV ops':>7} {'CV grp':>7} {'grp/sum p10':>11} {'median':>7} {'p90':>6} {'<1':>5}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<11} {r['cold_s']:>8.2f} {r['cold_s'] / COLD_TARGET_S:>8.3f} {r['warm_s']:>8.3f} "
              f"{r['warm_s'] / WARM_TARGET_S:>8.3f} {r['cold_s'] / r['warm_s']:>10.0f} "
              f"{r['cv_ops_median']:>7.3f} {r['cv_groups_median']:>7.3f} {r['group_over_sum_p10']:>11.3f} "
              f"{r['group_over_sum_median']:>7.3f} {r['group_over_sum_p90']:>6.3f} {r['groups_faster_than_sum']:>5.0%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"platform": args.platform, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
