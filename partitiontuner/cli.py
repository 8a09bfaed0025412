"""The ``partitiontuner`` command: parse, call the library, print.

Every command that reports numbers takes ``--json`` and then prints exactly one JSON
object on stdout. User errors (:class:`PartitionTunerError`) print one line on stderr
and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from partitiontuner import __version__
from partitiontuner.errors import ConfigError, PartitionTunerError

EXIT_USER_ERROR = 2


# ---------------------------------------------------------------------------------
# shared options


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


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", default="cpu-npu", help="platform preset name or YAML file (default: cpu-npu)")
    p.add_argument("--profiles", default="measure",
                   help="measure (on this machine, cached; default), fixture (committed numbers) or a profile .json")
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


def _add_constraint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("constraints")
    g.add_argument("--pin", action="append", default=[], metavar="PATTERN=PU", help="run matching ops on PU (op name, op type or glob)")
    g.add_argument("--forbid", action="append", default=[], metavar="PATTERN:PU", help="never run matching ops on PU")
    g.add_argument("--max-partitions", type=int, default=None, help="at most N partitions")
    g.add_argument("--min-partition-ops", type=int, default=None, help="at least K ops per partition")
    g.add_argument("--constraints", default=None, metavar="FILE", help="YAML file with pin / forbid / max_partitions / min_partition_ops / strict")
    g.add_argument("--strict", action="store_true", help="fail if any op lands on the CPU only because the NPU cannot run it")


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


def _spec(args: argparse.Namespace, progress: bool = True):
    from partitiontuner.workflow import ProblemSpec

    return ProblemSpec(
        model=args.model,
        platform=getattr(args, "platform", "cpu-npu"),
        profiles=getattr(args, "profiles", "measure"),
        input_shapes=dict(getattr(args, "input_shape", [])),
        batch_size=getattr(args, "batch_size", None),
        threads=getattr(args, "threads", None),
        refresh=getattr(args, "refresh", False),
        constraints=_constraints(args),
        progress=progress and not getattr(args, "json", False),
        cost_model=_cost_model(args),
    )


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def _console() -> Console:
    return Console(highlight=False)


# ---------------------------------------------------------------------------------
# models / graph


def _add_debug_alias(p: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after the command too (``main`` looks for it in argv); the
    SUPPRESS default keeps the subparser from overwriting the top-level flag."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the built-in models")
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from partitiontuner.zoo import UNSEEN_MODELS, ZOO, load_model

    rows = []
    for name, m in ZOO.items():
        g = load_model(name)
        rows.append({"name": name, "description": m.description, "paper": m.paper, "num_ops": g.num_ops,
                     "input_shape": list(g.inputs[0].shape), "gflops": round(g.total_flops / 1e9, 3),
                     "rl_split": "unseen" if name in UNSEEN_MODELS else "train"})
    if args.json:
        _print_json({"models": rows})
        return 0
    t = Table(title="Built-in models")
    for col in ("name", "ops", "input shape", "GFLOPs", "paper", "RL split", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], str(r["num_ops"]), "x".join(map(str, r["input_shape"])), f"{r['gflops']:.3f}",
                  "yes" if r["paper"] else "", r["rl_split"], r["description"])
    _console().print(t)
    return 0


def _add_graph(sub) -> None:
    p = sub.add_parser("graph", help="ops, FLOPs, branches and blocks of a model")
    _add_model_args(p)
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_graph)


def _cmd_graph(args: argparse.Namespace) -> int:
    from collections import Counter

    from partitiontuner.branches import analyse
    from partitiontuner.zoo import load_model

    g = load_model(args.model, input_shapes=dict(args.input_shape), batch_size=args.batch_size)
    s = analyse(g)
    names = [n.name for n in g.nodes]
    if args.json:
        _print_json({
            "model": g.name, "hash": g.content_hash, "num_ops": g.num_ops,
            "gflops": round(g.total_flops / 1e9, 6), "num_edges": len(g.edges),
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in g.outputs],
            "num_blocks": len(s.blocks), "max_block_ops": s.max_block_ops,
            "max_parallel_width": s.max_parallel_width,
            "cut_vertices": [names[c] for c in s.cut_vertices],
            "blocks": [{"ops": [names[v] for v in b.ops], "width": b.width,
                        "branches": [[names[v] for v in br] for br in b.branches]} for b in s.blocks],
            "sequential_branches": [[names[v] for v in br] for br in s.sequential_branches],
            "ops": [{"name": n.name, "op_type": n.op_type, "output_shape": list(n.output_shapes[0]) if n.output_shapes else [],
                     "flops": n.flops, "bytes_read": n.bytes_read, "bytes_written": n.bytes_written,
                     "weight_bytes": n.weight_bytes} for n in g.nodes],
        })
        return 0
    con = _console()
    con.print(f"[bold]{g.name}[/bold]  {g.num_ops} ops, {len(g.edges)} edges, {g.total_flops / 1e9:.3f} GFLOPs, "
              f"inputs {', '.join(t.name + ' ' + 'x'.join(map(str, t.shape)) for t in g.inputs)}")
    t = Table(title="Ops by type")
    for col in ("op type", "count", "GFLOPs", "weights MiB"):
        t.add_column(col, justify="right" if col != "op type" else "left")
    counts = Counter(n.op_type for n in g.nodes)
    for op_type, k in counts.most_common():
        fl = sum(n.flops for n in g.nodes if n.op_type == op_type)
        wb = sum(n.weight_bytes for n in g.nodes if n.op_type == op_type)
        t.add_row(op_type, str(k), f"{fl / 1e9:.4f}", f"{wb / 2**20:.2f}")
    con.print(t)
    big = max(s.blocks, key=lambda b: len(b.ops))
    con.print(f"{len(s.cut_vertices)} cut vertices, {len(s.blocks)} blocks; largest block {len(big.ops)} ops "
              f"(ending at {names[big.cut] if big.cut is not None else 'the outputs'}); max parallel width {s.max_parallel_width}")
    multi = [b for b in s.blocks if len(b.branches) > 1]
    if multi:
        bt = Table(title="Blocks with parallel branches")
        for col in ("block", "ops", "width", "branches (first op .. last op, length)"):
            bt.add_column(col)
        for b in multi:
            desc = "; ".join(f"{names[br[0]]}..{names[br[-1]]} ({len(br)})" for br in b.branches)
            bt.add_row(str(b.index), str(len(b.ops)), str(b.width), desc)
        con.print(bt)
    con.print(f"{len(s.sequential_branches)} sequential branches; longest "
              f"{max(len(b) for b in s.sequential_branches)} ops")
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


def _planner(args: argparse.Namespace):
    from partitiontuner.agents.registry import make_planner

    given = {"samples": args.samples, "seed": args.seed, "checkpoint": args.checkpoint, "time_limit_s": args.time_limit}
    accepts = {"rl": {"samples", "seed", "checkpoint"}, "random": {"samples", "seed"}, "oracle": {"time_limit_s"}}
    options = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in accepts.get(args.method, set()):
            flag = "--" + key.replace("_s", "").replace("_", "-")
            raise ConfigError(f"{flag} does not apply to method {args.method!r}")
        options[key] = value
    return make_planner(args.method, **options)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="make a plan (default: squeezenet on cpu-npu with the RL policy)")
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    import time

    from partitiontuner.plan import save_plan, validate_plan
    from partitiontuner.report import check_strict, placement_report
    from partitiontuner.simulate import simulate
    from partitiontuner.workflow import load_problem

    planner = _planner(args)
    problem = load_problem(_spec(args))
    t0 = time.perf_counter()
    plan = planner.plan(problem)
    planning_time = time.perf_counter() - t0
    tuned = None
    if args.tune is not None:
        from partitiontuner.tune import tune

        tuned = tune(problem, args.method, plan, args.tune, pin_cores=args.pin_cores)
        plan = tuned.best.plan
    validate_plan(problem, plan)
    sim = simulate(problem, plan)
    report = placement_report(problem, plan, sim)
    if problem.constraints.strict:
        check_strict(problem, report)
    warning = report.fallback_summary()
    if args.out:
        save_plan(problem, plan, args.out, sim.makespan_us, sim.parallel_pairs())
    if args.gantt:
        from partitiontuner.viz import gantt_chart

        gantt_chart(problem, plan, sim, args.gantt, title=f"{problem.graph.name} on {problem.platform.name}: {plan.method}")
    if args.dot:
        from partitiontuner.viz import write_dot

        write_dot(problem, plan, args.dot)
    if args.json:
        rep = report.to_dict()
        _print_json({
            "model": problem.graph.name, "platform": problem.platform.name, "method": plan.method,
            "makespan_us": round(sim.makespan_us, 3), "planning_time_s": round(planning_time, 4),
            "num_partitions": plan.num_partitions, "profiles": problem.profiles.source,
            "partitions": [{"id": p["id"], "device": p["device"], "ops": p["ops"], "start_us": p["start_us"],
                            "end_us": p["end_us"], "parallel_with": p["parallel_with"]} for p in rep["partitions"]],
            "placement": rep["placement"],
            "info": {k: v for k, v in plan.info.items()},
            "warnings": [warning] if warning else [],
            "out": args.out, "cost_model": _model_label(problem),
            **({"tune": tuned.to_dict()} if tuned else {}),
        })
        return 0
    if warning:
        print(f"partitiontuner: warning: {warning}", file=sys.stderr)
    con = _console()
    if tuned:
        from partitiontuner.cli_fidelity import print_tune

        print_tune(con, tuned)
    _print_partitions(con, problem, report)
    if args.report:
        _print_report(con, report)
    busy = sim.busy_us()
    util = ", ".join(f"{pu} {100 * busy.get(pu, 0.0) / sim.makespan_us:.0f}%" for pu in problem.pus)
    con.print(f"[bold]{problem.graph.name}[/bold] on {problem.platform.name} with {plan.method}: "
              f"makespan [bold]{sim.makespan_us:.1f} us[/bold], {plan.num_partitions} partitions, "
              f"planned in {planning_time:.3f} s (busy: {util}; profiles: {problem.profiles.source}; "
              f"{_model_label(problem)} cost model)")
    for key in ("proven_optimal", "lower_bound_us", "gap"):
        if key in plan.info:
            con.print(f"  {key}: {plan.info[key]}")
    if args.out:
        con.print(f"plan written to {args.out}")
    return 0


def _print_partitions(con: Console, problem, report) -> None:
    t = Table(title="Partitions")
    for col in ("id", "PU", "ops", "first .. last op", "start us", "end us", "time us", "parallel with"):
        t.add_column(col, justify="right" if col not in ("PU", "first .. last op", "parallel with") else "left")
    for p in report.partitions:
        span = p.ops[0] if len(p.ops) == 1 else f"{p.ops[0]} .. {p.ops[-1]}"
        t.add_row(str(p.index), p.device, str(len(p.ops)), span, f"{p.start_us:.1f}", f"{p.end_us:.1f}",
                  f"{p.predicted_us:.1f}", ",".join(map(str, p.parallel_with[:6])) + ("..." if len(p.parallel_with) > 6 else ""))
    con.print(t)


def _print_report(con: Console, report) -> None:
    t = Table(title="Placement report")
    for col in ("op", "type", "PU", "part", "start us", "end us", "reason", "detail"):
        t.add_column(col)
    for o in report.ops:
        d = o.detail
        if o.reason == "cost":
            lat = ", ".join(f"{k} {v}" if v is not None else f"{k} -" for k, v in d["latency_us"].items())
            detail = f"{lat}; transfer avoided {d['transfer_avoided_us']} us"
        elif o.reason in ("unsupported", "forbidden"):
            detail = "; ".join(f"{k}: {v}" for k, v in d["excluded_by"].items())
        elif o.reason == "pinned":
            detail = d["rule"]
        else:
            detail = f"faster on {d['faster_pu']}, which has {d['capacity_mib']} MiB"
        t.add_row(o.op, o.op_type, o.device, str(o.partition), f"{o.start_us:.1f}", f"{o.end_us:.1f}", o.reason, detail)
    con.print(t)


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a saved plan")
    _add_model_args(p)
    p.add_argument("plan", help="plan file (.yaml/.yml or .json)")
    _add_problem_args(p)
    p.add_argument("--gantt", default=None, help="write a Gantt chart (.png or .svg)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from partitiontuner.plan import load_plan
    from partitiontuner.report import placement_report
    from partitiontuner.simulate import simulate
    from partitiontuner.workflow import load_problem

    problem = load_problem(_spec(args))
    plan = load_plan(problem, args.plan)
    sim = simulate(problem, plan)
    if args.gantt:
        from partitiontuner.viz import gantt_chart

        gantt_chart(problem, plan, sim, args.gantt, title=f"{problem.graph.name} on {problem.platform.name}: {plan.method}")
    if args.json:
        _print_json({
            "model": problem.graph.name, "platform": problem.platform.name, "method": plan.method,
            "makespan_us": round(sim.makespan_us, 3), "num_partitions": plan.num_partitions,
            "partitions": [{"id": t.index, "device": t.device, "ops": [problem.graph.nodes[v].name for v in plan.partitions[t.index].ops],
                            "start_us": round(t.start_us, 3), "end_us": round(t.end_us, 3), "work_us": round(t.work_us, 3),
                            "overhead_us": round(t.overhead_us, 3)} for t in sim.partitions],
            "cost_model": _model_label(problem),
            "transfers": [{"tensor": x.tensor, "size_bytes": x.size_bytes, "src": x.src_device, "dst": x.dst_device,
                           "src_partition": x.src_partition, "dst_partition": x.dst_partition,
                           "start_us": round(x.start_us, 3), "end_us": round(x.end_us, 3)} for x in sim.transfers],
        })
        return 0
    con = _console()
    _print_partitions(con, problem, placement_report(problem, plan, sim))
    con.print(f"[bold]{problem.graph.name}[/bold] on {problem.platform.name}: makespan [bold]{sim.makespan_us:.1f} us[/bold], "
              f"{plan.num_partitions} partitions, {len(sim.transfers)} transfers ({_model_label(problem)} cost model)")
    return 0


# ---------------------------------------------------------------------------------
# profile


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="latency of every op and candidate op group on every PU (cached)")
    _add_model_args(p)
    _add_problem_args(p)
    p.add_argument("--export", default=None, metavar="FILE.json", help="also save the profiles as JSON (to plan elsewhere)")
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    import math

    import numpy as np

    from partitiontuner.workflow import load_problem

    problem = load_problem(_spec(args))
    prof, graph, pus = problem.profiles, problem.graph, problem.pus
    if args.export:
        prof.save_json(args.export)

    def lat(values) -> dict[str, float | None]:
        return {pu: None if math.isnan(v) else round(float(v), 3) for pu, v in zip(pus, values, strict=True)}

    def fastest(values) -> str:
        finite = [(v, pu) for pu, v in zip(pus, values, strict=True) if not math.isnan(v)]
        return min(finite)[1] if finite else ""

    ops = [{"name": n.name, "op_type": n.op_type, "latency_us": lat(prof.op_latency_us[n.index]),
            "spread": lat(prof.op_spread[n.index]), "fastest": fastest(prof.op_latency_us[n.index])} for n in graph.nodes]
    groups = []
    for key, values in sorted(prof.groups.items()):
        members = prof.op_latency_us[list(key)].sum(axis=0)
        groups.append({"ops": [graph.nodes[i].name for i in key], "op_types": [graph.nodes[i].op_type for i in key],
                       "latency_us": lat(values), "sum_us": lat(members)})
    if args.json:
        _print_json({"model": graph.name, "platform": problem.platform.name, "pus": list(pus), "source": prof.source,
                     "host": prof.host, "ops": ops, "groups": groups})
        return 0

    def cell(v: float | None) -> str:
        return "—" if v is None else f"{v:,.1f}"

    con = _console()
    t = Table(title=f"{graph.name} on {problem.platform.name}: op latency (us, {prof.source})")
    t.add_column("op")
    t.add_column("type")
    for pu in pus:
        t.add_column(pu, justify="right")
    t.add_column("fastest")
    for op in ops:
        t.add_row(op["name"], op["op_type"], *(cell(op["latency_us"][pu]) for pu in pus), op["fastest"])
    con.print(t)
    if groups:
        gt = Table(title="op groups: latency (us) and ratio to the sum of their ops")
        gt.add_column("ops", overflow="fold")
        gt.add_column("types")
        for pu in pus:
            gt.add_column(pu, justify="right")
        for g in groups:
            cells = []
            for pu in pus:
                v, s = g["latency_us"][pu], g["sum_us"][pu]
                cells.append("—" if v is None else f"{v:,.1f} ({v / s:.2f}x)" if s else cell(v))
            gt.add_row(" > ".join(g["ops"]), "-".join(g["op_types"]), *cells)
        con.print(gt)
    totals = ", ".join(f"{pu} {np.nansum(prof.op_latency_us[:, j]):,.0f} us" for j, pu in enumerate(pus))
    con.print(f"{graph.num_ops} ops, {len(groups)} groups; sum of supported op latencies: {totals}"
              + (f"; exported to {args.export}" if args.export else ""))
    return 0


# ---------------------------------------------------------------------------------
# run / export


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="execute a saved plan for real (NPUs emulated) and check the outputs",
                       description="Execute a saved plan: one thread per PU, CPU partitions in ONNX Runtime, NPU "
                                   "partitions emulated (emulator time, reference tensors). Prints measured beside "
                                   "simulated times; exits 1 if the outputs differ from the whole-model run.")
    _add_model_args(p)
    p.add_argument("plan", help="plan file (.yaml/.yml or .json)")
    _add_problem_args(p)
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the makespan is their median (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random graph inputs")
    p.add_argument("--trace", default=None, metavar="FILE.json", help="write a Chrome / Perfetto trace of the median run")
    p.add_argument("--gantt", default=None, help="write measured beside simulated as a Gantt chart (.png or .svg)")
    p.add_argument("--pin-cores", action="store_true", help="pin each PU's worker thread to its own cores")
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from partitiontuner.execute import run_plan
    from partitiontuner.plan import load_plan
    from partitiontuner.workflow import load_problem

    if args.repeat < 1 or args.warmup < 0:
        raise ConfigError(f"--repeat must be >= 1 and --warmup >= 0, got {args.repeat} and {args.warmup}")
    problem = load_problem(_spec(args))
    plan = load_plan(problem, args.plan)
    res = run_plan(problem, plan, repeat=args.repeat, warmup=args.warmup, seed=args.seed, pin_cores=args.pin_cores)
    from partitiontuner.cli_fidelity import write_run_pictures

    write_run_pictures(problem, plan, res, args.trace, args.gantt)
    if args.json:
        _print_json(res.to_dict())
        return 0 if res.outputs_match else 1
    con = _console()
    t = Table(title=f"{problem.graph.name} on {problem.platform.name}: {plan.method} (us; * = emulated)")
    for col in ("id", "PU", "ops", "start", "pred.", "time", "pred.", "ratio"):
        t.add_column(col, justify="left" if col == "PU" else "right")
    for q in res.partitions:
        ratio = f"{q.measured_us_median / q.simulated_us:.2f}" if q.simulated_us > 0 else "-"
        t.add_row(str(q.index), q.device + ("*" if q.emulated else ""), str(len(q.ops)), f"{q.measured_start_us:.1f}",
                  f"{q.simulated_start_us:.1f}", f"{q.measured_us_median:.1f}", f"{q.simulated_us:.1f}", ratio)
    con.print(t)
    con.print(f"makespan: measured [bold]{res.measured_makespan_us:.1f} us[/bold] (median of {res.repeat}; p10 "
              f"{res.measured_p10_us:.1f}, p90 {res.measured_p90_us:.1f}), simulated "
              f"[bold]{res.simulated_makespan_us:.1f} us[/bold] ({res.cost_model} cost model), "
              f"measured/simulated {res.ratio:.3f}")
    verdict = "[green]match[/green]" if res.outputs_match else "[red]DO NOT match[/red]"
    con.print(f"outputs {verdict} the whole-model ONNX Runtime run (rtol {res.rtol:g}, atol {res.atol:g}; "
              f"max abs error {res.max_abs_error:.3g})")
    for note in res.notes:
        con.print(f"note: {note}")
    for w in res.warnings:
        print(f"partitiontuner: warning: {w}", file=sys.stderr)
    return 0 if res.outputs_match else 1


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write one ONNX model per partition plus a manifest (for a compiler back end)")
    _add_model_args(p)
    p.add_argument("plan", help="plan file (.yaml/.yml or .json)")
    _add_problem_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (written atomically)")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds a previous export")
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from partitiontuner.export import export_plan
    from partitiontuner.plan import load_plan
    from partitiontuner.workflow import load_problem

    problem = load_problem(_spec(args))
    plan = load_plan(problem, args.plan)
    res = export_plan(problem, plan, args.out, force=args.force)
    m = res.manifest
    if args.json:
        _print_json({"out": str(res.out_dir), "manifest": str(res.out_dir / "manifest.json"), "files": list(res.files),
                     "num_partitions": len(res.files), "model": problem.graph.name, "platform": problem.platform.name,
                     "method": plan.method, "order": m["order"], "predicted_makespan_us": m["predicted_makespan_us"]})
        return 0
    con = _console()
    per_pu = ", ".join(f"{pu} {len(ids)}" for pu, ids in m["order"].items() if ids)
    con.print(f"exported {len(res.files)} partitions of {problem.graph.name} ({per_pu}) to {res.out_dir}/ "
              f"with manifest.json and manifest.yaml")
    return 0


# ---------------------------------------------------------------------------------
# train


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the RL policy with PPO (writes a checkpoint, CSV and TensorBoard logs)",
                       description="Train the GNN policy with PPO over the training corpus (zoo training split + "
                                   "generated DAGs). Every training option has a flag here or goes through --set.")
    p.add_argument("--steps", type=int, default=None, help="environment steps (sampled op decisions) to train for "
                                                          "(default: Args.total_timesteps in training/ppo.py)")
    p.add_argument("--out", default=None, help="checkpoint path (default runs/ppo/policy.pt; logs next to it)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue a run exactly from its checkpoint")
    p.add_argument("--seed", type=int, default=None, help="seed of everything (default 1)")
    p.add_argument("--problems-per-iteration", type=int, default=None, help="corpus problems drawn per PPO iteration (default 8)")
    p.add_argument("--samples-per-problem", type=int, default=None,
                   help="sampled episodes per drawn problem, besides the greedy baseline episode (default 16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN", help="stop with a checkpoint after MIN minutes")
    p.add_argument("--val-reference", choices=("baselines", "oracle"), default=None,
                   help="validation reference: best baseline (default) or the oracle")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training option (python -m partitiontuner.training.ppo --help lists them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary at the end")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from partitiontuner.training.checkpoint import load_checkpoint
    from partitiontuner.training.ppo import args_from, train

    overrides: dict[str, Any] = {}
    for flag, name in (("steps", "total_timesteps"), ("out", "out"), ("resume", "resume"), ("seed", "seed"),
                       ("problems_per_iteration", "problems_per_iteration"), ("samples_per_problem", "samples_per_problem"),
                       ("threads", "threads"), ("time_limit", "time_limit_min"),
                       ("val_reference", "val_reference")):
        if getattr(args, flag) is not None:
            overrides[name] = getattr(args, flag)
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip().replace("-", "_")] = value.strip()
    overrides["progress"] = not (args.no_progress or args.json)
    cfg = args_from(overrides)
    quiet = args.json
    path = train(cfg, log=(lambda _msg: None) if quiet else (lambda msg: _console().print(msg, soft_wrap=True)),
                 explicit=[k for k in overrides if k != "progress"])
    if args.json:
        ck = load_checkpoint(path)
        _print_json({"checkpoint": str(path), "global_step": ck.global_step, "iteration": ck.iteration,
                     "validation": ck.info.get("validation") or {}})
    return 0


# ---------------------------------------------------------------------------------
# evaluate


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="every model x every planner: makespans, paper metrics, ratio to the oracle")
    p.add_argument("--models", nargs="+", default=None, help="models (default: every built-in model)")
    p.add_argument("--methods", nargs="+", default=None, help="planners (default: all)")
    p.add_argument("--platform", default="cpu-npu", help="platform preset or YAML (default: cpu-npu)")
    p.add_argument("--profiles", default="measure", help="measure (default), fixture, or a profile .json")
    p.add_argument("--time-limit", type=float, default=600.0, help="oracle time limit per model, s (default: 600)")
    p.add_argument("--measure", action="store_true", help="also run every plan with the executor (repeats interleaved "
                                                          "across a model's plans; median, p10, p90)")
    p.add_argument("--repeat", type=int, default=5, help="--measure: timed runs per plan (default: 5)")
    _add_cost_model_args(p)
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from partitiontuner.agents.registry import METHODS
    from partitiontuner.evaluate import (
        default_models,
        evaluate,
        rows_as_dicts,
        to_markdown,
        write_outputs,
    )

    models = args.models or default_models()
    methods = args.methods or list(METHODS)
    if args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be > 0, got {args.time_limit}")
    total = len(models) * len(methods)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=args.json, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)

        def step(model: str, method: str) -> None:
            progress.update(task, advance=1, description=f"{model}: {method}")

        ev = evaluate(models, methods, args.platform, args.profiles, oracle_time_limit_s=args.time_limit,
                      measure=args.measure, measure_repeat=args.repeat, on_step=step, cost_model=_cost_model(args))
    written = write_outputs(ev, args.out)
    if args.json:
        _print_json({"platform": ev.platform, "profiles": ev.profiles, "rows": rows_as_dicts(ev),
                     "files": [str(p) for p in written], "cost_model": ev.cost_model})
        return 0
    from rich.markdown import Markdown

    _console().print(Markdown(to_markdown(ev)))
    _console().print(f"cost model: {ev.cost_model}")
    _console().print(f"wrote {len(written)} files to {args.out}/ (results.csv, results.md, makespan_vs_oracle.png, Gantt charts, plans)")
    return 0


# ---------------------------------------------------------------------------------
# calibrate (the logic lives in partitiontuner.calibrate and partitiontuner.cli_fidelity)


def _model_label(problem) -> str:
    from partitiontuner.calibrate import cost_model_of

    return cost_model_of(problem)


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the cost model's launch and transfer costs to real runs on this host",
                       description="Run microbenchmark plans (blocks of varied size on alternating PUs, built from zoo "
                                   "models with measured profiles) on the executor and fit each PU's launch cost per "
                                   "partition and each link's latency and bandwidth. Stored under the profile cache, "
                                   "keyed by host and platform, and used by every later command with measured profiles.")
    p.add_argument("--platform", default="cpu-npu", help="platform preset name or YAML file (default: cpu-npu)")
    p.add_argument("--profiles", default="measure", help="must be measure (the default)")
    p.add_argument("--models", nargs="+", default=None, help="zoo models for the microbenchmarks (default: squeezenet resnet18)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per microbenchmark plan (default: 10)")
    p.add_argument("--budget", type=float, default=200.0, metavar="S", help="stop starting plans after S seconds (default: 200)")
    p.add_argument("--pin-cores", action="store_true", help="pin each PU's worker thread to its own cores")
    p.add_argument("--json", action="store_true")
    _add_debug_alias(p)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from partitiontuner.cli_fidelity import run_calibrate

    return run_calibrate(args, _console(), _print_json)


# ---------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partitiontuner",
        description="Schedule DNN operators over heterogeneous PUs (CPU + NPUs): profile, plan, simulate, run.",
    )
    parser.add_argument("--version", action="version", version=f"partitiontuner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS = [_add_models, _add_graph, _add_plan, _add_simulate, _add_evaluate, _add_profile, _add_run, _add_export, _add_train,
             _add_calibrate]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PartitionTunerError as exc:
        if debug:
            raise
        print(f"partitiontuner: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("partitiontuner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "ConfigError"]
