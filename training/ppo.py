"""PPO for the PartitionTuner policy, in one file (CleanRL's ``ppo.py`` layout).

Reads top to bottom: :class:`Args`, :func:`make_contexts`, :func:`layer_init`, the
advantage functions, then :func:`train`: seed, build the corpus, warm-start the
policy, and per iteration: rollout, advantages, flatten, minibatch epochs, log,
validate, checkpoint. Run it as ``partitiontuner train`` or
``python -m partitiontuner.training.ppo``.

Rollouts (POMO-style, Kwon et al. 2020, https://arxiv.org/abs/2010.16011): each
iteration draws ``problems_per_iteration`` corpus problems and runs, per problem,
``samples_per_problem`` sampled episodes plus one greedy episode in lockstep with the
environment's own state machine and features
(:func:`partitiontuner.agents.rl_planner.rollout`, the planner's code path: the graph
is encoded once, the head runs once per step on all episodes of the problem). That is
several times faster than stepping padded ``PartitionTuner-v0`` observations through a
vector env, and it gives what the baseline needs: episodes of the *same* problem.

Advantages (``--baseline``):

* ``greedy`` (default; the greedy-rollout self-critic of Kool et al. 2019,
  https://arxiv.org/abs/1803.08475, and Rennie et al. 2017): every step of a sampled
  episode gets the episode's normalised gain minus the gain of the policy's own greedy
  episode of the same problem (:func:`self_critic_advantages`). The reward is the
  plan's makespan gain, so this is exact and needs no learned critic; a sample beats
  the baseline only by being better than what ``plan --method rl`` would do, which is
  exactly what PPO should reinforce. A learned critic was tried first: its value
  errors on 144 problems dwarf the 0.1-2 % differences between good plans, and every
  PPO checkpoint validated worse than the warm start.
* ``critic``: GAE (:func:`gae`) over the shaped per-step rewards with the value head.

The value head is trained on the Monte-Carlo returns-to-go in both modes.

Warm start (:func:`warm_start`, ``--bc-epochs``): the actor first clones, on every
training problem, the best of the baselines' plans, three heuristic rollouts and
(``--oracle-demo-s``) the oracle's plan where the oracle proves it optimal within that
time (:mod:`partitiontuner.training.demonstrations`); PPO then improves on the cloned
policy with the simulator's reward. Validation: greedy decoding of the training zoo
models on ``cpu-npu``, against the best baseline or the oracle; the checkpoint that
validates best (the warm start included) is written to ``<out stem>-best.pt``.

Exact resumption: a checkpoint taken at an iteration boundary holds the weights, the
optimizer and the numpy and torch sampling generators' states (rollouts start fresh
each iteration, so no episode is in flight), so ``--resume`` continues with
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

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.rl_planner import Trajectories, rollout
from partitiontuner.env.features import MAX_PUS, ProblemContext
from partitiontuner.errors import ConfigError
from partitiontuner.problem import Problem
from partitiontuner.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

BASELINES = ("greedy", "critic")


@dataclass
class Args:
    seed: int = 1
    """seed of everything: corpus, problem draws, weights, sampling, minibatches"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms (resumed runs match uninterrupted ones)"""
    threads: int = 1
    """torch intra-op threads (1: the rollout's small batches gain nothing from more, and
    on a shared machine extra threads spin against other processes)"""
    total_timesteps: int = 1_000_000
    """sampled op decisions (environment steps) to train for"""
    time_limit_min: float = 0.0
    """stop (with a checkpoint) after this many minutes; 0 = no limit"""
    learning_rate: float = 1e-4
    """Adam learning rate of PPO"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0"""
    problems_per_iteration: int = 8
    """corpus problems drawn per iteration"""
    samples_per_problem: int = 16
    """sampled episodes per drawn problem (plus one greedy episode for the baseline)"""
    baseline: str = "greedy"
    """advantage baseline: 'greedy' (sampled return minus the greedy return of the same
    problem) or 'critic' (GAE with the value head)"""
    gamma: float = 1.0
    """discount of the 'critic' baseline (1: the return is exactly the plan's normalised gain)"""
    gae_lambda: float = 0.95
    """GAE lambda of the 'critic' baseline"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    norm_adv: bool = True
    """divide advantages by their standard deviation over the iteration (at least adv_floor)"""
    adv_floor: float = 1e-3
    """smallest advantage scale when normalising: gain differences below ~0.1 % of the
    reference makespan are not blown up to unit size"""
    clip_coef: float = 0.2
    """PPO ratio clip"""
    clip_vloss: bool = True
    """clip the value loss as PPO does"""
    ent_coef: float = 0.01
    """entropy bonus (keeps sampling exploring around the cloned policy)"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float = 0.02
    """stop an update's epochs early above this approximate KL; 0 = never"""
    init: str = ""
    """start from this checkpoint's weights instead of the warm start (e.g. a cloned policy)"""
    bc_epochs: int = 60
    """behaviour-cloning epochs over the best demonstration of every training problem
    before PPO (training/demonstrations.py); 0 = pure PPO from scratch"""
    bc_learning_rate: float = 1e-3
    """Adam learning rate of the behaviour cloning"""
    bc_batch: int = 8
    """problems per behaviour-cloning gradient step"""
    oracle_demo_s: float = 0.0
    """also demonstrate the oracle's plan of a training problem when the oracle proves it
    optimal within this many seconds (one thread); 0 = no oracle demonstrations"""
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
    """probability that a draw is a training zoo model on cpu-npu"""
    eval_every: int = 5
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
    batch_episodes: int = 0
    """problems_per_iteration * samples_per_problem (derived)"""
    minibatch_problems: int = 0
    """problems per minibatch: ceil(problems_per_iteration / num_minibatches) (derived)"""

    def derive(self) -> Args:
        if min(self.problems_per_iteration, self.samples_per_problem, self.num_minibatches, self.update_epochs) < 1:
            raise ConfigError("problems_per_iteration, samples_per_problem, num_minibatches and update_epochs must be >= 1")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.val_reference not in ("baselines", "oracle"):
            raise ConfigError(f"val_reference must be 'baselines' or 'oracle', got {self.val_reference!r}")
        self.batch_episodes = self.problems_per_iteration * self.samples_per_problem
        self.minibatch_problems = -(-self.problems_per_iteration // self.num_minibatches)
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


def make_contexts(problems: Sequence[Problem]) -> list[ProblemContext]:
    """The training "envs": each problem's context (simulator, visit order, features),
    built once and shared by every rollout of that problem."""
    return [ProblemContext(p) for p in problems]


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


# ---------------------------------------------------------------------------------
# advantages


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


def self_critic_advantages(gains: torch.Tensor, greedy_gains: torch.Tensor) -> torch.Tensor:
    """Greedy-rollout baseline: each sampled episode's gain minus the greedy episode's
    gain on the same problem.

    Args:
        gains: ``(problems, samples)`` normalised gains of the sampled episodes.
        greedy_gains: ``(problems,)`` normalised gain of each problem's greedy episode.

    Returns:
        ``(problems, samples)`` advantages (every step of an episode gets its episode's).
    """
    return gains - greedy_gains[:, None]


def shaped_rewards(partial_us: torch.Tensor, makespan_us: torch.Tensor, ref_us: float) -> torch.Tensor:
    """The environment's shaped rewards of recorded episodes: ``-(M_t - M_{t-1}) / T_ref``
    per step and the rest of the gain at the last step, so each column sums to the
    episode's gain ``(T_ref - T) / T_ref``.

    Args:
        partial_us: ``(steps, episodes)`` partial makespan before each step (0 at step 0).
        makespan_us: ``(episodes,)`` the finished plans' makespans.
        ref_us: ``T_ref``.
    """
    rewards = torch.zeros_like(partial_us)
    rewards[:-1] = -(partial_us[1:] - partial_us[:-1]) / ref_us
    rewards[-1] = (ref_us - makespan_us) / ref_us + partial_us[-1] / ref_us
    return rewards


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
    """Behaviour-clone the best demonstration of each problem (actor: cross-entropy;
    critic: the demonstration's return-to-go), ``args.bc_epochs`` epochs."""
    from partitiontuner.training.demonstrations import behaviour_cloning_loss, demonstration

    t0 = time.time()
    demos = [demonstration(p, oracle_time_s=args.oracle_demo_s) for p in problems]
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


def _rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
    """The two generators training draws from: numpy (problems, minibatches) and torch (action sampling)."""
    return {"torch": gen.get_state(), "numpy": copy.deepcopy(np_rng.bit_generator.state)}


def _set_rng_state(state: dict[str, Any], np_rng: np.random.Generator, gen: torch.Generator) -> None:
    gen.set_state(state["torch"])
    np_rng.bit_generator.state = copy.deepcopy(state["numpy"])


def _score(agent: GNNPolicy, contexts: Sequence[ProblemContext], trajs: Sequence[Trajectories],
           probs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities, entropies and values of the recorded actions of problems
    ``probs`` under the current weights: each graph is encoded once, and the head scores
    all of its ``steps * samples`` rows (flattened step-major, as ``reshape(-1)``)."""
    logps, ents, vals = [], [], []
    for j in probs:
        ctx, tr = contexts[j], trajs[j]
        h, g = agent.encode(torch.as_tensor(ctx.node_static), torch.as_tensor(ctx.edge_index),
                            torch.as_tensor(ctx.edge_attr))
        rows = tr.current.numel()
        logits, value = agent.heads(h[tr.current.reshape(-1)], g.expand(rows, -1), tr.pu.flatten(0, 1),
                                    tr.actions.flatten(0, 1), tr.mask.flatten(0, 1), tr.glob.flatten(0, 1))
        dist = torch.distributions.Categorical(logits=logits)
        logps.append(dist.log_prob(tr.action.reshape(-1)))
        ents.append(dist.entropy())
        vals.append(value)
    return torch.cat(logps), torch.cat(ents), torch.cat(vals)


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
        if not resume_ck.optimizer or resume_ck.rng is None:
            raise ConfigError(f"{args.resume}: a shipped policy, not a training checkpoint (no optimizer / RNG state to resume)")
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
    gen = torch.Generator().manual_seed(args.seed)

    # --- corpus and contexts -------------------------------------------------------------
    t_build = time.time()
    if problems is None:
        corpus = build_corpus(args.seed, generated=args.generated, min_ops=args.min_ops, max_ops=args.max_ops,
                              zoo_variants=args.zoo_variants, variant_fraction=args.variant_fraction)
    else:
        corpus = [CorpusEntry(p, "custom", p.graph.name) for p in problems]
    problems = [e.problem for e in corpus]
    n_zoo = sum(e.group == "zoo" for e in corpus)
    weights = np.array([args.zoo_weight / n_zoo if e.group == "zoo" else (1 - args.zoo_weight) / (len(corpus) - n_zoo)
                        for e in corpus] if 0 < n_zoo < len(corpus) else [1.0] * len(corpus))
    weights /= weights.sum()
    contexts = make_contexts(problems)
    val = validation_set(corpus, args.val_reference)
    log(f"corpus: {len(corpus)} problems ({n_zoo} zoo on cpu-npu), max {max(p.num_ops for p in problems)} ops; "
        f"validation on {len(val)} models; built in {time.time() - t_build:.1f}s")

    # --- agent and optimizer ----------------------------------------------------------------------
    agent = init_agent(GNNPolicy(args.channels, args.num_layers, args.hidden))
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # --- warm start: a given policy, or behaviour cloning of the best demonstrations ---------------
    if resume_ck is None and args.init:
        init = load_checkpoint(args.init)
        if init.policy_config != agent.config:
            raise ConfigError(f"{args.init}: policy {init.policy_config} does not match channels/num_layers/hidden {agent.config}")
        agent.load_state_dict(init.policy_state)
        log(f"initial weights from {args.init}")
    elif resume_ck is None and args.bc_epochs > 0:
        warm_start(agent, problems, args, np_rng, log)

    global_step, start_iteration, best_val = 0, 1, math.inf
    last_val: dict[str, float] = {}
    if resume_ck is not None:
        agent.load_state_dict(resume_ck.policy_state)
        optimizer.load_state_dict(resume_ck.optimizer)
        _set_rng_state(resume_ck.rng, np_rng, gen)
        global_step, start_iteration = resume_ck.global_step, resume_ck.iteration + 1
        best_val = float(resume_ck.info.get("best_val", math.inf))
        last_val = dict(resume_ck.info.get("validation") or {})
        log(f"resumed from {args.resume} at step {global_step} (iteration {resume_ck.iteration})")

    log_dir = out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    csv_path = log_dir / "progress.csv"
    csv_fields = ["iteration", "global_step", "time_s", "sps", "learning_rate", "episodes", "episodic_gain",
                  "greedy_gain", "better_than_greedy", "value_loss", "policy_loss", "entropy", "old_approx_kl",
                  "approx_kl", "clipfrac", "explained_variance", "val_mean_ratio", "val_max_ratio"]
    new_csv = not csv_path.exists() or resume_ck is None
    csv_file = open(csv_path, "w" if new_csv else "a", newline="")  # noqa: SIM115 - closed in finally
    csv_writer = csv.DictWriter(csv_file, fieldnames=csv_fields)
    if new_csv:
        csv_writer.writeheader()

    def snapshot(iteration: int, info: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            policy_config=dict(agent.config), policy_state={k: v.detach().clone() for k, v in agent.state_dict().items()},
            args=asdict(args), global_step=global_step, iteration=iteration,
            optimizer=copy.deepcopy(optimizer.state_dict()), rng=_rng_state(np_rng, gen),
            info={"best_val": best_val, **info},
        )

    best_path = out.with_name(out.stem + "-best" + out.suffix)
    if val and resume_ck is None:  # the warm-started (or initial) policy is a candidate too
        last_val = validate(agent, val)
        best_val = last_val["mean"]
        save_checkpoint(best_path, snapshot(0, {"validation": last_val}))
        csv_writer.writerow({"iteration": 0, "global_step": 0, "time_s": 0.0, "val_mean_ratio": last_val["mean"],
                             "val_max_ratio": last_val["max"]})
        log(f"validation before PPO: mean ratio {last_val['mean']:.4f}, max {last_val['max']:.4f}")
    boundary = snapshot(start_iteration - 1, {"validation": last_val})
    start_time = time.time()
    steps_at_start = global_step
    iteration = start_iteration - 1
    progress = _Progress(args.progress, args.total_timesteps, global_step)
    interrupted = False
    try:
        while global_step < args.total_timesteps:
            iteration += 1
            if args.anneal_lr:
                frac = 1.0 - global_step / args.total_timesteps
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # --- rollout: per drawn problem, samples_per_problem sampled episodes + 1 greedy ------------
            drawn = np_rng.choice(len(problems), size=args.problems_per_iteration, p=weights)
            trajs: list[Trajectories] = []
            greedy_gains = torch.zeros(args.problems_per_iteration)
            agent.eval()
            with torch.no_grad():
                for j, i in enumerate(drawn):
                    ctx = contexts[i]
                    _, tr = rollout(agent, ctx, 1 + args.samples_per_problem, gen, greedy=1, record=True, pad_pus=MAX_PUS)
                    assert tr is not None
                    greedy_gains[j] = float((ctx.ref_makespan - tr.makespan_us[0]) / ctx.ref_makespan)
                    trajs.append(_drop_first_episode(tr))
            agent.train()
            batch_contexts = [contexts[i] for i in drawn]
            steps = [tr.current.numel() for tr in trajs]
            global_step += sum(steps)

            # --- advantages and returns -----------------------------------------------------------
            refs = [ctx.ref_makespan for ctx in batch_contexts]
            gains = torch.stack([((ref - tr.makespan_us) / ref).float() for ref, tr in zip(refs, trajs, strict=True)])
            returns, advantages = [], []
            for j, tr in enumerate(trajs):
                rewards = shaped_rewards(tr.partial_us, tr.makespan_us, refs[j]).float()
                returns.append(rewards.flip(0).cumsum(0).flip(0))  # return-to-go (gamma = 1)
                if args.baseline == "critic":  # each column is one whole episode: no bootstrap at the end
                    adv, _ = gae(rewards, tr.value, torch.zeros_like(rewards), torch.zeros(rewards.shape[1]),
                                 torch.ones(rewards.shape[1]), args.gamma, args.gae_lambda)
                    advantages.append(adv)
            if args.baseline == "greedy":
                sc = self_critic_advantages(gains, greedy_gains)
                advantages = [sc[j].expand_as(tr.logprob) for j, tr in enumerate(trajs)]
            if args.norm_adv:
                scale = max(float(torch.cat([a.reshape(-1) for a in advantages]).std()), args.adv_floor)
                advantages = [a / scale for a in advantages]

            # --- flatten: per problem, its (steps * samples) rows ------------------------------------
            b_logprobs = [tr.logprob.reshape(-1) for tr in trajs]
            b_values = [tr.value.reshape(-1) for tr in trajs]
            b_advantages = [a.reshape(-1) for a in advantages]
            b_returns = [r.reshape(-1) for r in returns]

            # --- minibatch epochs (a minibatch = minibatch_problems problems, all their rows) ----------
            b_inds = np.arange(args.problems_per_iteration)
            clipfracs = []
            approx_kl = old_approx_kl = v_loss = pg_loss = entropy_loss = torch.zeros(())
            for _epoch in range(args.update_epochs):
                np_rng.shuffle(b_inds)
                for start in range(0, args.problems_per_iteration, args.minibatch_problems):
                    mb = [int(j) for j in b_inds[start:start + args.minibatch_problems]]
                    newlogprob, entropy, newvalue = _score(agent, batch_contexts, trajs, mb)
                    mb_logprobs = torch.cat([b_logprobs[j] for j in mb])
                    mb_advantages = torch.cat([b_advantages[j] for j in mb])
                    mb_returns = torch.cat([b_returns[j] for j in mb])
                    mb_values = torch.cat([b_values[j] for j in mb])
                    logratio = newlogprob - mb_logprobs
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - mb_returns) ** 2
                        v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
                        v_loss_clipped = (v_clipped - mb_returns) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()
                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl > 0 and approx_kl > args.target_kl:
                    break
            y_pred, y_true = torch.cat(b_values).numpy(), torch.cat(b_returns).numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # --- log ----------------------------------------------------------------------------------------
            elapsed = time.time() - start_time
            sps = int((global_step - steps_at_start) / max(elapsed, 1e-9))
            row: dict[str, Any] = {
                "iteration": iteration, "global_step": global_step, "time_s": round(elapsed, 1), "sps": sps,
                "learning_rate": optimizer.param_groups[0]["lr"], "episodes": args.batch_episodes,
                "episodic_gain": float(gains.mean()), "greedy_gain": float(greedy_gains.mean()),
                "better_than_greedy": float((gains > greedy_gains[:, None] + 1e-9).float().mean()),
                "value_loss": v_loss.item(), "policy_loss": pg_loss.item(), "entropy": entropy_loss.item(),
                "old_approx_kl": old_approx_kl.item(), "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
                "explained_variance": float(explained_var), "val_mean_ratio": "", "val_max_ratio": "",
            }
            last_iteration = global_step >= args.total_timesteps
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
            for key in ("episodic_gain", "greedy_gain", "better_than_greedy"):
                writer.add_scalar(f"charts/{key}", row[key], global_step)
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
        if iteration < start_iteration:  # nothing to train: the starting point is the checkpoint
            save_checkpoint(out, boundary)
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint(out, boundary)
        log(f"interrupted: saved the checkpoint of iteration {boundary.iteration} (step {boundary.global_step}) to {out}; "
            f"resume with --resume {out}")
    finally:
        progress.close()
        csv_file.close()
        writer.close()
    if not interrupted:
        log(f"done: {global_step} steps in {time.time() - start_time:.0f}s; checkpoint {out}"
            + (f", best validated {best_path} (mean ratio {best_val:.4f})" if math.isfinite(best_val) else ""))
    return out


def _drop_first_episode(tr: Trajectories) -> Trajectories:
    """The sampled episodes of a rollout whose episode 0 is the greedy baseline."""
    return Trajectories(**{f.name: (t[:, 1:] if t.dim() > 1 else t[1:]) for f in fields(Trajectories)
                           for t in [getattr(tr, f.name)]})


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
            self.task = self.bar.add_task("train", total=total, completed=done, status="")  # in steps

    def update(self, iteration: int, step: int, row: dict[str, Any], val: dict[str, float]) -> None:
        if self.bar is None:
            return
        gain = f"gain {row['episodic_gain']:.3f} greedy {row['greedy_gain']:.3f}"
        v = f" val {val['mean']:.4f}/{val['max']:.4f}" if val else ""
        self.bar.update(self.task, completed=step, status=f"it {iteration} {row['sps']} sps {gain}{v}")

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
        if f.name in ("batch_episodes", "minibatch_problems"):
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
