"""The measurements behind ``partitiontuner calibrate``: microbenchmark plans run on
the executor, turned into the events :func:`partitiontuner.calibrate.fit` fits.

The plans cut a zoo model's ops (topological order, so every block is convex) into
blocks of 1 to 32 ops placed round-robin over the PUs that can run them, plus
host-only plans with the same blocks: partitions of varied size and count, PU
switches in both directions and tensors of varied bytes. Each plan runs ``repeat``
times after a warm-up; a time budget bounds the whole command (under 5 minutes on 2
cores by default). The result is fitted, compared with the uncalibrated model on the
same plans (``error_before`` / ``error_after``) and stored atomically.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partitiontuner.calibrate import (
    Calibration,
    OutputEvent,
    PartitionEvent,
    apply,
    fit,
    save_calibration,
)
from partitiontuner.errors import ConfigError
from partitiontuner.execute import Executor
from partitiontuner.plan import Plan, make_plan
from partitiontuner.platform import Platform
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator, simulate


def events_of(executor: Executor, records: Sequence[Any]) -> list[PartitionEvent | OutputEvent]:
    """The events of measured runs (:meth:`Executor.run` records) of ``executor``."""
    problem, plan = executor.problem, executor.plan
    names = problem.pus
    sim = Simulator(problem)
    steps = executor.steps
    # profiled work, before any calibrated scale: the fit finds the scale
    work = [sim.work(p.ops, names.index(p.device)) / problem.work_scale[names.index(p.device)] for p in plan.partitions]
    host = problem.host
    out: list[PartitionEvent | OutputEvent] = []
    for r in records:
        for i, s in enumerate(steps):
            ins = []
            for _t, j, size in s.inputs:
                src = host if j < 0 else steps[j].pu
                if src != s.pu:
                    ins.append((names[src], 0.0 if j < 0 else r.end[j] * 1e6, size))
            out.append(PartitionEvent(names[s.pu], work[i], r.free[i] * 1e6, r.start[i] * 1e6, r.end[i] * 1e6, tuple(ins)))
        host_parts = executor.orders[host]
        host_free = r.end[host_parts[-1]] * 1e6 if host_parts else 0.0
        outs = tuple((names[steps[j].pu], r.end[j] * 1e6, executor.output_size[t])
                     for t, j in executor.output_producer.items() if steps[j].pu != host)
        if outs:
            out.append(OutputEvent(names[host], host_free, r.finish * 1e6, outs))
    return out


def microbenchmark_plans(problem: Problem, sizes: Sequence[int] = (1, 2, 4, 8, 32)) -> list[Plan]:
    """Plans that exercise launch and hand-off costs: the model's ops in topological
    order cut into blocks of ``size`` ops (contiguous in a topological order, hence
    convex), placed round-robin over the PUs that can run a whole block (the host
    otherwise); plus single-PU plans on the host with those block sizes. Blocks of one
    PU in a row are merged."""

    n, pus, host = problem.num_ops, range(problem.num_pus), problem.host
    plans = []
    for size in sizes:
        blocks = [list(range(lo, min(lo + size, n))) for lo in range(0, n, size)]
        parts: list[tuple[list[int], int]] = []
        turn = 0
        for ops in blocks:
            able = [p for p in pus if all(problem.allowed[v, p] for v in ops)]
            pu = able[turn % len(able)] if able else host
            turn += 1
            if parts and parts[-1][1] == pu:
                parts[-1][0].extend(ops)
            else:
                parts.append((list(ops), pu))
        if any(pu != host for _, pu in parts):
            plans.append(make_plan(problem, parts, f"calibrate-mixed-{size}"))
        if size < n and all(problem.allowed[v, host] for v in range(n)):
            plans.append(make_plan(problem, [(ops, host) for ops in blocks], f"calibrate-{problem.pus[host]}-{size}"))
    return plans


@dataclass(frozen=True)
class Benchmark:
    """One microbenchmark plan: the makespans measured and what the problem simulated."""

    problem: Problem
    plan: Plan
    measured_us: tuple[float, ...]


def measure_events(problems: Sequence[Problem], *, repeat: int = 5, warmup: int = 1, budget_s: float = 240.0,
                   pin_cores: bool = False, progress: Callable[[str], None] | None = None
                   ) -> tuple[list[PartitionEvent | OutputEvent], list[Benchmark]]:
    """Run every microbenchmark plan of every problem until ``budget_s`` is spent (the
    first plan of each problem always runs, so every PU and link gets samples)."""

    t_end = time.perf_counter() + budget_s
    events: list[PartitionEvent | OutputEvent] = []
    benches: list[Benchmark] = []
    for problem in problems:
        for k, plan in enumerate(microbenchmark_plans(problem)):
            if k and time.perf_counter() > t_end:
                break
            if progress:
                progress(f"{problem.graph.name}: {plan.method} ({plan.num_partitions} partitions)")
            ex = Executor(problem, plan, pin_cores=pin_cores)
            runs = ex.run(warmup + repeat)[warmup:]
            events.extend(events_of(ex, runs))
            benches.append(Benchmark(problem, plan, tuple(r.makespan * 1e6 for r in runs)))
    return events, benches


def model_error(benches: Sequence[Benchmark], platform: Platform) -> float:
    """Median |simulated / measured - 1| of the benchmarks under ``platform``'s numbers."""

    errs = []
    for b in benches:
        p = Problem(b.problem.graph, platform, b.problem.profiles, b.problem.constraints)
        errs.append(abs(simulate(p, b.plan).makespan_us / float(np.median(b.measured_us)) - 1.0))
    return float(np.median(errs)) if errs else float("nan")


@dataclass(frozen=True)
class CalibrateArgs:
    """Settings of ``partitiontuner calibrate``.

    Attributes:
        platform: preset name or YAML file.
        models: zoo models whose ops make the microbenchmarks.
        profiles: must be ``measure``: calibration corrects measured profiles.
        repeat: timed runs per microbenchmark plan.
        budget_s: the whole command's time budget, profiling included: no new plan is
            started after it (the fit uses what ran).
        pin_cores: pin PU worker threads while measuring.
        root: cache root (default: the profile cache's).
    """

    platform: str = "cpu-npu"
    models: tuple[str, ...] = ("squeezenet", "resnet18")
    profiles: str = "measure"
    repeat: int = 10
    budget_s: float = 200.0
    pin_cores: bool = False
    root: str | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot work."""
        if self.profiles != "measure":
            raise ConfigError("calibrate needs measured profiles (--profiles measure): it corrects this host's measurements")
        if self.repeat < 1 or self.budget_s <= 0 or not self.models:
            raise ConfigError(f"--repeat must be >= 1, --budget > 0 and --models not empty, got {self.repeat}, "
                              f"{self.budget_s} and {list(self.models)}")


def calibrate(args: CalibrateArgs, progress: Callable[[str], None] | None = None) -> tuple[Calibration, Path]:
    """Measure the microbenchmarks, fit, store; return the calibration and its file."""
    from partitiontuner.profiling.cache import fingerprint_id, host_fingerprint
    from partitiontuner.workflow import ProblemSpec, load_problem

    args.check()
    t0 = time.perf_counter()
    problems = [load_problem(ProblemSpec(model=m, platform=args.platform, profiles="measure", progress=False,
                                         cost_model="uncalibrated")) for m in args.models]
    platform = problems[0].platform
    left = args.budget_s - (time.perf_counter() - t0)
    events, benches = measure_events(problems, repeat=args.repeat, budget_s=left, pin_cores=args.pin_cores,
                                     progress=progress)
    if not events:
        raise ConfigError("no microbenchmark ran within the budget")
    cal = fit(events, platform, host=fingerprint_id(host_fingerprint()))
    cal = dataclasses.replace(
        cal, error_before=round(model_error(benches, platform), 4), error_after=round(model_error(benches, apply(platform, cal)), 4),
        plans=len(benches), seconds=time.perf_counter() - t0, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return cal, save_calibration(cal, platform, args.root)
