"""Imported profiles (CSV, ONNX Runtime trace, exported JSON): the same numbers give
the same plan as the native format; bad files give one clear error."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from partitiontuner.agents.registry import make_planner
from partitiontuner.cli import main
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import load_platform
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.profiling.importers import import_profiles
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.simulate import simulate

MODEL = "squeezenet"
METHODS = ("greedy", "partitiontuner", "npu-first")


# ---------------------------------------------------------------------------------
# writers: fixture numbers in each format


def write_csv(prof: Profiles, path: Path, *, pus: tuple[str, ...] | None = None, groups: bool = True) -> Path:
    lines = ["# fixture numbers", "op,pu,latency_us"]
    for j, pu in enumerate(prof.pus):
        if pus is not None and pu not in pus:
            continue
        lines += [f"{name},{pu},{float(prof.op_latency_us[i, j])!r}" for i, name in enumerate(prof.op_names)
                  if math.isfinite(prof.op_latency_us[i, j])]
        if groups:
            lines += ["+".join(prof.op_names[i] for i in key) + f",{pu},{float(lat[j])!r}"
                      for key, lat in sorted(prof.groups.items()) if math.isfinite(lat[j])]
    path.write_text("\n".join(lines) + "\n")
    return path


def trace_events(graph: OpGraph, latency_us: np.ndarray, provider: str = "CPUExecutionProvider") -> list[dict[str, Any]]:
    """What ``SessionOptions.enable_profiling`` writes for a run of every op: a slow
    first run (ORT allocates), then two runs at ``latency_us``."""
    events: list[dict[str, Any]] = [{"cat": "Session", "name": "session_initialization", "ph": "X", "dur": 900}]
    for run, scale in enumerate((7.0, 1.0, 1.0)):
        events.append({"cat": "Session", "name": "model_run", "ph": "X", "dur": 1000 + run})
        for op in graph.nodes:
            events.append({
                "cat": "Node", "ph": "X", "pid": 1, "tid": 1, "ts": run, "name": f"{op.name}_kernel_time",
                "dur": float(latency_us[op.index]) * scale,
                "args": {"op_name": op.op_type, "provider": provider, "parameter_size": str(op.weight_bytes),
                         "output_type_shape": [{"float": list(op.output_shapes[0])}]},
            })
            events.append({"cat": "Node", "ph": "X", "name": f"{op.name}_fence_before", "dur": 0, "args": {}})
    return events


def plans_of(problem: Problem) -> list[tuple[Any, float]]:
    out = []
    for method in METHODS:
        plan = make_planner(method).plan(problem)
        out.append(([(p.device, p.ops) for p in plan.partitions], simulate(problem, plan).makespan_us))
    return out


@pytest.fixture(scope="module")
def native(zoo_graph) -> tuple[OpGraph, Any, Profiles]:
    graph = zoo_graph(MODEL)
    platform = load_platform("cpu-npu")
    return graph, platform, fixture_profiles(graph, platform)


# ---------------------------------------------------------------------------------
# same numbers, same plans


def test_csv_gives_the_fixture_plans_exactly(native, tmp_path: Path) -> None:
    graph, platform, prof = native
    path = write_csv(prof, tmp_path / "device.csv")
    got = import_profiles(str(path), graph, platform, progress=False)
    assert got.source == f"imported from {path}"
    np.testing.assert_array_equal(got.op_latency_us, prof.op_latency_us)
    assert plans_of(Problem(graph, platform, got)) == plans_of(Problem(graph, platform, prof))


def test_ort_trace_gives_the_plans_of_the_same_numbers(native, tmp_path: Path) -> None:
    """A trace carries one PU's op times (no groups): with the NPU filled by the
    emulator it must plan exactly like the fixture without CPU group times."""
    graph, platform, prof = native
    path = tmp_path / "ort_profile.json"
    path.write_text(json.dumps(trace_events(graph, prof.op_latency_us[:, 0])))
    got = import_profiles(f"cpu={path}", graph, platform, fill="emulator", progress=False)
    assert got.source.startswith(f"imported from cpu={path}") and "emulator" in got.source
    cpu_only_ops = Profiles(**{**prof.__dict__, "groups": {k: np.array([np.nan, v[1]]) for k, v in prof.groups.items()}})
    np.testing.assert_array_equal(got.op_latency_us, prof.op_latency_us)
    assert plans_of(Problem(graph, platform, got)) == plans_of(Problem(graph, platform, cpu_only_ops))
    # a bare trace goes to the only CPU PU; the same numbers again
    same = import_profiles(f"{path},fill=emulator", graph, platform, progress=False)
    np.testing.assert_array_equal(same.op_latency_us, got.op_latency_us)


def test_exported_json_gives_the_fixture_plans(native, tmp_path: Path) -> None:
    graph, platform, prof = native
    path = tmp_path / "exported.json"
    prof.save_json(path)
    got = import_profiles(str(path), graph, platform, progress=False)
    assert got.source == f"imported from {path}"
    # exactly the plans of the same (rounded to 1e-4 us) numbers read natively ...
    rounded = Profiles.from_dict(prof.to_dict())
    assert plans_of(Problem(graph, platform, got)) == plans_of(Problem(graph, platform, rounded))
    # ... and so the fixture's plans, makespans equal to that precision
    for (a, ta), (b, tb) in zip(plans_of(Problem(graph, platform, got)), plans_of(Problem(graph, platform, prof)), strict=True):
        assert a == b and ta == pytest.approx(tb, abs=1e-2)


def test_csv_of_the_cpu_filled_by_the_emulator(native, tmp_path: Path) -> None:
    """A PU the file does not mention comes wholly from the fill, groups included."""
    graph, platform, prof = native
    path = write_csv(prof, tmp_path / "cpu.csv", pus=("cpu",))
    with pytest.raises(ProfileError, match="lack PU npu entirely.*--fill emulator"):
        import_profiles(str(path), graph, platform, progress=False)
    got = import_profiles(f"{path},fill=emulator", graph, platform, progress=False)
    assert "filled by emulator: npu" in got.source
    assert plans_of(Problem(graph, platform, got)) == plans_of(Problem(graph, platform, prof))


def test_missing_cpu_ops_listed_and_filled_by_measuring(native, tmp_path: Path, tmp_cache: Path) -> None:
    graph, platform, prof = native
    path = write_csv(prof, tmp_path / "partial.csv", groups=False)
    text = path.read_text().splitlines()
    dropped = [line for line in text if line.startswith(("n3,cpu", "n4,cpu"))]
    path.write_text("\n".join(line for line in text if line not in dropped) + "\n")
    with pytest.raises(ProfileError, match=r"lack 2 op\(s\) on cpu: n3, n4"):
        import_profiles(str(path), graph, platform, fill="emulator", progress=False)
    got = import_profiles(str(path), graph, platform, fill="measure", progress=False)
    assert np.isfinite(got.op_latency_us[[3, 4], 0]).all() and np.isfinite(got.op_spread[[3, 4], 0]).all()
    assert np.isnan(got.op_spread[5, 0]), "imported numbers carry no spread"
    assert got.op_latency_us[5, 0] == prof.op_latency_us[5, 0]
    # a PU the file mentions keeps its own (here: no) groups
    assert all(math.isnan(v[0]) for v in got.groups.values())


def test_fused_nodes_of_an_optimised_trace_become_groups(native, tmp_path: Path) -> None:
    """ORT names an NCHWc Conv+Relu after the Relu's output (``r1_nchwc``) and an
    activation-fused Conv ``fused <conv>``: both map to the Conv+Relu group."""
    graph, platform, prof = native
    events = [e for e in trace_events(graph, prof.op_latency_us[:, 0]) if e["name"] not in ("n0_kernel_time", "n1_kernel_time",
                                                                                              "n3_kernel_time", "n4_kernel_time")]
    relu1 = graph.nodes[1].outputs[0]
    for name, op, out in ((f"{relu1}_nchwc", "Conv", graph.nodes[1]), ("fused n3", "FusedConv", graph.nodes[4])):
        events.append({"cat": "Node", "name": f"{name}_kernel_time", "dur": 99.0,
                       "args": {"op_name": op, "provider": "CPUExecutionProvider", "parameter_size": "4",
                                "output_type_shape": [{"float": list(out.output_shapes[0])}]}})
    events.append({"cat": "Node", "name": "ReorderOutput_kernel_time", "dur": 3.0,
                   "args": {"op_name": "ReorderOutput", "provider": "CPUExecutionProvider"}})
    path = tmp_path / "optimised.json"
    path.write_text(json.dumps(events))
    with pytest.raises(ProfileError, match=r"lack 4 op\(s\) on cpu: n0, n1, n3, n4"):
        import_profiles(f"cpu={path},fill=emulator", graph, platform, progress=False)
    csv = tmp_path / "four.csv"
    csv.write_text("op,pu,latency_us\n" + "".join(f"n{i},cpu,{prof.op_latency_us[i, 0]}\n" for i in (0, 1, 3, 4)))
    got = import_profiles(f"cpu={path},{csv},fill=emulator", graph, platform, progress=False)
    assert got.groups[(0, 1)][0] == 99.0 and got.groups[(3, 4)][0] == 99.0
    assert got.op_latency_us[0, 0] == prof.op_latency_us[0, 0]


# ---------------------------------------------------------------------------------
# a real ONNX Runtime trace


def _ort_trace(graph: OpGraph, tmp_path: Path, level: str) -> Path:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / f"ort_{level}")
    so.intra_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    sess = ort.InferenceSession(graph.onnx_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in graph.inputs}
    for _ in range(3):
        sess.run(None, feeds)
    return Path(sess.end_profiling())


def test_real_ort_trace_of_squeezenet(native, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from partitiontuner.profiling.ort_trace import map_trace, read_trace

    graph, platform, _ = native
    plain = _ort_trace(graph, tmp_path, "ORT_DISABLE_ALL")
    got = import_profiles(f"cpu={plain}", graph, platform, fill="emulator")
    assert np.isfinite(got.op_latency_us[:, 0]).all(), "every op got a CPU latency"
    assert "65 trace nodes mapped onto cpu" in capsys.readouterr().err
    # the optimised graph fuses ops: every op is in a mapped node or its node is reported
    fused = _ort_trace(graph, tmp_path, "ORT_ENABLE_ALL")
    mapping = map_trace(graph, read_trace(fused, str(fused)), str(fused))
    covered = {v for unit in mapping.units for v in unit}
    assert any(len(u) > 1 for u in mapping.units)
    assert covered == set(range(graph.num_ops)) or mapping.skipped
    # ops ORT fused have a group time but no time of their own: listed, not guessed
    alone = {u[0] for u in mapping.units if len(u) == 1}
    with pytest.raises(ProfileError, match=f"lack {graph.num_ops - len(alone)} op\\(s\\) on cpu"):
        import_profiles(f"cpu={fused}", graph, platform, fill="emulator", progress=False)


# ---------------------------------------------------------------------------------
# bad input: one line, exit 2


def _plan(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["plan", MODEL, "--method", "greedy", "--json", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("partitiontuner: error:"), err
    return err


@pytest.mark.parametrize("rows, message", [
    ("n0,cpu,1\nconv_nope,cpu,2\nn1+relu_x,cpu,3\n", "2 op name(s) not in model 'squeezenet': conv_nope (line 3), relu_x"),
    ("n0,cpu,-1\n", "bad.csv:2: latency_us must be a finite number >= 0, got -1"),
    ("n0,cpu,fast\n", "bad.csv:2: latency_us 'fast' is not a number"),
    ("n0,cpu,nan\n", "finite number >= 0"),
    ("n0,cpu,1\nn0,cpu,2\n", "n0 on cpu is given twice"),
    ("n0,gpu,1\n", "PU(s) not in platform 'cpu-npu' (cpu, npu): gpu (line 2)"),
    ("n0+n2,cpu,1\n", "group n0+n2 on cpu is not a run of consecutive ops"),
    ("n0,cpu\n", "expected 3 fields"),
])
def test_bad_csv(rows: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("op,pu,latency_us\n" + rows)
    assert message in _plan(["--profiles", str(path)], capsys)


def test_bad_sources(native, tmp_path: Path, capsys: pytest.CaptureFixture[str], zoo_graph) -> None:
    graph, _, prof = native
    header = tmp_path / "header.csv"
    header.write_text("name,device,us\n")
    assert "header must be op,pu,latency_us" in _plan(["--profiles", str(header)], capsys)
    assert "unknown profile source 'nope.csv'" in _plan(["--profiles", "nope.csv"], capsys)
    other = zoo_graph("resnet18")
    trace = tmp_path / "resnet18_trace.json"
    trace.write_text(json.dumps(trace_events(other, np.ones(other.num_ops))))
    assert "this trace is not of model 'squeezenet'" in _plan(["--profiles", f"cpu={trace}", "--fill", "emulator"], capsys)
    assert "PU 'gpu' not in platform" in _plan(["--profiles", f"gpu={trace}"], capsys)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert "no node events" in _plan(["--profiles", f"cpu={empty}"], capsys)
    fixture = tmp_path / "fixture.json"
    fixture.write_text('{"format": "partitiontuner-fixture", "version": 1}')
    assert "not a PartitionTuner profile file" in _plan(["--profiles", str(fixture)], capsys)
    cut = tmp_path / "cut.json"
    cut.write_text('[{"cat": "Node", "name": "n0_kernel')
    assert "not valid JSON" in _plan(["--profiles", f"cpu={cut}"], capsys)
    csv = write_csv(prof, tmp_path / "all.csv")
    assert "n0 on cpu is given twice" in _plan(["--profiles", f"{csv},{csv}"], capsys)
    assert "--fill completes imported profile files" in _plan(["--profiles", "fixture", "--fill", "measure"], capsys)


def test_cli_plan_labels_imported_profiles(native, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph, _, prof = native
    path = write_csv(prof, tmp_path / "device.csv", pus=("cpu",))
    assert main(["plan", MODEL, "--method", "greedy", "--profiles", str(path), "--fill", "emulator", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profiles"] == f"imported from {path} (filled by emulator: npu)"
    assert main(["plan", MODEL, "--method", "greedy", "--profiles", "fixture", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["makespan_us"] == out["makespan_us"]


# ---------------------------------------------------------------------------------
# the export format's JSON Schema


def _validate(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """The subset of JSON Schema that profile.schema.json uses."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _validate(value, option, root, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no option ({'; '.join(errors)})")
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    kinds = {"object": dict, "array": list, "string": str, "null": type(None)}
    kind = schema.get("type")
    if kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: not a number"
        assert value >= schema.get("minimum", -math.inf), f"{where}: {value} < minimum"
    elif kind is not None:
        assert isinstance(value, kinds[kind]), f"{where}: not {kind}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        props = schema.get("properties", {})
        for key, v in value.items():
            if key in props:
                _validate(v, props[key], root, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                raise AssertionError(f"{where}: unexpected key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                _validate(v, schema["additionalProperties"], root, f"{where}.{key}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{where}: too few items"
        for k, item in enumerate(value):
            _validate(item, schema.get("items", {}), root, f"{where}[{k}]")


def test_exported_json_validates_against_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = json.loads((resources.files("partitiontuner.profiling") / "profile.schema.json").read_text())
    path = tmp_path / "exported.json"
    assert main(["profile", MODEL, "--profiles", "fixture", "--export", str(path), "--json"]) == 0
    capsys.readouterr()
    data = json.loads(path.read_text())
    _validate(data, schema, schema)
    try:
        import jsonschema
    except ImportError:  # the hand validator above covers what the schema uses
        jsonschema = None
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(data, schema)
    # the validator can fail: a negative latency and an unknown key are refused
    data["ops"][0]["latency_us"]["cpu"] = -1.0
    with pytest.raises(AssertionError, match="minimum"):
        _validate(data, schema, schema)
    data["ops"][0]["latency_us"]["cpu"] = 1.0
    data["extra"] = 1
    with pytest.raises(AssertionError, match="unexpected key 'extra'"):
        _validate(data, schema, schema)
