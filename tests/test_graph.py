"""OpGraph loading: FLOPs of known layers, bytes, edges, the loader's edge cases, and
ONNX files exported from PyTorch (several opsets, a dynamic batch dimension)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.errors import GraphLoadError
from partitiontuner.flops import op_flops
from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.zoo import ZOO, random_input

F = TensorProto.FLOAT


def vi(name: str, shape: Sequence[int | str] | None, dtype: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name: str, shape: Sequence[int], value: float = 0.1, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, value, dtype=dtype), name)


def model(nodes, inputs, outputs, inits=(), opset: int = 13, ir: int = 8) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "t", list(inputs), list(outputs), initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def one_op(op_type: str, x_shape, weights=(), extra_inputs=(), opset: int = 13, **attrs) -> OpGraph:
    """A graph of one op reading activation ``x`` (plus constant ``weights``)."""
    inits = [const(f"w{i}", s) for i, s in enumerate(weights)]
    ins = ["x", *(f"w{i}" for i in range(len(weights))), *extra_inputs]
    node = helper.make_node(op_type, ins, ["y"], **attrs)
    return load_graph(model([node], [vi("x", x_shape)], [vi("y", None)], inits, opset=opset))


def run_ort(g: OpGraph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(g.onnx_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# ---------------------------------------------------------------------------------
# FLOPs of known layers, worked out by hand (a multiply-add = 2 FLOPs)


def test_conv_with_groups_flops_and_bytes():
    # 8 -> 16 channels, 2 groups: each output sees 4 input channels x 3x3 = 36 MACs
    g = one_op("Conv", [1, 8, 10, 10], weights=[(16, 4, 3, 3), (16,)], group=2, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    (op,) = g.nodes
    assert op.output_shapes == ((1, 16, 10, 10),)
    assert op.flops == 2 * (16 * 10 * 10) * (4 * 3 * 3) == 115_200  # bias not counted
    assert op.weight_bytes == (16 * 4 * 9 + 16) * 4
    assert op.bytes_read == 8 * 100 * 4 + op.weight_bytes
    assert op.bytes_written == 16 * 100 * 4
    assert op.inputs == ("x",) and op.weights == ("w0", "w1")


def test_depthwise_conv_flops():
    # stride 2, pad 1: 10x10 -> 5x5; each output: one channel x 3x3
    g = one_op("Conv", [1, 8, 10, 10], weights=[(8, 1, 3, 3)], group=8, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    assert g.nodes[0].output_shapes == ((1, 8, 5, 5),)
    assert g.nodes[0].flops == 2 * 8 * 25 * 9 == 3600


def test_conv_transpose_flops():
    # every input pixel of every input channel scatters into C_out x 2x2 outputs
    g = one_op("ConvTranspose", [1, 4, 5, 5], weights=[(4, 3, 2, 2)], kernel_shape=[2, 2], strides=[2, 2])
    assert g.nodes[0].output_shapes == ((1, 3, 10, 10),)
    assert g.nodes[0].flops == 2 * (4 * 25) * (3 * 4) == 2400


@pytest.mark.parametrize(("a", "b", "attrs"), [
    ((3, 5), (5, 4), {}),
    ((5, 3), (5, 4), {"transA": 1}),
    ((3, 5), (4, 5), {"transB": 1}),
    ((5, 3), (4, 5), {"transA": 1, "transB": 1}),
])
def test_gemm_flops_with_transposes(a, b, attrs):
    g = one_op("Gemm", a, weights=[b, (4,)], **attrs)  # M=3, K=5, N=4 in every case
    assert g.nodes[0].output_shapes == ((3, 4),)
    assert g.nodes[0].flops == 2 * 3 * 4 * 5 == 120


def test_batched_matmul_flops():
    # (2,4,6,8) @ (2,4,8,3): 2*4 matrices of 6x3 outputs, 8 MACs each
    m = model([helper.make_node("MatMul", ["a", "b"], ["y"])], [vi("a", [2, 4, 6, 8]), vi("b", [2, 4, 8, 3])], [vi("y", None)])
    g = load_graph(m)
    assert g.nodes[0].output_shapes == ((2, 4, 6, 3),)
    assert g.nodes[0].flops == 2 * (2 * 4 * 6 * 3) * 8 == 2304
    assert g.nodes[0].inputs == ("a", "b") and not g.nodes[0].weights
    # a broadcast weight operand costs the same
    assert one_op("MatMul", [2, 4, 6, 8], weights=[(8, 3)]).nodes[0].flops == 2304


@pytest.mark.parametrize(("op_type", "attrs", "out_shape", "flops"), [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}, (1, 4, 4, 4), 64 * 9),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2]}, (1, 4, 4, 4), 64 * 9),
    ("GlobalAveragePool", {}, (1, 4, 1, 1), 4 * 81),
    ("GlobalMaxPool", {}, (1, 4, 1, 1), 4 * 81),
    ("Relu", {}, (1, 4, 9, 9), 324),
    ("Sigmoid", {}, (1, 4, 9, 9), 4 * 324),
    ("Softmax", {"axis": 1}, (1, 4, 9, 9), 5 * 324),
    ("Flatten", {}, (1, 324), 0),
    ("Transpose", {"perm": [0, 2, 3, 1]}, (1, 9, 9, 4), 0),
])
def test_single_input_op_flops(op_type, attrs, out_shape, flops):
    g = one_op(op_type, [1, 4, 9, 9], **attrs)
    assert g.nodes[0].output_shapes == (out_shape,)
    assert g.nodes[0].flops == flops


def test_batchnorm_and_layernorm_flops():
    bn = one_op("BatchNormalization", [1, 4, 5, 5], weights=[(4,)] * 4)
    assert bn.nodes[0].flops == 2 * 100  # scale and shift per element
    assert bn.nodes[0].weight_bytes == 4 * 4 * 4
    ln = one_op("LayerNormalization", [2, 3, 8], weights=[(8,), (8,)], opset=17, axis=-1)
    assert ln.nodes[0].flops == 8 * 48


def test_elementwise_nary_flops():
    m = model(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Sum", ["a", "b", "s"], ["y"])],
        [vi("a", [1, 4, 5, 5]), vi("b", [1, 4, 5, 5])], [vi("y", None)],
    )
    g = load_graph(m)
    assert [n.flops for n in g.nodes] == [100, 200]  # (inputs - 1) per output element
    assert g.total_flops == 300


def test_op_flops_is_positional_with_omitted_inputs():
    # QLinearConv: x, x_scale, x_zero_point, w, ...: the weight is input 3
    flops = op_flops("QLinearConv", {}, [(1, 4, 8, 8), (), (), (8, 4, 3, 3), (), (), (), ()], [(1, 8, 6, 6)])
    assert flops == 2 * (8 * 36) * (4 * 9)
    # an omitted optional input keeps its slot: Gemm without C
    assert op_flops("Gemm", {}, [(3, 5), (5, 4), ()], [(3, 4)]) == 120


def test_light_zoo_conv_flops_match_textbook_formula(zoo_graph):
    """Every Conv of every zoo model: FLOPs = 2 x N x C_out x H_out x W_out x C_in/group x kH x kW,
    with H_out from the attributes (checks shape inference as well as the FLOP rule)."""
    for name in ZOO:
        g = zoo_graph(name)
        for n in g.nodes:
            if n.op_type != "Conv":
                continue
            (nb, cin, h, w), (wshape, *_) = n.input_shapes[0], n.weight_shapes
            k = n.attributes.get("kernel_shape", wshape[2:])
            s = n.attributes.get("strides", (1, 1))
            p = n.attributes.get("pads", (0, 0, 0, 0))
            groups = n.attributes.get("group", 1)
            ho = (h + p[0] + p[2] - k[0]) // s[0] + 1
            wo = (w + p[1] + p[3] - k[1]) // s[1] + 1
            assert n.output_shapes[0] == (nb, wshape[0], ho, wo), (name, n.name)
            assert n.flops == 2 * nb * wshape[0] * ho * wo * (cin // groups) * k[0] * k[1], (name, n.name)


def test_edges_and_bytes_are_consistent(zoo_graph):
    for name in ("googlenet", "resnet50", "squeezenet"):
        g = zoo_graph(name)
        for e in g.edges:
            assert e.src < e.dst  # topological order
            assert e.tensor in g.nodes[e.src].outputs and e.tensor in g.nodes[e.dst].inputs
            assert e.size_bytes == g.tensors[e.tensor].size_bytes
        for n in g.nodes:
            assert n.index == g.index[n.name]
            assert n.bytes_written == sum(g.tensors[t].size_bytes for t in n.outputs)
            assert n.bytes_read == sum(g.tensors[t].size_bytes for t in n.inputs) + n.weight_bytes
        assert set(g.output_producers) == {t.name for t in g.outputs}


# ---------------------------------------------------------------------------------
# loader edge cases


def test_omitted_optional_inputs():
    nodes = [
        helper.make_node("Constant", [], ["mx"], value_float=6.0),
        helper.make_node("Clip", ["x", "", "mx"], ["c"]),
        helper.make_node("Constant", [], ["sc"], value_floats=[1.0, 1.0, 2.0, 2.0]),
        helper.make_node("Resize", ["c", "", "sc"], ["y"], mode="nearest"),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Clip", "Resize"]
    assert g.nodes[0].onnx_inputs == ("x", "", "mx") and g.nodes[0].weights == ("mx",)
    assert g.nodes[1].output_shapes == ((1, 2, 8, 8),)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32) * 10
    (y,) = run_ort(g, {"x": x})
    assert np.allclose(y, np.minimum(x, 6.0).repeat(2, axis=2).repeat(2, axis=3))


def test_split_with_several_outputs():
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b"], axis=1),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Add", ["ra", "b"], ["y"]),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)], opset=11))
    assert g.nodes[0].outputs == ("a", "b") and g.nodes[0].output_shapes == ((1, 2), (1, 2))
    assert sorted((e.src, e.dst, e.tensor) for e in g.edges) == [(0, 1, "a"), (0, 2, "b"), (1, 2, "ra")]
    assert g.nodes[0].bytes_written == 16


def test_dropout_is_elided_unless_its_mask_is_used():
    plain = [helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Relu", ["d"], ["y"])]
    g = load_graph(model(plain, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Relu"] and g.nodes[0].inputs == ("x",)
    used = [
        helper.make_node("Dropout", ["x"], ["d", "mask"]),
        helper.make_node("Cast", ["mask"], ["mf"], to=F),
        helper.make_node("Mul", ["d", "mf"], ["y"]),
    ]
    g = load_graph(model(used, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Dropout", "Cast", "Mul"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    assert np.array_equal(run_ort(g, {"x": x})[0], x)  # inference: mask all true


def test_identity_is_elided_but_kept_as_graph_output():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Relu", "Identity"]
    assert g.nodes[0].inputs == ("x",)
    assert g.output_producers == {"y": 1}


def test_graph_output_that_is_an_input_is_a_clear_error():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", None), vi("x", None)])
    with pytest.raises(GraphLoadError, match="graph output 'x' is a graph input"):
        load_graph(m)


def test_duplicate_and_missing_node_names_become_unique():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="n"),
        helper.make_node("Relu", ["a"], ["b"], name="n"),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"], name="Relu_0"),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)]))
    names = [n.name for n in g.nodes]
    assert names[0] == "n" and names[3] == "Relu_0"
    assert len(set(names)) == 4
    assert all(p.name == n for p, n in zip(g._protos, names, strict=True))


def test_custom_domain_and_unknown_ops_are_clear_errors():
    custom = model([helper.make_node("Foo", ["x"], ["y"], domain="my.ops")], [vi("x", [1, 4])], [vi("y", None)])
    with pytest.raises(GraphLoadError, match="'Foo' of custom domain 'my.ops'"):
        load_graph(custom)
    unknown = model([helper.make_node("FooBar", ["x"], ["y"], name="odd")], [vi("x", [1, 4])], [vi("y", None)])
    with pytest.raises(GraphLoadError, match="unknown op type 'FooBar' in node 'odd'"):
        load_graph(unknown)
    too_new = model([helper.make_node("Gelu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", None)], opset=17)
    with pytest.raises(GraphLoadError, match="'Gelu'.*opset 17.*added in opset 20"):
        load_graph(too_new)


def test_opset9_batchnorm_with_training_outputs():
    inits = [const(n, [4], 1.0) for n in ("s", "b", "m", "v")]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "om", "ov", "sm", "sv"])
    g = load_graph(model([bn, helper.make_node("Relu", ["y"], ["z"])], [vi("x", [1, 4, 3, 3])], [vi("z", None)], inits, opset=9, ir=4))
    assert g.nodes[0].outputs == ("y",)  # unused optional outputs dropped
    assert g.nodes[0].bytes_written == 4 * 9 * 4
    x = np.ones((1, 4, 3, 3), np.float32)
    assert np.allclose(run_ort(g, {"x": x})[0], 1.0, atol=1e-4)  # (1-1)/sqrt(1)+1


def test_maxpool_unused_indices_output_dropped():
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2]), helper.make_node("Relu", ["y"], ["z"])]
    g = load_graph(model(nodes, [vi("x", [1, 4, 4, 4])], [vi("z", None)]))
    assert g.nodes[0].outputs == ("y",)


@pytest.mark.parametrize(("attr", "value", "expected"), [
    ("value_float", 2.0, np.float32(2.0)),
    ("value_floats", [1.0, 2.0, 3.0, 4.0], np.array([1, 2, 3, 4], np.float32)),
    ("value_int", 3, np.int64(3)),
    ("value_ints", [1, 2, 3, 4], np.array([1, 2, 3, 4], np.int64)),
    ("value", numpy_helper.from_array(np.full((1, 4), 5.0, np.float32)), np.full((1, 4), 5.0, np.float32)),
])
def test_constant_attribute_kinds(attr, value, expected):
    nodes = [
        helper.make_node("Constant", [], ["c"], **{attr: value}),
        helper.make_node("Cast", ["c"], ["cf"], to=F),  # a constant chain: folded too
        helper.make_node("Add", ["x", "cf"], ["y"]),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Add"] and g.nodes[0].weights == ("cf",)
    assert np.array_equal(g.const_value("cf"), np.asarray(expected, np.float32))
    x = np.zeros((1, 4), np.float32)
    assert np.allclose(run_ort(g, {"x": x})[0], np.broadcast_to(expected, (1, 4)))


def test_ir3_initializers_listed_as_inputs_and_unused_inputs():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    m = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [1, 4]), vi("w", [4, 4]), vi("unused", ["N", 3])], [vi("y", None)], [w], opset=8, ir=3,
    )
    g = load_graph(m)  # the unused input's dynamic dimension needs no value
    assert [t.name for t in g.inputs] == ["x"]
    assert g.nodes[0].weights == ("w",) and g.nodes[0].flops == 2 * 4 * 4
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    assert np.array_equal(run_ort(g, {"x": x})[0], x)


def test_unsorted_nodes_are_sorted():
    nodes = [
        helper.make_node("Relu", ["i"], ["y"], name="last"),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Relu", ["x"], ["r"], name="first"),
    ]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.name for n in g.nodes] == ["first", "last"]
    assert g.nodes[1].inputs == ("r",)


def test_dangling_and_cyclic_graphs_are_clear_errors():
    m = model([helper.make_node("Relu", ["q"], ["y"], name="r")], [vi("x", [1, 4])], [vi("y", None)])
    with pytest.raises(GraphLoadError, match="node 'r' reads 'q', which nothing produces"):
        load_graph(m)
    cyc = model([helper.make_node("Add", ["x", "b"], ["a"], name="p"), helper.make_node("Relu", ["a"], ["b"], name="q")],
                [vi("x", [1, 4])], [vi("b", None)])
    with pytest.raises(GraphLoadError, match="cycle"):
        load_graph(cyc)


def test_dead_ops_are_pruned():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["dead"])]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)]))
    assert [n.op_type for n in g.nodes] == ["Relu"]


def test_dynamic_dimension_needs_a_value():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 4])], [vi("y", None)])
    with pytest.raises(GraphLoadError, match=r"graph input 'x' has a dynamic shape \?x4; give it with --input-shape x=1x4"):
        load_graph(m)
    assert load_graph(m, input_shapes={"x": (3, 4)}).nodes[0].output_shapes == ((3, 4),)
    assert load_graph(m, batch_size=5).inputs[0].shape == (5, 4)
    with pytest.raises(GraphLoadError, match="names no graph input: nope"):
        load_graph(m, input_shapes={"nope": (1, 4)})
    with pytest.raises(GraphLoadError, match="rank 3"):
        load_graph(m, input_shapes={"x": (1, 4, 1)})
    with pytest.raises(GraphLoadError, match="dim 1 to 5"):
        load_graph(m, input_shapes={"x": (1, 5)})


def test_shape_arithmetic_on_known_shapes_folds_away():
    """Shape (with start, opset 15) and Size of a tensor whose shape is fixed by
    ``input_shapes`` become constants, and so does the arithmetic on them."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Size", ["r"], ["n"]),
        helper.make_node("Div", ["n", "twelve"], ["b"]),
        helper.make_node("Unsqueeze", ["b", "zero"], ["b1"]),
        helper.make_node("Shape", ["r"], ["tail"], start=1),
        helper.make_node("Concat", ["b1", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    m = model(nodes, [vi("x", ["N", 3, 4])], [vi("y", None)], [i64("twelve", 12), i64("zero", [0])], opset=15)
    g = load_graph(m, input_shapes={"x": (2, 3, 4)})
    assert [n.op_type for n in g.nodes] == ["Relu", "Reshape"]
    assert g.nodes[1].output_shapes == ((2, 3, 4),)
    assert np.array_equal(g.const_value("target"), [2, 3, 4])
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    assert np.allclose(run_ort(g, {"x": x})[0], np.maximum(x, 0))


def test_training_mode_dropout_is_kept():
    on = numpy_helper.from_array(np.array(True), "on")
    nodes = [helper.make_node("Dropout", ["x", "", "on"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)], [on]))
    assert [n.op_type for n in g.nodes] == ["Dropout", "Relu"]
    off = numpy_helper.from_array(np.array(False), "on")
    g = load_graph(model(nodes, [vi("x", [1, 4])], [vi("y", None)], [off]))
    assert [n.op_type for n in g.nodes] == ["Relu"]


def test_uninferable_shapes_are_clear_errors():
    # Reshape to a shape that is only known at run time
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [vi("x", [1, 4]), vi("s", [2], TensorProto.INT64)], [vi("y", None)])
    with pytest.raises(GraphLoadError, match="shape of tensor 'y' .*cannot be inferred"):
        load_graph(m)
    bad = model([helper.make_node("Add", ["a", "b"], ["y"])], [vi("a", [1, 4]), vi("b", [1, 3])], [vi("y", None)])
    with pytest.raises(GraphLoadError, match="shape inference failed"):
        load_graph(bad)


def test_content_hash_and_signature():
    a = one_op("Relu", [1, 4])
    b = one_op("Relu", [1, 4])
    c = one_op("Relu", [1, 5])
    assert a.content_hash == b.content_hash != c.content_hash
    assert a.nodes[0].signature != c.nodes[0].signature


# ---------------------------------------------------------------------------------
# ONNX files exported from PyTorch


class SmallNet(torch.nn.Module):
    """The issue's "small PyTorch module in the test": conv, pool, residual add, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = torch.nn.functional.max_pool2d(y + torch.relu(self.conv2(y)), 2)
        return self.fc(torch.flatten(y, 1))


def _export_and_check(module: torch.nn.Module, x: torch.Tensor, path, opset=None, dynamic_batch=False, **load_kw) -> OpGraph:
    """Export, load, and check ORT on the rebuilt model reproduces PyTorch."""
    torch.manual_seed(0)
    models.export(module, x, path, opset=opset, dynamic_batch=dynamic_batch)
    g = load_graph(path, **load_kw)
    xin = x if "input_shapes" not in load_kw else torch.randn(*load_kw["input_shapes"]["x"])
    with torch.no_grad():
        ref = module(xin).numpy()
    (y,) = run_ort(g, {"x": xin.numpy()})
    assert y.shape == ref.shape
    assert np.allclose(y, ref, atol=1e-4, rtol=1e-3)
    for n in g.nodes:
        assert all(d > 0 for s in n.input_shapes + n.output_shapes for d in s), n.name
    return g


def test_small_pytorch_module_loads(tmp_path):
    torch.manual_seed(0)
    g = _export_and_check(SmallNet(), torch.randn(1, 3, 8, 8), tmp_path / "small.onnx")
    assert Counter(n.op_type for n in g.nodes) == Counter({"Conv": 2, "Relu": 2, "Add": 1, "MaxPool": 1, "Flatten": 1, "Gemm": 1})
    conv1 = g.nodes[0]
    assert conv1.flops == 2 * 6 * 64 * 3 * 9
    gemm = next(n for n in g.nodes if n.op_type == "Gemm")
    assert gemm.flops == 2 * 5 * 96


CASES = {
    "mobilenet": (models.MobileNetV2Like, (1, 3, 32, 32)),
    "transformer": (models.TinyTransformer, (1, 8, 32)),
    "unet": (models.TinyUNet, (1, 3, 32, 32)),
}


@pytest.mark.parametrize("opset", [11, 13, 17, None], ids=lambda o: f"opset{o or 'default'}")
@pytest.mark.parametrize("case", CASES)
def test_pytorch_exports_load_at_several_opsets(case, opset, tmp_path):
    cls, shape = CASES[case]
    torch.manual_seed(0)
    g = _export_and_check(cls(), torch.randn(*shape), tmp_path / f"{case}.onnx", opset=opset)
    types = Counter(n.op_type for n in g.nodes)
    if case == "mobilenet":
        depthwise = [n for n in g.nodes if n.op_type == "Conv" and n.attributes.get("group", 1) == n.input_shapes[0][1] > 1]
        assert len(depthwise) == 4 and types["Clip"] == 9 and types["Add"] == 2  # BN folded into Conv
    elif case == "transformer":
        assert types["MatMul"] == 16 and types["Softmax"] == 2 and types["Transpose"] == 8
        assert types["LayerNormalization"] == 5 or types["ReduceMean"] == 10  # fused from opset 17 on
        assert types["Gelu"] == 2 or types["Erf"] == 2  # Gelu from opset 20 on
        # per layer q @ k^T and att @ v: 4 heads of 8x8 outputs, 8 MACs each (T = head dim = 8)
        heads = [n for n in g.nodes if n.op_type == "MatMul" and len(n.output_shapes[0]) == 4]
        assert len(heads) == 4 and all(n.output_shapes == ((1, 4, 8, 8),) and n.flops == 2 * (4 * 8 * 8) * 8 for n in heads)
        assert not any(n.weights for n in heads)  # both operands are activations
    else:
        assert types["ConvTranspose"] == 1 and types["Resize"] == 1 and types["Concat"] == 2
        up = next(n for n in g.nodes if n.op_type == "ConvTranspose")
        assert up.output_shapes == ((1, 16, 16, 16),) and up.flops == 2 * (32 * 8 * 8) * (16 * 4)


def test_opset9_export_loads(tmp_path):
    # opset 9 decomposes LayerNorm and GELU; Upsample replaces Resize
    torch.manual_seed(0)
    g = _export_and_check(models.TinyTransformer(), torch.randn(1, 8, 32), tmp_path / "t9.onnx", opset=9)
    assert g.opset_imports == (("", 9),)
    torch.manual_seed(0)
    g = load_graph(models.export(models.TinyUNet(), torch.randn(1, 3, 32, 32), tmp_path / "u9.onnx", opset=9))
    assert "Upsample" in {n.op_type for n in g.nodes}


@pytest.mark.parametrize("case", ["mobilenet", "transformer"])
def test_dynamic_batch_export(case, tmp_path):
    cls, shape = CASES[case]
    torch.manual_seed(0)
    module = cls()
    path = models.export(module, torch.randn(*shape), tmp_path / "dyn.onnx", dynamic_batch=True)
    with pytest.raises(GraphLoadError, match=r"graph input 'x' has a dynamic shape \?x.*--input-shape x=1x"):
        load_graph(path)
    static = _export_and_check(module, torch.randn(*shape), tmp_path / "static.onnx")
    batched = (3, *shape[1:])
    g = _export_and_check(module, torch.randn(*shape), tmp_path / "dyn.onnx", dynamic_batch=True, input_shapes={"x": batched})
    # the Shape -> Gather -> Concat arithmetic of dynamic exports folds away
    assert not {"Shape", "Gather", "Unsqueeze"} & {n.op_type for n in g.nodes}
    assert [n.op_type for n in g.nodes] == [n.op_type for n in static.nodes]
    assert math.isclose(g.total_flops, 3 * static.total_flops, rel_tol=0.01)
    assert load_graph(path, batch_size=2).inputs[0].shape == (2, *shape[1:])


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_light_models_converted_to_newer_opsets_load_the_same(zoo_graph, opset):
    from onnx import version_converter

    for name in ("squeezenet", "shufflenet"):  # opset 9 originals
        converted = version_converter.convert_version(onnx.load(str(ZOO[name].source())), opset)
        g = load_graph(converted, name=name, synthesize_weights=True)
        ref = zoo_graph(name)
        assert dict(g.opset_imports)[""] == opset
        # from opset 13 the converter keeps the old Softmax semantics on SqueezeNet's 4-D
        # logits with Shape -> Flatten -> Softmax -> Reshape; the Shape folds away
        extra = Counter(n.op_type for n in g.nodes) - Counter(n.op_type for n in ref.nodes)
        assert extra == (Counter({"Flatten": 1, "Reshape": 1}) if opset >= 13 and name == "squeezenet" else Counter())
        assert not Counter(n.op_type for n in ref.nodes) - Counter(n.op_type for n in g.nodes)
        assert g.total_flops == ref.total_flops
        assert [t.shape for t in g.outputs] == [t.shape for t in ref.outputs]


def test_zoo_onnx_model_round_trip_runs(zoo_graph):
    g = zoo_graph("squeezenet")
    m = g.onnx_model()
    onnx.checker.check_model(m)
    (y,) = run_ort(g, random_input(g))
    assert y.shape == g.outputs[0].shape and np.isfinite(y).all()
    again = load_graph(m, name="squeezenet")
    assert [n.signature for n in again.nodes] == [n.signature for n in g.nodes]
