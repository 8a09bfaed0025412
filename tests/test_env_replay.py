"""The environment's action space is complete: every valid plan replays through it to the
simulator's identical makespan, and its masks never let an invalid plan out."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import chain, diamond, problem, two_pu_platform
from test_env import random_problem

from partitiontuner.agents.oracle import OraclePlanner
from partitiontuner.env import PartitionTunerEnv, ScheduleState, actions_for_plan, load_env_problem
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, from_orders, make_plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator


def random_plan(pr: Problem, rng: np.random.Generator) -> Plan:
    """A random valid plan, drawn without the environment.

    Every valid plan is some topological order of the ops cut into consecutive segments
    (list its partitions in a valid sequence, each partition's ops in topological
    order), each on a PU that may run all of its ops; so: a random topological order,
    random cuts, a random allowed PU per segment (a segment no PU may run whole is cut
    further). The plan is then re-sequenced from its partitions in shuffled order and
    its per-PU orders, so the replay does not see the order the plan was drawn in.
    """
    g = pr.graph
    missing = [len(p) for p in g.preds]
    ready = [v for v in range(pr.num_ops) if not missing[v]]
    order = []
    while ready:
        v = ready.pop(int(rng.integers(len(ready))))
        order.append(v)
        for w in g.succs[v]:
            missing[w] -= 1
            if not missing[w]:
                ready.append(w)
    cut_p = float(rng.choice([0.1, 0.4, 0.8]))
    segments: list[list[int]] = [[order[0]]]
    for v in order[1:]:
        fits = pr.allowed[segments[-1] + [v]].all(axis=0).any()
        if rng.random() < cut_p or not fits:
            segments.append([v])
        else:
            segments[-1].append(v)
    parts = []
    for seg in segments:
        pus = np.flatnonzero(pr.allowed[seg].all(axis=0))
        parts.append((seg, pr.pus[int(rng.choice(pus))]))
    perm = rng.permutation(len(parts))
    shuffled = [parts[i] for i in perm]
    new_index = {int(old): new for new, old in enumerate(perm)}
    orders: dict[str, list[int]] = {name: [] for name in pr.pus}
    for i, (_, pu) in enumerate(parts):
        orders[pu].append(new_index[i])
    return from_orders(pr, shuffled, orders, "random")


def replay(env: PartitionTunerEnv, plan: Plan) -> tuple[float, dict]:
    """Step the plan's actions through ``env``; the episode's return and last info."""
    env.reset(seed=0)
    actions = actions_for_plan(env.state, plan)
    assert env.state.step_index == 0  # actions_for_plan leaves the state as it found it
    total, info = 0.0, {}
    for i, (v, p, join) in enumerate(actions):
        _, r, term, _, info = env.step(env.encode_action(v, p, join))
        total += r
        assert term == (i == len(actions) - 1)
        assert "projected" not in info
    return total, info


def assert_replays_exactly(env: PartitionTunerEnv, plan: Plan, sim: Simulator) -> None:
    total, info = replay(env, plan)
    expected = sim.plan_makespan(plan)
    assert info["makespan_us"] == expected  # identical, not approximately equal
    got = info["plan"]
    assert sorted((p.ops, p.device) for p in got.partitions) == sorted((p.ops, p.device) for p in plan.partitions)
    names = env.problem.pus
    assert {pu: [got.partitions[i].ops for i in ks] for pu, ks in got.orders(names).items()} == \
        {pu: [plan.partitions[i].ops for i in ks] for pu, ks in plan.orders(names).items()}
    ref = env.ctx.ref_makespan
    assert total == pytest.approx((ref - expected) / ref, rel=1e-12, abs=1e-12)  # return = normalised gain


def test_random_generator_draws_valid_and_varied_plans():
    pr = random_problem(4, 10, 3)
    rng = np.random.default_rng(0)
    plans = [random_plan(pr, rng) for _ in range(30)]
    for plan in plans:
        validate_plan(pr, plan)
    assert len({tuple((p.ops, p.device) for p in plan.partitions) for plan in plans}) > 20


def test_a_thousand_random_plans_replay_to_the_identical_makespan():
    checked = 0
    for seed in range(250):
        rng = np.random.default_rng(seed)
        pr = random_problem(seed, int(rng.integers(2, 13)), int(rng.integers(2, 5)))
        env = PartitionTunerEnv(problem=pr, invalid_action="raise")
        sim = Simulator(pr)
        for _ in range(4):
            plan = random_plan(pr, rng)
            validate_plan(pr, plan)
            assert_replays_exactly(env, plan, sim)
            checked += 1
    assert checked >= 1000


def test_plans_that_need_another_op_order_than_the_suggested_one():
    """diamond a -> (b, c) -> d, b critical: the suggested order visits b before c, but
    these plans run c's partition on the cpu before b's (which then grows by d), or put
    a and c in one partition; choosing the ready op reaches both."""
    pr = problem(diamond(), two_pu_platform(), {"a": [1, 1], "b": [5, 5], "c": [1, 1], "d": [1, 1]})
    assert ScheduleState(pr).order[:2] == [0, 1]
    env = PartitionTunerEnv(problem=pr, invalid_action="raise")
    sim = Simulator(pr)
    for parts in ([((0,), "npu"), ((2,), "cpu"), ((1, 3), "cpu")], [((0, 2), "cpu"), ((1,), "npu"), ((3,), "cpu")]):
        plan = make_plan(pr, parts, "manual")
        validate_plan(pr, plan)
        assert_replays_exactly(env, plan, sim)


ZOO_CASES = [(m, p) for p in ("cpu-npu", "cpu-2npu") for m in ("alexnet", "zfnet", "vgg19", "squeezenet")] + [("resnet18", "cpu-npu")]


@pytest.mark.parametrize(("model", "platform"), ZOO_CASES)
def test_oracle_plans_of_zoo_models_replay_to_the_identical_makespan(model, platform):
    """The oracle's plans (fused groups, parallel branches, several NPUs). The small
    models it always proves optimal; the replay must be exact for whatever plan it
    returns within its limit."""
    pr = load_env_problem(model, platform, "fixture")
    plan = OraclePlanner(time_limit_s=15.0, workers=1).plan(pr)
    if pr.num_ops <= 44:
        assert plan.info.get("proven_optimal")
    assert_replays_exactly(PartitionTunerEnv(problem=pr, invalid_action="raise"), plan, Simulator(pr))


def test_actions_for_plan_rejects_a_started_state_and_a_plan_the_masks_forbid():
    g = chain(3, elems=250)
    pr = problem(g, two_pu_platform(), {f"op{i}": [10, 1] for i in range(3)})
    st = ScheduleState(pr)
    plan = make_plan(pr, [((0, 1, 2), "npu")], "manual")
    assert actions_for_plan(st, plan) == [(0, 1, False), (1, 1, True), (2, 1, True)]
    st.apply(1, False)
    with pytest.raises(ValueError, match="start of an episode"):
        actions_for_plan(st, plan)
    small = problem(g, two_pu_platform(npu_memory_mib=2500 / 2**20), {f"op{i}": [10, 1] for i in range(3)})
    with pytest.raises(InfeasiblePlanError, match="masks forbid"):
        actions_for_plan(ScheduleState(small), make_plan(small, [((0, 1, 2), "npu")], "manual"))


def test_random_rollouts_only_ever_produce_valid_plans():
    """200+ episodes of uniformly random allowed actions (over every ready op) on random
    problems, a third with pins and forbids: every finished plan validates (with the
    constraints), and the return is the simulator's normalised gain."""
    episodes = 0
    for seed in range(70):
        rng = np.random.default_rng(1000 + seed)
        pr = random_problem(1000 + seed, int(rng.integers(1, 15)), int(rng.integers(2, 5)), constrained=seed % 3 == 0)
        env = PartitionTunerEnv(problem=pr, invalid_action="raise", reward_mode="shaped" if seed % 2 else "terminal")
        sim = Simulator(pr)
        for k in range(3):
            _, info = env.reset(seed=k)
            total = 0.0
            while True:
                _, r, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
                total += r
                if term:
                    break
            validate_plan(pr, info["plan"])
            ms = sim.plan_makespan(info["plan"])
            assert info["makespan_us"] == ms
            assert total == pytest.approx((env.ctx.ref_makespan - ms) / env.ctx.ref_makespan, rel=1e-12, abs=1e-12)
            episodes += 1
    assert episodes >= 200
