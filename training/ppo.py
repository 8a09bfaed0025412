"""PPO for the PartitionTuner policy (CleanRL's ``ppo.py`` layout).

Reads top to bottom: :class:`Args` (defined in :mod:`partitiontuner.training.args`,
which ``partitiontuner``'s parser imports without torch), :func:`make_contexts`,
:func:`layer_init`, the advantage functions, then :func:`train`: seed, build the
corpus, warm-start the policy, and per iteration: rollout, advantages, flatten,
minibatch epochs, log, validate, checkpoint. Run it as ``partitiontuner train`` or
``python -m partitiontuner.training.ppo`` (the same flags). The rest of a run lives in
its own modules: :mod:`~partitiontuner.training.warm_start` (behaviour cloning),
:mod:`~partitiontuner.training.validation` (checkpoint selection),
:mod:`~partitiontuner.training.run_log` (progress bars, CSV, TensorBoard).

Rollouts (POMO-style, Kwon et al. 2020, https://arxiv.org/abs/2010.16011): each
iteration draws ``problems_per_iteration`` corpus problems and runs, per problem,
``samples_per_problem`` sampled episodes plus one greedy episode in lockstep with the
environment's own state machine and features
(:func:`partitiontuner.agents.rl_planner.rollout`, the planner's code path: the graph
is encoded once, the head runs once per step on all episodes of the problem). That is
several times faster than stepping padded ``PartitionTuner-v0`` observations through a
vector env, and it gives what the baseline needs: episodes of the *same* problem.

Where the rollouts run is one seam, ``workers.collect(agent, drawn, seeds)``
(:mod:`~partitiontuner.training.ray_rollouts`): in this process, or with ``--ray
[ADDRESS]`` in Ray actors that each hold a policy copy and a slice of the corpus, with
the same trajectories bit for bit: every drawn problem samples from its own generator,
seeded from (seed, iteration, position in the draw) (the module says why); the update
stays here.

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

The value head is trained on the returns-to-go discounted by ``gamma``
(:func:`returns_to_go`) in both modes; with the default ``gamma = 1`` the return of the
first step is exactly the episode's normalised gain.

Warm start (``--bc-epochs``, :mod:`partitiontuner.training.warm_start`): the actor first
clones the best demonstration of every training problem; PPO then improves on the
cloned policy with the simulator's reward. Validation: greedy decoding of the training
zoo models on ``cpu-npu``, against the best quick planner or the oracle; the checkpoint
that validates best (the warm start included) is written to ``<out stem>-best.pt``.

Exact resumption: a checkpoint taken at an iteration boundary holds the weights, the
optimizer and the run's generators' states (numpy: which problems are drawn, minibatch
order; the rollouts' generators are seeded per problem from the iteration number, and
rollouts start fresh each iteration, so no episode is in flight), so ``--resume``
continues with bit-identical numbers. Ctrl-C writes the last boundary's checkpoint and
exits with 130.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.rl_planner import Trajectories
from partitiontuner.distributed import preflight
from partitiontuner.env.features import ProblemContext
from partitiontuner.errors import ConfigError, run_entry_point
from partitiontuner.problem import Problem
from partitiontuner.training.args import (
    Args,
    add_training_arguments,
    args_from,
    args_from_namespace,
)
from partitiontuner.training.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_run,
    run_rng_state,
    save_uninterrupted,
)
from partitiontuner.training.ray_rollouts import problem_seeds, rollout_workers
from partitiontuner.training.run_log import ProgressBar, RunLog, ppo_status
from partitiontuner.training.validation import validate, validation_set
from partitiontuner.training.warm_start import warm_start

__all__ = ["Args", "args_from", "gae", "layer_init", "main", "make_contexts", "returns_to_go", "self_critic_advantages",
           "shaped_rewards", "train"]


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
# advantages and returns


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


def returns_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns-to-go ``G_t = r_t + gamma * G_{t+1}`` of whole episodes, the
    value head's targets.

    Args:
        rewards: ``(steps, episodes)``, each column one whole episode.
        gamma: the discount; at 1 the first step's return is the episode's gain.
    """
    if gamma == 1.0:
        return rewards.flip(0).cumsum(0).flip(0)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


# ---------------------------------------------------------------------------------
# rollout storage


def _drop_first_episode(tr: Trajectories) -> Trajectories:
    """The sampled episodes of a rollout whose episode 0 is the greedy baseline."""
    return Trajectories(**{f.name: (t[:, 1:] if t.dim() > 1 else t[1:]) for f in fields(Trajectories)
                           for t in [getattr(tr, f.name)]})


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
        rows = tr.action.numel()
        logits, value = agent.heads(h[tr.ops.flatten(0, 1)], g.expand(rows, -1), tr.pu.flatten(0, 1),
                                    tr.actions.flatten(0, 1), tr.mask.flatten(0, 1), tr.glob.flatten(0, 1))
        dist = torch.distributions.Categorical(logits=logits)
        logps.append(dist.log_prob(tr.action.reshape(-1)))
        ents.append(dist.entropy())
        vals.append(value)
    return torch.cat(logps), torch.cat(ents), torch.cat(vals)


# ---------------------------------------------------------------------------------
# training


def train(args: Args, log: Callable[[str], None] = print, problems: Sequence[Problem] | None = None) -> Path:
    """Run PPO; returns the path of the final checkpoint.

    Args:
        args: the configuration, used as given (on ``--resume`` the command line merges
            it with the checkpoint's first: :func:`partitiontuner.training.args.merge_resume`).
        log: where one-line messages go.
        problems: train on these instead of the corpus (tests, experiments); no validation.

    Raises:
        ConfigError: bad options, or a checkpoint that cannot be resumed.
        KeyboardInterrupt: after Ctrl-C, once the last iteration boundary's checkpoint is saved.
    """
    from partitiontuner.training.corpus import CorpusEntry, build_corpus

    t_run = time.time()
    args.derive()
    deadline = t_run + 60 * args.time_limit_min if args.time_limit_min > 0 else math.inf
    out = Path(args.out)
    resume_ck = load_checkpoint(args.resume) if args.resume else None
    preflight(args.ray or None)  # a bad --ray fails now, before the corpus is built

    # --- seeding ---------------------------------------------------------------------
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(args.torch_deterministic)
    np_rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    # --- corpus and contexts -------------------------------------------------------------
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
        f"validation on {len(val)} models; built in {time.time() - t_run:.1f}s")

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
        warm_start(agent, problems, args, np_rng, log, deadline)

    global_step, start_iteration, best_val = 0, 1, math.inf
    last_val: dict[str, float] = {}
    if resume_ck is not None:
        restore_run(resume_ck, args.resume, agent, optimizer, np_rng, gen)
        global_step, start_iteration = resume_ck.global_step, resume_ck.iteration + 1
        best_val = float(resume_ck.info.get("best_val", math.inf))
        last_val = dict(resume_ck.info.get("validation") or {})
        log(f"resumed from {args.resume} at step {global_step} (iteration {resume_ck.iteration})")

    def snapshot(iteration: int, info: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            policy_config=dict(agent.config), policy_state={k: v.detach().clone() for k, v in agent.state_dict().items()},
            args=asdict(args), global_step=global_step, iteration=iteration,
            optimizer=copy.deepcopy(optimizer.state_dict()), rng=run_rng_state(np_rng, gen),
            info={"best_val": best_val, **info},
        )

    workers = rollout_workers(args, problems, contexts, weights)  # this process, or Ray actors (--ray)
    run_log = RunLog(out.parent / "logs", args, append=resume_ck is not None)
    best_path = out.with_name(out.stem + "-best" + out.suffix)
    if val and resume_ck is None:  # the warm-started (or initial) policy is a candidate too
        last_val = validate(agent, val)
        best_val = last_val["mean"]
        save_uninterrupted(best_path, snapshot(0, {"validation": last_val}))
        run_log.validation_row(last_val)
        log(f"validation before PPO: mean ratio {last_val['mean']:.4f}, max {last_val['max']:.4f}")
    boundary = snapshot(start_iteration - 1, {"validation": last_val})
    start_time = time.time()
    steps_at_start = global_step
    iteration = start_iteration - 1
    progress = ProgressBar(args.progress, "train", args.total_timesteps, global_step)
    try:
        while global_step < args.total_timesteps and time.time() <= deadline:
            iteration += 1
            if args.anneal_lr:
                frac = 1.0 - global_step / args.total_timesteps
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # --- rollout: per drawn problem, samples_per_problem sampled episodes + 1 greedy ------------
            drawn = np_rng.choice(len(problems), size=args.problems_per_iteration, p=weights)
            batch_contexts = [contexts[i] for i in drawn]
            recorded = workers.collect(agent, drawn, problem_seeds(args.seed, iteration, len(drawn)))
            greedy_gains = torch.tensor([float((ctx.ref_makespan - tr.makespan_us[0]) / ctx.ref_makespan)
                                         for ctx, tr in zip(batch_contexts, recorded, strict=True)])
            trajs: list[Trajectories] = [_drop_first_episode(tr) for tr in recorded]
            global_step += sum(tr.action.numel() for tr in trajs)

            # --- advantages and returns -----------------------------------------------------------
            refs = [ctx.ref_makespan for ctx in batch_contexts]
            gains = torch.stack([((ref - tr.makespan_us) / ref).float() for ref, tr in zip(refs, trajs, strict=True)])
            returns, advantages = [], []
            for j, tr in enumerate(trajs):
                rewards = shaped_rewards(tr.partial_us, tr.makespan_us, refs[j]).float()
                returns.append(returns_to_go(rewards, args.gamma))
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

            # --- log and validate ------------------------------------------------------------------------------
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
            validated = None
            if val and ((args.eval_every and iteration % args.eval_every == 0) or last_iteration):
                last_val = validated = validate(agent, val)
                row["val_mean_ratio"], row["val_max_ratio"] = last_val["mean"], last_val["max"]
                if last_val["mean"] < best_val:
                    best_val = last_val["mean"]
                    save_uninterrupted(best_path, snapshot(iteration, {"validation": last_val}))
            run_log.iteration(row, validated)
            progress.update(global_step, ppo_status(iteration, row, last_val))

            # --- checkpoint ----------------------------------------------------------------------------------------
            boundary = snapshot(iteration, {"validation": last_val})
            over_time = time.time() > deadline
            stop = args.stop_after_iterations and iteration - start_iteration + 1 >= args.stop_after_iterations
            if last_iteration or over_time or stop or (args.save_every and iteration % args.save_every == 0):
                save_uninterrupted(out, boundary)
            if over_time or stop:
                log(f"stopping after iteration {iteration} ({'time limit' if over_time else 'as asked'}); "
                    f"resume with --resume {out}")
                break
        if iteration < start_iteration:  # nothing to train: the starting point is the checkpoint
            save_uninterrupted(out, boundary)
            if time.time() > deadline:
                log(f"stopping before PPO (time limit); resume with --resume {out}")
    except KeyboardInterrupt:
        progress.close()
        save_uninterrupted(out, boundary)
        log(f"interrupted: saved the checkpoint of iteration {boundary.iteration} (step {boundary.global_step}) to {out}; "
            f"resume with --resume {out}")
        raise
    finally:
        progress.close()
        run_log.close()
        workers.close()
    log(f"done: {global_step} steps in {time.time() - start_time:.0f}s; checkpoint {out}"
        + (f", best validated {best_path} (mean ratio {best_val:.4f})" if math.isfinite(best_val) else ""))
    return out


# ---------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m partitiontuner.training.ppo [flags]``: the flags of ``partitiontuner train``."""
    p = argparse.ArgumentParser(prog="python -m partitiontuner.training.ppo",
                                description="Train the PartitionTuner policy with PPO.")
    add_training_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = p.parse_args(argv)

    def run() -> int:
        train(args_from_namespace(ns))
        return 0

    return run_entry_point(run, debug=ns.debug)


if __name__ == "__main__":
    sys.exit(main())
