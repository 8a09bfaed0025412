"""A PU's ONNX Runtime: sessions with its providers, options and threads, on its cores.

The profiler (:mod:`partitiontuner.profiling.cpu_profiler`) and the executor
(:mod:`partitiontuner.execute`) both run ops with a PU's
:class:`~partitiontuner.platform.OrtSettings`; they build their sessions here so that
what is measured is what runs.

Cores: with one intra-op thread ONNX Runtime computes on the calling thread, so
pinning the caller (:func:`pin_thread`, :func:`pinned`) pins the PU. With ``n > 1``
threads ORT adds ``n - 1`` pool threads; a PU that names its ``cores`` gets them pinned
through the session option ``session.intra_op_thread_affinities`` (pool thread ``k`` on
``cores[k]``; the caller is pinned to ``cores[0]`` by whoever calls ``run``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import onnx

from partitiontuner.errors import PartitionTunerError
from partitiontuner.platform import OrtSettings


def session_options(settings: OrtSettings) -> Any:
    """``onnxruntime.SessionOptions`` for ``settings``: sequential, all graph
    optimisations (so a fused group shows ORT's fusion), warnings silenced."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if settings.cores is not None and settings.threads > 1:
        # ORT numbers logical processors from 1; one entry per pool thread
        pool = [settings.cores[k % len(settings.cores)] + 1 for k in range(1, settings.threads)]
        so.add_session_config_entry("session.intra_op_thread_affinities", ";".join(map(str, pool)))
    return so


def make_session(model: onnx.ModelProto, settings: OrtSettings, what: str,
                 error: type[PartitionTunerError] = PartitionTunerError) -> Any:
    """An ``InferenceSession`` of ``model`` with the PU's providers and their options.

    Raises:
        error: ONNX Runtime cannot build the session (``what`` names the model).
    """
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model.SerializeToString(), session_options(settings),
                                    providers=list(settings.providers), provider_options=settings.options())
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / ... types
        raise error(f"ONNX Runtime cannot build a session for {what} ({settings.describe()}): "
                    f"{first_line(exc)}") from None


def caller_cores(settings: OrtSettings) -> tuple[int, ...] | None:
    """Cores for the thread that calls ``run``: all of ``cores`` with one intra-op
    thread, ``cores[0]`` with more (the pool threads take the others)."""
    if settings.cores is None:
        return None
    return settings.cores if settings.threads == 1 else settings.cores[:1]


def pin_thread(cores: Sequence[int]) -> None:
    """Pin the calling thread to ``cores`` (Linux; elsewhere a no-op)."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(threading.get_native_id(), set(cores))
        except OSError:  # a core outside this process's cgroup: run unpinned
            pass


@contextmanager
def pinned(cores: Sequence[int] | None) -> Iterator[None]:
    """Run the block with the calling thread pinned to ``cores`` (``None``: as it is),
    then restore its previous affinity."""
    if cores is None or not hasattr(os, "sched_getaffinity"):
        yield
        return
    tid = threading.get_native_id()
    before = os.sched_getaffinity(tid)
    pin_thread(cores)
    try:
        yield
    finally:
        try:
            os.sched_setaffinity(tid, before)
        except OSError:
            pass


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
