"""Run an exported plan with nothing but ONNX Runtime and NumPy.

``partitiontuner export`` writes one ONNX model per partition plus ``manifest.json``
(:mod:`partitiontuner.export`). This package executes such a directory the way a
deployment would, without the planner's stack (no torch, PyG, onnx or YAML: it
imports only the standard library, NumPy, ONNX Runtime and the dependency-free
``partitiontuner.errors`` / ``partitiontuner.atomic``, so it runs where
``pip install --no-deps partitiontuner onnxruntime numpy`` is all there is)::

    python -m partitiontuner.runtime DIR [--inputs in.npz] [--out out.npz] [--json]

One worker thread per PU runs that PU's partitions in the manifest's ``order``; a
partition starts once every input tensor it reads exists (a graph input, or an
output of a partition that finished), then publishes its outputs by name. The
makespan is the time from the common start to the last partition's end.

Which ONNX Runtime execution providers run a partition: the partition's
``providers`` list in the manifest if it has one, else ``--provider PU=NAME``, else
``CPUExecutionProvider``. An NPU partition without a provider therefore runs on this
CPU, and the runner says so: its time is not the NPU's.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partitiontuner.errors import ConfigError, PartitionTunerError

FORMAT = "partitiontuner-export"
VERSION = 1
MANIFEST = "manifest.json"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Part:
    """One partition of the export, as the runner needs it."""

    id: int
    device: str
    kind: str
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    providers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Export:
    """A loaded export directory.

    Attributes:
        order: PU -> partition ids in the order that PU runs them.
        graph_inputs: name -> (shape, dtype) of the model's inputs.
        graph_outputs: the model's output tensor names.
    """

    root: Path
    model: str
    platform: str
    method: str
    parts: Mapping[int, Part]
    order: Mapping[str, tuple[int, ...]]
    graph_inputs: Mapping[str, tuple[tuple[int, ...], str]]
    graph_outputs: tuple[str, ...]
    predicted_makespan_us: float | None


@dataclass
class Timing:
    """When one partition ran, relative to the run's start (microseconds)."""

    id: int
    device: str
    start_us: float
    end_us: float


@dataclass
class RunResult:
    """Outputs and timings of an export's runs.

    Attributes:
        outputs: the graph outputs of the first timed run, by name.
        makespans_us: every timed run's makespan.
        timings: the partitions of the first timed run.
        providers: partition id -> the providers its session uses.
        notes: what the runner wants the user to know (NPU partitions run on CPU, ...).
    """

    outputs: dict[str, np.ndarray]
    makespans_us: list[float]
    timings: list[Timing]
    providers: dict[int, list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def makespan_us(self) -> float:
        return float(statistics.median(self.makespans_us))


def read_manifest(root: str | Path) -> dict[str, Any]:
    """``root/manifest.json`` as written by ``partitiontuner export``, format checked.

    The one reader of export manifests: :func:`partitiontuner.export.load_manifest`
    delegates here, so the runner stays free of the planner's imports.

    Raises:
        ConfigError: missing, unreadable or not an export manifest.
    """
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no export manifest at {path} (write one with partitiontuner export)") from None
    except (OSError, ValueError):
        raise ConfigError(f"{path}: not valid JSON (truncated or corrupt?)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ConfigError(f"{path}: not a PartitionTuner export manifest ({FORMAT} v{VERSION})")
    return data


def load_export(root: str | Path) -> Export:
    """Read and check an export directory: its manifest, that every partition file
    exists, and that the PU orders name every partition once.

    Raises:
        ConfigError: missing or malformed manifest, a missing partition file.
    """
    root = Path(root)
    path = root / MANIFEST
    data = read_manifest(root)
    try:
        parts = {}
        for p in data["partitions"]:
            file = root / str(p["file"])
            if not file.is_file():
                raise ConfigError(f"{path}: partition {p['id']}'s model {file.name} is missing")
            providers = p.get("providers")
            parts[int(p["id"])] = Part(int(p["id"]), str(p["device"]), str(p["kind"]), file,
                                       tuple(str(t["name"]) for t in p["inputs"]),
                                       tuple(str(t["name"]) for t in p["outputs"]),
                                       tuple(map(str, providers)) if providers else None)
        order = {str(pu): tuple(int(i) for i in ids) for pu, ids in data["order"].items()}
        inputs = {str(t["name"]): (tuple(int(d) for d in t["shape"]), str(t["dtype"])) for t in data["graph_inputs"]}
        outputs = tuple(str(t["name"]) for t in data["graph_outputs"])
        export = Export(root, str(data["model"]["name"]), str(data.get("platform", "")), str(data.get("method", "")),
                        parts, order, inputs, outputs, data.get("predicted_makespan_us"))
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    listed = sorted(i for ids in export.order.values() for i in ids)
    if listed != sorted(export.parts):
        raise ConfigError(f"{path}: the PU orders list partitions {listed}, the manifest has {sorted(export.parts)}")
    return export


def random_inputs(export: Export, seed: int = 0) -> dict[str, np.ndarray]:
    """Graph inputs drawn with a fixed seed: standard normal floats, small integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype) in export.graph_inputs.items():
        dt = np.dtype(dtype)
        if np.issubdtype(dt, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(dt)
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(dt)
    return feeds


def check_inputs(export: Export, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` checked against the graph inputs (names, shapes, dtypes).

    Raises:
        ConfigError: a missing, unexpected or mis-shaped input.
    """
    missing = [n for n in export.graph_inputs if n not in feeds]
    extra = [n for n in feeds if n not in export.graph_inputs]
    if missing or extra:
        raise ConfigError(f"inputs do not match the model's ({', '.join(export.graph_inputs)}): "
                          + "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                                  f"unexpected {', '.join(extra)}" if extra else "") if x))
    out = {}
    for name, (shape, dtype) in export.graph_inputs.items():
        a = np.asarray(feeds[name])
        if tuple(a.shape) != shape or a.dtype != np.dtype(dtype):
            raise ConfigError(f"input {name}: expected {dtype} {list(shape)}, got {a.dtype} {list(a.shape)}")
        out[name] = a
    return out


def _providers(part: Part, overrides: Mapping[str, Sequence[str]], available: Sequence[str]) -> list[str]:
    chosen = list(part.providers or overrides.get(part.device) or [CPU_PROVIDER])
    absent = [p for p in chosen if p not in available]
    if absent:
        raise ConfigError(f"partition {part.id} ({part.device}) asks for {', '.join(absent)}, which this ONNX Runtime "
                          f"does not have (installed: {', '.join(available)})")
    return chosen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_sessions(export: Export, *, threads: int = 1, providers: Mapping[str, Sequence[str]] | None = None
                   ) -> tuple[dict[int, Any], dict[int, list[str]]]:
    """One ONNX Runtime session per partition (``threads`` intra-op threads each).

    Raises:
        ConfigError: a provider that is not installed, a model ORT cannot load.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    sessions, chosen = {}, {}
    for part in export.parts.values():
        names = _providers(part, providers or {}, available)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            sessions[part.id] = ort.InferenceSession(str(part.path), so, providers=names)
        except Exception as exc:  # ORT raises its own Fail / InvalidGraph / ... types
            raise ConfigError(f"ONNX Runtime cannot load partition {part.id} ({part.path.name}): {_first_line(exc)}") from None
        chosen[part.id] = names
    return sessions, chosen


class _Board:
    """Tensors published so far; workers wait on it for their inputs."""

    def __init__(self, feeds: Mapping[str, np.ndarray]):
        self.tensors = dict(feeds)
        self.cond = threading.Condition()
        self.failed: BaseException | None = None

    def wait_for(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        with self.cond:
            self.cond.wait_for(lambda: self.failed is not None or all(n in self.tensors for n in names))
            if self.failed is not None:
                raise _Aborted
            return {n: self.tensors[n] for n in names}

    def publish(self, values: Mapping[str, np.ndarray]) -> None:
        with self.cond:
            self.tensors.update(values)
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.failed is None:
                self.failed = exc
            self.cond.notify_all()


class _Aborted(Exception):
    """Another worker failed; this one stops."""


def run_once(export: Export, sessions: Mapping[int, Any], feeds: Mapping[str, np.ndarray]
             ) -> tuple[dict[str, np.ndarray], float, list[Timing]]:
    """One execution: a thread per PU, partitions in order, inputs awaited by name.

    Returns:
        The graph outputs, the makespan in us and every partition's timing.

    Raises:
        PartitionTunerError: a partition failed to run.
    """
    board = _Board(feeds)
    timings: list[Timing] = []
    lock = threading.Lock()
    start = threading.Barrier(len(export.order) + 1)
    t0 = [0.0]

    def worker(pu: str, ids: Sequence[int]) -> None:
        try:
            start.wait()
            for i in ids:
                part = export.parts[i]
                inputs = board.wait_for(part.inputs)
                begin = time.perf_counter()
                try:
                    values = sessions[i].run(list(part.outputs), inputs)
                except Exception as exc:  # ORT's own error types
                    raise PartitionTunerError(f"partition {i} ({pu}) failed in ONNX Runtime: {_first_line(exc)}") from None
                end = time.perf_counter()
                board.publish(dict(zip(part.outputs, values, strict=True)))
                with lock:
                    timings.append(Timing(i, pu, (begin - t0[0]) * 1e6, (end - t0[0]) * 1e6))
        except _Aborted:
            pass
        except BaseException as exc:
            board.fail(exc)

    threads = [threading.Thread(target=worker, args=(pu, ids), name=f"pu-{pu}", daemon=True)
               for pu, ids in export.order.items()]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    if board.failed is not None:
        if isinstance(board.failed, PartitionTunerError):
            raise board.failed
        raise PartitionTunerError(f"a worker failed: {_first_line(board.failed)}") from board.failed
    makespan = max((t.end_us for t in timings), default=0.0)
    return {n: board.tensors[n] for n in export.graph_outputs}, makespan, sorted(timings, key=lambda t: t.start_us)


def run_export(root: str | Path, feeds: Mapping[str, np.ndarray] | None = None, *, seed: int = 0,
               repeat: int = 1, warmup: int = 1, threads: int = 1,
               providers: Mapping[str, Sequence[str]] | None = None) -> RunResult:
    """Load an export and run it ``warmup`` + ``repeat`` times.

    Args:
        feeds: graph inputs; default: :func:`random_inputs` with ``seed``.
        providers: PU -> execution providers for partitions the manifest gives none.

    Raises:
        ConfigError: bad export directory, inputs or provider.
        PartitionTunerError: a partition failed to run.
    """
    if repeat < 1 or warmup < 0 or threads < 1:
        raise ConfigError(f"repeat and threads must be >= 1 and warmup >= 0, got {repeat}, {threads}, {warmup}")
    export = load_export(root)
    feeds = check_inputs(export, feeds) if feeds is not None else random_inputs(export, seed)
    sessions, chosen = build_sessions(export, threads=threads, providers=providers)
    for _ in range(warmup):
        run_once(export, sessions, feeds)
    outputs, first, timings = run_once(export, sessions, feeds)
    makespans = [first] + [run_once(export, sessions, feeds)[1] for _ in range(repeat - 1)]
    notes = []
    on_cpu = sorted({p.device for p in export.parts.values() if p.kind != "cpu" and chosen[p.id] == [CPU_PROVIDER]})
    if on_cpu:
        notes.append(f"{', '.join(on_cpu)} partitions ran on this CPU with ONNX Runtime's {CPU_PROVIDER} (the manifest "
                     "names no provider for them): their times are not the accelerator's")
    return RunResult(outputs, makespans, timings, chosen, notes)
