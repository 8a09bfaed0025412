"""Built-in models, all offline: ONNX's bundled "light" zoo graphs plus ResNet18 and
ResNeXt50 (32x4d), which ONNX does not bundle and are built here with ``onnx.helper``.

Light graphs carry no weights (each weight is a ``ConstantOfShape`` fill); the models
built here follow the same convention, and the loader synthesises seeded weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitiontuner.errors import GraphLoadError
from partitiontuner.graph import OpGraph
from partitiontuner.memory_guard import check_tensors_fit
from partitiontuner.onnx_loader import load_graph


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    paper: bool  # one of the paper's seven ImageNet DNNs
    source: Callable[[], onnx.ModelProto | Path]


def _light(stem: str) -> Callable[[], Path]:
    def path() -> Path:
        return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{stem}.onnx"

    return path


# ---------------------------------------------------------------------------------
# ResNet18 / ResNeXt50 built in code (torchvision's architectures, opset 13)


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count: dict[str, int] = {}

    def _id(self, prefix: str) -> str:
        k = self.count.get(prefix, 0)
        self.count[prefix] = k + 1
        return f"{prefix}{k}"

    def weight(self, name: str, shape: Sequence[int], fill: float) -> str:
        shape_name = f"{name}__SHAPE"
        self.inits.append(helper.make_tensor(shape_name, TensorProto.INT64, [len(shape)], list(shape)))
        value = helper.make_tensor("value", TensorProto.FLOAT, [1], [fill])
        self.nodes.append(helper.make_node("ConstantOfShape", [shape_name], [name], value=value))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> str:
        nid = self._id("conv")
        w = self.weight(f"{nid}_w", [cout, cin // groups, k, k], 0.01)
        out = f"{nid}_out"
        pad = k // 2
        self.nodes.append(
            helper.make_node("Conv", [x, w], [out], name=nid, kernel_shape=[k, k], strides=[stride, stride],
                             pads=[pad] * 4, group=groups)
        )
        return out

    def bn(self, x: str, c: int) -> str:
        nid = self._id("bn")
        params = [self.weight(f"{nid}_{p}", [c], v) for p, v in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
        out = f"{nid}_out"
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [out], name=nid, epsilon=1e-5))
        return out

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        nid = self._id(op_type.lower())
        out = f"{nid}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=nid, **attrs))
        return out

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> str:
        y = self.bn(self.conv(x, cin, cout, k, stride, groups), cout)
        return self.op("Relu", [y]) if relu else y

    def model(self, x: str, y: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, 224, 224])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 1000])],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="partitiontuner.zoo")
        m.ir_version = 8
        return m


def _resnet(name: str, layers: Sequence[int], bottleneck: bool, groups: int = 1, width_per_group: int = 64) -> onnx.ModelProto:
    b = _Builder(name)
    x = b.conv_bn("data", 3, 64, 7, 2)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    expansion = 4 if bottleneck else 1
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            cout = planes * expansion
            if bottleneck:
                width = int(planes * (width_per_group / 64.0)) * groups
                y = b.conv_bn(x, cin, width, 1)
                y = b.conv_bn(y, width, width, 3, stride, groups)
                y = b.conv_bn(y, width, cout, 1, relu=False)
            else:
                y = b.conv_bn(x, cin, planes, 3, stride)
                y = b.conv_bn(y, planes, planes, 3, relu=False)
            short = b.conv_bn(x, cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
            x = b.op("Relu", [b.op("Add", [y, short])])
            cin = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    w = b.weight("fc_w", [1000, cin], 0.01)
    bias = b.weight("fc_b", [1000], 0.0)
    x = b.op("Gemm", [x, w, bias], transB=1)
    return b.model("data", b.op("Softmax", [x], axis=1))


def resnet18_model() -> onnx.ModelProto:
    return _resnet("resnet18", (2, 2, 2, 2), bottleneck=False)


def resnext50_model() -> onnx.ModelProto:
    return _resnet("resnext50", (3, 4, 6, 3), bottleneck=True, groups=32, width_per_group=4)


ZOO: Mapping[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel("alexnet", "AlexNet (BVLC)", True, _light("bvlc_alexnet")),
        ZooModel("zfnet", "ZFNet-512", True, _light("zfnet512")),
        ZooModel("googlenet", "GoogLeNet / Inception v1", True, _light("inception_v1")),
        ZooModel("resnet18", "ResNet-18 (built in code)", True, resnet18_model),
        ZooModel("resnet50", "ResNet-50", True, _light("resnet50")),
        ZooModel("resnext50", "ResNeXt-50 32x4d (built in code)", True, resnext50_model),
        ZooModel("squeezenet", "SqueezeNet 1.1 (ONNX zoo squeezenet)", True, _light("squeezenet")),
        ZooModel("inception_v2", "Inception v2 (BN-Inception)", False, _light("inception_v2")),
        ZooModel("vgg19", "VGG-19", False, _light("vgg19")),
        ZooModel("densenet121", "DenseNet-121", False, _light("densenet121")),
        ZooModel("shufflenet", "ShuffleNet v1", False, _light("shufflenet")),
    )
}
PAPER_MODELS = tuple(name for name, m in ZOO.items() if m.paper)
#: kept out of RL training, to measure generalisation
UNSEEN_MODELS = ("googlenet", "resnext50", "densenet121")
TRAIN_MODELS = tuple(name for name in ZOO if name not in UNSEEN_MODELS)


def load_model(
    model: str,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch_size: int | None = None,
) -> OpGraph:
    """A zoo name or a path to an ``.onnx`` file -> :class:`OpGraph`.

    Raises:
        GraphLoadError: unknown zoo name, missing or bad file.
    """
    if model in ZOO:
        src = ZOO[model].source()
        if isinstance(src, Path) and not src.exists():
            raise GraphLoadError(f"zoo model {model!r} is missing from the installed onnx package ({src})")
        return load_graph(src, name=model, input_shapes=input_shapes, batch_size=batch_size, synthesize_weights=True)
    if model.endswith(".onnx") or Path(model).exists() or "/" in model:
        return load_graph(model, input_shapes=input_shapes, batch_size=batch_size)
    raise GraphLoadError(f"unknown model {model!r}: not a built-in model ({', '.join(ZOO)}) nor an .onnx file")


def random_input(graph: OpGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for every graph input."""
    weights = sum(n.weight_bytes for n in graph.nodes)  # the run builds them all next
    check_tensors_fit(graph, [t.name for t in graph.inputs], "to run the model", extra_bytes=weights, error=GraphLoadError)
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in graph.inputs:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            feeds[t.name] = rng.standard_normal(t.shape).astype(dt)
        else:
            feeds[t.name] = rng.integers(0, 2, size=t.shape).astype(dt)
    return feeds
