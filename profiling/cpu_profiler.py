"""Measure ops and op groups on this machine's CPU with ONNX Runtime.

Each op, or each candidate group of ops, is cut out of the model
(:func:`partitiontuner.subgraph.subgraph_model`) and run alone in its own
``InferenceSession`` on seeded random inputs of its real shapes, with the model's
weights. Graph optimisations are on (``ORT_ENABLE_ALL``), so a group shows the fusion
ORT applies (Conv+Relu, Conv+BatchNormalization, ...). Runs go through an I/O binding
with preallocated outputs, so a timed run is the session's work plus a small fixed
per-run cost; that cost is measured once per profiler on a one-element ``Identity``
model run the same way (the *baseline*) and subtracted. The platform's CPU
``dispatch_overhead_us`` models per-partition overhead instead.

Sessions are those of the PU being profiled (:class:`partitiontuner.platform.OrtSettings`,
built by :mod:`partitiontuner.profiling.ort_runtime`): its execution providers and their
options, its intra-op thread count, and, when the PU names ``cores``, the measuring
thread (and ORT's pool threads) pinned to them while measuring, so a profile is that
PU's own number.

The timer is the calling thread's CPU time when the session has one intra-op
thread on the CPU execution provider alone (ORT then computes on the calling thread):
on a machine shared with other jobs, time the OS gives to other processes is not
counted, whereas wall time would be (measured under two busy loops on two cores, a
2.2 ms Conv kept its CPU-time median and p90 while its wall-time p90 tripled). With
several threads the work is spread over ORT's pool, and another provider computes on
its device, so wall time is used, and a quiet machine is needed.

Protocol per unit: ``warmup_runs`` untimed runs (and at least ``warmup_s`` seconds),
then timed runs until both ``min_repeats`` and ``min_time_s`` are reached, stopping at
``max_repeats`` or ``max_time_s`` (never fewer than ``MIN_SAMPLES``). The latency is
the median minus the baseline, floored at :data:`MIN_LATENCY_US`; the spread is the
robust coefficient of variation of the raw timed runs, ``1.4826 * MAD / median``: it
equals std / mean for Gaussian noise but, unlike it, is not dominated by the odd run
that the OS preempted (one 2.6 ms run among 500 of 84 us makes std / mean 1.2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.memory_guard import check_tensors_fit
from partitiontuner.platform import CPU_PROVIDER, OrtSettings
from partitiontuner.profiling.ort_runtime import caller_cores, first_line, make_session, pinned
from partitiontuner.subgraph import partition_io, subgraph_model

#: bump when the measurement protocol changes in a way that changes the numbers;
#: part of every cache key
PROTOCOL = "ort-iobinding-median-v2"
#: a measured latency never goes below this (baseline subtraction can reach 0 or less
#: for ops that cost less than the noise of the per-run overhead)
MIN_LATENCY_US = 0.1
#: fewest timed runs, even when ``max_time_s`` is exceeded
MIN_SAMPLES = 3


@dataclass(frozen=True)
class MeasureSettings:
    """How long and how often to run each unit.

    Attributes:
        warmup_runs: untimed runs before timing (first runs allocate and page in).
        warmup_s: minimum untimed time.
        min_repeats: fewest timed runs before stopping.
        min_time_s: least total timed time before stopping.
        max_repeats: stop after this many timed runs.
        max_time_s: stop after this much timed time (at least ``MIN_SAMPLES`` runs).
        seed: seed of the random inputs.
    """

    warmup_runs: int = 3
    warmup_s: float = 0.01
    min_repeats: int = 10
    min_time_s: float = 0.05
    max_repeats: int = 1000
    max_time_s: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class Measurement:
    """One unit (op or op group) timed on the CPU.

    Attributes:
        latency_us: median timed run minus the baseline, floored at ``MIN_LATENCY_US``.
        spread: robust coefficient of variation (1.4826 * MAD / median) of the raw
            timed runs.
        median_us: median raw timed run (baseline included).
        repeats: number of timed runs.
        baseline_us: per-run overhead that was subtracted.
    """

    latency_us: float
    spread: float
    median_us: float
    repeats: int
    baseline_us: float

    def to_dict(self) -> dict[str, float | int]:
        return {"latency_us": self.latency_us, "spread": self.spread, "median_us": self.median_us,
                "repeats": self.repeats, "baseline_us": self.baseline_us}

    @classmethod
    def from_dict(cls, d: dict) -> Measurement:
        """Raises ``KeyError`` / ``TypeError`` / ``ValueError`` on malformed data."""
        m = cls(float(d["latency_us"]), float(d["spread"]), float(d["median_us"]), int(d["repeats"]),
                float(d["baseline_us"]))
        if not (np.isfinite(m.latency_us) and m.latency_us > 0 and np.isfinite(m.spread) and m.spread >= 0
                and m.repeats >= 1):
            raise ValueError(f"implausible measurement {d}")
        return m


class CpuProfiler:
    """Times op sets in ONNX Runtime sessions of one PU runtime.

    Args:
        threads: intra-op threads (the CPU execution provider, unpinned), or the PU's
            full :class:`OrtSettings`.
        settings: the repeat protocol.

    Attributes:
        ort: providers, options, threads and cores of every session.
        threads: intra-op threads of every session.
        settings: the repeat protocol.
        sessions_created: ``InferenceSession`` objects this profiler built (the
            baseline's included); the cache-hit path leaves it at 0.
    """

    #: sessions built by every profiler in this process
    sessions_total: int = 0

    def __init__(self, threads: int | OrtSettings = 1, settings: MeasureSettings | None = None):
        ort = threads if isinstance(threads, OrtSettings) else OrtSettings(threads)
        if ort.threads < 1:
            raise ProfileError(f"CPU thread count must be >= 1, got {ort.threads}")
        self.ort = ort
        self.threads = ort.threads
        self.settings = settings or MeasureSettings()
        self.sessions_created = 0
        self._baseline_us: float | None = None

    @property
    def clock(self):
        """The timer of one run, in ns: this thread's CPU time at 1 thread on the CPU
        provider alone, else wall time."""
        on_caller = self.threads == 1 and self.ort.providers == (CPU_PROVIDER,)
        return time.thread_time_ns if on_caller else time.perf_counter_ns

    # --- sessions ---------------------------------------------------------------------
    def _session(self, model: onnx.ModelProto, what: str):
        self.sessions_created += 1
        CpuProfiler.sessions_total += 1
        return make_session(model, self.ort, what, ProfileError)

    def _time(self, sess, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], what: str) -> np.ndarray:
        """Raw per-run times in us, following :class:`MeasureSettings`."""
        io = sess.io_binding()
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        for name, buf in outputs.items():
            io.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        run = sess.run_with_iobinding
        s = self.settings
        try:
            start = time.perf_counter()
            k = 0
            while k < s.warmup_runs or time.perf_counter() - start < s.warmup_s:
                run(io)
                k += 1
            samples: list[int] = []
            clock = self.clock
            wall = time.perf_counter_ns
            begin = wall()
            while True:
                t0 = clock()
                run(io)
                samples.append(clock() - t0)
                n, elapsed = len(samples), (wall() - begin) / 1e9
                if n >= s.max_repeats or (elapsed >= s.max_time_s and n >= MIN_SAMPLES):
                    break
                if n >= s.min_repeats and elapsed >= s.min_time_s:
                    break
        except Exception as exc:
            raise ProfileError(f"ONNX Runtime failed to run {what}: {first_line(exc)}") from None
        return np.asarray(samples, dtype=np.float64) / 1e3

    @property
    def baseline_us(self) -> float:
        """Median per-run cost of a one-element ``Identity`` session run the same way."""
        if self._baseline_us is None:
            graph = helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"])], "baseline",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            sess = self._session(model, "the baseline model")
            x, y = np.zeros(1, np.float32), np.zeros(1, np.float32)
            # a longer run than a unit's: every measurement subtracts it
            settings, self.settings = self.settings, MeasureSettings(
                warmup_runs=50, min_repeats=200, min_time_s=0.05, max_repeats=5000, max_time_s=0.5)
            try:
                self._baseline_us = float(np.median(self._time(sess, {"x": x}, {"y": y}, "the baseline model")))
            finally:
                self.settings = settings
        return self._baseline_us

    # --- measuring ---------------------------------------------------------------------
    def measure(self, graph: OpGraph, ops: Sequence[int]) -> Measurement:
        """Time the op set ``ops`` of ``graph`` run as one ONNX Runtime session.

        Raises:
            ProfileError: ORT cannot build or run the extracted subgraph, or its
                tensors do not fit in this machine's memory.
        """
        order = sorted(set(ops))
        names = [graph.nodes[i].name for i in order]
        what = f"op {names[0]!r}" if len(order) == 1 else f"op group {names}"
        with pinned(caller_cores(self.ort)):  # on the PU's own cores, if it names them
            baseline = self.baseline_us
            ins, outs = check_unit_fits(graph, order)
            model = subgraph_model(graph, order)
            feeds = random_feeds(graph, ins, self.settings.seed)
            buffers = {t: np.empty(graph.tensors[t].shape, dtype=np.dtype(graph.tensors[t].dtype)) for t in outs}
            sess = self._session(model, what)
            raw = self._time(sess, feeds, buffers, what)
        median = float(np.median(raw))
        spread = robust_cv(raw)
        return Measurement(max(median - baseline, MIN_LATENCY_US), spread, median, len(raw), baseline)


def check_unit_fits(graph: OpGraph, ops: Sequence[int]) -> tuple[list[str], list[str]]:
    """The unit's input and output tensors, once they are known to fit in memory.

    Raises:
        ProfileError: its random inputs, outputs and weights exceed the memory available.
    """
    order = sorted(set(ops))
    names = [graph.nodes[i].name for i in order]
    what = f"op {names[0]!r}" if len(order) == 1 else f"op group {names}"
    ins, outs = partition_io(graph, order)
    weight_bytes = sum(graph.nodes[i].weight_bytes for i in order)
    check_tensors_fit(graph, ins, f"to profile {what}", outputs=outs, extra_bytes=weight_bytes)
    return list(ins), list(outs)


def robust_cv(samples: np.ndarray) -> float:
    """``1.4826 * MAD / median``: the coefficient of variation, robust to outliers."""
    median = float(np.median(samples))
    if median <= 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(samples - median)) / median)


def random_feeds(graph: OpGraph, tensors: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random values of the real shapes and dtypes: standard normal floats,
    0/1 integers and booleans (safe as indices and masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in tensors:
        t = graph.tensors[name]
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            feeds[name] = rng.standard_normal(t.shape).astype(dt)
        elif dt.kind == "b":
            feeds[name] = rng.integers(0, 2, size=t.shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 2, size=t.shape).astype(dt)
    return feeds
