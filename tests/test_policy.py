"""The GNN policy: layer shapes, any PU count, masking, the planner's fast path, RLPlanner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import chain, problem, two_pu_platform
from test_env import random_problem

from partitiontuner.agents.gnn_policy import MASKED, DirGINEConv, GNNPolicy, GraphEncoder
from partitiontuner.agents.rl_planner import RLPlanner, decode
from partitiontuner.constraints import Constraints, PlacementRule
from partitiontuner.env import EDGE, NODE_STATIC, PartitionTunerEnv, ProblemContext
from partitiontuner.errors import ConfigError
from partitiontuner.plan import validate_plan
from partitiontuner.simulate import Simulator
from partitiontuner.training.checkpoint import Checkpoint, save_checkpoint


def four_node_graph():
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 2, 3, 3]])
    edge_attr = torch.randn(4, 3)
    return x, edge_index, edge_attr


@pytest.mark.parametrize("channels", [8, 16])
def test_dirgineconv_shapes_and_repr(channels):
    x, ei, ea = four_node_graph()
    conv = DirGINEConv(channels, edge_dim=3)
    assert repr(conv) == f"DirGINEConv({channels}, edge_dim=3)"
    h = torch.randn(4, channels)
    out = conv(h, ei, ea)
    assert out.shape == (4, channels)
    # messages flow both ways: node 0 (no predecessors) still hears from its consumer
    h2 = h.clone()
    h2[1] += 1.0
    assert not torch.allclose(conv(h2, ei, ea)[0], out[0])
    # reset_parameters restores eps and re-draws weights
    conv.eps.data.fill_(3.0)
    conv.reset_parameters()
    assert conv.eps.item() == 0.0


def test_dirgineconv_sums_messages():
    """With identity-like MLP removed, the aggregation is a sum over in- and out-edges."""
    conv = DirGINEConv(2, edge_dim=1, train_eps=False)
    with torch.no_grad():
        for lin in (conv.lin_fwd, conv.lin_bwd):
            lin.weight.zero_()
            lin.bias.zero_()
    conv.mlp = torch.nn.Identity()
    h = torch.tensor([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0], [8.0, 0.0]])
    ei = torch.tensor([[0, 1, 1, 2], [1, 2, 3, 3]])
    out = conv(h, ei, torch.zeros(4, 1))
    # node 1: itself (2) + from 0 (1) + to 2 (4) + to 3 (8) = 15
    assert out[:, 0].tolist() == [1 + 2, 2 + 1 + 4 + 8, 4 + 2 + 8, 8 + 2 + 4]


def test_encoder_pools_per_graph():
    enc = GraphEncoder(in_dim=8, edge_dim=3, channels=16, num_layers=2)
    x, ei, ea = four_node_graph()
    xx = torch.cat([x, x])
    eei = torch.cat([ei, ei + 4], dim=1)
    batch = torch.tensor([0] * 4 + [1] * 4)
    h, g = enc(xx, eei, torch.cat([ea, ea]), batch, 2)
    assert h.shape == (8, 16) and g.shape == (2, 16)
    assert torch.allclose(g[0], g[1], atol=1e-6)  # the same graph twice


def obs_batch(env: PartitionTunerEnv, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        rows.append(obs)
        obs, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term:
            obs, info = env.reset()
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


@pytest.mark.parametrize("num_pus", [2, 3, 4])
def test_policy_serves_2_3_4_pus_and_masks(num_pus):
    torch.manual_seed(0)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    env = PartitionTunerEnv(problem=random_problem(num_pus, 12, num_pus))
    obs = obs_batch(env, 6)
    action, logprob, entropy, value = policy.get_action_and_value(obs)
    assert action.shape == logprob.shape == entropy.shape == value.shape == (6,)
    mask = obs["action_mask"].bool()
    assert mask[torch.arange(6), action].all()  # sampled actions are allowed
    logits, _ = policy(obs)
    assert logits.shape == (6, 12 * 2 * num_pus)  # (op, PU, join)
    assert (logits[~mask] == MASKED).all()
    # log-probs of given actions match, and gradients flow
    _, lp2, _, v2 = policy.get_action_and_value(obs, action)
    assert torch.allclose(lp2, logprob)
    (lp2.sum() + v2.sum()).backward()
    assert policy.encoder.convs[0].lin_fwd.weight.grad is not None


def test_one_policy_serves_padded_mixed_platforms():
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    problems = [random_problem(s, 8, 2 + s % 3) for s in range(3)]
    env = PartitionTunerEnv(problems=problems, max_pus=4)
    obs = obs_batch(env, 20, seed=1)
    logits, value = policy(obs)
    assert logits.shape == (20, 8 * 8) and torch.isfinite(value).all()
    assert (logits[~obs["action_mask"].bool()] == MASKED).all()


def test_encoding_cache_and_dedup_give_identical_outputs():
    torch.manual_seed(0)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    problems = [random_problem(s, 10, 3) for s in range(3)]
    env = PartitionTunerEnv(problems=problems, max_pus=3)
    obs = obs_batch(env, 15, seed=2)
    with torch.no_grad():
        ref_logits, ref_value = policy(obs)
        cache: dict = {}
        l1, v1 = policy(obs, cache)
        l2, v2 = policy(obs, cache)  # second call only reads the cache
        single = [policy({k: v[i:i + 1] for k, v in obs.items()}) for i in range(15)]
    assert len(cache) == len(set(obs["meta"][:, 4].tolist()))
    assert torch.allclose(l1, ref_logits) and torch.allclose(l2, ref_logits) and torch.allclose(v1, ref_value)
    assert torch.allclose(torch.cat([s[0] for s in single]), ref_logits, atol=1e-5)


def test_planner_fast_path_matches_observation_path():
    """RLPlanner decodes without building observations (one row per ready op, not per
    op of the graph); its logits must be the policy's."""
    torch.manual_seed(1)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    pr = random_problem(5, 14, 3)
    env = PartitionTunerEnv(problem=pr)
    obs, info = env.reset(seed=0)
    ctx = env.ctx
    from partitiontuner.env.features import action_features, global_features, pu_features

    several = 0
    with torch.no_grad():
        h, g = policy.encode(torch.as_tensor(ctx.node_static), torch.as_tensor(ctx.edge_index), torch.as_tensor(ctx.edge_attr))
        while True:
            st = env.state
            ops, masks = st.candidate_masks()
            several += len(ops) > 1
            fast, fast_v = policy.heads(
                h[ops][None], g, torch.as_tensor(pu_features(ctx, st, 3))[None],
                torch.as_tensor(action_features(ctx, st, ops, masks, 3))[None], torch.as_tensor(masks.reshape(1, -1)),
                torch.as_tensor(global_features(ctx, st))[None],
            )
            slow, slow_v = policy({k: torch.as_tensor(v)[None] for k, v in obs.items()})
            # the observation has a row block per op of the graph; the fast path per ready op
            assert torch.allclose(fast, slow.view(1, pr.num_ops, 6)[:, ops].reshape(1, -1), atol=1e-5)
            assert torch.allclose(fast_v, slow_v, atol=1e-5)
            assert (slow.view(pr.num_ops, 6)[[v for v in range(pr.num_ops) if v not in ops]] == MASKED).all()
            obs, _, term, _, info = env.step(int(slow.argmax()))
            if term:
                break
    assert several  # the policy chose among several ready ops
    # and greedy decoding reproduces that episode's plan
    plan = decode(policy, ctx, 1)[0]
    assert [p.ops for p in plan.partitions] == [p.ops for p in info["plan"].partitions]


def make_checkpoint(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    path = tmp_path / "policy.pt"
    save_checkpoint(path, Checkpoint(dict(policy.config), policy.state_dict()))
    return path, policy


def test_rl_planner_greedy_and_best_of_k(tmp_path):
    path, _ = make_checkpoint(tmp_path)
    pr = random_problem(11, 18, 3)
    sim = Simulator(pr)
    greedy = RLPlanner(path, budget_s=0).plan(pr)
    validate_plan(pr, greedy)
    assert greedy.method == "rl" and greedy.info["samples"] == 1
    best = RLPlanner(path, samples=16, seed=3, budget_s=0).plan(pr)
    validate_plan(pr, best)
    assert sim.plan_makespan(best) <= sim.plan_makespan(greedy) + 1e-9  # greedy is one of the K
    again = RLPlanner(path, samples=16, seed=3, budget_s=0).plan(pr)
    assert [p.ops for p in again.partitions] == [p.ops for p in best.partitions]  # seeded
    assert best.info["policy_makespan_us"] == pytest.approx(sim.plan_makespan(greedy))


def test_rl_planner_obeys_pins_forbids_and_partition_limits(tmp_path):
    path, _ = make_checkpoint(tmp_path)
    g = chain(6)
    plat = two_pu_platform()
    times = {f"op{i}": [10.0, 1.0] for i in range(6)}
    c = Constraints(pins=(PlacementRule("op2", "cpu", "name"),), forbids=(PlacementRule("op4", "npu", "name"),),
                    max_partitions=3)
    pr = problem(g, plat, times, constraints=c)
    plan = RLPlanner(path, samples=4).plan(pr)
    validate_plan(pr, plan)  # checks pins, forbids and max_partitions
    dev = plan.device_of(6)
    assert dev[2] == "cpu" and dev[4] == "cpu" and plan.num_partitions <= 3


def test_rl_planner_rejects_bad_options(tmp_path):
    path, _ = make_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="samples"):
        RLPlanner(path, samples=0)
    with pytest.raises(ConfigError, match="not found"):
        RLPlanner(tmp_path / "missing.pt")


def test_rl_planner_encodes_once_and_runs_the_head_once_per_step(tmp_path, monkeypatch):
    """What keeps decoding linear on a large graph: the GNN encodes the graph once, the
    head runs once per step on all K episodes at once, and the simulator costs each
    finished plan once (best of K)."""
    path, _ = make_checkpoint(tmp_path)
    pr = random_problem(2, 1500, 3)
    calls = {"encode": 0, "heads": 0, "run": 0}

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(GNNPolicy, "encode", counting("encode", GNNPolicy.encode))
    monkeypatch.setattr(GNNPolicy, "heads", counting("heads", GNNPolicy.heads))
    monkeypatch.setattr(Simulator, "run", counting("run", Simulator.run))
    plan = RLPlanner(path, samples=2, seed=0, budget_s=0).plan(pr)
    validate_plan(pr, plan)
    assert calls["encode"] == 1
    assert calls["heads"] == pr.num_ops
    assert calls["run"] <= 2 + pr.num_pus  # the K plans, and the reward reference's single-PU plans


def test_feature_sizes_match_policy_inputs():
    policy = GNNPolicy()
    assert policy.encoder.inp.in_features == len(NODE_STATIC)
    assert policy.encoder.convs[0].edge_dim == len(EDGE)
    ctx = ProblemContext(random_problem(0, 6, 2))
    assert ctx.node_static.shape[1] == len(NODE_STATIC) and ctx.edge_attr.shape[1] == len(EDGE)
