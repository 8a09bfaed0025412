"""Generated ONNX models in nine graph families, for the training corpus.

:func:`generate_model` builds a real ONNX graph op by op (:class:`_Net` tracks shapes;
weights are ``ConstantOfShape`` fills, so nothing large is stored) in one of
:data:`FAMILIES`:

* ``chain``: VGG/AlexNet-like stacks with LRN, pools and fully-connected heads;
* ``residual``: basic and bottleneck blocks, some grouped;
* ``inception``: 2-4 branch modules;
* ``nas``: NAS-cell-like random cells with separable (depthwise) convolutions, pools
  and adds;
* ``mixer``: MLP-Mixer-like token/channel mixing with Transpose and MatMul;
* ``dense``: densely connected blocks whose layers read the concatenation of all
  earlier ones;
* ``mobile``: MobileNetV2-like inverted residuals with depthwise convolutions;
* ``attention``: transformer encoder layers as PyTorch exports them;
* ``unet``: U-Nets with skip concatenations and up-sampling.

Everything is a pure function of the random generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph

FAMILIES = ("chain", "residual", "inception", "nas", "mixer", "dense", "mobile", "attention", "unet")


class _Net:
    """Builds an ONNX model op by op, tracking shapes (weights as ConstantOfShape fills,
    like ONNX's light zoo models, so nothing large is stored)."""

    def __init__(self, name: str, rng: np.random.Generator, shape: Sequence[int]):
        self.name, self.rng = name, rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shape: dict[str, tuple[int, ...]] = {"x": tuple(shape)}
        self.input_shape = tuple(shape)
        self.count = 0
        self.ops = 0
        self.opset = 13

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def _weight(self, shape: Sequence[int], fill: float) -> str:
        nid = self._id("w")
        self.inits.append(helper.make_tensor(f"{nid}_shape", TensorProto.INT64, [len(shape)], list(shape)))
        self.nodes.append(helper.make_node("ConstantOfShape", [f"{nid}_shape"], [nid],
                                           value=helper.make_tensor("value", TensorProto.FLOAT, [1], [fill])))
        return nid

    def _op(self, op_type: str, inputs: list[str], shape: Sequence[int], **attrs) -> str:
        nid = self._id(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [nid], name=nid, **attrs))
        self.shape[nid] = tuple(shape)
        self.ops += 1
        return nid

    # CNN ops (NCHW)
    def conv(self, x: str, cout: int, k: int, stride: int = 1, groups: int = 1) -> str:
        n, c, h, w = self.shape[x]
        groups = groups if c % groups == 0 and cout % groups == 0 else 1
        wt = self._weight([cout, c // groups, k, k], 0.01)
        oh, ow = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        return self._op("Conv", [x, wt], (n, cout, oh, ow), kernel_shape=[k, k], strides=[stride, stride],
                        pads=[k // 2] * 4, group=groups)

    def bn(self, x: str) -> str:
        c = self.shape[x][1]
        params = [self._weight([c], v) for v in (1.0, 0.0, 0.0, 1.0)]
        return self._op("BatchNormalization", [x, *params], self.shape[x], epsilon=1e-5)

    def act(self, x: str, kind: str = "relu") -> str:
        if kind == "relu":
            return self._op("Relu", [x], self.shape[x])
        if kind == "clip":
            lo, hi = self._const(0.0), self._const(6.0)
            return self._op("Clip", [x, lo, hi], self.shape[x])
        if kind == "leaky":
            return self._op("LeakyRelu", [x], self.shape[x], alpha=0.1)
        s = self._op("Sigmoid", [x], self.shape[x])  # swish: x * sigmoid(x)
        return self._op("Mul", [x, s], self.shape[x])

    def _const(self, v: float) -> str:
        nid = self._id("c")
        self.inits.append(helper.make_tensor(nid, TensorProto.FLOAT, [], [v]))
        return nid

    def pool(self, x: str, kind: str = "MaxPool", k: int = 3, stride: int = 2) -> str:
        n, c, h, w = self.shape[x]
        oh, ow = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        return self._op(kind, [x], (n, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def gap(self, x: str) -> str:
        n, c, _, _ = self.shape[x]
        return self._op("GlobalAveragePool", [x], (n, c, 1, 1))

    def lrn(self, x: str) -> str:
        return self._op("LRN", [x], self.shape[x], size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def add(self, a: str, b: str) -> str:
        return self._op("Add" if self.rng.random() < 0.7 else "Sum", [a, b], self.shape[a])

    def concat(self, xs: list[str], axis: int = 1) -> str:
        shape = list(self.shape[xs[0]])
        shape[axis] = sum(self.shape[x][axis] for x in xs)
        return self._op("Concat", xs, shape, axis=axis)

    def flatten(self, x: str) -> str:
        n = self.shape[x][0]
        return self._op("Flatten", [x], (n, int(np.prod(self.shape[x][1:]))), axis=1)

    def gemm(self, x: str, nout: int) -> str:
        n, f = self.shape[x]
        wt, b = self._weight([nout, f], 0.01), self._weight([nout], 0.0)
        return self._op("Gemm", [x, wt, b], (n, nout), transB=1)

    def softmax(self, x: str) -> str:
        return self._op("Softmax", [x], self.shape[x], axis=-1)

    # token ops (rank 3: batch, tokens, features)
    def matmul(self, x: str, nout: int) -> str:
        *lead, f = self.shape[x]
        wt = self._weight([f, nout], 0.01)
        return self._op("MatMul", [x, wt], (*lead, nout))

    def transpose(self, x: str) -> str:
        b, t, f = self.shape[x]
        return self._op("Transpose", [x], (b, f, t), perm=[0, 2, 1])

    # more ops of exported models (attention, U-Net)
    def linear(self, x: str, nout: int) -> str:
        """A ``Linear`` on a rank-3+ tensor as PyTorch exports it: MatMul, then Add of the bias."""
        y = self.matmul(x, nout)
        return self._op("Add", [y, self._weight([nout], 0.0)], self.shape[y])

    def layernorm(self, x: str) -> str:
        d = self.shape[x][-1]
        self.opset = max(self.opset, 17)
        return self._op("LayerNormalization", [x, self._weight([d], 1.0), self._weight([d], 0.0)], self.shape[x], axis=-1)

    def gelu(self, x: str) -> str:
        self.opset = max(self.opset, 20)
        return self._op("Gelu", [x], self.shape[x])

    def scale(self, x: str, v: float) -> str:
        return self._op("Div" if self.rng.random() < 0.7 else "Mul", [x, self._const(v)], self.shape[x])

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        nid = self._id("shape")
        self.inits.append(helper.make_tensor(nid, TensorProto.INT64, [len(shape)], list(shape)))
        return self._op("Reshape", [x, nid], tuple(shape))

    def permute(self, x: str, perm: Sequence[int]) -> str:
        return self._op("Transpose", [x], tuple(self.shape[x][i] for i in perm), perm=list(perm))

    def matmul2(self, a: str, b: str) -> str:
        """Product of two activations (attention scores, attention-weighted values)."""
        *lead, m, _ = self.shape[a]
        return self._op("MatMul", [a, b], (*lead, m, self.shape[b][-1]))

    def upsample(self, x: str, cout: int) -> str:
        """Double the resolution: ConvTranspose 2x2 / stride 2, or Resize (x2) + 1x1 conv."""
        n, c, h, w = self.shape[x]
        if self.rng.random() < 0.6:
            wt = self._weight([c, cout, 2, 2], 0.01)
            return self._op("ConvTranspose", [x, wt], (n, cout, 2 * h, 2 * w), kernel_shape=[2, 2], strides=[2, 2])
        nid = self._id("scales")
        self.inits.append(helper.make_tensor(nid, TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0]))
        y = self._op("Resize", [x, "", nid], (n, c, 2 * h, 2 * w), mode=str(self.rng.choice(["nearest", "linear"])))
        return self.conv(y, cout, 1)

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shape[o])) for o in outputs],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8 if self.opset <= 17 else 9
        return m


def _head(net: _Net, x: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        x = net.flatten(net.gap(x))
    else:
        if net.shape[x][2] > 7:
            x = net.pool(x, "AveragePool", 3, 2)
        x = net.flatten(x)
    for _ in range(int(rng.integers(0, 3))):
        x = net.act(net.gemm(x, int(rng.choice([256, 512, 1024]))))
    x = net.gemm(x, int(rng.choice([10, 100, 1000])))
    return net.softmax(x) if rng.random() < 0.5 else x


def _stem(net: _Net, rng: np.random.Generator, width: int) -> str:
    x = net.conv("x", width, int(rng.choice([3, 5, 7])), 2)
    if rng.random() < 0.6:
        x = net.bn(x)
    x = net.act(x)
    if rng.random() < 0.7:
        x = net.pool(x)
    return x


def _act_kind(rng: np.random.Generator) -> str:
    return str(rng.choice(["relu", "relu", "relu", "clip", "leaky", "swish"]))


def _chain(net: _Net, rng: np.random.Generator, target: int) -> str:
    x = _stem(net, rng, int(rng.choice([32, 64, 96])))
    use_bn, kind = rng.random() < 0.5, _act_kind(rng)
    c = net.shape[x][1]
    while net.ops < target - 6:
        for _ in range(int(rng.integers(1, 5))):
            x = net.conv(x, c, int(rng.choice([1, 3, 3, 3, 5])))
            if use_bn:
                x = net.bn(x)
            x = net.act(x, kind)
            if rng.random() < 0.08:
                x = net.lrn(x)
        if net.shape[x][2] >= 8:
            x = net.pool(x, str(rng.choice(["MaxPool", "AveragePool"])))
            c = min(2 * c, 512)
    return _head(net, x, rng)


def _residual(net: _Net, rng: np.random.Generator, target: int) -> str:
    x = _stem(net, rng, 64)
    bottleneck, groups = rng.random() < 0.5, int(rng.choice([1, 1, 8, 32]))
    c = net.shape[x][1]
    while net.ops < target - 8:
        stride = 2 if (rng.random() < 0.25 and net.shape[x][2] >= 8) else 1
        cout = min(c * stride, 1024)
        if bottleneck:
            mid = max(cout // 4, 16)
            y = net.act(net.bn(net.conv(x, mid, 1)))
            y = net.act(net.bn(net.conv(y, mid, 3, stride, groups)))
            y = net.bn(net.conv(y, cout, 1))
        else:
            y = net.act(net.bn(net.conv(x, cout, 3, stride)))
            y = net.bn(net.conv(y, cout, 3))
        skip = x if (stride == 1 and cout == c) else net.bn(net.conv(x, cout, 1, stride))
        x = net.act(net.add(y, skip))
        c = cout
    return _head(net, x, rng)


def _inception(net: _Net, rng: np.random.Generator, target: int) -> str:
    x = _stem(net, rng, 64)
    use_bn = rng.random() < 0.4
    while net.ops < target - 12:
        c = net.shape[x][1]
        branches = []
        for kind in rng.permutation(["1x1", "3x3", "5x5", "pool"])[: int(rng.integers(2, 5))]:
            w = int(rng.choice([16, 32, 64, 96, 128]))

            def cbr(t: str, cout: int, k: int) -> str:
                t = net.conv(t, cout, k)
                return net.act(net.bn(t) if use_bn else t)

            if kind == "1x1":
                b = cbr(x, w, 1)
            elif kind == "3x3":
                b = cbr(cbr(x, max(w // 2, 16), 1), w, 3)
            elif kind == "5x5":
                b = cbr(x, max(w // 4, 16), 1)
                b = cbr(b, w, 5) if rng.random() < 0.5 else cbr(cbr(b, w, 3), w, 3)
            else:
                b = cbr(net.pool(x, "MaxPool", 3, 1), w, 1)
            branches.append(b)
        x = net.concat(branches) if len(branches) > 1 else branches[0]
        if rng.random() < 0.3 and net.shape[x][2] >= 8:
            x = net.pool(x)
        if net.shape[x][1] > 1024:
            x = net.act(net.conv(x, c, 1))
    return _head(net, x, rng)


def _nas(net: _Net, rng: np.random.Generator, target: int) -> str:
    x = _stem(net, rng, int(rng.choice([32, 48, 64])))
    c = net.shape[x][1]
    prev = x

    def sep(t: str, k: int) -> str:
        t = net.conv(net.act(t), net.shape[t][1], k, 1, groups=net.shape[t][1])
        return net.bn(net.conv(t, c, 1))

    while net.ops < target - 15:
        if rng.random() < 0.2 and net.shape[x][2] >= 8:
            c = min(2 * c, 512)
            x = net.bn(net.conv(net.act(x), c, 1, 2))
            prev = x
        states = [prev, x]
        for _ in range(int(rng.integers(2, 5))):
            outs = []
            for _ in range(2):
                s = states[int(rng.integers(len(states)))]
                if net.shape[s] != net.shape[x]:
                    s = x
                op = rng.choice(["sep3", "sep5", "conv3", "conv1", "max", "avg", "id"])
                if op == "sep3":
                    s = sep(s, 3)
                elif op == "sep5":
                    s = sep(s, 5)
                elif op == "conv3":
                    s = net.bn(net.conv(net.act(s), c, 3))
                elif op == "conv1":
                    s = net.bn(net.conv(net.act(s), c, 1))
                elif op == "max":
                    s = net.pool(s, "MaxPool", 3, 1)
                elif op == "avg":
                    s = net.pool(s, "AveragePool", 3, 1)
                outs.append(s)
            states.append(net.add(outs[0], outs[1]) if outs[0] != outs[1] else outs[0])
        new = [s for s in states[2:]]
        y = net.concat(new) if len(new) > 1 else new[0]
        prev, x = x, net.bn(net.conv(net.act(y), c, 1))
    return _head(net, x, rng)


def _mixer(net: _Net, rng: np.random.Generator, target: int) -> str:
    """Patch embedding, then MLP-Mixer blocks (token mixing through Transpose, channel
    mixing), with residual adds."""
    d = int(rng.choice([64, 128, 256]))
    patch = int(rng.choice([8, 16]))
    x = net.conv("x", d, patch, patch)  # patch embedding
    n, _, h, w = net.shape[x]
    t = h * w
    shape_name = net._id("shape")
    net.inits.append(helper.make_tensor(shape_name, TensorProto.INT64, [3], [n, d, t]))
    x = net._op("Reshape", [x, shape_name], (n, d, t))  # (B, D, T)
    x = net.transpose(x)  # (B, T, D)
    kind = _act_kind(rng)
    while net.ops < target - 10:
        y = net.transpose(x)  # token mixing on (B, D, T)
        y = net.matmul(net.act(net.matmul(y, int(rng.choice([64, 128, 256])) ), kind), t)
        x = net.add(x, net.transpose(y))
        y = net.matmul(net.act(net.matmul(x, 2 * d), kind), d)
        x = net.add(x, y)
    y = net._op("ReduceMean", [x], (n, 1, d), axes=[1], keepdims=1)
    shape2 = net._id("shape")
    net.inits.append(helper.make_tensor(shape2, TensorProto.INT64, [2], [n, d]))
    y = net._op("Reshape", [y, shape2], (n, d))
    return net.gemm(y, int(rng.choice([10, 100, 1000])))


def _dense(net: _Net, rng: np.random.Generator, target: int) -> str:
    """Densely connected blocks: each layer (BN-act-1x1 conv-BN-act-3x3 conv, BN possibly
    as Mul + Add) reads the concatenation of everything before it in the block; blocks
    end in a 1x1 conv + average pool transition."""
    x = _stem(net, rng, int(rng.choice([32, 64])))
    growth = int(rng.choice([12, 24, 32]))
    affine = rng.random() < 0.5  # BN exported as Mul + Add (as ONNX's DenseNet-121 does)

    def norm_act(t: str) -> str:
        if affine:
            c = net.shape[t][1]
            t = net._op("Mul", [t, net._weight([1, c, 1, 1], 1.0)], net.shape[t])
            t = net._op("Add", [t, net._weight([1, c, 1, 1], 0.0)], net.shape[t])
            return net.act(t)
        return net.act(net.bn(t))

    while net.ops < target - 14:
        for _ in range(int(rng.integers(2, 7))):
            y = net.conv(norm_act(x), 4 * growth, 1)
            y = net.conv(norm_act(y), growth, 3)
            x = net.concat([x, y])
            if net.ops >= target - 14:
                break
        if net.shape[x][2] >= 8:
            x = net.pool(net.conv(norm_act(x), max(net.shape[x][1] // 2, 16), 1), "AveragePool", 2, 2)
    return _head(net, norm_act(x), rng)


def _mobile(net: _Net, rng: np.random.Generator, target: int) -> str:
    """MobileNetV2-like inverted residuals: 1x1 expansion, 3x3 depthwise (which an NPU
    without grouped convolutions cannot run), 1x1 projection, residual Add; ReLU6 as
    Clip; BatchNormalization folded into the convs (as PyTorch exports) or not."""
    fold = rng.random() < 0.6
    kind = "clip" if rng.random() < 0.7 else "relu"

    def cba(t: str, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> str:
        t = net.conv(t, cout, k, stride, groups)
        t = t if fold else net.bn(t)
        return net.act(t, kind) if act else t

    c = int(rng.choice([16, 24, 32]))
    x = cba("x", c, 3, 2)
    while net.ops < target - 10:
        expand = int(rng.choice([1, 4, 6, 6]))
        stride = 2 if (rng.random() < 0.2 and net.shape[x][2] >= 8) else 1
        cout = c if (stride == 1 and rng.random() < 0.6) else min(int(c * rng.choice([1.5, 2])) // 8 * 8, 512)
        hidden = c * expand
        y = x if expand == 1 else cba(x, hidden, 1)
        y = cba(y, hidden, 3, stride, groups=hidden)
        y = cba(y, cout, 1, act=False)
        x = net.add(x, y) if (stride == 1 and cout == c) else y
        c = cout
    x = net.flatten(net.gap(cba(x, int(rng.choice([640, 1280])), 1)))
    return net.gemm(x, int(rng.choice([10, 100, 1000])))


def _attention(net: _Net, rng: np.random.Generator, target: int) -> str:
    """Transformer encoder layers as PyTorch exports them with explicit heads: LayerNorm,
    Q/K/V linears (MatMul + Add), Reshape + Transpose into heads, scores MatMul, scale,
    Softmax, weighted MatMul, Transpose + Reshape back, output linear, residual Adds, and
    an MLP with GELU (or ReLU); pre- or post-norm."""
    b, t, d = net.input_shape
    heads = int(rng.choice([h for h in (2, 4, 8) if d % h == 0]))
    dh = d // heads
    pre = rng.random() < 0.7
    gelu = rng.random() < 0.7
    x = "x"
    while net.ops == 0 or net.ops < target - 15:
        y = net.layernorm(x) if pre else x
        q, k, v = (net.permute(net.reshape(net.linear(y, d), (b, t, heads, dh)), (0, 2, 1, 3)) for _ in range(3))
        kt = net.permute(k, (0, 1, 3, 2))
        s = net._op("Softmax", [net.scale(net.matmul2(q, kt), math.sqrt(dh))], (b, heads, t, t), axis=-1)
        o = net.reshape(net.permute(net.matmul2(s, v), (0, 2, 1, 3)), (b, t, d))
        x = net._op("Add", [x, net.linear(o, d)], (b, t, d))
        if not pre:
            x = net.layernorm(x)
        y = net.layernorm(x) if pre else x
        y = net.linear(y, 4 * d)
        y = net.gelu(y) if gelu else net.act(y)
        x = net._op("Add", [x, net.linear(y, d)], (b, t, d))
        if not pre:
            x = net.layernorm(x)
    return net.layernorm(x) if pre else x


def _unet(net: _Net, rng: np.random.Generator, target: int) -> str:
    """A U-Net: double-conv encoder stages with max-pooling, a bottleneck, decoder stages
    that up-sample (ConvTranspose or Resize) and concatenate the encoder's skip tensor."""
    levels = int(rng.integers(2, 5))
    while levels > 1 and net.shape["x"][2] >> levels < 4:
        levels -= 1
    use_bn = rng.random() < 0.3
    convs = int(np.clip(round((target - 3 * levels) / ((2 * levels + 1) * (3 if use_bn else 2))), 2, 6))
    c = int(rng.choice([16, 32, 64]))

    def stage(t: str, cout: int) -> str:
        for _ in range(convs):
            t = net.conv(t, cout, 3)
            t = net.act(net.bn(t) if use_bn else t)
        return t

    x, skips = "x", []
    for lvl in range(levels):
        x = stage(x, c << lvl)
        skips.append(x)
        n, ch, h, w = net.shape[x]
        x = net._op("MaxPool", [x], (n, ch, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])
    x = stage(x, c << levels)
    for lvl in reversed(range(levels)):
        x = net.concat([net.upsample(x, c << lvl), skips[lvl]])
        x = stage(x, c << lvl)
    return net.conv(x, int(rng.choice([1, 2, 4, 21])), 1)


_BUILDERS = {"chain": _chain, "residual": _residual, "inception": _inception, "nas": _nas, "mixer": _mixer,
             "dense": _dense, "mobile": _mobile, "attention": _attention, "unet": _unet}


def generate_model(rng: np.random.Generator, family: str, target_ops: int, name: str) -> onnx.ModelProto:
    """A random model of ``family`` with about ``target_ops`` ops (within a block's size)."""
    if family == "attention":  # tokens x features
        net = _Net(name, rng, (1, int(rng.choice([32, 64, 128, 196])), int(rng.choice([64, 128, 256, 384]))))
    else:
        side = int(rng.choice([64, 96, 128, 160, 224]))
        net = _Net(name, rng, (1, 3, side, side))
    out = _BUILDERS[family](net, rng, target_ops)
    return net.model([out])


def generate_graph(rng: np.random.Generator, family: str, target_ops: int, name: str) -> OpGraph:
    """:func:`generate_model`, loaded as an :class:`OpGraph` (weights synthesised)."""
    return load_graph(generate_model(rng, family, target_ops, name), name=name, synthesize_weights=True)
