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
    )


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def _console() -> Console:
    return Console(highlight=False)


# ---------------------------------------------------------------------------------
# models / graph


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the built-in models")
    p.add_argument("--json", action="store_true")
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


_COMMANDS = [_add_models, _add_graph]


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
