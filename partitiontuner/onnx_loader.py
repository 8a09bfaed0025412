"""Read an ONNX model into an :class:`~partitiontuner.graph.OpGraph`.

This module alone reads ONNX models. It folds weight-producing constants away
(initializers, ``Constant``, ``ConstantOfShape`` and any node whose inputs are all
constant), elides ``Identity`` and inference-mode ``Dropout``, fixes dynamic input
dimensions from the caller, runs ONNX shape inference and records per op its shapes,
FLOPs and bytes. Values are read out of the protos only through
:mod:`partitiontuner.onnx_protos`, which refuses corrupt ones.

(About 570 lines, over the usual 500: one pipeline whose steps, the methods of
``_Loader``, read top to bottom in the order they run; splitting it would scatter one
load over several files.)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.errors import GraphLoadError
from partitiontuner.flops import op_flops
from partitiontuner.graph import ConstTensor, Edge, OpGraph, OpNode, Shape, TensorInfo
from partitiontuner.onnx_protos import (
    attr_value,
    check_names,
    check_tensor,
    constant_attr_value,
    tensor_array,
    tensor_value,
)
from partitiontuner.safe_io import MAX_MODEL_BYTES, check_regular_file

#: constants up to this many elements are materialised during loading (shape tensors,
#: per-channel parameters); larger ones only when the ONNX model is rebuilt
_SMALL_CONST = 65536
_ELIDED = frozenset({"Identity", "Dropout"})
_SHAPE_OPS = frozenset({"Shape", "Size"})
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})


def load_graph(
    source: str | Path | onnx.ModelProto,
    *,
    name: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch_size: int | None = None,
    synthesize_weights: bool = False,
) -> OpGraph:
    """Load an ONNX model (path or proto) into an :class:`OpGraph`.

    Args:
        source: path to an ``.onnx`` file, or a loaded model.
        name: model name; defaults to the file stem or the graph name.
        input_shapes: full shapes for graph inputs with dynamic dimensions.
        batch_size: if given, the first dimension of every graph input.
        synthesize_weights: the model's weights are placeholders (``ConstantOfShape``
            fills, as in ONNX's "light" zoo models); make them seeded, He-scaled random
            tensors so that activations stay finite when the model runs.

    Raises:
        GraphLoadError: unreadable file, unknown op, shape that cannot be inferred, or a
            dynamic dimension without a value.
    """
    if isinstance(source, onnx.ModelProto):
        model = source
        name = name or model.graph.name or "model"
    else:
        path = Path(source)
        name = name or path.stem
        model = _read_model(path)
    if batch_size is not None and batch_size < 1:
        raise GraphLoadError(f"batch size must be >= 1, got {batch_size}")
    return _Loader(model, name, dict(input_shapes or {}), batch_size, synthesize_weights).run()


def _read_model(path: Path) -> onnx.ModelProto:
    check_regular_file(path, what="model file", error=GraphLoadError, max_bytes=MAX_MODEL_BYTES)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, or worse, on garbage
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise GraphLoadError(
            f"{path} is not a readable ONNX model (truncated or corrupt?): {type(exc).__name__}{': ' + detail if detail else ''}"
        ) from None
    if not model.graph.node:
        raise GraphLoadError(f"{path} is not an ONNX model with a graph (no nodes found)")
    return model


class _Loader:
    """One load: constants, input shapes, inference, then ops and edges."""

    def __init__(self, model: onnx.ModelProto, name: str, input_shapes: dict, batch: int | None, synth: bool):
        self.model = model
        self.name = name
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
        self.batch = batch
        self.synth = synth
        self.consts: dict[str, ConstTensor] = {}
        opsets = {imp.domain or "": imp.version for imp in model.opset_import}
        self.opset = opsets.get("", 0)
        self.opsets = opsets

    def run(self) -> OpGraph:
        g = self.model.graph
        check_names(self.model)
        self._collect_initializers()
        graph_outputs = {o.name for o in g.output}
        declared = {vi.name for vi in g.input}
        for o in g.output:
            if o.name in declared and o.name not in self.consts:
                raise GraphLoadError(f"graph output {o.name!r} is a graph input, not computed by any op")
        # ONNX files should be sorted, but not all are; folding and inference need it
        nodes = _toposort(list(g.node), declared | set(self.consts))
        self._check_known_ops(nodes)
        inputs = self._collect_inputs(nodes, graph_outputs)
        nodes = self._simplify(inputs, nodes, graph_outputs)
        shapes, dtypes, value_info = self._infer_shapes(inputs, nodes)
        return self._build(inputs, nodes, shapes, dtypes, value_info)

    def _simplify(self, inputs, nodes: list[onnx.NodeProto], graph_outputs: set[str]) -> list[onnx.NodeProto]:
        """Fold constants, drop unused optional outputs, elide Identity/Dropout; then,
        while ``Shape``/``Size`` ops read tensors of known static shape, turn them into
        constants and fold again (dynamic-shape exports compute Reshape targets so)."""
        for _ in range(64):
            nodes = self._fold_constants(nodes)
            nodes = self._strip_unused_outputs(nodes, graph_outputs)
            nodes = self._elide(nodes, graph_outputs)
            if not any(n.op_type in _SHAPE_OPS and (n.domain or "") in ("", "ai.onnx") for n in nodes):
                break
            shapes = self._partial_shapes(inputs, nodes)
            rest = [n for n in nodes if not self._fold_shape_op(n, shapes)]
            if len(rest) == len(nodes):
                break
            nodes = rest
        return nodes

    # constants -----------------------------------------------------------------------
    def _collect_initializers(self) -> None:
        for init in self.model.graph.initializer:
            shape = check_tensor(init)
            self.consts[init.name] = ConstTensor(init.name, shape, init.data_type, _lazy(lambda t=init: tensor_array(t)))
        for init in self.model.graph.sparse_initializer:
            raise GraphLoadError(f"sparse initializer {init.values.name!r} is not supported")

    def _collect_inputs(self, nodes: list[onnx.NodeProto], graph_outputs: set[str]) -> list[tuple[str, Shape, int]]:
        unknown = set(self.input_shapes) - {vi.name for vi in self.model.graph.input if vi.name not in self.consts}
        if unknown:
            raise GraphLoadError(f"--input-shape names no graph input: {', '.join(sorted(unknown))}")
        read = {i for n in nodes for i in n.input} | graph_outputs
        real = []
        for vi in self.model.graph.input:
            if vi.name in self.consts:
                continue
            if vi.name not in read:  # unused: no shape needed, and no op will read it
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise GraphLoadError(f"graph input {vi.name!r} is not a tensor")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
            if not tt.HasField("shape"):
                dims = None
            if vi.name in self.input_shapes:
                given = self.input_shapes[vi.name]
                if dims is not None and len(given) != len(dims):
                    raise GraphLoadError(f"--input-shape for {vi.name!r} has rank {len(given)}, the model says {len(dims)}")
                if dims is not None:
                    for i, (a, b) in enumerate(zip(given, dims, strict=True)):
                        if b is not None and a != b and not (i == 0 and self.batch is None):
                            raise GraphLoadError(f"--input-shape for {vi.name!r} sets dim {i} to {a}, the model fixes it to {b}")
                dims = list(given)
            if self.batch is not None and dims:
                dims[0] = self.batch
            if dims is None or any(d is None for d in dims):
                shown = "?" if dims is None else "x".join("?" if d is None else str(d) for d in dims)
                example = "1x3x224x224" if dims is None else "x".join("1" if d is None else str(d) for d in dims)
                raise GraphLoadError(
                    f"graph input {vi.name!r} has a dynamic shape {shown}; give it with --input-shape {vi.name}={example}"
                )
            if any(d <= 0 for d in dims):
                raise GraphLoadError(f"input shape of {vi.name!r} must be positive, got {dims}")
            real.append((vi.name, tuple(int(d) for d in dims), tt.elem_type))
        if not real:
            raise GraphLoadError("the model has no (non-constant) graph inputs")
        return real

    def _fold_constants(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Turn weight-producing nodes into lazy constants; return the nodes that remain."""
        rest = []
        for node in nodes:
            ins = [i for i in node.input if i]
            if node.op_type == "Constant" or (
                node.op_type not in _RANDOM_OPS and ins and all(i in self.consts for i in ins)
            ):
                self._add_const_node(node)
            else:
                rest.append(node)
        return rest

    def _add_const_node(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Constant":
            if len(node.attribute) != 1:
                raise GraphLoadError(f"Constant node {node.name or node.output[0]!r} needs exactly one value attribute")
            value = constant_attr_value(node.attribute[0])
            self.consts[node.output[0]] = ConstTensor(node.output[0], tuple(value.shape), helper.np_dtype_to_tensor_dtype(value.dtype), lambda v=value: v)
            return
        if node.op_type == "ConstantOfShape" and node.input[0] in self.consts:
            shape = tuple(int(d) for d in self.consts[node.input[0]].make().reshape(-1))
            fill = np.zeros(1, dtype=np.float32)
            for a in node.attribute:
                if a.name == "value":
                    fill = tensor_value(a.t).reshape(-1)
            out = node.output[0]
            dtype = helper.np_dtype_to_tensor_dtype(fill.dtype)
            if self.synth and len(shape) >= 2 and fill.dtype.kind == "f":
                make = _lazy(lambda s=shape, n=out, dt=fill.dtype: _he_weights(n, s, dt))
            else:
                make = _lazy(lambda s=shape, f=fill: np.full(s, f[0], dtype=f.dtype))
            self.consts[out] = ConstTensor(out, shape, dtype, make)
            return
        values = _eval_node(node, {i: self.consts[i].make() for i in node.input if i}, self.opsets)
        for out, val in zip(node.output, values, strict=False):
            if out:
                val = np.asarray(val)
                self.consts[out] = ConstTensor(out, tuple(val.shape), helper.np_dtype_to_tensor_dtype(val.dtype), lambda v=val: v)

    def _strip_unused_outputs(self, nodes: list[onnx.NodeProto], graph_outputs: set[str]) -> list[onnx.NodeProto]:
        """Blank the optional outputs nothing reads (BatchNormalization's running stats in
        opset 9, Dropout's mask, MaxPool's indices): they need no shape and no bytes."""
        used = {i for n in nodes for i in n.input} | graph_outputs
        out = []
        for node in nodes:
            opt = _optional_outputs(node, self.opsets)
            if any(o and o not in used and k in opt for k, o in enumerate(node.output)):
                names = [("" if (k in opt and o not in used) else o) for k, o in enumerate(node.output)]
                while names and not names[-1]:
                    names.pop()
                new = onnx.NodeProto()
                new.CopyFrom(node)
                del new.output[:]
                new.output.extend(names)
                node = new
            out.append(node)
        return out

    def _elidable(self, node: onnx.NodeProto, graph_outputs: set[str]) -> bool:
        if node.op_type not in _ELIDED or (node.domain or "") not in ("", "ai.onnx"):
            return False
        outs = [o for o in node.output if o]
        if len(outs) != 1 or outs[0] != node.output[0] or outs[0] in graph_outputs or node.input[0] in self.consts:
            return False
        if node.op_type == "Dropout" and len(node.input) >= 3 and node.input[2]:
            mode = node.input[2]  # training_mode: only a constant False makes Dropout an identity
            return mode in self.consts and not bool(np.asarray(self.consts[mode].make()).any())
        return True

    def _elide(self, nodes: list[onnx.NodeProto], graph_outputs: set[str]) -> list[onnx.NodeProto]:
        """Drop Identity and Dropout (inference) by renaming their consumers' inputs."""
        alias: dict[str, str] = {}
        kept = []
        for node in nodes:
            if self._elidable(node, graph_outputs):
                alias[node.output[0]] = alias.get(node.input[0], node.input[0])
                continue
            if alias and any(i in alias for i in node.input):
                node = _clone_with_inputs(node, [alias.get(i, i) for i in node.input])
            kept.append(node)
        return kept

    def _check_known_ops(self, nodes: list[onnx.NodeProto]) -> None:
        for node in nodes:
            domain = node.domain or ""
            if domain in ("", "ai.onnx"):
                if not onnx.defs.has(node.op_type):
                    raise GraphLoadError(f"unknown op type {node.op_type!r} in node {node.name or node.output[0]!r}")
                opset = self.opsets.get("", self.opsets.get("ai.onnx", 0))
                try:
                    onnx.defs.get_schema(node.op_type, opset, "")
                except onnx.defs.SchemaError:
                    since = onnx.defs.get_schema(node.op_type).since_version
                    raise GraphLoadError(
                        f"op {node.op_type!r} in node {node.name or node.output[0]!r} does not exist in the model's "
                        f"opset {opset} (it was added in opset {since})"
                    ) from None
            elif domain != "com.microsoft":
                raise GraphLoadError(f"op {node.op_type!r} of custom domain {domain!r} in node {node.name or node.output[0]!r} is not supported")

    # shapes ------------------------------------------------------------------------------
    def _inference_model(self, inputs, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
        used = dict.fromkeys(i for n in nodes for i in n.input if i in self.consts)
        small, big = [], []
        for c in used:
            const = self.consts[c]
            if math.prod(const.shape) <= _SMALL_CONST:
                small.append(numpy_helper.from_array(np.asarray(const.make()), name=c))
            else:
                big.append(helper.make_tensor_value_info(c, const.dtype, list(const.shape)))
        graph = helper.make_graph(
            list(nodes),
            "infer",
            [helper.make_tensor_value_info(n, t, list(s)) for n, s, t in inputs] + big,
            [helper.make_tensor_value_info(o.name, 0, None) for o in self.model.graph.output],
            initializer=small,
        )
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        model.ir_version = max(self.model.ir_version, 4)
        return model

    def _partial_shapes(self, inputs, nodes: list[onnx.NodeProto]) -> dict[str, Shape]:
        """Whatever static shapes lenient inference finds (for folding Shape ops)."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self._inference_model(inputs, nodes), data_prop=True)
        except Exception:
            inferred = None
        shapes = {n: s for n, s, _ in inputs}
        if inferred is not None:
            shapes.update({k: s for k, (s, _) in _static_shapes(inferred).items()})
        return shapes

    def _fold_shape_op(self, node: onnx.NodeProto, shapes: dict[str, Shape]) -> bool:
        """Make a Shape/Size op of a statically shaped tensor a constant; True if done."""
        if node.op_type not in _SHAPE_OPS or (node.domain or "") not in ("", "ai.onnx") or not node.output[0]:
            return False
        src = node.input[0]
        shape = self.consts[src].shape if src in self.consts else shapes.get(src)
        if shape is None:
            return False
        if node.op_type == "Size":
            value = np.asarray(math.prod(shape), dtype=np.int64)
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            value = np.asarray(shape[attrs.get("start", 0):attrs.get("end")], dtype=np.int64)
        out = node.output[0]
        self.consts[out] = ConstTensor(out, tuple(value.shape), TensorProto.INT64, lambda v=value: v)
        return True

    def _infer_shapes(self, inputs, nodes):
        model = self._inference_model(inputs, nodes)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GraphLoadError(f"shape inference failed: {msg[:300]}") from None
        shapes: dict[str, Shape] = {n: s for n, s, _ in inputs}
        dtypes: dict[str, int] = {n: t for n, _, t in inputs}
        for name, (shape, dtype) in _static_shapes(inferred).items():
            shapes[name] = shape
            dtypes[name] = dtype
        for node in nodes:
            for o in node.output:
                if o and o not in shapes:
                    who = node.name or f"{node.op_type} writing {o!r}"
                    raise GraphLoadError(f"the shape of tensor {o!r} (output of {who}) cannot be inferred; fix the model's shapes or give --input-shape")
        value_info = tuple(
            vi for vi in inferred.graph.value_info if vi.name in shapes and vi.name not in self.consts
        )
        return shapes, dtypes, value_info

    # ops ------------------------------------------------------------------------------------
    def _build(self, inputs, nodes, shapes, dtypes, value_info) -> OpGraph:
        graph_outputs = [o.name for o in self.model.graph.output]
        nodes = _prune_dead(nodes, set(graph_outputs))
        nodes = _toposort(nodes, {n for n, _, _ in inputs} | set(self.consts))
        names = _unique_names(nodes)
        tensors: dict[str, TensorInfo] = {}

        def info(t: str) -> TensorInfo:
            if t not in tensors:
                dt = dtypes.get(t, TensorProto.FLOAT)
                np_dt = helper.tensor_dtype_to_np_dtype(dt)
                tensors[t] = TensorInfo(t, shapes[t], np.dtype(np_dt).name, int(math.prod(shapes[t])) * np.dtype(np_dt).itemsize)
            return tensors[t]

        for n, _, _ in inputs:
            info(n)
        ops: list[OpNode] = []
        producer: dict[str, int] = {}
        edges: list[Edge] = []
        for idx, node in enumerate(nodes):
            acts = [i for i in node.input if i and i not in self.consts]
            weights = [i for i in node.input if i and i in self.consts]
            outs = [o for o in node.output if o]
            attrs = {a.name: attr_value(a) for a in node.attribute}
            # positional: an omitted optional input ("") keeps its slot with shape ()
            all_in_shapes = [(shapes[i] if i in shapes else self.consts[i].shape) if i else () for i in node.input]
            out_shapes = [shapes[o] for o in outs]
            w_bytes = sum(_const_bytes(self.consts[w]) for w in dict.fromkeys(weights))
            a_bytes = sum(info(a).size_bytes for a in acts)
            o_bytes = sum(info(o).size_bytes for o in outs)
            dtype = info(outs[0]).dtype if outs else "float32"
            ops.append(
                OpNode(
                    index=idx,
                    name=names[idx],
                    op_type=node.op_type,
                    domain=node.domain or "",
                    attributes=MappingProxyType(attrs),
                    inputs=tuple(acts),
                    weights=tuple(weights),
                    outputs=tuple(outs),
                    onnx_inputs=tuple(node.input),
                    input_shapes=tuple(shapes[a] for a in acts),
                    weight_shapes=tuple(self.consts[w].shape for w in weights),
                    output_shapes=tuple(out_shapes),
                    dtype=dtype,
                    flops=int(op_flops(node.op_type, attrs, all_in_shapes, out_shapes)),
                    bytes_read=int(a_bytes + w_bytes),
                    bytes_written=int(o_bytes),
                    weight_bytes=int(w_bytes),
                )
            )
            for t in dict.fromkeys(acts):
                if t in producer:
                    edges.append(Edge(producer[t], idx, t, info(t).size_bytes))
            for o in outs:
                producer[o] = idx
        if not ops:
            raise GraphLoadError("the model has no operators left once constants are folded")
        outputs = []
        for o in graph_outputs:
            if o not in producer:
                raise GraphLoadError(f"graph output {o!r} is not computed by any op (a constant or an input)")
            outputs.append(info(o))
        opsets = tuple((imp.domain or "", imp.version) for imp in self.model.opset_import)
        return OpGraph(
            name=self.name,
            nodes=tuple(ops),
            edges=tuple(edges),
            inputs=tuple(info(n) for n, _, _ in inputs if any(n in op.inputs for op in ops)),
            outputs=tuple(outputs),
            tensors=MappingProxyType(tensors),
            opset_imports=opsets,
            ir_version=self.model.ir_version,
            _consts=MappingProxyType({k: v for k, v in self.consts.items()}),
            _value_info=value_info,
            _protos=tuple(_named(node, names[i]) for i, node in enumerate(nodes)),
        )


# ---------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------
# helpers


def _static_shapes(inferred: onnx.ModelProto) -> dict[str, tuple[Shape, int]]:
    """Tensor name -> (shape, elem type) for every fully static tensor that inference found."""
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if all(d >= 0 for d in dims):
            out[vi.name] = (tuple(dims), tt.elem_type)
    return out


def _optional_outputs(node: onnx.NodeProto, opsets: Mapping[str, int]) -> frozenset[int]:
    """Positions of the node's outputs its schema declares optional (none if unknown)."""
    domain = node.domain or ""
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, opsets.get("ai.onnx", 1)), domain)
    except Exception:  # unknown op or domain: reported later with a clear message
        return frozenset()
    opt = onnx.defs.OpSchema.FormalParameterOption.Optional
    return frozenset(k for k, p in enumerate(schema.outputs) if p.option == opt and k < len(node.output))


def _lazy(fn):
    """Memoise a zero-argument constant maker (weights are built once, on demand)."""
    box: list = []

    def make():
        if not box:
            box.append(fn())
        return box[0]

    return make


def _he_weights(name: str, shape: Shape, dtype: np.dtype) -> np.ndarray:
    seed = zlib.crc32(name.encode())
    fan_in = max(1, math.prod(shape[1:]))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape, dtype=np.float32) * math.sqrt(2.0 / fan_in)).astype(dtype)


def _const_bytes(c: ConstTensor) -> int:
    return int(math.prod(c.shape)) * np.dtype(helper.tensor_dtype_to_np_dtype(c.dtype)).itemsize


def _eval_node(node: onnx.NodeProto, values: dict[str, np.ndarray], opsets: dict[str, int]) -> list:
    """Evaluate one constant node with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    ins = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), list(np.shape(v))) for i, v in values.items()]
    outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
    g = helper.make_graph([node], "const", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    try:
        return ReferenceEvaluator(m).run(None, values)
    except Exception as exc:
        raise GraphLoadError(f"cannot fold constant node {node.name or node.op_type!r}: {exc}") from None


def _clone_with_inputs(node: onnx.NodeProto, inputs: list[str]) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(inputs)
    return new


def _prune_dead(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    return keep[::-1]


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable Kahn sort: ONNX files should be sorted, but not all are."""
    avail = set(available)
    pending = list(nodes)
    out = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all((not i) or i in avail for i in n.input):
                out.append(n)
                avail.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = next(i for i in rest[0].input if i and i not in avail)
            raise GraphLoadError(f"node {rest[0].name or rest[0].op_type!r} reads {missing!r}, which nothing produces (or the graph has a cycle)")
        pending = rest
    return out


def _unique_names(nodes: list[onnx.NodeProto]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    counters: dict[str, int] = {}
    given = {n.name for n in nodes if n.name}
    for n in nodes:
        name = n.name
        if not name or name in seen:
            while True:
                k = counters.get(n.op_type, 0)
                counters[n.op_type] = k + 1
                name = f"{n.op_type}_{k}"
                if name not in seen and name not in given:
                    break
        seen.add(name)
        names.append(name)
    return names


def _named(node: onnx.NodeProto, name: str) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.name = name
    return new
