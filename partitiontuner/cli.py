"""The ``partitiontuner`` command: parse, call the library, print.

Every command takes ``--debug`` (show tracebacks) and every command that reports
numbers takes ``--json``, which prints exactly one JSON object on stdout: the
``to_dict()`` of the command's result record (:mod:`partitiontuner.results`, the
executor's, exporter's and evaluator's results). Otherwise :mod:`partitiontuner.render`
prints tables (plain text when stdout is not a terminal). Errors go through
:func:`partitiontuner.errors.run_entry_point`: a user error is one line on stderr and
exit 2; ``run`` exits 3 when the plan's outputs differ from the whole-model run.

Over 500 lines on purpose: one ``_add_*`` / ``_cmd_*`` pair per command (eleven
commands, each a flat list of flags and a few calls), so a reader finds a command's
whole surface in one place; the work itself lives in the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from partitiontuner import __version__, render
from partitiontuner.errors import ConfigError, run_entry_point

#: ``run``: the plan ran, but its outputs differ from the whole-model run
EXIT_OUTPUTS_DIFFER = 3
DEFAULT_PLATFORM = "cpu-npu"


# ---------------------------------------------------------------------------------
# shared setup: every command is made by _command, which adds --json and --debug


def _add_debug_alias(p: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after the command too; the SUPPRESS default keeps the
    subparser from overwriting the top-level flag."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")


def _command(sub, name: str, func, help: str, *, json_flag: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with the options every command shares (``--debug``, ``--json``)."""
    p = sub.add_parser(name, help=help, **kwargs)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _add_debug_alias(p)
    p.set_defaults(func=func)
    return p


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, eq, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not eq or not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224, got {text!r}")
    return name, shape


def _add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        p.add_argument("model", nargs="?", default="squeezenet", help="built-in model name or .onnx path (default: squeezenet)")
    else:
        p.add_argument("model", help="built-in model name or .onnx path")
    p.add_argument("--input-shape", action="append", type=_shape_arg, default=[], metavar="NAME=DIMS",
                   help="shape of a graph input with dynamic dimensions, e.g. input=1x3x224x224")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (first dim of every input)")


def _add_platform_arg(p: argparse.ArgumentParser, *, from_plan: bool = False) -> None:
    if from_plan:
        p.add_argument("--platform", default=None,
                       help="platform preset name or YAML file (default: the platform saved in the plan)")
    else:
        p.add_argument("--platform", default=DEFAULT_PLATFORM,
                       help=f"platform preset name or YAML file (default: {DEFAULT_PLATFORM})")


def _add_profiles_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profiles", default="measure",
                   help="measure (on this machine, cached; default), fixture (committed numbers) or files measured "
                        "elsewhere: [PU=]FILE[,...] (CSV op,pu,latency_us; ONNX Runtime trace; profile --export JSON)")
    p.add_argument("--fill", choices=("emulator", "measure"), default=None,
                   help="complete imported profiles: NPU gaps from the emulator; measure: CPU gaps measured here too")


def _add_problem_args(p: argparse.ArgumentParser, *, from_plan: bool = False) -> None:
    _add_platform_arg(p, from_plan=from_plan)
    _add_profiles_arg(p)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of every CPU PU")
    p.add_argument("--refresh", action="store_true", help="re-measure profiles even if cached")
    _add_cost_model_args(p)


def _add_cost_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cost-model", choices=("auto", "calibrated", "uncalibrated"), default="auto",
                   help="auto (default): this host's calibration if `partitiontuner calibrate` made one and profiles "
                        "are measured; calibrated: require it; uncalibrated: the platform's own numbers")
    p.add_argument("--no-calibration", action="store_true", help="same as --cost-model uncalibrated")


def _cost_model(args: argparse.Namespace) -> str:
    return "uncalibrated" if getattr(args, "no_calibration", False) else getattr(args, "cost_model", "auto")


def _add_saved_plan_args(p: argparse.ArgumentParser) -> None:
    """MODEL PLAN and the problem options of a command on a saved plan."""
    _add_model_args(p)
    p.add_argument("plan", help="plan file (.yaml/.yml or .json)")
    _add_problem_args(p, from_plan=True)


def _add_constraint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("constraints")
    g.add_argument("--pin", action="append", default=[], metavar="PATTERN=PU", help="run matching ops on PU (op name, op type or glob)")
    g.add_argument("--forbid", action="append", default=[], metavar="PATTERN:PU", help="never run matching ops on PU")
    g.add_argument("--max-partitions", type=int, default=None, help="at most N partitions")
    g.add_argument("--min-partition-ops", type=int, default=None, help="at least K ops per partition")
    g.add_argument("--constraints", default=None, metavar="FILE", help="YAML file with pin / forbid / max_partitions / min_partition_ops / strict")
    g.add_argument("--strict", action="store_true",
                   help="fail if any op lands on a CPU only because no NPU can run it (on every platform)")


def _constraints(args: argparse.Namespace):
    from partitiontuner.constraints import Constraints, load_constraints, parse_rule

    base = load_constraints(args.constraints) if getattr(args, "constraints", None) else Constraints()
    flags = Constraints(
        pins=tuple(parse_rule(t, "=", "pin") for t in getattr(args, "pin", [])),
        forbids=tuple(parse_rule(t, ":", "forbid") for t in getattr(args, "forbid", [])),
        max_partitions=getattr(args, "max_partitions", None),
        min_partition_ops=getattr(args, "min_partition_ops", None),
        strict=getattr(args, "strict", False),
    )
    return base.merged(flags)


def _spec(args: argparse.Namespace, progress: bool = True, platform: str | None = None):
    from partitiontuner.workflow import ProblemSpec

    return ProblemSpec(
        model=args.model,
        platform=platform or getattr(args, "platform", None) or DEFAULT_PLATFORM,
        profiles=getattr(args, "profiles", "measure"),
        input_shapes=dict(getattr(args, "input_shape", [])),
        batch_size=getattr(args, "batch_size", None),
        threads=getattr(args, "threads", None),
        refresh=getattr(args, "refresh", False),
        fill=getattr(args, "fill", None),
        constraints=_constraints(args),
        progress=progress and not getattr(args, "json", False),
        cost_model=_cost_model(args),
    )


def _saved_plan_problem(args: argparse.Namespace):
    """The problem and plan of a command on a saved plan, on the plan's own platform
    unless ``--platform`` says otherwise (said on stderr when it matters)."""
    from partitiontuner.plan import load_plan
    from partitiontuner.workflow import load_problem, platform_for_plan

    choice = platform_for_plan(args.platform, args.plan, DEFAULT_PLATFORM)
    if choice.note:
        render.note(choice.note, "warning" if choice.source == "option" else "note")
    problem = load_problem(_spec(args, platform=choice.platform))
    return problem, load_plan(problem, args.plan), choice.source


def _check_outputs(*paths: tuple[str | None, str]) -> None:
    """Refuse unwritable output files (and Gantt charts in a format we cannot draw)
    before any long work."""
    from partitiontuner.atomic import check_writable

    for path, what in paths:
        if path:
            check_writable(path, what=what)
            if what == "Gantt chart":
                from partitiontuner.viz import gantt_format

                gantt_format(path)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def _console():
    return render.console()


# ---------------------------------------------------------------------------------
# models / graph


def _add_models(sub) -> None:
    _command(sub, "models", _cmd_models, "list the built-in models")


def _cmd_models(args: argparse.Namespace) -> int:
    from partitiontuner.results import list_models

    rows = list_models()
    if args.json:
        _print_json({"models": [r.to_dict() for r in rows]})
    else:
        render.models(_console(), rows)
    return 0


def _add_graph(sub) -> None:
    p = _command(sub, "graph", _cmd_graph, "ops, FLOPs, branches and blocks of a model")
    _add_model_args(p)


def _cmd_graph(args: argparse.Namespace) -> int:
    from partitiontuner.results import GraphSummary
    from partitiontuner.zoo import load_model

    summary = GraphSummary.of(load_model(args.model, input_shapes=dict(args.input_shape), batch_size=args.batch_size))
    if args.json:
        _print_json(summary.to_dict())
    else:
        render.graph(_console(), summary)
    return 0


# ---------------------------------------------------------------------------------
# plan / simulate


def _add_planner_args(p: argparse.ArgumentParser) -> None:
    from partitiontuner.agents.registry import METHODS

    p.add_argument("--method", default="rl", metavar="M", help=f"planner: {', '.join(METHODS)} (default: rl)")
    p.add_argument("--samples", type=int, default=None, help="rl: best of K sampled plans; random: number of plans")
    p.add_argument("--seed", type=int, default=None, help="seed of rl sampling / random search")
    p.add_argument("--checkpoint", default=None, help="rl: policy checkpoint (default: the shipped one)")
    p.add_argument("--time-limit", type=float, default=None, help="oracle: time limit in seconds")
    p.add_argument("--budget-s", type=float, default=None, metavar="S",
                   help="rl: seconds of policy-guided search (default 2 s up to 200 ops, more on larger graphs; 0 = the policy alone)")
    p.add_argument("--gap", type=float, default=None, help="oracle: stop once proven within this relative gap (e.g. 0.01)")


def _planner(args: argparse.Namespace):
    from partitiontuner.agents.registry import make_planner

    given = {"samples": args.samples, "seed": args.seed, "checkpoint": args.checkpoint, "time_limit_s": args.time_limit,
             "budget_s": args.budget_s, "gap": args.gap}
    accepts = {"rl": {"samples", "seed", "checkpoint", "budget_s"}, "random": {"samples", "seed"},
               "oracle": {"time_limit_s", "gap"}}
    options = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in accepts.get(args.method, set()):
            flag = "--budget-s" if key == "budget_s" else "--" + key.replace("_s", "").replace("_", "-")
            raise ConfigError(f"{flag} does not apply to method {args.method!r}")
        options[key] = value
    return make_planner(args.method, **options)


def _add_plan(sub) -> None:
    p = _command(sub, "plan", _cmd_plan, "make a plan (default: squeezenet on cpu-npu with the RL policy)")
    _add_model_args(p, optional=True)
    _add_problem_args(p)
    _add_planner_args(p)
    _add_constraint_args(p)
    p.add_argument("--out", default=None, help="write the plan (.yaml/.yml or .json)")
    p.add_argument("--gantt", default=None, help="write a Gantt chart (.png or .svg)")
    p.add_argument("--dot", default=None, help="write the partitioned graph as Graphviz DOT")
    p.add_argument("--report", action="store_true", help="print where every op runs and why")
    p.add_argument("--tune", type=int, default=None, metavar="K",
                   help="run the K distinct candidate plans predicted fastest and return the measured-fastest")
    p.add_argument("--pin-cores", action="store_true", help="--tune: pin each PU's worker thread to its own cores")


def _cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from partitiontuner.plan import save_plan
    from partitiontuner.results import PlanResult
    from partitiontuner.workflow import load_problem

    _check_outputs((args.out, "plan"), (args.gantt, "Gantt chart"), (args.dot, "DOT graph"))
    planner = _planner(args)
    problem = load_problem(_spec(args))
    res = PlanResult.compute(problem, planner)
    tuned = None
    if args.tune is not None:
        from partitiontuner.tune import tune

        tuned = tune(problem, args.method, res.plan, args.tune, pin_cores=args.pin_cores)
        res = PlanResult.of_plan(problem, tuned.best.plan, res.planning_time_s)
    title = f"{problem.graph.name} on {problem.platform.name}: {res.plan.method}"
    files: dict[str, str] = {}
    if args.out:
        save_plan(problem, res.plan, args.out, res.sim.makespan_us, res.sim.parallel_pairs())
        files["plan"] = args.out
    if args.gantt:
        from partitiontuner.viz import gantt_chart

        gantt_chart(problem, res.plan, res.sim, args.gantt, title=title)
        files["Gantt chart"] = args.gantt
    if args.dot:
        from partitiontuner.viz import write_dot

        write_dot(problem, res.plan, args.dot)
        files["DOT graph"] = args.dot
    res = replace(res, out=args.out, files=files)
    if args.json:
        _print_json({**res.to_dict(), **({"tune": tuned.to_dict()} if tuned else {})})
        return 0
    for warning in res.warnings:
        render.note(warning, "warning")
    if tuned:
        render.tuning(_console(), tuned)
    render.plan(_console(), res, show_report=args.report)
    return 0


def _add_simulate(sub) -> None:
    p = _command(sub, "simulate", _cmd_simulate, "simulate a saved plan (on the platform saved in it)")
    _add_saved_plan_args(p)
    p.add_argument("--gantt", default=None, help="write a Gantt chart (.png or .svg)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from partitiontuner.results import SimulationResult

    _check_outputs((args.gantt, "Gantt chart"))
    problem, plan, source = _saved_plan_problem(args)
    res = SimulationResult.compute(problem, plan, source)
    if args.gantt:
        from partitiontuner.viz import gantt_chart

        gantt_chart(problem, plan, res.sim, args.gantt, title=f"{problem.graph.name} on {problem.platform.name}: {plan.method}")
        res = replace(res, files={"Gantt chart": args.gantt})
    if args.json:
        _print_json(res.to_dict())
    else:
        render.simulation(_console(), res)
    return 0


# ---------------------------------------------------------------------------------
# profile


def _add_profile(sub) -> None:
    p = _command(sub, "profile", _cmd_profile, "latency of every op and candidate op group on every PU (cached)")
    _add_model_args(p)
    _add_problem_args(p)
    p.add_argument("--export", default=None, metavar="FILE.json", help="also save the profiles as JSON (to plan elsewhere)")


def _cmd_profile(args: argparse.Namespace) -> int:
    from partitiontuner.results import ProfileTable
    from partitiontuner.workflow import load_problem

    _check_outputs((args.export, "profile export"))
    problem = load_problem(_spec(args))
    if args.export:
        problem.profiles.save_json(args.export)
    res = ProfileTable(problem, args.export)
    if args.json:
        _print_json(res.to_dict())
    else:
        render.profile(_console(), res)
    return 0


# ---------------------------------------------------------------------------------
# run / export


def _add_run(sub) -> None:
    p = _command(sub, "run", _cmd_run, "execute a saved plan for real (NPUs emulated) and check the outputs",
                 description="Execute a saved plan: one thread per PU, CPU partitions in ONNX Runtime, NPU "
                             "partitions emulated (emulator time, reference tensors). Prints measured beside "
                             "simulated times. Exit codes: 0 outputs match the whole-model run; "
                             f"{EXIT_OUTPUTS_DIFFER} the outputs differ; 2 bad input (one line on stderr).")
    _add_saved_plan_args(p)
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the makespan is their median (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random graph inputs")
    p.add_argument("--trace", default=None, metavar="FILE.json", help="write a Chrome / Perfetto trace of the median run")
    p.add_argument("--gantt", default=None, help="write measured beside simulated as a Gantt chart (.png or .svg)")
    p.add_argument("--pin-cores", action="store_true", help="pin each PU's worker thread to its own cores")


def _cmd_run(args: argparse.Namespace) -> int:
    from partitiontuner.execute import run_plan

    if args.repeat < 1 or args.warmup < 0:
        raise ConfigError(f"--repeat must be >= 1 and --warmup >= 0, got {args.repeat} and {args.warmup}")
    _check_outputs((args.trace, "trace"), (args.gantt, "Gantt chart"))
    problem, plan, source = _saved_plan_problem(args)
    res = run_plan(problem, plan, repeat=args.repeat, warmup=args.warmup, seed=args.seed, pin_cores=args.pin_cores)
    from partitiontuner.trace import write_run_pictures

    write_run_pictures(problem, plan, res, args.trace, args.gantt)
    if args.json:
        _print_json({**res.to_dict(), "platform_source": source})
    else:
        render.execution(_console(), res)
    return 0 if res.outputs_match else EXIT_OUTPUTS_DIFFER


def _add_export(sub) -> None:
    p = _command(sub, "export", _cmd_export, "write one ONNX model per partition plus a manifest (for a compiler back end)")
    _add_saved_plan_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it holds a previous export and nothing else")


def _cmd_export(args: argparse.Namespace) -> int:
    from partitiontuner.atomic import check_writable
    from partitiontuner.export import export_plan

    check_writable(args.out, what="export directory", directory=True)
    problem, plan, _ = _saved_plan_problem(args)
    res = export_plan(problem, plan, args.out, force=args.force)
    if args.json:
        _print_json(res.to_dict())
    else:
        render.export(_console(), res)
    return 0


# ---------------------------------------------------------------------------------
# train


def _add_train(sub) -> None:
    from partitiontuner.training.args import add_training_arguments

    p = sub.add_parser("train", help="train the RL policy with PPO (writes a checkpoint, CSV and TensorBoard logs)",
                       description="Train the GNN policy with PPO over the training corpus (zoo training split + "
                                   "generated DAGs). Every training option has a flag (the same as "
                                   "python -m partitiontuner.training.ppo).")
    add_training_arguments(p)
    p.add_argument("--json", action="store_true", help="no progress bars; print one JSON summary at the end")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from partitiontuner.training.args import args_from_namespace
    from partitiontuner.training.checkpoint import load_checkpoint
    from partitiontuner.training.ppo import train

    cfg = args_from_namespace(args)
    cfg.progress = cfg.progress and not args.json
    path = train(cfg, log=(lambda _msg: None) if args.json else (lambda msg: _console().print(msg, soft_wrap=True)))
    if args.json:
        ck = load_checkpoint(path)
        _print_json({"checkpoint": str(path), "global_step": ck.global_step, "iteration": ck.iteration,
                     "validation": ck.info.get("validation") or {}})
    return 0


# ---------------------------------------------------------------------------------
# evaluate


def _add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", _cmd_evaluate, "every model x every planner: makespans, paper metrics, ratio to the oracle")
    p.add_argument("--models", nargs="+", default=None, help="models (default: every built-in model)")
    p.add_argument("--methods", nargs="+", default=None, help="planners (default: all)")
    _add_platform_arg(p)
    _add_profiles_arg(p)
    p.add_argument("--time-limit", type=float, default=600.0, help="oracle time limit per model, s (default: 600)")
    p.add_argument("--measure", action="store_true", help="also run every plan with the executor (repeats interleaved "
                                                          "across a model's plans; median, p10, p90)")
    p.add_argument("--repeat", type=int, default=5, help="--measure: timed runs per plan (default: 5)")
    _add_cost_model_args(p)
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each (model, method) as a Ray task: a local Ray instance, or the cluster at ADDRESS")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from partitiontuner.agents.registry import METHODS
    from partitiontuner.atomic import check_writable
    from partitiontuner.evaluate import default_models, evaluate, write_outputs

    models = args.models or default_models()
    methods = args.methods or list(METHODS)
    if args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be > 0, got {args.time_limit}")
    check_writable(args.out, what="results directory", directory=True)
    total = len(models) * len(methods)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=render.console(stderr=True), disable=args.json, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)

        def step(model: str, method: str) -> None:
            progress.update(task, advance=1, description=f"{model}: {method}")

        ev = evaluate(models, methods, args.platform, args.profiles, oracle_time_limit_s=args.time_limit,
                      measure=args.measure, measure_repeat=args.repeat, on_step=step, ray_address=args.ray,
                      journal=f"{args.out}/jobs.jsonl", cost_model=_cost_model(args))
    written = write_outputs(ev, args.out)
    if args.json:
        _print_json({**ev.to_dict(), "files": [str(p) for p in written]})
    else:
        render.evaluation(_console(), ev, written, args.out)
    return 0


# ---------------------------------------------------------------------------------
# platform init


def _add_platform(sub) -> None:
    p = sub.add_parser("platform", help="platform files: init writes a commented one for this host")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="write a commented platform YAML for this host (cores, caches, ORT providers)",
                              description="Write a platform YAML describing this host (one single-thread CPU PU per "
                                          "core, caches and ONNX Runtime providers as comments, an NPU template) to "
                                          "edit into your SoC. It loads with --platform FILE as written.")
    init.add_argument("--out", default=None, metavar="FILE", help="write here (default: print to stdout)")
    init.add_argument("--force", action="store_true", help="replace FILE if it exists")
    _add_debug_alias(init)
    init.set_defaults(func=_cmd_platform_init)


def _cmd_platform_init(args: argparse.Namespace) -> int:
    from partitiontuner.platform_init import write_host_platform

    text = write_host_platform(args.out, force=args.force)
    if args.out is None:
        sys.stdout.write(text)
    else:
        print(f"platform for this host written to {args.out}; use it with --platform {args.out}", file=sys.stderr)
    return 0



# ---------------------------------------------------------------------------------
# calibrate


def _add_calibrate(sub) -> None:
    p = _command(sub, "calibrate", _cmd_calibrate,
                 "fit the cost model's launch and transfer costs to real runs on this host",
                 description="Run microbenchmark plans (blocks of varied size on alternating PUs, built from zoo "
                             "models with measured profiles) on the executor and fit each PU's launch cost per "
                             "partition and each link's latency and bandwidth. Stored under the profile cache, "
                             "keyed by host and platform, and used by every later command with measured profiles.")
    _add_platform_arg(p)
    p.add_argument("--profiles", default="measure", help="must be measure (the default)")
    p.add_argument("--models", nargs="+", default=None, help="zoo models for the microbenchmarks (default: squeezenet resnet18)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per microbenchmark plan (default: 10)")
    p.add_argument("--budget", type=float, default=200.0, metavar="S", help="stop starting plans after S seconds (default: 200)")
    p.add_argument("--pin-cores", action="store_true", help="pin each PU's worker thread to its own cores")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from partitiontuner.microbench import CalibrateArgs, calibrate
    from partitiontuner.stats import load_warning

    cfg = CalibrateArgs(platform=args.platform, models=tuple(args.models) if args.models else CalibrateArgs.models,
                        profiles=args.profiles, repeat=args.repeat, budget_s=args.budget, pin_cores=args.pin_cores)
    cfg.check()
    warning = load_warning()
    if warning:
        render.note(warning, "warning")
    progress = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    cal, path = calibrate(cfg, progress)
    if args.json:
        _print_json({**cal.to_dict(), "path": str(path), "cost_model": "calibrated",
                     "warnings": [warning] if warning else []})
    else:
        render.calibration(_console(), cal, path)
    return 0


# ---------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partitiontuner",
        description="Schedule DNN operators over heterogeneous PUs (CPU + NPUs): profile, plan, simulate, run.",
        epilog=f"Exit codes: 0 success; 2 bad input or a request that cannot be met (one line on stderr); "
               f"{EXIT_OUTPUTS_DIFFER} run: the outputs differ from the whole-model run; 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"partitiontuner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS = [_add_models, _add_graph, _add_plan, _add_simulate, _add_evaluate, _add_profile, _add_run, _add_export, _add_train,
             _add_platform, _add_calibrate]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_entry_point(lambda: args.func(args), debug=args.debug)




if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "ConfigError", "EXIT_OUTPUTS_DIFFER"]
