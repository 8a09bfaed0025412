"""``run --trace`` / ``--gantt``, ``plan --tune``, ``evaluate --measure`` statistics and
the ``cost_model`` label of every command's JSON (fixture profiles: no measuring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from graphs import diamond, problem, two_pu_platform

from partitiontuner.cli import main
from partitiontuner.execute import run_plan
from partitiontuner.measure import blocks, measure_interleaved
from partitiontuner.plan import make_plan
from partitiontuner.simulate import simulate
from partitiontuner.trace import MEASURED_PID, SIMULATED_PID, trace_events, write_trace


def diamond_problem():
    return problem(diamond(elems=64), two_pu_platform(), {"a": [5.0, 2.0], "b": [5.0, 2.0], "c": [5.0, 2.0], "d": [5.0, 2.0]})


def test_trace_covers_every_partition_and_hand_off(tmp_path: Path) -> None:
    p = diamond_problem()
    plan = make_plan(p, [([0], "cpu"), ([1], "npu"), ([2], "cpu"), ([3], "npu")], "hand")
    res = run_plan(p, plan, repeat=3, warmup=1)
    path = tmp_path / "t.json"
    write_trace(res, simulate(p, plan), p.pus, path)
    doc = json.loads(path.read_text())
    ev = doc["traceEvents"]
    for pid in (MEASURED_PID, SIMULATED_PID):
        parts = [e for e in ev if e["ph"] == "X" and e["pid"] == pid and e["cat"] == "partition"]
        assert sorted(e["name"].split()[0] for e in parts) == [f"P{i}" for i in range(4)]
        assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in parts)
        names = {e["tid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e.get("tid") and e["pid"] == pid}
        assert {names[e["tid"]] for e in parts} == {"PU cpu", "PU npu"}
    moved = [e for e in ev if e["ph"] == "X" and e["pid"] == MEASURED_PID and e["cat"] == "transfer"]
    assert len(moved) == len(res.transfers) >= 3  # a->npu (b), b->cpu... and the output to the host
    for e, t in zip(moved, res.transfers, strict=True):
        assert e["dur"] >= 0 and e["args"]["bytes"] == t.size_bytes
    assert doc["otherData"]["cost_model"] == "uncalibrated"


def test_trace_events_idle_gaps_do_not_overlap_partitions() -> None:
    p = diamond_problem()
    plan = make_plan(p, [([0, 1], "cpu"), ([2], "npu"), ([3], "cpu")], "hand")
    res = run_plan(p, plan, repeat=1, warmup=0)
    ev = trace_events(res, simulate(p, plan), p.pus)
    for pid in (MEASURED_PID, SIMULATED_PID):
        for tid in {e["tid"] for e in ev if e["ph"] == "X" and e["pid"] == pid}:
            spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e["ph"] == "X" and e["pid"] == pid and e["tid"] == tid
                           and e["cat"] in ("partition", "idle"))
            assert all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:], strict=False))


def test_interleaved_measurement_statistics() -> None:
    assert blocks(10, 3) == [4, 3, 3] and blocks(2, 5) == [1, 1]
    p = diamond_problem()
    a = make_plan(p, [([0, 1, 2, 3], "cpu")], "cpu-only")
    b = make_plan(p, [([0], "cpu"), ([1, 2, 3], "npu")], "npu")
    ra, rb = measure_interleaved([(p, a), (p, b)], repeat=4, rounds=2)
    for r in (ra, rb):
        assert len(r.makespan_runs_us) == 4 and r.outputs_match
        assert r.measured_p10_us <= r.measured_makespan_us <= r.measured_p90_us
        d = r.to_dict()
        assert {"measured_makespan_us", "measured_p10_us", "measured_p90_us", "cost_model", "warnings"} <= set(d)


@pytest.fixture
def squeezenet_plan(tmp_path: Path, capsys) -> Path:
    out = tmp_path / "p.yaml"
    assert main(["plan", "squeezenet", "--method", "greedy", "--profiles", "fixture", "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cost_model"] == "uncalibrated"
    return out


def test_cli_run_trace_gantt_and_json(tmp_path: Path, squeezenet_plan: Path, capsys) -> None:
    trace, png = tmp_path / "t.json", tmp_path / "g.png"
    code = main(["run", "squeezenet", str(squeezenet_plan), "--profiles", "fixture", "--repeat", "3", "--warmup", "0",
                 "--trace", str(trace), "--gantt", str(png), "--json"])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cost_model"] == "uncalibrated"
    assert d["measured_p10_us"] <= d["measured_makespan_us"] <= d["measured_p90_us"]
    ev = json.loads(trace.read_text())["traceEvents"]
    ids = {int(e["name"].split()[0][1:]) for e in ev if e["ph"] == "X" and e["cat"] == "partition" and e["pid"] == MEASURED_PID}
    assert ids == {q["id"] for q in d["per_partition"]}
    assert png.stat().st_size > 1000


def test_cli_simulate_says_which_cost_model(squeezenet_plan: Path, capsys, tmp_cache: Path) -> None:
    assert main(["simulate", "squeezenet", str(squeezenet_plan), "--profiles", "fixture", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cost_model"] == "uncalibrated"
    # asking for a calibration that does not exist: one line, exit 2
    code = main(["simulate", "squeezenet", str(squeezenet_plan), "--profiles", "fixture", "--cost-model", "calibrated"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "partitiontuner calibrate" in err[0]


def test_cli_plan_tune_returns_the_measured_fastest(capsys) -> None:
    code = main(["plan", "squeezenet", "--method", "greedy", "--profiles", "fixture", "--tune", "3", "--json"])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    cands = d["tune"]["candidates"]
    assert 2 <= len(cands) <= 3
    assert [c["predicted_us"] for c in cands] == sorted(c["predicted_us"] for c in cands)
    chosen = cands[d["tune"]["chosen"]]
    assert chosen["measured_us"] == min(c["measured_us"] for c in cands)
    assert d["makespan_us"] == pytest.approx(chosen["predicted_us"], abs=1e-2)
    assert d["cost_model"] == "uncalibrated"


@pytest.mark.parametrize("argv", [["plan", "squeezenet", "--profiles", "fixture", "--method", "greedy", "--tune", "0"],
                                  ["calibrate", "--profiles", "fixture"]])
def test_cli_bad_fidelity_input_is_one_line_exit_2(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("partitiontuner: error:")


def test_core_map_gives_cpu_pus_their_own_cores_and_emulated_pus_the_rest() -> None:
    from partitiontuner.execute import core_map
    from partitiontuner.platform import load_platform

    pf = load_platform("cpu-2npu")
    assert core_map(pf, [0, 1, 2], available=[0, 1]) == {0: (0,), 1: (1,), 2: (1,)}
    assert core_map(pf.with_cpu_threads(2), [0, 1], available=[0, 1, 2, 3]) == {0: (0, 1), 1: (2,)}
    assert core_map(pf, [0, 1], available=[5]) == {0: (5,), 1: (5,)}  # one core: everyone shares it


def test_pinned_run_reports_its_cores() -> None:
    import os

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no thread pinning on this OS")
    p = diamond_problem()
    plan = make_plan(p, [([0], "cpu"), ([1, 2, 3], "npu")], "hand")
    res = run_plan(p, plan, repeat=2, warmup=0, pin_cores=True)
    assert res.outputs_match and set(res.pinned_cores) == {"cpu", "npu"}
    allowed = os.sched_getaffinity(0)
    assert all(set(c) <= allowed for c in res.pinned_cores.values())
    assert os.sched_getaffinity(0) == allowed  # the main thread is not pinned
