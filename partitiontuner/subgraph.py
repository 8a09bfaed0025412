"""Cut a set of ops out of an :class:`OpGraph` as a standalone ONNX model.

One function serves the CPU profiler (an op or op group run alone), the executor (a
CPU partition run by ONNX Runtime) and the exporter (one ONNX file per partition).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from partitiontuner.graph import OpGraph, TensorInfo


def partition_io(graph: OpGraph, ops: Iterable[int]) -> tuple[list[str], list[str]]:
    """External input tensors (read, not produced inside) and output tensors (read
    outside, or graph outputs) of an op set, each in first-use order."""
    inside = set(ops)
    order = sorted(inside)
    produced = {t for v in order for t in graph.nodes[v].outputs}
    inputs = list(dict.fromkeys(t for v in order for t in graph.nodes[v].inputs if t not in produced))
    graph_outputs = {t.name for t in graph.outputs}
    outputs = []
    for v in order:
        for t in graph.nodes[v].outputs:
            readers = [e.dst for e in graph.out_edges[v] if e.tensor == t]
            if t in graph_outputs or any(r not in inside for r in readers):
                outputs.append(t)
    return inputs, outputs


def subgraph_model(graph: OpGraph, ops: Iterable[int], *, outputs: list[str] | None = None, name: str | None = None) -> onnx.ModelProto:
    """A self-contained model computing ``ops``: external inputs become graph inputs,
    weights become initializers; ``outputs`` defaults to :func:`partition_io`'s."""
    order = sorted(set(ops))
    ins, outs = partition_io(graph, order)
    outs = outs if outputs is None else outputs
    protos = [graph._protos[v] for v in order]
    weights = list(dict.fromkeys(w for v in order for w in graph.nodes[v].weights))
    inits = [numpy_helper.from_array(np.asarray(graph.const_value(w)), name=w) for w in weights]
    inner = {t for v in order for t in graph.nodes[v].outputs} - set(outs)
    value_info = [vi for vi in graph._value_info if vi.name in inner]
    g = helper.make_graph(
        protos,
        name or f"{graph.name}_part_{order[0]}",
        [_vi(graph.tensors[t]) for t in ins],
        [_vi(graph.tensors[t]) for t in outs],
        initializer=inits,
        value_info=value_info,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opset_imports], producer_name="partitiontuner")
    model.ir_version = min(max(graph.ir_version, 7), onnx.IR_VERSION)
    return model


def _vi(t: TensorInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape))
