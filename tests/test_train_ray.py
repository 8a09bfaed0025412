"""``train --ray``: rollouts in Ray actors give the local trainer's numbers exactly; no
Ray without the flag; a dead actor's work is redone; Ctrl-C; a bad address; two nodes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from graphs import build, chain, fork, problem, two_pu_platform
from test_distributed import ray_local  # noqa: F401 - the fixture
from test_training import small_problem, tiny_args

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.rl_planner import Trajectories
from partitiontuner.cli import main
from partitiontuner.env.features import ProblemContext
from partitiontuner.training.checkpoint import load_checkpoint
from partitiontuner.training.ppo import train
from partitiontuner.training.ray_rollouts import (
    LocalRollouts,
    RayRollouts,
    RolloutWorker,
    balanced_slices,
    problem_seeds,
)

TESTS = Path(__file__).resolve().parent


def tiny_corpus():
    """Four problems of 2 to 6 ops, so that per-problem sampling offsets differ."""
    two = problem(build([("p", "Relu", ["x"], "tp"), ("q", "Relu", ["tp"], "tq")], ["tq"]), two_pu_platform(),
                  {"p": [3, 1], "q": [2, 5]})
    ch = chain(6)
    fk = fork(3)
    return [small_problem(), two,
            problem(ch, two_pu_platform(), {n.name: [5.0 + i, 2.0 + (i % 3)] for i, n in enumerate(ch.nodes)}),
            problem(fk, two_pu_platform(latency_us=2.0), {n.name: [4.0, 1.0 + i] for i, n in enumerate(fk.nodes)})]


def policy(seed: int = 0) -> GNNPolicy:
    torch.manual_seed(seed)
    return GNNPolicy(16, 2, 32)


def assert_same_trajectories(a: list[Trajectories], b: list[Trajectories]) -> None:
    assert len(a) == len(b)
    for j, (x, y) in enumerate(zip(a, b, strict=True)):
        for f in fields(Trajectories):
            assert torch.equal(getattr(x, f.name), getattr(y, f.name)), (j, f.name)


def weights_digest(path: Path) -> str:
    ck = load_checkpoint(path)
    h = hashlib.sha256()
    for k, v in sorted(ck.policy_state.items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def progress_rows(out_dir: Path) -> list[list[str]]:
    """The run's CSV rows without wall-clock columns (time_s, sps)."""
    rows = (out_dir / "logs" / "progress.csv").read_text().splitlines()
    return [[x for i, x in enumerate(r.split(",")) if i not in (2, 3)] for r in rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------
# without Ray


def test_problem_seeds_depend_on_seed_iteration_and_position_only():
    seeds = problem_seeds(0, 1, 6)
    assert seeds == problem_seeds(0, 1, 6) and problem_seeds(0, 1, 3) == seeds[:3]  # a prefix: position, not count
    assert len(set(seeds)) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert set(seeds).isdisjoint(problem_seeds(0, 2, 6)) and set(seeds).isdisjoint(problem_seeds(1, 1, 6))


def test_a_problems_rollout_does_not_depend_on_the_problems_drawn_before_it():
    agent = policy()
    contexts = [ProblemContext(p) for p in tiny_corpus()]
    seeds = problem_seeds(7, 3, 3)
    torch.manual_seed(0)  # the default generator is not what the rollouts sample from
    a = LocalRollouts(contexts, 7).collect(agent, [0, 2, 1], seeds)
    torch.manual_seed(1)
    b = LocalRollouts(contexts, 7).collect(agent, [3, 1, 1], seeds)  # other problems (other draw counts) before it
    assert_same_trajectories(a[2:], b[2:])
    assert not torch.equal(b[1].action, b[2].action)  # the same problem at another position samples anew


def test_balanced_slices_split_the_expected_work_evenly():
    # longest first to the lightest: 5 | 4, then 3 -> 4+3, 2 -> 5+2, 1 -> tie, lower slice: 8 vs 7
    assert balanced_slices([5, 1, 4, 2, 3], 2) == [[0, 1, 3], [2, 4]]
    slices = balanced_slices([1.0] * 7, 3)
    assert sorted(i for s in slices for i in s) == list(range(7)) and sorted(map(len, slices)) == [2, 2, 3]
    assert all(balanced_slices([2.0, 1.0], 2))  # no empty slice while there are enough problems


def test_train_without_ray_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import partitiontuner.cli
        from test_training import small_problem, tiny_args
        from partitiontuner.training.ppo import train
        train(tiny_args(__import__("pathlib").Path({str(tmp_path)!r}), total_timesteps=64), log=lambda m: None,
              problems=[small_problem()])
        print("RAY_IMPORTED" if "ray" in sys.modules else "RAY_ABSENT")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "RAY_ABSENT"
    assert (tmp_path / "policy.pt").is_file()


def test_ray_flag_alone_means_a_local_instance_and_is_a_run_option():
    import argparse

    from partitiontuner.training.args import RUN_FIELDS, add_training_arguments, args_from_namespace

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    assert args_from_namespace(parser.parse_args(["--ray"])).ray == "local"
    assert args_from_namespace(parser.parse_args(["--ray", "10.0.0.1:6379", "--ray-actors", "3"])).ray_actors == 3
    assert args_from_namespace(parser.parse_args([])).ray == ""
    assert {"ray", "ray_actors"} <= set(RUN_FIELDS)  # where rollouts ran is not part of a resumed run's config


def test_unreachable_address_is_one_line_and_exit_2_before_any_work(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "run" / "policy.pt"
    t0 = time.monotonic()
    rc = main(["train", "--ray", f"127.0.0.1:{_free_port()}", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("partitiontuner: error: cannot reach the Ray cluster at '127.0.0.1:")
    assert not out.parent.exists()  # failed before the corpus, the logs or a checkpoint
    assert time.monotonic() - t0 < 60  # not after building the corpus (minutes), only a generous bound


# ---------------------------------------------------------------------------------
# on a local Ray instance (one per module, 2 CPUs)


@pytest.fixture(scope="module")
def ray_here(ray_local):  # noqa: F811 - pytest passes the imported fixture
    """test_distributed's local Ray instance (one per module, 2 CPUs), with this module
    shipped to the workers by value (they cannot import tests/)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray_local


def collect_both(problems, drawn, actors, worker_cls=RolloutWorker, **kw):
    agent = policy(3)
    contexts = [ProblemContext(p) for p in problems]
    seeds = problem_seeds(11, 1, len(drawn))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train() and the actors run (threads=1): same kernels, same bits
    try:
        local = LocalRollouts(contexts, 7).collect(agent, drawn, seeds)
    finally:
        torch.set_num_threads(threads)
    workers = RayRollouts("local", problems, [1.0] * len(problems), 7, agent.config, actors=actors,
                          worker_cls=worker_cls, **kw)
    try:
        on_ray = workers.collect(agent, drawn, seeds)
        again = workers.collect(agent, drawn, problem_seeds(11, 2, len(drawn)))  # the actors keep their slices
    finally:
        workers.close()
    return local, on_ray, again


@pytest.mark.parametrize("actors", [1, 3])
def test_ray_rollouts_are_bit_identical_to_local_for_any_actor_count(ray_here, actors):
    problems = tiny_corpus()
    drawn = np.array([2, 0, 3, 2, 1, 0])
    local, on_ray, again = collect_both(problems, drawn, actors)
    assert_same_trajectories(local, on_ray)
    assert not torch.equal(on_ray[0].action, again[0].action)  # the next iteration's seeds sample anew


class DiesOnceWorker(RolloutWorker):
    """Kills its own process on its first call (a node lost mid-iteration)."""

    marker = ""

    def collect(self, weights, slice_ref, jobs):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().collect(weights, slice_ref, jobs)


def test_a_dead_actor_is_restarted_and_its_work_redone(ray_here, tmp_path):
    cls = type("DiesOnce", (DiesOnceWorker,), {"marker": str(tmp_path / "died")})
    problems = tiny_corpus()
    drawn = np.array([0, 1, 2, 3])
    local, on_ray, *_ = collect_both(problems, drawn, 1, worker_cls=cls, max_restarts=2)
    assert (tmp_path / "died").exists()  # it did die once
    assert_same_trajectories(local, on_ray)


def test_train_ray_with_two_actors_equals_the_local_run(ray_here, tmp_path):
    problems = tiny_corpus()
    kw = dict(total_timesteps=10**6, stop_after_iterations=2, learning_rate=3e-4, problems_per_iteration=4)
    local = train(tiny_args(tmp_path / "local", **kw), log=lambda m: None, problems=problems)
    on_ray = train(tiny_args(tmp_path / "ray", ray="local", ray_actors=2, **kw), log=lambda m: None, problems=problems)
    a, b = load_checkpoint(local), load_checkpoint(on_ray)
    assert a.iteration == b.iteration == 2 and a.global_step == b.global_step > 0
    assert weights_digest(local) == weights_digest(on_ray)
    assert str(a.rng) == str(b.rng) and a.optimizer is not None
    for sa, sb in zip(a.optimizer["state"].values(), b.optimizer["state"].values(), strict=True):
        assert all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)  # resumable either way
    assert progress_rows(tmp_path / "local") == progress_rows(tmp_path / "ray")  # losses, KL, gains: all equal
    assert b.args["ray"] == "local"
    # the actors are gone: a task wanting both CPUs runs
    assert ray_here.get(ray_here.remote(num_cpus=2)(lambda: 7).remote(), timeout=120) == 7


class StallsWorker(RolloutWorker):
    """Stalls on its third call, after saying so in a file (the test then presses Ctrl-C)."""

    marker = ""

    def collect(self, weights, slice_ref, jobs):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            Path(self.marker).touch()
            time.sleep(600)
        return super().collect(weights, slice_ref, jobs)


def test_ctrl_c_on_ray_saves_the_last_boundary_and_kills_the_actors(ray_here, tmp_path, monkeypatch):
    from partitiontuner.training import ray_rollouts

    marker = tmp_path / "stalled"
    cls = type("Stalls", (StallsWorker,), {"marker": str(marker)})
    real = ray_rollouts.RayRollouts
    monkeypatch.setattr(ray_rollouts, "RayRollouts", lambda *a, **k: real(*a, **{**k, "worker_cls": cls}))

    def press_ctrl_c() -> None:
        deadline = time.time() + 240
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    out = tmp_path / "int" / "policy.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_args(tmp_path / "int", total_timesteps=10**6, ray="local", ray_actors=1), log=lambda m: None,
              problems=tiny_corpus())
    presser.join()
    ck = load_checkpoint(out)
    assert ck.iteration == 2 and ck.optimizer and ck.rng is not None  # the boundary before the stalled iteration
    assert not [f.name for f in out.parent.iterdir() if f.name.endswith(".tmp")]
    assert ray_here.get(ray_here.remote(num_cpus=2)(lambda: 7).remote(), timeout=120) == 7  # the stalled actor is gone


# ---------------------------------------------------------------------------------
# a simulated two-node cluster (its own processes, so in a subprocess of its own)

CLUSTER_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from ray.cluster_utils import Cluster
from test_train_ray import tiny_corpus, weights_digest, progress_rows
from test_training import tiny_args
from partitiontuner.training.ppo import train

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    out = Path({out!r})
    # two actors of one CPU each on two one-CPU nodes: one actor per node
    path = train(tiny_args(out, total_timesteps=10**6, stop_after_iterations=2, problems_per_iteration=4, ray=cluster.address,
                           ray_actors=2), log=lambda m: None, problems=tiny_corpus())
    print(json.dumps({{"digest": weights_digest(path), "rows": progress_rows(out)}}))
finally:
    cluster.shutdown()
"""


def test_two_node_cluster_runs_a_short_training(tmp_path):
    pytest.importorskip("ray")
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT.format(tests=str(TESTS), out=str(tmp_path / "cluster")))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout.strip().splitlines()[-1])
    local = train(tiny_args(tmp_path / "local", total_timesteps=10**6, stop_after_iterations=2, problems_per_iteration=4),
                  log=lambda m: None, problems=tiny_corpus())
    assert data["digest"] == weights_digest(local)
    assert data["rows"] == progress_rows(tmp_path / "local")
