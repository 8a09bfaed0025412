"""Committed profiles of the built-in models, so tests and examples never time anything.

Each zoo model has one file ``profiling/fixtures/<model>.json`` (installed with the
package) holding 1-thread CPU measurements of every op and every candidate group
(:func:`partitiontuner.branches.chain_groups`), by op name, with the model's content
hash and the fingerprint of the host that measured them. :func:`fixture_profiles`
turns them into :class:`Profiles` for any platform: a CPU PU gets the fixture number
divided by its ``speed_factor`` and an NPU the emulator's number, exactly as
:func:`partitiontuner.profiling.build.build_profiles` does with live measurements.

Regenerate (on a quiet machine; overwrites the files atomically)::

    python -m partitiontuner.profiling.fixtures                      # all models
    python -m partitiontuner.profiling.fixtures --models squeezenet resnet18
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from partitiontuner.atomic import write_text_atomic
from partitiontuner.branches import chain_groups
from partitiontuner.errors import ConfigError, ProfileError, run_entry_point
from partitiontuner.graph import OpGraph
from partitiontuner.platform import OrtSettings, Platform
from partitiontuner.profiling.build import (
    CpuTable,
    assemble_profiles,
    measure_cpu,
    measured_devices,
)
from partitiontuner.profiling.cache import ProfileCache
from partitiontuner.profiling.cpu_profiler import PROTOCOL, CpuProfiler, MeasureSettings
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.safe_io import read_text

FORMAT = "partitiontuner-fixture"
VERSION = 1
#: fixtures hold 1-thread measurements only
THREADS = 1
REGENERATE = "python -m partitiontuner.profiling.fixtures --models {model}"


def fixture_dir() -> Path:
    """Where the package's fixture files live (the source tree in an editable install)."""
    return Path(str(resources.files("partitiontuner.profiling") / "fixtures"))


@dataclass(frozen=True)
class Fixture:
    """One model's committed CPU measurements (see the module docstring)."""

    model: str
    model_hash: str
    host: str
    ops: dict[str, tuple[float, float]]  # op name -> (latency_us, spread)
    groups: dict[tuple[str, ...], tuple[float, float]]  # op names in topological order -> (latency_us, spread)


@functools.cache
def load_fixture(model: str) -> Fixture:
    """Read and validate ``<model>.json`` (cached per process).

    Raises:
        ProfileError: missing or malformed file.
    """
    path = fixture_dir() / f"{model}.json"
    if not path.is_file():
        raise ProfileError(f"no fixture profiles for {model!r} ({path}); generate them with: {REGENERATE.format(model=model)}")
    try:
        data = json.loads(read_text(path, what="fixture file", error=ProfileError))
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} file")
        if data["threads"] != THREADS:
            raise ValueError(f"threads={data['threads']}")
        ops = {str(name): (float(t), float(s)) for name, t, s in data["ops"]}
        groups = {tuple(map(str, names)): (float(t), float(s)) for names, t, s in data["groups"]}
        return Fixture(str(data["model"]), str(data["model_hash"]), str(data["host"]), ops, groups)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProfileError(f"fixture file {path} is malformed ({exc}); regenerate it with: "
                           f"{REGENERATE.format(model=model)}") from None


def fixture_profiles(graph: OpGraph, platform: Platform) -> Profiles:
    """Profiles of a zoo model on any platform from the committed fixtures.

    Raises:
        ProfileError: not a built-in model, the graph differs from the one measured
            (other input shape or batch size), a CPU PU with more than one thread, or a
            missing or stale fixture file.
    """
    from partitiontuner.zoo import ZOO

    only = ("fixture profiles exist only for the built-in models at their default shapes with 1-thread "
            "CPUExecutionProvider PUs")
    if graph.name not in ZOO:
        raise ProfileError(f"{only}; {graph.name!r} is not a built-in model ({', '.join(ZOO)}): use measured profiles")
    measured = measured_devices(platform)
    for dev in (d for devs in measured.values() for d in devs):
        if dev.threads != THREADS:
            raise ProfileError(f"{only}; PU {dev.name!r} of platform {platform.name!r} has {dev.threads} threads: "
                               f"use measured profiles")
        if dev.providers != OrtSettings().providers or dev.provider_options:
            raise ProfileError(f"{only}; PU {dev.name!r} of platform {platform.name!r} runs on "
                               f"{', '.join(dev.providers)}: use measured profiles")
    fx = load_fixture(graph.name)
    if fx.model_hash != graph.content_hash:
        raise ProfileError(f"{only}; this {graph.name!r} graph (hash {graph.content_hash}) differs from the one "
                           f"measured (hash {fx.model_hash}): use measured profiles, or regenerate with "
                           f"{REGENERATE.format(model=graph.name)}")
    table = CpuTable(np.full(graph.num_ops, np.nan), np.full(graph.num_ops, np.nan))
    stale = f"fixture profiles for {graph.name!r} are stale (%s); regenerate with {REGENERATE.format(model=graph.name)}"
    for op in graph.nodes:
        if op.name not in fx.ops:
            raise ProfileError(stale % f"no entry for op {op.name!r}")
        table.op_latency_us[op.index], table.op_spread[op.index] = fx.ops[op.name]
    groups = chain_groups(graph)
    for g in groups:
        names = tuple(graph.nodes[i].name for i in sorted(g))
        if names not in fx.groups:
            raise ProfileError(stale % f"no entry for group {list(names)}")
        table.groups[tuple(sorted(g))] = fx.groups[names]
    # one-thread numbers stand for every such PU, pinned to its cores or not
    return assemble_profiles(graph, platform, dict.fromkeys(measured, table), groups, source="fixture", host=fx.host)


# ---------------------------------------------------------------------------------
# generation


def fixture_data(graph: OpGraph, table: CpuTable, cache: ProfileCache, baseline_us: float) -> dict[str, Any]:
    """The JSON document of one model's fixture (latencies rounded to 0.01 us)."""
    names = [op.name for op in graph.nodes]
    return {
        "format": FORMAT, "version": VERSION, "model": graph.name, "model_hash": graph.content_hash,
        "threads": THREADS, "protocol": PROTOCOL, "host": cache.host, "host_info": cache.fingerprint,
        "baseline_us": round(baseline_us, 3), "generated": time.strftime("%Y-%m-%d"),
        "regenerate": REGENERATE.format(model=graph.name),
        "ops": [[names[i], round(float(table.op_latency_us[i]), 2), round(float(table.op_spread[i]), 4)]
                for i in range(graph.num_ops)],
        "groups": [[[names[i] for i in g], round(t, 2), round(s, 4)] for g, (t, s) in sorted(table.groups.items())],
    }


def dump_fixture(data: dict[str, Any]) -> str:
    """Compact JSON with one op or group per line (small, and diffs stay readable)."""
    head = {k: v for k, v in data.items() if k not in ("ops", "groups")}
    lines = [json.dumps(head, separators=(",", ":"))[:-1] + ","]
    for key in ("ops", "groups"):
        items = ",\n".join(json.dumps(x, separators=(",", ":")) for x in data[key])
        lines.append(f'"{key}":[\n{items}\n]' + ("," if key == "ops" else ""))
    return "\n".join(lines) + "}\n"


def generate(models: Sequence[str], *, out_dir: Path | None = None, settings: MeasureSettings | None = None,
             cache: ProfileCache | None = None, progress: bool = True) -> list[Path]:
    """Measure ``models`` at 1 thread (cache refreshed: every unit timed anew, each
    distinct unit once per call) and write their fixture files atomically."""
    from partitiontuner.zoo import load_model

    out_dir = out_dir or fixture_dir()
    cache = cache or ProfileCache()
    profilers: dict[OrtSettings, CpuProfiler] = {}
    written = []
    for model in models:
        start = time.perf_counter()
        graph = load_model(model)
        table = measure_cpu(graph, THREADS, range(graph.num_ops), chain_groups(graph), cache=cache, refresh=True,
                            settings=settings, progress=progress, profilers=profilers)
        profiler = profilers.get(OrtSettings(THREADS)) or CpuProfiler(THREADS, settings)
        path = out_dir / f"{model}.json"
        write_text_atomic(path, dump_fixture(fixture_data(graph, table, cache, profiler.baseline_us)))
        path.chmod(0o644)  # package data: readable by all (the temporary file was 0600)
        print(f"wrote {path} ({graph.num_ops} ops, {len(table.groups)} groups, {path.stat().st_size / 1024:.1f} KiB) "
              f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        written.append(path)
    load_fixture.cache_clear()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from partitiontuner.zoo import ZOO

    parser = argparse.ArgumentParser(prog="python -m partitiontuner.profiling.fixtures",
                                     description="Re-measure the committed 1-thread CPU fixture profiles of the built-in models.")
    parser.add_argument("--models", nargs="+", default=list(ZOO), metavar="MODEL",
                        help=f"zoo models to measure (default: all: {' '.join(ZOO)})")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the package's fixture directory)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)

    def body() -> int:
        unknown = [m for m in args.models if m not in ZOO]
        if unknown:
            raise ConfigError(f"unknown model {unknown[0]!r} (built-in: {', '.join(ZOO)})")
        generate(args.models, out_dir=args.out)
        return 0

    return run_entry_point(body, debug=args.debug, prog="python -m partitiontuner.profiling.fixtures")


if __name__ == "__main__":
    sys.exit(main())
