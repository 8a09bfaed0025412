"""A planning problem: graph + platform + profiles + user constraints.

Every planner, the simulator, the oracle and the RL environment take a
:class:`Problem`; the tables they share (what may run where, latencies, groups,
overheads) are built here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from partitiontuner.constraints import Constraints, PlacementMask
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.fusion import FusionTable
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform
from partitiontuner.profiling.profiles import Profiles

if TYPE_CHECKING:
    from partitiontuner.calibrate import AppliedCalibration


@dataclass(frozen=True, eq=False)
class Problem:
    graph: OpGraph
    platform: Platform
    profiles: Profiles
    constraints: Constraints = field(default_factory=Constraints)
    #: set when ``platform`` carries this host's fitted launch / link costs
    #: (:mod:`partitiontuner.calibrate`); the executor emulates with ``raw_platform``
    calibration: AppliedCalibration | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.profiles.check_matches(self.graph, self.platform)
        self.fusion  # noqa: B018 - validates that profiled groups are chain runs
        bad = np.flatnonzero(~self.allowed.any(axis=1))
        if len(bad):
            i = int(bad[0])
            why = "; ".join(f"{pu}: {self.excluded_reason(i, j)}" for j, pu in enumerate(self.platform.names))
            raise InfeasiblePlanError(f"op {self.graph.nodes[i].name!r} can run on no PU ({why})")

    # --- sizes ----------------------------------------------------------------------
    @property
    def num_ops(self) -> int:
        return self.graph.num_ops

    @property
    def num_pus(self) -> int:
        return self.platform.num_pus

    @property
    def pus(self) -> tuple[str, ...]:
        return self.platform.names

    @cached_property
    def host(self) -> int:
        return self.platform.names.index(self.platform.host)

    # --- what may run where --------------------------------------------------------------
    @cached_property
    def placement(self) -> PlacementMask:
        return self.constraints.placement(self.graph, self.platform)

    @cached_property
    def supported(self) -> np.ndarray:
        """``(num_ops, num_pus)`` bool: the PU can run the op (it has a profile)."""
        return np.isfinite(self.profiles.op_latency_us)

    @cached_property
    def allowed(self) -> np.ndarray:
        """``(num_ops, num_pus)`` bool: supported and allowed by pins and forbids."""
        return self.supported & self.placement.allowed

    def excluded_reason(self, op: int, pu: int) -> str | None:
        """Why ``op`` may not run on ``pu`` (the rule), or ``None`` if it may."""
        dev = self.platform.devices[pu]
        if not self.supported[op, pu]:
            return dev.unsupported_reason(self.graph.nodes[op]) or f"no {dev.name} profile for this op"
        if op in self.placement.pinned and not self.placement.allowed[op, pu]:
            return f"pinned elsewhere ({self.placement.pinned[op]})"
        if (op, pu) in self.placement.forbidden:
            return f"forbidden ({self.placement.forbidden[(op, pu)]})"
        return None

    # --- costs -----------------------------------------------------------------------------
    @cached_property
    def op_time(self) -> np.ndarray:
        """``(num_ops, num_pus)`` latency in us; ``inf`` where the PU cannot run the op.

        The profiled latency times the PU's ``work_scale`` (1 unless calibrated): the
        one place the scale enters, so the simulator, the fusion cover, the oracle's
        tables and the environment all see the same scaled numbers.
        """
        t = np.array(self.profiles.op_latency_us, dtype=np.float64) * self.work_scale
        t[~np.isfinite(t)] = np.inf
        return t

    @cached_property
    def work_scale(self) -> np.ndarray:
        """``(num_pus,)`` multiplier on profiled work (:attr:`Device.work_scale`)."""
        return np.array([d.work_scale for d in self.platform.devices], dtype=np.float64)

    @cached_property
    def group_time(self) -> dict[frozenset[int], np.ndarray]:
        """Profiled groups: op set -> ``(num_pus,)`` latency (``inf`` where unsupported)."""
        out = {}
        for ops, lat in self.profiles.groups.items():
            t = np.array(lat, dtype=np.float64) * self.work_scale
            t[~np.isfinite(t)] = np.inf
            out[frozenset(ops)] = t
        return out

    @cached_property
    def overhead(self) -> np.ndarray:
        """``(num_pus,)`` dispatch overhead paid once per partition, in us."""
        return np.array([d.dispatch_overhead_us for d in self.platform.devices])

    @cached_property
    def link_latency(self) -> np.ndarray:
        """``(num_pus, num_pus)`` latency in us; 0 on the diagonal."""
        n = self.num_pus
        m = np.zeros((n, n))
        for (a, b), link in self.platform.links.items():
            m[self.pus.index(a), self.pus.index(b)] = link.latency_us
        return m

    @cached_property
    def link_us_per_byte(self) -> np.ndarray:
        """``(num_pus, num_pus)`` inverse bandwidth in us per byte; 0 on the diagonal."""
        n = self.num_pus
        m = np.zeros((n, n))
        for (a, b), link in self.platform.links.items():
            m[self.pus.index(a), self.pus.index(b)] = 1.0 / (link.bandwidth_gbps * 1000.0)
        return m

    def transfer_us(self, src: int, dst: int, size_bytes: float) -> float:
        if src == dst:
            return 0.0
        return float(self.link_latency[src, dst] + size_bytes * self.link_us_per_byte[src, dst])

    @cached_property
    def fusion(self) -> FusionTable:
        """Savings of the profiled groups (see :mod:`partitiontuner.fusion`)."""
        return FusionTable(self.graph, self.op_time, self.group_time)

    def partition_time(self, ops: Iterable[int], pu: int) -> float:
        """Work time of a partition on ``pu`` (no dispatch overhead): the sum of its ops'
        times minus the best fusion saving, i.e. the cheapest cover of its ops by
        profiled groups (run fused) and single ops. A partition that is exactly a
        profiled group lasts min(group time, sum of its ops); one with no profiled group
        inside lasts the sum of its ops."""
        ops = list(ops)
        total = float(sum(self.op_time[i, pu] for i in ops))
        if len(ops) > 1:
            total -= self.fusion.saving(ops, pu)
        return total

    # --- memory --------------------------------------------------------------------------------
    @cached_property
    def memory_capacity(self) -> np.ndarray:
        """``(num_pus,)`` bytes; ``inf`` for an unlimited PU."""
        return np.array([np.inf if d.memory_bytes is None else float(d.memory_bytes) for d in self.platform.devices])

    @property
    def has_memory_limits(self) -> bool:
        return bool(np.isfinite(self.memory_capacity).any())

    def activation_bytes(self, ops: frozenset[int] | set[int] | tuple[int, ...]) -> int:
        """Activations live while a partition runs: the tensors it reads plus those it writes."""
        g = self.graph
        tensors = {t for i in ops for t in g.nodes[i].inputs} | {t for i in ops for t in g.nodes[i].outputs}
        return sum(g.tensors[t].size_bytes for t in tensors)

    @cached_property
    def weight_bytes(self) -> np.ndarray:
        return np.array([n.weight_bytes for n in self.graph.nodes], dtype=np.int64)

    @property
    def is_unconstrained(self) -> bool:
        """Only per-op placement limits: the oracle may decompose at cut vertices."""
        return self.constraints.is_local and not self.has_memory_limits
