"""The built-in model zoo: every model loads quickly with static shapes, op counts are
stable, FLOP totals match published figures, and the small ones run in ONNX Runtime."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from partitiontuner import onnx_loader
from partitiontuner.errors import GraphLoadError
from partitiontuner.onnx_loader import load_graph
from partitiontuner.zoo import (
    PAPER_MODELS,
    TRAIN_MODELS,
    UNSEEN_MODELS,
    ZOO,
    load_model,
    random_input,
)

#: op counts after constant folding; a change here changes every plan, so it is deliberate
OP_COUNTS = {
    "alexnet": 22, "zfnet": 22, "googlenet": 142, "resnet18": 70, "resnet50": 176, "resnext50": 176,
    "squeezenet": 65, "inception_v2": 371, "vgg19": 44, "densenet121": 668, "shufflenet": 203,
}
#: fast enough to execute in a test (the rest are loaded only: their weights are hundreds of MB)
SMALL = ("googlenet", "resnet18", "squeezenet", "inception_v2", "densenet121", "shufflenet")
MAC_OPS = ("Conv", "Gemm", "MatMul")


def mac_flops(g) -> int:
    """FLOPs of the multiply-accumulate ops alone (what published tables count)."""
    return sum(n.flops for n in g.nodes if n.op_type in MAC_OPS)


def test_zoo_lists_the_papers_seven_and_four_more():
    assert len(ZOO) == 11
    assert set(PAPER_MODELS) == {"alexnet", "zfnet", "googlenet", "resnet18", "resnet50", "resnext50", "squeezenet"}
    assert set(ZOO) - set(PAPER_MODELS) == {"inception_v2", "vgg19", "densenet121", "shufflenet"}
    assert set(TRAIN_MODELS) | set(UNSEEN_MODELS) == set(ZOO) and not set(TRAIN_MODELS) & set(UNSEEN_MODELS)


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_loads_with_static_shapes_without_building_its_weights(name, monkeypatch):
    # loading stays fast because weights (hundreds of MB) are built only on demand:
    # record every constant the loader materialises (shape tensors, per-channel
    # parameters, constants it folds) and check they are a small part of the weights
    built: list[int] = []
    lazy = onnx_loader._lazy

    def recording(make):
        def make_and_record():
            value = make()
            built.append(np.asarray(value).size)
            return value

        return lazy(make_and_record)

    monkeypatch.setattr(onnx_loader, "_lazy", recording)
    g = load_model(name)
    assert sum(built) < sum(math.prod(s) for n in g.nodes for s in n.weight_shapes) / 2
    assert g.name == name and g.num_ops == OP_COUNTS[name]
    assert [t.shape for t in g.inputs] == [(1, 3, 224, 224)]
    assert [t.shape for t in g.outputs] in ([(1, 1000)], [(1, 1000, 1, 1)])
    for n in g.nodes:
        for shape in n.input_shapes + n.output_shapes + n.weight_shapes:
            assert all(isinstance(d, int) and d > 0 for d in shape), (n.name, shape)
        assert n.flops >= 0 and n.bytes_written > 0
    assert g.total_flops > 0 and len(g.content_hash) == 16
    # loading is deterministic: same structure, same hash
    assert load_model(name).content_hash == g.content_hash


# Published multiply-accumulate counts at 224x224 (x2 = FLOPs):
#   ResNet-50: 3.8 G mult-adds (He et al. 2016, Table 1); torchvision lists 4.09 G
#   ResNet-18: 1.8 G mult-adds (He et al. 2016, Table 1); torchvision 1.81 G
#   ResNeXt-50 32x4d: 4.2 G (Xie et al. 2017, Table 1); torchvision 4.23 G
#   VGG-19: 19.6 G (torchvision 19.63 G)
#   SqueezeNet 1.1: 0.35 G (torchvision squeezenet1_1; the bundled graph has v1.1's layers)
#   GoogLeNet: "1.5 billion multiply-adds" (Szegedy et al. 2015)
#   DenseNet-121: 2.87 G (torchvision 2.83 G)
@pytest.mark.parametrize(("name", "low", "high"), [
    ("resnet50", 7.7e9, 8.2e9),  # the range: 2 x 3.85..4.1 G
    ("resnet18", 3.55e9, 3.7e9),
    ("resnext50", 8.3e9, 8.6e9),
    ("vgg19", 39.0e9, 39.5e9),
    ("squeezenet", 0.68e9, 0.72e9),
    ("googlenet", 2.8e9, 3.2e9),
    ("densenet121", 5.5e9, 5.9e9),
])
def test_flops_match_published_figures(zoo_graph, name, low, high):
    g = zoo_graph(name)
    assert low <= mac_flops(g) <= high
    # element-wise ops, pools and normalisations add little on top (< 1.5 %)
    assert mac_flops(g) <= g.total_flops <= 1.015 * mac_flops(g)


def test_alexnet_flops_match_bvlc_figures(zoo_graph):
    """BVLC AlexNet (grouped conv2/4/5): 724M MACs at its native 227x227 input
    (Netscope / dgschwend's CNN analyzer); the zoo graph takes 224x224."""
    m = onnx.load(str(ZOO["alexnet"].source()))
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 227, 227), strict=True):
        d.dim_value = v
    at227 = load_graph(m)
    per_layer = [n.flops // 2 for n in at227.nodes if n.op_type in MAC_OPS]
    assert per_layer == [
        96 * 55 * 55 * 3 * 11 * 11,      # conv1
        256 * 27 * 27 * 48 * 5 * 5,      # conv2, 2 groups
        384 * 13 * 13 * 256 * 3 * 3,     # conv3
        384 * 13 * 13 * 192 * 3 * 3,     # conv4, 2 groups
        256 * 13 * 13 * 192 * 3 * 3,     # conv5, 2 groups
        9216 * 4096, 4096 * 4096, 4096 * 1000,
    ]
    assert sum(per_layer) == 724_406_816
    g = zoo_graph("alexnet")
    # the same layers on 224x224: 54x54 after conv1, 26, 12 and 12 after conv2..5, 6x6 into fc6
    at224 = (96 * 54 * 54 * 363 + 256 * 26 * 26 * 1200 + 384 * 12 * 12 * 2304 + 384 * 144 * 1728
             + 256 * 144 * 1728 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert mac_flops(g) == 2 * at224 == 2 * 654_560_384
    assert 1.30e9 <= g.total_flops <= 1.33e9


def test_squeezenet_is_the_v1_1_layout(zoo_graph):
    """conv1 is 64 3x3/2 filters and pools follow conv1, fire3 and fire5 (v1.0: 96 7x7/2)."""
    g = zoo_graph("squeezenet")
    assert g.nodes[0].weight_shapes[0] == (64, 3, 3, 3) and g.nodes[0].attributes["strides"] == (2, 2)
    pools = [n.index for n in g.nodes if n.op_type == "MaxPool"]
    concats_before = [sum(g.nodes[v].op_type == "Concat" for v in range(p)) for p in pools]
    assert concats_before == [0, 2, 4]
    assert "1.1" in ZOO["squeezenet"].description


def test_zfnet_layers(zoo_graph):
    g = zoo_graph("zfnet")
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    assert [n.weight_shapes[0] for n in convs] == [(96, 3, 7, 7), (256, 96, 5, 5), (512, 256, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3)]
    assert convs[0].flops == 2 * 96 * 109 * 109 * 3 * 49


def test_shufflenet_has_grouped_and_depthwise_convs(zoo_graph):
    g = zoo_graph("shufflenet")
    groups = Counter(n.attributes.get("group", 1) for n in g.nodes if n.op_type == "Conv")
    assert groups[4] == 32 and sum(k for gr, k in groups.items() if gr > 4) == 16  # 16 depthwise
    assert Counter(n.op_type for n in g.nodes)["Transpose"] == 16  # one channel shuffle per unit


@pytest.mark.parametrize("name", SMALL)
def test_small_zoo_models_run_with_finite_outputs(zoo_graph, name):
    g = zoo_graph(name)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(g.onnx_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, random_input(g, seed=1))
    assert [o.shape for o in outs] == [t.shape for t in g.outputs]
    assert all(np.isfinite(o).all() for o in outs)
    assert float(np.std(outs[0])) > 0  # synthesised weights are not all-constant


def test_synthesised_weights_are_seeded():
    a, b = load_model("squeezenet"), load_model("squeezenet")
    w = a.nodes[0].weights[0]
    assert np.array_equal(a.const_value(w), b.const_value(w))
    assert float(np.std(a.const_value(w))) > 0


def test_random_input_is_seeded(zoo_graph):
    g = zoo_graph("squeezenet")
    a, b, c = random_input(g, seed=3), random_input(g, seed=3), random_input(g, seed=4)
    name = g.inputs[0].name
    assert np.array_equal(a[name], b[name]) and not np.array_equal(a[name], c[name])
    assert a[name].dtype == np.float32 and a[name].shape == g.inputs[0].shape


def test_batch_size_scales_the_zoo_model():
    g = load_model("squeezenet", batch_size=2)
    assert g.inputs[0].shape == (2, 3, 224, 224)
    assert g.total_flops == 2 * load_model("squeezenet").total_flops


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(GraphLoadError, match=r"unknown model 'resnet51'.*squeezenet"):
        load_model("resnet51")
    with pytest.raises(GraphLoadError, match="model file not found"):
        load_model(str(tmp_path / "absent.onnx"))
    with pytest.raises(GraphLoadError, match="directory"):
        load_model(str(tmp_path) + "/")
