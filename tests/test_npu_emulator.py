"""NPU emulator: hand-computed cycles and bytes, tiling, fusion rules, invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph, OpNode
from partitiontuner.onnx_loader import load_graph
from partitiontuner.platform import NpuConfig, load_platform
from partitiontuner.profiling.npu_emulator import (
    NpuCost,
    array_utilisation,
    group_cost,
    group_latency_us,
    op_cost,
    op_latency_us,
    peak_macs_per_us,
)

BIG = dict(input_buffer_kib=1024.0, weight_buffer_kib=1024.0, acc_buffer_kib=1024.0)
A16 = NpuConfig(rows=16, cols=16, clock_mhz=100.0, dram_bandwidth_gbps=1.0, vector_lanes=16, **BIG)
A32 = NpuConfig(rows=32, cols=32, clock_mhz=100.0, dram_bandwidth_gbps=1.0, vector_lanes=16, **BIG)
CPU_NPU = load_platform("cpu-npu").device("npu").npu
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------
# tiny real ONNX models


def _graph(nodes, inputs: dict[str, tuple[int, ...]], outputs: list[str],
           weights: dict[str, tuple[int, ...]] | None = None) -> OpGraph:
    inits = [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in (weights or {}).items()]
    g = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_graph(model)


def _conv_node(x: str, w: str, y: str, k: int, stride: int = 1, group: int = 1, bias: str | None = None) -> onnx.NodeProto:
    ins = [x, w] + ([bias] if bias else [])
    return helper.make_node("Conv", ins, [y], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)


def _conv(cin: int, cout: int, k: int, h: int, *, stride: int = 1, group: int = 1, bias: bool = False, batch: int = 1) -> OpNode:
    weights = {"w": (cout, cin // group, k, k)}
    if bias:
        weights["b"] = (cout,)
    g = _graph([_conv_node("x", "w", "y", k, stride, group, "b" if bias else None)], {"x": (batch, cin, h, h)}, ["y"], weights)
    return g.nodes[0]


def _gemm(m: int, kred: int, nout: int, *, bias: bool = True) -> OpNode:
    weights = {"B": (nout, kred)}
    ins = ["A", "B"]
    if bias:
        weights["C"] = (nout,)
        ins.append("C")
    return _graph([helper.make_node("Gemm", ins, ["Y"], transB=1)], {"A": (m, kred)}, ["Y"], weights).nodes[0]


def _unary(op_type: str, shape: tuple[int, ...], **attrs) -> OpNode:
    return _graph([helper.make_node(op_type, ["x"], ["y"], **attrs)], {"x": shape}, ["y"]).nodes[0]


# ---------------------------------------------------------------------------------
# hand-computed cycles and bytes


def test_conv3x3_cycles_on_16x16_and_32x32_arrays():
    op = _conv(16, 32, 3, 8, bias=True)  # 1x16x8x8 -> 1x32x8x8, pads 1
    # R*S*C = 3*3*16 = 144 reduction rows, K = 32 output channels, N*OH*OW = 64 pixels
    # 16x16: ceil(144/16)=9 * ceil(32/16)=2 = 18 folds * (2*16 + 16 + 64 - 2 = 110) = 1980
    # 32x32: ceil(144/32)=5 * ceil(32/32)=1 = 5 folds * (2*32 + 32 + 64 - 2 = 158) = 790
    assert op_cost(op, A16).compute_cycles == 1980
    assert op_cost(op, A32).compute_cycles == 790
    # bytes: input 16*64 + weights 32*16*9 + output 32*64 (int8) + bias 32*4 (int32)
    cost = op_cost(op, A16)
    assert cost.dram_bytes == 1024 + 4608 + 2048 + 128 == 7808
    assert cost.compute_us == pytest.approx(19.8)  # 1980 cycles at 100 MHz
    assert cost.memory_us == pytest.approx(7.808)  # 7808 B at 1 GB/s = 1000 B/us
    assert cost.latency_us == pytest.approx(19.8) == op_latency_us(op, A16)


def test_gemm_cycles_on_16x16_and_32x32_arrays():
    op = _gemm(4, 40, 24)  # (4x40) @ (40x24) with B stored transposed, bias 24
    # 16x16: ceil(40/16)=3 * ceil(24/16)=2 = 6 folds * (32 + 16 + 4 - 2 = 50) = 300
    # 32x32: ceil(40/32)=2 * ceil(24/32)=1 = 2 folds * (64 + 32 + 4 - 2 = 98) = 196
    assert op_cost(op, A16).compute_cycles == 300
    assert op_cost(op, A32).compute_cycles == 196
    # A 4*40 + B 40*24 + Y 4*24 + C 24*4
    assert op_cost(op, A16).dram_bytes == 160 + 960 + 96 + 96


def test_strided_grouped_and_batched_shapes():
    # 7x7 stride 2 on 3x32x32 -> 8x16x16: ceil(147/16)=10 * ceil(8/16)=1 * (48 + 256 - 2)
    assert op_cost(_conv(3, 8, 7, 32, stride=2), A16).compute_cycles == 10 * 302
    # group=2, 32->32 3x3 on 8x8: per group C=16, K=16: 2 * ceil(144/16)=9 * 1 * (48 + 64 - 2)
    assert op_cost(_conv(32, 32, 3, 8, group=2), A16).compute_cycles == 2 * 9 * 110
    # batch 2 doubles the pixels streamed per fold: 18 folds * (48 + 128 - 2)
    assert op_cost(_conv(16, 32, 3, 8, batch=2), A16).compute_cycles == 18 * 174
    # batched MatMul of two activations (3x5x20) @ (3x20x12): 3 * ceil(20/16)=2 * 1 * (48 + 5 - 2)
    g = _graph([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": (3, 5, 20), "b": (3, 20, 12)}, ["y"])
    cost = op_cost(g.nodes[0], A16)
    assert cost.compute_cycles == 3 * 2 * 51
    assert cost.dram_bytes == 300 + 720 + 180


def test_depthwise_and_grouped_convs_use_the_array_worse_than_a_dense_conv_of_the_same_macs():
    # the same 5.76 M MACs three ways: dense 16->16 3x3 on 50x50 (one GEMM, reduction
    # 144, 16 outputs); grouped 32->32, g=4, on 50x50 (four GEMMs of reduction 72, 8
    # outputs); depthwise 16 channels on 200x200 (sixteen GEMMs of reduction 9, 1 output)
    dense = _conv(16, 16, 3, 50)
    grouped = _conv(32, 32, 3, 50, group=4)
    depthwise = _conv(16, 16, 3, 200, group=16)
    assert dense.flops == grouped.flops == depthwise.flops
    u = {name: array_utilisation(op, CPU_NPU) for name, op in
         (("dense", dense), ("grouped", grouped), ("depthwise", depthwise))}
    assert 0 < u["depthwise"] < u["grouped"] < u["dense"] <= 1
    assert u["depthwise"] < 0.01  # 9 of 1,024 MAC slots busy
    # depthwise pays for it in time too, at the same MACs
    assert op_latency_us(depthwise, CPU_NPU) > 10 * op_latency_us(dense, CPU_NPU)
    assert array_utilisation(_unary("Relu", (1, 10)), CPU_NPU) is None


@pytest.mark.parametrize("preset", ["cpu-npu", "cpu-2npu", "big-little-npu"])
def test_presets_run_depthwise_convs_on_the_npu_and_only_zcu102_vta_refuses_them(preset):
    depthwise = _conv(16, 16, 3, 8, group=16)
    npus = [d for d in load_platform(preset).devices if d.kind == "npu"]
    assert npus and all(d.can_run(depthwise) for d in npus)
    vta = load_platform("zcu102-vta").device("npu")
    assert "depthwise Conv (group=16)" in vta.unsupported_reason(depthwise)


def test_vector_pool_and_copy_ops():
    shape = (1, 8, 10, 10)  # 800 elements, 16 lanes -> 50 steps
    assert op_cost(_unary("Relu", shape), A16).compute_cycles == 50
    assert op_cost(_unary("LeakyRelu", shape, alpha=0.1), A16).compute_cycles == 100
    pool = op_cost(_unary("MaxPool", shape, kernel_shape=[2, 2], strides=[2, 2]), A16)
    assert pool.compute_cycles == math.ceil(8 * 25 / 16) * 4 and pool.dram_bytes == 800 + 200
    gap = op_cost(_unary("GlobalAveragePool", shape), A16)
    assert gap.compute_cycles == 1 * 100 and gap.dram_bytes == 800 + 8
    bn = _graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], {"x": shape}, ["y"],
                {p: (8,) for p in "sbmv"}).nodes[0]
    # 2 vector ops per element; scale and shift folded: 2 * 8 channels * 4 bytes
    assert op_cost(bn, A16).compute_cycles == 100 and op_cost(bn, A16).dram_bytes == 800 + 800 + 64
    add3 = _graph([helper.make_node("Sum", ["a", "b", "c"], ["y"])], {t: shape for t in "abc"}, ["y"]).nodes[0]
    assert op_cost(add3, A16).compute_cycles == 100 and op_cost(add3, A16).dram_bytes == 4 * 800
    cat = _graph([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], {"a": shape, "b": shape}, ["y"]).nodes[0]
    assert op_cost(cat, A16) == NpuCost(0, 3200, 0.0, 3.2)


def test_views_are_free():
    for op in (_reshape((1, 8, 4, 4), (1, 128)), _unary("Flatten", (1, 8, 4, 4))):
        assert op_cost(op, A16) == NpuCost(0, 0, 0.0, 0.0)


def _reshape(shape: tuple[int, ...], to: tuple[int, ...]) -> OpNode:
    s = numpy_helper.from_array(np.asarray(to, np.int64), "s")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[s])
    return load_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])).nodes[0]


def test_unmodelled_op_types_give_none():
    softmax = _unary("Softmax", (1, 10))
    lrn = _unary("LRN", (1, 8, 4, 4), size=3)
    for op in (softmax, lrn, _unary("Transpose", (1, 8, 4, 4), perm=[0, 2, 3, 1])):
        assert op_cost(op, A16) is None and op_latency_us(op, A16) is None
    relu = _unary("Relu", (1, 10))
    g = _graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])], {"x": (1, 10)}, ["y"])
    assert group_cost(g.nodes, A16) is None and group_latency_us(g.nodes, A16) is None
    assert op_cost(relu, A16) is not None


def test_bad_groups_raise_profile_error():
    with pytest.raises(ProfileError, match="empty"):
        group_cost([], A16)
    g = _graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])], {"x": (1, 10)}, ["y"])
    with pytest.raises(ProfileError, match="topological"):
        group_cost(list(reversed(g.nodes)), A16)


# ---------------------------------------------------------------------------------
# memory: bandwidth-bound ops and tiling


def test_memory_bound_ops_cost_bytes_over_bandwidth():
    relu = _unary("Relu", (1, 64, 56, 56))
    cost = op_cost(relu, CPU_NPU)  # 32 lanes at 500 MHz: 6272 cycles = 12.5 us << traffic
    assert cost.compute_us == pytest.approx(200704 / 32 / 500)
    assert cost.latency_us == cost.memory_us == pytest.approx(2 * 200704 / 12800)
    add = _graph([helper.make_node("Add", ["a", "b"], ["y"])], {"a": (1, 256, 28, 28), "b": (1, 256, 28, 28)}, ["y"]).nodes[0]
    assert op_latency_us(add, CPU_NPU) == pytest.approx(3 * 256 * 28 * 28 / 12800)


SMALL = NpuConfig(rows=16, cols=16, clock_mhz=100.0, dram_bandwidth_gbps=1.0,
                  input_buffer_kib=1.0, weight_buffer_kib=1.0, acc_buffer_kib=1.0)


def test_tiling_refetches_take_the_cheaper_loop_order():
    # A = 128x64 = 8192 B (8 input tiles), B = 64x32 = 2048 B (2 weight tiles), both > 1 KiB
    # weights outer: 2048 + 8192*2 = 18432; inputs outer: 8192 + 2048*8 = 24576 -> 18432
    g = _gemm(128, 64, 32, bias=False)
    assert op_cost(g, SMALL).dram_bytes == 18432 + 128 * 32
    # A = 16x64 = 1024 B fits the input buffer: read once, weights once
    assert op_cost(_gemm(16, 64, 32, bias=False), SMALL).dram_bytes == 1024 + 2048 + 16 * 32
    # A = 32x64 = 2048 (2 tiles), B = 64x128 = 8192 (8 tiles):
    # weights outer 8192 + 2048*8 = 24576; inputs outer 2048 + 8192*2 = 18432 -> 18432
    assert op_cost(_gemm(32, 64, 128, bias=False), SMALL).dram_bytes == 18432 + 32 * 128
    # the same rule for Conv: input 8x16x16 = 2048 (2 tiles), weights 64x8x3x3 = 4608 (5 tiles)
    # weights outer 4608 + 2048*5 = 14848; inputs outer 2048 + 4608*2 = 11264 -> 11264
    # (a 64 KiB accumulator buffer holds the partial sums of the 2-pass reduction, 72x16 > 1 KiB)
    conv = _conv(8, 64, 3, 16)
    assert op_cost(conv, replace(SMALL, acc_buffer_kib=64.0)).dram_bytes == 11264 + 64 * 256
    # with 1 KiB they do one round trip: 2 * (2 - 1) * 64*256 outputs * 4 B
    assert op_cost(conv, SMALL).dram_bytes == 11264 + 64 * 256 + 2 * 64 * 256 * 4


def test_split_reductions_spill_partial_sums_only_when_the_accumulators_overflow():
    # Kred = 256: a 256x16 weight column slice = 4096 B needs 4 passes through a 1 KiB
    # weight buffer; M=64 rows x 16 cols x 4 B = 4096 B of partial sums > 1 KiB, so
    # they make 3 round trips: 2 * 3 * (64*16 outputs) * 4 B
    op = _gemm(64, 256, 16, bias=False)
    traffic = min(4096 + 16384 * 4, 16384 + 4096 * 16)  # A 16 KiB (16 tiles), B 4 KiB (4 tiles)
    assert op_cost(op, SMALL).dram_bytes == traffic + 64 * 16 + 2 * 3 * 64 * 16 * 4
    roomy = replace(SMALL, acc_buffer_kib=4.0)  # the 4096 B of partial sums now stay on chip
    assert op_cost(op, roomy).dram_bytes == traffic + 64 * 16


# ---------------------------------------------------------------------------------
# fused groups


def _chain(nodes, inputs, output, weights=None) -> list[OpNode]:
    return list(_graph(nodes, inputs, [output], weights).nodes)


def _sum_latency(ops, cfg) -> float:
    return sum(op_latency_us(o, cfg) for o in ops)


def test_conv_relu_epilogue_is_free():
    ops = _chain([_conv_node("x", "w", "c", 3), helper.make_node("Relu", ["c"], ["y"])],
                 {"x": (1, 64, 56, 56)}, "y", {"w": (64, 64, 3, 3)})
    conv, relu = (op_cost(o, CPU_NPU) for o in ops)
    fused = group_cost(ops, CPU_NPU)
    assert fused.compute_cycles == max(conv.compute_cycles, relu.compute_cycles) == 116280
    assert fused.dram_bytes == conv.dram_bytes == 200704 + 36864 + 200704
    assert fused.latency_us == pytest.approx(conv.latency_us) == pytest.approx(232.56)
    assert fused.latency_us < _sum_latency(ops, CPU_NPU)
    # the conv output is also read outside the group: written once more
    assert group_cost(ops, CPU_NPU, escaping={"c"}).dram_bytes == fused.dram_bytes + 200704


def test_conv_bn_relu_and_add_relu():
    bn_w = {f"bn_{p}": (32,) for p in "sbmv"}
    ops = _chain([_conv_node("x", "w", "c", 3), helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"]),
                  helper.make_node("Relu", ["n"], ["y"])], {"x": (1, 32, 28, 28)}, "y", {"w": (32, 32, 3, 3), **bn_w})
    conv, bn, relu = (op_cost(o, CPU_NPU) for o in ops)
    fused = group_cost(ops, CPU_NPU)
    assert fused.compute_cycles == max(conv.compute_cycles, bn.compute_cycles + relu.compute_cycles)
    assert fused.dram_bytes == conv.dram_bytes + 2 * 32 * 4  # + the folded BN parameters
    assert fused.latency_us <= _sum_latency(ops, CPU_NPU)

    ops = _chain([helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                 {"a": (1, 64, 56, 56), "b": (1, 64, 56, 56)}, "y")
    fused = group_cost(ops, CPU_NPU)
    n = 64 * 56 * 56
    assert fused.dram_bytes == 3 * n  # two inputs in, one output out: the sum never leaves the chip
    assert fused.compute_cycles == 2 * n // 32  # one vector unit does both
    assert fused.latency_us == pytest.approx(3 * n / 12800)
    assert fused.latency_us < _sum_latency(ops, CPU_NPU)


def test_pool_fuses_when_a_band_of_rows_fits_the_input_buffer():
    # ResNet18's stem: conv 7x7/2 -> relu -> maxpool 3x3/2 on 64x112x112
    nodes = [_conv_node("x", "w", "c", 7, 2), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    ops = _chain(nodes, {"x": (1, 3, 224, 224)}, "y", {"w": (64, 3, 7, 7)})
    conv, _, pool = (op_cost(o, CPU_NPU) for o in ops)
    inter = 64 * 112 * 112
    fused = group_cost(ops, CPU_NPU)  # band = 3 rows * 112 * 64 = 21504 B <= 128 KiB
    assert fused.dram_bytes == conv.dram_bytes - inter + 64 * 56 * 56
    assert fused.compute_cycles == conv.compute_cycles  # relu + pool hide under the array
    tight = replace(CPU_NPU, input_buffer_kib=16.0)  # 21504 B no longer fits: the relu output spills
    spilled = group_cost(ops, tight)
    assert spilled.dram_bytes == op_cost(ops[0], tight).dram_bytes - inter + inter + inter + 64 * 56 * 56
    assert spilled.compute_cycles == conv.compute_cycles + pool.compute_cycles
    assert spilled.latency_us <= _sum_latency(ops, tight)


def test_conv_input_stays_on_chip_only_if_it_fits():
    def relu_conv(h):
        return _chain([helper.make_node("Relu", ["x"], ["r"]), _conv_node("r", "w", "y", 3)],
                      {"x": (1, 64, h, h)}, "y", {"w": (64, 64, 3, 3)})

    fits = relu_conv(28)  # 64*28*28 = 50176 B <= 128 KiB input buffer
    sep = sum(op_cost(o, CPU_NPU).dram_bytes for o in fits)
    assert group_cost(fits, CPU_NPU).dram_bytes == sep - 2 * 50176
    spills = relu_conv(56)  # 200704 B > 128 KiB: written and read back, nothing saved
    assert group_cost(spills, CPU_NPU).dram_bytes == sum(op_cost(o, CPU_NPU).dram_bytes for o in spills)
    # an array op always starts a new stage: the relu's cycles add
    assert group_cost(fits, CPU_NPU).compute_cycles == sum(op_cost(o, CPU_NPU).compute_cycles for o in fits)


def test_views_inside_groups_pass_data_through():
    ops = _chain([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
                  helper.make_node("Gemm", ["f", "B"], ["y"], transB=1)],
                 {"x": (1, 64, 2, 2)}, "y", {"B": (10, 256)})
    relu, _, gemm = (op_cost(o, CPU_NPU) for o in ops)
    fused = group_cost(ops, CPU_NPU)
    assert fused.dram_bytes == 256 + 2560 + 10  # relu input, gemm weights, gemm output
    assert fused.compute_cycles == relu.compute_cycles + gemm.compute_cycles
    tail = ops[:2]  # relu -> flatten ending the group: the flattened data is written once
    assert group_cost(tail, CPU_NPU) == op_cost(ops[0], CPU_NPU)


# ---------------------------------------------------------------------------------
# invariants


def _conv_from(params) -> OpNode:
    cin, cout, k, h = params
    return _conv(cin, cout, k, h)


conv_params = st.tuples(st.integers(1, 96), st.integers(1, 96), st.sampled_from([1, 3, 5]), st.integers(1, 40))


@HYP
@given(conv_params, st.sampled_from(range(4)), st.integers(1, 64),
       st.sampled_from([CPU_NPU, A16, SMALL, replace(A16, dram_bandwidth_gbps=0.05)]))
def test_more_macs_is_never_faster(params, dim, grow, cfg):
    bigger = list(params)
    bigger[dim] += 2 * grow if dim == 2 else grow  # keep kernels odd (same padding)
    small, large = op_cost(_conv_from(params), cfg), op_cost(_conv_from(bigger), cfg)
    assert large.compute_cycles >= small.compute_cycles
    assert large.dram_bytes >= small.dram_bytes
    assert large.latency_us >= small.latency_us


@HYP
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 3]), st.integers(0, 2), st.sampled_from([4, 8, 16]))
def test_a_bigger_array_is_never_slower_on_large_layers(cin_f, cout_f, k, h_extra, rows):
    # "large": more than one fold of the smaller array on each axis (R*S*C > rows, K > cols)
    # and at least rows + cols + 2 output pixels per fold, so halving the folds outweighs
    # the longer fill and drain of the doubled array
    small_cfg = NpuConfig(rows=rows, cols=rows, clock_mhz=200.0, dram_bandwidth_gbps=8.0)
    big_cfg = replace(small_cfg, rows=2 * rows, cols=2 * rows, vector_lanes=32)
    cin, cout = rows * cin_f + 1, rows * cout_f + 1
    h = math.isqrt(2 * rows + 2) + 1 + h_extra
    op = _conv(cin, cout, k, h)
    assert op_cost(op, big_cfg).latency_us <= op_cost(op, small_cfg).latency_us


@HYP
@given(conv_params, st.sampled_from([CPU_NPU, A16, A32, SMALL]))
def test_latency_respects_peak_compute_and_unavoidable_traffic(params, cfg):
    op = _conv_from(params)
    cost = op_cost(op, cfg)
    macs = op.flops // 2
    unavoidable = sum(math.prod(s) for s in op.input_shapes + op.weight_shapes + op.output_shapes) * cfg.bytes_per_element
    assert cost.compute_cycles >= macs / (cfg.rows * cfg.cols)
    assert cost.latency_us >= macs / peak_macs_per_us(cfg) * (1 - 1e-12)
    assert cost.dram_bytes >= unavoidable
    assert cost.latency_us >= unavoidable / (cfg.dram_bandwidth_gbps * 1000) * (1 - 1e-12)


@st.composite
def random_chains(draw) -> list[OpNode]:
    """A real ONNX chain of 2-6 NPU-modelled ops over a 1 x C x H x H tensor."""
    c, h = draw(st.integers(1, 24)), draw(st.sampled_from([1, 2, 3, 4, 7, 8, 16]))
    inputs: dict[str, tuple[int, ...]] = {"x": (1, c, h, h)}
    weights: dict[str, tuple[int, ...]] = {}
    nodes, t = [], "x"
    for i in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "relu", "bn", "add", "mul", "clip", "pool", "gap", "concat", "flatten_gemm"]))
        out = f"t{i}"
        if kind == "conv":
            k, cout = draw(st.sampled_from([1, 3])), draw(st.integers(1, 40))
            weights[f"w{i}"] = (cout, c, k, k)
            nodes.append(_conv_node(t, f"w{i}", out, k))
            c = cout
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [t], [out]))
        elif kind == "clip":
            nodes.append(helper.make_node("Clip", [t], [out]))
        elif kind == "bn":
            weights.update({f"bn{i}_{p}": (c,) for p in "sbmv"})
            nodes.append(helper.make_node("BatchNormalization", [t] + [f"bn{i}_{p}" for p in "sbmv"], [out]))
        elif kind == "add":
            inputs[f"in{i}"] = (1, c, h, h)
            nodes.append(helper.make_node("Add", [t, f"in{i}"], [out]))
        elif kind == "mul":
            weights[f"m{i}"] = (c, 1, 1)
            nodes.append(helper.make_node("Mul", [t, f"m{i}"], [out]))
        elif kind == "pool" and h >= 2:
            nodes.append(helper.make_node("MaxPool", [t], [out], kernel_shape=[2, 2], strides=[2, 2]))
            h //= 2
        elif kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [t], [out]))
            h = 1
        elif kind == "concat":
            inputs[f"in{i}"] = (1, 3, h, h)
            nodes.append(helper.make_node("Concat", [f"in{i}", t], [out], axis=1))
            c += 3
        else:  # flatten + gemm ends the chain
            weights[f"g{i}"] = (draw(st.integers(1, 40)), c * h * h)
            nodes += [helper.make_node("Flatten", [t], [f"f{i}"]), helper.make_node("Gemm", [f"f{i}", f"g{i}"], [out], transB=1)]
            t = out
            break
        t = out
    if len(nodes) < 2:
        nodes.append(helper.make_node("Relu", [t], ["y"]))
        t = "y"
    return list(_graph(nodes, inputs, [t], weights).nodes)


configs = st.builds(
    NpuConfig,
    rows=st.sampled_from([4, 8, 16, 32]), cols=st.sampled_from([4, 8, 16, 32]),
    clock_mhz=st.floats(50, 1000), dram_bandwidth_gbps=st.floats(0.1, 50),
    input_buffer_kib=st.sampled_from([0.25, 1.0, 4.0, 128.0]), weight_buffer_kib=st.sampled_from([0.25, 1.0, 4.0, 256.0]),
    acc_buffer_kib=st.sampled_from([0.25, 4.0, 128.0]), vector_lanes=st.sampled_from([4, 16, 32]),
)


@HYP
@given(random_chains(), configs)
def test_a_fused_group_never_costs_more_than_its_members(ops, cfg):
    for i in range(len(ops)):
        assert group_cost(ops[i:i + 1], cfg) == op_cost(ops[i], cfg)
        for j in range(i + 2, len(ops) + 1):
            sub = ops[i:j]
            fused, parts = group_cost(sub, cfg), [op_cost(o, cfg) for o in sub]
            assert fused.compute_cycles <= sum(p.compute_cycles for p in parts)
            assert fused.dram_bytes <= sum(p.dram_bytes for p in parts)
            assert fused.latency_us <= sum(p.latency_us for p in parts) * (1 + 1e-12)
            macs = sum(o.flops // 2 for o in sub if o.op_type in ("Conv", "Gemm"))
            assert fused.compute_cycles >= macs / (cfg.rows * cfg.cols)


# ---------------------------------------------------------------------------------
# the cpu-npu preset's regime (numbers of the module docstring)

#: one ONNX Runtime thread of the development host (AMD EPYC Zen 4), median us, fixed
#: reference values: ResNet18-like layers as (cin, cout, k, stride, h) -> CPU latency
CPU_REFERENCE_US = {
    (3, 64, 7, 2, 224): 2224.0,
    (64, 64, 3, 1, 56): 2135.0,
    (128, 128, 3, 1, 28): 2008.0,
    (256, 256, 3, 1, 14): 1958.0,
    (64, 256, 1, 1, 56): 1024.0,
}


@pytest.mark.parametrize("layer", sorted(CPU_REFERENCE_US))
def test_cpu_npu_preset_runs_large_convs_5_to_10x_faster_than_the_reference_cpu_thread(layer):
    cin, cout, k, stride, h = layer
    ratio = CPU_REFERENCE_US[layer] / op_latency_us(_conv(cin, cout, k, h, stride=stride), CPU_NPU)
    assert 5.0 <= ratio <= 10.5


def test_cpu_npu_preset_pinned_numbers():
    assert op_latency_us(_conv(3, 64, 7, 224, stride=2), CPU_NPU) == pytest.approx(252.76)
    assert op_latency_us(_conv(64, 64, 3, 56), CPU_NPU) == pytest.approx(232.56)
    # a lone Relu is memory-bound and, with the 25 us dispatch, slower than the CPU's ~27 us
    assert op_latency_us(_unary("Relu", (1, 64, 56, 56)), CPU_NPU) == pytest.approx(31.36)
