"""User constraints every planner obeys: pins, forbids, partition limits.

A rule names ops by exact op name, by op type, or by a glob over names, and a PU:
``Conv_0=cpu`` pins, ``Softmax:npu`` forbids. ``name:``, ``type:`` and ``glob:``
prefixes make the kind explicit; otherwise an exact op name wins, then an op type
present in the graph, then a glob if the pattern has ``*?[``. A rule that matches no
op is an error (a typo should not silently do nothing). Memory capacities belong to
the platform's PUs (``memory_mib``); batch size and CPU threads change the graph and
the profiles, not the plan space, and live in the CLI.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partitiontuner.errors import ConfigError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform
from partitiontuner.safe_io import parse_yaml, read_text

KINDS = ("name", "type", "glob")


@dataclass(frozen=True)
class PlacementRule:
    pattern: str
    pu: str
    kind: str | None = None  # None: decided against the graph (see module docstring)

    def __str__(self) -> str:
        return f"{self.kind + ':' if self.kind else ''}{self.pattern}"

    def matches(self, graph: OpGraph) -> list[int]:
        kind = self.kind or self._guess(graph)
        if kind == "name":
            return [graph.index[self.pattern]] if self.pattern in graph.index else []
        if kind == "type":
            return [n.index for n in graph.nodes if n.op_type == self.pattern]
        return [n.index for n in graph.nodes if fnmatch.fnmatchcase(n.name, self.pattern)]

    def _guess(self, graph: OpGraph) -> str:
        if self.pattern in graph.index:
            return "name"
        if any(n.op_type == self.pattern for n in graph.nodes):
            return "type"
        return "glob"


@dataclass(frozen=True)
class Constraints:
    """Constraints on the plan space.

    Attributes:
        pins: each matched op must run on the rule's PU.
        forbids: each matched op must not run on the rule's PU.
        max_partitions: at most this many partitions in the plan.
        min_partition_ops: every partition holds at least this many ops.
        strict: an op on the CPU only because the NPU cannot run it is an error.
    """

    pins: tuple[PlacementRule, ...] = ()
    forbids: tuple[PlacementRule, ...] = ()
    max_partitions: int | None = None
    min_partition_ops: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.max_partitions is not None and self.max_partitions < 1:
            raise ConfigError(f"--max-partitions must be >= 1, got {self.max_partitions}")
        if self.min_partition_ops is not None and self.min_partition_ops < 1:
            raise ConfigError(f"--min-partition-ops must be >= 1, got {self.min_partition_ops}")

    @property
    def is_empty(self) -> bool:
        return not (self.pins or self.forbids or self.max_partitions or self.min_partition_ops)

    @property
    def is_local(self) -> bool:
        """Only per-op placement rules (they shrink PU domains, nothing global)."""
        return self.max_partitions is None and (self.min_partition_ops or 1) <= 1

    def merged(self, other: Constraints) -> Constraints:
        """``other``'s limits win where set; rule lists concatenate."""
        return Constraints(
            pins=self.pins + other.pins,
            forbids=self.forbids + other.forbids,
            max_partitions=other.max_partitions if other.max_partitions is not None else self.max_partitions,
            min_partition_ops=other.min_partition_ops if other.min_partition_ops is not None else self.min_partition_ops,
            strict=self.strict or other.strict,
        )

    def check(self, graph: OpGraph, platform: Platform) -> None:
        """Raise :class:`ConfigError` for a rule naming an unknown PU or matching no op.

        Needs only the graph and platform, so a typo is reported before profiling.
        """
        for what, rules in (("pin", self.pins), ("forbid", self.forbids)):
            for rule in rules:
                _pu(platform, rule, what)
                _nonempty(rule, graph, what)

    def placement(self, graph: OpGraph, platform: Platform) -> PlacementMask:
        """Resolve pins and forbids to a per-op mask of allowed PUs, with reasons."""
        n, names = graph.num_ops, platform.names
        allowed = np.ones((n, len(names)), dtype=bool)
        pinned: dict[int, str] = {}
        forbidden: dict[tuple[int, int], str] = {}
        for rule in self.pins:
            j = _pu(platform, rule, "pin")
            ops = _nonempty(rule, graph, "pin")
            for i in ops:
                if i in pinned and pinned[i] != rule.pu:
                    raise ConfigError(f"op {graph.nodes[i].name!r} is pinned to both {pinned[i]!r} and {rule.pu!r}")
                pinned[i] = rule.pu
                row = np.zeros(len(names), dtype=bool)
                row[j] = True
                allowed[i] &= row
        for rule in self.forbids:
            j = _pu(platform, rule, "forbid")
            for i in _nonempty(rule, graph, "forbid"):
                allowed[i, j] = False
                forbidden[(i, j)] = f"--forbid {rule}:{rule.pu}"
        return PlacementMask(allowed, {i: f"--pin {graph.nodes[i].name}={pu}" for i, pu in pinned.items()}, forbidden)


@dataclass(frozen=True, eq=False)
class PlacementMask:
    allowed: np.ndarray  # (num_ops, num_pus) bool
    pinned: dict[int, str] = field(default_factory=dict)  # op -> rule text
    forbidden: dict[tuple[int, int], str] = field(default_factory=dict)  # (op, pu) -> rule text


def _pu(platform: Platform, rule: PlacementRule, what: str) -> int:
    if rule.pu not in platform.names:
        raise ConfigError(f"--{what} {rule}: platform {platform.name!r} has no PU {rule.pu!r} ({', '.join(platform.names)})")
    return platform.names.index(rule.pu)


def _nonempty(rule: PlacementRule, graph: OpGraph, what: str) -> list[int]:
    ops = rule.matches(graph)
    if not ops:
        raise ConfigError(f"--{what} {rule}: matches no op of model {graph.name!r}")
    return ops


# ---------------------------------------------------------------------------------
# parsing


def parse_rule(text: str, sep: str, what: str) -> PlacementRule:
    """``PATTERN<sep>PU`` with an optional ``name:``/``type:``/``glob:`` prefix."""
    pattern, s, pu = text.rpartition(sep)
    if not s or not pattern or not pu:
        raise ConfigError(f"--{what} {text!r}: expected PATTERN{sep}PU, e.g. {'Conv_0=cpu' if sep == '=' else 'Softmax:npu'}")
    kind = None
    head, colon, rest = pattern.partition(":")
    if colon and head in KINDS:
        kind, pattern = head, rest
    return PlacementRule(pattern.strip(), pu.strip(), kind)


def load_constraints(path: str | Path) -> Constraints:
    """Read a constraints YAML file (schema in the README)::

        pin:                      # a mapping PATTERN: PU ...
          Conv_0: cpu
          "type:Softmax": cpu
        forbid:                   # ... or a list of rules as on the command line
          - "Gemm:npu"
          - "glob:fc*:npu"
        max_partitions: 8         # integers >= 1, optional
        min_partition_ops: 2
        strict: false             # refuse a plan that must fall back to the CPU

    ``forbid`` in the mapping form also takes a list of PUs per pattern.

    Raises:
        ConfigError: unreadable file, unknown key, a rule or value of the wrong form.
    """
    p = Path(path)
    data: Any = parse_yaml(read_text(p, what="constraints file"), where=str(p)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of pin / forbid / max_partitions / min_partition_ops / strict")
    extra = set(data) - {"pin", "forbid", "max_partitions", "min_partition_ops", "strict"}
    if extra:
        raise ConfigError(f"{p}: unknown key {sorted(extra)[0]!r}")

    def rules(key: str) -> tuple[PlacementRule, ...]:
        raw = data.get(key) or {}
        sep = "=" if key == "pin" else ":"
        if isinstance(raw, list):  # the command line's form: ["Gemm=cpu", ...]
            if not all(isinstance(r, str) for r in raw):
                raise ConfigError(f"{p}: '{key}' as a list takes rules like {'Gemm=cpu' if sep == '=' else 'Softmax:npu'}")
            return tuple(parse_rule(r, sep, key) for r in raw)
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: '{key}' must map op patterns to PUs, or list rules PATTERN{sep}PU")
        out = []
        for pattern, pus in raw.items():
            for pu in pus if isinstance(pus, list) else [pus]:
                if not isinstance(pattern, str) or not isinstance(pu, str):
                    raise ConfigError(f"{p}: '{key}' entry {pattern!r}: {pu!r} must be a pattern and a PU name")
                out.append(parse_rule(f"{pattern}{sep}{pu}", sep, key))
        return tuple(out)

    def opt_int(key: str) -> int | None:
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{p}: '{key}' must be an integer >= 1")
        return v

    strict = data.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{p}: 'strict' must be true or false")
    return Constraints(rules("pin"), rules("forbid"), opt_int("max_partitions"), opt_int("min_partition_ops"), strict)
