"""Bad input never gives a traceback or a silently wrong result (issue 17, items 3, 4, 7, 8
and the constraints file): every case is one ``partitiontuner: error:`` line on stderr,
exit 2, and nothing half-written on disk."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from partitiontuner.cli import main
from partitiontuner.constraints import load_constraints
from partitiontuner.errors import (
    ConfigError,
    GraphLoadError,
    InfeasiblePlanError,
    PartitionTunerError,
    ProfileError,
)
from partitiontuner.memory_guard import check_tensors_fit
from partitiontuner.onnx_loader import load_graph
from partitiontuner.platform import load_platform
from partitiontuner.profiling.cache import ProfileCache
from partitiontuner.profiling.cpu_profiler import Measurement
from partitiontuner.safe_io import read_text
from partitiontuner.zoo import ZOO, load_model, random_input

FIXTURE = ["--profiles", "fixture"]


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, expect exit 2 with one error line and no traceback; return the line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("partitiontuner: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def preset_text(name: str = "cpu-npu") -> str:
    from importlib import resources

    return (resources.files("partitiontuner") / "presets" / f"{name}.yaml").read_text()


def write_platform(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(preset_text())
    edit(data)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def plan_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "plan.yaml"
    assert main(["plan", "squeezenet", "--method", "greedy", *FIXTURE, "--out", str(out)]) == 0
    capsys.readouterr()
    return out


# ---------------------------------------------------------------------------------
# 3. tensors too big for memory: refused before anything is allocated


def _big_input_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 200000, 200000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture
def memory_16gib(monkeypatch):
    """The same answer on every machine: 16 GiB available."""
    import partitiontuner.memory_guard as guard

    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 16 * 2**30)


def test_profiling_a_huge_input_names_the_tensor_against_available_memory(tmp_path, tmp_cache, capsys, memory_16gib):
    model = _big_input_model(tmp_path / "big.onnx")
    line = fails(capsys, "profile", str(model))
    assert "tensor 'x' (1x3x200000x200000 float32, 447.0 GiB)" in line and "the 16.0 GiB of memory available" in line
    assert not list(tmp_cache.rglob("*.json"))  # nothing measured, nothing cached


def test_huge_batch_size_is_refused_before_profiling(tmp_cache, capsys, memory_16gib):
    line = fails(capsys, "plan", "squeezenet", "--batch-size", "100000", "--method", "greedy")
    assert "GiB" in line and "--batch-size" in line


def test_model_inputs_too_big_for_memory_are_refused_before_feeding_them(memory_16gib):
    g = load_model("squeezenet")
    check_tensors_fit(g, [t.name for t in g.inputs], "as a model input", available=10**9)  # fits
    with pytest.raises(ProfileError, match=r"tensor 'data_0' \(1x3x224x224 float32, 0\.6 MiB\)"):
        check_tensors_fit(g, [t.name for t in g.inputs], "as a model input", available=1000)
    big = load_model("squeezenet", batch_size=100000)
    with pytest.raises(GraphLoadError, match="memory available"):
        random_input(big)


# ---------------------------------------------------------------------------------
# 4. poisoned numbers and duplicates


def test_negative_latency_in_a_profile_file_is_refused(tmp_path, capsys):
    good = tmp_path / "good.json"
    assert main(["profile", "squeezenet", *FIXTURE, "--export", str(good)]) == 0
    capsys.readouterr()
    data = json.loads(good.read_text())
    data["ops"][0]["latency_us"]["cpu"] = -5.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    line = fails(capsys, "plan", "squeezenet", "--method", "greedy", "--profiles", str(bad))
    assert "must be a finite number >= 0" in line and "-5.0" in line
    data["ops"][0]["latency_us"]["cpu"] = 1.0
    data["ops"][1]["name"] = data["ops"][0]["name"]
    bad.write_text(json.dumps(data))
    assert "listed twice" in fails(capsys, "plan", "squeezenet", "--method", "greedy", "--profiles", str(bad))


def test_nan_bandwidth_in_a_platform_is_refused(tmp_path, capsys):
    path = tmp_path / "nan.yaml"
    path.write_text(preset_text().replace("bandwidth_gbps: 6", "bandwidth_gbps: .nan"))
    line = fails(capsys, "plan", "squeezenet", "--method", "greedy", *FIXTURE, "--platform", str(path))
    assert "'bandwidth_gbps' must be a finite number" in line


def test_a_duplicated_link_is_refused_not_silently_overriding(tmp_path, capsys):
    def twice(data):
        data["links"].append(dict(data["links"][0], latency_us=1))

    path = write_platform(tmp_path, twice)
    assert "a second link from 'cpu' to 'npu'" in fails(capsys, "profile", "squeezenet", *FIXTURE, "--platform", str(path))
    path.write_text(preset_text().replace("    latency_us: 15\n", "    latency_us: 15\n    latency_us: 1\n"))
    assert "duplicate key 'latency_us'" in fails(capsys, "profile", "squeezenet", *FIXTURE, "--platform", str(path))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(version=True), "plan format version True"),
    (lambda d: d["order"]["cpu"].__setitem__(0, 1.7), "lists 1.7, not a partition id"),
    (lambda d: d["order"]["cpu"].append(d["order"]["cpu"][0]), "twice"),
])
def test_plan_numbers_must_be_real_integers(plan_file, capsys, edit, message):
    data = yaml.safe_load(plan_file.read_text())
    edit(data)
    plan_file.write_text(yaml.safe_dump(data))
    assert message in fails(capsys, "simulate", "squeezenet", str(plan_file), *FIXTURE)


# ---------------------------------------------------------------------------------
# 7. corrupt files


def test_non_utf8_plan_and_platform_files(plan_file, tmp_path, capsys):
    plan_file.write_bytes(b"format: partitiontuner-plan\nmodel: \xff\xfe\n")
    assert "is not UTF-8 text" in fails(capsys, "simulate", "squeezenet", str(plan_file), *FIXTURE)
    platform = tmp_path / "p.yaml"
    platform.write_bytes(preset_text().encode().replace(b"cpu-npu", b"cpu-\xe9npu"))
    assert "is not UTF-8 text" in fails(capsys, "profile", "squeezenet", *FIXTURE, "--platform", str(platform))


def test_deeply_nested_plans_platforms_and_profiles(plan_file, tmp_path, capsys):
    plan_file.write_text("a: " + nested(50000))
    assert "nested too deeply" in fails(capsys, "simulate", "squeezenet", str(plan_file), *FIXTURE)
    json_plan = tmp_path / "plan.json"
    json_plan.write_text(nested(100))  # below the parser's limit, above ours
    assert "nested more than 64 levels" in fails(capsys, "simulate", "squeezenet", str(json_plan), *FIXTURE)
    platform = tmp_path / "deep.yaml"
    platform.write_text("name: " + nested(50000))
    assert "nested too deeply" in fails(capsys, "profile", "squeezenet", *FIXTURE, "--platform", str(platform))
    profiles = tmp_path / "deep.json"
    profiles.write_text(nested(50000))
    assert "nested too deeply" in fails(capsys, "plan", "squeezenet", "--method", "greedy", "--profiles", str(profiles))


@pytest.mark.parametrize("key", ["input_buffer_kib", "vector_lanes", "bytes_per_element", "clock_mhz"])
def test_zero_npu_parameters_are_refused(tmp_path, capsys, key):
    path = write_platform(tmp_path, lambda d: d["pus"][1]["npu"].__setitem__(key, 0))
    assert f"'{key}' must be" in fails(capsys, "profile", "squeezenet", *FIXTURE, "--platform", str(path))


def test_non_utf8_names_and_undefined_element_types_in_onnx(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="abc")], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString().replace(b"Relu", b"R\xffl\xfe"))
    with pytest.raises(GraphLoadError, match="op type that is not UTF-8"):
        load_graph(path)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    w.data_type = TensorProto.UNDEFINED
    add = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], initializer=[w])
    with pytest.raises(GraphLoadError, match="'w' has element type 0"):
        load_graph(helper.make_model(add, opset_imports=[helper.make_opsetid("", 13)]))


def _mutate(rng: random.Random, src: bytes, base: onnx.ModelProto) -> bytes:
    """Flip, cut or insert bytes; or damage one field (op type, element type, opset,
    attribute kind, a dimension, an input name, an initializer's type)."""
    if rng.random() < 0.5:
        data = bytearray(src)
        for _ in range(rng.randint(1, 8)):
            k, op = rng.randrange(len(data)), rng.random()
            if op < 0.6:
                data[k] = rng.randrange(256)
            elif op < 0.8:
                del data[k:k + rng.randint(1, 64)]
            else:
                data[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return bytes(data)
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g, node = m.graph, m.graph.node[rng.randrange(len(m.graph.node))]
    field = rng.randrange(7)
    if field == 0:
        node.op_type = rng.choice(["", "Foo", "conv", "ÿ"])
    elif field == 1:
        g.input[0].type.tensor_type.elem_type = rng.choice([0, 8, 13, 16, 99])
    elif field == 2:
        m.opset_import[0].version = rng.choice([0, 1, 5, 99])
    elif field == 3 and node.attribute:
        node.attribute[rng.randrange(len(node.attribute))].type = rng.randrange(15)
    elif field == 4:
        dims = g.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 3, 10**6])
    elif field == 5 and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(["", "nope", node.output[0]])
    elif g.initializer:
        g.initializer[rng.randrange(len(g.initializer))].data_type = rng.choice([0, 8, 16, 99])
    return m.SerializeToString()


def test_fuzzed_onnx_files_load_or_fail_cleanly(tmp_path, monkeypatch):
    import partitiontuner.memory_guard as guard

    # a flipped byte can turn a weight's shape into gigabytes: the guard must refuse it
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 2**30)
    src = ZOO["squeezenet"].source().read_bytes()
    base = onnx.load_from_string(src)
    rng = random.Random(17)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(50):
        path = tmp_path / f"fuzz{i}.onnx"
        path.write_bytes(_mutate(rng, src, base))
        try:
            g = load_graph(path)
            random_input(g)  # what `run` does next: feeds, then every weight materialised
            g.onnx_model()
        except PartitionTunerError:
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0  # the mutations reach both outcomes


# ---------------------------------------------------------------------------------
# 8. only regular files, with a size cap


def _cached_entry(cache_dir: Path) -> tuple[ProfileCache, str, Path]:
    cache = ProfileCache(cache_dir)
    key = cache.key("sig", 1)
    cache.put(key, Measurement(1.0, 0.0, 2.0, 10, 1.0))
    return cache, key, cache.path(key)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge", "deep"])
def test_a_cache_entry_that_is_no_regular_file_is_corrupt_not_a_hang(tmp_path, caplog, kind):
    cache, key, path = _cached_entry(tmp_path / "cache")
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        path.write_bytes(b" " * (2 << 20))
    else:
        path.write_text(nested(50000))
    with caplog.at_level(logging.WARNING, logger="partitiontuner.profiling.cache"):
        assert ProfileCache(tmp_path / "cache").get(key) is None
    assert len(caplog.records) == 1 and "re-measuring" in caplog.records[0].getMessage()
    cache.put(key, Measurement(1.0, 0.0, 2.0, 10, 1.0))  # re-measured: replaced by a file
    assert path.is_file() and not path.is_symlink() and ProfileCache(tmp_path / "cache").get(key) is not None


def test_user_files_must_be_regular_files(tmp_path, capsys):
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in fails(capsys, "simulate", "squeezenet", str(fifo), *FIXTURE)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_platform("/dev/zero")
    with pytest.raises(ConfigError, match="larger than"):
        read_text(_sparse(tmp_path / "big.yaml"), what="platform file")
    with pytest.raises(GraphLoadError, match="not a regular file"):
        load_graph(fifo)
    with pytest.raises(InfeasiblePlanError, match="directory"):
        from partitiontuner.plan import load_plan

        load_plan(None, tmp_path)  # type: ignore[arg-type]


def _sparse(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(100 * 2**20)  # 100 MiB of holes: costs no disk
    return path


# ---------------------------------------------------------------------------------
# constraints file


def test_constraints_file_takes_the_command_line_list_form(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('pin: ["Gemm=cpu", "type:Softmax=cpu"]\nforbid: ["Conv_0:npu"]\nmax_partitions: 4\n')
    c = load_constraints(path)
    assert [(r.pattern, r.pu, r.kind) for r in c.pins] == [("Gemm", "cpu", None), ("Softmax", "cpu", "type")]
    assert [(r.pattern, r.pu) for r in c.forbids] == [("Conv_0", "npu")] and c.max_partitions == 4
    path.write_text("pin: {Gemm: cpu}\nforbid: {Conv_0: [npu]}\n")
    mapped = load_constraints(path)
    assert [(r.pattern, r.pu) for r in mapped.pins] == [("Gemm", "cpu")] and len(mapped.forbids) == 1
    for bad, message in (("pin: [1]", "as a list takes rules"), ("strict: 1", "true or false"),
                         ("max_partitions: 0", ">= 1"), ("pin: {Gemm: cpu, Gemm: npu}", "duplicate key")):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_constraints(path)


def test_a_constraint_matching_no_op_fails_before_profiling(tmp_path, capsys, monkeypatch):
    import partitiontuner.workflow as workflow

    def no_profiling(*args, **kwargs):
        raise AssertionError("profiled before checking the constraints")

    monkeypatch.setattr(workflow, "get_profiles", no_profiling)
    path = tmp_path / "c.yaml"
    path.write_text('pin: ["Gemmm=cpu"]\n')
    assert "matches no op" in fails(capsys, "plan", "squeezenet", "--method", "greedy", "--constraints", str(path))
    assert "has no PU 'gpu'" in fails(capsys, "plan", "squeezenet", "--method", "greedy", "--pin", "Conv_0=gpu")
