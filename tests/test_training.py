"""PPO training: GAE, learning on a small problem, checkpoints, resume, CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from brute_force import brute_force
from graphs import build, problem, two_pu_platform

from partitiontuner.agents.rl_planner import RLPlanner, decode
from partitiontuner.env import PartitionTunerEnv, ProblemContext
from partitiontuner.errors import ConfigError
from partitiontuner.plan import validate_plan
from partitiontuner.training.args import Args, args_from, field_docs
from partitiontuner.training.checkpoint import (
    Checkpoint,
    export_policy,
    load_checkpoint,
    save_checkpoint,
    shipped_checkpoint,
)
from partitiontuner.training.ppo import gae, train


def small_problem():
    """a -> (b, c) -> d -> e on cpu + npu: the optimum runs b on the npu beside c on the
    cpu and fuses (d, e) on the npu (brute force: 38.5 us); the best single-PU plan takes 55.5 us."""
    g = build([("a", "Relu", ["x"], "ta"), ("b", "Relu", ["ta"], "tb"), ("c", "Relu", ["ta"], "tc"),
               ("d", "Add", ["tb", "tc"], "td"), ("e", "Relu", ["td"], "te")], ["te"])
    plat = two_pu_platform(cpu_overhead=1.0, npu_overhead=4.0, latency_us=5.0)
    return problem(g, plat, {"a": [10, 3], "b": [20, 4], "c": [8, 30], "d": [5, 2], "e": [12, 2]},
                   groups={("d", "e"): [None, 2.5]})


def tiny_args(tmp_path, **kw) -> Args:
    base = Args(problems_per_iteration=2, samples_per_problem=8, total_timesteps=4000, learning_rate=1e-3, ent_coef=0.0,
                num_minibatches=2, channels=16, num_layers=2, hidden=32, out=str(tmp_path / "policy.pt"), progress=False,
                eval_every=0, save_every=0, bc_epochs=0, norm_adv=True, clip_coef=0.2, target_kl=0.0)
    return replace(base, **kw)


def test_gae_matches_hand_computation():
    # one env, 3 steps, episode ends after step 1 (obs[2] starts a new one)
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [1.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    adv, ret = gae(rewards, values, dones, next_value=torch.tensor([2.0]), next_done=torch.tensor([0.0]),
                   gamma=0.9, gae_lambda=0.5)
    d2 = 3.0 + 0.9 * 2.0 - 1.0
    d1 = 2.0 - 0.25  # the episode ended: no bootstrap
    d0 = 1.0 + 0.9 * 0.25 - 0.5
    expected = [d0 + 0.9 * 0.5 * d1, d1, d2]
    assert adv[:, 0].tolist() == pytest.approx(expected)
    assert ret[:, 0].tolist() == pytest.approx([a + v for a, v in zip(expected, [0.5, 0.25, 1.0], strict=True)])


def test_short_training_reaches_the_optimum_of_a_small_problem(tmp_path):
    pr = small_problem()
    optimum, _ = brute_force(pr)
    assert optimum == pytest.approx(38.5)
    # the environment's action space contains the optimum (every allowed action sequence)
    env = PartitionTunerEnv(problem=pr, invalid_action="raise")
    best, stack = np.inf, [()]
    while stack:
        seq = stack.pop()
        env.reset(seed=0)
        for a in seq:
            info = env.step(a)[4]
        if len(seq) == pr.num_ops:
            best = min(best, info["makespan_us"])
        else:
            stack.extend((*seq, int(a)) for a in np.flatnonzero(env.action_masks()))
    assert best == pytest.approx(optimum)
    ctx = ProblemContext(pr)
    untrained = train(tiny_args(tmp_path / "untrained", total_timesteps=128, learning_rate=0.0), log=lambda m: None, problems=[pr])
    before = ctx.sim.plan_makespan(decode(load_checkpoint(untrained).make_policy(), ctx, 1)[0])
    path = train(tiny_args(tmp_path), log=lambda m: None, problems=[pr])
    after = ctx.sim.plan_makespan(decode(load_checkpoint(path).make_policy(), ctx, 1)[0])
    assert before > optimum + 10  # learning happened...
    assert after == pytest.approx(optimum)  # ...and found the optimum


def test_resume_continues_exactly(tmp_path):
    pr = small_problem()
    other = problem(build([("p", "Relu", ["x"], "tp"), ("q", "Relu", ["tp"], "tq")], ["tq"]), two_pu_platform(),
                    {"p": [3, 1], "q": [2, 5]})
    problems = [pr, other]
    kw = dict(total_timesteps=300, learning_rate=3e-4)  # iterations of 2 draws x 8 samples x 2 or 5 ops
    straight = train(tiny_args(tmp_path / "a", **kw), log=lambda m: None, problems=problems)
    first = train(tiny_args(tmp_path / "b", stop_after_iterations=2, **kw), log=lambda m: None, problems=problems)
    assert load_checkpoint(first).iteration == 2
    resumed = train(tiny_args(tmp_path / "b", resume=str(first), **kw), log=lambda m: None, problems=problems)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a.iteration == b.iteration >= 3 and a.global_step == b.global_step >= 300
    for k in a.policy_state:
        assert torch.equal(a.policy_state[k], b.policy_state[k]), k
    for k in ("torch", "numpy"):
        assert str(a.rng[k]) == str(b.rng[k])
    rows_a = (tmp_path / "a" / "logs" / "progress.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "logs" / "progress.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 1 + a.iteration  # header + one row per iteration
    strip = lambda r: [x for i, x in enumerate(r.split(",")) if i not in (2, 3)]  # noqa: E731 - drop time_s, sps
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_demonstrations_and_warm_start(tmp_path):
    from partitiontuner.agents.paper import PartitionTunerPlanner
    from partitiontuner.training.demonstrations import (
        best_demonstration,
        demonstration,
        heuristic_actions,
        replay_actions,
        rollout_makespan,
    )

    pr = small_problem()
    ctx = ProblemContext(pr)
    actions, makespan, source = best_demonstration(ctx)
    assert rollout_makespan(ctx, actions) == pytest.approx(makespan)
    for kind in ("myopic", "lookahead", "dp"):
        assert makespan <= rollout_makespan(ctx, heuristic_actions(ctx, kind)) + 1e-9
    pt = PartitionTunerPlanner().plan(pr)
    assert makespan <= rollout_makespan(ctx, replay_actions(ctx, pt)) + 1e-9
    _, opt_plan = brute_force(pr)
    assert rollout_makespan(ctx, replay_actions(ctx, opt_plan)) == pytest.approx(38.5)  # replay is exact here
    demo = demonstration(pr)
    assert demo.target.shape == (5,) and demo.mask[torch.arange(5), demo.target].all()
    assert demo.value[0].item() == pytest.approx((ctx.ref_makespan - makespan) / ctx.ref_makespan)
    # cloning alone (no PPO steps: learning rate 0) reproduces the demonstration
    path = train(tiny_args(tmp_path, total_timesteps=128, learning_rate=0.0, bc_epochs=60), log=lambda m: None, problems=[pr])
    cloned = ctx.sim.plan_makespan(decode(load_checkpoint(path).make_policy(), ctx, 1)[0])
    assert cloned == pytest.approx(makespan)


def test_checkpoint_round_trip_and_export(tmp_path):
    path = train(tiny_args(tmp_path, total_timesteps=128), log=lambda m: None, problems=[small_problem()])
    ck = load_checkpoint(path)
    assert ck.optimizer and ck.rng and ck.args["channels"] == 16
    slim = export_policy(path, tmp_path / "ship" / "policy.pt", command="partitiontuner train --steps 128")
    meta = json.loads(slim.with_suffix(".json").read_text())
    assert meta["command"] == "partitiontuner train --steps 128" and meta["schema_version"] == ck.schema_version
    assert slim.stat().st_size < path.stat().st_size
    small = load_checkpoint(slim)
    assert small.optimizer is None and small.rng is None
    pr = small_problem()
    plan = RLPlanner(slim).plan(pr)
    validate_plan(pr, plan)
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        train(tiny_args(tmp_path / "r", resume=str(slim)), log=lambda m: None, problems=[pr])


def test_bad_checkpoints_give_one_clear_error(tmp_path):
    truncated = tmp_path / "truncated.pt"
    path = tmp_path / "good.pt"
    policy_ck = Checkpoint({"channels": 16, "num_layers": 2, "hidden": 32},
                           {"x": torch.zeros(3)})
    save_checkpoint(path, policy_ck)
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ConfigError, match="not a PartitionTuner policy checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="not a readable"):
        load_checkpoint(text)
    other = tmp_path / "other_schema.pt"
    d = policy_ck.to_dict()
    d["schema_version"] = 999
    torch.save(d, other)
    with pytest.raises(ConfigError, match="feature schema v999"):
        load_checkpoint(other)
    with pytest.raises(ConfigError, match="do not fit the policy"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    # pickled code is refused by the safe loader
    evil = tmp_path / "evil.pt"
    torch.save({"format": "partitiontuner-policy", "obj": object()}, evil)
    with pytest.raises(ConfigError, match="not a readable"):
        load_checkpoint(evil)


def _attributes_read(tree: ast.AST, owner: str) -> set[str]:
    """Names ``x`` of every ``owner.x`` in the code (not in comments or strings)."""
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == owner}


def test_args_every_field_documented_used_and_a_flag():
    import argparse
    from pathlib import Path

    import partitiontuner.training as training_pkg
    from partitiontuner.training.args import DERIVED, add_training_arguments, args_from_namespace

    docs = field_docs()
    names = [f for f in Args.__dataclass_fields__]
    assert set(docs) == set(names)
    # every field is read as ``args.<field>`` by the training code (comments and strings do not count)
    used: set[str] = set()
    for path in Path(training_pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        used |= _attributes_read(tree, "args") | _attributes_read(tree, "self")
    assert not set(names) - used, f"Args fields never used: {sorted(set(names) - used)}"
    # every option is a flag that sets its field (booleans both ways), and only the given ones override
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    default = Args()
    for name in names:
        if name in DERIVED:
            continue
        value = getattr(default, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv = [f"--no-{name.replace('_', '-')}" if value else flag]
        elif name in ("baseline", "val_reference"):
            argv = [flag, {"greedy": "critic", "baselines": "oracle"}[value]]
        elif isinstance(value, str):
            argv = [flag, "somewhere.pt"] if name != "resume" else []
        else:
            argv = [flag, str(value + 1 if name not in ("gamma", "gae_lambda", "variant_fraction", "zoo_weight")
                              else value / 2)]
        if not argv:
            continue
        got = args_from_namespace(parser.parse_args(argv))
        assert getattr(got, name) != value, name
        assert all(getattr(got, o) == getattr(default, o) for o in names if o not in (name, *DERIVED)), name
    got = args_from_namespace(parser.parse_args(["--steps", "7", "--time-limit", "0.5", "--set", "bc_epochs=3"]))
    assert (got.total_timesteps, got.time_limit_min, got.bc_epochs) == (7, 0.5, 3)
    with pytest.raises(ConfigError, match="unknown training option"):
        args_from({"learning_rat": 1})
    assert args_from({"learning_rate": "0.5", "norm_adv": "false"}).norm_adv is False
    for bad, match in (({"channels": 100000}, "channels"), ({"problems_per_iteration": 0}, "problems_per_iteration"),
                       ({"gamma": 1.5}, "gamma"), ({"learning_rate": float("nan")}, "finite"),
                       ({"seed": "x"}, "not a int")):
        with pytest.raises(ConfigError, match=match):
            args_from(bad).derive()


def test_returns_to_go_discounts_with_gamma():
    from partitiontuner.training.ppo import returns_to_go

    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.5]])
    assert returns_to_go(rewards, 1.0)[:, 0].tolist() == [6.0, 5.0, 3.0]
    assert returns_to_go(rewards, 0.5)[:, 0].tolist() == pytest.approx([1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3.0])
    assert returns_to_go(rewards, 0.5)[:, 1].tolist() == pytest.approx([0.5 + 0.25 * 0.5, 1.25, 0.5])


def test_cli_train_smoke(tmp_path):
    out = tmp_path / "cli" / "policy.pt"
    cmd = [sys.executable, "-m", "partitiontuner.cli", "train", "--steps", "64", "--out", str(out), "--json",
           "--set", "problems_per_iteration=2", "--set", "samples_per_problem=2", "--set", "generated=2", "--set", "zoo_variants=0",
           "--set", "channels=8", "--set", "hidden=16", "--set", "num_layers=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(out) and summary["global_step"] >= 64
    assert {"mean", "max", "squeezenet", "resnet18"} <= set(summary["validation"])  # ratios to the best baseline
    assert (tmp_path / "cli" / "logs" / "progress.csv").is_file()
    bad = subprocess.run([sys.executable, "-m", "partitiontuner.cli", "train", "--resume", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "checkpoint not found" in bad.stderr


def test_shipped_policy_is_installed_and_plans():
    path = shipped_checkpoint()
    ck = load_checkpoint(path)
    assert ck.optimizer is None and path.stat().st_size < 3 * 2**20
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["command"].startswith("partitiontuner train")
    from partitiontuner.workflow import ProblemSpec, load_problem

    pr = load_problem(ProblemSpec(model="squeezenet", profiles="fixture", progress=False))
    plan = RLPlanner().plan(pr)
    validate_plan(pr, plan)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    import signal
    import time

    out = tmp_path / "int" / "policy.pt"
    cmd = [sys.executable, "-m", "partitiontuner.cli", "train", "--steps", "1000000", "--out", str(out), "--no-progress",
           "--set", "problems_per_iteration=2", "--set", "samples_per_problem=2", "--set", "generated=2", "--set", "zoo_variants=0",
           "--set", "channels=8", "--set", "hidden=16", "--set", "num_layers=1", "--set", "bc_epochs=0",
           "--set", "eval_every=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv_path = tmp_path / "int" / "logs" / "progress.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not csv_path.is_file() or len(csv_path.read_text().splitlines()) < 4):
        assert proc.poll() is None, proc.communicate()[1]  # died before it could be interrupted
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, as the README promises
    assert stderr == "partitiontuner: interrupted\n"
    assert "interrupted: saved" in stdout and "--resume" in stdout
    ck = load_checkpoint(out)
    assert ck.iteration >= 2 and ck.optimizer and ck.rng is not None  # a boundary snapshot, ready to resume
    assert not [f.name for f in out.parent.iterdir() if f.name.endswith(".tmp")]  # nothing half-written


def test_self_critic_advantages_and_shaped_rewards():
    from partitiontuner.training.ppo import self_critic_advantages, shaped_rewards

    gains = torch.tensor([[0.2, 0.1, 0.3], [0.0, 0.5, 0.5]])
    adv = self_critic_advantages(gains, torch.tensor([0.2, 0.4]))
    assert torch.allclose(adv, torch.tensor([[0.0, -0.1, 0.1], [-0.4, 0.1, 0.1]]))
    # partial makespans 0 -> 10 -> 25 -> 30 (before each of 3 steps: 0, 10, 25), final 30 and 40, T_ref 50
    partial = torch.tensor([[0.0, 0.0], [10.0, 20.0], [25.0, 20.0]], dtype=torch.float64)
    rewards = shaped_rewards(partial, torch.tensor([30.0, 40.0], dtype=torch.float64), 50.0)
    assert rewards[:, 0].tolist() == pytest.approx([-0.2, -0.3, 0.4 + 0.5])  # last: gain 0.4 + 25/50
    assert rewards.sum(0).tolist() == pytest.approx([0.4, 0.2])  # each column sums to its gain


def test_recorded_rollout_matches_rescoring_and_the_simulator():
    from partitiontuner.agents.gnn_policy import GNNPolicy
    from partitiontuner.agents.rl_planner import rollout
    from partitiontuner.env.features import MAX_PUS
    from partitiontuner.training.ppo import _drop_first_episode, _score

    torch.manual_seed(0)
    policy = GNNPolicy(channels=16, num_layers=2, hidden=32)
    pr = small_problem()
    ctx = ProblemContext(pr)
    with torch.no_grad():
        plans, tr = rollout(policy, ctx, 6, torch.Generator().manual_seed(1), greedy=1, record=True, pad_pus=MAX_PUS)
        logp, _, value = _score(policy, [ctx], [tr], [0])
    assert tr.action.shape == (5, 6) and tr.pu.shape[2] == MAX_PUS
    assert torch.allclose(logp, tr.logprob.reshape(-1), atol=1e-5) and torch.allclose(value, tr.value.reshape(-1), atol=1e-5)
    assert tr.makespan_us.tolist() == pytest.approx([ctx.sim.plan_makespan(p) for p in plans])
    greedy = decode(policy, ctx, 1)[0]
    assert [p.ops for p in plans[0].partitions] == [p.ops for p in greedy.partitions]  # episode 0 is greedy
    assert (tr.partial_us[0] == 0).all()
    sampled = _drop_first_episode(tr)
    assert sampled.action.shape == (5, 5) and sampled.makespan_us.tolist() == tr.makespan_us[1:].tolist()


@pytest.mark.parametrize("family", ["mobile", "attention", "unet", "residual"])
def test_generated_families_are_valid_problems(family):
    from partitiontuner.platform import load_platform
    from partitiontuner.training.corpus import generate_graph, modelled_problem

    rng = np.random.default_rng(3)
    g = generate_graph(rng, family, 60, f"gen-{family}")
    pr = modelled_problem(g, load_platform("cpu-npu"))
    types = {n.op_type for n in g.nodes}
    assert 20 <= g.num_ops <= 120 and np.isfinite(pr.op_time[:, 0]).all()  # the CPU runs everything
    npu = pr.pus.index("npu")
    if family == "mobile":  # depthwise convolutions, which this NPU runs (at poor array utilisation)
        dw = [n.index for n in g.nodes if n.op_type == "Conv" and int(n.attributes.get("group", 1)) > 1]
        assert dw and pr.allowed[dw, npu].all() and np.isfinite(pr.op_time[dw, npu]).all()
    if family == "attention":
        assert {"MatMul", "Softmax", "Transpose", "Reshape", "LayerNormalization"} <= types
        assert sum(n.op_type == "MatMul" and not n.weights for n in g.nodes) >= 2  # scores and weighted values
    if family == "unet":
        assert "Concat" in types and types & {"ConvTranspose", "Resize"}


def test_resume_writes_beside_the_checkpoint_and_keeps_its_options(tmp_path):
    from partitiontuner.training.args import merge_resume

    run = train(tiny_args(tmp_path / "run", total_timesteps=128), log=lambda m: None, problems=[small_problem()])
    merged = merge_resume(Args(resume=str(run), total_timesteps=999), explicit=["resume", "total_timesteps"])
    assert merged.out == str(run)  # not ./runs/ppo/
    assert merged.channels == 16 and merged.total_timesteps == 999  # the checkpoint's options, except those given
    moved = merge_resume(Args(resume=str(run), out=str(tmp_path / "elsewhere.pt")), explicit=["resume", "out"])
    assert moved.out == str(tmp_path / "elsewhere.pt")


def test_crafted_training_checkpoints_on_resume_give_one_clear_error(tmp_path):
    pr = small_problem()
    good = load_checkpoint(train(tiny_args(tmp_path / "run", total_timesteps=128), log=lambda m: None, problems=[pr]))
    crafted = {
        "rng": replace(good, rng={"numpy": good.rng["numpy"]}),  # KeyError before
        "optimizer": replace(good, optimizer={"state": {}, "param_groups": [{"params": [0]}]}),
        "adam": replace(good, optimizer={**good.optimizer, "state": {
            k: {**v, "exp_avg": torch.zeros(3)} for k, v in good.optimizer["state"].items()}}),
        "torch-rng": replace(good, rng={**good.rng, "torch": torch.zeros(3, dtype=torch.uint8)}),
    }
    for name, ck in crafted.items():
        path = save_checkpoint(tmp_path / f"{name}.pt", ck)
        with pytest.raises(ConfigError, match="cannot resume from this checkpoint"):
            train(tiny_args(tmp_path / name, resume=str(path), total_timesteps=256), log=lambda m: None, problems=[pr])
        assert not (tmp_path / name).exists()  # nothing written
    # the same through the command line: one line, exit 2 (a checkpoint whose options are nonsense)
    bad_args = save_checkpoint(tmp_path / "args.pt", replace(good, args={**good.args, "channels": "many"}))
    res = subprocess.run([sys.executable, "-m", "partitiontuner.cli", "train", "--resume", str(bad_args)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "training options are not usable" in res.stderr


def test_trainer_help_works():
    res = subprocess.run([sys.executable, "-m", "partitiontuner.training.ppo", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--adv-floor" in res.stdout and "0.1 % of the reference" in " ".join(res.stdout.split())
    cli = subprocess.run([sys.executable, "-m", "partitiontuner.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0 and "--adv-floor" in cli.stdout and "--steps" in cli.stdout


def test_behaviour_cloning_is_bounded_by_steps_and_time_and_shows_progress(monkeypatch):
    import time

    from partitiontuner.agents.gnn_policy import GNNPolicy
    from partitiontuner.training import warm_start as ws

    bars = []

    class Recorder:
        def __init__(self, show, label, total, done=0):
            self.show, self.total, self.done = show, total, [done]
            bars.append(self)

        def update(self, done, status):
            self.done.append(done)

        def close(self):
            pass

    monkeypatch.setattr(ws, "ProgressBar", Recorder)
    problems = [small_problem()] * 4  # 5 decisions each
    rng = np.random.default_rng(0)
    policy = GNNPolicy(channels=8, num_layers=1, hidden=16)
    args = Args(bc_epochs=60, bc_batch=1, total_timesteps=5, progress=True)
    done = ws.warm_start(policy, problems, args, rng, log=lambda m: None)
    assert done["decisions"] == 10 and done["epochs"] == 1  # 2 x 5 steps, not 60 epochs x 20 decisions
    assert bars[-1].show and bars[-1].total == 10 and bars[-1].done[-1] == 10
    args = Args(bc_epochs=60, bc_batch=1, total_timesteps=10**6, progress=False)
    done = ws.warm_start(policy, problems, args, rng, log=lambda m: None, deadline=time.time() - 1)
    assert done["decisions"] == 5 and not bars[-1].show  # the time limit stops it after one batch
    done = ws.warm_start(policy, problems, replace(args, bc_epochs=2), rng, log=lambda m: None)
    assert done["decisions"] == 40 and done["epochs"] == 2  # unbounded: every epoch
