"""A runtime per PU (issue 18, items 2 and 3): the platform file's ``runtime``,
``providers``, ``provider_options`` and ``cores`` keys, checked against this host; the
profiler and the executor run each PU with its settings; the ``cpu-cpu`` preset runs
plans on two real cores with outputs equal to the whole-model run.

No timing is asserted: only what the settings make happen (which sessions, which
cores, which cache keys, which partitions are emulated).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from graphs import diamond, problem

from partitiontuner import execute
from partitiontuner.cli import main
from partitiontuner.errors import ConfigError, ProfileError
from partitiontuner.execute import Executor, core_map, run_plan
from partitiontuner.graph import OpGraph
from partitiontuner.plan import make_plan
from partitiontuner.platform import (
    CPU_PROVIDER,
    OrtSettings,
    Platform,
    load_platform,
    platform_from_dict,
)
from partitiontuner.problem import Problem
from partitiontuner.profiling import ort_runtime
from partitiontuner.profiling.build import build_profiles
from partitiontuner.profiling.cache import ProfileCache
from partitiontuner.profiling.cpu_profiler import CpuProfiler, MeasureSettings
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.zoo import load_model

FAST = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_repeats=3, min_time_s=0.0, max_repeats=5, max_time_s=0.05)
USABLE = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
two_cores = pytest.mark.skipif(len(USABLE) < 2 or USABLE[:2] != [0, 1], reason="cpu-cpu needs cores 0 and 1")
any_two_cores = pytest.mark.skipif(len(USABLE) < 2, reason="needs two usable cores")


def platform(*pus: dict, name: str = "t") -> dict:
    """A platform document: ``pus`` (CPU defaults filled in) and a link between each pair."""
    pus = [{"kind": "cpu", "dispatch_overhead_us": 5.0, **p} for p in pus]
    names = [p["name"] for p in pus]
    links = [{"between": [a, b], "latency_us": 3.0, "bandwidth_gbps": 20.0}
             for i, a in enumerate(names) for b in names[i + 1:]]
    return {"name": name, "pus": pus, "links": links}


def npu(**kw) -> dict:
    return {"name": "npu", "kind": "npu", "dispatch_overhead_us": 20.0, "supports": ["Relu", "Add"], **kw}


EMULATOR = {"rows": 16, "cols": 16, "clock_mhz": 500.0, "dram_bandwidth_gbps": 10.0}


def load_doc(*pus: dict) -> Platform:
    return platform_from_dict(platform(*pus))


def hand_profiles(g: OpGraph, pf: Platform) -> Profiles:
    """5 us per op on every PU: the executor only needs some profile to simulate against."""
    return problem(g, pf, {n.name: [5.0] * pf.num_pus for n in g.nodes}).profiles


# ---------------------------------------------------------------------------------
# platform file


def test_defaults_keep_existing_presets_and_their_profile_keys_unchanged() -> None:
    for name in ("cpu-npu", "cpu-2npu", "big-little-npu", "zcu102-vta"):
        for d in load_platform(name).devices:
            assert d.runtime == ("onnxruntime" if d.kind == "cpu" else "emulated")
            assert d.providers == (CPU_PROVIDER,) and d.provider_options == () and d.cores is None
            assert set(d.settings) <= {"kind", "threads", "speed_factor", "npu"}
    cache = ProfileCache("/nowhere", fingerprint={"host": "x"})
    assert cache.key("sig", 1) == cache.key("sig", OrtSettings(1))  # old cache entries stay valid
    assert cache.key("sig", 2) == cache.key("sig", OrtSettings(2))
    assert len({cache.key("sig", OrtSettings(1, cores=(0,))), cache.key("sig", OrtSettings(1, cores=(1,))),
                cache.key("sig", OrtSettings(1, providers=("AzureExecutionProvider", CPU_PROVIDER))),
                cache.key("sig", 1)}) == 4


def test_cpu_cpu_preset_names_two_pinned_one_thread_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    pf = load_platform("cpu-cpu")
    assert pf.names == ("cpu0", "cpu1") and pf.host == "cpu0"
    assert [d.ort for d in pf.devices] == [OrtSettings(1, (CPU_PROVIDER,), (), (0,)), OrtSettings(1, (CPU_PROVIDER,), (), (1,))]
    assert [d.settings.get("cores") for d in pf.devices] == [[0], [1]]
    assert not any(d.emulated for d in pf.devices)


def test_cpu_cpu_preset_fails_clearly_on_a_host_with_one_usable_core(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(ConfigError, match=r"pu 'cpu1': core 1 not available \(this process may use 0\)"):
        load_platform("cpu-cpu")
    assert main(["plan", "squeezenet", "--platform", "cpu-cpu", "--profiles", "fixture", "--method", "greedy"]) == 2
    err = capsys.readouterr().err
    assert err.count("partitiontuner: error:") == 1 and "core 1 not available" in err and "Traceback" not in err


def test_an_npu_may_run_on_onnxruntime_with_named_providers() -> None:
    pf = load_doc({"name": "cpu"}, npu(runtime="onnxruntime", providers=[CPU_PROVIDER],
                                                   provider_options=[{"some_option": 3, "flag": True}]))
    d = pf.device("npu")
    assert not d.emulated and d.npu is None  # no emulator section needed
    assert d.provider_options == ((("flag", "1"), ("some_option", "3")),)
    assert d.ort.options() == [{"flag": "1", "some_option": "3"}]
    assert d.settings["runtime"] == "onnxruntime" and d.settings["provider_options"] == [{"flag": "1", "some_option": "3"}]
    assert pf.device("cpu").settings == {"kind": "cpu", "threads": 1, "speed_factor": 1.0}


@pytest.mark.parametrize("edit, message", [
    ({"runtime": "tvm"}, "runtime must be one of emulated, onnxruntime, got 'tvm'"),
    ({"runtime": "emulated"}, "only an NPU can be emulated"),
    ({"providers": ["NoSuchExecutionProvider"]},
     "execution provider 'NoSuchExecutionProvider' is not installed in this ONNX Runtime"),
    ({"providers": []}, "'providers' must be a non-empty list"),
    ({"providers": "CPUExecutionProvider"}, "'providers' must be a non-empty list"),
    ({"providers": [CPU_PROVIDER, CPU_PROVIDER]}, "lists 'CPUExecutionProvider' twice"),
    ({"provider_options": [{}, {}]}, "'provider_options' has 2 entries for 1 provider(s)"),
    ({"provider_options": {"a": 1}}, "'provider_options' must be a list of mappings"),
    ({"provider_options": [{"a": [1, 2]}]}, "option 'a' must be a name with a string, number or boolean value"),
    ({"cores": 0}, "'cores' must be a non-empty list of core numbers"),
    ({"cores": [-1]}, "'cores' must be a non-empty list of core numbers"),
    ({"cores": [0, 0]}, "'cores' lists core 0 twice"),
    ({"cores": [4096]}, "core 4096 not available (this process may use "),
    ({"cores": [0], "threads": 2}, "2 threads need as many cores, but 'cores' lists 1"),
])
def test_bad_runtime_keys_are_one_clear_error(edit: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_doc({"name": "cpu", **edit})
    assert message in str(exc.value) and "pu 'cpu'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_provider_error_names_the_installed_ones() -> None:
    import onnxruntime as ort

    with pytest.raises(ConfigError) as exc:
        load_doc({"name": "cpu", "providers": ["TensorrtExecutionProvider", CPU_PROVIDER]})
    assert f"(installed: {', '.join(ort.get_available_providers())})" in str(exc.value)


@pytest.mark.parametrize("edit, message", [
    (npu(npu=EMULATOR, providers=[CPU_PROVIDER]), "is an ONNX Runtime setting, but the PU is emulated"),
    (npu(npu=EMULATOR, cores=[0]), "'cores' is an ONNX Runtime setting"),
    (npu(runtime="onnxruntime"), "an NPU with runtime onnxruntime must name its execution 'providers'"),
    (npu(), "an NPU needs an 'npu' section"),
])
def test_npu_runtime_rules(edit: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_doc({"name": "cpu"}, edit)


def test_bad_platform_file_on_the_command_line_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(platform({"name": "cpu", "providers": ["NoSuchExecutionProvider"]})))
    assert main(["plan", "squeezenet", "--platform", str(path), "--profiles", "fixture", "--method", "greedy"]) == 2
    err = capsys.readouterr().err
    assert err.count("partitiontuner: error:") == 1 and "Traceback" not in err
    assert "NoSuchExecutionProvider" in err and "installed: " in err


@any_two_cores
def test_more_threads_than_pinned_cores_is_refused() -> None:
    pf = load_doc({"name": "cpu", "cores": [USABLE[0]]})
    with pytest.raises(ConfigError, match="pinned to core .*: 2 threads need as many cores"):
        pf.with_cpu_threads(2)


# ---------------------------------------------------------------------------------
# sessions, cores and the profiler


def test_session_options_pin_ort_pool_threads_to_the_pu_cores() -> None:
    so = ort_runtime.session_options(OrtSettings(3, cores=(4, 6, 7)))
    assert so.intra_op_num_threads == 3
    assert so.get_session_config_entry("session.intra_op_thread_affinities") == "7;8"  # ORT counts from 1
    assert ort_runtime.caller_cores(OrtSettings(3, cores=(4, 6, 7))) == (4,)
    assert ort_runtime.caller_cores(OrtSettings(1, cores=(2, 3))) == (2, 3)
    assert ort_runtime.caller_cores(OrtSettings(1)) is None


def test_core_map_always_pins_named_cores_and_places_the_rest_elsewhere() -> None:
    pf = platform_from_dict(platform({"name": "a", "cores": [USABLE[0]]}, {"name": "b"}, npu(npu=EMULATOR)))
    c = USABLE[0]
    assert core_map(pf, [0, 1, 2], pin_all=False) == {0: (c,)}
    others = [x for x in range(8) if x != c]
    assert core_map(pf, [0, 1, 2], available=[c, *others[:2]]) == {0: (c,), 1: (others[0],), 2: (others[1],)}
    assert core_map(pf, [0, 1, 2], available=[c]) == {0: (c,), 1: (c,), 2: (c,)}  # only named cores: share


def test_clock_is_cpu_time_only_for_one_thread_on_the_cpu_provider() -> None:
    import time

    assert CpuProfiler(1).clock is time.thread_time_ns
    assert CpuProfiler(OrtSettings(1, cores=(0,))).clock is time.thread_time_ns
    assert CpuProfiler(2).clock is time.perf_counter_ns
    assert CpuProfiler(OrtSettings(1, providers=("AzureExecutionProvider", CPU_PROVIDER))).clock is time.perf_counter_ns


@any_two_cores
def test_profiler_measures_each_pinned_pu_on_its_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = diamond()
    c0, c1 = USABLE[:2]
    pins: list[tuple[int, ...]] = []
    real_pin = ort_runtime.pin_thread
    monkeypatch.setattr(ort_runtime, "pin_thread", lambda cores: (pins.append(tuple(cores)), real_pin(cores)))
    before = os.sched_getaffinity(0)
    pinned = platform_from_dict(platform({"name": "cpu0", "cores": [c0]}, {"name": "cpu1", "cores": [c1]}))
    profilers: dict = {}
    prof = build_profiles(g, pinned, progress=False, settings=FAST, cache=ProfileCache(tmp_path / "c1"),
                          profilers=profilers)
    assert set(profilers) == {pinned.devices[0].ort, pinned.devices[1].ort}  # each PU measured on its own
    assert set(pins) == {(c0,), (c1,)}
    assert os.sched_getaffinity(0) == before  # restored after measuring
    assert np.isfinite(prof.op_latency_us).all() and prof.source == "measured"
    # unpinned CPUs with equal settings share one measurement, as before
    profilers = {}
    plain = platform_from_dict(platform({"name": "cpu0"}, {"name": "cpu1"}))
    prof = build_profiles(g, plain, progress=False, settings=FAST, cache=ProfileCache(tmp_path / "c2"), profilers=profilers)
    assert list(profilers) == [OrtSettings(1)]
    assert (prof.op_latency_us[:, 0] == prof.op_latency_us[:, 1]).all()


def test_fixture_profiles_cover_pinned_cpus_but_not_other_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    g = load_model("squeezenet")
    prof = fixture_profiles(g, load_platform("cpu-cpu"))
    one = fixture_profiles(g, load_platform("cpu-npu"))
    assert (prof.op_latency_us[:, 0] == one.op_latency_us[:, 0]).all()
    assert (prof.op_latency_us[:, 1] == one.op_latency_us[:, 0]).all()
    other = load_doc({"name": "cpu", "providers": ["AzureExecutionProvider", CPU_PROVIDER]})
    with pytest.raises(ProfileError, match="runs on AzureExecutionProvider, CPUExecutionProvider: use measured"):
        fixture_profiles(g, other)


def test_an_onnxruntime_npu_is_profiled_like_a_cpu_not_emulated() -> None:
    g = load_model("squeezenet")
    pf = load_doc({"name": "cpu"}, npu(runtime="onnxruntime", providers=[CPU_PROVIDER],
                                                   supports=["Conv", "Relu"]))
    prof = fixture_profiles(g, pf)
    can = np.array([op.op_type in ("Conv", "Relu") for op in g.nodes])
    assert (prof.op_latency_us[can, 1] == prof.op_latency_us[can, 0]).all()
    assert np.isnan(prof.op_latency_us[~can, 1]).all()


# ---------------------------------------------------------------------------------
# executing


@two_cores
def test_cpu_cpu_plan_runs_on_both_cores_with_the_whole_model_outputs() -> None:
    from partitiontuner.agents.registry import make_planner

    g, pf = load_model("squeezenet"), load_platform("cpu-cpu")
    p = Problem(g, pf, fixture_profiles(g, pf))
    plan = make_planner("heft").plan(p)
    assert {q.device for q in plan.partitions} == {"cpu0", "cpu1"}
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert res.outputs_match, res.max_abs_error
    assert res.emulated_pus == () and not any(q.emulated for q in res.partitions)
    assert res.pinned_cores == {"cpu0": (0,), "cpu1": (1,)}
    assert res.runtimes == {"cpu0": "onnxruntime (CPUExecutionProvider, 1 thread, core 0)",
                            "cpu1": "onnxruntime (CPUExecutionProvider, 1 thread, core 1)"}
    assert any("ran for real" in n for n in res.notes) and not any("emulated" in n for n in res.notes)


@any_two_cores
def test_measured_profiles_plan_and_run_on_two_pinned_cpus(tmp_cache: Path) -> None:
    g = diamond(elems=4096)
    c0, c1 = USABLE[:2]
    pf = platform_from_dict(platform({"name": "cpu0", "cores": [c0]}, {"name": "cpu1", "cores": [c1]}))
    p = Problem(g, pf, build_profiles(g, pf, progress=False, settings=FAST))
    plan = make_plan(p, [([0, 1], "cpu0"), ([2], "cpu1"), ([3], "cpu0")], "hand")
    res = run_plan(p, plan, repeat=2, warmup=1)
    assert res.outputs_match and res.emulated_pus == ()
    assert res.pinned_cores == {"cpu0": (c0,), "cpu1": (c1,)}


def test_an_onnxruntime_npu_really_runs_its_partitions() -> None:
    g = diamond()
    pf = load_doc({"name": "cpu"}, npu(runtime="onnxruntime", providers=[CPU_PROVIDER]))
    emulated = load_doc({"name": "cpu"}, npu(npu=EMULATOR))
    for platform_, is_emulated in ((pf, False), (emulated, True)):
        p = Problem(g, platform_, hand_profiles(g, platform_))
        plan = make_plan(p, [([0], "cpu"), ([1, 2, 3], "npu")], "hand")
        ex = Executor(p, plan)
        assert [s.emulated for s in ex.steps] == [False, is_emulated]
        assert (ex.steps[1].session is None) == is_emulated
        res = ex.result(ex.run(1))
        assert res.outputs_match
        assert res.emulated_pus == (("npu",) if is_emulated else ())
        assert res.runtimes["npu"] == ("emulated" if is_emulated else "onnxruntime (CPUExecutionProvider, 1 thread)")


def test_a_session_that_cannot_be_built_names_the_pu_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    g = diamond()
    pf = load_doc({"name": "cpu", "provider_options": [{"opt": 1}]})
    p = Problem(g, pf, hand_profiles(g, pf))
    plan = make_plan(p, [([0, 1, 2, 3], "cpu")], "hand")
    real = onnxruntime.InferenceSession
    seen = []

    def refuse(model, so, providers, provider_options):
        seen.append(provider_options)
        if provider_options != [{"opt": "1"}]:  # the whole-model reference run
            return real(model, so, providers=providers, provider_options=provider_options)
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : unknown option opt\nmore detail")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(execute.PartitionTunerError) as exc:
        Executor(p, plan)
    assert str(exc.value) == ("ONNX Runtime cannot build a session for partition 0 (cpu) (CPUExecutionProvider, "
                              "1 thread): [ONNXRuntimeError] : 1 : FAIL : unknown option opt")
    assert seen == [[{}], [{"opt": "1"}]]
