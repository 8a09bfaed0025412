"""The RL environment: Gymnasium contract, masks, exact costs, rewards, plans."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from graphs import build, chain, diamond, fork, problem, two_pu_platform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitiontuner import synthetic
from partitiontuner.constraints import Constraints, PlacementRule
from partitiontuner.env import (
    ENV_ID,
    NODE_DYNAMIC,
    NODE_STATIC,
    PartitionTunerEnv,
    ProblemContext,
    ScheduleState,
    graphs_to_batch,
    load_env_problem,
    obs_to_data,
    visit_order,
)
from partitiontuner.errors import ConfigError, PartitionTunerError
from partitiontuner.plan import validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator, simulate


def random_problem(seed: int, num_ops: int, num_pus: int, constrained: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    g = synthetic.random_graph(rng, num_ops)
    plat = synthetic.random_platform(rng, num_pus)
    prof = synthetic.random_profiles(rng, g, plat)
    constraints = Constraints()
    if constrained:
        names = [n.name for n in g.nodes]
        pins = tuple(PlacementRule(n, str(rng.choice(plat.names)), "name") for n in rng.choice(names, size=min(2, len(names)), replace=False))
        forbids = tuple(PlacementRule(n, str(rng.choice(plat.names[1:])), "name") for n in rng.choice(names, size=min(3, len(names)), replace=False))
        constraints = Constraints(pins=pins, forbids=forbids)
    try:
        return Problem(g, plat, prof, constraints)
    except PartitionTunerError:  # a pin onto a PU that cannot run the op: drop the constraints
        return Problem(g, plat, prof)


def random_episode(env: PartitionTunerEnv, rng: np.random.Generator, seed: int | None = None, options=None):
    obs, info = env.reset(seed=seed, options=options)
    total, trajectory = 0.0, [obs]
    while True:
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, r, term, trunc, info = env.step(a)
        total += r
        trajectory.append(obs)
        assert not trunc
        if term:
            return total, info, trajectory


def hand_problem():
    """a -> b -> c on cpu + npu; b is 10x faster on the npu; (b, c) is a profiled group."""
    g = chain(3)
    plat = two_pu_platform(cpu_overhead=1.0, npu_overhead=2.0, latency_us=10.0, bandwidth_gbps=1.0)
    return problem(g, plat, {"op0": [5, 50], "op1": [100, 10], "op2": [5, 8]}, groups={("op1", "op2"): [None, 12]})


# --- Gymnasium contract -----------------------------------------------------------------


def test_check_env_default_env():
    from gymnasium.utils.env_checker import check_env

    env = gym.make(ENV_ID)  # squeezenet on cpu-npu from the fixtures
    check_env(env.unwrapped)
    assert env.unwrapped.problem.graph.name == "squeezenet"
    assert env.action_space == gym.spaces.Discrete(env.unwrapped.problem.num_ops * 2 * 2)  # (op, PU, join)


def test_check_env_corpus_env_with_padding():
    from gymnasium.utils.env_checker import check_env

    problems = [random_problem(s, 6 + s, 2 + s % 3) for s in range(4)]
    env = PartitionTunerEnv(problems=problems, max_ops=40, max_edges=80, max_pus=4)
    check_env(env)


def test_same_seed_envs_match_exactly():
    problems = [random_problem(s, 5 + 2 * s, 2 + s % 3) for s in range(5)]
    a = PartitionTunerEnv(problems=problems, max_pus=4)
    b = PartitionTunerEnv(problems=problems, max_pus=4)
    ra, rb = np.random.default_rng(7), np.random.default_rng(7)
    oa, ia = a.reset(seed=3)
    ob, ib = b.reset(seed=3)
    for _ in range(200):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])
        np.testing.assert_array_equal(ia["action_mask"], ib["action_mask"])
        act = int(ra.choice(np.flatnonzero(ia["action_mask"])))
        assert act == int(rb.choice(np.flatnonzero(ib["action_mask"])))
        oa, r1, t1, _, ia = a.step(act)
        ob, r2, t2, _, ib = b.step(act)
        assert r1 == r2 and t1 == t2
        if t1:
            oa, ia = a.reset()
            ob, ib = b.reset()


def test_masks_in_reset_and_step_info_are_int8_and_match_action_masks():
    env = PartitionTunerEnv(problem=hand_problem())
    obs, info = env.reset(seed=0)
    assert info["action_mask"].dtype == np.int8
    np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    np.testing.assert_array_equal(info["action_mask"], obs["action_mask"])
    # rows by op: only op0 is ready, and there is no open partition to join yet
    assert info["action_mask"].reshape(3, 4).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    obs, _, _, _, info = env.step(env.encode_action(0, 1, False))  # op0 new on npu
    assert info["action_mask"].dtype == np.int8
    assert info["action_mask"].reshape(3, 4).tolist() == [[0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]]  # op1 may join
    assert env.decode_action(env.encode_action(2, 1, True)) == (2, 1, 1) == env.decode_action(11)


def test_masked_action_is_projected_or_raises():
    env = PartitionTunerEnv(problem=hand_problem())
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)  # join on cpu: nothing open -> new on cpu
    assert info["projected"] and env.state.pu_of[0] == 0 and env.state.num_partitions == 1
    strict = PartitionTunerEnv(problem=hand_problem(), invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="masked"):
        strict.step(1)


def test_all_zero_mask_raises():
    env = PartitionTunerEnv(problem=hand_problem())
    env.reset(seed=0)
    env.state._allowed_rows[0] = [False, False]  # simulate a problem with no allowed PU for op0
    with pytest.raises(PartitionTunerError, match="no action"):
        env.action_masks()


def test_problem_too_large_for_observation_is_a_config_error():
    env = PartitionTunerEnv(problem=hand_problem())
    with pytest.raises(ConfigError, match="max_ops"):
        env.reset(options={"problem": random_problem(0, 12, 2)})


# --- exact costs and rewards ----------------------------------------------------------------


def test_hand_computed_join_and_new():
    """op0 on cpu [0, 6]; op1 new on npu: input arrives 6 + 10 + 1 = 17, ends 17 + 10 + 2 = 29;
    op2 joins -> partition (b, c) is the profiled group: 17 + 12 + 2 = 31, output back to
    the host at 31 + 11 = 42."""
    env = PartitionTunerEnv(problem=hand_problem(), reward_mode="terminal")
    env.reset(seed=0)
    env.step(env.encode_action(0, 0, False))
    assert env.state.makespan == pytest.approx(6.0)
    c = env.state.evaluate(1, False, 1)
    assert (c.start_us, c.end_us) == pytest.approx((17.0, 29.0))
    env.step(env.encode_action(1, 1, False))
    c = env.state.evaluate(1, True, 2)
    assert c.end_us == pytest.approx(31.0) and c.makespan_us == pytest.approx(42.0) and c.group_saving_us == pytest.approx(6.0)
    _, r, term, _, info = env.step(env.encode_action(2, 1, True))
    assert term and info["makespan_us"] == pytest.approx(42.0)
    # everything on the npu as one partition (fusing the profiled group (op1, op2): 18 -> 12)
    # beats the cpu's 111: 11 + (50 + 12 + 2) + 11
    ref = 11 + (50 + 12 + 2) + 11
    assert info["ref_makespan_us"] == pytest.approx(ref)
    assert r == pytest.approx((ref - 42.0) / ref)
    assert [p.ops for p in info["plan"].partitions] == [(0,), (1, 2)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), num_ops=st.integers(1, 14), num_pus=st.integers(2, 4), constrained=st.booleans())
def test_incremental_costs_equal_the_simulator_and_return_equals_gain(seed, num_ops, num_pus, constrained):
    pr = random_problem(seed, num_ops, num_pus, constrained)
    env = PartitionTunerEnv(problem=pr)
    sim = Simulator(pr)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    total = 0.0
    while True:
        mask = info["action_mask"].reshape(pr.num_ops, pr.num_pus, 2).astype(bool)
        # only ready ops, and never a PU the op may not run on (unsupported, pinned elsewhere, forbidden)
        assert set(np.flatnonzero(mask.any(axis=(1, 2)))) <= env.state.ready
        assert not (mask & ~pr.allowed[:, :, None]).any()
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))  # any ready op, not only the suggested one
        v, p, b = env.decode_action(a)
        predicted = env.state.evaluate(p, bool(b), v).makespan_us
        obs, r, term, _, info = env.step(a)
        total += r
        parts = env.state.partitions()
        ms = sim.run([o for o, _ in parts], [q for _, q in parts])[0]
        assert env.state.makespan == pytest.approx(ms, rel=1e-9, abs=1e-9)
        assert predicted == pytest.approx(ms, rel=1e-9, abs=1e-9)
        if term:
            break
    plan = info["plan"]
    validate_plan(pr, plan)
    result = simulate(pr, plan)
    ref = env.ctx.ref_makespan
    assert info["makespan_us"] == result.makespan_us
    assert total == pytest.approx((ref - result.makespan_us) / ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("mode", ["shaped", "terminal"])
def test_return_equals_gain_on_a_zoo_model(mode):
    env = PartitionTunerEnv(reward_mode=mode)  # squeezenet, fixture profiles
    total, info, _ = random_episode(env, np.random.default_rng(1), seed=1)
    validate_plan(env.problem, info["plan"])
    assert info["makespan_us"] == pytest.approx(simulate(env.problem, info["plan"]).makespan_us)
    assert total == pytest.approx(info["gain"], rel=1e-12, abs=1e-12)


def test_reference_is_best_single_pu_plan_or_a_fallback_with_pins():
    pr = hand_problem()
    assert ProblemContext(pr).ref_makespan == pytest.approx(86.0)  # all on the npu, fused (cpu: 111)
    # op0 pinned to the cpu, op1 to the npu: no single PU may run everything, so the
    # reference is the best plan that prefers one PU (fastest allowed PU otherwise):
    # prefer cpu: op0 [0, 6], op1 npu [17, 29], op2 cpu new [40, 46] -> 46;
    # prefer npu: op0 cpu [0, 6], op1 npu [17, 29], op2 joins npu (group 12) [17, 31], output 42
    pinned = problem(pr.graph, pr.platform, {"op0": [5, 50], "op1": [100, 10], "op2": [5, 8]},
                     groups={("op1", "op2"): [None, 12]},
                     constraints=Constraints(pins=(PlacementRule("op1", "npu", "name"), PlacementRule("op0", "cpu", "name"))))
    assert ProblemContext(pinned).ref_makespan == pytest.approx(42.0)


# --- masks carry the user's constraints -----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), num_ops=st.integers(2, 12), num_pus=st.integers(2, 4))
def test_masks_never_allow_unsupported_or_forbidden_pus(seed, num_ops, num_pus):
    pr = random_problem(seed, num_ops, num_pus, constrained=True)
    env = PartitionTunerEnv(problem=pr, max_pus=4)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    while True:
        masks = info["action_mask"].reshape(pr.num_ops, 4, 2).astype(bool)
        for v in range(pr.num_ops):
            mask = masks[v]
            if v not in env.state.ready:
                assert not mask.any()
                continue
            allowed = np.zeros(4, dtype=bool)
            allowed[: pr.num_pus] = pr.allowed[v]
            assert not (mask.any(axis=1) & ~allowed).any()
            for (i, pu), why in pr.placement.forbidden.items():
                if i == v:
                    assert not mask[pr.pus.index(pu) if isinstance(pu, str) else pu].any(), why
            if v in pr.placement.pinned:
                assert mask.any(axis=1).sum() <= 1
        obs, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term:
            validate_plan(pr, info["plan"])  # pins and forbids hold in the final plan
            break


def test_max_partitions_masks_new_partitions_and_repair_finishes():
    g = chain(6)
    plat = two_pu_platform()
    times = {f"op{i}": [10, 1] for i in range(6)}
    pr = problem(g, plat, times, constraints=Constraints(max_partitions=2))
    env = PartitionTunerEnv(problem=pr)
    obs, info = env.reset(seed=0)
    env.step(env.encode_action(0, 1, False))  # npu new
    env.step(env.encode_action(1, 0, False))  # cpu new: 2 partitions
    mask = env.action_masks().reshape(6, 2, 2)[2]  # op2, the only ready op
    assert not mask[:, 0].any() and mask[0, 1]  # only joins now
    rng = np.random.default_rng(0)
    info = {"action_mask": env.action_masks()}
    while True:
        _, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term:
            break
    assert info["plan"].num_partitions <= 2
    validate_plan(pr, info["plan"])


def test_memory_capacity_masks_placements_that_overflow():
    g = chain(3, elems=250)  # each tensor 1,000 bytes
    plat = two_pu_platform(npu_memory_mib=2500 / 2**20)  # room for one op's input + output, not two ops
    pr = problem(g, plat, {f"op{i}": [10, 1] for i in range(3)})
    env = PartitionTunerEnv(problem=pr)
    _, info = env.reset(seed=0)
    assert info["action_mask"].reshape(3, 4)[0].tolist() == [1, 0, 1, 0]
    _, _, _, _, info = env.step(env.encode_action(0, 1, False))  # op0 on the npu: x + t0 = 2,000 bytes
    assert info["action_mask"].reshape(3, 4)[1].tolist() == [1, 0, 1, 0]  # joining would need x, t0, t1 = 3,000 bytes
    while True:
        _, _, term, _, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
        if term:
            break
    validate_plan(pr, info["plan"])


# --- visit order, observations, vector envs --------------------------------------------------------


def test_visit_order_is_topological_and_follows_branches():
    pr = problem(diamond(), two_pu_platform(), {"a": [1, 1], "b": [5, 5], "c": [1, 1], "d": [1, 1]})
    assert visit_order(pr) == [0, 1, 2, 3]  # critical branch b first
    pr = problem(diamond(), two_pu_platform(), {"a": [1, 1], "b": [1, 1], "c": [5, 5], "d": [1, 1]})
    assert visit_order(pr) == [0, 2, 1, 3]
    g = build([("a", "Relu", ["x"], "ta"), ("b1", "Relu", ["ta"], "tb1"), ("b2", "Relu", ["tb1"], "tb2"),
               ("c1", "Relu", ["ta"], "tc1"), ("c2", "Relu", ["tc1"], "tc2"), ("d", "Add", ["tb2", "tc2"], "td")], ["td"])
    pr = problem(g, two_pu_platform(), {n.name: [1, 1] for n in g.nodes})
    order = visit_order(pr)
    assert order in ([0, 1, 2, 3, 4, 5], [0, 3, 4, 1, 2, 5])  # a branch is finished before the next starts
    for _ in range(5):
        p = random_problem(_, 20, 3)
        pos = {v: i for i, v in enumerate(visit_order(p))}
        assert all(pos[e.src] < pos[e.dst] for e in p.graph.edges)


def test_dynamic_order_follows_chains_and_visits_early_branches_first():
    """a (npu) forks into b -> c and d -> e. b can only run on the cpu, so after a the
    visit goes to d (its input is already on the npu) before b; after d, e continues the
    chain because it can start the moment d's partition ends."""
    g = build([("a", "Relu", ["x"], "ta"), ("b", "Sigmoid", ["ta"], "tb"), ("c", "Relu", ["tb"], "tc"),
               ("d", "Relu", ["ta"], "td"), ("e", "Relu", ["td"], "te"), ("f", "Add", ["tc", "te"], "tf")], ["tf"])
    pr = problem(g, two_pu_platform(), {"a": [50, 5], "b": [30, None], "c": [5, 5], "d": [5, 5], "e": [5, 5], "f": [1, 1]})
    st = ScheduleState(pr)
    assert st.order[:2] == [0, 1]  # the reference order takes the critical branch b first
    visited = []
    while not st.done:
        visited.append(st.current)
        v = st.current
        st.apply(0 if v in (1, 2) else 1, False)
    assert visited == [0, 3, 4, 1, 2, 5]
    # with everything on the cpu there is no transfer to wait for: chains in reference order
    st = ScheduleState(pr)
    visited = []
    while not st.done:
        visited.append(st.current)
        st.apply(0, st.joinable(0))
    assert visited == [0, 1, 2, 3, 4, 5]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), num_ops=st.integers(1, 12), num_pus=st.integers(2, 4))
def test_undo_restores_the_state_exactly(seed, num_ops, num_pus):
    pr = random_problem(seed, num_ops, num_pus)
    rng = np.random.default_rng(seed)
    state = ScheduleState(pr)
    records = []
    snapshots = []
    while not state.done:
        snapshots.append(repr((state.history, state.current, sorted(state.ready), state.parts, state.part_end,
                               state.part_has_consumer, state.open, state.makespan, state.closed_makespan)))
        ops, masks = state.candidate_masks()
        i, a = divmod(int(rng.choice(np.flatnonzero(masks.reshape(-1)))), 2 * num_pus)
        records.append(state.apply(a // 2, bool(a % 2), ops[i]))
    while records:
        state.undo(records.pop())
        assert repr((state.history, state.current, sorted(state.ready), state.parts, state.part_end,
                     state.part_has_consumer, state.open, state.makespan, state.closed_makespan)) == snapshots.pop()


def test_observation_converts_to_pyg_data_and_batches_consistently():
    import torch

    problems = [random_problem(s, 4 + 3 * s, 2 + s % 3) for s in range(3)]
    env = PartitionTunerEnv(problems=problems, max_ops=20, max_edges=40, max_pus=4)
    rng = np.random.default_rng(0)
    obs_list = []
    for i in range(3):
        obs, info = env.reset(options={"index": i})
        obs, *_ = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        obs_list.append(obs)
    for obs, pr in zip(obs_list, problems, strict=True):
        d = obs_to_data(obs)
        assert d.num_nodes == pr.num_ops and d.x.shape == (pr.num_ops, len(NODE_STATIC) + len(NODE_DYNAMIC))
        assert d.edge_index.shape[1] == len({(e.src, e.dst) for e in pr.graph.edges})
        assert d.pu.shape[0] == pr.num_pus and d.actions.shape[1] == 20 * 8  # max_ops x max_pus x join
        assert int(d.x[:, len(NODE_STATIC)].sum()) == 1  # one op decided
        assert int(d.x[:, len(NODE_STATIC) + 1].sum()) == 1  # one suggested op
    batched = {k: torch.as_tensor(np.stack([o[k] for o in obs_list])) for k in obs_list[0]}
    b = graphs_to_batch(batched, [0, 1, 2])
    datas = [obs_to_data(o) for o in obs_list]
    assert torch.equal(b.x, torch.cat([d.x for d in datas]))
    offsets = np.cumsum([0] + [d.num_nodes for d in datas[:-1]])
    assert torch.equal(b.edge_index, torch.cat([d.edge_index + int(o) for d, o in zip(datas, offsets, strict=True)], dim=1))
    assert b.batch.tolist() == sum(([i] * d.num_nodes for i, d in enumerate(datas)), [])


def test_vector_env_with_different_graphs_and_platforms():
    problems = [random_problem(s, 5 + 4 * s, 2 + s % 3) for s in range(4)]
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID, problems=problems, max_pus=4) for _ in range(3)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs, info = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(120):
        acts = np.array([int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]])
        obs, r, term, trunc, info = envs.step(acts)
        assert obs["x"].shape[0] == 3 and not trunc.any()
        if term.any():
            finished += int(term.sum())
            gains = info["final_info"]["gain"][term]
            assert np.all((gains < 1) & np.isfinite(gains.astype(float)))
    assert finished >= 3
    envs.close()


def test_snapshot_restore_is_exact():
    problems = [random_problem(s, 6 + s, 2 + s % 3) for s in range(4)]
    env = PartitionTunerEnv(problems=problems, max_pus=4)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=5)
    for _ in range(4):
        obs, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term:
            obs, info = env.reset()
    snap = env.snapshot()
    twin = PartitionTunerEnv(problems=problems, max_pus=4)
    twin.reset(seed=123)
    obs2, info2 = twin.restore(snap)
    for k in obs:
        np.testing.assert_array_equal(obs[k], obs2[k])
    assert twin.np_random.bit_generator.state == env.np_random.bit_generator.state
    # and they keep going identically, through the next resets
    for _ in range(40):
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        o1, r1, t1, _, info = env.step(a)
        o2, r2, t2, _, _ = twin.step(a)
        assert r1 == r2 and t1 == t2
        np.testing.assert_array_equal(o1["x"], o2["x"])
        if t1:
            o1, info = env.reset()
            o2, _ = twin.reset()
            np.testing.assert_array_equal(o1["meta"], o2["meta"])


def test_steps_are_incremental_on_a_large_graph(monkeypatch):
    """Each step costs O(ready ops x (in-degree + PUs)), whatever the graph's size: no
    step re-runs the simulator (only the final reward does, once), and the arrival rule
    is evaluated a bounded number of times per step (the ready candidates of ``next_op``
    and the actions of every ready op)."""
    from partitiontuner.env import state as state_mod

    calls = {"run": 0, "arrival": 0}
    run = Simulator.run

    def counted_run(self, *a):
        calls["run"] += 1
        return run(self, *a)


    num_pus = 3
    pr = random_problem(3, 500, num_pus)
    env = PartitionTunerEnv(problem=pr)
    env.reset(seed=0)
    monkeypatch.setattr(Simulator, "run", counted_run)
    arrival = env.ctx.sim.arrival_fast

    def counted_arrival(*a):
        calls["arrival"] += 1
        return arrival(*a)

    monkeypatch.setattr(env.ctx.sim, "arrival_fast", counted_arrival)
    rng = np.random.default_rng(0)
    info = {"action_mask": env.action_masks()}
    per_step = []
    for step in range(pr.num_ops):
        before = dict(calls)
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        _, _, term, _, info = env.step(a)
        assert calls["run"] - before["run"] == (1 if term else 0)
        assert term == (step == pr.num_ops - 1)
        if not term:  # the final reward's simulator run evaluates every op's arrival
            per_step.append((calls["arrival"] - before["arrival"], len(env.state.ready)))
    max_succs = max(len(s) for s in pr.graph.succs)
    assert min(n for n, _ in per_step) >= 1  # the counter sees the env's arrivals
    assert max(r for _, r in per_step) >= 3  # ready ops to choose from
    # step + mask + observation: next_op, then each ready op's actions (twice: the info's
    # mask is computed once more for step)
    assert all(n <= (state_mod.CANDIDATES + max_succs) * num_pus + 2 * 2 * num_pus * (r + 1) for n, r in per_step)


def test_render_ansi_lists_partitions():
    env = PartitionTunerEnv(problem=hand_problem(), render_mode="ansi")
    env.reset(seed=0)
    env.step(env.encode_action(0, 0, False))
    env.step(env.encode_action(1, 1, False))
    text = env.render()
    assert "cpu: op0" in text and "npu: op1" in text


def test_env_rejects_too_many_pus():
    with pytest.raises(ConfigError, match="at most 4"):
        PartitionTunerEnv(problem=hand_problem(), max_pus=5)


def test_fork_masks_join_only_while_open():
    pr = problem(fork(2), two_pu_platform(), {"b0": [1, 1], "b1": [1, 1], "join": [1, 1]})
    env = PartitionTunerEnv(problem=pr)
    env.reset(seed=0)
    env.step(env.encode_action(0, 1, False))  # b0 on npu (new)
    env.step(env.encode_action(1, 0, False))  # b1 on cpu (new)
    # join may go into either open partition: nothing reads from them yet
    assert env.action_masks().reshape(3, 4).tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    _, _, term, _, info = env.step(env.encode_action(2, 1, True))  # join into the npu partition with b0
    assert term
    validate_plan(pr, info["plan"])


def test_env_imports_nothing_from_agents():
    """The environment sits below the planners (rl_planner and gnn_policy import it),
    so none of its modules may import ``partitiontuner.agents``."""
    import ast
    from pathlib import Path

    import partitiontuner.env as env_pkg

    files = sorted(Path(env_pkg.__path__[0]).glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else [f".{node.module or ''}"]
                if node.level > 1 or (node.level == 1 and (node.module or "").startswith("agents")):
                    names.append("partitiontuner.agents")
            else:
                continue
            for name in names:
                assert not name.startswith(("partitiontuner.agents", "agents")), f"{path.name} imports {name}"


@pytest.mark.parametrize("seed", [0, 1, -1])
def test_lookahead_run_costs_equal_the_simulator(seed):
    """:attr:`ProblemContext.dp_table` is a vectorised view of the cost model: each PU's
    run from each visit position, as one partition, costs what the simulator says
    (``-1``: SqueezeNet, whose Conv-Relu groups fuse)."""
    pr = load_env_problem("squeezenet") if seed < 0 else random_problem(seed, 30, 3)
    if seed < 0:
        assert pr.fusion.savings
    ctx = ProblemContext(pr)
    run_sum, run_save = ctx.dp_table
    checked = 0
    for p in range(pr.num_pus):
        for i, v in enumerate(ctx.order):
            length = int(ctx.run_length[v, p])
            if length:
                ops = ctx.order[i:i + length]
                assert run_sum[p, i] - run_save[p, i] == pytest.approx(ctx.sim.work(ops, p), rel=1e-9, abs=1e-9)
                checked += 1
    assert checked >= pr.num_ops
