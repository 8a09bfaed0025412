"""Analytical emulator of a VTA-like NPU: latency of an op, or of a fused op chain.

One model in one file (a little over 500 lines): the formulas below and the code that
implements them read side by side.

The NPU is a weight-stationary systolic array of ``rows x cols`` int8 MACs (VTA's GEMM
core; SCALE-Sim's ``ws`` dataflow) beside a vector unit of ``vector_lanes`` ALUs, with
three on-chip SRAMs (input, weight, accumulator) fed by DMA from DRAM. Every op runs
quantised to int8, whatever its ONNX dtype (accuracy is not modelled). All parameters
come from the preset's ``npu:`` section (:class:`~partitiontuner.platform.NpuConfig`).

**Latency excludes dispatch.** The numbers returned here are the PU's work only; the
simulator adds the PU's ``dispatch_overhead_us`` once per partition (one place per
fact), so never add it again.

Notation: ``bpe`` = ``bytes_per_element`` (int8 operands and outputs: outputs are
requantised to int8 as they drain), ``abpe`` = ``acc_bytes_per_element`` (int32),
``IB / WB / AB`` = input / weight / accumulator buffer bytes (``*_kib * 1024``),
``numel(T)`` = elements of tensor ``T``.

Compute (cycles; ``compute_us = cycles / clock_mhz``)
    * ``Conv`` (input ``N x C_in x spatial``, weight ``K_tot x C x kernel``, ``group``
      g, ``C = C_in / g``, ``K = K_tot / g``), the SCALE-Sim weight-stationary closed
      form, with the kernel folded into the reduction (im2col)::

          g * ceil(R*S*C / rows) * ceil(K / cols) * (2*rows + cols + N*OH*OW - 2)

      Each of the ``ceil * ceil`` folds loads a ``rows x cols`` weight tile, streams the
      ``N*OH*OW`` output pixels through it and drains (fill + drain = ``2*rows + cols
      - 2`` cycles). ``R*S`` and ``OH*OW`` are products over every spatial axis, so 1-D
      and 3-D convolutions work too.

      Grouped and depthwise convolutions run as ``g`` small GEMMs, one after the
      other, each using only ``min(R*S*C, rows) x min(K, cols)`` of the array: a
      depthwise 3x3 (``C = K = 1``) keeps 9 of 1,024 MACs busy on a 32x32 array, so it
      runs at under 1 % of peak where a dense conv of the same MACs runs near it
      (:func:`array_utilisation`). The presets let the NPU run them at that real,
      poor rate; only a preset whose NPU cannot run them at all (``zcu102-vta``:
      VTA's GEMM core) says ``max_conv_groups: 1``.
    * ``Gemm`` ``(M x Kred) @ (Kred x Nout)`` (``transA`` / ``transB`` honoured) and
      ``MatMul`` (batched: times the broadcast batch ``numel(Y) / (M*Nout)``)::

          ceil(Kred / rows) * ceil(Nout / cols) * (2*rows + cols + M - 2)

    * Element-wise ops on the vector unit: ``ceil(numel(Y) / vector_lanes) * ops``
      with ``ops`` = 1 (Relu), 2 (Clip: min and max; LeakyRelu: multiply and max;
      BatchNormalization: the folded scale and shift), ``inputs - 1`` (Add, Sum, Mul,
      Sub).
    * Pools: ``ceil(numel(Y) / vector_lanes) * prod(kernel)`` (``kernel`` = the whole
      spatial extent for GlobalAveragePool).
    * Concat is a DMA copy (0 cycles); Reshape, Flatten, Squeeze and Unsqueeze are
      free views (0 cycles, 0 bytes).

Memory (bytes; ``memory_us = dram_bytes / (dram_bandwidth_gbps * 1000)``, 1 GB/s =
1,000 bytes/us)
    * Activations and Conv/Gemm/MatMul weights move at ``bpe`` per element; Conv and
      Gemm biases, and the constant operands of vector ops, at ``abpe`` (int32 per-
      channel parameters); BatchNormalization reads ``2 * C * abpe`` (its four
      parameters folded into a scale and a shift).
    * Tiling of Conv / Gemm / MatMul, with ``I`` the streamed operand (the input
      activation, Gemm's A) and ``W`` the stationary one (weights, Gemm's B): if
      ``I <= IB`` or ``W <= WB``, the one that fits stays resident and each operand
      crosses DRAM once: ``I + W``. Otherwise the cheaper of the two loop orders::

          weights outer (stream the input once per weight tile):  W + I * ceil(W / WB)
          inputs outer  (stream the weights once per input tile): I + W * ceil(I / IB)

      Weight tiles split the output channels, so each output finishes inside one tile
      and is written once; input-tile halos (``R - 1`` rows) are ignored.
    * Partial sums: a weight tile holds at least one column slice, ``R*S*C x
      min(cols, K)`` (Gemm: ``Kred x min(cols, Nout)``). If that slice exceeds ``WB``
      the reduction runs in ``n = ceil(slice / WB)`` passes; the int32 partial sums
      stay in the accumulator buffer when one output column slice (``N*OH*OW x
      min(cols, K) x abpe``) fits ``AB``, else they go to DRAM and back between passes:
      ``2 * (n - 1) * numel(Y) * abpe`` extra bytes (only huge fully-connected layers
      at large batch reach this).
    * Element-wise ops and pools: every input read once, the output written once.
      Concat: inputs read and output written (a DRAM-to-DRAM copy).

Latency = ``max(compute_us, memory_us)``: DMA is double-buffered and overlaps the
array (VTA's load / compute / store pipeline).

Fused groups (:func:`group_cost`, a chain in topological order run as one unit)
    A tensor produced and consumed inside the group (an *intermediate*) stays on chip
    when its consumer can take it on chip:

    * an element-wise consumer always can: it works tile by tile as the producer
      drains (Conv-Relu, Conv-BN-Relu, Add-Relu, Mul-Add, ...);
    * a pool can when one band of its input (``kernel_h`` rows of every channel and
      batch item; one row for GlobalAveragePool, which keeps running sums) fits ``IB``;
    * Conv / Gemm / MatMul can when the whole tensor fits the buffer of its role
      (``IB`` for the streamed input, ``WB`` for the stationary operand), since the
      array re-reads it per weight tile;
    * Concat always can (the producer writes straight into its slice of the output);
      a view passes it through.

    Otherwise the intermediate *spills*: written to DRAM once, read back by the
    consumer at the consumer's usual (tiled) cost. An intermediate on chip costs no
    DRAM bytes; an on-chip operand of Conv / Gemm / MatMul is resident, so the other
    operand crosses once. DRAM traffic = external inputs + all weights + final outputs
    (+ spills). Cycles: the array and the vector unit run concurrently, so a stage
    made of an array op and the vector ops that consume its output on chip behind it
    (element-wise and pool epilogues applied to accumulator tiles as they drain) costs
    ``max(array cycles, sum of its vector cycles)``; a vector op that does not consume
    the current stage's output on chip starts a new stage; stages add up. Since the
    group's cycles and bytes never exceed the sums of its members', a fused group is
    never slower than its members run one after the other.

Physical plausibility: cycles >= MACs / (rows * cols) and bytes >= every operand and
output once, so latency >= MACs / (rows * cols * clock) and >= unavoidable bytes /
bandwidth.

What the numbers mean for the presets
    ``cpu-npu`` (32x32 at 500 MHz, 12.8 GB/s; VTA built with BLOCK_IN = BLOCK_OUT =
    32): 1,024 MACs/cycle = 512 GMAC/s peak (1.02 int8 TOPS); ridge point 40 MACs per
    DRAM byte. Against one ONNX Runtime thread of the development host (AMD EPYC Zen 4,
    fp32; ~52 GMAC/s on large convolutions), dispatch overhead excluded:

    ===========================  ========  ========  =====  ==============
    layer (batch 1)              CPU us    NPU us    ratio  NPU bound by
    ===========================  ========  ========  =====  ==============
    conv 3->64 7x7/2, 224x224    2224      252.8     8.8    compute (50 %)
    conv 64->64 3x3, 56x56       2135      232.6     9.2    compute (50 %)
    conv 128->128 3x3, 28x28     2008      252.9     7.9    compute
    conv 256->256 3x3, 14x14     1958      334.1     5.9    compute
    conv 512->512 3x3, 7x7       2124      658.9     3.2    compute (34 %)
    conv 64->256 1x1, 56x56      1024      103.4     9.9    compute
    Relu 1x64x56x56              27        31.4      0.85   memory
    Gemm 512->1000 (batch 1)     33        97.3      0.34   compute (fill)
    ===========================  ========  ========  =====  ==============

    Large convolutions run 6-10x faster on the NPU, as in NEST-C's ZCU102 profiles;
    deep 7x7 layers and batch-1 fully-connected layers waste most of each fold on fill
    and drain (the weight-stationary array streams only ``N*OH*OW`` or ``M`` rows per
    weight tile), and lone element-wise ops are memory-bound: with the 25 us dispatch
    and the transfers they belong on the CPU, so placement is a real trade-off.

    ``zcu102-vta`` (16x16 at 100 MHz, 4 GB/s): 25.6 GMAC/s peak. ResNet18's first conv
    takes 5.0 ms and a 3x3 64->64 conv on 56x56 4.6 ms, against NEST-C's measured
    ~25 ms and ~8 ms on the board: the same order, faster because this model folds the
    kernel into the reduction (im2col) where VTA pads 3 input channels to BLOCK_IN = 16
    and because real VTA stalls on loads and instruction fetch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpNode
from partitiontuner.platform import NpuConfig

#: ops that run on the systolic array
ARRAY_OPS = frozenset({"Conv", "Gemm", "MatMul"})
#: element-wise ops on the vector unit -> vector ops per output element
UNARY_OPS = {"Relu": 1, "Clip": 2, "LeakyRelu": 2, "BatchNormalization": 2}
#: n-ary element-wise ops: ``inputs - 1`` vector ops per output element
NARY_OPS = frozenset({"Add", "Sum", "Mul", "Sub"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})
COPY_OPS = frozenset({"Concat"})
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
#: every op type the emulator can cost (whether a PU runs it is the preset's business)
MODELLED_OPS = ARRAY_OPS | frozenset(UNARY_OPS) | NARY_OPS | POOL_OPS | COPY_OPS | VIEW_OPS

_ARRAY, _VECTOR, _DMA, _VIEW = "array", "vector", "dma", "view"
_Shapes = dict[str, tuple[int, ...]]
_Outputs = tuple[tuple[str, int], ...]
_INPUT, _WEIGHT, _DATA = "input", "weight", "data"


@dataclass(frozen=True)
class NpuCost:
    """What an op or a fused group costs on the NPU, excluding dispatch overhead.

    Attributes:
        compute_cycles: array and vector-unit cycles (concurrent units overlapped).
        dram_bytes: off-chip traffic, tiling re-fetches and spills included.
        compute_us: ``compute_cycles / clock_mhz``.
        memory_us: ``dram_bytes / (dram_bandwidth_gbps * 1000)``.
    """

    compute_cycles: int
    dram_bytes: int
    compute_us: float
    memory_us: float

    @property
    def latency_us(self) -> float:
        """``max(compute_us, memory_us)``: double-buffered DMA overlaps compute."""
        return max(self.compute_us, self.memory_us)


@dataclass(frozen=True)
class _Operand:
    """An activation read by an op; ``role`` picks the buffer it must fit to stay on chip."""

    tensor: str
    size_bytes: int
    role: str  # _INPUT / _WEIGHT (array ops), _DATA (everything else)


@dataclass(frozen=True)
class _Work:
    """One op translated to the machine: unit, cycles, what it reads and writes."""

    op: OpNode
    unit: str
    cycles: int
    operands: tuple[_Operand, ...]  # activation inputs (may come from inside a group)
    outputs: _Outputs  # (tensor, bytes at bpe)
    const_input_bytes: int = 0  # constant streamed operand of an array op (I role)
    const_weight_bytes: int = 0  # constant stationary operand of an array op (W role)
    param_bytes: int = 0  # biases / per-channel parameters, read once
    psum_bytes: int = 0  # partial-sum round trips (array ops)
    band_bytes: int | None = None  # pools: on-chip footprint to consume a streamed input


# ---------------------------------------------------------------------------------
# public API


def op_cost(op: OpNode, cfg: NpuConfig) -> NpuCost | None:
    """Cost of ``op`` run alone on the NPU, or ``None`` if the emulator cannot model it.

    Raises:
        ProfileError: the op's shapes are inconsistent with its type.
    """
    return group_cost((op,), cfg)


def op_latency_us(op: OpNode, cfg: NpuConfig) -> float | None:
    """``op_cost(op, cfg).latency_us`` (dispatch overhead excluded), or ``None``."""
    cost = op_cost(op, cfg)
    return None if cost is None else cost.latency_us


def group_cost(ops: Sequence[OpNode], cfg: NpuConfig, *, escaping: Collection[str] = ()) -> NpuCost | None:
    """Cost of ``ops`` (in topological order) run as one fused unit on the NPU.

    Args:
        ops: the group; a single op gives :func:`op_cost`.
        cfg: the NPU's parameters.
        escaping: tensors produced inside the group that ops outside it also read, so
            they are written to DRAM even when consumed on chip (none for the chains of
            :func:`~partitiontuner.branches.chain_groups`).

    Returns:
        The cost, or ``None`` if some op is of a type the emulator does not model.

    Raises:
        ProfileError: an empty group, or an op whose shapes are inconsistent.
    """
    if not ops:
        raise ProfileError("cannot cost an empty op group on the NPU")
    if any(op.op_type not in MODELLED_OPS for op in ops):
        return None
    works = [_work(op, cfg) for op in ops]
    cycles, dram_bytes = _fuse(works, cfg, frozenset(escaping))
    return NpuCost(
        compute_cycles=cycles,
        dram_bytes=dram_bytes,
        compute_us=cycles / cfg.clock_mhz,
        memory_us=dram_bytes / (cfg.dram_bandwidth_gbps * 1000.0),
    )


def group_latency_us(ops: Sequence[OpNode], cfg: NpuConfig, *, escaping: Collection[str] = ()) -> float | None:
    """``group_cost(ops, cfg).latency_us`` (dispatch overhead excluded), or ``None``."""
    cost = group_cost(ops, cfg, escaping=escaping)
    return None if cost is None else cost.latency_us


def array_utilisation(op: OpNode, cfg: NpuConfig) -> float | None:
    """Fraction of the array's MAC slots doing useful work while ``op`` runs alone:
    ``MACs / (compute_cycles * rows * cols)``; ``None`` for an op off the array.

    Low for small reductions and few output channels (depthwise and grouped
    convolutions, batch-1 fully-connected layers), near 1 for large dense convolutions.
    """
    if op.op_type not in ARRAY_OPS:
        return None
    cost = op_cost(op, cfg)
    if cost is None or cost.compute_cycles == 0:
        return None
    return (op.flops / 2) / (cost.compute_cycles * cfg.rows * cfg.cols)


def peak_macs_per_us(cfg: NpuConfig) -> float:
    """The array's peak: ``rows * cols`` MACs per cycle at ``clock_mhz``."""
    return cfg.rows * cfg.cols * cfg.clock_mhz


# ---------------------------------------------------------------------------------
# one op -> machine work


def _work(op: OpNode, cfg: NpuConfig) -> _Work:
    """Translate one op into its unit, cycles, activation operands, outputs and constants."""
    shapes = dict(zip(op.inputs, op.input_shapes, strict=True))
    shapes.update(zip(op.weights, op.weight_shapes, strict=True))
    consts = set(op.weights)
    outputs = tuple((t, _numel(s) * cfg.bytes_per_element) for t, s in zip(op.outputs, op.output_shapes, strict=True))
    if not outputs:
        raise ProfileError(f"op {op.name!r} ({op.op_type}) has no outputs to cost")
    if op.op_type == "Conv":
        return _conv(op, cfg, shapes, consts, outputs)
    if op.op_type in ("Gemm", "MatMul"):
        return _matmul(op, cfg, shapes, consts, outputs)
    if op.op_type in VIEW_OPS:
        data = op.onnx_inputs[0]
        aliased = () if data in consts else (_Operand(data, _numel(shapes[data]) * cfg.bytes_per_element, _DATA),)
        return _Work(op, _VIEW, 0, aliased, outputs)
    # vector unit and DMA ops: every activation read once, constants are parameters
    acts = tuple(dict.fromkeys(t for t in op.onnx_inputs if t and t not in consts))
    operands = tuple(_Operand(t, _numel(shapes[t]) * cfg.bytes_per_element, _DATA) for t in acts)
    out_numel = _numel(op.output_shapes[0])
    lanes_steps = math.ceil(out_numel / cfg.vector_lanes)
    if op.op_type in COPY_OPS:
        const_bytes = sum(_numel(shapes[w]) * cfg.bytes_per_element for w in dict.fromkeys(op.weights))
        return _Work(op, _DMA, 0, operands, outputs, param_bytes=const_bytes)
    if op.op_type == "BatchNormalization":
        x = shapes[op.onnx_inputs[0]]
        channels = x[1] if len(x) > 1 else 1
        return _Work(op, _VECTOR, lanes_steps * UNARY_OPS[op.op_type], operands, outputs,
                     param_bytes=2 * channels * cfg.acc_bytes_per_element)
    param_bytes = sum(_numel(shapes[w]) * cfg.acc_bytes_per_element for w in dict.fromkeys(op.weights))
    if op.op_type in UNARY_OPS:
        return _Work(op, _VECTOR, lanes_steps * UNARY_OPS[op.op_type], operands, outputs, param_bytes=param_bytes)
    if op.op_type in NARY_OPS:
        arity = sum(1 for t in op.onnx_inputs if t)
        return _Work(op, _VECTOR, lanes_steps * max(1, arity - 1), operands, outputs, param_bytes=param_bytes)
    # pools
    x = shapes[op.onnx_inputs[0]]
    if len(x) < 3:
        raise ProfileError(f"{op.op_type} {op.name!r} needs an N x C x spatial input, got shape {x}")
    if op.op_type == "GlobalAveragePool":
        window, band_rows = _numel(x[2:]), 1
    else:
        kernel = tuple(op.attributes.get("kernel_shape", ()))
        if not kernel:
            raise ProfileError(f"{op.op_type} {op.name!r} has no kernel_shape")
        window, band_rows = _numel(kernel), min(int(kernel[0]), x[2])
    band = _numel(x) // x[2] * band_rows * cfg.bytes_per_element
    return _Work(op, _VECTOR, lanes_steps * window, operands, outputs, param_bytes=param_bytes, band_bytes=band)


def _conv(op: OpNode, cfg: NpuConfig, shapes: _Shapes, consts: set[str], outputs: _Outputs) -> _Work:
    x_name, w_name = op.onnx_inputs[0], op.onnx_inputs[1]
    x, w, y = shapes[x_name], shapes[w_name], op.output_shapes[0]
    groups = int(op.attributes.get("group", 1))
    if len(x) < 3 or len(w) != len(x) or len(y) != len(x) or groups < 1 or w[0] % groups or x[1] != w[1] * groups:
        raise ProfileError(f"Conv {op.name!r}: inconsistent shapes input {x}, weight {w}, output {y}, group {groups}")
    batch, k_per_group, c_per_group = x[0], w[0] // groups, w[1]
    reduction = c_per_group * _numel(w[2:])
    pixels = batch * _numel(y[2:])
    cycles = groups * _fold_cycles(reduction, k_per_group, pixels, cfg)
    bias = op.onnx_inputs[2] if len(op.onnx_inputs) > 2 and op.onnx_inputs[2] else None
    param = _numel(shapes[bias]) * cfg.acc_bytes_per_element if bias else 0
    psum = _psum_bytes(reduction, k_per_group, pixels, _numel(y), cfg)
    return _array_work(op, cfg, shapes, consts, outputs, x_name, w_name, cycles, param, psum)


def _matmul(op: OpNode, cfg: NpuConfig, shapes: _Shapes, consts: set[str], outputs: _Outputs) -> _Work:
    a_name, b_name = op.onnx_inputs[0], op.onnx_inputs[1]
    a, b, y = shapes[a_name], shapes[b_name], op.output_shapes[0]
    if op.op_type == "Gemm":
        if len(a) != 2 or len(b) != 2:
            raise ProfileError(f"Gemm {op.name!r}: A and B must be matrices, got {a} and {b}")
        m, kred = (a[1], a[0]) if op.attributes.get("transA", 0) else (a[0], a[1])
        kb, nout = (b[1], b[0]) if op.attributes.get("transB", 0) else (b[0], b[1])
        batch = 1
    else:
        if not a or not b:
            raise ProfileError(f"MatMul {op.name!r}: operands must have rank >= 1, got {a} and {b}")
        m, kred = (1, a[0]) if len(a) == 1 else (a[-2], a[-1])
        kb, nout = (b[0], 1) if len(b) == 1 else (b[-2], b[-1])
        batch = _numel(y) // max(1, m * nout)
    if kb != kred or batch < 1:
        raise ProfileError(f"{op.op_type} {op.name!r}: operand shapes {a} and {b} do not multiply")
    cycles = batch * _fold_cycles(kred, nout, m, cfg)
    bias = op.onnx_inputs[2] if len(op.onnx_inputs) > 2 and op.onnx_inputs[2] else None
    param = _numel(shapes[bias]) * cfg.acc_bytes_per_element if bias else 0
    psum = batch * _psum_bytes(kred, nout, m, m * nout, cfg)
    return _array_work(op, cfg, shapes, consts, outputs, a_name, b_name, cycles, param, psum)


def _array_work(op: OpNode, cfg: NpuConfig, shapes: _Shapes, consts: set[str], outputs: _Outputs,
                i_name: str, w_name: str, cycles: int, param: int, psum: int) -> _Work:
    """An array op whose streamed operand is ``i_name`` and stationary one ``w_name``."""
    bpe = cfg.bytes_per_element
    i_bytes, w_bytes = _numel(shapes[i_name]) * bpe, _numel(shapes[w_name]) * bpe
    operands = []
    const_i = const_w = 0
    if i_name in consts:
        const_i = i_bytes
    else:
        operands.append(_Operand(i_name, i_bytes, _INPUT))
    if w_name in consts:
        const_w = w_bytes
    else:
        operands.append(_Operand(w_name, w_bytes, _WEIGHT))
    return _Work(op, _ARRAY, cycles, tuple(operands), outputs, const_input_bytes=const_i,
                 const_weight_bytes=const_w, param_bytes=param, psum_bytes=psum)


def _fold_cycles(reduction: int, out_channels: int, pixels: int, cfg: NpuConfig) -> int:
    """SCALE-Sim's weight-stationary closed form for one GEMM ``pixels x reduction x out``."""
    folds = math.ceil(reduction / cfg.rows) * math.ceil(out_channels / cfg.cols)
    return folds * (2 * cfg.rows + cfg.cols + pixels - 2)


def _psum_bytes(reduction: int, out_channels: int, pixels: int, out_numel: int, cfg: NpuConfig) -> int:
    """Partial-sum round trips when one weight column slice does not fit the weight buffer."""
    slice_cols = min(cfg.cols, out_channels)
    passes = math.ceil(reduction * slice_cols * cfg.bytes_per_element / _kib(cfg.weight_buffer_kib))
    if passes <= 1 or pixels * slice_cols * cfg.acc_bytes_per_element <= _kib(cfg.acc_buffer_kib):
        return 0
    return 2 * (passes - 1) * out_numel * cfg.acc_bytes_per_element


# ---------------------------------------------------------------------------------
# a group of ops -> cycles and DRAM bytes


def _fuse(works: list[_Work], cfg: NpuConfig, escaping: frozenset[str]) -> tuple[int, int]:
    """Cycles and DRAM bytes of ``works`` run as one unit (the rules in the module doc)."""
    producer: dict[str, int] = {}
    size: dict[str, int] = {}
    for j, w in enumerate(works):
        for t, b in w.outputs:
            producer.setdefault(t, j)
            size.setdefault(t, b)
    for j, w in enumerate(works):
        for o in w.operands:
            if producer.get(o.tensor, -1) >= j:
                raise ProfileError(f"NPU group is not in topological order: {w.op.name!r} reads "
                                   f"{o.tensor!r} before {works[producer[o.tensor]].op.name!r} writes it")
    consumed: set[str] = {o.tensor for w in works for o in w.operands if o.tensor in producer}

    def on_chip(t: str) -> bool:
        """``t`` is produced inside the group and its data is on chip (views pass through)."""
        if t not in producer:
            return False
        w = works[producer[t]]
        return w.unit != _VIEW or (bool(w.operands) and on_chip(w.operands[0].tensor))

    in_dram: set[str] = set()  # intermediates / outputs that must be written (non-view producers)

    def need_dram(t: str) -> None:
        if t not in producer:
            return  # external: already in DRAM
        w = works[producer[t]]
        if w.unit == _VIEW:  # a view aliases its input's storage
            if w.operands:
                need_dram(w.operands[0].tensor)
            return
        in_dram.add(t)

    read_bytes = 0
    cycles = 0
    stage_array = stage_vector = 0
    stage_tensors: set[str] = set()
    for w in works:
        resident = {o.tensor for o in w.operands if on_chip(o.tensor) and _takes_on_chip(w, o, cfg)}
        for o in w.operands:
            if o.tensor not in resident and w.unit != _VIEW:
                need_dram(o.tensor)
        read_bytes += _read_bytes(w, resident, cfg)
        # stages: an op consuming the current stage's output on chip joins it
        joins = w.unit != _ARRAY and any(t in stage_tensors for t in resident)
        if w.unit == _VIEW:
            joins = any(o.tensor in stage_tensors for o in w.operands)
        if joins:
            stage_vector += w.cycles
            stage_tensors.update(t for t, _ in w.outputs)
        else:
            cycles += max(stage_array, stage_vector)
            stage_array, stage_vector = (w.cycles, 0) if w.unit == _ARRAY else (0, w.cycles)
            stage_tensors = {t for t, _ in w.outputs}
        for t, _ in w.outputs:
            if t not in consumed or t in escaping:
                need_dram(t)
    cycles += max(stage_array, stage_vector)
    write_bytes = sum(size[t] for t in in_dram)
    return cycles, read_bytes + write_bytes


def _takes_on_chip(w: _Work, o: _Operand, cfg: NpuConfig) -> bool:
    """Whether ``w`` can consume operand ``o`` straight from on-chip storage."""
    if w.unit in (_VIEW, _DMA):
        return True
    if w.unit == _ARRAY:
        limit = cfg.input_buffer_kib if o.role == _INPUT else cfg.weight_buffer_kib
        return o.size_bytes <= _kib(limit)
    if w.band_bytes is not None:  # a pool: one band of kernel rows must fit
        return w.band_bytes <= _kib(cfg.input_buffer_kib)
    return True  # element-wise: tile by tile as the producer drains


def _read_bytes(w: _Work, resident: set[str], cfg: NpuConfig) -> int:
    """DRAM bytes ``w`` reads, given which of its activation operands are on chip."""
    if w.unit == _VIEW:
        return 0
    if w.unit != _ARRAY:
        return w.param_bytes + sum(o.size_bytes for o in w.operands if o.tensor not in resident)
    i_bytes, w_bytes = w.const_input_bytes, w.const_weight_bytes
    i_res = w_res = False
    for o in w.operands:
        if o.role == _INPUT:
            i_bytes, i_res = o.size_bytes, o.tensor in resident
        else:
            w_bytes, w_res = o.size_bytes, o.tensor in resident
    return _operand_traffic(i_bytes, w_bytes, i_res, w_res, cfg) + w.param_bytes + w.psum_bytes


def _operand_traffic(i_bytes: int, w_bytes: int, i_res: bool, w_res: bool, cfg: NpuConfig) -> int:
    """DRAM bytes of an array op's two operands under the cheaper tiling loop order."""
    if i_res or w_res:  # one operand on chip: the other streams past it once
        return (0 if i_res else i_bytes) + (0 if w_res else w_bytes)
    ib, wb = _kib(cfg.input_buffer_kib), _kib(cfg.weight_buffer_kib)
    if i_bytes <= ib or w_bytes <= wb:
        return i_bytes + w_bytes
    weights_outer = w_bytes + i_bytes * math.ceil(w_bytes / wb)
    inputs_outer = i_bytes + w_bytes * math.ceil(i_bytes / ib)
    return min(weights_outer, inputs_outer)


def _kib(kib: float) -> int:
    return int(kib * 1024)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if len(shape) else 1
