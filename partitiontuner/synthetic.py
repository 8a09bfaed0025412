"""Small random models, platforms and profiles: for property tests of the planners,
the simulator and the environment (the RL corpus has its own realistic generators,
:mod:`partitiontuner.training.generators` and
:func:`partitiontuner.training.corpus.random_training_platform`).

Models are real ONNX graphs (1x1 Conv for one input, Concat to merge), so they go
through the same loader as any user model; profiles are random but well-formed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.branches import chain_groups
from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.platform import Platform, platform_from_dict
from partitiontuner.profiling.profiles import Profiles


def random_dag_model(rng: np.random.Generator, num_ops: int, *, max_fan_in: int = 2, spatial: int = 4, name: str = "random") -> onnx.ModelProto:
    """A random DAG of ``num_ops`` ops; every op without a consumer is a graph output."""
    channels = {"x": int(rng.integers(1, 9))}
    nodes, inits = [], []
    tensors = ["x"]
    consumed: set[str] = set()
    for i in range(num_ops):
        k = 1 if i == 0 else int(rng.integers(1, min(max_fan_in, len(tensors)) + 1))
        # prefer recent tensors so graphs are deep rather than flat
        weights = np.linspace(1.0, 3.0, len(tensors))
        picks = rng.choice(len(tensors), size=k, replace=False, p=weights / weights.sum())
        ins = [tensors[j] for j in sorted(picks)]
        out = f"t{i}"
        if len(ins) == 1:
            cout = int(rng.integers(1, 17))
            w = numpy_helper.from_array(rng.standard_normal((cout, channels[ins[0]], 1, 1)).astype(np.float32) * 0.3, f"w{i}")
            inits.append(w)
            nodes.append(helper.make_node("Conv", [ins[0], f"w{i}"], [out], name=f"op{i}", kernel_shape=[1, 1]))
            channels[out] = cout
        else:
            nodes.append(helper.make_node("Concat", ins, [out], name=f"op{i}", axis=1))
            channels[out] = sum(channels[t] for t in ins)
        consumed.update(ins)
        tensors.append(out)
    outputs = [t for t in tensors[1:] if t not in consumed]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels["x"], spatial, spatial])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, channels[t], spatial, spatial]) for t in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def random_graph(rng: np.random.Generator, num_ops: int, **kw) -> OpGraph:
    return load_graph(random_dag_model(rng, num_ops, **kw), name=kw.get("name", "random"))


def random_platform(rng: np.random.Generator, num_pus: int) -> Platform:
    """A toy platform of ``num_pus`` PUs: a CPU host plus ``num_pus - 1`` small NPUs
    (Conv and Concat only) with random overheads and links."""
    pus = [{"name": "cpu", "kind": "cpu", "dispatch_overhead_us": float(rng.uniform(0, 10))}]
    for k in range(num_pus - 1):
        pus.append({
            "name": f"npu{k}", "kind": "npu", "dispatch_overhead_us": float(rng.uniform(0, 30)),
            "supports": ["Conv", "Concat"],
            "npu": {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0},
        })
    names = [p["name"] for p in pus]
    links = [
        {"from": a, "to": b, "latency_us": float(rng.uniform(0, 20)), "bandwidth_gbps": float(rng.uniform(0.05, 2.0))}
        for a in names for b in names if a != b
    ]
    return platform_from_dict({"name": f"random-{num_pus}pu", "pus": pus, "links": links})


def random_profiles(
    rng: np.random.Generator,
    graph: OpGraph,
    platform: Platform,
    *,
    unsupported: float = 0.2,
    groups: bool = True,
) -> Profiles:
    """Random latencies in [1, 100) us; each non-host PU misses an op with probability
    ``unsupported``; every chain group of 2-3 ops gets a time between 0.5x and 1.2x the
    sum of its ops."""
    n, p = graph.num_ops, platform.num_pus
    host = platform.names.index(platform.host)
    lat = rng.uniform(1.0, 100.0, size=(n, p))
    miss = rng.random((n, p)) < unsupported
    miss[:, host] = False
    lat[miss] = np.nan
    group_lat = {}
    if groups:
        for ops in chain_groups(graph):
            total = lat[list(ops)].sum(axis=0)
            group_lat[tuple(sorted(ops))] = total * rng.uniform(0.5, 1.2, size=p)
    return Profiles(
        model=graph.name, model_hash=graph.content_hash, platform=platform.name, pus=platform.names,
        op_names=tuple(nd.name for nd in graph.nodes), op_latency_us=lat, op_spread=np.full((n, p), np.nan),
        groups=group_lat, source="random",
    )
