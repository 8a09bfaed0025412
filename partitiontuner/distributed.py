"""Run independent jobs one after another, or as Ray tasks on a local instance or a cluster.

One interface for every caller that solves many instances (``evaluate``, the
benchmark scripts): :func:`run_jobs` takes a list of jobs and a function, and
returns the results in job order whatever the order the jobs finished in. Without
an address the jobs run serially in this process and Ray is never imported, so a
plain run is exactly what it was before Ray existed. With ``"local"`` a Ray
instance sized to this machine is started; with ``HOST:PORT`` (or ``auto``,
``ray://HOST:PORT``) the existing cluster is joined.

What a Ray run does differently, and why:

* each job is one task declaring its CPU needs (``num_cpus(job)``; an oracle solve
  asks for its worker threads), so Ray never packs more threads on a node than it
  has cores (a job asking for more than the widest node has gets that node);
* a job that is a dataclass has its large fields (a :class:`~partitiontuner.problem.Problem`
  with its profiles) put in the object store once and shared by every job that
  holds the same object, instead of being serialised once per task;
* a worker that dies mid-job is retried (``max_retries``); an exception raised by
  the job itself is not retried and reaches the caller as itself;
* Ctrl-C cancels the tasks still queued or running and re-raises, after the
  results already gathered were passed to ``on_done`` (for example a
  :class:`JsonlJournal` on disk);
* an address where nothing answers fails fast with one :class:`ConfigError`.
"""

from __future__ import annotations

import copyreg
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from partitiontuner.errors import ConfigError, PartitionTunerError

J = TypeVar("J")
R = TypeVar("R")

#: ``ray_address`` value that starts a Ray instance on this machine
LOCAL = "local"
#: a dead worker's task is run again this many times before the run fails
DEFAULT_MAX_RETRIES = 3
#: seconds to wait for a cluster's address to accept a connection
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def _mappingproxy(d: dict) -> MappingProxyType:
    return MappingProxyType(d)


# Graphs, platforms and plans keep read-only name indexes in MappingProxyType, which
# pickle refuses; Ray ships problems to workers and plans back, so teach pickle
# (and cloudpickle, which reads copyreg) to rebuild them from a plain dict.
copyreg.pickle(MappingProxyType, lambda m: (_mappingproxy, (dict(m),)))


def run_jobs(
    jobs: Sequence[J],
    fn: Callable[[J], R],
    ray_address: str | None = None,
    *,
    num_cpus: Callable[[J], float] | None = None,
    on_done: Callable[[int, R], None] | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> list[R]:
    """``[fn(job) for job in jobs]``, serially or as Ray tasks.

    Args:
        jobs: independent units of work; for Ray they and ``fn`` must pickle
            (``fn`` a module-level function).
        fn: the work of one job.
        ray_address: ``None`` runs serially here without importing Ray; ``"local"``
            starts a Ray instance on this machine (or reuses the one this process
            already joined); anything else is the address of a running cluster.
        num_cpus: CPUs one job occupies (default 1); ignored when serial.
        on_done: called as ``on_done(index, result)`` in this process as each job
            finishes (job order when serial, completion order on Ray).
        max_retries: times a task whose worker died is run again.
        connect_timeout_s: how long a cluster's address may take to answer.

    Returns:
        The results, in the order of ``jobs``.

    Raises:
        ConfigError: ``ray_address`` given but Ray is not installed or the cluster
            cannot be reached.
        Exception: whatever ``fn`` raised for the first failing job.
    """
    if ray_address is None:
        results = []
        for i, job in enumerate(jobs):
            results.append(fn(job))
            if on_done:
                on_done(i, results[-1])
        return results
    with ray_session(ray_address, connect_timeout_s) as ray:
        return _run_on_ray(ray, jobs, fn, num_cpus or (lambda _job: 1.0), on_done, max_retries)


@contextmanager
def ray_session(ray_address: str | None, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """Joined to Ray for the ``with`` block; yields the ``ray`` module (or ``None``).

    A caller that runs several batches (one per platform, say) holds a session so
    the batches share one Ray instance instead of starting one each. A session that
    started Ray shuts it down on exit; one that found Ray already initialised in this
    process (a test fixture, an outer session) leaves it running.
    """
    if ray_address is None:
        yield None
        return
    preflight(ray_address, connect_timeout_s)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if ray_address == LOCAL:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="warning")
        else:
            ray.init(address=ray_address, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot join the Ray cluster at {ray_address!r}: {first}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(ray_address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one line, when nothing listens at a ``HOST:PORT`` address.

    Ray itself keeps retrying an unreachable GCS for a long time before it gives up
    with a multi-line error; a plain TCP connect answers in at most ``timeout_s``.
    ``auto`` (find the cluster from the environment) is left to Ray.

    Raises:
        ConfigError: malformed address, or nothing accepts the connection.
    """
    if ray_address == "auto":
        return
    hostport = ray_address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"Ray address {ray_address!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {ray_address!r}: {exc.strerror or exc}") from exc


def preflight(ray_address: str | None, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Check, before any work, that ``ray_address`` can be used: Ray is installed and
    (for a cluster) something answers there. ``None`` checks nothing and imports nothing.

    Raises:
        ConfigError: as :func:`ray_session` would, only sooner.
    """
    if ray_address is None:
        return
    import_ray()
    if ray_address != LOCAL:
        check_reachable(ray_address, connect_timeout_s)


def import_ray() -> Any:
    """The ``ray`` module, or one :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('--ray needs Ray: pip install "partitiontuner[ray]"') from exc
    return ray


def _call(fn: Callable[[Any], Any], job_type: type | None, *parts: Any) -> Any:
    """The body of every Ray task: rebuild the job (Ray has already fetched the
    shared fields from the object store) and run it."""
    job = job_type(*parts) if job_type is not None else parts[0]
    return fn(job)


def _split(ray: Any, job: Any, shared: dict[int, Any]) -> tuple[type | None, list[Any]]:
    """A dataclass job as its type and init fields, each non-scalar field replaced by
    one object-store reference per distinct object (kept in ``shared``)."""
    if not (dataclasses.is_dataclass(job) and not isinstance(job, type)):
        return None, [job]
    fields = [f for f in dataclasses.fields(job) if f.init]
    if len(fields) != len(dataclasses.fields(job)):
        return None, [job]
    parts = []
    for f in fields:
        value = getattr(job, f.name)
        if not isinstance(value, str | int | float | bool | type(None)):
            if id(value) not in shared:
                shared[id(value)] = (value, ray.put(value))
            value = shared[id(value)][1]
        parts.append(value)
    return type(job), parts


def _run_on_ray(
    ray: Any,
    jobs: Sequence[J],
    fn: Callable[[J], R],
    num_cpus: Callable[[J], float],
    on_done: Callable[[int, R], None] | None,
    max_retries: int,
) -> list[R]:
    task = ray.remote(_call)
    widest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    shared: dict[int, Any] = {}
    refs = []
    for job in jobs:
        job_type, parts = _split(ray, job, shared)
        # a job asking for more cores than any node has would wait forever: it gets
        # the widest node instead (its threads then share those cores)
        cpus = min(float(num_cpus(job)), widest)
        opts = {"num_cpus": cpus, "max_retries": max_retries, "retry_exceptions": False}
        refs.append(task.options(**opts).remote(fn, job_type, *parts))
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[index[ref]] = get_result(ray, ref)
                if on_done:
                    on_done(index[ref], results[index[ref]])
    except BaseException:
        _cancel(ray, pending)
        raise
    return results


def _cancel(ray: Any, refs: list[Any], rounds: int = 5, wait_s: float = 2.0) -> None:
    """Force-cancel ``refs`` and wait until they resolve; a task caught between being
    queued and starting can miss one cancel, so those still pending get another."""
    for _ in range(rounds):
        if not refs:
            return
        for ref in refs:
            ray.cancel(ref, force=True)
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=wait_s)


def get_result(ray: Any, ref: Any) -> Any:
    """``ray.get``, re-raising a job's own PartitionTunerError as itself (one line
    for the CLI) rather than wrapped in Ray's remote traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, PartitionTunerError):
            raise exc.cause from None
        raise


class JsonlJournal:
    """Completed results on disk, one JSON line per job, as they arrive.

    Used as ``on_done`` so that a run stopped by Ctrl-C or by a failing job leaves
    what it finished behind; each line is written whole in one ``write`` and flushed.
    As a context manager the file is removed when the block ends normally (the
    caller then writes its real outputs) and kept when it raises.

    Args:
        path: the journal file (its folder is created).
        record: the JSON-able record of one ``(index, result)``.
    """

    def __init__(self, path: str | Path, record: Callable[[int, Any], dict]):
        self.path = Path(path)
        self.record = record
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
        except OSError as exc:
            from partitiontuner.atomic import OutputError, os_reason

            raise OutputError(f"cannot write results directory {self.path.parent}: {os_reason(exc)}") from None

    def __call__(self, index: int, result: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(self.record(index, result), sort_keys=True) + "\n")
            f.flush()

    def __enter__(self) -> JsonlJournal:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.path.unlink(missing_ok=True)


def chain(*callbacks: Callable[[int, Any], None] | None) -> Callable[[int, Any], None]:
    """One ``on_done`` calling each given callback in turn (``None`` skipped)."""
    live = [c for c in callbacks if c is not None]

    def call(index: int, result: Any) -> None:
        for c in live:
            c(index, result)

    return call
