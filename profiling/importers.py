"""Profiles measured on a real device, imported instead of measured or emulated here.

``--profiles`` takes, besides ``measure`` and ``fixture``, a list of sources separated
by commas::

    --profiles device.csv                      # CSV: op,pu,latency_us (names its PUs)
    --profiles exported.json                   # profile --export JSON (names its PUs)
    --profiles cpu=ort_profile.json            # ONNX Runtime trace of a run on PU cpu
    --profiles cpu=a.json,npu=npu.csv          # several files, merged
    --profiles cpu=ort_profile.json,fill=emulator

Formats (told apart by content, not by file name):

* CSV with the header ``op,pu,latency_us``: ``op`` is an op name, or a fused group
  written as op names joined by ``+`` (a run of consecutive ops of one sequential
  branch, e.g. ``conv1+bn1+relu1``); lines starting with ``#`` are comments.
* ONNX Runtime's profiling trace (``SessionOptions.enable_profiling``) of a
  whole-model run, mapped onto the graph's ops by :mod:`.ort_trace`; it holds one
  PU's numbers, so it is given as ``PU=file`` (a bare trace goes to the platform's
  only CPU PU when every node ran on ``CPUExecutionProvider``).
* The ``partitiontuner profile --export`` JSON (schema: ``profile.schema.json`` next
  to this module); ``null`` there means "cannot run".

The platform decides which PU can run which op. Every op a PU can run needs a number;
op groups are optional (a missing group means no fusion saving). Numbers missing from
the files are one error listing them, unless ``fill=`` (the ``--fill`` option)
completes them: ``emulator`` fills NPU gaps with the emulator's numbers, ``measure``
also measures CPU gaps with ONNX Runtime here. A PU the files do not mention at all is
taken wholly from the fill (ops and groups); a PU they mention keeps only their
groups. The profiles' ``source`` starts with ``imported`` and names the files.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partitiontuner.branches import chain_groups, sequential_branches
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform
from partitiontuner.profiling.ort_trace import CPU_PROVIDER, map_trace, read_trace, select_provider
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.safe_io import parse_json, read_text

FILL_SOURCES = ("emulator", "measure")
CSV_HEADER = ("op", "pu", "latency_us")
#: at most this many names in one error line
_SHOW = 8

Unit = tuple[int, ...]


@dataclass(frozen=True)
class Source:
    """One file of an import: ``pu`` is set for a one-PU file (``cpu=trace.json``)."""

    path: Path
    pu: str | None = None

    def __str__(self) -> str:
        return f"{self.pu}={self.path}" if self.pu else str(self.path)


@dataclass(frozen=True)
class ImportSpec:
    """A parsed ``--profiles`` value naming files (see the module docstring)."""

    sources: tuple[Source, ...]
    fill: str | None = None


@dataclass
class Imported:
    """Numbers read from the files, per PU name: unit -> latency (``nan``: cannot run).

    Attributes:
        notes: what was skipped or ignored, one line each.
    """

    values: dict[str, dict[Unit, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, pu: str, unit: Unit, latency_us: float, graph: OpGraph, where: str) -> None:
        table = self.values.setdefault(pu, {})
        if unit in table:
            raise ProfileError(f"{where}: {_unit_name(graph, unit)} on {pu} is given twice")
        table[unit] = latency_us


def parse_spec(text: str, fill: str | None = None) -> ImportSpec:
    """``[PU=]FILE[,[PU=]FILE...][,fill=emulator|measure]`` -> :class:`ImportSpec`.

    Raises:
        ProfileError: an empty item, an unknown fill, a file that does not exist.
    """
    sources = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ProfileError(f"--profiles {text!r}: empty item between commas")
        key, eq, value = item.partition("=")
        if eq and key == "fill":
            fill = value
            continue
        path = Path(value if eq else item)
        if not path.is_file():
            raise ProfileError(f"unknown profile source {item!r}: use measure, fixture or an existing file "
                               "(CSV op,pu,latency_us, an ONNX Runtime trace as PU=FILE, or a profile --export JSON)")
        sources.append(Source(path, key if eq else None))
    if not sources:
        raise ProfileError(f"--profiles {text!r} names no file")
    if fill is not None and fill not in FILL_SOURCES:
        raise ProfileError(f"unknown fill {fill!r}: use {' or '.join(FILL_SOURCES)}")
    return ImportSpec(tuple(sources), fill)


def import_profiles(text: str, graph: OpGraph, platform: Platform, *, fill: str | None = None,
                    refresh: bool = False, progress: bool = True) -> Profiles:
    """Profiles from the files named by ``text`` (a ``--profiles`` value), completed by
    ``fill``; notes on skipped entries go to stderr when ``progress``.

    Raises:
        ProfileError: unreadable or malformed file, unknown op or PU, bad latency,
            duplicate entry, a trace of another model, numbers missing without fill.
    """
    spec = parse_spec(text, fill)
    got = Imported()
    for src in spec.sources:
        read_source(src, graph, platform, got)
    profiles = assemble(graph, platform, got, spec, refresh=refresh, progress=progress)
    if progress:
        for note in got.notes:
            print(f"partitiontuner: note: {note}", file=sys.stderr)
    return profiles


def read_source(src: Source, graph: OpGraph, platform: Platform, got: Imported) -> None:
    """Add one file's numbers to ``got``, dispatching on its content."""
    where = str(src.path)
    text = read_text(src.path, what="profile file", error=ProfileError)
    head = text.lstrip()[:1]
    if head in ("[", "{"):
        data = parse_json(text, where=where, error=ProfileError)
        if isinstance(data, dict) and "format" in data:  # ours (Profiles.from_dict names a wrong format)
            _no_pu(src, "a profile --export JSON names its PUs")
            read_export(data, graph, platform, got, where)
        else:
            read_ort_trace(src, graph, platform, got)
    else:
        _no_pu(src, "a CSV names its PUs in the 'pu' column")
        read_csv(text, graph, platform, got, where)


def _no_pu(src: Source, why: str) -> None:
    if src.pu:
        raise ProfileError(f"{src}: drop '{src.pu}=': {why}")


def read_csv(text: str, graph: OpGraph, platform: Platform, got: Imported, where: str) -> None:
    """CSV rows ``op,pu,latency_us`` (see the module docstring)."""
    lines = [(k, line) for k, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ProfileError(f"{where}: empty CSV (expected the header {','.join(CSV_HEADER)})")
    rows = list(csv.reader(io.StringIO("\n".join(line for _, line in lines))))
    header = tuple(c.strip() for c in rows[0])
    if header != CSV_HEADER:
        raise ProfileError(f"{where}: the header must be {','.join(CSV_HEADER)}, got {','.join(header)}")
    unknown_ops: dict[str, int] = {}
    unknown_pus: dict[str, int] = {}
    parsed = []
    for (line_no, _), row in zip(lines[1:], rows[1:], strict=True):
        if len(row) != 3:
            raise ProfileError(f"{where}:{line_no}: expected 3 fields op,pu,latency_us, got {len(row)}")
        op, pu, value = (c.strip() for c in row)
        names = [n.strip() for n in op.split("+")]
        for n in names:
            if n not in graph.index:
                unknown_ops.setdefault(n, line_no)
        if pu not in platform.names:
            unknown_pus.setdefault(pu, line_no)
        parsed.append((line_no, names, pu, _latency(value, f"{where}:{line_no}")))
    if unknown_ops:
        raise ProfileError(f"{where}: {len(unknown_ops)} op name(s) not in model {graph.name!r}: "
                           f"{_listing(f'{n} (line {k})' for n, k in unknown_ops.items())}")
    if unknown_pus:
        raise ProfileError(f"{where}: PU(s) not in platform {platform.name!r} ({', '.join(platform.names)}): "
                           f"{_listing(f'{p} (line {k})' for p, k in unknown_pus.items())}")
    for line_no, names, pu, latency in parsed:
        unit = tuple(sorted(graph.index[n] for n in names))
        if len(set(unit)) != len(unit):
            raise ProfileError(f"{where}:{line_no}: group {'+'.join(names)} repeats an op")
        got.put(pu, unit, latency, graph, f"{where}:{line_no}")


def _latency(value: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ProfileError(f"{where}: latency_us {value!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise ProfileError(f"{where}: latency_us must be a finite number >= 0, got {value}")
    return x


def read_export(data: dict, graph: OpGraph, platform: Platform, got: Imported, where: str) -> None:
    """A ``profile --export`` document: checked against the model's hash, mapped by PU name."""
    prof = Profiles.from_dict(data, where)
    if prof.model_hash != graph.content_hash:
        raise ProfileError(f"{where}: profiles are for model {prof.model!r} (hash {prof.model_hash}), "
                           f"not {graph.name!r} (hash {graph.content_hash})")
    extra = [pu for pu in prof.pus if pu not in platform.names]
    if extra:
        raise ProfileError(f"{where}: PU(s) not in platform {platform.name!r} ({', '.join(platform.names)}): "
                           f"{_listing(extra)}")
    unknown = [name for name in prof.op_names if name not in graph.index]
    if unknown:
        raise ProfileError(f"{where}: {len(unknown)} op name(s) not in model {graph.name!r}: {_listing(unknown)}")
    ours = [graph.index[name] for name in prof.op_names]
    units = [((ours[i],), prof.op_latency_us[i]) for i in range(len(ours))]
    units += [(tuple(sorted(ours[i] for i in key)), lat) for key, lat in prof.groups.items()]
    for j, pu in enumerate(prof.pus):
        for unit, lat in units:
            latency = float(lat[j])
            if not (math.isnan(latency) or latency >= 0):
                raise ProfileError(f"{where}: {_unit_name(graph, unit)} on {pu}: latency_us must be >= 0, got {latency}")
            got.put(pu, unit, latency, graph, where)


def read_ort_trace(src: Source, graph: OpGraph, platform: Platform, got: Imported) -> None:
    """An ONNX Runtime profiling trace for one PU (:mod:`.ort_trace`)."""
    where = str(src.path)
    nodes = read_trace(src.path, where)
    pu = src.pu
    if pu is None:
        cpus = [d.name for d in platform.devices if d.kind == "cpu"]
        if len(cpus) != 1 or any(n.provider != CPU_PROVIDER for n in nodes):
            raise ProfileError(f"{where}: say which PU this ONNX Runtime trace was measured on, e.g. "
                               f"--profiles {platform.names[0]}={src.path}")
        pu = cpus[0]
    if pu not in platform.names:
        raise ProfileError(f"{src}: PU {pu!r} not in platform {platform.name!r} ({', '.join(platform.names)})")
    nodes, skipped = select_provider(nodes, platform.device(pu).kind, where)
    mapping = map_trace(graph, nodes, where)
    skipped.update(mapping.skipped)
    for unit, latency in mapping.units.items():
        got.put(pu, unit, latency, graph, where)
    fused = sum(len(u) > 1 for u in mapping.units)
    got.notes.append(f"{src}: {len(mapping.units)} trace nodes mapped onto {pu} ({fused} fused groups; "
                     f"providers {', '.join(f'{p} {k}' for p, k in mapping.providers.items())})"
                     + (f"; skipped {len(skipped)}: {_listing(f'{n} ({w})' for n, w in skipped.items())}" if skipped else ""))


# ---------------------------------------------------------------------------------
# assembly


def assemble(graph: OpGraph, platform: Platform, got: Imported, spec: ImportSpec, *,
             refresh: bool = False, progress: bool = True) -> Profiles:
    """Imported numbers on the platform's PUs, gaps completed by ``spec.fill``.

    Raises:
        ProfileError: a group that is not a run of one sequential branch, or numbers
            missing and no fill that can complete them.
    """
    _check_groups(graph, got)
    names = platform.names
    n, p = graph.num_ops, len(names)
    can = np.array([[d.can_run(op) for d in platform.devices] for op in graph.nodes], dtype=bool).reshape(n, p)
    missing = {pu: [i for i in range(n) if can[i, j] and (i,) not in got.values.get(pu, {})]
               for j, pu in enumerate(names)}
    _check_missing(graph, platform, got, missing, spec)
    base = _fill(graph, platform, got, missing, spec, refresh=refresh, progress=progress) if spec.fill else None
    lat = np.full((n, p), np.nan)
    spread = np.full((n, p), np.nan)
    keys = set(chain_groups(graph)) | {u for table in got.values.values() for u in table if len(u) > 1}
    glat = {g: np.full(p, np.nan) for g in keys}
    gspread = {g: np.full(p, np.nan) for g in keys}
    ignored = 0
    for j, pu in enumerate(names):
        table = got.values.get(pu, {})
        for i in range(n):
            if (i,) in table:
                lat[i, j] = table[(i,)] if can[i, j] else np.nan
                ignored += not can[i, j] and not math.isnan(table[(i,)])
            elif base is not None and can[i, j]:
                lat[i, j], spread[i, j] = base.op_latency_us[i, j], base.op_spread[i, j]
        for g in keys:
            if g in table:
                glat[g][j] = table[g] if can[list(g), j].all() else np.nan
            elif base is not None and pu not in got.values and g in base.groups:
                glat[g][j], gspread[g][j] = base.groups[g][j], base.group_spread[g][j]
    if ignored:
        got.notes.append(f"ignored {ignored} imported latencies of ops the platform says their PU cannot run")
    filled = [pu for pu in names if missing[pu] or pu not in got.values]
    source = "imported from " + ", ".join(str(s) for s in spec.sources)
    if spec.fill and filled:
        source += f" (filled by {spec.fill}: {', '.join(filled)})"
    return Profiles(
        model=graph.name, model_hash=graph.content_hash, platform=platform.name, pus=names,
        op_names=tuple(op.name for op in graph.nodes), op_latency_us=lat, op_spread=spread,
        groups=glat, group_spread=gspread, source=source, host=base.host if base is not None else "",
    )


def _check_groups(graph: OpGraph, got: Imported) -> None:
    place = {v: (c, k) for c, ops in enumerate(sequential_branches(graph)) for k, v in enumerate(ops)}
    for pu, table in got.values.items():
        for unit in table:
            if len(unit) < 2:
                continue
            cs = sorted(place[v] for v in unit)
            if len({c for c, _ in cs}) != 1 or [k for _, k in cs] != list(range(cs[0][1], cs[0][1] + len(cs))):
                raise ProfileError(f"group {_unit_name(graph, unit)} on {pu} is not a run of consecutive ops of one "
                                   "sequential branch, so no partition could run it fused")


def _check_missing(graph: OpGraph, platform: Platform, got: Imported, missing: dict[str, list[int]],
                   spec: ImportSpec) -> None:
    gaps = {pu: ops for pu, ops in missing.items() if ops}
    if not gaps:
        return
    if spec.fill == "measure":
        return
    if spec.fill == "emulator":
        gaps = {pu: ops for pu, ops in gaps.items() if not platform.device(pu).emulated}
        if not gaps:
            return
        hint = "fill=emulator completes NPUs only; use --fill measure to measure CPU ops here"
    else:
        hint = "add them, or complete them with --fill emulator (NPUs) or --fill measure (CPU measured here too)"
    parts = []
    for pu, ops in gaps.items():
        if pu not in got.values:
            parts.append(f"PU {pu} entirely")
        else:
            parts.append(f"{len(ops)} op(s) on {pu}: {_listing(graph.nodes[i].name for i in ops)}")
    raise ProfileError(f"profiles from {', '.join(str(s) for s in spec.sources)} lack {'; '.join(parts)}: {hint}")


def _fill(graph: OpGraph, platform: Platform, got: Imported, missing: dict[str, list[int]], spec: ImportSpec, *,
          refresh: bool, progress: bool) -> Profiles:
    """Native profiles of the gaps: NPUs emulated; CPU gaps measured for ``measure``."""
    from partitiontuner.profiling.build import (
        CpuTable,
        assemble_profiles,
        measure_cpu,
        measured_devices,
    )
    from partitiontuner.profiling.cache import ProfileCache

    groups = chain_groups(graph)
    tables: dict = {}
    cache = ProfileCache() if spec.fill == "measure" else None
    for ort, devs in measured_devices(platform).items():
        ops = sorted({i for d in devs for i in missing[d.name]}) if cache else []
        tgroups = [g for g in groups if all(d.can_run(graph.nodes[i]) for d in devs for i in g)] \
            if cache and any(d.name not in got.values for d in devs) else []
        if ops or tgroups:
            tables[ort] = measure_cpu(graph, ort, ops, tgroups, cache=cache, refresh=refresh, progress=progress)
        else:
            tables[ort] = CpuTable(np.full(graph.num_ops, np.nan), np.full(graph.num_ops, np.nan))
    return assemble_profiles(graph, platform, tables, groups, source=spec.fill or "", host=cache.host if cache else "")


def _unit_name(graph: OpGraph, unit: Unit) -> str:
    return "+".join(graph.nodes[i].name for i in unit)


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    more = f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more
