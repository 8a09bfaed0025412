"""Two real cores: the default plan on ``cpu-cpu`` against ONNX Runtime's own threading.

For each model (default: googlenet, inception_v2, resnext50) on the ``cpu-cpu``
preset (two one-thread ONNX Runtime sessions pinned to cores 0 and 1; nothing is
emulated), with this host's measured profiles (cached on disk, so only the first run
profiles): plan with the default method, then measure side by side, in rounds so that
a change of the machine's state lands on every contender alike:

* the plan, run by the executor (:class:`partitiontuner.execute.Executor`; its median,
  p10 and p90 makespan, the simulator's makespan and measured / simulated);
* ONNX Runtime on the whole model with 1 intra-op thread (``ort-1``);
* with 2 intra-op threads (``ort-2-intra``);
* with ``ExecutionMode.ORT_PARALLEL`` and 2 inter-op threads, 1 intra-op thread
  (``ort-parallel``: ORT's own inter-operator parallelism, the like-for-like peer).

Each round runs every contender ``warmup`` untimed times, then its share of the
``repeat`` timed runs. The whole-model runs are timed with ``time.perf_counter`` around
``InferenceSession.run`` on unpinned threads, as a user would run them. The 1-minute
load average is printed before and after: the numbers only mean something on an idle
machine. Targets (issue 18): the plan faster than ``ort-parallel`` on every model,
>= 1.25x faster than ``ort-1`` on inception_v2, measured / simulated within 10 %.

Run::

    python benchmarks/bench_cpu_cpu.py                                   # the three models (idle machine)
    python benchmarks/bench_cpu_cpu.py --models squeezenet --repeat 10   # a smoke test
    python benchmarks/bench_cpu_cpu.py --method partitiontuner --out cpu_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from partitiontuner.agents.registry import METHODS, make_planner
from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import PartitionTunerError, run_entry_point
from partitiontuner.execute import ExecutionResult, Executor
from partitiontuner.measure import blocks
from partitiontuner.problem import Problem
from partitiontuner.stats import Summary, host_load, load_warning, summarize
from partitiontuner.workflow import ProblemSpec, load_problem
from partitiontuner.zoo import ZOO, random_input

#: issue 18's targets
MIN_SPEEDUP_VS_ONE_THREAD = 1.25  # on inception_v2
MAX_MODEL_ERROR = 0.10  # |measured / simulated - 1|


@dataclass(frozen=True)
class Args:
    """Benchmark settings.

    Attributes:
        models: zoo models to run.
        platform: preset or YAML file of the two-core platform.
        method: planner of the plan that is run (the CLI's default: ``rl``).
        profiles: ``measure`` (this machine, cached), ``fixture`` or a profile file.
        repeat: timed runs per contender (median, p10, p90 reported).
        rounds: the timed runs are spread over this many rounds, each running every
            contender in turn.
        warmup: untimed runs of each contender at the start of each round.
        seed: seed of the random model inputs.
        out: also write the rows as JSON here.
    """

    models: tuple[str, ...] = ("googlenet", "inception_v2", "resnext50")
    platform: str = "cpu-cpu"
    method: str = "rl"
    profiles: str = "measure"
    repeat: int = 30
    rounds: int = 5
    warmup: int = 2
    seed: int = 0
    out: str | None = None


def parse_args(argv: list[str] | None = None) -> Args:
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(d.models), choices=list(ZOO), metavar="MODEL")
    p.add_argument("--platform", default=d.platform)
    p.add_argument("--method", default=d.method, choices=list(METHODS))
    p.add_argument("--profiles", default=d.profiles)
    p.add_argument("--repeat", type=int, default=d.repeat)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="write the rows as JSON")
    a = p.parse_args(argv)
    if a.repeat < 1 or a.rounds < 1 or a.warmup < 0:
        p.error("--repeat and --rounds must be >= 1, --warmup >= 0")
    return Args(tuple(a.models), a.platform, a.method, a.profiles, a.repeat, a.rounds, a.warmup, a.seed, a.out)


# ---------------------------------------------------------------------------------
# the whole model in ONNX Runtime

#: name -> (intra-op threads, inter-op threads, parallel execution mode)
ORT_CONFIGS: dict[str, tuple[int, int, bool]] = {
    "ort-1": (1, 1, False),
    "ort-2-intra": (2, 1, False),
    "ort-parallel": (1, 2, True),
}


def whole_model_runner(problem: Problem, intra: int, inter: int, parallel: bool, seed: int) -> Callable[[], float]:
    """One whole-model session; returns a function that runs it once and gives the
    wall time in us."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra
    so.inter_op_num_threads = inter
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(problem.graph.onnx_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = random_input(problem.graph, seed)

    def once() -> float:
        t = time.perf_counter()
        sess.run(None, feeds)
        return (time.perf_counter() - t) * 1e6

    return once


# ---------------------------------------------------------------------------------
# one model


def bench_model(args: Args, model: str) -> dict:
    """Plan ``model``, measure the plan and the three whole-model runs in rounds; the row."""
    problem = load_problem(ProblemSpec(model=model, platform=args.platform, profiles=args.profiles, progress=True))
    t = time.perf_counter()
    plan = make_planner(args.method).plan(problem)
    planning_s = time.perf_counter() - t
    ex = Executor(problem, plan, seed=args.seed)
    runners = {name: whole_model_runner(problem, *cfg, args.seed) for name, cfg in ORT_CONFIGS.items()}
    load = host_load()
    plan_runs: list = []
    times: dict[str, list[float]] = {name: [] for name in runners}
    for n in blocks(args.repeat, args.rounds):
        plan_runs += ex.run(args.warmup + n)[args.warmup:]
        for name, once in runners.items():
            for _ in range(args.warmup):
                once()
            times[name] += [once() for _ in range(n)]
    res: ExecutionResult = ex.result(plan_runs, warmup=args.warmup, load=load)
    ort_stats = {name: summarize(v) for name, v in times.items()}
    return row(model, plan.num_partitions, planning_s, res, ort_stats)


def row(model: str, partitions: int, planning_s: float, res: ExecutionResult, ort: dict[str, Summary]) -> dict:
    """The JSON row of one model: every contender's median / p10 / p90 and the targets."""
    plan_us = res.measured_makespan_us
    speedup = {name: s.median / plan_us for name, s in ort.items()}
    return {
        "model": model, "method": res.method, "partitions": partitions, "planning_s": round(planning_s, 2),
        "plan": {"median_us": round(plan_us, 1), "p10_us": round(res.measured_p10_us, 1),
                 "p90_us": round(res.measured_p90_us, 1)},
        "simulated_us": round(res.simulated_makespan_us, 1), "measured_over_simulated": round(res.ratio, 4),
        "cost_model": res.cost_model, "outputs_match": res.outputs_match, "emulated_pus": list(res.emulated_pus),
        "runtimes": res.runtimes,
        **{name: {"median_us": round(s.median, 1), "p10_us": round(s.p10, 1), "p90_us": round(s.p90, 1)}
           for name, s in ort.items()},
        "speedup": {name: round(v, 3) for name, v in speedup.items()},
        "targets": {
            "faster_than_ort_parallel": speedup["ort-parallel"] > 1.0,
            "vs_one_thread": (speedup["ort-1"] >= MIN_SPEEDUP_VS_ONE_THREAD) if model == "inception_v2" else None,
            "model_within_10pct": abs(res.ratio - 1.0) <= MAX_MODEL_ERROR,
        },
        "warnings": list(res.warnings),
    }


def print_row(r: dict) -> None:
    def cell(d: dict) -> str:
        return f"{d['median_us']:>10,.0f} ({d['p10_us']:,.0f}-{d['p90_us']:,.0f})"

    print(f"{r['model']:<13} {r['partitions']:>5}  {cell(r['plan']):<28} {r['simulated_us']:>10,.0f} "
          f"{r['measured_over_simulated']:>6.3f}  " + "  ".join(f"{cell(r[n]):<28}" for n in ORT_CONFIGS)
          + f"  {'match' if r['outputs_match'] else 'DIFFER'}")
    tg = r["targets"]
    checks = [f"x{r['speedup'][n]:.2f} vs {n}" for n in ORT_CONFIGS]
    verdicts = [f"faster than ort-parallel: {'yes' if tg['faster_than_ort_parallel'] else 'NO'}",
                f"measured/simulated within 10%: {'yes' if tg['model_within_10pct'] else 'NO'}"]
    if tg["vs_one_thread"] is not None:
        verdicts.append(f">= {MIN_SPEEDUP_VS_ONE_THREAD}x vs ort-1: {'yes' if tg['vs_one_thread'] else 'NO'}")
    print(f"{'':<13} plan speed-up {', '.join(checks)}; {'; '.join(verdicts)}")
    for w in r["warnings"]:
        print(f"{'':<13} warning: {w}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        load0, cores = host_load()
        print(f"host: {cores} usable cores, load average {load0:.2f} before; platform {args.platform}, plan "
              f"{args.method}, profiles {args.profiles}; {args.repeat} timed runs per contender in {args.rounds} "
              f"rounds (+{args.warmup} warm-up each)")
        if (w := load_warning(load0, cores)) is not None:
            print(f"WARNING: {w}")
        head = (f"{'model':<13} {'parts':>5}  {'plan us (p10-p90)':<28} {'sim. us':>10} {'m/s':>6}  "
                + "  ".join(f"{n + ' us (p10-p90)':<28}" for n in ORT_CONFIGS) + "  outputs")
        print(head)
        print("-" * len(head))
        rows = []
        for model in args.models:
            try:
                rows.append(r := bench_model(args, model))
            except PartitionTunerError as exc:
                print(f"{model:<13} failed: {exc}")
                continue
            print_row(r)
        load1, _ = host_load()
        print(f"load average {load1:.2f} after")
        if args.out:
            write_text_atomic(args.out, json.dumps({"load_average": [load0, load1], "cores": cores,
                                                    "args": asdict(args), "rows": rows}, indent=1))
        return 0 if rows else 1

    return run_entry_point(body, prog="bench_cpu_cpu.py")


if __name__ == "__main__":
    sys.exit(main())
