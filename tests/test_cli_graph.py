"""The ``models`` and ``graph`` commands: JSON and readable output for every zoo model
and for PyTorch exports, and one clean error line (exit 2) for every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import models
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from partitiontuner.cli import main
from partitiontuner.errors import GraphLoadError
from partitiontuner.zoo import ZOO


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object on one line
    return json.loads(out)


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables to the terminal width


@pytest.mark.parametrize("name", list(ZOO))
def test_graph_json_for_every_zoo_model(capsys, zoo_graph, name):
    data = run_json(capsys, "graph", name, "--json")
    g = zoo_graph(name)
    assert data["model"] == name and data["num_ops"] == g.num_ops == len(data["ops"])
    assert data["gflops"] == pytest.approx(g.total_flops / 1e9, abs=1e-6)
    assert data["num_blocks"] == len(data["blocks"]) >= 1
    assert data["max_block_ops"] == max(len(b["ops"]) for b in data["blocks"])
    assert 1 <= data["max_parallel_width"] <= 4
    assert data["inputs"] == [{"name": g.inputs[0].name, "shape": [1, 3, 224, 224], "dtype": "float32"}]
    for op, node in zip(data["ops"], g.nodes, strict=True):
        assert op["name"] == node.name and op["op_type"] == node.op_type
        assert op["output_shape"] == list(node.output_shapes[0]) and op["flops"] == node.flops
    assert sorted(v for b in data["blocks"] for v in b["ops"]) == sorted(n.name for n in g.nodes)


def test_graph_json_widths_of_known_models(capsys):
    assert run_json(capsys, "graph", "googlenet", "--json")["max_parallel_width"] == 4
    assert run_json(capsys, "graph", "squeezenet", "--json")["max_parallel_width"] == 2
    vgg = run_json(capsys, "graph", "vgg19", "--json")
    assert vgg["max_parallel_width"] == 1 and vgg["num_blocks"] == vgg["num_ops"] == 44


@pytest.mark.parametrize("name", ["googlenet", "alexnet", "resnet50"])
def test_graph_readable_output(capsys, wide, name, zoo_graph):
    assert main(["graph", name]) == 0
    out = capsys.readouterr().out
    g = zoo_graph(name)
    assert f"{name}  {g.num_ops} ops" in out and f"{g.total_flops / 1e9:.3f} GFLOPs" in out
    assert "Ops by type" in out and "Conv" in out and "max parallel width" in out
    assert ("Blocks with parallel branches" in out) == (name != "alexnet")


def test_models_lists_eleven_with_ops_and_input_shape(capsys, zoo_graph):
    assert len(ZOO) == 11
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # not a terminal: plain text, a title, a header, a rule, then exactly one line per model
    assert lines[0] == "Built-in models" and lines[1].split()[:2] == ["name", "ops"] and set(lines[2]) == {"-"}
    rows = lines[3:]
    assert len(rows) == 11
    for name, line in zip(ZOO, rows, strict=True):
        cells = line.split()
        assert cells[0] == name and cells[1] == str(zoo_graph(name).num_ops) and cells[2] == "1x3x224x224"
    data = run_json(capsys, "models", "--json")
    assert len(data["models"]) == 11 and [r["name"] for r in data["models"]] == list(ZOO)
    for r in data["models"]:
        assert r["num_ops"] == zoo_graph(r["name"]).num_ops and r["input_shape"] == [1, 3, 224, 224]
        assert r["rl_split"] in ("train", "unseen")


@pytest.mark.parametrize("case", ["mobilenet", "transformer", "unet"])
def test_graph_json_for_pytorch_exports(capsys, tmp_path, case):
    cls, shape = {
        "mobilenet": (models.MobileNetV2Like, (1, 3, 32, 32)),
        "transformer": (models.TinyTransformer, (1, 8, 32)),
        "unet": (models.TinyUNet, (1, 3, 32, 32)),
    }[case]
    torch.manual_seed(0)
    path = models.export(cls(), torch.randn(*shape), tmp_path / f"{case}.onnx", dynamic_batch=True)
    assert main(["graph", str(path), "--json"]) == 2
    assert "--input-shape x=1x" in capsys.readouterr().err
    dims = "x".join(map(str, shape))
    data = run_json(capsys, "graph", str(path), "--input-shape", f"x={dims}", "--json")
    assert data["model"] == case and data["num_ops"] > 10 and data["gflops"] > 0
    assert data["inputs"][0]["shape"] == list(shape)
    if case == "unet":
        assert data["max_parallel_width"] >= 1 and any(op["op_type"] == "ConvTranspose" for op in data["ops"])
    assert main(["graph", str(path), "--batch-size", "2"]) == 0


# ---------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2, no traceback


def _bad_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (model argument, text the error must contain)."""
    light = Path(ZOO["squeezenet"].source()).read_bytes()
    (tmp_path / "half.onnx").write_bytes(light[: len(light) // 2])
    (tmp_path / "notes.onnx").write_text("this is a text file, not a model\n")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    def save(name: str, nodes, inputs) -> str:
        m = helper.make_model(helper.make_graph(nodes, name, inputs, [y]), opset_imports=[helper.make_opsetid("", 13)])
        onnx.save(m, tmp_path / f"{name}.onnx")
        return str(tmp_path / f"{name}.onnx")

    shape_in = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    dyn = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    return {
        "missing": (str(tmp_path / "absent.onnx"), "model file not found"),
        "truncated": (str(tmp_path / "half.onnx"), "not a readable ONNX model (truncated or corrupt?)"),
        "not-onnx": (str(tmp_path / "notes.onnx"), "not a readable ONNX model"),
        "no-shapes": (save("noshape", [helper.make_node("Reshape", ["x", "s"], ["y"])], [x, shape_in]), "cannot be inferred"),
        "unknown-model": ("resnet51", "unknown model 'resnet51'"),
        "dynamic": (save("dyn", [helper.make_node("Relu", ["x"], ["y"])], [dyn]), "graph input 'x' has a dynamic shape ?x4"),
        "unknown-op": (save("odd", [helper.make_node("Frobnicate", ["x"], ["y"], name="f1")], [x]), "unknown op type 'Frobnicate' in node 'f1'"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "not-onnx", "no-shapes", "unknown-model", "dynamic", "unknown-op"])
def test_bad_input_gives_one_clear_line(capsys, tmp_path, case):
    arg, expected = _bad_files(tmp_path)[case]
    assert main(["graph", arg, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partitiontuner: error: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err


def test_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "absent.onnx")
    with pytest.raises(GraphLoadError, match="model file not found"):
        main(["--debug", "graph", missing])
    with pytest.raises(GraphLoadError, match="model file not found"):
        main(["graph", missing, "--debug"])  # accepted after the command, too


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("partitiontuner")
    found = str(exe) if exe.exists() else shutil.which("partitiontuner")
    assert found, "the partitiontuner console script is not installed"
    return [found]


def test_console_script_exit_codes(tmp_path):
    truncated, _ = _bad_files(tmp_path)["truncated"]
    bad = subprocess.run([*_console_script(), "graph", truncated], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"partitiontuner: error: {truncated} is not a readable ONNX model")
    debug = subprocess.run([*_console_script(), "--debug", "graph", truncated], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "GraphLoadError" in debug.stderr
    ok = subprocess.run([*_console_script(), "graph", "squeezenet", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["num_ops"] == 65
