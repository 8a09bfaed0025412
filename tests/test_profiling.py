"""Profiling: CPU measurement, the disk cache, profile assembly, fixtures, the CLI.

Only tiny hand-built models are timed live (with a short repeat protocol); every
assertion on numbers uses exact relations (equal signatures share a measurement,
speed factors divide, the cache returns what was stored) or the committed fixtures.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitiontuner.branches import chain_groups
from partitiontuner.cli import main
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.onnx_loader import load_graph
from partitiontuner.platform import Platform, load_platform, platform_from_dict, preset_names
from partitiontuner.profiling.build import build_profiles
from partitiontuner.profiling.cache import ProfileCache, host_fingerprint, unit_signature
from partitiontuner.profiling.cpu_profiler import MIN_LATENCY_US, CpuProfiler, MeasureSettings
from partitiontuner.profiling.fixtures import (
    dump_fixture,
    fixture_dir,
    fixture_profiles,
    load_fixture,
)
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.zoo import ZOO, load_model

FAST = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_repeats=3, min_time_s=0.0, max_repeats=5, max_time_s=0.05)


# ---------------------------------------------------------------------------------
# tiny models and platforms


def _chain_model(num_blocks: int = 2, channels: int = 4, spatial: int = 8, tail: str | None = None) -> onnx.ModelProto:
    """``x -> (Conv 3x3 -> Relu) * num_blocks [-> tail]``; every Conv has the same shape."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    t = "x"
    for b in range(num_blocks):
        w = f"w{b}"
        inits.append(numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.2, w))
        nodes.append(helper.make_node("Conv", [t, w], [f"c{b}"], name=f"conv{b}", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{b}"], [f"r{b}"], name=f"relu{b}"))
        t = f"r{b}"
    if tail:
        nodes.append(helper.make_node(tail, [t], ["y"], name="tail", **({"axis": 1} if tail == "Softmax" else {})))
        t = "y"
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, spatial, spatial])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, channels, spatial, spatial])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _residual_model() -> onnx.ModelProto:
    """``x -> Conv -> Relu -> Add(., x) -> Relu``: an Add that reads two tensors."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu_out"),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _graph(model: onnx.ModelProto, name: str = "chain") -> OpGraph:
    return load_graph(model, name=name)


def _platform(cpus: list[dict], npu_supports: list[str] | None = None) -> Platform:
    pus = [{"kind": "cpu", "dispatch_overhead_us": 5.0, **c} for c in cpus]
    if npu_supports is not None:
        pus.append({"name": "npu", "kind": "npu", "dispatch_overhead_us": 20.0, "max_conv_groups": 1,
                    "supports": npu_supports,
                    "npu": {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0}})
    names = [p["name"] for p in pus]
    links = [{"between": [a, b], "latency_us": 10.0, "bandwidth_gbps": 5.0}
             for i, a in enumerate(names) for b in names[i + 1:]]
    return platform_from_dict({"name": "test", "pus": pus, "links": links})


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("PARTITIONTUNER_CACHE", str(d))
    return d


def _build(graph: OpGraph, platform: Platform, **kw) -> tuple[Profiles, int]:
    """Profiles and the number of ORT sessions built to get them."""
    before = CpuProfiler.sessions_total
    prof = build_profiles(graph, platform, progress=False, settings=FAST, **kw)
    return prof, CpuProfiler.sessions_total - before


# ---------------------------------------------------------------------------------
# measuring and caching


def test_distinct_units_measured_once_and_cache_hit_creates_no_sessions(cache_dir: Path) -> None:
    g = _graph(_chain_model(2))  # conv0 relu0 conv1 relu1: conv0 == conv1 in shape
    plat = _platform([{"name": "cpu"}])
    prof, sessions = _build(g, plat)
    # units: Conv, Relu; (Conv,Relu) twice, (Relu,Conv); (Conv,Relu,Conv), (Relu,Conv,Relu)
    # -> 2 + 2 + 2 distinct signatures, plus the baseline session
    assert sessions == 7
    assert len(list(cache_dir.rglob("*.json"))) == 6
    lat = prof.op_latency_us[:, 0]
    assert lat[0] == lat[2] and lat[1] == lat[3]
    assert prof.groups[(0, 1)][0] == prof.groups[(2, 3)][0]
    assert np.all(lat >= MIN_LATENCY_US) and np.all(np.isfinite(prof.op_spread[:, 0]))

    again, sessions = _build(g, plat, cache=ProfileCache())
    assert sessions == 0
    np.testing.assert_array_equal(again.op_latency_us, prof.op_latency_us)
    assert {k: list(v) for k, v in again.groups.items()} == {k: list(v) for k, v in prof.groups.items()}
    assert again.source == "measured" and again.host == ProfileCache().host


def test_every_chain_group_profiled_with_nan_where_a_member_cannot_run(cache_dir: Path) -> None:
    g = _graph(_chain_model(2, tail="Softmax"))
    plat = _platform([{"name": "cpu"}], npu_supports=["Conv", "Relu"])
    prof, _ = _build(g, plat)
    cands = chain_groups(g)
    assert set(prof.groups) == {tuple(sorted(c)) for c in cands} and len(cands) == 4 + 3
    softmax = g.index["tail"]
    assert math.isnan(prof.op_latency_us[softmax, 1]) and np.isfinite(prof.op_latency_us[:, 0]).all()
    assert np.isfinite(np.delete(prof.op_latency_us[:, 1], softmax)).all()
    assert np.isnan(prof.op_spread[:, 1]).all()  # emulated, not measured
    for key, lat in prof.groups.items():
        assert np.isfinite(lat[0]) and lat[0] >= MIN_LATENCY_US
        assert math.isnan(lat[1]) == (softmax in key), key


def test_speed_factor_divides_and_thread_counts_are_measured_separately(cache_dir: Path) -> None:
    g = _graph(_residual_model(), "residual")
    plat = _platform([{"name": "big"}, {"name": "little", "speed_factor": 0.25}])
    prof, sessions = _build(g, plat)
    big, little = prof.op_latency_us[:, 0], prof.op_latency_us[:, 1]
    np.testing.assert_allclose(little, big / 0.25)
    for lat in prof.groups.values():
        assert lat[1] == pytest.approx(lat[0] / 0.25)
    # one thread count: measured once for both cores
    units = {unit_signature(g, (i,)) for i in range(g.num_ops)} | {unit_signature(g, c) for c in chain_groups(g)}
    assert sessions == len(units) + 1

    two = _platform([{"name": "cpu1"}, {"name": "cpu2", "threads": 2}])
    prof2, sessions = _build(g, two, cache=ProfileCache())
    assert sessions == len(units) + 1  # 1 thread from the cache, 2 threads measured
    np.testing.assert_array_equal(prof2.op_latency_us[:, 0], big)


def test_unit_signature_captures_internal_wiring() -> None:
    g = _graph(_residual_model(), "residual")
    conv, relu, add, relu_out = range(4)
    # same op types, different wiring: relu feeds add, vs add's inputs both external
    sig_chain = unit_signature(g, (relu, add))
    sig_single = unit_signature(g, (add,))
    assert sig_chain != unit_signature(g, (add, relu_out))
    assert json.loads(sig_single)[0][0][1] == [["x", 0], ["x", 1]]
    assert json.loads(sig_chain)[0][1][1] == [["m", 0, 0], ["x", 1]]  # relu reads ext 0 (c)
    cache = ProfileCache("/nonexistent")
    assert cache.key(sig_chain, 1) != cache.key(sig_chain, 2)
    assert cache.key(sig_chain, 1) == ProfileCache("/elsewhere").key(sig_chain, 1)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered", "empty"])
def test_corrupt_cache_entry_is_reported_and_remeasured(cache_dir: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    g = _graph(_chain_model(1))
    plat = _platform([{"name": "cpu"}])
    prof, _ = _build(g, plat)
    files = sorted(cache_dir.rglob("*.json"))
    assert len(files) == 3  # Conv, Relu, Conv-Relu
    victim = files[0]
    text = victim.read_text()
    if damage == "garbage":
        victim.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        victim.write_text(text[: len(text) // 2])
    elif damage == "tampered":
        data = json.loads(text)
        data["payload"]["latency_us"] *= 2
        victim.write_text(json.dumps(data))
    else:
        victim.write_text("")
    with caplog.at_level(logging.WARNING, logger="partitiontuner.profiling.cache"):
        cache = ProfileCache()
        again, sessions = _build(g, plat, cache=cache)
    assert sessions == 2  # the damaged unit and the baseline, nothing else
    assert cache.corrupt == 1 and cache.hits == 2
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and str(victim) in warned[0] and "\n" not in warned[0] and "re-measuring" in warned[0]
    assert json.loads(victim.read_text())["key"] == victim.stem  # rewritten, valid
    assert again.op_latency_us.shape == prof.op_latency_us.shape and np.isfinite(again.op_latency_us).all()
    _, sessions = _build(g, plat, cache=ProfileCache())
    assert sessions == 0


def test_changed_machine_reprofiles(cache_dir: Path) -> None:
    g = _graph(_chain_model(1))
    plat = _platform([{"name": "cpu"}])
    _, first = _build(g, plat)
    other = {**host_fingerprint(), "cpu": "Some Other CPU"}
    cache = ProfileCache(fingerprint=other)
    prof, sessions = _build(g, plat, cache=cache)
    assert sessions == first == 4 and cache.hits == 0
    assert prof.host == cache.host != ProfileCache().host
    _, sessions = _build(g, plat, cache=ProfileCache())  # the original machine still hits
    assert sessions == 0


def test_unwritable_cache_warns_once_and_still_profiles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    g = _graph(_chain_model(1))
    with caplog.at_level(logging.WARNING, logger="partitiontuner.profiling.cache"):
        prof, sessions = _build(g, _platform([{"name": "cpu"}]), cache=ProfileCache(blocker))
    assert sessions == 4 and np.isfinite(prof.op_latency_us).all()
    assert len(caplog.records) == 1 and "cannot write the profile cache" in caplog.records[0].getMessage()


def test_refresh_remeasures_each_unit_once(cache_dir: Path) -> None:
    g = _graph(_chain_model(2))
    plat = _platform([{"name": "cpu"}, {"name": "little", "speed_factor": 0.5}])
    _build(g, plat)
    cache = ProfileCache()
    _, sessions = _build(g, plat, cache=cache, refresh=True)
    assert sessions == 7
    _, sessions = _build(g, plat, cache=cache, refresh=True)  # fresh in this cache object
    assert sessions == 0


def test_profiler_reports_baseline_and_floors_latency() -> None:
    g = _graph(_chain_model(1))
    profiler = CpuProfiler(1, FAST)
    m = profiler.measure(g, [1])
    assert profiler.sessions_created == 2
    assert m.baseline_us == profiler.baseline_us > 0
    assert m.latency_us == max(m.median_us - m.baseline_us, MIN_LATENCY_US)
    assert FAST.min_repeats <= m.repeats <= FAST.max_repeats
    profiler.measure(g, [0, 1])
    assert profiler.sessions_created == 3  # the baseline is measured once
    with pytest.raises(ProfileError, match="thread count"):
        CpuProfiler(0)


def test_progress_bar_goes_to_stderr(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = _graph(_chain_model(1))
    build_profiles(g, _platform([{"name": "cpu"}]), progress=True, settings=FAST)
    out, err = capsys.readouterr()
    assert out == "" and "profiling chain" in err


def test_profiles_json_round_trip(cache_dir: Path, tmp_path: Path) -> None:
    g = _graph(_chain_model(2, tail="Softmax"))
    plat = _platform([{"name": "cpu"}], npu_supports=["Conv", "Relu"])
    prof, _ = _build(g, plat)
    back = Profiles.from_dict(json.loads(json.dumps(prof.to_dict())))
    np.testing.assert_allclose(back.op_latency_us, prof.op_latency_us, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(back.op_spread, prof.op_spread, atol=1e-4, equal_nan=True)
    assert set(back.groups) == set(prof.groups)
    for k in prof.groups:
        np.testing.assert_allclose(back.groups[k], prof.groups[k], atol=1e-4, equal_nan=True)
    assert (back.model_hash, back.pus, back.source, back.host) == (prof.model_hash, prof.pus, "measured", prof.host)
    path = tmp_path / "p.json"
    prof.save_json(path)
    Profiles.load_json(path).check_matches(g, plat)


# ---------------------------------------------------------------------------------
# fixtures


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("model", list(ZOO))
def test_fixture_profiles_on_every_preset(model: str, preset: str) -> None:
    g, plat = load_model(model), load_platform(preset)
    prof = fixture_profiles(g, plat)
    prof.check_matches(g, plat)
    assert prof.source == "fixture" and prof.host == load_fixture(model).host
    for j, dev in enumerate(plat.devices):
        can = np.array([dev.can_run(op) for op in g.nodes])
        col = prof.op_latency_us[:, j]
        assert np.array_equal(np.isfinite(col), can), dev.name
        assert (col[can] >= 0).all()  # the emulator's views (Reshape, Flatten) cost 0
        if dev.kind == "cpu":
            assert can.all() and (col >= MIN_LATENCY_US / dev.speed_factor).all()
        for key, lat in prof.groups.items():
            assert np.isfinite(lat[j]) == bool(can[list(key)].all()), (dev.name, key)
    assert set(prof.groups) == {tuple(sorted(c)) for c in chain_groups(g)}


def test_fixture_cpu_numbers_follow_speed_factor() -> None:
    g = load_model("squeezenet")
    plat = load_platform("big-little-npu")
    prof = fixture_profiles(g, plat)
    fx = load_fixture("squeezenet")
    big, little = plat.names.index("big"), plat.names.index("little")
    speed = plat.device("little").speed_factor
    for op in g.nodes:
        assert prof.op_latency_us[op.index, big] == fx.ops[op.name][0]
        assert prof.op_latency_us[op.index, little] == pytest.approx(fx.ops[op.name][0] / speed)
    # NPU columns are the same whatever the CPU: cpu-npu and cpu-2npu share the NPU
    a = fixture_profiles(g, load_platform("cpu-npu"))
    b = fixture_profiles(g, load_platform("cpu-2npu"))
    np.testing.assert_array_equal(a.op_latency_us[:, 1], b.op_latency_us[:, 1])
    np.testing.assert_array_equal(b.op_latency_us[:, 1], b.op_latency_us[:, 2])


def test_fixture_profiles_refuse_what_was_not_measured() -> None:
    only = "fixture profiles exist only for the built-in models"
    with pytest.raises(ProfileError, match=only):
        fixture_profiles(_graph(_chain_model(1)), load_platform("cpu-npu"))
    with pytest.raises(ProfileError, match=f"{only}.*2 threads"):
        fixture_profiles(load_model("squeezenet"), load_platform("cpu-npu").with_cpu_threads(2))
    with pytest.raises(ProfileError, match=f"{only}.*differs from the one measured"):
        fixture_profiles(load_model("squeezenet", batch_size=2), load_platform("cpu-npu"))


def test_fixture_files_are_compact_and_parse_back() -> None:
    for model in ZOO:
        path = fixture_dir() / f"{model}.json"
        assert path.stat().st_size < 150_000, model
        data = json.loads(path.read_text())
        assert json.loads(dump_fixture(data)) == data
        assert data["threads"] == 1 and data["model_hash"] == load_model(model).content_hash
        assert all(round(t, 2) == t for _, t, _ in data["ops"])


# ---------------------------------------------------------------------------------
# CLI


def test_cli_profile_json_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    export = tmp_path / "sq.json"
    assert main(["profile", "squeezenet", "--profiles", "fixture", "--json", "--export", str(export)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "squeezenet" and out["platform"] == "cpu-npu"
    g = load_model("squeezenet")
    expected = fixture_profiles(g, load_platform("cpu-npu"))
    assert [o["name"] for o in out["ops"]] == [n.name for n in g.nodes]
    for o in out["ops"]:
        assert set(o) >= {"name", "op_type", "latency_us"} and set(o["latency_us"]) == {"cpu", "npu"}
        i = g.index[o["name"]]
        assert o["op_type"] == g.nodes[i].op_type
        for j, pu in enumerate(("cpu", "npu")):
            v = o["latency_us"][pu]
            assert (v is None) == math.isnan(expected.op_latency_us[i, j])
            assert v is None or v == pytest.approx(expected.op_latency_us[i, j], abs=1e-3)
    assert len(out["groups"]) == len(expected.groups)
    for grp in out["groups"]:
        assert set(grp) >= {"ops", "latency_us"} and len(grp["ops"]) in (2, 3)
        assert all(v is None or isinstance(v, float) for v in grp["latency_us"].values())
    # the export loads back and serves as a profile source
    assert main(["profile", "squeezenet", "--profiles", str(export), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [o["latency_us"] for o in again["ops"]] == [o["latency_us"] for o in out["ops"]]


def test_cli_profile_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "resnet18", "--platform", "big-little-npu", "--profiles", "fixture"]) == 0
    out = capsys.readouterr().out
    assert "op latency" in out and "op groups" in out and "conv0" in out and "little" in out
    assert "80 groups" in out


def test_cli_bad_platform_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["profile", "squeezenet", "--platform", "no-such-platform", "--profiles", "fixture"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown platform 'no-such-platform'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npus: [ {name: cpu\n")
    assert main(["profile", "squeezenet", "--platform", str(bad), "--profiles", "fixture"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid YAML" in err
    assert main(["profile", "squeezenet", "--profiles", "fixture", "--threads", "4"]) == 2
    assert "fixture profiles exist only" in capsys.readouterr().err
