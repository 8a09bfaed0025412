"""Fit the cost model's parameters to real runs of the executor, store and apply them.

The simulator (:mod:`partitiontuner.simulate`) charges each partition its profiled
work plus the PU's launch cost, and each tensor crossing PUs the link's latency plus
bytes / bandwidth. Profiles measure ops alone; a real run adds what happens between
them: ONNX Runtime's fixed cost per ``run()``, the worker's Python hand-off, a waiting
thread's wake-up. Calibration measures those on this host and puts them where the
model already has room for them:

* **launch cost per PU** (``dispatch_overhead_us``): from every partition whose start
  was gated by its own PU, ``end - (when the PU became free)`` is one sample of
  ``work + launch``; from one gated by an input, ``end - start`` is;
* **per-link latency and us per byte** (``latency_us``, ``bandwidth_gbps``): from
  every partition gated by an input from another PU, ``start - producer's end`` is
  one sample of ``latency + bytes * us_per_byte`` (the gating tensor's bytes), and
  likewise the last graph output reaching the host.

Which of the two gated a start depends on the parameters, so samples are re-derived
from the runs with the current fit and the fit repeated (three rounds). Each fit is a
small non-negative least-squares problem solved exactly by enumerating active sets,
after dropping outliers beyond three MADs (a preempted run is late, never early).

* **work scale per PU** (``work_scale``): ops profiled alone run slower inside a
  real run (caches and memory bandwidth shared with the other PU's partitions, cold
  caches after a hand-off). Where a PU's samples span a range of work sizes, its
  ``work + launch`` samples are fitted jointly as ``scale * work + launch`` (scale
  kept within [:data:`MIN_SCALE`, :data:`MAX_SCALE`]); otherwise the scale stays 1 and
  the launch cost absorbs the difference. Without the scale, a fitted launch cost
  soaks up the slowdown of large partitions and over-charges small ones.

Storage mirrors the profile cache: ``<cache root>/calibration/<host>-<platform>-<sig>.json``
(host fingerprint id, platform name and a hash of the platform's own numbers), JSON
with a format name, schema version and SHA-256, written atomically, so an
interrupted ``calibrate`` leaves the previous file intact. A corrupt or foreign file
is reported with one warning line and ignored (the uncalibrated model is used).

The fit (:func:`fit`) is separate from the measurement loop
(:mod:`partitiontuner.microbench`, which runs the microbenchmarks and calls it) so it
can be tested against a fake executor with known parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from partitiontuner.atomic import write_text_atomic
from partitiontuner.platform import Link, Platform

FORMAT = "partitiontuner-calibration"
VERSION = 1
#: fitting rounds (samples re-derived with the previous round's parameters)
ROUNDS = 3
#: residuals beyond this many (scaled) MADs are dropped before the final fit
OUTLIER_MADS = 3.0

log = logging.getLogger("partitiontuner.calibrate")


# ---------------------------------------------------------------------------------
# what a run shows


@dataclass(frozen=True)
class PartitionEvent:
    """One partition in one measured run (us from the run's t = 0).

    Attributes:
        pu: the PU it ran on.
        work_us: its profiled work (the simulator's, without launch cost).
        free_us: when its PU finished the partition before it (0 for the first).
        start_us, end_us: measured.
        inputs: per tensor from another PU (or a graph input on a non-host PU):
            (source PU, the producer's measured end, tensor bytes).
    """

    pu: str
    work_us: float
    free_us: float
    start_us: float
    end_us: float
    inputs: tuple[tuple[str, float, int], ...] = ()


@dataclass(frozen=True)
class OutputEvent:
    """The end of one run: the graph outputs reach the host.

    ``host_free_us``: the host's last partition ended; ``finish_us``: the last output is
    on the host; ``inputs``: outputs made on other PUs as (PU, producer end, bytes).
    """

    host: str
    host_free_us: float
    finish_us: float
    inputs: tuple[tuple[str, float, int], ...]


#: a fitted work scale is kept within these bounds (a wider one is a bad fit, not a machine)
MIN_SCALE, MAX_SCALE = 0.5, 4.0
#: samples a PU needs before its work scale is fitted
MIN_SCALE_SAMPLES = 6

@dataclass(frozen=True)
class Params:
    """Cost-model parameters: launch cost per PU; latency and us per byte per link."""

    launch_us: Mapping[str, float]
    latency_us: Mapping[tuple[str, str], float]
    us_per_byte: Mapping[tuple[str, str], float]

    @classmethod
    def of(cls, platform: Platform) -> Params:
        return cls(
            {d.name: float(d.dispatch_overhead_us) for d in platform.devices},
            {k: float(lk.latency_us) for k, lk in platform.links.items()},
            {k: 1.0 / (lk.bandwidth_gbps * 1000.0) for k, lk in platform.links.items()},
        )

    def transfer_us(self, src: str, dst: str, size_bytes: float) -> float:
        if src == dst:
            return 0.0
        return self.latency_us[(src, dst)] + size_bytes * self.us_per_byte[(src, dst)]


def samples(events: Iterable[PartitionEvent | OutputEvent], params: Params
            ) -> tuple[dict[str, list[tuple[float, float]]], dict[tuple[str, str], list[tuple[float, float]]]]:
    """Split measured runs into launch samples and transfer samples under ``params``.

    Returns:
        ``launch[pu]``: (work_us, measured work + launch in us) pairs;
        ``link[(src, dst)]``: (bytes, measured transfer in us) pairs.
    """
    launch: dict[str, list[tuple[float, float]]] = {}
    link: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for e in events:
        gate_at, gate = -math.inf, None
        free = e.free_us if isinstance(e, PartitionEvent) else e.host_free_us
        dst = e.pu if isinstance(e, PartitionEvent) else e.host
        for src, produced, size in e.inputs:
            at = produced + params.transfer_us(src, dst, size)
            if at > gate_at:
                gate_at, gate = at, (src, produced, size)
        by_input = gate is not None and gate_at > free
        begin = e.start_us if isinstance(e, PartitionEvent) else e.finish_us
        if by_input:
            src, produced, size = gate
            link.setdefault((src, dst), []).append((float(size), begin - produced))
        if isinstance(e, PartitionEvent):
            launch.setdefault(e.pu, []).append((e.work_us, e.end_us - (e.start_us if by_input else e.free_us)))
    return launch, link


# ---------------------------------------------------------------------------------
# the fit


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares ``min |a x - b|, x >= 0`` for a few columns, exactly:
    the best least-squares solution over every subset of free columns whose solution
    is non-negative (the optimum is one of them)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = a.shape[1]
    best, best_err = np.zeros(k), float(np.sum(b * b))
    for r in range(1, k + 1):
        for cols in itertools.combinations(range(k), r):
            sub = a[:, cols]
            x, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if np.all(x >= 0):
                err = float(np.sum((sub @ x - b) ** 2))
                if err < best_err - 1e-12:
                    best, best_err = np.zeros(k), err
                    best[list(cols)] = x
    return best


def robust_nnls(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`nnls`, then again without residuals beyond :data:`OUTLIER_MADS` MADs;
    returns the solution and how many samples it kept."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = nnls(a, b)
    r = b - a @ x
    mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    keep = np.abs(r - np.median(r)) <= OUTLIER_MADS * mad + 1e-9
    if mad > 0 and keep.sum() >= a.shape[1] + 1 and not keep.all():
        x = nnls(a[keep], b[keep])
    return x, int(keep.sum()) if mad > 0 else len(b)


@dataclass(frozen=True)
class LinkFit:
    latency_us: float
    us_per_byte: float
    samples: int


@dataclass(frozen=True)
class Calibration:
    """Fitted parameters of one platform on one host.

    Attributes:
        launch_us: per PU, the launch cost per partition (replaces ``dispatch_overhead_us``).
        links: per (src, dst), latency and us per byte (replace the link's numbers);
            links with no samples keep the platform's.
        work_scale: per PU, measured work / profiled work (replaces the device's
            ``work_scale``); PUs without enough spread in their samples keep 1.
        launch_samples: per PU, samples behind ``launch_us``.
        error_before, error_after: median |simulated / measured - 1| of the
            microbenchmark plans with the platform's and the fitted parameters.
    """

    platform: str
    platform_signature: str
    host: str
    launch_us: Mapping[str, float]
    links: Mapping[tuple[str, str], LinkFit]
    work_scale: Mapping[str, float] = field(default_factory=dict)
    launch_samples: Mapping[str, int] = field(default_factory=dict)
    error_before: float | None = None
    error_after: float | None = None
    plans: int = 0
    seconds: float = 0.0
    created: str = ""

    def params(self, base: Params) -> Params:
        """``base`` with the fitted values in place."""
        return Params(
            {**base.launch_us, **self.launch_us},
            {**base.latency_us, **{k: f.latency_us for k, f in self.links.items()}},
            {**base.us_per_byte, **{k: f.us_per_byte for k, f in self.links.items()}},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform, "platform_signature": self.platform_signature, "host": self.host,
            "launch_us": dict(self.launch_us),
            "links": [{"src": a, "dst": b, "latency_us": f.latency_us, "us_per_byte": f.us_per_byte,
                       "samples": f.samples} for (a, b), f in self.links.items()],
            "work_scale": dict(self.work_scale),
            "launch_samples": dict(self.launch_samples),
            "error_before": self.error_before, "error_after": self.error_after,
            "plans": self.plans, "seconds": self.seconds, "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        links = {(str(x["src"]), str(x["dst"])): LinkFit(float(x["latency_us"]), float(x["us_per_byte"]), int(x["samples"]))
                 for x in d["links"]}
        cal = cls(
            str(d["platform"]), str(d["platform_signature"]), str(d["host"]),
            {str(k): float(v) for k, v in d["launch_us"].items()}, links,
            {str(k): float(v) for k, v in d.get("work_scale", {}).items()},
            {str(k): int(v) for k, v in d.get("launch_samples", {}).items()},
            d.get("error_before"), d.get("error_after"), int(d.get("plans", 0)), float(d.get("seconds", 0.0)),
            str(d.get("created", "")),
        )
        values = [*cal.launch_us.values(), *(f.latency_us for f in links.values()), *(f.us_per_byte for f in links.values())]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError("negative or non-finite parameter")
        return cal


def fit(events: Sequence[PartitionEvent | OutputEvent], platform: Platform, *, host: str = "",
        rounds: int = ROUNDS) -> Calibration:
    """Fit launch costs and link parameters to measured runs (see the module docstring).

    Args:
        events: every partition (and output hand-off) of every measured run.
        platform: the uncalibrated platform: starting parameters, and the values kept
            for PUs and links without samples.
        host: host fingerprint id recorded in the result.
        rounds: fitting rounds.

    Returns:
        The fitted :class:`Calibration` (no errors filled in; see :func:`calibrate`).
    """
    base = Params.of(platform)
    params = base
    launch: dict[str, float] = {}
    links: dict[tuple[str, str], LinkFit] = {}
    scale: dict[str, float] = {}
    counts: dict[str, int] = {}
    for _ in range(max(1, rounds)):
        by_pu, by_link = samples(events, params)
        launch, scale, counts = {}, {}, {}
        for pu, xs in sorted(by_pu.items()):
            w = np.array([x[0] for x in xs])
            m = np.array([x[1] for x in xs])
            a = 1.0
            if len(m) >= MIN_SCALE_SAMPLES and np.ptp(w) > 0.5 * max(float(np.median(w)), 1.0):
                (a, _c), _ = robust_nnls(np.column_stack([w, np.ones(len(w))]), m)
                a = float(min(max(a, MIN_SCALE), MAX_SCALE))
                scale[pu] = a
            (c,), kept = robust_nnls(np.ones((len(m), 1)), m - a * w)
            launch[pu], counts[pu] = float(c), kept
        links = {}
        for key, xs in sorted(by_link.items()):
            size = np.array([x[0] for x in xs])
            d = np.array([x[1] for x in xs])
            if len(d) >= 3 and np.ptp(size) > 0:
                (lat, upb), kept = robust_nnls(np.column_stack([np.ones(len(d)), size]), d)
            else:  # one size only: the bandwidth is not identifiable; keep the platform's
                upb = base.us_per_byte[key]
                (lat,), kept = robust_nnls(np.ones((len(d), 1)), d - upb * size)
            links[key] = LinkFit(float(lat), float(upb), kept)
        params = Params({**base.launch_us, **launch}, {**base.latency_us, **{k: f.latency_us for k, f in links.items()}},
                        {**base.us_per_byte, **{k: f.us_per_byte for k, f in links.items()}})
    return Calibration(platform.name, platform_signature(platform), host, launch, links, scale, counts)


# ---------------------------------------------------------------------------------
# applying and storing


def platform_signature(platform: Platform) -> str:
    """Hash of the platform's own numbers: a changed preset invalidates its calibration."""
    blob = json.dumps([
        [[d.name, d.kind, d.dispatch_overhead_us, d.threads, d.speed_factor, d.work_scale, d.settings]
         for d in platform.devices],
        sorted([a, b, lk.latency_us, lk.bandwidth_gbps] for (a, b), lk in platform.links.items()),
        platform.host,
    ], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def apply(platform: Platform, cal: Calibration) -> Platform:
    """``platform`` with the calibrated launch costs and link parameters."""
    devices = tuple(dataclasses.replace(d, dispatch_overhead_us=cal.launch_us.get(d.name, d.dispatch_overhead_us),
                                        work_scale=cal.work_scale.get(d.name, d.work_scale))
                    for d in platform.devices)
    links = dict(platform.links)
    for (a, b), f in cal.links.items():
        if (a, b) in links:
            bw = 1.0 / (max(f.us_per_byte, 1e-12) * 1000.0)
            links[(a, b)] = Link(a, b, f.latency_us, bw)
    return dataclasses.replace(platform, devices=devices, links=MappingProxyType(links))


@dataclass(frozen=True)
class AppliedCalibration:
    """A calibration in use: what a calibrated :class:`Problem` carries.

    ``raw_platform`` is the uncalibrated platform: the executor emulates NPUs and links
    with its numbers (the "hardware"), never with the fitted ones.
    """

    calibration: Calibration
    raw_platform: Platform
    path: str


def calibration_path(platform: Platform, root: str | Path | None = None, host: str | None = None) -> Path:
    from partitiontuner.profiling.cache import default_root, fingerprint_id, host_fingerprint

    root = Path(root) if root is not None else default_root()
    host = host or fingerprint_id(host_fingerprint())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in platform.name)
    return root / "calibration" / f"{host}-{safe}-{platform_signature(platform)[:12]}.json"


def _checksum(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_calibration(cal: Calibration, platform: Platform, root: str | Path | None = None) -> Path:
    """Write ``cal`` atomically (temporary file + rename) and return its path."""
    path = calibration_path(platform, root, cal.host or None)
    payload = cal.to_dict()
    data = {"format": FORMAT, "version": VERSION, "payload": payload, "sha256": _checksum(payload)}
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def load_calibration(platform: Platform, root: str | Path | None = None, host: str | None = None) -> Calibration | None:
    """The stored calibration of ``platform`` on this host, or ``None``.

    A missing file is silent; a corrupt one, one of another host or platform, or one
    with another schema version is reported with one warning line and ignored.
    """
    from partitiontuner.profiling.cache import fingerprint_id, host_fingerprint

    host = host or fingerprint_id(host_fingerprint())
    path = calibration_path(platform, root, host)
    from partitiontuner.errors import PartitionTunerError
    from partitiontuner.safe_io import parse_json, read_text

    if not path.exists():
        return None
    try:  # regular files only, size-capped: a FIFO or /dev/zero must not hang or fill memory
        data = parse_json(read_text(path, what="calibration file", max_bytes=2**20), where=str(path))
    except PartitionTunerError as exc:
        return _bad(path, str(exc))
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        return _bad(path, "wrong format or schema version")
    payload = data.get("payload")
    if _checksum(payload) != data.get("sha256"):
        return _bad(path, "checksum mismatch")
    try:
        cal = Calibration.from_dict(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return _bad(path, f"malformed ({exc})")
    if cal.host != host or cal.platform_signature != platform_signature(platform):
        return _bad(path, "made on another host or for another platform")
    unknown = [pu for pu in cal.launch_us if pu not in platform.names] + [f"{a}->{b}" for a, b in cal.links
                                                                          if (a, b) not in platform.links]
    if unknown:
        return _bad(path, f"names {', '.join(unknown)} not in the platform")
    return cal


def _bad(path: Path, why: str) -> None:
    log.warning("partitiontuner: warning: ignoring calibration %s: %s; using the uncalibrated cost model", path, why)
    return None


def calibrated_platform(platform: Platform, root: str | Path | None = None) -> tuple[Platform, AppliedCalibration | None]:
    """``platform`` with this host's stored calibration applied, if there is one."""
    cal = load_calibration(platform, root)
    if cal is None:
        return platform, None
    return apply(platform, cal), AppliedCalibration(cal, platform, str(calibration_path(platform, root, cal.host)))


def cost_model_of(problem: Any) -> str:
    """``"calibrated"`` or ``"uncalibrated"``: which parameters ``problem``'s simulator uses."""
    return "calibrated" if getattr(problem, "calibration", None) is not None else "uncalibrated"
