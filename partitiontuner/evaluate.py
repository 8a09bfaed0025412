"""Every model x every planner on one platform, the way the paper compares them.

Metrics per (model, method): simulated makespan, planning time, ratio to the oracle
(and whether the oracle proved optimality), and the paper's two metrics: the gain over
static type-based (``npu-first``) and over profiling-based (``greedy``) placement,
``gain = (T_baseline - T) / T_baseline * 100`` (positive = faster than the baseline).
Optionally each plan is also run for real (``--measure``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from partitiontuner.agents.base import Planner
from partitiontuner.agents.registry import METHODS, make_planner
from partitiontuner.atomic import OutputError, check_writable, os_reason, write_text_atomic
from partitiontuner.calibrate import cost_model_of
from partitiontuner.distributed import JsonlJournal, chain, ray_session, run_jobs
from partitiontuner.errors import ConfigError
from partitiontuner.plan import Plan, save_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import SimResult, simulate
from partitiontuner.workflow import ProblemSpec, load_problem
from partitiontuner.zoo import ZOO

STATIC, PROFILING, ORACLE = "npu-first", "greedy", "oracle"


@dataclass
class Row:
    model: str
    method: str
    makespan_us: float
    planning_time_s: float
    num_partitions: int
    ratio_to_oracle: float | None = None
    oracle_proven: bool | None = None
    gain_vs_static_pct: float | None = None
    gain_vs_profiling_pct: float | None = None
    measured_makespan_us: float | None = None
    outputs_match: bool | None = None
    measured_p10_us: float | None = None
    measured_p90_us: float | None = None


@dataclass
class Evaluation:
    platform: str
    profiles: str
    rows: list[Row] = field(default_factory=list)
    cost_model: str = "uncalibrated"
    plans: dict[tuple[str, str], tuple[Problem, Plan, SimResult]] = field(default_factory=dict, repr=False)

    def row(self, model: str, method: str) -> Row | None:
        return next((r for r in self.rows if r.model == model and r.method == method), None)

    def to_dict(self) -> dict:
        """The ``evaluate --json`` object (without the list of files written)."""
        return {"platform": self.platform, "profiles": self.profiles, "cost_model": self.cost_model,
                "rows": rows_as_dicts(self)}


@dataclass(frozen=True)
class PlanJob:
    """One (model, platform, method) unit of an evaluation: what a Ray task receives.

    The problem travels with its profiles, measured (or loaded) by the process that
    built the job, so a worker on another host never profiles: its own timings would
    not be the ones the rest of the evaluation used.
    """

    problem: Problem
    method: str
    planner: Planner


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    planning_time_s: float
    sim: SimResult


def plan_jobs(
    models: Sequence[str], methods: Sequence[str], platform: str = "cpu-npu", profiles: str = "measure", *,
    oracle_time_limit_s: float = 600.0, cost_model: str = "auto",
) -> list[PlanJob]:
    """Every (model, method) pair as a job, models outer, in the order given."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (methods: {', '.join(METHODS)})")
    if not models:
        raise ConfigError("no models to evaluate")
    jobs = []
    for model in models:
        problem = load_problem(ProblemSpec(model=model, platform=platform, profiles=profiles, progress=False,
                                           cost_model=cost_model))
        for method in methods:
            opts = {"time_limit_s": oracle_time_limit_s} if method == ORACLE else {}
            jobs.append(PlanJob(problem, method, make_planner(method, **opts)))
    return jobs


def run_plan_job(job: PlanJob) -> PlanOutcome:
    """Plan one job and simulate the plan (runs in a Ray worker under ``--ray``)."""
    t0 = time.perf_counter()
    plan = job.planner.plan(job.problem)
    dt = time.perf_counter() - t0
    return PlanOutcome(plan, dt, simulate(job.problem, plan))


def job_cpus(job: PlanJob) -> int:
    """Cores one job keeps busy: a planner's worker threads (the oracle's), else one."""
    return int(getattr(job.planner, "workers", 1))


def gather(
    jobs: Sequence[PlanJob], outcomes: Sequence[PlanOutcome], platform: str, profiles: str, *,
    measure: bool = False, measure_repeat: int = 3,
) -> Evaluation:
    """The evaluation of finished jobs, rows in job order; ``measure`` runs each plan
    for real here, in this process, one after another, so measurements never share
    the machine with planning or with each other; the repeats of one model's plans are
    interleaved, so a change of machine load hits every plan alike."""
    ev = Evaluation(platform, profiles)
    for job, out in zip(jobs, outcomes, strict=True):
        problem, method, plan, sim = job.problem, job.method, out.plan, out.sim
        ev.cost_model = cost_model_of(problem)
        row = Row(model=problem.graph.name, method=method, makespan_us=sim.makespan_us,
                  planning_time_s=out.planning_time_s, num_partitions=plan.num_partitions)
        if method == ORACLE:
            row.oracle_proven = bool(plan.info.get("proven_optimal", False))
        ev.rows.append(row)
        ev.plans[(row.model, method)] = (problem, plan, sim)
    if measure:
        from partitiontuner.measure import measure_interleaved

        for model in dict.fromkeys(r.model for r in ev.rows):
            rows = [r for r in ev.rows if r.model == model]
            results = measure_interleaved([ev.plans[(r.model, r.method)][:2] for r in rows], repeat=measure_repeat)
            for row, res in zip(rows, results, strict=True):
                row.measured_makespan_us, row.outputs_match = res.measured_makespan_us, res.outputs_match
                row.measured_p10_us, row.measured_p90_us = res.measured_p10_us, res.measured_p90_us
    _derive(ev)
    return ev


def outcome_record(job: PlanJob, out: PlanOutcome) -> dict:
    """A finished job as a JSON-able line for a :class:`~partitiontuner.distributed.JsonlJournal`."""
    return {"model": job.problem.graph.name, "platform": job.problem.platform.name, "method": job.method,
            "makespan_us": out.sim.makespan_us, "planning_time_s": out.planning_time_s,
            "num_partitions": out.plan.num_partitions,
            "proven_optimal": bool(out.plan.info.get("proven_optimal", False)) if job.method == ORACLE else None}


def evaluate(
    models: Sequence[str],
    methods: Sequence[str],
    platform: str = "cpu-npu",
    profiles: str = "measure",
    **options: Any,
) -> Evaluation:
    """Plan every model with every method on one platform: :func:`evaluate_platforms`
    (which takes the same keyword ``options``) with a single platform."""
    return evaluate_platforms(models, methods, [platform], profiles, **options)[platform]


def evaluate_platforms(
    models: Sequence[str],
    methods: Sequence[str],
    platforms: Sequence[str],
    profiles: str = "measure",
    *,
    oracle_time_limit_s: float = 600.0,
    measure: bool = False,
    measure_repeat: int = 3,
    on_step: Callable[[str, str], None] | None = None,
    ray_address: str | None = None,
    journal: str | Path | None = None,
    cost_model: str = "auto",
) -> dict[str, Evaluation]:
    """Plan every model with every method on every platform, as one batch of jobs
    (so that on Ray the long solves of one platform overlap the others' instead of
    waiting at a barrier between platforms).

    Args:
        oracle_time_limit_s: the oracle's time limit per model.
        measure: also run every plan with the executor (here, after planning).
        measure_repeat: executor runs per plan.
        on_step: ``on_step(model, method)`` after each plan.
        cost_model: ``auto``, ``calibrated`` or ``uncalibrated`` (see :class:`ProblemSpec`).
        ray_address: ``"local"`` or a cluster's address runs each (model, platform,
            method) as a Ray task; ``None`` plans here, one after another, without
            importing Ray.
        journal: a JSON-lines file that receives each finished job at once and is
            removed when the evaluation completes, so an interrupted run leaves its
            finished jobs behind.

    Returns:
        One evaluation per platform, in the order given.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(ray_session(ray_address))  # an unreachable cluster fails before any profiling
        batches = {p: plan_jobs(models, methods, p, profiles, oracle_time_limit_s=oracle_time_limit_s,
                                     cost_model=cost_model)
                   for p in dict.fromkeys(platforms)}
        jobs = [job for batch in batches.values() for job in batch]

        def step(i: int, _out: PlanOutcome) -> None:
            if on_step:
                on_step(jobs[i].problem.graph.name, jobs[i].method)

        log = None
        if journal is not None:
            log = stack.enter_context(JsonlJournal(journal, lambda i, out: outcome_record(jobs[i], out)))
        outcomes = run_jobs(jobs, run_plan_job, ray_address, num_cpus=job_cpus, on_done=chain(log, step))
    evs, start = {}, 0
    for p, batch in batches.items():
        evs[p] = gather(batch, outcomes[start:start + len(batch)], p, profiles, measure=measure,
                        measure_repeat=measure_repeat)
        start += len(batch)
    return evs


def _derive(ev: Evaluation) -> None:
    """Ratios and gains, computed from the makespans alone."""
    for r in ev.rows:
        oracle, static, prof = (ev.row(r.model, m) for m in (ORACLE, STATIC, PROFILING))
        if oracle is not None:
            r.ratio_to_oracle = r.makespan_us / oracle.makespan_us
            r.oracle_proven = oracle.oracle_proven
        if static is not None:
            r.gain_vs_static_pct = gain_pct(static.makespan_us, r.makespan_us)
        if prof is not None:
            r.gain_vs_profiling_pct = gain_pct(prof.makespan_us, r.makespan_us)


def gain_pct(baseline_us: float, makespan_us: float) -> float:
    return (baseline_us - makespan_us) / baseline_us * 100.0


# ---------------------------------------------------------------------------------
# outputs


def rows_as_dicts(ev: Evaluation) -> list[dict]:
    out = []
    for r in ev.rows:
        d = asdict(r)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 6) if math.isfinite(v) else None
        out.append(d)
    return out


def to_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    rows = rows_as_dicts(ev)
    writer = csv.DictWriter(buf, fieldnames=list(asdict(ev.rows[0]).keys()) if ev.rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(ev: Evaluation) -> str:
    """Paper-style tables: makespan per model and method, ratio to the oracle, and the
    paper's two gains for every method."""
    models = list(dict.fromkeys(r.model for r in ev.rows))
    methods = list(dict.fromkeys(r.method for r in ev.rows))
    lines = [f"Platform `{ev.platform}`, profiles `{ev.profiles}`; simulated makespan in ms "
             f"(ratio to the oracle in parentheses; * = oracle proven optimal).", ""]
    lines.append("| model | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---:|" * len(methods))
    for m in models:
        cells = []
        for meth in methods:
            r = ev.row(m, meth)
            if r is None:
                cells.append("")
                continue
            ratio = f" ({r.ratio_to_oracle:.3f})" if r.ratio_to_oracle is not None else ""
            star = "*" if meth == ORACLE and r.oracle_proven else ""
            cells.append(f"{r.makespan_us / 1000:.3f}{ratio}{star}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for metric, title in (("gain_vs_static_pct", "Gain over static type-based (npu-first), %"),
                          ("gain_vs_profiling_pct", "Gain over profiling-based (greedy), %")):
        if all(getattr(r, metric) is None for r in ev.rows):
            continue
        lines += ["", f"**{title}**", "", "| model | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        for m in models:
            cells = []
            for meth in methods:
                r = ev.row(m, meth)
                v = None if r is None else getattr(r, metric)
                cells.append("" if v is None else f"{v:+.2f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "**Planning time, s**", "", "| model | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for m in models:
        cells = []
        for meth in methods:
            r = ev.row(m, meth)
            cells.append("" if r is None else f"{r.planning_time_s:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if any(r.measured_makespan_us is not None for r in ev.rows):
        lines += ["", "**Measured makespan (executor), ms**", "", "| model | " + " | ".join(methods) + " |",
                  "|---|" + "---:|" * len(methods)]
        for m in models:
            cells = []
            for meth in methods:
                r = ev.row(m, meth)
                v = None if r is None else r.measured_makespan_us
                cells.append("" if v is None else f"{v / 1000:.3f}" + ("" if r.outputs_match else " (mismatch)"))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(ev: Evaluation, out_dir: str | Path, gantt_method: str = "rl") -> list[Path]:
    """results.csv, results.md, a bar chart, a Gantt chart per model for ``gantt_method``
    and the plans themselves."""
    from partitiontuner.viz import bar_chart, gantt_chart

    out = check_writable(out_dir, what="results directory", directory=True)
    try:
        (out / "plans").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write results directory {out}: {os_reason(exc)}") from None
    written = [out / "results.csv", out / "results.md", out / "makespan_vs_oracle.png"]
    write_text_atomic(written[0], to_csv(ev))
    write_text_atomic(written[1], to_markdown(ev))
    bar_chart(ev, written[2])
    for (model, method), (problem, plan, sim) in ev.plans.items():
        path = out / "plans" / f"{model}__{method}.yaml"
        save_plan(problem, plan, path, sim.makespan_us)
        written.append(path)
        if method == gantt_method:
            gpath = out / f"gantt_{model}_{method}.png"
            gantt_chart(problem, plan, sim, gpath, title=f"{model} on {ev.platform}: {method}")
            written.append(gpath)
    return written


def default_models() -> list[str]:
    return list(ZOO)
