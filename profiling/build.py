"""Graph + platform -> :class:`Profiles`: PUs run by ONNX Runtime measured (and cached),
emulated NPUs emulated.

Every op, and every candidate group from :func:`partitiontuner.branches.chain_groups`
(runs of 2-3 ops along a sequential branch), gets a latency on every PU:

* a PU whose runtime is ``onnxruntime`` (every CPU; an NPU that says so): the ONNX
  Runtime time on this machine with the PU's settings (threads, providers, cores:
  :class:`partitiontuner.platform.OrtSettings`; :mod:`partitiontuner.profiling.cpu_profiler`)
  divided by its ``speed_factor``. PUs with equal settings share one measurement
  (the tables below are keyed by them); units with equal signatures
  (the repeated blocks of a ResNet) are measured once; every measurement goes through
  the disk cache (:mod:`partitiontuner.profiling.cache`), so a second run measures
  nothing.
* an emulated NPU: the systolic-array emulator (:mod:`partitiontuner.profiling.npu_emulator`).
* ``nan`` where the PU cannot run the op, or some member of the group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from partitiontuner.branches import chain_groups
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Device, OrtSettings, Platform
from partitiontuner.profiling.cache import ProfileCache, unit_signature
from partitiontuner.profiling.cpu_profiler import CpuProfiler, MeasureSettings, check_unit_fits
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.subgraph import partition_io

Group = tuple[int, ...]


@dataclass
class CpuTable:
    """ONNX Runtime latencies of one model with one :class:`OrtSettings`, before any
    ``speed_factor``.

    Attributes:
        op_latency_us: ``(num_ops,)``; ``nan`` for ops not measured.
        op_spread: ``(num_ops,)`` coefficient of variation; ``nan`` if not measured.
        groups: group -> ``(latency_us, spread)``.
        baseline_us: per-run ORT overhead subtracted (``nan`` if all came from cache).
    """

    op_latency_us: np.ndarray
    op_spread: np.ndarray
    groups: dict[Group, tuple[float, float]] = field(default_factory=dict)
    baseline_us: float = math.nan


def build_profiles(
    graph: OpGraph,
    platform: Platform,
    *,
    refresh: bool = False,
    progress: bool = True,
    cache: ProfileCache | None = None,
    settings: MeasureSettings | None = None,
    profilers: MutableMapping[OrtSettings, CpuProfiler] | None = None,
) -> Profiles:
    """Profile every op and candidate group of ``graph`` on every PU of ``platform``.

    Args:
        refresh: re-measure units even if the cache has them (and overwrite the cache).
        progress: show a progress bar on stderr while measuring.
        cache: the measurement cache; default: one at the default location.
        settings: the repeat protocol (tests use a short one).
        profilers: ONNX Runtime settings -> profiler to reuse; filled with any created,
            so a caller can read their ``sessions_created`` or share their baselines.

    Raises:
        ProfileError: ONNX Runtime cannot build or run an op's or group's subgraph.
    """
    cache = cache if cache is not None else ProfileCache()
    profilers = profilers if profilers is not None else {}
    groups = list(chain_groups(graph))
    tables: dict[OrtSettings, CpuTable] = {}
    for ort, devices in measured_devices(platform).items():
        ops = [i for i in range(graph.num_ops) if any(d.can_run(graph.nodes[i]) for d in devices)]
        runnable = set(ops)
        tgroups = [g for g in groups if all(i in runnable for i in g)]
        tables[ort] = measure_cpu(graph, ort, ops, tgroups, cache=cache, refresh=refresh,
                                  settings=settings, progress=progress, profilers=profilers)
    return assemble_profiles(graph, platform, tables, groups, source="measured", host=cache.host)


def measured_devices(platform: Platform) -> dict[OrtSettings, list[Device]]:
    """The PUs ONNX Runtime runs (not emulated), grouped by their settings: one
    measurement serves each group. Ordered by thread count, then platform order."""
    out: dict[OrtSettings, list[Device]] = {}
    for d in sorted((d for d in platform.devices if not d.emulated), key=lambda d: d.threads):
        out.setdefault(d.ort, []).append(d)
    return out


def measure_cpu(
    graph: OpGraph,
    threads: int | OrtSettings,
    ops: Sequence[int],
    groups: Sequence[Group],
    *,
    cache: ProfileCache,
    refresh: bool = False,
    settings: MeasureSettings | None = None,
    progress: bool = True,
    profilers: MutableMapping[OrtSettings, CpuProfiler] | None = None,
) -> CpuTable:
    """ONNX Runtime latencies of ``ops`` and ``groups`` with ``threads`` intra-op threads
    (or a PU's full settings): from the cache, else measured (each distinct unit
    signature once) and stored in the cache."""
    ort = threads if isinstance(threads, OrtSettings) else OrtSettings(threads)
    units: list[Group] = [(i,) for i in ops] + [tuple(sorted(g)) for g in groups]
    keys = [cache.key(unit_signature(graph, u), ort) for u in units]
    found = {}
    todo: dict[str, Group] = {}
    for key, unit in zip(keys, units, strict=True):
        if key in found or key in todo:
            continue
        m = cache.get(key, refresh=refresh)
        if m is None:
            todo[key] = unit
        else:
            found[key] = m
    baseline = math.nan
    if todo:
        for unit in todo.values():  # refuse before the first measurement, not halfway
            check_unit_fits(graph, unit)
        profilers = profilers if profilers is not None else {}
        if ort not in profilers:
            profilers[ort] = CpuProfiler(ort, settings)
        profiler = profilers[ort]
        with _progress(progress, f"{graph.name}: {ort.describe()}", len(todo)) as tick:
            for key, unit in todo.items():
                m = profiler.measure(graph, unit)
                cache.put(key, m, what=f"{graph.name}:{'>'.join(graph.nodes[i].name for i in unit)}")
                found[key] = m
                tick()
        baseline = profiler.baseline_us
    table = CpuTable(np.full(graph.num_ops, np.nan), np.full(graph.num_ops, np.nan), baseline_us=baseline)
    for key, unit in zip(keys, units, strict=True):
        m = found[key]
        if len(unit) == 1:
            table.op_latency_us[unit[0]] = m.latency_us
            table.op_spread[unit[0]] = m.spread
        else:
            table.groups[unit] = (m.latency_us, m.spread)
    return table


def assemble_profiles(
    graph: OpGraph,
    platform: Platform,
    cpu: Mapping[OrtSettings, CpuTable],
    groups: Sequence[Group],
    *,
    source: str,
    host: str,
) -> Profiles:
    """Combine ONNX Runtime tables (by settings) with the NPU emulator into :class:`Profiles`.

    A PU run by ONNX Runtime takes its settings' table (``cpu[device.ort]``) divided by
    its ``speed_factor``; an emulated NPU's latency comes from the emulator. ``nan`` wherever the PU cannot run the op (or a
    member of the group), or the emulator cannot model it.
    """
    n, p = graph.num_ops, platform.num_pus
    lat = np.full((n, p), np.nan)
    spread = np.full((n, p), np.nan)
    keys = [tuple(sorted(g)) for g in groups]
    glat = {g: np.full(p, np.nan) for g in keys}
    gspread = {g: np.full(p, np.nan) for g in keys}
    for j, dev in enumerate(platform.devices):
        can = np.array([dev.can_run(op) for op in graph.nodes], dtype=bool)
        if not dev.emulated:
            table = cpu[dev.ort]
            lat[can, j] = table.op_latency_us[can] / dev.speed_factor
            spread[can, j] = table.op_spread[can]
            for g in keys:
                if can[list(g)].all() and g in table.groups:
                    t, s = table.groups[g]
                    glat[g][j] = t / dev.speed_factor
                    gspread[g][j] = s
        else:
            _emulate(graph, dev, can, keys, lat[:, j], glat, j)
    return Profiles(
        model=graph.name, model_hash=graph.content_hash, platform=platform.name, pus=platform.names,
        op_names=tuple(op.name for op in graph.nodes), op_latency_us=lat, op_spread=spread,
        groups=glat, group_spread=gspread, source=source, host=host,
    )


def _emulate(graph: OpGraph, dev: Device, can: np.ndarray, groups: Sequence[Group], out: np.ndarray,
             glat: dict[Group, np.ndarray], j: int) -> None:
    """Fill NPU column ``j``: ``out`` per op, ``glat[g][j]`` per group."""
    from partitiontuner.profiling.npu_emulator import group_latency_us, op_latency_us

    assert dev.npu is not None, f"NPU {dev.name} without emulator parameters"
    for i in np.flatnonzero(can):
        t = op_latency_us(graph.nodes[i], dev.npu)
        out[i] = np.nan if t is None else float(t)
    for g in groups:
        if can[list(g)].all():
            # intermediates also read outside the group must reach DRAM (none in chains)
            inside = {t for i in g for t in graph.nodes[i].inputs}
            escaping = [t for t in partition_io(graph, g)[1] if t in inside]
            t = group_latency_us([graph.nodes[i] for i in g], dev.npu, escaping=escaping)
            glat[g][j] = np.nan if t is None else float(t)


@contextmanager
def _progress(show: bool, label: str, total: int) -> Iterator:
    """A rich progress bar on stderr; yields the function that advances it."""
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("profiling {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
