"""``plan --method rl`` as policy-guided search: never worse than the quick heuristics,
and its ``info`` says what the policy alone, its samples, the heuristics and the
search each achieved, and which produced the returned plan."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from graphs import chain, problem, two_pu_platform

from partitiontuner import synthetic
from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.registry import make_planner, quick_planners
from partitiontuner.agents.rl_planner import RLPlanner, default_budget_s
from partitiontuner.constraints import Constraints, PlacementRule
from partitiontuner.errors import ConfigError
from partitiontuner.plan import validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator
from partitiontuner.training.checkpoint import Checkpoint, save_checkpoint

SOURCE_KEYS = {"policy": "policy_makespan_us", "sample": "sampled_makespan_us", "search": "search_makespan_us"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained policy: a weak one, which the search and the heuristics must beat."""
    torch.manual_seed(0)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    path = tmp_path_factory.mktemp("ck") / "policy.pt"
    save_checkpoint(path, Checkpoint(dict(policy.config), policy.state_dict()))
    return path


def random_problem(seed: int, num_ops: int, num_pus: int) -> Problem:
    rng = np.random.default_rng(seed)
    g = synthetic.random_graph(rng, num_ops)
    plat = synthetic.random_platform(rng, num_pus)
    return Problem(g, plat, synthetic.random_profiles(rng, g, plat))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_search_is_never_worse_than_its_sources_and_names_the_winner(checkpoint, seed):
    pr = random_problem(seed, 24, 3)
    sim = Simulator(pr)
    plan = RLPlanner(checkpoint, samples=4, seed=seed, budget_s=5.0).plan(pr)
    validate_plan(pr, plan)
    info = plan.info
    got = sim.plan_makespan(plan)
    heuristics = {p.name: sim.plan_makespan(p.plan(pr)) for p in quick_planners()}
    assert info["heuristic_makespan_us"] == pytest.approx(min(heuristics.values()))
    assert heuristics[info["heuristic_method"]] == pytest.approx(info["heuristic_makespan_us"])
    for key in ("policy_makespan_us", "sampled_makespan_us", "heuristic_makespan_us", "search_makespan_us"):
        assert got <= info[key] + 1e-9, key
    # the winner's own number is the returned makespan
    key = SOURCE_KEYS.get(info["winner"], "heuristic_makespan_us")
    assert info[key] == pytest.approx(got)
    if info["winner"] not in SOURCE_KEYS:
        assert info["winner"] == info["heuristic_method"]
    # the policy's number is its own greedy decode, whatever the search did
    alone = RLPlanner(checkpoint, budget_s=0).plan(pr)
    assert info["policy_makespan_us"] == pytest.approx(sim.plan_makespan(alone))


def test_budget_zero_is_the_policy_alone(checkpoint):
    pr = random_problem(4, 20, 2)
    plan = RLPlanner(checkpoint, samples=3, budget_s=0).plan(pr)
    info = plan.info
    assert info["winner"] in ("policy", "sample")
    assert "heuristic_makespan_us" not in info and "search_makespan_us" not in info
    assert info["samples"] == 3 and info["budget_s"] == 0


def test_an_exhausted_budget_still_returns_the_best_of_policy_and_heuristics(checkpoint):
    """The greedy decode and the heuristics are the floor; the search only runs while
    the budget lasts (here it has none left)."""
    pr = random_problem(5, 30, 3)
    plan = RLPlanner(checkpoint, budget_s=1e-9).plan(pr)
    info = plan.info
    assert info["search_makespan_us"] is None and info["samples"] == 1
    got = Simulator(pr).plan_makespan(plan)
    assert got == pytest.approx(min(info["policy_makespan_us"], info["heuristic_makespan_us"]))


def test_search_obeys_pins_forbids_and_partition_limits(checkpoint):
    g = chain(6)
    times = {f"op{i}": [10.0, 1.0] for i in range(6)}
    c = Constraints(pins=(PlacementRule("op2", "cpu", "name"),), forbids=(PlacementRule("op4", "npu", "name"),),
                    max_partitions=3)
    pr = problem(g, two_pu_platform(), times, constraints=c)
    plan = RLPlanner(checkpoint, samples=2, budget_s=3.0).plan(pr)
    validate_plan(pr, plan)
    dev = plan.device_of(6)
    assert dev[2] == "cpu" and dev[4] == "cpu" and plan.num_partitions <= 3


def test_default_budget_grows_with_the_graph():
    assert default_budget_s(50) == default_budget_s(200) == 2.0
    assert 2.0 < default_budget_s(1000) < default_budget_s(10_000) <= 15.0


def test_bad_budgets_are_config_errors(checkpoint):
    with pytest.raises(ConfigError, match="budget"):
        make_planner("rl", checkpoint=str(checkpoint), budget_s=-1.0)
    with pytest.raises(ConfigError, match="budget"):
        make_planner("rl", checkpoint=str(checkpoint), budget_s=float("nan"))
    with pytest.raises(ConfigError, match="budget_s"):
        make_planner("greedy", budget_s=1.0)


def test_plan_json_reports_every_source_and_the_text_prints_the_policy(tmp_path):
    base = [sys.executable, "-m", "partitiontuner.cli", "plan", "squeezenet", "--profiles", "fixture", "--budget-s", "0.5"]
    out = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)["info"]
    for key in ("policy_makespan_us", "sampled_makespan_us", "search_makespan_us", "heuristic_makespan_us", "winner"):
        assert key in info
    text = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0 and "policy alone (greedy)" in text.stdout
    bad = subprocess.run([*base[:-2], "--method", "greedy", "--budget-s", "1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--budget-s" in bad.stderr
