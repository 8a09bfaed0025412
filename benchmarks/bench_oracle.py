"""Benchmark of the oracle: does it prove optimality on the paper's seven DNNs in time?

Target (issue 6): proven optimal on AlexNet, ZFNet, GoogLeNet, ResNet18, ResNet50,
ResNeXt50 and SqueezeNet on ``cpu-npu`` in under 10 minutes in total on 2 cores.
Profiles are the committed fixtures (:func:`partitiontuner.profiling.fixtures.fixture_profiles`),
so the numbers do not depend on this machine's timings; the solve times do (wall
clock, possibly on a shared machine).

Per model: ops, cut vertices, blocks (count, largest = ops strictly between two cut
vertices plus the closing one), CP-SAT block solves and cache hits (equal blocks are
solved once), solve time, proven_optimal, makespan, lower bound, the profiled groups
the optimal plan runs fused (all of them, and those made of cut vertices), and the
makespans of ``cpu-only`` and ``npu-first`` for scale. The time target applies to the
seven paper DNNs; the total line reports them and the other models separately.

Run::

    python benchmarks/bench_oracle.py                          # the seven paper DNNs
    python benchmarks/bench_oracle.py --all                    # all eleven zoo models
    python benchmarks/bench_oracle.py --models googlenet --platform cpu-2npu
    python benchmarks/bench_oracle.py --out oracle.json
    python benchmarks/bench_oracle.py --all --ray              # one Ray task per model (local Ray)
    python benchmarks/bench_oracle.py --all --ray HEAD:6379    # ... on a running cluster

Under ``--ray`` each model is one task asking for ``--workers`` CPUs; solve times are
then measured while other solves share the node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

from partitiontuner.agents.oracle import OraclePlanner
from partitiontuner.agents.registry import make_planner
from partitiontuner.atomic import write_text_atomic
from partitiontuner.distributed import run_jobs
from partitiontuner.errors import PartitionTunerError
from partitiontuner.platform import load_platform
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.simulate import Simulator
from partitiontuner.zoo import PAPER_MODELS, ZOO, load_model

TARGET_S = 600.0


@dataclass(frozen=True)
class Row:
    model: str
    ops: int
    cut_vertices: int
    blocks: int
    largest_block: int
    block_solves: int
    cache_hits: int
    solve_time_s: float
    proven_optimal: bool
    makespan_us: float
    lower_bound_us: float
    gap: float
    fused_groups: int
    cut_groups: int
    cpu_only_us: float
    npu_first_us: float


def bench(model: str, platform_name: str, time_limit_s: float, workers: int) -> Row:
    graph = load_model(model)
    platform = load_platform(platform_name)
    problem = Problem(graph, platform, fixture_profiles(graph, platform))
    t0 = time.perf_counter()
    plan = OraclePlanner(time_limit_s=time_limit_s, workers=workers).plan(problem)
    elapsed = time.perf_counter() - t0
    sim = Simulator(problem)
    info = plan.info
    fused = sum(len(problem.fusion.cover(p.ops, problem.pus.index(p.device))) for p in plan.partitions)
    return Row(
        model, graph.num_ops, info["cut_vertices"], len(info["blocks"]), max(info["blocks"]), info["block_solves"],
        info["cache_hits"], elapsed, info["proven_optimal"], info["makespan_us"], info["lower_bound_us"], info["gap"],
        fused, info["cut_groups"],
        sim.plan_makespan(make_planner("cpu-only").plan(problem)), sim.plan_makespan(make_planner("npu-first").plan(problem)),
    )


@dataclass(frozen=True)
class Job:
    model: str
    platform: str
    time_limit_s: float
    workers: int


def bench_job(job: Job) -> Row:
    return bench(job.model, job.platform, job.time_limit_s, job.workers)


def table(rows: list[Row]) -> str:
    head = ("| model | ops | cuts | blocks | largest | solves | hits | time s | proven | makespan us | lower bound us | gap "
            "| fused groups (cut) | cpu-only us | npu-first us |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.ops} | {r.cut_vertices} | {r.blocks} | {r.largest_block} | {r.block_solves} | {r.cache_hits} | "
            f"{r.solve_time_s:.1f} | {r.proven_optimal} | {r.makespan_us:.1f} | {r.lower_bound_us:.1f} | {r.gap:.1e} | "
            f"{r.fused_groups} ({r.cut_groups}) | {r.cpu_only_us:.1f} | {r.npu_first_us:.1f} |"
        )
    lines.append("")
    paper = [r for r in rows if r.model in PAPER_MODELS]
    others = [r for r in rows if r.model not in PAPER_MODELS]
    for label, group in (("paper DNNs", paper), ("other models", others)):
        if group:
            target = f" (target < {TARGET_S:.0f} s for all seven)" if group is paper else ""
            lines.append(f"{label}: total {sum(r.solve_time_s for r in group):.1f} s{target}, "
                         f"proven on {sum(r.proven_optimal for r in group)}/{len(group)} models")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    ap.add_argument("--all", action="store_true", help="all eleven zoo models (overrides --models)")
    ap.add_argument("--platform", default="cpu-npu")
    ap.add_argument("--time-limit", type=float, default=600.0, help="oracle time limit per model (s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="also write the rows as JSON")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="one Ray task per model: a local Ray instance, or the cluster at ADDRESS")
    args = ap.parse_args(argv)
    jobs = [Job(m, args.platform, args.time_limit, args.workers) for m in (list(ZOO) if args.all else args.models)]

    def report(_i: int, r: Row) -> None:
        print(f"{r.model}: {r.solve_time_s:.1f} s, proven {r.proven_optimal}, makespan {r.makespan_us:.1f} us", file=sys.stderr, flush=True)

    try:
        rows = run_jobs(jobs, bench_job, args.ray, num_cpus=lambda job: job.workers, on_done=report)
    except PartitionTunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.out:
        write_text_atomic(args.out, json.dumps({"platform": args.platform, "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
