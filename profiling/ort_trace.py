"""Map ONNX Runtime's own profiling trace onto a graph's ops.

A whole-model run with ``SessionOptions.enable_profiling = True`` writes a Chrome
trace (a JSON list of events). Each executed node gives one ``cat: "Node"`` event
per run named ``<node name>_kernel_time`` with its duration ``dur`` (microseconds)
and ``args.provider`` / ``args.op_name``. This module turns those events into
latencies of the graph's ops, or of op groups where ORT fused several ops into one
node:

* a node named like an op (``n5``; ``fused n5`` of ORT's activation fusion) is that
  op; ops right after it on its sequential branch that have no event of their own
  were fused into it (a BatchNormalization folded into its Conv, a fused Relu), so
  the node is the group of them all;
* a node named after a tensor (``r1_nchwc``: x86 NCHWc kernels are named after the
  output they write) is the op writing that tensor, plus the ops right before it on
  its branch that have no event;
* nodes ORT inserted itself (``ReorderInput``, ``MemcpyToHost``, ...), nodes whose op
  type or weights contradict the op they name, and fused nodes that are not a run
  of one sequential branch are skipped and reported.

A node's latency is the median of its runs after the first (ORT's first run also
allocates). ORT writes whole microseconds, so small ops are coarse; profile with
several runs. A trace where most nodes contradict the graph is from another model.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partitiontuner.branches import sequential_branches
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph

CPU_PROVIDER = "CPUExecutionProvider"
KERNEL_SUFFIX = "_kernel_time"
_PREFIXES = ("fused ",)
_SUFFIX = re.compile(r"(_nchwc|_token_\d+)+$")
#: op types ONNX Runtime fuses into the node before them (activations, folded BN,
#: a residual Add/Sum of NCHWc convolutions)
FUSABLE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish",
                     "BatchNormalization", "Add", "Sum", "Mul"})

#: a whole-model trace of a large model with many runs stays well below this
MAX_TRACE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class NodeTiming:
    """One executed node of the trace: its runs' durations and what ORT says it is."""

    name: str
    provider: str
    op_name: str
    durations_us: tuple[float, ...]
    parameter_bytes: int
    output_shape: tuple[int, ...] | None

    @property
    def latency_us(self) -> float:
        runs = self.durations_us[1:] if len(self.durations_us) > 1 else self.durations_us
        return float(statistics.median(runs))


@dataclass
class TraceMapping:
    """The trace's nodes as units of the graph (op index tuples) with latencies.

    Attributes:
        units: sorted op-index tuple -> latency in us (a 1-tuple is one op).
        skipped: ``node name -> why`` for every node left out.
        providers: provider -> number of nodes the mapping used.
    """

    units: dict[tuple[int, ...], float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)


def read_trace(path: Path, where: str) -> list[NodeTiming]:
    """The ``Node`` kernel events of an ORT profiling trace, grouped by node name.

    Raises:
        ProfileError: not JSON, or no node events.
    """
    from partitiontuner.safe_io import parse_json, read_text

    data = parse_json(read_text(path, what="ONNX Runtime trace", error=ProfileError, max_bytes=MAX_TRACE_BYTES),
                      where=where, error=ProfileError)
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ProfileError(f"{where}: not an ONNX Runtime profiling trace (expected a list of events)")
    runs: dict[str, list[float]] = {}
    first: dict[str, dict[str, Any]] = {}
    for e in events:
        if not (isinstance(e, dict) and e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)):
            continue
        name = str(e["name"])[: -len(KERNEL_SUFFIX)]
        dur = e.get("dur")
        if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not dur >= 0 or dur == float("inf"):
            raise ProfileError(f"{where}: node {name!r} has a bad duration {dur!r}")
        runs.setdefault(name, []).append(float(dur))
        first.setdefault(name, e.get("args") if isinstance(e.get("args"), dict) else {})
    if not runs:
        raise ProfileError(f"{where}: no node events ('cat': 'Node', '..._kernel_time'); is it an ONNX Runtime "
                           "profiling trace (SessionOptions.enable_profiling)?")
    return [NodeTiming(name, str(a.get("provider", "")), str(a.get("op_name", "")), tuple(runs[name]),
                       _int(a.get("parameter_size")), _shape(a.get("output_type_shape")))
            for name, a in first.items()]


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _shape(v: Any) -> tuple[int, ...] | None:
    """First output's shape from ORT's ``[{"float": [1, 64, 55, 55]}]``."""
    try:
        (dims,) = v[0].values()
        return tuple(int(d) for d in dims)
    except (TypeError, ValueError, IndexError, AttributeError):
        return None


def select_provider(nodes: Sequence[NodeTiming], pu_kind: str, where: str) -> tuple[list[NodeTiming], dict[str, str]]:
    """The nodes that ran on the PU: all of them if the trace used one provider; with
    several, a CPU PU takes the CPU provider's nodes and an NPU the other provider's
    (its CPU fallbacks are skipped).

    Raises:
        ProfileError: an NPU's trace with more than one non-CPU provider.
    """
    providers = sorted({n.provider for n in nodes})
    if len(providers) <= 1:
        return list(nodes), {}
    if pu_kind == "cpu":
        keep = CPU_PROVIDER
    else:
        others = [p for p in providers if p != CPU_PROVIDER]
        if len(others) > 1:
            raise ProfileError(f"{where}: nodes ran on several accelerator providers ({', '.join(others)}); "
                               "give one trace per PU")
        keep = others[0]
    skipped = {n.name: f"ran on {n.provider}, not {keep}" for n in nodes if n.provider != keep}
    return [n for n in nodes if n.provider == keep], skipped


def map_trace(graph: OpGraph, nodes: Sequence[NodeTiming], where: str) -> TraceMapping:
    """Map trace nodes onto ``graph`` (see the module docstring).

    Raises:
        ProfileError: the trace is from another model (most named nodes contradict it).
    """
    out = TraceMapping()
    anchors: dict[str, tuple[int, str]] = {}  # node -> (op, "head" | "tail")
    for n in nodes:
        hit = _anchor(graph, n.name)
        if hit is None:
            out.skipped[n.name] = f"no op or tensor of {graph.name!r} by that name (inserted by ONNX Runtime?)"
        else:
            anchors[n.name] = hit
    timed = {v for v, _ in anchors.values()}
    chain, pos, chains = _chain_index(graph)
    claimed: set[int] = set()
    contradicting = []
    for n in nodes:
        if n.name not in anchors:
            continue
        v, role = anchors[n.name]
        members = _fused_members(graph, n, v, role, timed | claimed, chain, pos, chains)
        why = _contradiction(graph, n, members, v if role == "tail" else members[-1]) if members \
            else f"no op of type {n.op_name} ends at {graph.nodes[v].name}"
        if why:
            contradicting.append(f"{n.name} ({why})")
            out.skipped[n.name] = why
            continue
        unit = tuple(sorted(members))
        if unit in out.units or claimed & set(members):
            out.skipped[n.name] = "a second node for the same ops"
            continue
        claimed.update(members)
        out.units[unit] = n.latency_us
        out.providers[n.provider] = out.providers.get(n.provider, 0) + 1
    unnamed = len(nodes) - len(anchors)
    if (len(contradicting) + unnamed) * 2 > len(nodes):
        first = f" (first: {contradicting[0]})" if contradicting else ""
        raise ProfileError(f"{where}: this trace is not of model {graph.name!r}: of its {len(nodes)} nodes, "
                           f"{unnamed} name no op or tensor of the model and {len(contradicting)} differ in op type, "
                           f"shape or weights{first}")
    if not out.units:
        raise ProfileError(f"{where}: no node of this trace maps onto an op of model {graph.name!r}")
    return out


def _anchor(graph: OpGraph, name: str) -> tuple[int, str] | None:
    for prefix in ("", *_PREFIXES):
        if prefix and not name.startswith(prefix):
            continue
        base = name[len(prefix):]
        for cand in dict.fromkeys((base, _SUFFIX.sub("", base))):
            if cand in graph.index:
                return graph.index[cand], "head"
            if cand in graph.producer:
                return graph.producer[cand], "tail"
    return None


def _chain_index(graph: OpGraph) -> tuple[list[int], list[int], tuple[tuple[int, ...], ...]]:
    chains = sequential_branches(graph)
    chain, pos = [-1] * graph.num_ops, [-1] * graph.num_ops
    for c, ops in enumerate(chains):
        for k, v in enumerate(ops):
            chain[v], pos[v] = c, k
    return chain, pos, chains


def _fused_members(graph: OpGraph, n: NodeTiming, v: int, role: str, timed: set[int], chain: list[int],
                   pos: list[int], chains: tuple[tuple[int, ...], ...]) -> list[int] | None:
    """The ops node ``n`` ran, ``v`` first: a head and the fusable untimed ops after it
    on its branch, or a tail back to the op of ORT's op type (``None``: no such op)."""
    ops = chains[chain[v]]
    members = [v]
    if role == "head":
        k = pos[v] + 1
        while k < len(ops) and ops[k] not in timed and graph.nodes[ops[k]].op_type in FUSABLE:
            members.append(ops[k])
            k += 1
        return members
    k = pos[v]
    while not _same_type(n.op_name, graph.nodes[ops[k]].op_type):
        if graph.nodes[ops[k]].op_type not in FUSABLE or k == 0 or ops[k - 1] in timed:
            return None
        k -= 1
        members.append(ops[k])
    return members


def _same_type(op_name: str, op_type: str) -> bool:
    """ORT's op name for a node of ``op_type`` (``FusedConv`` runs a Conv); unknown
    op names (old traces) match anything."""
    return not op_name or op_name == op_type or op_name == f"Fused{op_type}"


def _contradiction(graph: OpGraph, n: NodeTiming, members: list[int], last: int) -> str:
    """Why node ``n`` cannot be the ops ``members`` ending at ``last`` ('' if it can)."""
    types = "+".join(graph.nodes[v].op_type for v in sorted(members))
    if not any(_same_type(n.op_name, graph.nodes[v].op_type) for v in members):
        return f"ORT op {n.op_name}, the graph has {types}"
    shapes = graph.nodes[last].output_shapes
    if n.output_shape is not None and shapes and n.output_shape != tuple(shapes[0]):
        return f"output shape {list(n.output_shape)}, the graph's {types} writes {list(shapes[0])}"
    weights = sum(graph.nodes[v].weight_bytes for v in members)
    if n.parameter_bytes > 0 and weights == 0:
        return f"{n.parameter_bytes} bytes of weights, the graph's {types} has none"
    return ""
