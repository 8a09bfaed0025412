"""`partitiontuner platform init` and the cpu-cpu preset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from partitiontuner.agents.registry import make_planner
from partitiontuner.cli import main
from partitiontuner.plan import validate_plan
from partitiontuner.platform import load_platform
from partitiontuner.platform_init import Cache, HostInfo, host_yaml, read_caches
from partitiontuner.simulate import simulate
from partitiontuner.workflow import ProblemSpec, load_problem


def _info(cores: tuple[int, ...], caches: tuple[Cache, ...] = ()) -> HostInfo:
    return HostInfo("box.example", "Test CPU", cores, caches, ("CPUExecutionProvider", "XnnpackExecutionProvider"), 12.34)


def test_init_writes_a_loadable_commented_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "host.yaml"
    assert main(["platform", "init", "--out", str(out)]) == 0
    assert "written to" in capsys.readouterr().err
    text = out.read_text()
    platform = load_platform(out)
    cores = sorted(os.sched_getaffinity(0))
    assert platform.names == tuple(f"cpu{k}" for k in range(min(len(cores), 4)))
    assert all(d.kind == "cpu" for d in platform.devices)
    assert sum(d.threads for d in platform.devices) == len(cores)
    assert "ONNX Runtime execution providers installed here:" in text and "CPUExecutionProvider" in text
    assert "#   - name: npu" not in text and "# - name: npu" in text  # the NPU template is commented out
    if read_caches():
        assert "caches of cpu0" in text
    # stdout without --out; an existing file is refused without --force
    assert main(["platform", "init"]) == 0
    assert "pus:" in capsys.readouterr().out
    assert main(["platform", "init", "--out", str(out)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["platform", "init", "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("cores, pus, threads", [((0,), 1, [1]), ((2, 5), 2, [1, 1]), (tuple(range(10)), 4, [3, 3, 2, 2])])
def test_one_pu_per_core_up_to_four(cores, pus, threads, tmp_path: Path) -> None:
    caches = (Cache(1, "Data", "48K", "0"), Cache(3, "Unified", "30720K", "0-9"))
    text = host_yaml(_info(cores, caches))
    path = tmp_path / "h.yaml"
    path.write_text(text)
    platform = load_platform(path)
    assert platform.num_pus == pus and [d.threads for d in platform.devices] == threads
    assert len(platform.links) == pus * (pus - 1)
    assert "L3 Unified" in text and "XnnpackExecutionProvider" in text and "12.3 GB/s" in text
    assert yaml.safe_load(text)["name"] == "host-box-example"


def test_caches_from_sysfs_layout(tmp_path: Path) -> None:
    d = tmp_path / "index0"
    d.mkdir()
    for name, value in (("level", "2\n"), ("type", "Unified\n"), ("size", "1024K\n"), ("shared_cpu_list", "0-1\n")):
        (d / name).write_text(value)
    (tmp_path / "index1").mkdir()  # unreadable entries are skipped
    assert read_caches(tmp_path) == (Cache(2, "Unified", "1024K", "0-1"),)
    assert read_caches(tmp_path / "absent") == ()


def test_cpu_cpu_preset_plans_use_both_cores() -> None:
    problem = load_problem(ProblemSpec("googlenet", "cpu-cpu", profiles="fixture", progress=False))
    assert problem.pus == ("cpu0", "cpu1")
    assert all(d.kind == "cpu" and d.threads == 1 for d in problem.platform.devices)
    single = simulate(problem, make_planner("cpu-only").plan(problem)).makespan_us
    for method in ("partitiontuner", "heft", "greedy"):
        plan = make_planner(method).plan(problem)
        validate_plan(problem, plan)
        t = simulate(problem, plan).makespan_us
        assert t <= single + 1e-6
        if method != "greedy":  # the parallel-branch planners spread GoogLeNet's inception branches
            assert {p.device for p in plan.partitions} == {"cpu0", "cpu1"} and t < 0.95 * single
