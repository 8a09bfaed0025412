"""The job runner: serial without Ray, the same results on Ray, and Ray's failure modes
(a dead worker retried, Ctrl-C cancelling, an unreachable cluster, two nodes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from partitiontuner.agents.base import Planner
from partitiontuner.cli import main
from partitiontuner.distributed import JsonlJournal, chain, check_reachable, run_jobs
from partitiontuner.errors import ConfigError
from partitiontuner.evaluate import evaluate, gather, job_cpus, plan_jobs, run_plan_job

MODELS = ["squeezenet", "resnet18"]
HEURISTICS = ["cpu-only", "npu-first", "greedy", "partitiontuner", "heft", "random", "rl"]


def _square(x: int) -> int:
    return x * x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------
# serial: no Ray at all


def test_serial_runner_keeps_job_order_and_reports_each_job():
    seen = []
    assert run_jobs([3, 1, 2], _square, on_done=lambda i, r: seen.append((i, r))) == [9, 1, 4]
    assert seen == [(0, 9), (1, 1), (2, 4)]


def test_evaluate_without_ray_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from partitiontuner.cli import main
        rc = main(["evaluate", "--models", "squeezenet", "--methods", "greedy", "npu-first",
                   "--profiles", "fixture", "--out", {str(tmp_path / "out")!r}, "--json"])
        assert rc == 0, rc
        print("RAY_IMPORTED" if "ray" in sys.modules else "RAY_ABSENT")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "RAY_ABSENT"
    assert not (tmp_path / "out" / "jobs.jsonl").exists()  # the journal goes once the run completes


def test_journal_keeps_finished_jobs_when_the_run_fails(tmp_path):
    path = tmp_path / "jobs.jsonl"

    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("job 3 fails")
        return x

    with pytest.raises(ValueError), JsonlJournal(path, lambda i, r: {"i": i, "r": r}) as log:
        run_jobs([1, 2, 3, 4], boom, on_done=chain(log, None))
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"i": 0, "r": 1}, {"i": 1, "r": 2}]


def test_malformed_or_closed_address_is_a_config_error():
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        check_reachable("no-port-here")
    with pytest.raises(ConfigError, match="cannot reach"):
        check_reachable(f"127.0.0.1:{_free_port()}", timeout_s=2.0)


def test_unreachable_cluster_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("ray")
    rc = main(["evaluate", "--models", "squeezenet", "--methods", "greedy", "--profiles", "fixture",
               "--out", str(tmp_path / "out"), "--json", "--ray", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("partitiontuner: error: cannot reach the Ray cluster at '127.0.0.1:")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------
# on a local Ray instance (one per test session, 2 CPUs)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


def test_ray_results_come_back_in_job_order(ray_local):
    seen = []
    out = run_jobs(list(range(6)), _square, "local", num_cpus=lambda x: 1 + x % 2, on_done=lambda i, r: seen.append(i))
    assert out == [x * x for x in range(6)]
    assert sorted(seen) == list(range(6))


def test_evaluate_on_ray_equals_serial(ray_local):
    kw = dict(models=MODELS, methods=[*HEURISTICS, "oracle"], profiles="fixture", oracle_time_limit_s=120.0)
    serial = evaluate(**kw)
    on_ray = evaluate(**kw, ray_address="local")

    def strip(ev):
        return [{k: v for k, v in vars(r).items() if k != "planning_time_s"} for r in ev.rows]

    assert strip(on_ray) == strip(serial)
    assert all(r.oracle_proven for r in serial.rows)  # so the oracle is deterministic here too
    for key, (_, plan, sim) in serial.plans.items():
        _, plan_r, sim_r = on_ray.plans[key]
        assert plan_r.partitions == plan.partitions, key
        assert sim_r.makespan_us == sim.makespan_us


def test_oracle_jobs_ask_for_their_threads():
    jobs = plan_jobs(["squeezenet"], ["greedy", "oracle"], profiles="fixture", oracle_time_limit_s=5.0)
    assert [job_cpus(j) for j in jobs] == [1, jobs[1].planner.workers] and jobs[1].planner.workers == 2


@dataclass
class DiesOncePlanner(Planner):
    """Kills its own worker process the first time it plans (a node lost mid-job)."""

    inner: Planner
    marker: str
    name = "dies-once"

    def plan(self, problem):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return self.inner.plan(problem)


def test_a_worker_killed_mid_job_is_retried_and_the_table_is_complete(ray_local, tmp_path):
    jobs = plan_jobs(["squeezenet"], ["greedy", "npu-first", "heft"], profiles="fixture")
    jobs[1] = type(jobs[1])(jobs[1].problem, jobs[1].method, DiesOncePlanner(jobs[1].planner, str(tmp_path / "died")))
    outcomes = run_jobs(jobs, run_plan_job, "local", max_retries=2)
    assert (tmp_path / "died").exists()  # it did die once
    ev = gather(jobs, outcomes, "cpu-npu", "fixture")
    assert [(r.model, r.method) for r in ev.rows] == [("squeezenet", m) for m in ("greedy", "npu-first", "heft")]
    assert all(r.makespan_us > 0 for r in ev.rows)


def _sleepy(x: int) -> int:
    if x > 0:
        time.sleep(600)
    return x


def test_ctrl_c_cancels_the_tasks_and_keeps_finished_results(ray_local, tmp_path):
    path = tmp_path / "jobs.jsonl"

    def interrupt(i: int, r: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), JsonlJournal(path, lambda i, r: {"i": i, "r": r}) as log:
        run_jobs([0, 1, 2], _sleepy, "local", on_done=chain(log, interrupt))
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"i": 0, "r": 0}]
    # the sleepers were cancelled: a job wanting both CPUs gets them (a time-out
    # here, far below the sleep, means they were still holding the CPUs)
    ref = ray_local.remote(num_cpus=2)(_square).remote(7)
    assert ray_local.get(ref, timeout=120) == 49


# ---------------------------------------------------------------------------------
# a simulated two-node cluster (its own processes, so in a subprocess of its own)

CLUSTER_SCRIPT = """
import json, sys, time
from ray.cluster_utils import Cluster
from partitiontuner.distributed import run_jobs
from partitiontuner.evaluate import evaluate

def where(x):
    import ray
    time.sleep(2.0)
    return ray.get_runtime_context().get_node_id()

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    ev = evaluate(["squeezenet", "alexnet"], ["greedy", "npu-first", "oracle"], profiles="fixture",
                  oracle_time_limit_s=60.0, ray_address=cluster.address)
    nodes = run_jobs(list(range(4)), where, cluster.address)
    print(json.dumps({"rows": [[r.model, r.method, r.makespan_us] for r in ev.rows], "nodes": len(set(nodes))}))
finally:
    cluster.shutdown()
"""


def test_two_node_cluster_runs_an_evaluation(tmp_path):
    pytest.importorskip("ray")
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["nodes"] == 2
    serial = evaluate(["squeezenet", "alexnet"], ["greedy", "npu-first", "oracle"], profiles="fixture",
                      oracle_time_limit_s=60.0)
    assert data["rows"] == [[r.model, r.method, r.makespan_us] for r in serial.rows]
