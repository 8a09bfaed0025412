"""Read values out of ONNX protos, refusing corrupt ones with a :class:`GraphLoadError`.

A fuzzed or damaged model parses as protobuf but then breaks the ONNX helpers in many
ways: names that are not UTF-8 come back as ``bytes`` (``TypeError`` in schema
lookups), constants of element type ``UNDEFINED`` or with fewer values than their
shape (``ValueError`` in NumPy), attribute kinds that are not plain values. The loader
reads names, constants and attributes only through these functions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.errors import GraphLoadError
from partitiontuner.graph import Shape


def check_names(model: onnx.ModelProto) -> None:
    """Every name and op type must be text: protobuf hands invalid UTF-8 back as bytes,
    which the ONNX checker and schema lookups reject with a TypeError."""
    g = model.graph
    texts: list[tuple[str, Any]] = [("graph name", g.name)]
    texts += [("opset domain", imp.domain) for imp in model.opset_import]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        texts.append(("tensor name", vi.name))
    for init in g.initializer:
        texts.append(("initializer name", init.name))
    for node in g.node:
        texts += [("node name", node.name), ("op type", node.op_type), ("op domain", node.domain)]
        texts += [("tensor name", t) for t in list(node.input) + list(node.output)]
        texts += [("attribute name", a.name) for a in node.attribute]
    for what, text in texts:
        if not isinstance(text, str):
            raise GraphLoadError(f"the model has a {what} that is not UTF-8 text: {text!r:.80}")


def check_tensor(t: TensorProto) -> Shape:
    """Shape of a constant tensor, after checking (without building it) that its element
    type is a numeric one and its stored data has as many elements as its shape says."""
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise GraphLoadError(f"constant {t.name!r} has a negative dimension: {list(shape)}")
    if t.data_type in (TensorProto.UNDEFINED, TensorProto.STRING) or t.data_type not in TensorProto.DataType.values():
        raise GraphLoadError(f"constant {t.name!r} has element type {t.data_type}, which is not a numeric ONNX type")
    if t.data_location == TensorProto.EXTERNAL:
        return shape  # stored outside the file: onnx.load has already read it, or reports it
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        raise GraphLoadError(f"constant {t.name!r} has element type {t.data_type}, which is not supported") from None
    numel = math.prod(shape)
    if t.HasField("raw_data"):
        stored, expected = len(t.raw_data), numel * itemsize
        if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
            expected = (numel + 1) // 2
    else:
        field = helper.tensor_dtype_to_field(t.data_type)
        stored, expected = len(getattr(t, field)), numel
        if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
            expected = 2 * numel
    if stored != expected and not (numel == 0 and stored == 0):
        raise GraphLoadError(f"constant {t.name!r} of shape {list(shape)} stores {stored} values/bytes, expected {expected} (corrupt file?)")
    return shape


def tensor_array(t: TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:  # a corrupt tensor: numpy or onnx raise ValueError, TypeError, ...
        raise GraphLoadError(f"constant {t.name!r} cannot be read: {type(exc).__name__}: {str(exc)[:200]}") from None


def tensor_value(t: TensorProto) -> np.ndarray:
    """A tensor stored in an attribute (a Constant's value, a fill), checked then read."""
    check_tensor(t)
    return tensor_array(t)


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise GraphLoadError(f"{what} is not UTF-8 text: {raw!r:.80}") from None


def constant_attr_value(attr: onnx.AttributeProto) -> np.ndarray:
    if attr.name == "value":
        return tensor_value(attr.t)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
    raise GraphLoadError(f"unsupported Constant attribute {attr.name!r}")


def attr_value(a: onnx.AttributeProto) -> Any:
    try:
        v = helper.get_attribute_value(a)
    except Exception as exc:  # onnx raises ValueError or worse for an unknown attribute type
        raise GraphLoadError(f"attribute {a.name!r} cannot be read: {exc}") from None
    if isinstance(v, bytes):
        return _decode(v, f"attribute {a.name!r}")
    if isinstance(v, TensorProto):
        return tensor_value(v).tolist()
    if isinstance(v, (onnx.GraphProto,)):
        raise GraphLoadError(f"ops with subgraphs ({a.name}) are not supported")
    if isinstance(v, list):
        v = tuple(_decode(x, f"attribute {a.name!r}") if isinstance(x, bytes) else x for x in v)
        if all(isinstance(x, (int, float, str)) for x in v):
            return v
    elif isinstance(v, (int, float, str)):
        return v
    kind = onnx.AttributeProto.AttributeType.Name(a.type) if a.type in onnx.AttributeProto.AttributeType.values() else a.type
    raise GraphLoadError(f"attribute {a.name!r} of type {kind} is not supported")
