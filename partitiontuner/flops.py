"""Arithmetic cost of one ONNX operator from its attributes and static shapes.

Conventions (the usual ones of model-zoo tables): a multiply-add counts as 2 FLOPs;
bias additions of Conv/Gemm are not counted (they vanish beside the MACs and most
published totals omit them); data-movement ops (Concat, Reshape, Transpose, ...) cost
0 FLOPs; an op type not listed here costs one FLOP per output element.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Shape = tuple[int, ...]

#: ops that only move or reinterpret data
DATA_MOVEMENT = frozenset(
    {
        "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity",
        "Dropout", "Gather", "Slice", "Split", "Pad", "Expand", "Tile", "Shape", "Cast",
        "DepthToSpace", "SpaceToDepth", "GatherElements", "ScatterND", "Constant",
    }
)
#: element-wise ops whose cost per output element is given
ELEMENTWISE_COST = {
    "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 2, "Abs": 1, "Neg": 1, "Floor": 1,
    "Ceil": 1, "Round": 1, "Sign": 1, "Reciprocal": 1, "Sqrt": 1, "HardSigmoid": 3,
    "HardSwish": 4, "Sigmoid": 4, "Tanh": 4, "Exp": 4, "Log": 4, "Erf": 4, "Elu": 4,
    "Selu": 4, "Softplus": 4, "Mish": 8, "Gelu": 8, "Pow": 4, "Not": 1, "Where": 1,
    "Equal": 1, "Less": 1, "Greater": 1, "And": 1, "Or": 1, "Xor": 1, "Mod": 1,
    "Softsign": 3, "ThresholdedRelu": 1, "Celu": 4,
}
#: n-ary element-wise ops: (inputs - 1) FLOPs per output element
NARY = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean"})


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if len(shape) else 1


def op_flops(
    op_type: str,
    attributes: Mapping[str, Any],
    input_shapes: Sequence[Shape],
    output_shapes: Sequence[Shape],
) -> int:
    """FLOPs of one op; ``input_shapes`` lists every input (activations and weights) in
    the node's input order, an omitted optional input as ``()``."""
    out = numel(output_shapes[0]) if output_shapes else 0
    x = input_shapes[0] if input_shapes else ()
    if op_type in ("Conv", "ConvInteger", "QLinearConv"):
        w = input_shapes[3 if op_type == "QLinearConv" else 1]  # QLinearConv: x, x_scale, x_zp, w, ...
        return 2 * out * numel(w[1:])
    if op_type == "ConvTranspose":
        w = input_shapes[1]  # (C_in, C_out/groups, kH, kW)
        return 2 * numel(x) * numel(w[1:])
    if op_type == "Gemm":
        a, b = input_shapes[0], input_shapes[1]
        k = a[0] if attributes.get("transA", 0) else a[1]
        return 2 * out * k if len(b) else 0
    if op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        k = x[-1] if len(x) else 1
        return 2 * out * k
    if op_type in ("MaxPool", "AveragePool", "LpPool"):
        return out * numel(attributes.get("kernel_shape", (1,)))
    if op_type in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        return numel(x)
    if op_type == "BatchNormalization":
        return 2 * out
    if op_type in ("InstanceNormalization", "LayerNormalization", "GroupNormalization"):
        return 8 * out
    if op_type == "LRN":
        return (2 * int(attributes.get("size", 1)) + 3) * out
    if op_type in ("Softmax", "LogSoftmax"):
        return 5 * out
    if op_type.startswith("Reduce") or op_type in ("ArgMax", "ArgMin"):
        return numel(x)
    if op_type in ("Resize", "Upsample"):
        mode = attributes.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return (4 if "linear" in mode else 1) * out
    if op_type in NARY:
        return max(1, len(input_shapes) - 1) * out
    if op_type in ELEMENTWISE_COST:
        return ELEMENTWISE_COST[op_type] * out
    if op_type in DATA_MOVEMENT:
        return 0
    return out
