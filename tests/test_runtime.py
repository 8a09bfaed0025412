"""The deployable runner: an exported plan runs with only ONNX Runtime and NumPy and
gives the whole model's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partitiontuner.agents.registry import make_planner
from partitiontuner.errors import ConfigError
from partitiontuner.export import export_plan
from partitiontuner.runtime import load_export, random_inputs, run_export
from partitiontuner.runtime.__main__ import main
from partitiontuner.workflow import ProblemSpec, load_problem

#: run the runner's main in a fresh interpreter, then list the heavy modules it loaded
PROBE = """
import sys
from partitiontuner.runtime.__main__ import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_geometric", "onnx", "yaml", "ortools",
                                                            "gymnasium", "matplotlib", "rich"))
ours = sorted(m for m in sys.modules if m.startswith("partitiontuner"))
print("PROBE " + __import__("json").dumps({"code": code, "heavy": heavy, "ours": ours}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """SqueezeNet planned by HEFT on cpu-2npu (18 partitions on three PUs), exported."""
    problem = load_problem(ProblemSpec("squeezenet", "cpu-2npu", profiles="fixture", progress=False))
    plan = make_planner("heft").plan(problem)
    assert len({p.device for p in plan.partitions}) == 3
    out = tmp_path_factory.mktemp("export") / "sq"
    export_plan(problem, plan, out)
    return problem, plan, out


def _whole_model(problem, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    g = problem.graph
    sess = ort.InferenceSession(g.onnx_model().SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([t.name for t in g.outputs], sess.run([t.name for t in g.outputs], feeds), strict=True))


def test_runner_matches_the_whole_model_with_only_ort_and_numpy(exported, tmp_path: Path) -> None:
    problem, plan, out = exported
    feeds = random_inputs(load_export(out), seed=3)
    np.savez(tmp_path / "in.npz", **feeds)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), "--inputs", str(tmp_path / "in.npz"),
                           "--out", str(tmp_path / "out.npz"), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[0])
    probe = json.loads(proc.stdout.splitlines()[-1].removeprefix("PROBE "))
    assert probe["code"] == 0 and probe["heavy"] == []
    assert set(probe["ours"]) <= {"partitiontuner", "partitiontuner.errors", "partitiontuner.atomic",
                                  "partitiontuner.runtime", "partitiontuner.runtime.__main__"}
    assert len(report["partitions"]) == plan.num_partitions and report["makespan_us"] > 0
    assert any("ran on this CPU" in n for n in report["notes"])
    got = dict(np.load(tmp_path / "out.npz"))
    want = _whole_model(problem, feeds)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_partitions_respect_per_pu_order_and_dependencies(exported) -> None:
    _, _, out = exported
    res = run_export(out, seed=1, repeat=2, warmup=0)
    export = load_export(out)
    when = {t.id: t for t in res.timings}
    assert sorted(when) == sorted(export.parts) and len(res.makespans_us) == 2
    for pu, ids in export.order.items():
        for a, b in zip(ids, ids[1:], strict=False):
            assert when[a].end_us <= when[b].start_us, f"{pu} ran {b} before {a} ended"
    producer = {t: p.id for p in export.parts.values() for t in p.outputs}
    for p in export.parts.values():
        for t in p.inputs:
            if t in producer:
                assert when[producer[t]].end_us <= when[p.id].start_us
    assert res.makespans_us[0] == max(t.end_us for t in res.timings) > 0


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m partitiontuner.runtime: error:"), err
    return err


def test_bad_input(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, out = exported
    assert "no export manifest" in _fails([str(tmp_path / "nothing")], capsys)
    assert "does not have (installed:" in _fails([str(out), "--provider", "npu0=NoSuchExecutionProvider"], capsys)
    np.savez(tmp_path / "wrong.npz", x=np.zeros(3, np.float32))
    assert "missing data_0; unexpected x" in _fails([str(out), "--inputs", str(tmp_path / "wrong.npz")], capsys)
    np.savez(tmp_path / "shape.npz", data_0=np.zeros((1, 3), np.float32))
    assert "input data_0: expected float32 [1, 3, 224, 224]" in _fails([str(out), "--inputs", str(tmp_path / "shape.npz")], capsys)
    (tmp_path / "text.npz").write_text("not an archive")
    assert "not a NumPy .npz archive" in _fails([str(out), "--inputs", str(tmp_path / "text.npz")], capsys)
    assert not (tmp_path / "o.npz").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format": "partitiontuner-export", "version": 1}')
    assert "malformed manifest" in _fails([str(broken)], capsys)
    with pytest.raises(ConfigError, match="repeat and threads must be >= 1"):
        run_export(out, repeat=0)
