"""What a real run of a plan measured (:func:`partitiontuner.execute.run_plan`): per
partition and per hand-off, the makespan's median and spread, the output check, and
the JSON the ``run`` command prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from partitiontuner.simulate import TransferTiming


@dataclass(frozen=True)
class PartitionRun:
    """One partition: measured (in the median run) beside simulated, in us from t = 0.

    ``measured_us_median`` is the median of this partition's duration over all timed
    runs (steadier than the single median run's duration).
    """

    index: int
    device: str
    emulated: bool
    ops: tuple[str, ...]
    measured_start_us: float
    measured_end_us: float
    measured_us_median: float
    simulated_start_us: float
    simulated_end_us: float
    measured_free_us: float = 0.0  # when its PU finished the partition before it (or t = 0)

    @property
    def measured_us(self) -> float:
        return self.measured_end_us - self.measured_start_us

    @property
    def simulated_us(self) -> float:
        return self.simulated_end_us - self.simulated_start_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.index, "device": self.device, "emulated": self.emulated, "ops": list(self.ops),
            "measured_start_us": round(self.measured_start_us, 3), "measured_end_us": round(self.measured_end_us, 3),
            "measured_us": round(self.measured_us, 3), "measured_us_median": round(self.measured_us_median, 3),
            "simulated_start_us": round(self.simulated_start_us, 3), "simulated_end_us": round(self.simulated_end_us, 3),
            "simulated_us": round(self.simulated_us, 3),
        }


@dataclass(frozen=True)
class TransferRun(TransferTiming):
    """One measured hand-off between PUs in the median run, in us from t = 0 (the
    simulator's record plus when the receiver got hold of the tensor).

    The tensor leaves at ``start_us`` (its producer's measured end), the receiving
    worker holds it from ``handed_us`` and may use it from ``end_us`` (``start_us`` plus
    the link's emulated transfer time, or later if the hand-over itself was late).
    """

    handed_us: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "size_bytes": self.size_bytes, "src": self.src_device, "dst": self.dst_device,
                "src_partition": self.src_partition, "dst_partition": self.dst_partition,
                "start_us": round(self.start_us, 3), "handed_us": round(self.handed_us, 3),
                "usable_us": round(self.end_us, 3)}


@dataclass(frozen=True)
class ExecutionResult:
    """What :func:`run_plan` measured.

    Attributes:
        measured_makespan_us: median over the timed runs; ``measured_p10_us`` and
            ``measured_p90_us`` their 10th and 90th percentiles.
        makespan_runs_us: every timed run's makespan, in run order.
        simulated_makespan_us: the simulator's makespan for the same plan.
        outputs_match: every timed run's final outputs equal the whole-model ORT run
            within ``rtol`` / ``atol`` (``numpy.allclose``).
        max_abs_error: largest absolute difference to the whole-model run.
        emulated_pus: PUs whose partitions were emulated (NPUs), not run.
        runtimes: per PU that ran partitions, what ran them: ``emulated`` or
            ``onnxruntime (providers, threads, cores)``.
        padded_pus: CPU PUs slowed down by padding (``speed_factor < 1``).
        partitions: per partition, in plan order (median run).
        wait_late_us_median, wait_late_us_max: lateness of the timed waits of the median
            run (transfer arrivals, emulated NPU time, pads).
        cost_model: ``calibrated`` or ``uncalibrated``: the model the simulated times use.
        warnings: one line each: a loaded host, a spread over 10 %.
        transfers: the median run's hand-offs between PUs.
    """

    model: str
    platform: str
    method: str
    repeat: int
    warmup: int
    measured_makespan_us: float
    makespan_runs_us: tuple[float, ...]
    simulated_makespan_us: float
    outputs_match: bool
    max_abs_error: float
    rtol: float
    atol: float
    emulated_pus: tuple[str, ...]
    padded_pus: tuple[str, ...]
    partitions: tuple[PartitionRun, ...]
    wait_late_us_median: float
    wait_late_us_max: float
    notes: tuple[str, ...] = field(default=())
    measured_p10_us: float = 0.0
    measured_p90_us: float = 0.0
    cost_model: str = "uncalibrated"
    warnings: tuple[str, ...] = field(default=())
    load_average: float = float("nan")
    pinned_cores: dict[str, tuple[int, ...]] = field(default_factory=dict)
    transfers: tuple[TransferRun, ...] = field(default=())
    measured_finish_us: float = 0.0  # the median run's last output on the host
    runtimes: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Measured over simulated makespan (1.0 = the cost model is exact)."""
        return self.measured_makespan_us / self.simulated_makespan_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "platform": self.platform, "method": self.method,
            "measured_makespan_us": round(self.measured_makespan_us, 3),
            "measured_p10_us": round(self.measured_p10_us, 3), "measured_p90_us": round(self.measured_p90_us, 3),
            "simulated_makespan_us": round(self.simulated_makespan_us, 3), "cost_model": self.cost_model,
            "ratio": round(self.ratio, 4),
            "makespan_runs_us": [round(x, 3) for x in self.makespan_runs_us],
            "outputs_match": self.outputs_match, "max_abs_error": float(self.max_abs_error),
            "rtol": self.rtol, "atol": self.atol, "repeat": self.repeat, "warmup": self.warmup,
            "emulated_pus": list(self.emulated_pus), "padded_pus": list(self.padded_pus),
            "runtimes": dict(self.runtimes),
            "wait_late_us_median": round(self.wait_late_us_median, 3), "wait_late_us_max": round(self.wait_late_us_max, 3),
            "notes": list(self.notes), "warnings": list(self.warnings),
            "load_average": None if self.load_average != self.load_average else round(self.load_average, 2),
            "pinned_cores": {k: list(v) for k, v in self.pinned_cores.items()},
            "per_partition": [p.to_dict() for p in self.partitions],
            "transfers": [t.to_dict() for t in self.transfers],
        }
