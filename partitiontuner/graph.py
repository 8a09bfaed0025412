"""The operator graph every later stage works on: ops, tensors, edges and indexes.

The records here (:class:`OpNode`, :class:`Edge`, :class:`TensorInfo`,
:class:`OpGraph`) are what profiling, planning and simulation read. They are built
from an ONNX model by :mod:`partitiontuner.onnx_loader`, the one module that reads
ONNX files; an :class:`OpGraph` rebuilds the cleaned, self-contained ONNX model
(weights as initializers) on demand for profiling, execution and export.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from partitiontuner.errors import GraphLoadError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TensorInfo:
    """An activation or weight tensor with a static shape."""

    name: str
    shape: Shape
    dtype: str
    size_bytes: int


@dataclass(frozen=True)
class OpNode:
    """One ONNX operator that does work.

    ``inputs`` are activation tensors (graph inputs or other ops' outputs), in the
    node's input order; ``weights`` are its constant inputs (weights, shapes, ...);
    ``onnx_inputs`` is the node's full ONNX input list ("" for an omitted input).
    """

    index: int
    name: str
    op_type: str
    domain: str
    attributes: Mapping[str, Any]
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    outputs: tuple[str, ...]
    onnx_inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    weight_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    dtype: str
    flops: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int

    @property
    def signature(self) -> str:
        """What determines this op's cost: type, attributes, shapes and dtypes."""
        return json.dumps(
            [self.domain, self.op_type, _jsonable(dict(self.attributes)), self.input_shapes,
             self.weight_shapes, self.output_shapes, self.dtype],
            sort_keys=True, separators=(",", ":"),
        )


@dataclass(frozen=True)
class Edge:
    """A tensor produced by op ``src`` and read by op ``dst``."""

    src: int
    dst: int
    tensor: str
    size_bytes: int


@dataclass(frozen=True)
class ConstTensor:
    """A constant tensor: shape and dtype known at once, value produced lazily.

    Weights of big models take hundreds of MB, so the loader stores a maker and the
    value is built only when it is needed (folding, or rebuilding the ONNX model).
    """

    name: str
    shape: Shape
    dtype: int  # onnx TensorProto data type
    make: Any  # () -> np.ndarray


@dataclass(eq=False)
class OpGraph:
    """The operator graph every later stage works on; nodes are in topological order.

    Attributes:
        name: model name (zoo name or file stem).
        nodes: ops, ``nodes[i].index == i``, topologically sorted.
        edges: op-to-op tensors; a tensor read by several ops gives one edge each.
        inputs: graph inputs (activations), which live on the host PU at time 0.
        outputs: graph outputs, which must end on the host PU.
        tensors: every activation tensor by name.
        input_consumers: graph-input tensor name -> ops that read it.
        output_producers: graph-output tensor name -> op that writes it.
    """

    name: str
    nodes: tuple[OpNode, ...]
    edges: tuple[Edge, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    tensors: Mapping[str, TensorInfo]
    opset_imports: tuple[tuple[str, int], ...]
    ir_version: int
    _consts: Mapping[str, ConstTensor] = field(repr=False)
    _value_info: tuple[onnx.ValueInfoProto, ...] = field(repr=False)
    _protos: tuple[onnx.NodeProto, ...] = field(repr=False)

    # --- indexes built once -------------------------------------------------------
    @cached_property
    def num_ops(self) -> int:
        return len(self.nodes)

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Op name -> op index."""
        return MappingProxyType({n.name: n.index for n in self.nodes})

    @cached_property
    def producer(self) -> Mapping[str, int]:
        """Activation tensor name -> index of the op writing it."""
        return MappingProxyType({t: n.index for n in self.nodes for t in n.outputs})

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        out: list[set[int]] = [set() for _ in self.nodes]
        for e in self.edges:
            out[e.dst].add(e.src)
        return tuple(tuple(sorted(s)) for s in out)

    @cached_property
    def succs(self) -> tuple[tuple[int, ...], ...]:
        out: list[set[int]] = [set() for _ in self.nodes]
        for e in self.edges:
            out[e.src].add(e.dst)
        return tuple(tuple(sorted(s)) for s in out)

    @cached_property
    def in_edges(self) -> tuple[tuple[Edge, ...], ...]:
        out: list[list[Edge]] = [[] for _ in self.nodes]
        for e in self.edges:
            out[e.dst].append(e)
        return tuple(tuple(x) for x in out)

    @cached_property
    def out_edges(self) -> tuple[tuple[Edge, ...], ...]:
        out: list[list[Edge]] = [[] for _ in self.nodes]
        for e in self.edges:
            out[e.src].append(e)
        return tuple(tuple(x) for x in out)

    @cached_property
    def input_consumers(self) -> Mapping[str, tuple[int, ...]]:
        names = {t.name for t in self.inputs}
        cons: dict[str, list[int]] = {t.name: [] for t in self.inputs}
        for n in self.nodes:
            for t in dict.fromkeys(n.inputs):
                if t in names:
                    cons[t].append(n.index)
        return MappingProxyType({k: tuple(v) for k, v in cons.items()})

    @cached_property
    def output_producers(self) -> Mapping[str, int]:
        return MappingProxyType({t.name: self.producer[t.name] for t in self.outputs if t.name in self.producer})

    @cached_property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @cached_property
    def content_hash(self) -> str:
        """Hash of structure, shapes and attributes (not weight values): what a plan is for."""
        h = hashlib.sha256()
        for n in self.nodes:
            h.update(json.dumps([n.name, n.signature, n.inputs, n.outputs]).encode())
        for t in self.inputs + self.outputs:
            h.update(json.dumps([t.name, t.shape, t.dtype]).encode())
        return h.hexdigest()[:16]

    def op(self, name: str) -> OpNode:
        """The op called ``name``; raises a clear error for an unknown name."""
        try:
            return self.nodes[self.index[name]]
        except KeyError:
            raise GraphLoadError(f"model {self.name!r} has no op named {name!r}") from None

    # --- ONNX round trip ----------------------------------------------------------
    def const_value(self, name: str) -> np.ndarray:
        """The value of a constant input (weight, shape tensor, ...)."""
        return self._consts[name].make()

    def onnx_model(self) -> onnx.ModelProto:
        """A self-contained ONNX model of the ops: real inputs, weights as initializers.

        Built anew at each call (weights of big models take hundreds of MB); callers
        that need it repeatedly keep their own reference.
        """
        needed = dict.fromkeys(w for n in self.nodes for w in n.weights)
        inits = [numpy_helper.from_array(np.asarray(self.const_value(w)), name=w) for w in needed]
        nodes = list(self._protos)
        graph = helper.make_graph(
            nodes,
            self.name,
            [_value_info(t) for t in self.inputs],
            [_value_info(t) for t in self.outputs],
            initializer=inits,
            value_info=list(self._value_info),
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in self.opset_imports],
            producer_name="partitiontuner",
        )
        model.ir_version = max(self.ir_version, 7) if self.ir_version else 7
        model.ir_version = min(model.ir_version, onnx.IR_VERSION)
        return model


# ---------------------------------------------------------------------------------
# helpers


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return round(x, 9)
    return x


def _value_info(t: TensorInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape))
