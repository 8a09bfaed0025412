"""A CPU cost model fitted to measurements: latency of ops the host never ran.

:class:`CpuCostModel` is a per-op-type linear model ``a * MFLOPs + b * MB moved + c``
(``Conv/grouped`` apart from ``Conv``), fitted by non-negative least squares to the
committed fixture ORT measurements (1 thread) of the zoo's training split, with fused
group times at the median measured group/sum ratio of the same op-type pattern.
:func:`modelled_profiles` uses it to profile graphs nobody measured (the training
corpus's generated graphs, planning benchmarks): they cost what this host's ORT would
plausibly measure. The unseen zoo models are never fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from partitiontuner.branches import chain_groups
from partitiontuner.errors import ConfigError, ProfileError
from partitiontuner.graph import OpGraph, OpNode
from partitiontuner.platform import Platform, load_platform
from partitiontuner.profiling.build import CpuTable, assemble_profiles, measured_devices
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.zoo import TRAIN_MODELS, UNSEEN_MODELS, load_model


def _cpu_key(op: OpNode) -> str:
    if op.op_type == "Conv" and int(op.attributes.get("group", 1)) > 1:
        return "Conv/grouped"
    return op.op_type


def _pattern(ops: Sequence[OpNode]) -> str:
    return "+".join(_cpu_key(o) for o in ops)


@dataclass(frozen=True)
class CpuCostModel:
    """Latency of one CPU thread: ``a * MFLOPs + b * MB moved + c`` us per op-type key
    (``Conv/grouped`` apart from ``Conv``), a fallback fitted on all ops for unknown
    types, and group/sum ratios per op-type pattern of a fused chain.

    Attributes:
        coef: key -> ``(a, b, c)``.
        default: ``(a, b, c)`` for keys not in ``coef``.
        group_ratio: pattern (``"Conv+BatchNormalization+Relu"``) -> median ratio.
        default_group_ratio: median over all measured groups.
    """

    coef: dict[str, tuple[float, float, float]]
    default: tuple[float, float, float]
    group_ratio: dict[str, float] = field(default_factory=dict)
    default_group_ratio: float = 1.0

    def op_latency_us(self, op: OpNode) -> float:
        a, b, c = self.coef.get(_cpu_key(op), self.default)
        return max(a * op.flops / 1e6 + b * (op.bytes_read + op.bytes_written) / 1e6 + c, 0.05)

    def group_latency_us(self, ops: Sequence[OpNode]) -> float:
        total = sum(self.op_latency_us(o) for o in ops)
        return total * self.group_ratio.get(_pattern(ops), self.default_group_ratio)


def _nnls(a: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Non-negative least squares for three coefficients, exactly: the best feasible
    unconstrained solution over all 7 non-empty supports (rows weighted by ``1 / y``, so
    relative errors count: small ops are the many)."""
    scale = np.maximum(a.max(axis=0), 1e-12)
    w = 1.0 / np.maximum(y, 1.0)
    aw, yw = a / scale * w[:, None], y * w
    best, best_err = np.zeros(3), float(np.sum(yw**2))
    for support in ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)):
        cols = list(support)
        x, *_ = np.linalg.lstsq(aw[:, cols], yw, rcond=None)
        if (x < 0).any():
            continue
        err = float(np.sum((aw[:, cols] @ x - yw) ** 2))
        if err < best_err:
            best, best_err = np.zeros(3), err
            best[cols] = x
    best = best / scale
    return float(best[0]), float(best[1]), float(best[2])


@cache
def fit_cpu_model(models: tuple[str, ...] = TRAIN_MODELS) -> CpuCostModel:
    """Fit :class:`CpuCostModel` to the fixture CPU measurements of ``models`` (the
    training split by default; models without a fixture file are skipped)."""
    from partitiontuner.profiling.fixtures import fixture_profiles

    assert not set(models) & set(UNSEEN_MODELS), "never fit on the unseen models"
    cpu = load_platform("cpu-npu")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    ratios: dict[str, list[float]] = {}
    for name in models:
        g = load_model(name)
        try:
            prof = fixture_profiles(g, cpu)
        except ProfileError:
            continue
        j = cpu.names.index("cpu")
        for op in g.nodes:
            t = float(prof.op_latency_us[op.index, j])
            if math.isfinite(t):
                rows.setdefault(_cpu_key(op), []).append((op.flops / 1e6, (op.bytes_read + op.bytes_written) / 1e6, t))
        for key, lat in prof.groups.items():
            s = float(np.sum(prof.op_latency_us[list(key), j]))
            if math.isfinite(lat[j]) and s > 0:
                ratios.setdefault(_pattern([g.nodes[i] for i in key]), []).append(float(lat[j]) / s)
    if not rows:
        raise ConfigError("no fixture profiles of the training models to fit the CPU cost model to")
    allrows = np.array([r for rs in rows.values() for r in rs])
    default = _nnls(np.c_[allrows[:, :2], np.ones(len(allrows))], allrows[:, 2])
    coef = {}
    for key, rs in rows.items():
        arr = np.array(rs)
        if len(arr) >= 3:
            coef[key] = _nnls(np.c_[arr[:, :2], np.ones(len(arr))], arr[:, 2])
        else:
            coef[key] = (default[0], default[1], float(np.median(arr[:, 2])))
    group_ratio = {k: float(np.clip(np.median(v), 0.3, 1.2)) for k, v in ratios.items()}
    allr = [r for v in ratios.values() for r in v]
    return CpuCostModel(coef, default, group_ratio, float(np.clip(np.median(allr), 0.3, 1.2)) if allr else 1.0)



def modelled_profiles(graph: OpGraph, platform: Platform, cpu_model: CpuCostModel | None = None) -> Profiles:
    """Profiles whose CPU PUs cost by ``cpu_model`` (divided by each CPU's
    ``speed_factor``) and NPUs by the emulator, with every chain group profiled: what a
    generated graph would plausibly measure on this host, without measuring anything."""
    cpu_model = cpu_model or fit_cpu_model()
    n = graph.num_ops
    lat = np.array([cpu_model.op_latency_us(op) for op in graph.nodes])
    groups = chain_groups(graph)
    table = CpuTable(lat, np.full(n, np.nan))
    for gr in groups:
        key = tuple(sorted(gr))
        table.groups[key] = (cpu_model.group_latency_us([graph.nodes[i] for i in key]), math.nan)
    return assemble_profiles(graph, platform, dict.fromkeys(measured_devices(platform), table), groups,
                             source="modelled", host="cpu-model")
