"""Partition export (files, manifest, reassembly, atomicity), the Gantt chart, the DOT
drawing, and the ``run`` / ``export`` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from graphs import chain, problem, two_pu_platform
from test_execute import interval_plan, zoo_problem

from partitiontuner import export as export_mod
from partitiontuner.cli import main
from partitiontuner.errors import ConfigError
from partitiontuner.execute import reference_run
from partitiontuner.export import export_plan, load_manifest, run_exported
from partitiontuner.plan import make_plan, plan_to_dict, save_plan
from partitiontuner.simulate import simulate
from partitiontuner.viz import gantt_chart, plan_to_dot, write_dot
from partitiontuner.zoo import random_input


@pytest.fixture(scope="module")
def squeeze():
    p = zoo_problem("squeezenet")
    return p, interval_plan(p, 6)


# ---------------------------------------------------------------------------------
# export


def test_export_files_manifest_and_reassembly(squeeze, tmp_path: Path) -> None:
    p, plan = squeeze
    res = export_plan(p, plan, tmp_path / "out")
    out = res.out_dir
    assert sorted(x.name for x in out.iterdir()) == sorted([*res.files, "manifest.json", "manifest.yaml"])
    m = load_manifest(out)
    assert m == res.manifest == yaml.safe_load((out / "manifest.yaml").read_text())
    assert m["model"] == {"name": "squeezenet", "hash": p.graph.content_hash} and m["platform"] == "cpu-npu"
    assert [q["id"] for q in m["partitions"]] == list(range(plan.num_partitions))
    assert m["order"] == plan.orders(p.pus)
    # every op exactly once, on the plan's PU
    names = [op for q in m["partitions"] for op in q["ops"]]
    assert sorted(names) == sorted(n.name for n in p.graph.nodes)
    for q, part in zip(m["partitions"], plan.partitions, strict=True):
        assert q["device"] == part.device and q["ops"] == [p.graph.nodes[v].name for v in part.ops]
        model = onnx.load(str(out / q["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == [t["name"] for t in q["inputs"]]
        assert [o.name for o in model.graph.output] == [t["name"] for t in q["outputs"]]
        assert {n.name for n in model.graph.node} == set(q["ops"])
    # inputs name their producers, which list the consumer; sequence respects them
    pos = {i: k for k, i in enumerate(m["sequence"])}
    by_id = {q["id"]: q for q in m["partitions"]}
    graph_inputs = {t["name"] for t in m["graph_inputs"]}
    for q in m["partitions"]:
        for t in q["inputs"]:
            if t["producer"] is None:
                assert t["name"] in graph_inputs and t["from_device"] == "cpu"
                continue
            src = by_id[t["producer"]]
            assert pos[src["id"]] < pos[q["id"]] and t["from_device"] == src["device"]
            made = {o["name"]: o for o in src["outputs"]}
            assert q["id"] in made[t["name"]]["consumers"]
            assert made[t["name"]]["shape"] == t["shape"] and t["size_bytes"] > 0
    assert {t["name"] for t in m["graph_outputs"]} == {t.name for t in p.graph.outputs}
    assert m["predicted_makespan_us"] == pytest.approx(simulate(p, plan).makespan_us, abs=1e-3)
    crossings = {(x["from"], x["to"]) for x in m["transfers"]}
    assert crossings == {("cpu", "npu"), ("npu", "cpu")}
    # chaining the partitions reproduces the model
    feeds = random_input(p.graph, 3)
    got, ref = run_exported(out, feeds), reference_run(p, feeds)
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-5)


def test_export_refuses_a_non_empty_dir_and_force_replaces_only_an_export(squeeze, tmp_path: Path) -> None:
    p, plan = squeeze
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_plan(p, plan, target)
    with pytest.raises(ConfigError, match="no PartitionTuner export"):
        export_plan(p, plan, target, force=True)
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()
    export_plan(p, plan, target)  # an empty directory is fine
    assert len(list(target.glob("*.onnx"))) == plan.num_partitions
    single = make_plan(p, [(list(range(p.num_ops)), "cpu")], "cpu-only")
    export_plan(p, single, target, force=True)
    assert sorted(x.name for x in target.iterdir()) == ["manifest.json", "manifest.yaml", "p000_cpu.onnx"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]  # no backup or temp dirs left


def test_export_is_atomic(squeeze, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, plan = squeeze
    real = export_mod._write_model
    calls = []

    def failing(model, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(model, path)

    monkeypatch.setattr(export_mod, "_write_model", failing)
    with pytest.raises(OSError, match="disk full"):
        export_plan(p, plan, tmp_path / "fresh")
    assert list(tmp_path.iterdir()) == []  # neither DIR nor a temporary directory
    # a previous export survives a failed --force replacement untouched
    monkeypatch.setattr(export_mod, "_write_model", real)
    single = make_plan(p, [(list(range(p.num_ops)), "cpu")], "cpu-only")
    export_plan(p, single, tmp_path / "prev")
    before = {x.name: x.read_bytes() for x in (tmp_path / "prev").iterdir()}
    calls.clear()
    monkeypatch.setattr(export_mod, "_write_model", failing)
    with pytest.raises(OSError):
        export_plan(p, plan, tmp_path / "prev", force=True)
    assert {x.name: x.read_bytes() for x in (tmp_path / "prev").iterdir()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["prev"]


def test_export_target_that_is_a_file(squeeze, tmp_path: Path) -> None:
    p, plan = squeeze
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        export_plan(p, plan, f, force=True)


# ---------------------------------------------------------------------------------
# Gantt chart


def test_gantt_lanes_png_and_svg(squeeze, tmp_path: Path) -> None:
    p, plan = squeeze
    sim = simulate(p, plan)
    fig = gantt_chart(p, plan, sim, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cpu", "npu", "cpu\u2192npu", "npu\u2192cpu"]
    assert len(ax.patches) == plan.num_partitions + len(sim.transfers)
    assert any(abs(line.get_xdata()[0] - sim.makespan_us) < 1e-6 for line in ax.get_lines())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["cpu partition", "npu partition"] and legend[-1] == "makespan"
    gantt_chart(p, plan, sim, tmp_path / "g.svg", title="custom")
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:500]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["g.png", "g.svg"]  # no temp files left
    single = make_plan(p, [(list(range(p.num_ops)), "cpu")], "cpu-only")
    fig = gantt_chart(p, single, simulate(p, single), None)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cpu", "npu"]
    with pytest.raises(ConfigError, match="unsupported format"):
        gantt_chart(p, plan, sim, tmp_path / "g.jpg")
    with pytest.raises(ConfigError, match="not the simulation"):
        gantt_chart(p, single, sim, None)


def test_gantt_labels_only_bars_wide_enough() -> None:
    """120 partitions of very different lengths: every label drawn fits inside its bar."""
    g = chain(120)
    times = {f"op{i}": [5.0 if i % 10 else 400.0, 5.0] for i in range(120)}
    p = problem(g, two_pu_platform(), times)
    plan = make_plan(p, [([i], i % 2 if i % 10 else 0) for i in range(120)], "test")
    sim = simulate(p, plan)
    fig = gantt_chart(p, plan, sim, None)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    bars = {round(b.get_y() + b.get_height() / 2): [] for b in ax.patches}
    for b in ax.patches[: plan.num_partitions]:
        bars[round(b.get_y() + b.get_height() / 2)].append(b.get_window_extent(renderer))
    labels = [t for t in ax.texts if t.get_text().startswith("P")]
    assert 0 < len(labels) < plan.num_partitions
    for t in labels:
        box = t.get_window_extent(renderer)
        lane = round(t.get_position()[1])
        assert any(bar.x0 - 0.5 <= box.x0 and box.x1 <= bar.x1 + 0.5 for bar in bars[lane]), t.get_text()


# ---------------------------------------------------------------------------------
# DOT


def test_dot_clusters_ops_and_crossing_edges(squeeze, tmp_path: Path) -> None:
    p, plan = squeeze
    dot = plan_to_dot(p, plan)
    assert dot.startswith('digraph "squeezenet" {') and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    assert len(re.findall(r'subgraph "cluster_p\d+"', dot)) == plan.num_partitions
    for name in (n.name for n in p.graph.nodes):
        assert len(re.findall(rf'^\s*"op:{re.escape(name)}" \[label=', dot, flags=re.M)) == 1
    edges = re.findall(r'^\s*("[^"]+") -> ("[^"]+")(.*);$', dot, flags=re.M)
    device = {f'"op:{p.graph.nodes[v].name}"': d for v, d in enumerate(plan.device_of(p.num_ops))}
    device |= {f'"in:{t.name}"': "cpu" for t in p.graph.inputs} | {f'"out:{t.name}"': "cpu" for t in p.graph.outputs}
    crossing = [e for e in edges if device[e[0]] != device[e[1]]]
    assert crossing and all("label=" in e[2] and "B" in e[2] for e in crossing)  # "... KiB"
    assert all("label=" not in e[2] for e in edges if device[e[0]] == device[e[1]])
    assert len(edges) == len(p.graph.edges) + sum(len(v) for v in p.graph.input_consumers.values()) + len(p.graph.outputs)
    write_dot(p, plan, tmp_path / "plan.dot")
    assert (tmp_path / "plan.dot").read_text() == dot


def test_dot_escapes_awkward_names() -> None:
    g = chain(2)
    p = problem(g, two_pu_platform(), {"op0": [1.0, 1.0], "op1": [1.0, 1.0]})
    plan = make_plan(p, [([0], 0), ([1], 1)], 'weird "method"\\')
    dot = plan_to_dot(p, plan)
    assert 'weird \\"method\\"\\\\' in dot


# ---------------------------------------------------------------------------------
# CLI


def _fixture_args() -> list[str]:
    return ["--profiles", "fixture"]


def test_cli_run_json_and_table(squeeze, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p, plan = squeeze
    path = tmp_path / "plan.yaml"
    save_plan(p, plan, path)
    assert main(["run", "squeezenet", str(path), *_fixture_args(), "--repeat", "1", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"measured_makespan_us", "simulated_makespan_us", "outputs_match", "per_partition", "emulated_pus"} <= set(out)
    assert out["outputs_match"] is True and out["emulated_pus"] == ["npu"]
    assert out["measured_makespan_us"] > 0 and out["simulated_makespan_us"] == pytest.approx(simulate(p, plan).makespan_us, abs=1e-3)
    assert len(out["per_partition"]) == plan.num_partitions
    first = out["per_partition"][1]
    assert {"id", "device", "emulated", "measured_start_us", "measured_end_us", "simulated_start_us", "simulated_end_us"} <= set(first)
    assert main(["run", "squeezenet", str(path), *_fixture_args(), "--repeat", "1", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "makespan: measured" in text and "emulated" in text and "outputs match" in text


def _bad_plans(p, plan) -> dict[str, dict]:
    base = plan_to_dict(p, plan)
    out = {}
    d = json.loads(json.dumps(base))
    d["partitions"][0]["ops"] = d["partitions"][0]["ops"][1:]
    out["missing op"] = d
    d = json.loads(json.dumps(base))
    d["partitions"][0]["backend"] = "gpu"
    out["unknown PU"] = d
    d = json.loads(json.dumps(base))
    softmax = next(n.name for n in p.graph.nodes if n.op_type == "Softmax")
    for q in d["partitions"]:
        if softmax in q["ops"]:
            q["backend"] = "npu"
    del d["order"]
    out["unsupported op"] = d
    d = json.loads(json.dumps(base))
    names = [n.name for n in p.graph.nodes]
    d["partitions"] = [{"id": 0, "backend": "cpu", "ops": [names[0], *names[2:]]}, {"id": 1, "backend": "cpu", "ops": [names[1]]}]
    del d["order"]
    out["non-convex"] = d
    d = json.loads(json.dumps(base))
    d["model"]["hash"] = "0123456789abcdef"
    out["other model"] = d
    return out


def test_cli_bad_plan_files_exit_2_with_one_line(squeeze, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p, plan = squeeze
    cases = {k: json.dumps(v) for k, v in _bad_plans(p, plan).items()}
    cases["truncated"] = json.dumps(plan_to_dict(p, plan))[:200]
    expect = {"missing op": "no partition", "unknown PU": "unknown PU", "unsupported op": "cannot run on 'npu'",
              "non-convex": "", "other model": "made for model", "truncated": "not valid JSON"}
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(text)
        for cmd in (["run", "squeezenet", str(path), "--repeat", "1"], ["export", "squeezenet", str(path), "--out", str(tmp_path / "x")]):
            assert main([*cmd, *_fixture_args()]) == 2, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("partitiontuner: error: "), (name, err)
            assert expect[name] in err, (name, err)
    assert not (tmp_path / "x").exists()


def test_cli_export_json_and_refusal(squeeze, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p, plan = squeeze
    path = tmp_path / "plan.json"
    save_plan(p, plan, path)
    out_dir = tmp_path / "parts"
    assert main(["export", "squeezenet", str(path), *_fixture_args(), "--out", str(out_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_partitions"] == plan.num_partitions and out["files"] == sorted(x.name for x in out_dir.glob("*.onnx"))
    assert out["order"] == plan.orders(p.pus)
    assert main(["export", "squeezenet", str(path), *_fixture_args(), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert main(["export", "squeezenet", str(path), *_fixture_args(), "--out", str(out_dir), "--force"]) == 0
    assert "exported" in capsys.readouterr().out
