"""Plans: which ops form each partition, which PU runs it, and in what order.

A :class:`Plan` lists its partitions in one execution sequence: every partition comes
after the partitions it reads from, and each PU runs its partitions in the order they
appear. Any valid set of per-PU orders can be written this way (a topological order of
data and PU-order dependencies), and the plan file stores the per-PU orders explicitly.
Validation names the first violation: an op missing or repeated, an unknown PU, a PU
that cannot (or may not) run an op, a partition that is not convex, an order against
the data dependencies, or a broken constraint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.graph import OpGraph
from partitiontuner.problem import Problem
from partitiontuner.safe_io import parse_json, parse_yaml, read_text

FORMAT = "partitiontuner-plan"
VERSION = 1


@dataclass(frozen=True)
class Partition:
    """A convex set of ops (indices, ascending) run as one unit on ``device``."""

    ops: tuple[int, ...]
    device: str


@dataclass(frozen=True)
class Plan:
    """Partitions in execution sequence, plus what the plan was made for.

    ``info`` carries planner facts (e.g. the oracle's ``proven_optimal``, ``lower_bound_us``).
    """

    partitions: tuple[Partition, ...]
    model: str
    model_hash: str
    platform: str
    method: str = "manual"
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    def orders(self, pus: Sequence[str]) -> dict[str, list[int]]:
        """PU name -> indices of its partitions, in run order."""
        out: dict[str, list[int]] = {pu: [] for pu in pus}
        for i, p in enumerate(self.partitions):
            out.setdefault(p.device, []).append(i)
        return out

    def device_of(self, num_ops: int) -> list[str]:
        """Op index -> PU name."""
        dev = [""] * num_ops
        for p in self.partitions:
            for i in p.ops:
                dev[i] = p.device
        return dev


def make_plan(problem: Problem, partitions: Sequence[tuple[Sequence[int], int | str]], method: str, info: Mapping[str, Any] | None = None) -> Plan:
    """Build a plan from ``(ops, pu)`` pairs in execution sequence (PU by index or name)."""
    names = problem.pus
    parts = tuple(
        Partition(tuple(sorted(int(i) for i in ops)), names[pu] if isinstance(pu, int) else pu) for ops, pu in partitions
    )
    return Plan(parts, problem.graph.name, problem.graph.content_hash, problem.platform.name, method, info or {})


def from_orders(problem: Problem, partitions: Sequence[tuple[Sequence[int], str]], orders: Mapping[str, Sequence[int]], method: str, info: Mapping[str, Any] | None = None) -> Plan:
    """Build a plan from partitions in any order plus explicit per-PU run orders.

    Raises:
        InfeasiblePlanError: an order that is not a permutation of the PU's partitions,
            or that contradicts the data dependencies (a deadlock).
    """
    g = problem.graph
    n = len(partitions)
    owner = _owner(g, [ops for ops, _ in partitions])
    for pu, seq in orders.items():
        mine = sorted(i for i, (_, d) in enumerate(partitions) if d == pu)
        if sorted(seq) != mine:
            raise InfeasiblePlanError(f"order for PU {pu!r} lists partitions {list(seq)}, but {pu!r} runs partitions {mine}")
    for i, (_, d) in enumerate(partitions):
        if d not in orders:
            raise InfeasiblePlanError(f"partition {i} runs on {d!r}, which has no order")
    deps: list[set[int]] = [set() for _ in range(n)]
    for i, (ops, _) in enumerate(partitions):
        for v in ops:
            for u in g.preds[v]:
                if owner[u] != i:
                    deps[i].add(owner[u])
    for seq in orders.values():
        for a, b in zip(seq, seq[1:], strict=False):
            deps[b].add(a)
    sequence, done = [], [False] * n
    ready = [i for i in range(n) if not deps[i]]
    remaining = [set(d) for d in deps]
    users: list[list[int]] = [[] for _ in range(n)]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    while ready:
        i = min(ready)
        ready.remove(i)
        sequence.append(i)
        done[i] = True
        for k in users[i]:
            remaining[k].discard(i)
            if not remaining[k] and not done[k] and k not in ready:
                ready.append(k)
    if len(sequence) < n:
        stuck = min(i for i in range(n) if not done[i])
        raise InfeasiblePlanError(
            f"the per-PU orders deadlock: partition {stuck} ({partitions[stuck][1]}) waits on a partition that runs after it"
        )
    return make_plan(problem, [partitions[i] for i in sequence], method, info)


def _owner(g: OpGraph, parts: Sequence[Sequence[int]]) -> list[int]:
    owner = [-1] * g.num_ops
    for i, ops in enumerate(parts):
        for v in ops:
            if not 0 <= v < g.num_ops:
                raise InfeasiblePlanError(f"partition {i} names op index {v}, but the model has {g.num_ops} ops")
            if owner[v] >= 0:
                raise InfeasiblePlanError(f"op {g.nodes[v].name!r} is in partitions {owner[v]} and {i}")
            owner[v] = i
    missing = [g.nodes[v].name for v in range(g.num_ops) if owner[v] < 0]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InfeasiblePlanError(f"op {missing[0]!r} is in no partition{more}")
    return owner


# ---------------------------------------------------------------------------------
# validation


def validate_plan(problem: Problem, plan: Plan, *, check_constraints: bool = True) -> None:
    """Raise :class:`InfeasiblePlanError` naming the first thing wrong with ``plan``."""
    g = problem.graph
    if plan.model_hash != g.content_hash:
        raise InfeasiblePlanError(
            f"the plan was made for model {plan.model!r} (hash {plan.model_hash}), not {g.name!r} (hash {g.content_hash})"
        )
    if not plan.partitions:
        raise InfeasiblePlanError("the plan has no partitions")
    names = problem.pus
    for i, p in enumerate(plan.partitions):
        if p.device not in names:
            raise InfeasiblePlanError(f"partition {i} names unknown PU {p.device!r} (platform {problem.platform.name!r} has {', '.join(names)})")
        if not p.ops:
            raise InfeasiblePlanError(f"partition {i} is empty")
    owner = _owner(g, [p.ops for p in plan.partitions])
    for p in plan.partitions:
        j = names.index(p.device)
        for v in p.ops:
            if not problem.supported[v, j]:
                raise InfeasiblePlanError(f"op {g.nodes[v].name!r} cannot run on {p.device!r}: {problem.excluded_reason(v, j)}")
    for i, p in enumerate(plan.partitions):
        _check_convex(g, p.ops, owner, i)
    for i, p in enumerate(plan.partitions):
        for v in p.ops:
            for u in g.preds[v]:
                if owner[u] > i:
                    raise InfeasiblePlanError(
                        f"partition {i} ({p.device}) runs before partition {owner[u]}, whose op {g.nodes[u].name!r} it needs"
                    )
    if check_constraints:
        check_plan_constraints(problem, plan)


def _check_convex(g: OpGraph, ops: tuple[int, ...], owner: list[int], i: int) -> None:
    """No path leaves the partition and comes back."""
    inside = set(ops)
    lo, hi = min(ops), max(ops)
    outside_reached: set[int] = set()  # ops outside reachable from inside, within [lo, hi]
    for v in range(lo, hi + 1):
        if v in inside:
            for u in g.preds[v]:
                if u in outside_reached:
                    raise InfeasiblePlanError(
                        f"partition {i} is not convex: a path leaves it through {g.nodes[u].name!r} (partition {owner[u]}) "
                        f"and comes back to {g.nodes[v].name!r}"
                    )
        else:
            if any(u in inside or u in outside_reached for u in g.preds[v]):
                outside_reached.add(v)


def check_plan_constraints(problem: Problem, plan: Plan) -> None:
    """Pins, forbids, partition limits and memory capacities."""
    g, c, names = problem.graph, problem.constraints, problem.pus
    for p in plan.partitions:
        j = names.index(p.device)
        for v in p.ops:
            if not problem.allowed[v, j]:
                raise InfeasiblePlanError(f"op {g.nodes[v].name!r} on {p.device!r} breaks a constraint: {problem.excluded_reason(v, j)}")
    if c.max_partitions is not None and plan.num_partitions > c.max_partitions:
        raise InfeasiblePlanError(f"the plan has {plan.num_partitions} partitions, more than --max-partitions {c.max_partitions}")
    if c.min_partition_ops is not None:
        for i, p in enumerate(plan.partitions):
            if len(p.ops) < c.min_partition_ops:
                raise InfeasiblePlanError(f"partition {i} has {len(p.ops)} ops, fewer than --min-partition-ops {c.min_partition_ops}")
    for j, used in enumerate(memory_use(problem, plan)):
        if used > problem.memory_capacity[j]:
            raise InfeasiblePlanError(
                f"{names[j]} needs {used / 2**20:.1f} MiB (weights + largest partition's activations), "
                f"more than its {problem.memory_capacity[j] / 2**20:.1f} MiB"
            )


def memory_use(problem: Problem, plan: Plan) -> list[int]:
    """Bytes each PU needs: weights of all its ops stay resident, plus the activations
    of the largest partition it runs (one runs at a time)."""
    names = problem.pus
    weights = [0] * len(names)
    act = [0] * len(names)
    for p in plan.partitions:
        j = names.index(p.device)
        weights[j] += int(sum(problem.weight_bytes[v] for v in p.ops))
        act[j] = max(act[j], problem.activation_bytes(p.ops))
    return [w + a for w, a in zip(weights, act, strict=True)]


# ---------------------------------------------------------------------------------
# files


def plan_to_dict(problem: Problem, plan: Plan, makespan_us: float | None = None, parallel: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """NEST-C-like: partitions with backend and ops, per-PU order, what runs in parallel."""
    g = problem.graph
    d: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": plan.model, "hash": plan.model_hash},
        "platform": plan.platform,
        "method": plan.method,
    }
    if makespan_us is not None:
        d["makespan_us"] = round(float(makespan_us), 3)
    if plan.info:
        d["info"] = {k: _plain(v) for k, v in plan.info.items()}
    d["partitions"] = [
        {"id": i, "backend": p.device, "ops": [g.nodes[v].name for v in p.ops]} for i, p in enumerate(plan.partitions)
    ]
    d["order"] = plan.orders(problem.pus)
    if parallel is not None:
        d["parallel"] = [list(x) for x in parallel]
    return d


def plan_from_dict(problem: Problem, data: Any, where: str = "plan") -> Plan:
    g = problem.graph
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InfeasiblePlanError(f"{where}: not a PartitionTuner plan (format {FORMAT!r})")
    if type(data.get("version")) is not int or data["version"] != VERSION:  # True == 1 in Python
        raise InfeasiblePlanError(f"{where}: plan format version {data.get('version')!r}, this tool reads {VERSION}")
    try:
        model = data["model"]
        if model.get("hash") != g.content_hash:
            raise InfeasiblePlanError(
                f"{where} was made for model {model.get('name')!r} (hash {model.get('hash')}), not {g.name!r} (hash {g.content_hash})"
            )
        parts = []
        for k, raw in enumerate(data["partitions"]):
            if type(raw.get("id", k)) is not int or raw.get("id", k) != k:
                raise InfeasiblePlanError(f"{where}: partition ids must be 0, 1, 2, ... in order (found {raw.get('id')!r} at position {k})")
            ops = []
            if not isinstance(raw["ops"], list):
                raise InfeasiblePlanError(f"{where}: partition {k}'s 'ops' must be a list of op names")
            for name in raw["ops"]:
                if not isinstance(name, str):
                    raise InfeasiblePlanError(f"{where}: partition {k} lists {name!r}, not an op name")
                if name not in g.index:
                    raise InfeasiblePlanError(f"{where}: partition {k} names op {name!r}, which model {g.name!r} does not have")
                ops.append(g.index[name])
            if not isinstance(raw["backend"], str) or raw["backend"] not in problem.pus:
                raise InfeasiblePlanError(f"{where}: partition {k} names unknown PU {raw['backend']!r} (platform {problem.platform.name!r} has {', '.join(problem.pus)})")
            parts.append((ops, str(raw["backend"])))
        orders = data.get("order") or {pu: [i for i, (_, d) in enumerate(parts) if d == pu] for pu in problem.pus}
        orders = {str(k): _order(v, str(k), len(parts), where) for k, v in orders.items()}
        for pu in problem.pus:
            orders.setdefault(pu, [])
        unknown = [pu for pu in orders if pu not in problem.pus]
        if unknown:
            raise InfeasiblePlanError(f"{where}: order names unknown PU {unknown[0]!r}")
        info = data.get("info") or {}
        # ids 0..n-1 in a valid sequence come back in the same sequence (round trip)
        plan = from_orders(problem, parts, orders, str(data.get("method", "manual")), info)
    except InfeasiblePlanError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InfeasiblePlanError(f"{where}: malformed plan ({type(exc).__name__}: {exc})") from None
    validate_plan(problem, plan)
    return plan


def save_plan(problem: Problem, plan: Plan, path: str | Path, makespan_us: float | None = None, parallel: Sequence[Sequence[int]] | None = None) -> None:
    """Write YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
    data = plan_to_dict(problem, plan, makespan_us, parallel)
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    else:
        text = json.dumps(data, indent=1)
    write_text_atomic(path, text)


def load_plan(problem: Problem, path: str | Path) -> Plan:
    """Read a YAML (``.yaml``/``.yml``) or JSON plan file and validate it against ``problem``.

    Raises:
        InfeasiblePlanError: unreadable, not UTF-8, malformed, or an invalid plan.
    """
    p = Path(path)
    text = read_text(p, what="plan file", error=InfeasiblePlanError)
    parse = parse_yaml if p.suffix in (".yaml", ".yml") else parse_json
    data = parse(text, where=str(p), error=InfeasiblePlanError)
    return plan_from_dict(problem, data, str(p))


def _order(seq: Any, pu: str, num_partitions: int, where: str) -> list[int]:
    """One PU's run order: a list of distinct partition ids (integers, not ``1.7`` or ``true``)."""
    if not isinstance(seq, list):
        raise InfeasiblePlanError(f"{where}: the order of PU {pu!r} must be a list of partition ids")
    for x in seq:
        if type(x) is not int or not 0 <= x < num_partitions:
            raise InfeasiblePlanError(f"{where}: the order of PU {pu!r} lists {x!r}, not a partition id 0..{num_partitions - 1}")
    if len(set(seq)) != len(seq):
        dup = next(x for x in seq if seq.count(x) > 1)
        raise InfeasiblePlanError(f"{where}: the order of PU {pu!r} lists partition {dup} twice")
    return list(seq)


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
