"""Hand-built graphs and problems for tests: chains, forks and diamonds with
hand-set latencies, so expected makespans can be worked out on paper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.platform import Platform, platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.profiling.profiles import Profiles


def build(nodes: Sequence[tuple[str, str, list[str], str]], outputs: Sequence[str], elems: int = 250, name: str = "hand") -> OpGraph:
    """``nodes`` = (name, op_type, inputs, output); every tensor is float32 [1, elems]
    (1,000 bytes by default); the graph input is ``x``."""
    protos = [helper.make_node(op, ins, [out], name=n) for n, op, ins, out in nodes]
    g = helper.make_graph(
        protos, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, elems])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, elems]) for o in outputs],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return load_graph(m, name=name)


def chain(n: int, elems: int = 250) -> OpGraph:
    nodes = [(f"op{i}", "Relu", ["x" if i == 0 else f"t{i - 1}"], f"t{i}") for i in range(n)]
    return build(nodes, [f"t{n - 1}"], elems, name=f"chain{n}")


def diamond(elems: int = 250) -> OpGraph:
    """a -> (b, c) -> d"""
    return build(
        [("a", "Relu", ["x"], "ta"), ("b", "Relu", ["ta"], "tb"), ("c", "Relu", ["ta"], "tc"), ("d", "Add", ["tb", "tc"], "td")],
        ["td"], elems, name="diamond",
    )


def fork(k: int, elems: int = 250) -> OpGraph:
    """x -> k independent ops -> Sum"""
    nodes = [(f"b{i}", "Relu", ["x"], f"t{i}") for i in range(k)]
    nodes.append(("join", "Sum", [f"t{i}" for i in range(k)], "out"))
    return build(nodes, ["out"], elems, name=f"fork{k}")


def two_pu_platform(
    cpu_overhead: float = 1.0, npu_overhead: float = 2.0, latency_us: float = 10.0, bandwidth_gbps: float = 1.0,
    npu_memory_mib: float | None = None, extra_npus: int = 0,
) -> Platform:
    """cpu (host) + npu; 1 GB/s = 1,000 bytes/us, so a 1,000-byte tensor moves in latency + 1 us."""
    npu = {"name": "npu", "kind": "npu", "dispatch_overhead_us": npu_overhead, "supports": ["Relu", "Add", "Sum", "Concat", "Conv"],
           "npu": {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0}}
    if npu_memory_mib is not None:
        npu["memory_mib"] = npu_memory_mib
    pus = [{"name": "cpu", "kind": "cpu", "dispatch_overhead_us": cpu_overhead}, npu]
    for k in range(extra_npus):
        pus.append({**npu, "name": f"npu{k + 2}"})
    names = [p["name"] for p in pus]
    links = [{"from": a, "to": b, "latency_us": latency_us, "bandwidth_gbps": bandwidth_gbps} for a in names for b in names if a != b]
    return platform_from_dict({"name": "hand", "pus": pus, "links": links})


def problem(
    graph: OpGraph,
    platform: Platform,
    times: Mapping[str, Sequence[float | None]],
    groups: Mapping[tuple[str, ...], Sequence[float | None]] | None = None,
    constraints=None,
) -> Problem:
    """``times``: op name -> latency per PU (None = cannot run)."""
    lat = np.array([[np.nan if x is None else float(x) for x in times[n.name]] for n in graph.nodes])
    group_lat = {}
    for names, vals in (groups or {}).items():
        key = tuple(sorted(graph.index[n] for n in names))
        group_lat[key] = np.array([np.nan if x is None else float(x) for x in vals])
    prof = Profiles(
        model=graph.name, model_hash=graph.content_hash, platform=platform.name, pus=platform.names,
        op_names=tuple(n.name for n in graph.nodes), op_latency_us=lat, op_spread=np.full(lat.shape, np.nan),
        groups=group_lat, source="hand",
    )
    from partitiontuner.constraints import Constraints

    return Problem(graph, platform, prof, constraints or Constraints())
