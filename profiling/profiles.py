"""The profile record: latency of every op and of every candidate op group on every PU.

Latencies are the time a PU spends on the work itself; the simulator adds the PU's
dispatch overhead once per partition. ``nan`` means the PU cannot run the op or group.
Profiles export to and import from JSON (keyed by op names, checked against the
model's content hash) so a plan can be made elsewhere from the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform
from partitiontuner.safe_io import parse_json, read_text

FORMAT = "partitiontuner-profiles"
VERSION = 1


@dataclass(frozen=True, eq=False)
class Profiles:
    """Per-op and per-group latencies of one model on one platform.

    Attributes:
        op_latency_us: ``(num_ops, num_pus)``; ``nan`` where the PU cannot run the op.
        op_spread: ``(num_ops, num_pus)`` coefficient of variation of the measured
            repeats; ``nan`` where nothing was measured (emulated or unsupported).
        groups: sorted op-index tuple -> ``(num_pus,)`` latency of the group run as one
            fused unit; ``nan`` where the PU cannot run every op of the group.
        source: where the numbers come from (``measured``, ``fixture``, ``json``, ...).
        host: fingerprint of the machine that measured the CPU numbers.
    """

    model: str
    model_hash: str
    platform: str
    pus: tuple[str, ...]
    op_names: tuple[str, ...]
    op_latency_us: np.ndarray
    op_spread: np.ndarray
    groups: Mapping[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    group_spread: Mapping[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    source: str = "measured"
    host: str = ""

    def __post_init__(self) -> None:
        n, p = len(self.op_names), len(self.pus)
        if self.op_latency_us.shape != (n, p) or self.op_spread.shape != (n, p):
            raise ProfileError(f"profile arrays have shape {self.op_latency_us.shape}, expected {(n, p)}")
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))
        object.__setattr__(self, "group_spread", MappingProxyType(dict(self.group_spread)))

    def check_matches(self, graph: OpGraph, platform: Platform) -> None:
        """Raise :class:`ProfileError` unless these profiles are for this graph and platform."""
        if self.model_hash != graph.content_hash:
            raise ProfileError(
                f"profiles are for model {self.model!r} (hash {self.model_hash}), not {graph.name!r} (hash {graph.content_hash})"
            )
        if self.pus != platform.names:
            raise ProfileError(f"profiles are for PUs {list(self.pus)}, platform {platform.name!r} has {list(platform.names)}")

    # JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 4)

        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "model_hash": self.model_hash,
            "platform": self.platform,
            "pus": list(self.pus),
            "source": self.source,
            "host": self.host,
            "ops": [
                {
                    "name": name,
                    "latency_us": {pu: num(self.op_latency_us[i, j]) for j, pu in enumerate(self.pus)},
                    "spread": {pu: num(self.op_spread[i, j]) for j, pu in enumerate(self.pus)},
                }
                for i, name in enumerate(self.op_names)
            ],
            "groups": [
                {
                    "ops": [self.op_names[i] for i in key],
                    "latency_us": {pu: num(lat[j]) for j, pu in enumerate(self.pus)},
                    "spread": {pu: num(self.group_spread[key][j]) for j, pu in enumerate(self.pus)}
                    if key in self.group_spread else None,
                }
                for key, lat in sorted(self.groups.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "profiles") -> Profiles:
        try:
            if data.get("format") != FORMAT or type(data.get("version")) is not int or data["version"] != VERSION:
                raise ProfileError(f"{where}: not a PartitionTuner profile file (format {FORMAT!r} v{VERSION})")
            pus = _unique_strings(data["pus"], "PU", where)
            names = _unique_strings([op["name"] for op in data["ops"]], "op", where)
            index = {n: i for i, n in enumerate(names)}

            def arr(d: Mapping[str, float | None] | None, what: str) -> np.ndarray:
                d = d or {}
                if not isinstance(d, Mapping):
                    raise ProfileError(f"{where}: {what} must map PU names to numbers")
                unknown = set(d) - set(pus)
                if unknown:
                    raise ProfileError(f"{where}: {what} names unknown PU {sorted(unknown)[0]!r} (PUs: {', '.join(pus)})")
                return np.array([np.nan if d.get(pu) is None else _latency(d[pu], f"{what} on {pu}", where) for pu in pus])

            lat = np.stack([arr(op["latency_us"], f"latency of op {op['name']!r}") for op in data["ops"]]) if names else np.zeros((0, len(pus)))
            spread = np.stack([arr(op.get("spread"), f"spread of op {op['name']!r}") for op in data["ops"]]) if names else np.zeros((0, len(pus)))
            groups, gspread = {}, {}
            for g in data.get("groups", []):
                members = _unique_strings(g["ops"], "op in a group", where)
                unknown_ops = [n for n in members if n not in index]
                if unknown_ops:
                    raise ProfileError(f"{where}: a group names op {unknown_ops[0]!r}, which the profiles do not list")
                key = tuple(sorted(index[n] for n in members))
                if len(key) < 2:
                    raise ProfileError(f"{where}: group {list(members)} needs at least two ops")
                if key in groups:
                    raise ProfileError(f"{where}: group {list(members)} is listed twice")
                groups[key] = arr(g["latency_us"], f"latency of group {list(members)}")
                if g.get("spread"):
                    gspread[key] = arr(g["spread"], f"spread of group {list(members)}")
            return cls(
                model=str(data["model"]), model_hash=str(data["model_hash"]), platform=str(data["platform"]),
                pus=pus, op_names=names, op_latency_us=lat, op_spread=spread, groups=groups,
                group_spread=gspread, source=str(data.get("source", "json")), host=str(data.get("host", "")),
            )
        except ProfileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"{where}: malformed profile data ({type(exc).__name__}: {exc})") from None

    def save_json(self, path: str | Path) -> None:
        from partitiontuner.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load_json(cls, path: str | Path) -> Profiles:
        p = Path(path)
        text = read_text(p, what="profile file", error=ProfileError)
        return cls.from_dict(parse_json(text, where=str(p), error=ProfileError), str(p))


def _latency(v: Any, what: str, where: str) -> float:
    """A time or spread read from a file: a finite number >= 0 (a negative latency
    would make plans look free, a NaN would make the PU look unable to run the op)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ProfileError(f"{where}: {what} must be a finite number >= 0 (or null), got {v!r}")
    return float(v)


def _unique_strings(items: Any, what: str, where: str) -> tuple[str, ...]:
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ProfileError(f"{where}: expected a list of {what} names")
    seen: set[str] = set()
    for x in items:
        if x in seen:
            raise ProfileError(f"{where}: {what} {x!r} is listed twice")
        seen.add(x)
    return tuple(items)
