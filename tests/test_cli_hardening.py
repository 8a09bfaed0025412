"""Bad outputs, exit codes and everyday output of the CLI (issue 17): every bad input
gives exit 2, one line on stderr and nothing half-written; ``run`` has its own exit
code for outputs that differ; saved plans run on their own platform; tables fit the
terminal or fall back to plain text; files get the user's umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from partitiontuner import execute, render
from partitiontuner.cli import EXIT_OUTPUTS_DIFFER, build_parser, main
from partitiontuner.errors import ConfigError
from partitiontuner.report import OpPlacement

BASE = ["--profiles", "fixture"]
PLAN = ["plan", "squeezenet", "--method", "greedy", *BASE]


def one_error_line(capsys, code: int, *needles: str) -> str:
    """Assert exit 2 and exactly one ``partitiontuner: error:`` line naming ``needles``."""
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("partitiontuner: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])
    assert "Traceback" not in err[0]
    return err[0]


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture
def saved_plan(tmp_path: Path, capsys) -> Path:
    path = tmp_path / "plan.yaml"
    assert main([*PLAN, "--out", str(path), "--json"]) == 0
    capsys.readouterr()
    return path


# ---------------------------------------------------------------------------------
# unwritable outputs (issue 17, item 2)


@pytest.mark.parametrize("flag,name", [("--out", "x.yaml"), ("--gantt", "x.png"), ("--dot", "x.dot")])
def test_plan_output_on_a_pseudo_file_system(capsys, flag, name):
    target = Path("/proc") / name
    one_error_line(capsys, main([*PLAN, flag, str(target)]), str(target))
    assert not target.exists()


@pytest.mark.parametrize("flag", ["--out", "--gantt", "--dot"])
def test_plan_output_naming_a_directory(capsys, tmp_path, flag):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    one_error_line(capsys, main([*PLAN, flag, str(d)]), str(d), "is a directory")
    assert listing(tmp_path) == ["dir", "dir/keep.txt"]


def test_plan_output_under_a_file(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    one_error_line(capsys, main([*PLAN, "--out", str(f / "plan.yaml")]), "not a directory")
    assert listing(tmp_path) == ["afile"]


def test_bad_gantt_format_is_refused_before_anything_is_written(capsys, tmp_path):
    code = main([*PLAN, "--out", str(tmp_path / "p.yaml"), "--gantt", str(tmp_path / "g.jpg")])
    one_error_line(capsys, code, "g.jpg", "use .png or .svg")
    assert listing(tmp_path) == []


def test_profile_export_unwritable(capsys, tmp_path):
    one_error_line(capsys, main(["profile", "squeezenet", *BASE, "--export", "/proc/p.json"]), "/proc/p.json")
    f = tmp_path / "afile"
    f.write_text("x")
    one_error_line(capsys, main(["profile", "squeezenet", *BASE, "--export", str(f / "p.json")]), "not a directory")
    assert listing(tmp_path) == ["afile"]


def test_export_out_unwritable_or_under_a_file(capsys, tmp_path, saved_plan):
    one_error_line(capsys, main(["export", "squeezenet", str(saved_plan), *BASE, "--out", "/proc/parts"]), "/proc/parts")
    f = tmp_path / "afile"
    f.write_text("x")
    one_error_line(capsys, main(["export", "squeezenet", str(saved_plan), *BASE, "--out", str(f / "parts")]),
                   "not a directory")
    one_error_line(capsys, main(["export", "squeezenet", str(saved_plan), *BASE, "--out", str(f)]),
                   "not a directory")
    assert listing(tmp_path) == ["afile", "plan.yaml"]


def test_evaluate_out_under_a_file(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    code = main(["evaluate", "--models", "squeezenet", "--methods", "greedy", *BASE, "--out", str(f / "res")])
    one_error_line(capsys, code, "results directory", "not a directory")
    one_error_line(capsys, main(["evaluate", "--models", "squeezenet", "--methods", "greedy", *BASE, "--out", "/proc/res"]),
                   "/proc/res")
    assert listing(tmp_path) == ["afile"]


def test_export_into_the_empty_current_directory(capsys, tmp_path, saved_plan, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    one_error_line(capsys, main(["export", "squeezenet", str(saved_plan), *BASE, "--out", ".", "--force"]),
                   "current directory")
    assert listing(here) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "plan.yaml"]  # no temporary directory left


# ---------------------------------------------------------------------------------
# export --force removes only what an export wrote (item 6)


def test_export_force_refuses_to_delete_foreign_files(capsys, tmp_path, saved_plan):
    out = tmp_path / "parts"
    assert main(["export", "squeezenet", str(saved_plan), *BASE, "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    exported = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00")
    one_error_line(capsys, main(["export", "squeezenet", str(saved_plan), *BASE, "--out", str(out), "--force"]),
                   "notes.txt", "sub/", "did not write")
    assert (out / "notes.txt").read_text() == "my notes" and (out / "sub" / "data.bin").read_bytes() == b"\x00"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in exported} == exported
    # a directory holding only the previous export is replaced
    (out / "notes.txt").unlink()
    (out / "sub" / "data.bin").unlink()
    (out / "sub").rmdir()
    assert main(["export", "squeezenet", str(saved_plan), *BASE, "--out", str(out), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "plan.yaml"]


# ---------------------------------------------------------------------------------
# run: "outputs differ" has its own exit code (item 9)


def test_run_outputs_differ_exit_code(capsys, saved_plan, monkeypatch):
    assert EXIT_OUTPUTS_DIFFER == 3
    assert main(["run", "squeezenet", str(saved_plan), *BASE, "--repeat", "1", "--warmup", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs_match"] is True
    monkeypatch.setattr(execute.np, "allclose", lambda *a, **k: False)  # every comparison fails
    code = main(["run", "squeezenet", str(saved_plan), *BASE, "--repeat", "1", "--warmup", "0", "--json"])
    assert code == EXIT_OUTPUTS_DIFFER
    assert json.loads(capsys.readouterr().out)["outputs_match"] is False
    assert "exit" in build_parser()._subparsers._group_actions[0].choices["run"].description.lower()


# ---------------------------------------------------------------------------------
# saved plans run on their own platform


def test_simulate_and_run_use_the_platform_saved_in_the_plan(capsys, tmp_path):
    path = tmp_path / "p2.yaml"
    assert main(["plan", "squeezenet", "--platform", "cpu-2npu", "--method", "greedy", *BASE, "--pin", "n0=npu1",
                 "--out", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["simulate", "squeezenet", str(path), *BASE, "--json"]) == 0
    cap = capsys.readouterr()
    data = json.loads(cap.out)
    assert data["platform"] == "cpu-2npu" and data["platform_source"] == "plan"
    assert cap.err.strip() == f"partitiontuner: note: using platform 'cpu-2npu' saved in {path}"
    assert main(["run", "squeezenet", str(path), *BASE, "--repeat", "1", "--warmup", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["platform"] == "cpu-2npu" and data["platform_source"] == "plan"
    # an explicit other platform: a warning naming both, then the PU it lacks is an error
    code = main(["simulate", "squeezenet", str(path), *BASE, "--platform", "cpu-npu"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'cpu-2npu'" in err[0] and "'cpu-npu'" in err[0] and err[0].startswith("partitiontuner: warning:")
    assert err[1].startswith("partitiontuner: error:") and "npu1" in err[1]


def test_plan_for_a_platform_that_is_not_a_preset(capsys, saved_plan):
    text = saved_plan.read_text().replace("platform: cpu-npu", "platform: my-soc")
    saved_plan.write_text(text)
    one_error_line(capsys, main(["simulate", "squeezenet", str(saved_plan), *BASE]), "'my-soc'", "--platform")


# ---------------------------------------------------------------------------------
# --strict and the fallback warning on every platform


def test_strict_and_fallback_warning_on_big_little_npu(capsys):
    args = ["plan", "squeezenet", "--platform", "big-little-npu", "--method", "greedy", *BASE]
    assert main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("partitiontuner: warning: 1 op fell back") and "Softmax" in err[0]
    one_error_line(capsys, main([*args, "--strict"]), "--strict", "Softmax")
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    softmax = [o for o in data["placement"] if o["op_type"] == "Softmax"]
    assert len(softmax) == 1 and softmax[0]["fallback"] == "Softmax" and softmax[0]["device"] in ("big", "little")
    assert len(data["warnings"]) == 1


# ---------------------------------------------------------------------------------
# --debug everywhere, one error wrapper


def test_debug_is_accepted_by_every_command():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    needs = {"graph": ["squeezenet"], "profile": ["squeezenet"], "simulate": ["squeezenet", "p.yaml"],
             "run": ["squeezenet", "p.yaml"], "export": ["squeezenet", "p.yaml", "--out", "d"], "platform": ["init"]}
    for name in sub:
        ns = parser.parse_args([name, *needs.get(name, []), "--debug"])
        assert ns.debug is True, name
    assert parser.parse_args(["--debug", "models"]).debug is True
    assert parser.parse_args(["models"]).debug is False


def test_debug_shows_the_traceback_instead_of_one_line(capsys):
    one_error_line(capsys, main([*PLAN, "--samples", "3"]), "--samples")
    with pytest.raises(ConfigError, match="--samples"):
        main([*PLAN, "--samples", "3", "--debug"])


# ---------------------------------------------------------------------------------
# speed: heuristics never import torch


def test_greedy_plan_does_not_import_torch(tmp_path):
    code = ("import sys\nfrom partitiontuner.cli import main\n"
            "rc = main(['plan', 'squeezenet', '--method', 'greedy', '--profiles', 'fixture', '--json',"
            f" '--out', {str(tmp_path / 'p.yaml')!r}])\n"
            "heavy = sorted(m for m in ('torch', 'torch_geometric', 'ortools') if m in sys.modules)\n"
            "print(rc, heavy, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "0 []"


# ---------------------------------------------------------------------------------
# output: plain text when piped, fitted tables on a terminal, units, file modes


def test_report_piped_is_one_line_per_op(capsys, zoo_graph):
    assert main([*PLAN, "--report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("Placement report")
    rows = lines[start + 3:start + 3 + zoo_graph("squeezenet").num_ops]
    assert [r.split()[0] for r in rows] == [n.name for n in zoo_graph("squeezenet").nodes]
    assert all(" us" in r.split("cost", 1)[-1] for r in rows if "  cost  " in r)  # latencies carry units
    assert not lines[start + 3 + len(rows)].startswith(" ")  # no continuation lines: nothing wrapped


def test_tables_fit_an_80_column_terminal_without_cutting_numbers(monkeypatch, capsys):
    term = Console(force_terminal=True, width=80, highlight=False, color_system=None)
    monkeypatch.setattr(render, "console", lambda stderr=False: term)
    assert main([*PLAN, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(PLAN) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    for p in data["partitions"]:
        assert f"{p['end_us']:,.1f}" in out  # the whole number, not an ellipsis


def test_transfer_detail_says_what_a_negative_saving_means():
    def op(avoided: float) -> OpPlacement:
        return OpPlacement("a", "Conv", "npu", 0, 0.0, 1.0, "cost",
                           {"latency_us": {"cpu": 10.0, "npu": 2.0}, "alternative": "cpu", "transfer_avoided_us": avoided})

    assert render.reason_detail(op(-62.208)) == "cpu 10.0 us, npu 2.0 us; costs 62.2 us more transfer than cpu"
    assert render.reason_detail(op(12.5)) == "cpu 10.0 us, npu 2.0 us; avoids 12.5 us of transfers vs cpu"


def test_wide_markdown_falls_back_to_plain_text():
    term = Console(force_terminal=True, width=40, record=True, color_system=None)
    text = "| model | a-very-long-method-name | another-long-method |\n|---|---:|---:|\n| squeezenet | 1.234 | 5.678 |\n"
    render.markdown(term, text)
    assert term.export_text().strip() == text.strip()


def test_outputs_get_the_users_umask_and_say_where_they_went(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        out, gantt, dot = tmp_path / "p.yaml", tmp_path / "g.png", tmp_path / "g.dot"
        assert main([*PLAN, "--out", str(out), "--gantt", str(gantt), "--dot", str(dot)]) == 0
        text = capsys.readouterr().out
        for path in (out, gantt, dot):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
            assert str(path) in text
        assert f"Gantt chart written to {gantt}" in text and f"DOT graph written to {dot}" in text
        parts = tmp_path / "parts"
        assert main(["export", "squeezenet", str(out), *BASE, "--out", str(parts)]) == 0
        assert stat.S_IMODE(parts.stat().st_mode) == 0o755
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in parts.iterdir())
    finally:
        os.umask(old)
