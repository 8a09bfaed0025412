"""Run a plan for real and check it against the whole model and the simulator.

A little over 500 lines: one executor (build, worker threads, hand-offs, result),
whose protocol is easier to check read in one place; precise waiting lives in
:mod:`partitiontuner.waiting`, the result records in :mod:`partitiontuner.run_result`.

One worker thread per PU runs that PU's partitions in the plan's order, each as soon
as its inputs are ready (DESIGN.md step 6). Each PU's partitions run on its runtime
(the platform's ``runtime`` key):

* **ONNX Runtime** (every CPU; an NPU that says ``runtime: onnxruntime``): a session of
  the partition's subgraph (:func:`partitiontuner.subgraph.subgraph_model`) with the
  PU's execution providers, their options and its intra-op thread count
  (:mod:`partitiontuner.profiling.ort_runtime`, as the profiler measures it); every
  session is built before timing starts. A PU that names its ``cores`` always runs
  pinned to them. A CPU PU with ``speed_factor < 1`` (a
  modelled little core) runs the session and then pads its partition to
  ``measured / speed_factor``, the same scaling the profiles use; a ``speed_factor``
  above 1 cannot be emulated by padding and the session runs as measured.
* **Emulated** (NPUs by default). Before timing, one whole-model ORT run computes the
  reference value of every tensor an emulated partition produces; during the run such a
  partition waits for the emulator's time (the simulator's work for its ops plus the
  PU's dispatch overhead) and then hands those reference tensors on. The result lists
  the emulated PUs (``emulated_pus``) so nobody mistakes them for hardware numbers, and
  the runtime every PU used (``runtimes``).
* **Transfers.** A tensor crossing from PU ``q`` to PU ``p`` is handed to ``p``'s
  worker once the producer has finished; ``p`` may not use it before ``producer_end +
  latency + bytes / bandwidth`` (the link's transfer time). The tensor is not copied:
  the wait stands for the DMA copy, which a real deployment does on a copy engine,
  not on the receiving core (a numpy copy on the receiving worker would add CPU work,
  ~20 us per MiB, that no deployment has). A tensor read by several partitions on one
  PU crosses once. Graph inputs are on the host at ``t = 0``; the run ends when the
  last graph output is on the host (the host's worker receives outputs made elsewhere).
* **Emulation uses the platform's own numbers.** With a calibrated cost model
  (:mod:`partitiontuner.calibrate`) the simulator's launch and link costs are fitted
  to this executor; the emulated NPU time and the emulated link time still come from
  the uncalibrated platform (the "hardware"), so calibrating twice does not drift.
* **Pinning**: a PU whose platform entry names ``cores`` always runs on them (its worker
  thread pinned with ``os.sched_setaffinity`` on the thread's native id: with one
  intra-op thread ONNX Runtime computes on the calling thread; ORT's pool threads, if
  more, through the session's thread affinities). With ``pin_cores=True`` every other
  PU is pinned too: each ONNX Runtime PU's worker to its own cores among those no PU
  names, emulated workers, which mostly sleep, share the next core.
* **Trace.** Every run records each partition's start and end, when its PU became
  free, and each hand-off (producer end, copy-free hand-over, time usable):
  :mod:`partitiontuner.trace` writes them as a Chrome / Perfetto trace and
  :mod:`partitiontuner.calibrate` fits the cost model to them.

Timing uses ``time.perf_counter``; every wait for a time point goes through
:func:`partitiontuner.waiting.wait_until` (sleep, then a short spin that yields the
GIL), and a worker waiting for another PU's result blocks on an event until
:data:`SPIN_AHEAD_S` before the producer is expected to end, then spins for at most
:data:`MAX_SPIN_S` (the measured reasons are in :mod:`partitiontuner.waiting`).

``outputs_match`` compares the final outputs of every timed run with the whole-model
run, ``numpy.allclose`` with :data:`RTOL` and :data:`ATOL` (fused and unfused float32
kernels differ in the last bits; a wrong tensor differs in the first), and reports the
largest absolute difference.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import helper

from partitiontuner.calibrate import cost_model_of
from partitiontuner.errors import PartitionTunerError
from partitiontuner.plan import Plan, validate_plan
from partitiontuner.platform import OrtSettings
from partitiontuner.problem import Problem
from partitiontuner.profiling.ort_runtime import caller_cores, first_line, make_session, pin_thread
from partitiontuner.run_result import ExecutionResult, PartitionRun, TransferRun
from partitiontuner.simulate import Simulator, simulate
from partitiontuner.stats import host_load, load_warning, spread_warning, summarize
from partitiontuner.subgraph import partition_io, subgraph_model
from partitiontuner.waiting import lower_timer_slack, wait_until
from partitiontuner.zoo import random_input

#: relative / absolute tolerance of the output check (float32 kernels fused differently)
RTOL = 1e-3
ATOL = 1e-5
#: the common start t = 0 lies this far after the workers are ready
START_DELAY_S = 1e-3
#: a worker waiting for another PU's result spins from this long before it is expected
SPIN_AHEAD_S = 100e-6
#: ... and for at most this long (then it blocks: the producer is far behind schedule)
MAX_SPIN_S = 500e-6
#: a worker checks this often whether another worker failed
_POLL_S = 0.05
#: while a producer has not started, its consumer checks this often
_SLICE_S = 200e-6



# ---------------------------------------------------------------------------------
# the executor


@dataclass(frozen=True, eq=False)
class _Step:
    """One partition compiled for execution."""

    index: int
    pu: int
    emulated: bool
    #: external inputs: (tensor, producer partition or -1 for a graph input, size_bytes)
    inputs: tuple[tuple[str, int, int], ...]
    outputs: tuple[str, ...]
    session: Any  # onnxruntime.InferenceSession for partitions ONNX Runtime runs
    emulated_s: float  # emulated partitions: work + dispatch overhead
    pad_factor: float  # ONNX Runtime partitions: 1 / speed_factor when < 1, else 1
    fetches: list[str] = field(default_factory=list)  # ``outputs`` as ORT wants them, built once


@dataclass
class _RunRecord:
    """One timed run: times in seconds from t = 0.

    ``free[i]``: when partition ``i``'s PU finished the partition before it (0 for the
    first). ``transfers``: (tensor, src partition or -1, dst partition or -1, src PU,
    dst PU, size_bytes, handed, usable) per hand-off. ``finish``: the last graph output
    is on the host.
    """

    start: list[float]
    end: list[float]
    makespan: float
    outputs: dict[str, np.ndarray]
    late: list[float]
    free: list[float] = field(default_factory=list)
    transfers: list[tuple[str, int, int, int, int, int, float, float]] = field(default_factory=list)
    finish: float = 0.0


class _Aborted(Exception):
    """Another worker failed; this one stops."""


def reference_run(problem: Problem, feeds: dict[str, np.ndarray], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Run the whole model once in ONNX Runtime; return the graph outputs and ``extra``
    intermediate tensors (added as model outputs so ORT keeps them)."""
    g = problem.graph
    model = g.onnx_model()
    have = {o.name for o in model.graph.output}
    for t in dict.fromkeys(extra):
        if t not in have:
            info = g.tensors[t]
            model.graph.output.append(
                helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)), list(info.shape))
            )
    cpu = problem.platform.devices[problem.host]  # the reference: the CPU provider, unpinned
    sess = make_session(model, OrtSettings(cpu.threads), f"the whole model {g.name!r}")
    names = [o.name for o in model.graph.output]
    try:
        values = sess.run(names, feeds)
    except Exception as exc:
        raise PartitionTunerError(f"ONNX Runtime failed to run the whole model {g.name!r}: {first_line(exc)}") from None
    return dict(zip(names, values, strict=True))


class Executor:
    """A plan compiled for execution: sessions built, reference tensors computed.

    Build once, then :meth:`run` as often as needed (``run_plan`` does both).
    """

    def __init__(self, problem: Problem, plan: Plan, *, seed: int = 0, pin_cores: bool = False):
        validate_plan(problem, plan, check_constraints=False)
        self.problem, self.plan = problem, plan
        g, names = problem.graph, problem.pus
        self.host = problem.host
        sim = Simulator(problem)
        calibration = getattr(problem, "calibration", None)
        #: the platform whose numbers the emulation uses (never the calibrated one)
        self.hardware = calibration.raw_platform if calibration is not None else problem.platform
        hw_overhead, hw_lat_us, hw_us_per_byte = _platform_tables(self.hardware, names)
        owner = {v: i for i, p in enumerate(plan.partitions) for v in p.ops}
        self.feeds = random_input(g, seed)
        devices = problem.platform.devices
        pus = [names.index(p.device) for p in plan.partitions]
        emulated_tensors: list[str] = []
        ios = []
        for i, p in enumerate(plan.partitions):
            ins, outs = partition_io(g, p.ops)
            ios.append((ins, outs))
            if devices[pus[i]].emulated:
                emulated_tensors.extend(outs)
        self.reference = reference_run(problem, self.feeds, emulated_tensors)
        #: the simulator's timing of this plan
        self.sim = simulate(problem, plan, sim)
        #: simulated duration of each partition (s): when a consumer expects its input
        self.expected_s = [(t.end_us - t.start_us) * 1e-6 for t in self.sim.partitions]
        steps = []
        for i, p in enumerate(plan.partitions):
            dev = devices[pus[i]]
            ins, outs = ios[i]
            inputs = tuple((t, owner[g.producer[t]] if t in g.producer else -1, g.tensors[t].size_bytes) for t in ins)
            if dev.emulated:
                # the emulated hardware runs the profiled work: undo a calibrated scale
                emu = (sim.work(p.ops, pus[i]) / problem.work_scale[pus[i]] + hw_overhead[pus[i]]) * 1e-6
                steps.append(_Step(i, pus[i], True, inputs, tuple(outs), None, emu, 1.0, list(outs)))
            else:
                sess = make_session(subgraph_model(g, p.ops, outputs=outs, name=f"{g.name}_p{i}"), dev.ort,
                                    f"partition {i} ({p.device})")
                pad = 1.0 / dev.speed_factor if dev.speed_factor < 1.0 else 1.0
                steps.append(_Step(i, pus[i], False, inputs, tuple(outs), sess, 0.0, pad, list(outs)))
        self.steps: tuple[_Step, ...] = tuple(steps)
        orders = plan.orders(names)
        self.orders = [tuple(orders.get(pu, ())) for pu in names]
        n = len(names)
        self._lat_s = [[x * 1e-6 for x in row] for row in hw_lat_us]
        self._s_per_byte = [[x * 1e-6 for x in row] for row in hw_us_per_byte]
        self.output_names = tuple(t.name for t in g.outputs)
        self.output_producer = {t: owner[g.output_producers[t]] for t in self.output_names}
        self.output_size = {t.name: t.size_bytes for t in g.outputs}
        self.workers = tuple(p for p in range(n) if self.orders[p] or p == self.host)
        self.emulated_pus = tuple(names[p] for p in self.workers if devices[p].emulated and self.orders[p])
        self.padded_pus = tuple(names[p] for p in self.workers
                                if not devices[p].emulated and devices[p].speed_factor < 1.0 and self.orders[p])
        #: what runs each PU's partitions (PUs with partitions only)
        self.runtimes = {names[p]: "emulated" if devices[p].emulated else f"onnxruntime ({devices[p].ort.describe()})"
                         for p in self.workers if self.orders[p]}
        #: cores each worker is pinned to (empty: not pinned): the PU's own ``cores``,
        #: and with ``pin_cores`` every other worker too
        self.cores: dict[int, tuple[int, ...]] = core_map(problem.platform, self.workers, pin_all=pin_cores)

    def _arrival_s(self, src: int, dst: int, size_bytes: int) -> float:
        """The link's transfer time in seconds (:meth:`Problem.transfer_us`)."""
        return self._lat_s[src][dst] + size_bytes * self._s_per_byte[src][dst]

    def run(self, runs: int = 1) -> list[_RunRecord]:
        """Execute the plan ``runs`` times in a row; return each run's timeline.

        The same worker threads (one per PU) serve every run: ONNX Runtime keeps
        per-thread state, and a session's first call on a new thread costs ~100 us
        more, which would otherwise land in every run.
        """
        steps, n = self.steps, len(self.steps)
        records = [_RunRecord([0.0] * n, [0.0] * n, 0.0, {}, [], [0.0] * n) for _ in range(runs)]
        done = [[threading.Event() for _ in range(n)] for _ in range(runs)]
        started = [[0.0] * n for _ in range(runs)]  # absolute start times, 0 = not yet
        abort = threading.Event()
        errors: list[BaseException] = []
        t0s = [0.0] * runs
        finish = [0.0] * runs
        next_run = [0]

        def set_t0() -> None:  # runs when every worker has finished the previous run
            t0s[next_run[0]] = time.perf_counter() + START_DELAY_S
            next_run[0] += 1

        barrier = threading.Barrier(len(self.workers), action=set_t0)

        def one_run(p: int, k: int) -> None:
            rec, ev, t0, begun = records[k], done[k], t0s[k], started[k]
            start, end = rec.start, rec.end

            def wait_for(i: int) -> None:
                """Wait until partition ``i`` (another PU's) has finished.

                Blocking on the event alone wakes ~20-40 us late (an idle vCPU must be
                woken), which on a plan with many PU switches adds up. So the worker
                blocks until :data:`SPIN_AHEAD_S` before the producer is expected to end
                (its actual start plus its simulated duration; in slices while it has
                not started), then spins, for at most :data:`MAX_SPIN_S`.
                """
                e = ev[i]
                spin_until = 0.0
                while not e.is_set():
                    if abort.is_set():
                        raise _Aborted
                    now = time.perf_counter()
                    b = begun[i]
                    if not b:
                        e.wait(_SLICE_S)
                        continue
                    expected = b + self.expected_s[i] - SPIN_AHEAD_S
                    if expected > now:
                        e.wait(min(expected - now, _POLL_S))
                    elif not spin_until:
                        spin_until = now + MAX_SPIN_S
                    elif now < spin_until:
                        os.sched_yield()
                    else:
                        e.wait(_POLL_S)
                if abort.is_set():
                    raise _Aborted

            def receive(t: str, j: int, size: int, dst: int) -> float:
                """Make tensor ``t`` (from partition ``j``, -1 = graph input) available on
                PU ``p`` for partition ``dst`` (-1: the host's outputs); return the
                absolute time from which ``p`` may use it."""
                if t in arrived:
                    return arrived[t]
                if j < 0:
                    src, ready, value = self.host, t0, self.feeds[t]
                else:
                    src = steps[j].pu
                    if src != p:
                        wait_for(j)
                    ready, value = end[j] + t0, shared[k][src][t]
                store[t] = value  # no copy: the emulated link time stands for the DMA
                if src == p:
                    arrived[t] = ready
                else:
                    handed = time.perf_counter()
                    arrived[t] = max(handed, ready + self._arrival_s(src, p, size))
                    rec.transfers.append((t, j, dst, src, p, size, handed - t0, arrived[t] - t0))
                return arrived[t]

            arrived: dict[str, float] = {}
            store = shared[k][p]
            wait_until(t0)
            free = 0.0
            for i in self.orders[p]:
                s = steps[i]
                rec.free[i] = free
                ready = t0
                for t, j, size in s.inputs:
                    ready = max(ready, receive(t, j, size, i))
                if ready > time.perf_counter():
                    rec.late.append(wait_until(ready))
                begin = begun[i] = time.perf_counter()
                if s.emulated:
                    rec.late.append(wait_until(begin + s.emulated_s))
                    for t in s.outputs:
                        store[t] = self.reference[t]
                else:
                    values = s.session.run(s.fetches, {t: store[t] for t, _, _ in s.inputs})
                    if s.pad_factor > 1.0:
                        rec.late.append(wait_until(begin + (time.perf_counter() - begin) * s.pad_factor))
                    for t, v in zip(s.outputs, values, strict=True):
                        store[t] = v
                stop = time.perf_counter()
                start[i], end[i] = begin - t0, stop - t0
                free = end[i]
                for t in s.outputs:
                    arrived[t] = stop
                ev[i].set()
            if p == self.host:  # graph outputs must reach the host
                ready = t0
                for t in self.output_names:
                    ready = max(ready, receive(t, self.output_producer[t], self.output_size[t], -1))
                if ready > time.perf_counter():
                    rec.late.append(wait_until(ready))
                finish[k] = time.perf_counter() - t0
                rec.outputs.update({t: np.array(store[t], copy=True) for t in self.output_names})

        # per run, per PU: the tensors that PU holds (written only by its own worker)
        shared: list[list[dict[str, np.ndarray]]] = [[{} for _ in self.problem.pus] for _ in range(runs)]

        def worker(p: int) -> None:
            try:
                lower_timer_slack()
                if p in self.cores:
                    pin_thread(self.cores[p])
                for k in range(runs):
                    barrier.wait()
                    one_run(p, k)
                    if k:  # every worker is past run k - 1: free its tensors
                        shared[k - 1] = []
            except _Aborted:
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
                errors.append(exc)
                abort.set()
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(p,), name=f"pu-{self.problem.pus[p]}", daemon=True)
                   for p in self.workers]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        if errors:
            exc = (real or errors)[0]
            if isinstance(exc, PartitionTunerError):
                raise exc
            raise PartitionTunerError(f"executing the plan failed: {type(exc).__name__}: {first_line(exc)}") from exc
        for k, rec in enumerate(records):
            rec.finish = finish[k]
            rec.makespan = max([finish[k], *rec.end])
        return records

    def result(self, runs: Sequence[_RunRecord], *, warmup: int = 0, rtol: float = RTOL, atol: float = ATOL,
               load: tuple[float, int] | None = None) -> ExecutionResult:
        """Summarise timed runs (from one or several :meth:`run` calls): median and
        p10 / p90 makespan, the median run's partitions and hand-offs, the output check
        and warnings (a loaded host: ``load`` = (load average, cores) taken before the
        runs; default: now)."""
        return _result(self, runs, warmup=warmup, rtol=rtol, atol=atol, load=load)


def run_plan(problem: Problem, plan: Plan, *, repeat: int = 5, warmup: int = 1, seed: int = 0,
             rtol: float = RTOL, atol: float = ATOL, pin_cores: bool = False) -> ExecutionResult:
    """Execute ``plan`` ``warmup + repeat`` times and compare with the simulator.

    Args:
        problem: the problem the plan was made for (its profiles drive the simulator
            and the emulated NPU times).
        plan: a valid plan.
        repeat: timed runs; the makespan reported is their median (with p10 / p90).
        warmup: untimed runs first (ORT allocates buffers on the first run).
        seed: seed of the random graph inputs.
        rtol, atol: tolerance of the output check.
        pin_cores: pin each PU's worker thread to its own cores.

    Returns:
        The measured and simulated timings and the output check.

    Raises:
        InfeasiblePlanError: the plan is not valid for ``problem``.
        PartitionTunerError: ONNX Runtime cannot build or run a partition.
    """
    check_repeat(repeat, warmup)
    load = host_load()
    ex = Executor(problem, plan, seed=seed, pin_cores=pin_cores)
    runs = ex.run(warmup + repeat)[warmup:]
    return ex.result(runs, warmup=warmup, rtol=rtol, atol=atol, load=load)


def check_repeat(repeat: int, warmup: int) -> None:
    if repeat < 1 or warmup < 0:
        raise PartitionTunerError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")


def _output_check(ex: Executor, runs: Sequence[_RunRecord], rtol: float, atol: float) -> tuple[bool, float]:
    """Every run's outputs against the whole-model run: (all close, max abs error)."""
    ok, max_err = True, 0.0
    for r in runs:
        for t in ex.output_names:
            got, ref = r.outputs[t], ex.reference[t]
            if got.shape != ref.shape:
                ok = False
                max_err = float("inf")
                continue
            ok &= bool(np.allclose(got, ref, rtol=rtol, atol=atol))
            if got.size:
                diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
                max_err = max(max_err, float(np.nanmax(diff)) if np.isfinite(diff).any() else float("inf"))
    return ok, max_err


def _result(ex: Executor, runs: Sequence[_RunRecord], *, warmup: int, rtol: float = RTOL, atol: float = ATOL,
            load: tuple[float, int] | None = None) -> ExecutionResult:
    """Summarise timed runs of ``ex`` (see :meth:`Executor.result`)."""
    problem, plan, sim = ex.problem, ex.plan, ex.sim
    repeat = len(runs)
    if not repeat:
        raise PartitionTunerError("no timed runs to summarise")
    ok, max_err = _output_check(ex, runs, rtol, atol)
    makespans = [r.makespan * 1e6 for r in runs]
    median_run = sorted(range(repeat), key=lambda k: makespans[k])[(repeat - 1) // 2]
    med = runs[median_run]
    g, names = problem.graph, problem.pus
    parts = tuple(
        PartitionRun(
            index=i, device=p.device, emulated=ex.steps[i].emulated, ops=tuple(g.nodes[v].name for v in p.ops),
            measured_start_us=med.start[i] * 1e6, measured_end_us=med.end[i] * 1e6,
            measured_us_median=statistics.median((r.end[i] - r.start[i]) * 1e6 for r in runs),
            simulated_start_us=sim.partitions[i].start_us, simulated_end_us=sim.partitions[i].end_us,
            measured_free_us=med.free[i] * 1e6 if med.free else 0.0,
        )
        for i, p in enumerate(plan.partitions)
    )
    transfers = tuple(
        TransferRun(t, size, names[src], names[dst], j, i, (med.end[j] if j >= 0 else 0.0) * 1e6, usable * 1e6, handed * 1e6)
        for t, j, i, src, dst, size, handed, usable in med.transfers
    )
    lates = [x * 1e6 for x in med.late] or [0.0]
    notes = []
    if ex.emulated_pus:
        notes.append(f"{', '.join(ex.emulated_pus)} partitions are emulated: they take the emulator's time and hand on "
                     "reference tensors from a whole-model ONNX Runtime run")
    real = [pu for pu, rt in ex.runtimes.items() if rt != "emulated"]
    if real:
        notes.append(f"{', '.join(real)} partitions ran for real: "
                     + "; ".join(f"{pu} on {ex.runtimes[pu]}" for pu in real))
    if ex.padded_pus:
        notes.append(f"{', '.join(ex.padded_pus)} partitions run on this CPU and are padded to measured / speed_factor")
    summary = summarize(makespans)
    load_avg, cores = load if load is not None else host_load()
    warnings = [w for w in (load_warning(load_avg, cores), spread_warning(summary)) if w]
    return ExecutionResult(
        model=g.name, platform=problem.platform.name, method=plan.method, repeat=repeat, warmup=warmup,
        measured_makespan_us=summary.median, makespan_runs_us=tuple(makespans),
        simulated_makespan_us=sim.makespan_us, outputs_match=ok, max_abs_error=max_err, rtol=rtol, atol=atol,
        emulated_pus=ex.emulated_pus, padded_pus=ex.padded_pus, partitions=parts,
        wait_late_us_median=statistics.median(lates), wait_late_us_max=max(lates), notes=tuple(notes),
        measured_p10_us=summary.p10, measured_p90_us=summary.p90,
        cost_model=cost_model_of(problem), warnings=tuple(warnings),
        load_average=load_avg, pinned_cores={names[p]: c for p, c in ex.cores.items()}, transfers=transfers,
        measured_finish_us=med.finish * 1e6, runtimes=dict(ex.runtimes),
    )


# ---------------------------------------------------------------------------------
# platform numbers and cores


def _platform_tables(platform, names: Sequence[str]) -> tuple[list[float], list[list[float]], list[list[float]]]:
    """Dispatch overhead (us), link latency (us) and inverse bandwidth (us / byte) of
    ``platform``, indexed like ``names`` (the emulation's "hardware" numbers)."""
    n = len(names)
    overhead = [float(platform.device(pu).dispatch_overhead_us) for pu in names]
    lat = [[0.0] * n for _ in range(n)]
    upb = [[0.0] * n for _ in range(n)]
    for (a, b), link in platform.links.items():
        i, j = names.index(a), names.index(b)
        lat[i][j] = float(link.latency_us)
        upb[i][j] = 1.0 / (link.bandwidth_gbps * 1000.0)
    return overhead, lat, upb


def core_map(platform, workers: Sequence[int], available: Sequence[int] | None = None, *,
             pin_all: bool = True) -> dict[int, tuple[int, ...]]:
    """Cores for each worker PU's thread.

    A PU that names its ``cores`` always gets them (only the first when ORT's pool
    threads take the others: :func:`~partitiontuner.profiling.ort_runtime.caller_cores`).
    With ``pin_all``, the other workers are placed on the cores no PU names (all
    ``available`` ones if every core is named): ONNX Runtime PUs take ``threads`` cores
    each, in platform order; emulated PUs (which sleep while they "compute") share the
    next core. With fewer cores than that, assignments wrap around (and then share).
    """
    devices = platform.devices
    out: dict[int, tuple[int, ...]] = {}
    for p in workers:
        mine = caller_cores(devices[p].ort) if not devices[p].emulated else None
        if mine is not None:
            out[p] = mine
    if not pin_all:
        return out
    if available is None:
        try:
            available = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux: no pinning
            return out
    named = {c for d in devices if d.cores is not None for c in d.cores}
    cores = [c for c in available if c not in named] or list(available)
    if not cores:
        return out
    nxt = 0
    for p in workers:
        d = devices[p]
        if p not in out and not d.emulated:
            out[p] = tuple(cores[(nxt + t) % len(cores)] for t in range(max(1, d.threads)))
            nxt += max(1, d.threads)
    shared = (cores[nxt % len(cores)],)
    for p in workers:
        out.setdefault(p, shared)
    return out
