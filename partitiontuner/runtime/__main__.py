"""``python -m partitiontuner.runtime DIR``: run an exported plan (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partitiontuner.atomic import write_atomic
from partitiontuner.errors import ConfigError, run_entry_point
from partitiontuner.runtime import RunResult, load_export, run_export

PROG = "python -m partitiontuner.runtime"


@dataclass
class Args:
    """The runner's options."""

    export_dir: Path
    """directory written by ``partitiontuner export``"""
    inputs: Path | None = None
    """graph inputs as an .npz (default: random with ``seed``)"""
    out: Path | None = None
    """write the graph outputs to this .npz"""
    seed: int = 0
    """seed of the random inputs"""
    repeat: int = 1
    """timed runs; the makespan is their median"""
    warmup: int = 1
    """untimed runs first (sessions allocate on their first run)"""
    threads: int = 1
    """intra-op threads of every partition's session"""
    provider: dict[str, list[str]] = field(default_factory=dict)
    """PU -> execution providers for partitions the manifest gives none"""
    json: bool = False
    """print one JSON object"""


def parse_args(argv: Sequence[str] | None = None) -> tuple[Args, bool]:
    p = argparse.ArgumentParser(prog=PROG, description="Run a plan exported by `partitiontuner export` with ONNX Runtime "
                                "only: one thread per PU, partitions in each PU's order, tensors passed by name.")
    p.add_argument("export_dir", type=Path, metavar="DIR", help=Args.__dataclass_fields__["export_dir"].__doc__ or "")
    p.add_argument("--inputs", type=Path, default=None, metavar="IN.npz", help="graph inputs (default: random, --seed)")
    p.add_argument("--out", type=Path, default=None, metavar="OUT.npz", help="write the graph outputs here")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs; the makespan is their median (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per partition session (default 1)")
    p.add_argument("--provider", action="append", default=[], metavar="PU=PROVIDER[+PROVIDER]",
                   help="execution providers of a PU's partitions when the manifest names none (default CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    ns = p.parse_args(argv)
    providers = {}
    for item in ns.provider:
        pu, eq, names = item.partition("=")
        if not eq or not pu or not names:
            p.error(f"--provider expects PU=PROVIDER, got {item!r}")
        providers[pu] = names.split("+")
    args = Args(ns.export_dir, ns.inputs, ns.out, ns.seed, ns.repeat, ns.warmup, ns.threads, providers, ns.json)
    return args, ns.debug


def load_inputs(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ConfigError(f"inputs file not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile):
        raise ConfigError(f"{path}: not a NumPy .npz archive") from None


def save_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the name
            np.savez(f, **outputs)

    try:
        write_atomic(path, write)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def report(args: Args, res: RunResult, predicted_us: float | None) -> None:
    if args.json:
        sys.stdout.write(json.dumps({
            "makespan_us": round(res.makespan_us, 3), "makespan_runs_us": [round(x, 3) for x in res.makespans_us],
            "predicted_makespan_us": predicted_us,
            "partitions": [{"id": t.id, "device": t.device, "start_us": round(t.start_us, 3), "end_us": round(t.end_us, 3),
                            "providers": res.providers[t.id]} for t in res.timings],
            "outputs": {k: list(v.shape) for k, v in res.outputs.items()}, "out": str(args.out) if args.out else None,
            "notes": res.notes,
        }) + "\n")
        return
    print(f"{'id':>4} {'PU':<10} {'start us':>10} {'end us':>10} {'time us':>10}  providers")
    for t in res.timings:
        print(f"{t.id:>4} {t.device:<10} {t.start_us:>10.1f} {t.end_us:>10.1f} {t.end_us - t.start_us:>10.1f}  "
              f"{'+'.join(res.providers[t.id])}")
    runs = res.makespans_us
    spread = f" (median of {len(runs)} runs, {min(runs):.1f}..{max(runs):.1f})" if len(runs) > 1 else ""
    pred = f"; the planner predicted {predicted_us:.1f} us" if predicted_us is not None else ""
    print(f"makespan: {res.makespan_us:.1f} us{spread}{pred}")
    for note in res.notes:
        print(f"note: {note}")
    if args.out:
        print(f"outputs written to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    args, debug = parse_args(argv)

    def body() -> int:
        feeds = load_inputs(args.inputs) if args.inputs else None
        res = run_export(args.export_dir, feeds, seed=args.seed, repeat=args.repeat, warmup=args.warmup,
                         threads=args.threads, providers=args.provider)
        if args.out:
            save_outputs(args.out, res.outputs)
        report(args, res, load_export(args.export_dir).predicted_makespan_us)
        return 0

    return run_entry_point(body, debug=debug, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
