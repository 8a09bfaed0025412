"""Calibration: the fit recovers known parameters from a fake executor's runs (known
launch and link costs, noise, outliers); storage survives corruption, foreign files
and interruption; a calibrated problem says so; the statistics helpers."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
from graphs import chain, problem, two_pu_platform

from partitiontuner import calibrate as cal_mod
from partitiontuner import microbench
from partitiontuner.calibrate import (
    Calibration,
    LinkFit,
    OutputEvent,
    Params,
    PartitionEvent,
    apply,
    calibrated_platform,
    fit,
    load_calibration,
    nnls,
    save_calibration,
)
from partitiontuner.execute import Executor
from partitiontuner.microbench import events_of, microbenchmark_plans
from partitiontuner.plan import Plan, validate_plan
from partitiontuner.platform import load_platform
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.simulate import Simulator, simulate
from partitiontuner.stats import kendall_tau, load_warning, spread_warning, summarize
from partitiontuner.zoo import load_model


def zoo(name: str, platform: str) -> Problem:
    g, pf = load_model(name), load_platform(platform)
    return Problem(g, pf, fixture_profiles(g, pf))


# ---------------------------------------------------------------------------------
# a fake executor with known costs


def fake_runs(p: Problem, plan: Plan, true: Params, rng: random.Random, runs: int = 3,
              noise_us: float = 2.0, outlier_rate: float = 0.02,
              scale: dict[str, float] | None = None) -> list[PartitionEvent | OutputEvent]:
    """Events of ``runs`` runs of ``plan`` on a machine whose launch and link costs are
    ``true``: the plan's partitions in sequence, each starting when its PU is free and
    its inputs have arrived (plus a small hand-off jitter), lasting scale * work + launch
    (plus noise; now and then a preemption adds 300-800 us); ``scale`` per PU, default 1."""
    names, g = p.pus, p.graph
    sim = Simulator(p)
    owner = {v: i for i, q in enumerate(plan.partitions) for v in q.ops}
    out: list[PartitionEvent | OutputEvent] = []
    for _ in range(runs):
        end: list[float] = []
        free = {pu: 0.0 for pu in names}
        for i, q in enumerate(plan.partitions):
            pu = q.device
            ins: dict[str, tuple[str, float, int]] = {}
            for v in q.ops:
                for t in g.nodes[v].inputs:
                    j = owner.get(g.producer[t]) if t in g.producer else -1
                    if j == i:
                        continue
                    src = p.platform.host if j == -1 else plan.partitions[j].device
                    if src != pu and t not in ins:
                        ins[t] = (src, 0.0 if j == -1 else end[j], g.tensors[t].size_bytes)
            ready = max([free[pu], *(e + true.transfer_us(s, pu, b) for s, e, b in ins.values())])
            start = ready + abs(rng.gauss(0.0, noise_us))
            work = sim.work(q.ops, names.index(pu))
            dur = (scale or {}).get(pu, 1.0) * work + true.launch_us[pu] + rng.gauss(0.0, noise_us)
            if rng.random() < outlier_rate:
                dur += rng.uniform(300, 800)
            out.append(PartitionEvent(pu, work, free[pu], start, start + dur, tuple(ins.values())))
            end.append(start + dur)
            free[pu] = start + dur
        host = p.platform.host
        outs = tuple((plan.partitions[owner[g.output_producers[t.name]]].device, end[owner[g.output_producers[t.name]]],
                      t.size_bytes) for t in g.outputs if plan.partitions[owner[g.output_producers[t.name]]].device != host)
        if outs:
            finish = max(free[host], *(e + true.transfer_us(s, host, b) for s, e, b in outs)) + abs(rng.gauss(0, noise_us))
            out.append(OutputEvent(host, free[host], finish, outs))
    return out


@pytest.mark.parametrize(("platform", "cpu_scale"), [("cpu-npu", 1.0), ("cpu-2npu", 1.0), ("cpu-npu", 1.4)])
def test_fit_recovers_known_parameters_from_a_fake_executor(platform: str, cpu_scale: float) -> None:
    raw = load_platform(platform)
    rng = random.Random(3)
    base = Params.of(raw)
    true = Params(
        {pu: 40.0 + 15.0 * k for k, pu in enumerate(raw.names)},
        {k: v + 35.0 for k, v in base.latency_us.items()},
        {k: v * 1.5 for k, v in base.us_per_byte.items()},
    )
    scale = {"cpu": cpu_scale}
    events: list = []
    for model in ("squeezenet", "resnet18"):
        p = zoo(model, platform)
        for plan in microbenchmark_plans(p):
            validate_plan(p, plan)
            events += fake_runs(p, plan, true, rng, scale=scale)
    cal = fit(events, raw)
    for pu in raw.names:
        assert cal.work_scale.get(pu, 1.0) == pytest.approx(scale.get(pu, 1.0), rel=0.03), pu
        # the hand-off jitter (|N(0, 2)|, mean 1.6 us) is part of the launch cost
        assert cal.launch_us[pu] == pytest.approx(true.launch_us[pu] + 1.6, abs=4.0), pu
    assert cal.links, "mixed plans must produce transfer samples"
    for key, f in cal.links.items():
        if f.samples < 10:
            continue
        assert f.latency_us == pytest.approx(true.latency_us[key], abs=6.0), key
        assert f.us_per_byte == pytest.approx(true.us_per_byte[key], rel=0.25), key
    # the simulator with the fitted numbers predicts the fake machine
    p = zoo("squeezenet", platform)
    plan = microbenchmark_plans(p)[0]
    fake = [e for e in fake_runs(p, plan, true, random.Random(5), runs=1, noise_us=0.0, outlier_rate=0.0, scale=scale)]
    measured = max(e.end_us if isinstance(e, PartitionEvent) else e.finish_us for e in fake)
    calibrated = Problem(p.graph, apply(raw, cal), p.profiles)
    uncalibrated_err = abs(simulate(p, plan).makespan_us / measured - 1)
    calibrated_err = abs(simulate(calibrated, plan).makespan_us / measured - 1)
    assert calibrated_err < 0.02 < uncalibrated_err


def test_fit_keeps_the_platform_where_there_are_no_samples() -> None:
    raw = load_platform("cpu-npu")
    events = [PartitionEvent("cpu", 100.0, 0.0, 1.0, 150.0), PartitionEvent("cpu", 10.0, 150.0, 151.0, 210.0)]
    cal = fit(events, raw)
    assert set(cal.launch_us) == {"cpu"} and not cal.links
    calibrated = apply(raw, cal)
    assert calibrated.device("npu").dispatch_overhead_us == raw.device("npu").dispatch_overhead_us
    assert calibrated.links == raw.links
    assert calibrated.device("cpu").dispatch_overhead_us == pytest.approx(cal.launch_us["cpu"])


def test_nnls_matches_brute_force_and_stays_non_negative() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=(12, 2))
        b = rng.normal(size=12)
        x = nnls(a, b)
        assert (x >= 0).all()
        grid = np.linspace(0, 3, 301)
        best = min(float(np.sum((a @ np.array([u, v]) - b) ** 2)) for u in grid for v in grid)
        assert float(np.sum((a @ x - b) ** 2)) <= best + 1e-9


def test_events_of_a_real_run_are_consistent() -> None:
    g = chain(4, elems=64)
    p = problem(g, two_pu_platform(), {f"op{i}": [5.0, 2.0] for i in range(4)})
    plan = microbenchmark_plans(p, sizes=(1,))[0]
    ex = Executor(p, plan)
    runs = ex.run(2)
    events = events_of(ex, runs)
    parts = [e for e in events if isinstance(e, PartitionEvent)]
    assert len(parts) == 2 * plan.num_partitions
    for e in parts:
        assert e.free_us <= e.start_us + 1e-6 and e.start_us <= e.end_us
        for src, produced, size in e.inputs:
            assert src != e.pu and size > 0 and produced <= e.start_us + 1e-6
    cal = fit(events, p.platform)
    assert all(math.isfinite(v) and v >= 0 for v in cal.launch_us.values())


# ---------------------------------------------------------------------------------
# storage


def a_calibration(raw, host: str = "h0") -> Calibration:
    return Calibration(raw.name, cal_mod.platform_signature(raw), host, {"cpu": 77.0},
                       {("cpu", "npu"): LinkFit(33.0, 2e-4, 12)})


def test_save_load_round_trip_and_apply(tmp_path: Path) -> None:
    raw = load_platform("cpu-npu")
    cal = a_calibration(raw)
    path = save_calibration(cal, raw, tmp_path)
    assert path.parent == tmp_path / "calibration"
    back = load_calibration(raw, tmp_path, host="h0")
    assert back == cal
    pf = apply(raw, back)
    assert pf.device("cpu").dispatch_overhead_us == 77.0
    assert pf.transfer_us("cpu", "npu", 1000) == pytest.approx(33.0 + 0.2)
    assert pf.transfer_us("npu", "cpu", 1000) == raw.transfer_us("npu", "cpu", 1000)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "checksum", "version", "foreign-host", "other-platform"])
def test_corrupt_or_foreign_file_warns_once_and_is_ignored(tmp_path: Path, damage: str, caplog) -> None:
    raw = load_platform("cpu-npu")
    path = save_calibration(a_calibration(raw), raw, tmp_path)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00nonsense")
    elif damage == "checksum":
        path.write_text(text.replace("77.0", "78.0"))
    elif damage == "version":
        d = json.loads(text)
        d["version"] = 999
        path.write_text(json.dumps(d))
    elif damage == "foreign-host":
        d = json.loads(text)
        d["payload"]["host"] = "elsewhere"
        d["sha256"] = cal_mod._checksum(d["payload"])
        path.write_text(json.dumps(d))
    else:
        d = json.loads(text)
        d["payload"]["platform_signature"] = "0" * 16
        d["sha256"] = cal_mod._checksum(d["payload"])
        path.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="partitiontuner.calibrate"):
        assert load_calibration(raw, tmp_path, host="h0") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "uncalibrated" in lines[0] and "\n" not in lines[0]


def test_missing_file_is_silent(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_calibration(load_platform("cpu-npu"), tmp_path, host="h0") is None
    assert not caplog.records


def test_interrupted_save_keeps_the_previous_calibration(tmp_path: Path, monkeypatch) -> None:
    raw = load_platform("cpu-npu")
    path = save_calibration(a_calibration(raw), raw, tmp_path)
    before = path.read_bytes()

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", boom)
    newer = Calibration(raw.name, cal_mod.platform_signature(raw), "h0", {"cpu": 1.0}, {})
    with pytest.raises(KeyboardInterrupt):
        save_calibration(newer, raw, tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [q.name for q in path.parent.iterdir()] == [path.name]


def test_calibrated_problem_says_so_and_executor_emulates_the_raw_platform(tmp_cache: Path) -> None:
    from partitiontuner.profiling.cache import fingerprint_id, host_fingerprint

    g = chain(3, elems=64)
    raw = two_pu_platform(npu_overhead=2.0, latency_us=10.0)
    cal = Calibration(raw.name, cal_mod.platform_signature(raw), fingerprint_id(host_fingerprint()),
                      {"cpu": 50.0, "npu": 500.0}, {("cpu", "npu"): LinkFit(400.0, 0.0, 5)})
    save_calibration(cal, raw)
    pf, applied = calibrated_platform(raw)
    assert applied is not None and applied.raw_platform is raw
    base = problem(g, raw, {f"op{i}": [5.0, 2.0] for i in range(3)})
    p = Problem(g, pf, base.profiles, calibration=applied)
    assert cal_mod.cost_model_of(p) == "calibrated" and cal_mod.cost_model_of(base) == "uncalibrated"
    plan = microbenchmark_plans(p, sizes=(1,))[0]
    ex = Executor(p, plan)
    npu_steps = [s for s in ex.steps if s.emulated]
    assert npu_steps and all(s.emulated_s == pytest.approx(4e-6) for s in npu_steps)  # work 2 + raw overhead 2
    assert ex._arrival_s(0, 1, 0) == pytest.approx(10e-6)  # raw link, not the fitted 400 us
    res = ex.result(ex.run(1))
    assert res.cost_model == "calibrated" and res.to_dict()["cost_model"] == "calibrated"


# ---------------------------------------------------------------------------------
# statistics


def test_summary_and_warnings() -> None:
    s = summarize([10.0, 11.0, 12.0, 13.0, 100.0])
    assert s.median == 12.0 and s.p10 == pytest.approx(10.4) and s.p90 == pytest.approx(65.2)
    assert spread_warning(s) is not None
    assert spread_warning(summarize([100.0, 101.0, 102.0])) is None
    assert load_warning(3.0, 2) is not None and load_warning(0.2, 2) is None
    with pytest.raises(ValueError):
        summarize([])


def test_kendall_tau_against_pair_counting() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in the prediction counts neither way (tau-b)
    assert kendall_tau([1, 1, 2], [5, 6, 7]) == pytest.approx(2 / math.sqrt(2 * 3))
    assert math.isnan(kendall_tau([1, 1], [2, 3]))
    rng = np.random.default_rng(1)
    for _ in range(10):
        x, y = rng.permutation(7), rng.permutation(7)
        c = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(7) for j in range(i + 1, 7))
        assert kendall_tau(x, y) == pytest.approx(c / 21)


def test_calibrate_end_to_end_on_a_small_problem(tmp_path: Path, monkeypatch) -> None:
    """The whole command path (problems -> microbenchmarks on the real executor -> fit
    -> file), on a 6-op chain so it is quick; the measuring is real, so only structure
    and sanity are asserted."""
    import partitiontuner.workflow as workflow

    g = chain(6, elems=256)
    p = problem(g, two_pu_platform(), {f"op{i}": [20.0, 5.0] for i in range(6)})
    monkeypatch.setattr(workflow, "load_problem", lambda spec: p)
    cal, path = microbench.calibrate(microbench.CalibrateArgs(models=("chain",), repeat=2, budget_s=60.0, root=str(tmp_path)))
    assert path.exists() and path.parent == tmp_path / "calibration"
    assert set(cal.launch_us) == {"cpu", "npu"} and cal.links
    assert cal.plans >= 2 and cal.error_before is not None and cal.error_after is not None
    assert load_calibration(p.platform, tmp_path) == cal


def test_calibrate_needs_measured_profiles() -> None:
    from partitiontuner.errors import ConfigError

    with pytest.raises(ConfigError, match="measured profiles"):
        microbench.calibrate(microbench.CalibrateArgs(profiles="fixture"))


def test_work_scale_scales_every_view_of_the_cost_model() -> None:
    """A PU's work scale multiplies its op and group times in the problem's tables, so
    the simulator, the fusion cover and the oracle all follow it exactly."""
    import dataclasses

    from partitiontuner.agents.oracle import OraclePlanner

    g, raw = load_model("squeezenet"), load_platform("cpu-npu")
    scaled_pf = dataclasses.replace(raw, devices=tuple(dataclasses.replace(d, work_scale=2.0) if d.name == "cpu" else d
                                                       for d in raw.devices))
    base, scaled = Problem(g, raw, fixture_profiles(g, raw)), Problem(g, scaled_pf, fixture_profiles(g, raw))
    cpu = raw.names.index("cpu")
    sb, ss = Simulator(base), Simulator(scaled)
    rng = random.Random(0)
    for _ in range(50):
        start = rng.randrange(g.num_ops - 3)
        ops = list(range(start, start + rng.randint(1, 3)))
        assert ss.work(ops, cpu) == pytest.approx(2.0 * sb.work(ops, cpu))
        assert ss.work(ops, 1 - cpu) == pytest.approx(sb.work(ops, 1 - cpu))
    plan = OraclePlanner(time_limit_s=60).plan(scaled)
    assert plan.info.get("proven_optimal")
    assert simulate(scaled, plan).makespan_us <= simulate(scaled, OraclePlanner(time_limit_s=60).plan(base)).makespan_us + 1e-6
