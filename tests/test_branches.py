"""Branch analysis: cut vertices, blocks, sequential branches, chain groups and
parallel width, exactly on hand-built graphs, by brute force on random DAGs, and on the
zoo's known architectures."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from partitiontuner.branches import analyse, blocks, chain_groups, cut_vertices, sequential_branches
from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.zoo import ZOO


def dag(ops: Sequence[tuple[str, Sequence[str]]], outputs: Sequence[str], inputs: Sequence[str] = ("x",)) -> OpGraph:
    """Ops named by their output tensor: ``(name, [inputs])``; Relu for one input, Sum
    otherwise. Every tensor is float32 [1, 4]."""
    nodes = [helper.make_node("Relu" if len(ins) == 1 else "Sum", list(ins), [name], name=name) for name, ins in ops]
    vi = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4]) for t in inputs]
    g = helper.make_graph(nodes, "dag", vi, [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4]) for o in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return load_graph(m)


def named(g: OpGraph, ops) -> tuple:
    return tuple(g.nodes[v].name for v in ops)


# ---------------------------------------------------------------------------------
# hand-built graphs


def test_chain():
    g = dag([("a", ["x"]), ("b", ["a"]), ("c", ["b"]), ("d", ["c"])], ["d"])
    s = analyse(g)
    assert s.cut_vertices == (0, 1, 2, 3)
    assert [b.ops for b in s.blocks] == [(0,), (1,), (2,), (3,)]
    assert s.sequential_branches == ((0, 1, 2, 3),)
    assert s.max_parallel_width == 1 and s.max_block_ops == 1
    assert chain_groups(g) == ((0, 1), (0, 1, 2), (1, 2), (1, 2, 3), (2, 3))
    assert chain_groups(g, max_ops=2) == ((0, 1), (1, 2), (2, 3))


def test_diamond():
    g = dag([("a", ["x"]), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])], ["d"])
    s = analyse(g)
    assert named(g, s.cut_vertices) == ("a", "d")
    first, second = s.blocks
    assert first.gap == () and named(g, [first.cut]) == ("a",) and first.width == 1
    assert named(g, second.gap) == ("b", "c") and named(g, [second.cut]) == ("d",)
    assert [named(g, br) for br in second.branches] == [("b",), ("c",)]
    assert second.width == 2 == s.max_parallel_width
    assert sorted(named(g, br) for br in s.sequential_branches) == [("a",), ("b",), ("c",), ("d",)]
    assert chain_groups(g) == ()


def test_inception_like_module():
    # a -> {b1 -> b2, c1, d1 -> d2 -> d3} -> e (concat-like) -> f, listed interleaved
    g = dag(
        [("a", ["x"]), ("d1", ["a"]), ("b1", ["a"]), ("c1", ["a"]), ("d2", ["d1"]), ("b2", ["b1"]),
         ("d3", ["d2"]), ("e", ["b2", "c1", "d3"]), ("f", ["e"])],
        ["f"],
    )
    s = analyse(g)
    assert named(g, s.cut_vertices) == ("a", "e", "f")
    block = s.blocks[1]
    assert sorted(named(g, br) for br in block.branches) == [("b1", "b2"), ("c1",), ("d1", "d2", "d3")]
    assert block.width == 3 and s.max_block_ops == 7
    assert sorted(named(g, br) for br in s.sequential_branches) == [("a",), ("b1", "b2"), ("c1",), ("d1", "d2", "d3"), ("e", "f")]
    assert sorted(named(g, c) for c in chain_groups(g)) == [
        ("b1", "b2"), ("d1", "d2"), ("d1", "d2", "d3"), ("d2", "d3"), ("e", "f"),
    ]


def test_residual_skip_is_not_parallel_work():
    g = dag([("a", ["x"]), ("b", ["a"]), ("c", ["b"]), ("d", ["a", "c"]), ("e", ["d"])], ["e"])
    s = analyse(g)
    assert named(g, s.cut_vertices) == ("a", "d", "e")
    assert named(g, s.blocks[1].gap) == ("b", "c") and s.blocks[1].width == 1
    assert len(s.blocks[1].branches) == 1


def test_width_is_an_antichain_not_a_branch_count():
    # one weakly connected gap whose largest antichain is {d, e, f}
    g = dag(
        [("a", ["x"]), ("b", ["a"]), ("c", ["a"]), ("d", ["b"]), ("e", ["c"]), ("f", ["b", "c"]), ("g", ["d", "e", "f"])],
        ["g"],
    )
    s = analyse(g)
    assert named(g, s.cut_vertices) == ("a", "g")
    (gap_block,) = [b for b in s.blocks if b.gap]
    assert len(gap_block.branches) == 1 and gap_block.width == 3


def test_two_inputs_and_an_early_output():
    # the second input's consumer jumps over 'a'; the early output 'c' jumps over 'e'
    g = dag([("a", ["x"]), ("b", ["y"]), ("c", ["a", "b"]), ("e", ["c"])], ["c", "e"], inputs=("x", "y"))
    s = analyse(g)
    assert named(g, s.cut_vertices) == ("c",)
    assert [named(g, b.ops) for b in s.blocks] == [("a", "b", "c"), ("e",)]
    assert s.blocks[0].width == 2 and s.blocks[1].cut is None
    # a graph-output producer ends its sequential branch; an input reader starts one
    assert sorted(named(g, br) for br in s.sequential_branches) == [("a",), ("b",), ("c",), ("e",)]


def test_blocks_accept_given_cuts():
    g = dag([("a", ["x"]), ("b", ["a"]), ("c", ["b"])], ["c"])
    assert [b.ops for b in blocks(g, (1,))] == [(0, 1), (2,)]


# ---------------------------------------------------------------------------------
# brute force on random DAGs


@st.composite
def random_dags(draw) -> OpGraph:
    n_inputs = draw(st.integers(1, 2))
    tensors = [f"in{i}" for i in range(n_inputs)]
    ops = []
    for i in range(draw(st.integers(1, 9))):
        ins = draw(st.lists(st.sampled_from(tensors), min_size=1, max_size=3, unique=True))
        ops.append((f"v{i}", ins))
        tensors.append(f"v{i}")
    consumed = {t for _, ins in ops for t in ins}
    outputs = [name for name, _ in ops if name not in consumed]
    extra = draw(st.lists(st.sampled_from([name for name, _ in ops]), max_size=2, unique=True))
    outputs += [t for t in extra if t not in outputs]
    order = draw(st.permutations(range(len(ops))))  # the loader must sort them
    return dag([ops[k] for k in order], outputs, inputs=tensors[:n_inputs])


def _reach(g: OpGraph) -> list[set[int]]:
    desc = [set() for _ in g.nodes]
    for u in reversed(range(g.num_ops)):
        for v in g.succs[u]:
            desc[u] |= {v} | desc[v]
    return desc


def _brute_cut(g: OpGraph, v: int) -> bool:
    """Does every input-to-output path pass through ``v``? (search without ``v``)"""
    frontier = [u for consumers in g.input_consumers.values() for u in consumers if u != v]
    seen = set(frontier)
    while frontier:
        u = frontier.pop()
        if u in g.output_producers.values():
            return False
        for w in g.succs[u]:
            if w != v and w not in seen:
                seen.add(w)
                frontier.append(w)
    return True


def _brute_width(g: OpGraph, ops: Sequence[int]) -> int:
    desc = _reach(g)
    best = 1 if ops else 0
    for k in range(2, len(ops) + 1):
        for sub in itertools.combinations(ops, k):
            if all(b not in desc[a] and a not in desc[b] for a, b in itertools.combinations(sub, 2)):
                best = k
                break
        else:
            break  # no antichain of size k, so none larger
    return best


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_structure_matches_brute_force(g):
    for e in g.edges:
        assert e.src < e.dst
    s = analyse(g)
    assert s.cut_vertices == tuple(v for v in range(g.num_ops) if _brute_cut(g, v))
    # blocks partition the ops, in order, each closed by its cut vertex
    assert [v for b in s.blocks for v in b.ops] == list(range(g.num_ops))
    assert [b.cut for b in s.blocks if b.cut is not None] == list(s.cut_vertices)
    assert [b.index for b in s.blocks] == list(range(len(s.blocks)))
    for b in s.blocks:
        assert sorted(v for br in b.branches for v in br) == list(b.gap)
        assert b.width == max(1, _brute_width(g, b.gap))
    assert s.max_parallel_width == _brute_width(g, range(g.num_ops))


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_sequential_branches_are_maximal_links(g):
    chains = sequential_branches(g)
    assert sorted(v for c in chains for v in c) == list(range(g.num_ops))
    outputs = set(g.output_producers.values())
    readers = {v for cons in g.input_consumers.values() for v in cons}

    def linked(u: int, v: int) -> bool:
        return g.succs[u] == (v,) and g.preds[v] == (u,) and u not in outputs and v not in readers

    for c in chains:
        assert all(linked(u, v) for u, v in itertools.pairwise(c))
        assert not any(linked(c[-1], w) for w in range(g.num_ops))  # cannot be extended
        assert not any(linked(u, c[0]) for u in range(g.num_ops))
    groups = chain_groups(g)
    assert groups == tuple(sorted(groups)) and len(set(groups)) == len(groups)
    expected = {c[i:i + k] for c in chains for k in (2, 3) for i in range(len(c) - k + 1)}
    assert set(groups) == expected


# ---------------------------------------------------------------------------------
# the zoo's architectures


def test_googlenet_has_nine_inception_modules_of_width_four(zoo_graph):
    g = zoo_graph("googlenet")
    s = analyse(g)
    modules = [b for b in s.blocks if b.width > 1]
    assert len(modules) == 9 and s.max_parallel_width == 4
    for b in modules:
        assert b.width == 4 and len(b.branches) == 4
        concat = g.nodes[b.cut]
        assert concat.op_type == "Concat" and len(concat.inputs) == 4
        assert {br[-1] for br in b.branches} == set(g.preds[b.cut])  # each branch feeds the concat
        shapes = sorted(tuple(g.nodes[v].op_type for v in br) for br in b.branches)
        assert shapes == sorted([
            ("Conv", "Relu"), ("Conv", "Relu", "Conv", "Relu"), ("Conv", "Relu", "Conv", "Relu"), ("MaxPool", "Conv", "Relu"),
        ])


def test_resnet50_cut_vertices_are_residual_block_boundaries(zoo_graph):
    g = zoo_graph("resnet50")
    s = analyse(g)
    types = [g.nodes[c].op_type for c in s.cut_vertices]
    # stem, then (Sum, Relu) per bottleneck block (3 + 4 + 6 + 3), then the head
    assert types == ["Conv", "BatchNormalization", "Relu", "MaxPool"] + ["Sum", "Relu"] * 16 + ["AveragePool", "Reshape", "Gemm", "Softmax"]
    for c in s.cut_vertices:
        if g.nodes[c].op_type == "Sum":
            assert g.nodes[c + 1].op_type == "Relu" and g.preds[c + 1] == (c,)
    bodies = [b for b in s.blocks if b.gap]
    assert len(bodies) == 16
    convs = [sum(g.nodes[v].op_type == "Conv" for v in b.gap) for b in bodies]
    # a projection shortcut (first block of each stage) runs beside the 3-conv body
    assert convs == [4, 3, 3, 4, 3, 3, 3, 4, 3, 3, 3, 3, 3, 4, 3, 3]
    assert [b.width for b in bodies] == [2 if k == 4 else 1 for k in convs]


def test_built_resnets_have_block_boundaries_too(zoo_graph):
    for name, n_blocks in (("resnet18", 8), ("resnext50", 16)):
        g = zoo_graph(name)
        s = analyse(g)
        adds = [n.index for n in g.nodes if n.op_type == "Add"]
        assert len(adds) == n_blocks
        assert set(adds) <= set(s.cut_vertices) and {a + 1 for a in adds} <= set(s.cut_vertices)
        assert s.max_parallel_width == 2


def test_resnext50_uses_32_groups(zoo_graph):
    g = zoo_graph("resnext50")
    grouped = [n for n in g.nodes if n.op_type == "Conv" and n.attributes.get("group", 1) > 1]
    assert len(grouped) == 16 and all(n.attributes["group"] == 32 for n in grouped)
    assert [n.weight_shapes[0][1] for n in grouped][:1] == [4]  # 128 channels / 32 groups = 4 ("32x4d")


def test_chains_are_all_cut_vertices(zoo_graph):
    for name in ("alexnet", "zfnet", "vgg19"):
        g = zoo_graph(name)
        s = analyse(g)
        assert s.cut_vertices == tuple(range(g.num_ops)), name
        assert s.max_parallel_width == 1 and s.max_block_ops == 1
        assert s.sequential_branches == (tuple(range(g.num_ops)),)
        assert len(chain_groups(g)) == (g.num_ops - 1) + (g.num_ops - 2)


def test_densenet_concats_are_cut_vertices(zoo_graph):
    g = zoo_graph("densenet121")
    cuts = set(cut_vertices(g))
    concats = [n.index for n in g.nodes if n.op_type == "Concat"]
    assert len(concats) == 6 + 12 + 24 + 16  # dense layers per block
    assert set(concats) <= cuts


def test_squeezenet_fire_modules(zoo_graph):
    g = zoo_graph("squeezenet")
    s = analyse(g)
    fires = [b for b in s.blocks if b.width > 1]
    assert len(fires) == 8
    for b in fires:
        assert g.nodes[b.cut].op_type == "Concat" and b.width == 2
        assert sorted(tuple(g.nodes[v].op_type for v in br) for br in b.branches) == [("Conv", "Relu")] * 2


def test_every_zoo_model_partitions_into_blocks(zoo_graph):
    for name in ZOO:
        g = zoo_graph(name)
        s = analyse(g)
        assert [v for b in s.blocks for v in b.ops] == list(range(g.num_ops)), name
        assert sorted(v for c in s.sequential_branches for v in c) == list(range(g.num_ops)), name
        assert 1 <= s.max_parallel_width <= 4


def test_structure_of_a_model_proto_without_inputs_reading_constants():
    """Ops fed only by constants fold away: they never start a branch of their own."""
    w = helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.ones((1, 4), np.float32)))
    nodes = [w, helper.make_node("Relu", ["c"], ["rc"]), helper.make_node("Add", ["x", "rc"], ["y"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    graph = load_graph(m)
    assert [n.op_type for n in graph.nodes] == ["Add"] and analyse(graph).cut_vertices == (0,)
