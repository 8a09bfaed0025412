"""PPO with GAE for the PartitionTuner policy, in one file (CleanRL's ``ppo.py`` layout).

Reads top to bottom: :class:`Args`, :func:`make_env`, :func:`layer_init`, then
:func:`train`: seed, build the corpus and the vector env, warm-start the policy, allocate
the rollout buffers, and per iteration: rollout, GAE, flatten, minibatch epochs, log,
validate, checkpoint. Run it as ``partitiontuner train`` or
``python -m partitiontuner.training.ppo``.

Warm start (:func:`warm_start`, ``--bc-epochs``): PPO from a random policy spends most
of an hour's budget on what classical heuristics already know (which PU is fast, when
to group), and in our runs did not reach the baselines' quality on ResNet-50 or
DenseNet-121 within it. So the actor first clones, on every training problem, the best
of the baselines' plans and three heuristic rollouts of the environment
(:mod:`partitiontuner.training.demonstrations`), the critic regresses those episodes'
returns, the first ``value_warmup`` PPO iterations train only the critic, and PPO then
fine-tunes with a small learning rate and unnormalised advantages. The checkpoint with
the best validation ratio (training zoo models on ``cpu-npu``, greedy decoding, against
the best baseline or the oracle), which may be the warm-started one, is written to
``<out stem>-best.pt`` and is what gets shipped.

Gymnasium 1.x, ``SyncVectorEnv`` with ``autoreset_mode=SAME_STEP``: the observation
returned with ``terminated`` already starts the next episode and the finished
episode's info is in ``info["final_info"]`` (so ``dones[t]`` marks ``obs[t]`` as an
episode's first observation, as in CleanRL on gym 0.29). Episodes never truncate.

Exact resumption: a checkpoint taken at an iteration boundary holds the weights, the
optimizer, the torch and numpy RNG states and every env's episode snapshot (its RNG
state at reset, its problem and its actions so far), so ``--resume`` continues with
bit-identical numbers. Ctrl-C writes the last boundary's checkpoint and exits cleanly.
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.errors import ConfigError
from partitiontuner.problem import Problem
from partitiontuner.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


@dataclass
class Args:
    seed: int = 1
    """seed of everything: corpus, env draws, weights, sampling, minibatches"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms (resumed runs match uninterrupted ones)"""
    threads: int = 1
    """torch intra-op threads (1: the rollout's small batches gain nothing from more, and
    on a shared machine extra threads spin against other processes)"""
    total_timesteps: int = 300_000
    """environment steps (op decisions) to train for"""
    time_limit_min: float = 0.0
    """stop (with a checkpoint) after this many minutes; 0 = no limit"""
    learning_rate: float = 3e-5
    """Adam learning rate of PPO (small: PPO fine-tunes the cloned policy)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0"""
    num_envs: int = 8
    """parallel environments"""
    num_steps: int = 128
    """steps per environment per rollout"""
    gamma: float = 1.0
    """discount (1: the return is exactly the plan's normalised gain)"""
    gae_lambda: float = 0.99
    """GAE lambda"""
    num_minibatches: int = 8
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    norm_adv: bool = False
    """normalise advantages per minibatch (off: the cloned policy is nearly deterministic,
    its advantages are mostly critic noise, and normalising blows that noise up to unit
    size, which undoes the warm start)"""
    clip_coef: float = 0.1
    """PPO ratio clip"""
    clip_vloss: bool = True
    """clip the value loss as PPO does"""
    ent_coef: float = 0.0
    """entropy bonus"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float = 0.0
    """stop an update's epochs early above this approximate KL; 0 = never"""
    bc_epochs: int = 60
    """behaviour-cloning epochs over the best classical plan of every training problem
    before PPO (training/demonstrations.py); 0 = pure PPO from scratch"""
    bc_learning_rate: float = 1e-3
    """Adam learning rate of the behaviour cloning"""
    bc_batch: int = 8
    """problems per behaviour-cloning gradient step"""
    value_warmup: int = 10
    """first PPO iterations that train only the critic (the cloned actor waits for a critic
    that knows its returns; without it the first noisy advantages undo the warm start)"""
    channels: int = 64
    """policy embedding size"""
    num_layers: int = 4
    """message-passing layers"""
    hidden: int = 128
    """actor / critic MLP width"""
    generated: int = 120
    """generated graphs in the corpus"""
    min_ops: int = 20
    """smallest generated graph"""
    max_ops: int = 500
    """largest generated graph"""
    zoo_variants: int = 2
    """random platforms each training zoo model is also put on"""
    variant_fraction: float = 0.5
    """share of generated graphs on a random platform (the rest on cpu-npu)"""
    zoo_weight: float = 0.5
    """probability that an episode draws a training zoo model on cpu-npu"""
    eval_every: int = 10
    """validate (greedy, training zoo models on cpu-npu) every this many iterations; 0 = only at the end"""
    val_reference: str = "baselines"
    """validation reference: 'baselines' (best of npu-first, greedy, partitiontuner, heft) or 'oracle'"""
    save_every: int = 10
    """write the checkpoint every this many iterations"""
    out: str = "runs/ppo/policy.pt"
    """checkpoint path; logs (CSV, TensorBoard) go to <out dir>/logs, the best validated policy to <out stem>-best.pt"""
    resume: str = ""
    """checkpoint to resume from (its Args are used, except out, resume, progress, time_limit_min,
    stop_after_iterations and the options given on this command line)"""
    progress: bool = True
    """show a rich progress bar"""
    stop_after_iterations: int = 0
    """stop after this many iterations of this run, writing a checkpoint (for tests); 0 = never"""

    # filled in once after parsing
    batch_size: int = 0
    """num_envs * num_steps (derived)"""
    minibatch_size: int = 0
    """batch_size // num_minibatches (derived)"""
    num_iterations: int = 0
    """total_timesteps // batch_size (derived)"""

    def derive(self) -> Args:
        if self.num_envs < 1 or self.num_steps < 1 or self.num_minibatches < 1 or self.update_epochs < 1:
            raise ConfigError("num_envs, num_steps, num_minibatches and update_epochs must be >= 1")
        if self.val_reference not in ("baselines", "oracle"):
            raise ConfigError(f"val_reference must be 'baselines' or 'oracle', got {self.val_reference!r}")
        self.batch_size = self.num_envs * self.num_steps
        self.minibatch_size = max(self.batch_size // self.num_minibatches, 1)
        self.num_iterations = max(self.total_timesteps // self.batch_size, 1)
        return self


def field_docs() -> dict[str, str]:
    """Each ``Args`` field's docstring (the string literal under it), for ``--help``."""
    tree = ast.parse(inspect.getsource(Args))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value)  # type: ignore[union-attr]
    return docs


def make_env(problems: Sequence[Problem], weights: Sequence[float], max_ops: int, max_edges: int,
             max_pus: int) -> Callable[[], gym.Env]:
    """A thunk building one training env over the whole corpus."""

    def thunk() -> gym.Env:
        return gym.make("PartitionTuner-v0", problems=list(problems), problem_weights=list(weights),
                        max_ops=max_ops, max_edges=max_edges, max_pus=max_pus, invalid_action="raise")

    return thunk


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (CleanRL's init)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def init_agent(agent: GNNPolicy) -> GNNPolicy:
    """CleanRL's init on the actor and critic: orthogonal ``sqrt(2)`` hidden layers, the
    actor's last layer at 0.01 (near-uniform first policy), the critic's at 1."""
    for head, last_std in ((agent.actor, 0.01), (agent.critic, 1.0)):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        for m in linears[:-1]:
            layer_init(m)
        layer_init(linears[-1], std=last_std)
    return agent


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
        next_done: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a ``(num_steps, num_envs)`` rollout.

    ``dones[t]`` is 1 when ``obs[t]`` starts a new episode (the previous one ended);
    ``next_done`` likewise for the observation after the rollout. Returns
    ``(advantages, returns)``.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


# ---------------------------------------------------------------------------------
# validation


def validation_set(entries, reference: str) -> list[tuple[str, Problem, float]]:
    """``(name, problem, reference makespan)`` for the training zoo models on cpu-npu."""
    from partitiontuner.simulate import Simulator

    out = []
    for e in entries:
        if e.group != "zoo":
            continue
        pr = e.problem
        sim = Simulator(pr)
        if reference == "oracle":
            from partitiontuner.agents.registry import make_planner

            ref = sim.plan_makespan(make_planner("oracle").plan(pr))
        else:
            from partitiontuner.agents.baselines import NpuFirstPlanner
            from partitiontuner.agents.greedy import GreedyPlanner
            from partitiontuner.agents.heft import HeftPlanner
            from partitiontuner.agents.paper import PartitionTunerPlanner

            ref = min(sim.plan_makespan(P().plan(pr)) for P in (NpuFirstPlanner, GreedyPlanner, PartitionTunerPlanner, HeftPlanner))
        out.append((pr.graph.name, pr, ref))
    return out


def validate(agent: GNNPolicy, val: Sequence[tuple[str, Problem, float]]) -> dict[str, float]:
    """Greedy-decode every validation problem: makespan / reference per model, mean and max."""
    from partitiontuner.agents.rl_planner import decode
    from partitiontuner.env.features import ProblemContext

    ratios = {}
    agent.eval()
    for name, pr, ref in val:
        ctx = ProblemContext(pr)
        plan = decode(agent, ctx, 1)[0]
        ratios[name] = ctx.sim.plan_makespan(plan) / ref
    agent.train()
    vals = list(ratios.values())
    return {"mean": float(np.mean(vals)), "max": float(np.max(vals)), **ratios} if vals else {}


# ---------------------------------------------------------------------------------
# warm start


def warm_start(agent: GNNPolicy, problems: Sequence[Problem], args: Args, np_rng: np.random.Generator,
               log: Callable[[str], None]) -> dict[str, float]:
    """Behaviour-clone the best classical plan of each problem (actor: cross-entropy;
    critic: the demonstration's return-to-go), ``args.bc_epochs`` epochs."""
    from partitiontuner.training.demonstrations import behaviour_cloning_loss, demonstration

    t0 = time.time()
    demos = [demonstration(p) for p in problems]
    sources: dict[str, int] = {}
    for d in demos:
        sources[d.source] = sources.get(d.source, 0) + 1
    optimizer = optim.Adam(agent.parameters(), lr=args.bc_learning_rate, eps=1e-5)
    order = np.arange(len(demos))
    acc = 0.0
    for epoch in range(args.bc_epochs):
        np_rng.shuffle(order)
        accs = []
        for start in range(0, len(order), args.bc_batch):
            optimizer.zero_grad()
            chunk = order[start:start + args.bc_batch]
            for i in chunk:
                loss, a = behaviour_cloning_loss(agent, demos[i], args.vf_coef)
                (loss / len(chunk)).backward()
                accs.append(a)
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
        acc = float(np.mean(accs))
        log(f"behaviour cloning epoch {epoch + 1}/{args.bc_epochs}: expert-action accuracy {acc:.3f}")
    log(f"warm start from {len(demos)} demonstrations ({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}) "
        f"in {time.time() - t0:.0f}s")
    return {"accuracy": acc}


# ---------------------------------------------------------------------------------
# training


def _to_torch(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in obs.items()}


def _rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    """The two RNGs training draws from: torch (action sampling) and numpy (minibatches)."""
    return {"torch": torch.get_rng_state(), "numpy": copy.deepcopy(np_rng.bit_generator.state)}


def _set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = copy.deepcopy(state["numpy"])


def train(args: Args, log: Callable[[str], None] = print, problems: Sequence[Problem] | None = None,
          explicit: Sequence[str] = ()) -> Path:
    """Run PPO; returns the path of the final checkpoint.

    Args:
        args: the configuration.
        log: where one-line messages go.
        problems: train on these instead of the corpus (tests, experiments); no validation.
        explicit: with ``args.resume``, the fields the caller set on purpose: they
            override the checkpoint's (``out``, ``resume``, ``progress``,
            ``stop_after_iterations`` and ``time_limit_min`` always do). Changing
            anything else than those makes the continuation differ from an
            uninterrupted run.
    """
    from partitiontuner.training.corpus import CorpusEntry, build_corpus

    out = Path(args.out)
    resume_ck: Checkpoint | None = None
    if args.resume:
        resume_ck = load_checkpoint(args.resume)
        if not resume_ck.optimizer or resume_ck.envs is None or resume_ck.rng is None:
            raise ConfigError(f"{args.resume}: a shipped policy, not a training checkpoint (no optimizer / env state to resume)")
        saved = dict(resume_ck.args)
        always = ("out", "resume", "progress", "stop_after_iterations", "time_limit_min")
        keep = {k: getattr(args, k) for k in (*always, *explicit)}
        known = {f.name for f in fields(Args)}
        args = Args(**{k: v for k, v in saved.items() if k in known})
        for k, v in keep.items():
            setattr(args, k, v)
    args.derive()

    # --- seeding ---------------------------------------------------------------------
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    np_rng = np.random.default_rng(args.seed)

    # --- corpus and envs -----------------------------------------------------------------
    t_build = time.time()
    if problems is None:
        corpus = build_corpus(args.seed, generated=args.generated, min_ops=args.min_ops, max_ops=args.max_ops,
                              zoo_variants=args.zoo_variants, variant_fraction=args.variant_fraction)
    else:
        corpus = [CorpusEntry(p, "custom", p.graph.name) for p in problems]
    problems = [e.problem for e in corpus]
    n_zoo = sum(e.group == "zoo" for e in corpus)
    weights = [args.zoo_weight / n_zoo if e.group == "zoo" else (1 - args.zoo_weight) / (len(corpus) - n_zoo)
               for e in corpus] if 0 < n_zoo < len(corpus) else [1.0] * len(corpus)
    max_ops = max(p.num_ops for p in problems)
    max_edges = max(len({(e.src, e.dst) for e in p.graph.edges}) for p in problems)
    max_pus = 4
    envs = gym.vector.SyncVectorEnv(
        [make_env(problems, weights, max_ops, max_edges, max_pus) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    val = validation_set(corpus, args.val_reference)
    log(f"corpus: {len(corpus)} problems ({n_zoo} zoo on cpu-npu), max {max_ops} ops; "
        f"validation on {len(val)} models; built in {time.time() - t_build:.1f}s")

    # --- agent and optimizer ----------------------------------------------------------------------
    agent = init_agent(GNNPolicy(args.channels, args.num_layers, args.hidden))
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # --- warm start: behaviour cloning of the best classical plan per problem ---------------------------
    if resume_ck is None and args.bc_epochs > 0:
        warm_start(agent, problems, args, np_rng, log)

    # --- storage (CleanRL: preallocated (num_steps, num_envs) tensors) -------------------------------
    space = envs.single_observation_space
    obs_buf = {k: torch.zeros((args.num_steps, args.num_envs, *s.shape), dtype=torch.from_numpy(np.zeros(0, s.dtype)).dtype)
               for k, s in space.spaces.items()}
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs = torch.zeros((args.num_steps, args.num_envs))
    rewards = torch.zeros((args.num_steps, args.num_envs))
    dones = torch.zeros((args.num_steps, args.num_envs))
    values = torch.zeros((args.num_steps, args.num_envs))

    global_step, start_iteration, best_val = 0, 1, math.inf
    last_val: dict[str, float] = {}
    next_obs_np, _ = envs.reset(seed=args.seed)
    next_done = torch.zeros(args.num_envs)
    if resume_ck is not None:
        agent.load_state_dict(resume_ck.policy_state)
        optimizer.load_state_dict(resume_ck.optimizer)
        _set_rng_state(resume_ck.rng, np_rng)
        global_step, start_iteration = resume_ck.global_step, resume_ck.iteration + 1
        best_val = float(resume_ck.info.get("best_val", math.inf))
        next_done = torch.as_tensor(resume_ck.info["next_done"], dtype=torch.float32)
        restored = [env.unwrapped.restore(snap) for env, snap in zip(envs.envs, resume_ck.envs, strict=True)]
        next_obs_np = {k: np.stack([o[k] for o, _ in restored]) for k in space.spaces}
        log(f"resumed from {args.resume} at step {global_step} (iteration {resume_ck.iteration})")
    next_obs = _to_torch(next_obs_np)

    log_dir = out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    csv_path = log_dir / "progress.csv"
    csv_fields = ["iteration", "global_step", "time_s", "sps", "learning_rate", "episodes", "episodic_gain",
                  "value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "explained_variance",
                  "val_mean_ratio", "val_max_ratio"]
    new_csv = not csv_path.exists() or resume_ck is None
    csv_file = open(csv_path, "w" if new_csv else "a", newline="")  # noqa: SIM115 - closed in finally
    csv_writer = csv.DictWriter(csv_file, fieldnames=csv_fields)
    if new_csv:
        csv_writer.writeheader()

    def snapshot(iteration: int, info: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            policy_config=dict(agent.config), policy_state={k: v.detach().clone() for k, v in agent.state_dict().items()},
            args=asdict(args), global_step=global_step, iteration=iteration,
            optimizer=copy.deepcopy(optimizer.state_dict()), rng=_rng_state(np_rng),
            envs=[env.unwrapped.snapshot() for env in envs.envs],
            info={"next_done": next_done.tolist(), "best_val": best_val, **info},
        )

    if val and resume_ck is None:  # the warm-started (or initial) policy is a candidate too
        last_val = validate(agent, val)
        best_val = last_val["mean"]
        save_checkpoint(out.with_name(out.stem + "-best" + out.suffix), snapshot(0, {"validation": last_val}))
        log(f"validation before PPO: mean ratio {last_val['mean']:.4f}, max {last_val['max']:.4f}")
    boundary = snapshot(start_iteration - 1, {})
    best_path = out.with_name(out.stem + "-best" + out.suffix)
    start_time = time.time()
    steps_at_start = global_step
    iteration = start_iteration - 1
    progress = _Progress(args.progress, args.num_iterations, start_iteration - 1)
    interrupted = False
    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # --- rollout ------------------------------------------------------------------------
            gains: list[float] = []
            cache: dict = {}  # graph encodings for this rollout (weights are fixed during it)
            for step in range(args.num_steps):
                global_step += args.num_envs
                for k in obs_buf:
                    obs_buf[k][step] = next_obs[k]
                dones[step] = next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs, cache=cache)
                values[step] = value
                actions[step] = action
                logprobs[step] = logprob
                next_obs_np, reward, terminations, truncations, infos = envs.step(action.numpy())
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
                next_done = torch.as_tensor(np.logical_or(terminations, truncations), dtype=torch.float32)
                next_obs = _to_torch(next_obs_np)
                if "final_info" in infos:
                    fi = infos["final_info"]
                    for i in np.flatnonzero(fi.get("_gain", [])):
                        gains.append(float(fi["gain"][i]))

            # --- GAE ---------------------------------------------------------------------------------
            with torch.no_grad():
                next_value = agent.get_value(next_obs, cache=cache)
                advantages, returns = gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)

            # --- flatten --------------------------------------------------------------------------------
            b_obs = {k: v.reshape(args.batch_size, *v.shape[2:]) for k, v in obs_buf.items()}
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape(-1)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            # --- minibatch epochs ---------------------------------------------------------------------------
            b_inds = np.arange(args.batch_size)
            clipfracs = []
            for _epoch in range(args.update_epochs):
                np_rng.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = torch.as_tensor(b_inds[start:start + args.minibatch_size])
                    mb_obs = {k: v[mb_inds] for k, v in b_obs.items()}
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, b_actions[mb_inds])
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]
                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv and len(mb_inds) > 1:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                        v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef)
                        v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()
                    entropy_loss = entropy.mean()
                    if args.bc_epochs > 0 and iteration <= args.value_warmup:
                        loss = v_loss * args.vf_coef  # critic warm-up after the warm start
                    else:
                        loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl > 0 and approx_kl > args.target_kl:
                    break
            y_pred, y_true = b_values.numpy(), b_returns.numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # --- log ----------------------------------------------------------------------------------------
            elapsed = time.time() - start_time
            sps = int((global_step - steps_at_start) / max(elapsed, 1e-9))
            row: dict[str, Any] = {
                "iteration": iteration, "global_step": global_step, "time_s": round(elapsed, 1), "sps": sps,
                "learning_rate": optimizer.param_groups[0]["lr"], "episodes": len(gains),
                "episodic_gain": float(np.mean(gains)) if gains else "", "value_loss": v_loss.item(),
                "policy_loss": pg_loss.item(), "entropy": entropy_loss.item(), "old_approx_kl": old_approx_kl.item(),
                "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)), "explained_variance": float(explained_var),
                "val_mean_ratio": "", "val_max_ratio": "",
            }
            last_iteration = iteration == args.num_iterations
            if val and ((args.eval_every and iteration % args.eval_every == 0) or last_iteration):
                last_val = validate(agent, val)
                row["val_mean_ratio"], row["val_max_ratio"] = last_val["mean"], last_val["max"]
                for name, r in last_val.items():
                    writer.add_scalar(f"validation/{name}_ratio", r, global_step)
                if last_val["mean"] < best_val:
                    best_val = last_val["mean"]
                    save_checkpoint(best_path, snapshot(iteration, {"validation": last_val}))
            for key in ("learning_rate", "value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl",
                        "clipfrac", "explained_variance"):
                writer.add_scalar(f"losses/{key}" if key != "learning_rate" else "charts/learning_rate", row[key], global_step)
            if gains:
                writer.add_scalar("charts/episodic_gain", row["episodic_gain"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            csv_writer.writerow(row)
            csv_file.flush()
            progress.update(iteration, global_step, row, last_val)

            # --- checkpoint ----------------------------------------------------------------------------------------
            boundary = snapshot(iteration, {"validation": last_val})
            over_time = args.time_limit_min > 0 and elapsed > 60 * args.time_limit_min
            stop = args.stop_after_iterations and iteration - start_iteration + 1 >= args.stop_after_iterations
            if last_iteration or over_time or stop or (args.save_every and iteration % args.save_every == 0):
                save_checkpoint(out, boundary)
            if over_time or stop:
                log(f"stopping after iteration {iteration} ({'time limit' if over_time else 'as asked'}); "
                    f"resume with --resume {out}")
                break
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint(out, boundary)
        log(f"interrupted: saved the checkpoint of iteration {boundary.iteration} (step {boundary.global_step}) to {out}; "
            f"resume with --resume {out}")
    finally:
        progress.close()
        csv_file.close()
        writer.close()
        envs.close()
    if not interrupted:
        log(f"done: {global_step} steps in {time.time() - start_time:.0f}s; checkpoint {out}"
            + (f", best validated {best_path} (mean ratio {best_val:.4f})" if math.isfinite(best_val) else ""))
    return out


class _Progress:
    """A rich progress bar (or nothing)."""

    def __init__(self, show: bool, total: int, done: int):
        self.bar = None
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=done, status="")

    def update(self, iteration: int, step: int, row: dict[str, Any], val: dict[str, float]) -> None:
        if self.bar is None:
            return
        gain = f"gain {row['episodic_gain']:.3f}" if row["episodic_gain"] != "" else ""
        v = f" val {val['mean']:.4f}/{val['max']:.4f}" if val else ""
        self.bar.update(self.task, completed=iteration, status=f"step {step} {row['sps']} sps {gain}{v}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------------
# command line


def args_from(overrides: dict[str, Any]) -> Args:
    """``Args`` with some fields replaced (names checked, values converted to the field's type)."""
    known = {f.name: f for f in fields(Args)}
    values = {}
    for k, v in overrides.items():
        if k not in known:
            raise ConfigError(f"unknown training option {k!r} (one of: {', '.join(sorted(known))})")
        typ = type(getattr(Args(), k))
        if isinstance(v, str) and typ is not str:
            try:
                v = (v.lower() in ("1", "true", "yes", "on")) if typ is bool else typ(v)
            except ValueError:
                raise ConfigError(f"training option {k}: {v!r} is not a {typ.__name__}") from None
        values[k] = v
    return Args(**values)


def parse_args(argv: Sequence[str] | None = None) -> Args:
    docs = field_docs()
    p = argparse.ArgumentParser(description="Train the PartitionTuner policy with PPO.")
    for f in fields(Args):
        if f.name in ("batch_size", "minibatch_size", "num_iterations"):
            continue
        default = getattr(Args(), f.name)
        if isinstance(default, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name))
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default, help=docs.get(f.name))
    ns = p.parse_args(argv)
    return Args(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    from partitiontuner.errors import PartitionTunerError

    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = [a[2:].split("=")[0].replace("-", "_").removeprefix("no_") for a in argv if a.startswith("--")]
    try:
        train(parse_args(argv), explicit=explicit)
    except PartitionTunerError as exc:
        print(f"partitiontuner: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
