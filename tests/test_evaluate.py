"""`evaluate`: every method's row, every file, and numbers that recompute."""

from __future__ import annotations

import csv
import json

import pytest

from partitiontuner.agents.registry import METHODS
from partitiontuner.cli import main

MODELS = ["squeezenet", "alexnet"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["evaluate", "--models", *MODELS, "--profiles", "fixture", "--time-limit", "120",
                     "--out", str(out), "--json"])
    assert code == 0
    return out, json.loads(buf.getvalue())


def test_every_model_and_method_has_a_row(evaluated):
    _, data = evaluated
    got = {(r["model"], r["method"]) for r in data["rows"]}
    assert got == {(m, meth) for m in MODELS for meth in METHODS}
    for r in data["rows"]:
        assert set(r) >= {"model", "method", "makespan_us", "planning_time_s", "ratio_to_oracle",
                          "gain_vs_static_pct", "gain_vs_profiling_pct"}
        assert r["makespan_us"] > 0 and r["planning_time_s"] >= 0


def test_ratios_and_gains_recompute_from_makespans(evaluated):
    _, data = evaluated
    by = {(r["model"], r["method"]): r for r in data["rows"]}
    for (model, _method), r in by.items():
        oracle = by[(model, "oracle")]["makespan_us"]
        static = by[(model, "npu-first")]["makespan_us"]
        profiling = by[(model, "greedy")]["makespan_us"]
        assert r["ratio_to_oracle"] == pytest.approx(r["makespan_us"] / oracle, rel=1e-5)
        assert r["gain_vs_static_pct"] == pytest.approx((static - r["makespan_us"]) / static * 100, abs=1e-4)
        assert r["gain_vs_profiling_pct"] == pytest.approx((profiling - r["makespan_us"]) / profiling * 100, abs=1e-4)
        assert r["ratio_to_oracle"] >= 1 - 1e-6, "nothing beats the oracle"
    assert all(by[(m, "oracle")]["oracle_proven"] for m in MODELS)


def test_files_are_written(evaluated):
    out, data = evaluated
    names = {p.name for p in out.iterdir()}
    assert {"results.csv", "results.md", "makespan_vs_oracle.png"} <= names
    assert {f"gantt_{m}_rl.png" for m in MODELS} <= names
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(MODELS) * len(METHODS)
    md = (out / "results.md").read_text()
    assert "Gain over static type-based" in md and "| squeezenet |" in md
    assert (out / "makespan_vs_oracle.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "plans").iterdir())) == len(MODELS) * len(METHODS)


def test_bad_method_is_one_line(capsys, tmp_path):
    assert main(["evaluate", "--models", "squeezenet", "--methods", "magic", "--profiles", "fixture", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'magic'" in err[0]
