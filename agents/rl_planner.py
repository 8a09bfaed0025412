"""The learned planner: the GNN policy decodes a plan op by op.

Each step the policy scores every action of every ready op (which op, which PU, join or
new partition) and the best one (or a sample) is taken, so any valid plan can come out.

Greedy decoding takes the most likely action at every step; with ``samples=K > 1`` it
also samples ``K - 1`` plans (seeded) and returns the best of all ``K`` by the
simulator, so sampling is never worse than greedy. All ``K`` episodes have
``num_ops`` steps, so they advance in lockstep and the policy's head runs once per
step on a batch of ``K``; the graph is encoded once. The environment's state machine
(:class:`~partitiontuner.env.state.ScheduleState`) supplies masks (which carry the
user's pins and forbids, the partition limit and memory) and the action features;
global constraints the masks cannot guarantee are then enforced by the repair step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from partitiontuner.agents.base import Planner
from partitiontuner.agents.policy_io import load_checkpoint, shipped_checkpoint
from partitiontuner.env.features import (
    ACTION,
    GLOBAL,
    PU,
    ProblemContext,
    action_features,
    global_features,
    pu_features,
)
from partitiontuner.env.observation import flat_mask
from partitiontuner.env.scheduling_env import plan_from_state
from partitiontuner.env.state import ScheduleState
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem


class RLPlanner(Planner):
    """Plan with a trained policy.

    Args:
        checkpoint: a checkpoint file, or ``None`` for the policy shipped with the package.
        samples: 1 = greedy decoding; K > 1 = the best of greedy plus K - 1 sampled plans.
        seed: seed of the sampling.

    Raises:
        ConfigError: a bad checkpoint or ``samples < 1``.
    """

    name = "rl"

    def __init__(self, checkpoint: str | Path | None = None, samples: int = 1, seed: int = 0):
        if int(samples) < 1:
            raise ConfigError(f"--samples must be >= 1, got {samples}")
        self.samples = int(samples)
        self.seed = int(seed)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else shipped_checkpoint()
        ck = load_checkpoint(self.checkpoint)
        self.policy = ck.make_policy()
        self.global_step = ck.global_step

    def __repr__(self) -> str:
        return f"RLPlanner(checkpoint={str(self.checkpoint)!r}, samples={self.samples}, seed={self.seed})"

    def plan(self, problem: Problem) -> Plan:
        t0 = time.perf_counter()
        ctx = ProblemContext(problem)
        plans = decode(self.policy, ctx, self.samples, self.seed)
        scored = [(ctx.sim.plan_makespan(p), i, p) for i, p in enumerate(plans)]
        best_ms, best_i, best = min(scored, key=lambda x: (x[0], x[1]))
        info = {
            "checkpoint": self.checkpoint.name, "samples": self.samples, "seed": self.seed,
            "greedy_makespan_us": scored[0][0], "chosen_sample": best_i,
            "decode_time_s": round(time.perf_counter() - t0, 4),
        }
        info.update({k: v for k, v in best.info.items() if k not in info})
        return Plan(best.partitions, best.model, best.model_hash, best.platform, self.name, info)


def decode(policy, ctx: ProblemContext, samples: int = 1, seed: int = 0) -> list[Plan]:
    """Decode ``samples`` plans in lockstep: the first greedy, the rest sampled.

    Runs torch on one thread: each step is a few tiny matrix products, which extra
    threads only slow down (and on a busy machine, by a lot).

    Raises:
        InfeasiblePlanError: an op with no allowed action, or global constraints repair
            cannot meet.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return rollout(policy, ctx, samples, torch.Generator().manual_seed(seed), greedy=1)[0]
    finally:
        torch.set_num_threads(threads)


@dataclass
class Trajectories:
    """What a recorded :func:`rollout` saw, so that PPO can score its actions again.

    ``n`` steps (the problem's op count) of ``E`` episodes, PU slots padded to ``P``,
    candidate (ready) ops padded to ``K``: ``ops`` ``(n, E, K)`` the candidate ops;
    ``pu`` ``(n, E, P, len(PU))``; ``actions`` ``(n, E, K * 2P, len(ACTION))``; ``mask``
    ``(n, E, K * 2P)`` bool (padding masked); ``glob`` ``(n, E, len(GLOBAL))``;
    ``action`` ``(n, E)`` the action taken (``i * 2P + 2 * pu + join`` for candidate ``i``); ``logprob`` and ``value``
    ``(n, E)`` under the policy that acted; ``partial_us`` ``(n, E)`` the partial
    makespan before the step (for the shaped reward); ``makespan_us`` ``(E,)`` each
    finished plan's makespan by the simulator.
    """

    ops: torch.Tensor
    pu: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    glob: torch.Tensor
    action: torch.Tensor
    logprob: torch.Tensor
    value: torch.Tensor
    partial_us: torch.Tensor
    makespan_us: torch.Tensor


def rollout(policy, ctx: ProblemContext, episodes: int, generator: torch.Generator | None = None, greedy: int = 1,
            record: bool = False, pad_pus: int | None = None) -> tuple[list[Plan], Trajectories | None]:
    """Run ``episodes`` episodes of one problem in lockstep (call under ``no_grad``).

    The first ``greedy`` episodes take the policy's most likely action, the others
    sample from it with ``generator``. The graph is encoded once and the head runs once
    per step on all episodes (every episode has ``num_ops`` steps).

    Args:
        policy: a :class:`~partitiontuner.agents.gnn_policy.GNNPolicy`.
        ctx: the problem's context.
        episodes: how many episodes.
        generator: the sampling generator (``None``: torch's default).
        greedy: how many of the episodes decode greedily.
        record: also return the :class:`Trajectories`.
        pad_pus: PU slots of the recorded tensors (default: the platform's PUs).

    Returns:
        The finished plans and, with ``record``, the trajectories.

    Raises:
        InfeasiblePlanError: an op with no allowed action, or global constraints repair
            cannot meet.
    """
    pr = ctx.problem
    p = pad_pus or pr.num_pus
    width = 2 * p
    x = torch.as_tensor(ctx.node_static)
    ei = torch.as_tensor(ctx.edge_index)
    ea = torch.as_tensor(ctx.edge_attr)
    h, g = policy.encode(x, ei, ea)
    states = [ScheduleState(pr, ctx.order, ctx.sim) for _ in range(episodes)]
    g_rows = g.expand(episodes, -1)
    is_greedy = torch.arange(episodes) < greedy
    n = pr.num_ops
    pu_buf = np.zeros((episodes, p, len(PU)), dtype=np.float32)
    glob_buf = np.zeros((episodes, len(GLOBAL)), dtype=np.float32)
    steps: list[tuple[torch.Tensor, ...]] = []
    for _ in range(n):
        cands = []
        for i, st in enumerate(states):
            ops, masks = st.candidate_masks()
            if not masks.any():
                names = ", ".join(repr(pr.graph.nodes[v].name) for v in ops)
                raise InfeasiblePlanError(f"no PU may run any of the ready ops {names}")
            cands.append((ops, flat_mask(masks, p).astype(bool), action_features(ctx, st, ops, masks, p)))
            pu_buf[i] = pu_features(ctx, st, p)
            glob_buf[i] = global_features(ctx, st)
        k = max(len(ops) for ops, _, _ in cands)
        ops_np = np.zeros((episodes, k), dtype=np.int64)
        act_np = np.zeros((episodes, k * width, len(ACTION)), dtype=np.float32)
        mask_np = np.zeros((episodes, k * width), dtype=bool)
        for i, (ops, mask, feats) in enumerate(cands):
            ops_np[i, : len(ops)] = ops
            act_np[i, : len(feats)] = feats
            mask_np[i, : len(mask)] = mask
        ops_t, act_t, mask_t = torch.from_numpy(ops_np), torch.from_numpy(act_np), torch.from_numpy(mask_np)
        pu_t, glob_t = torch.from_numpy(pu_buf.copy()), torch.from_numpy(glob_buf.copy())
        logits, value = policy.heads(h[ops_t], g_rows, pu_t, act_t, mask_t, glob_t)
        actions = logits.argmax(-1)
        if greedy < episodes:
            sampled = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
            actions = torch.where(is_greedy, actions, sampled)
        if record:
            logprob = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
            partial = torch.tensor([st.makespan for st in states], dtype=torch.float64)
            steps.append((ops_t, pu_t, act_t, mask_t, glob_t, actions, logprob, value, partial))
        for st, (ops, _, _), a in zip(states, cands, actions.tolist(), strict=True):
            slot, rest = divmod(int(a), width)
            q, join = divmod(rest, 2)
            st.apply(q, bool(join), ops[slot])
    plans = [plan_from_state(ctx, st, "rl") for st in states]
    if not record:
        return plans, None
    makespans = torch.tensor([ctx.sim.plan_makespan(plan) for plan in plans], dtype=torch.float64)
    k = max(s[0].shape[1] for s in steps)
    rec_ops = torch.zeros((n, episodes, k), dtype=torch.long)
    rec_act = torch.zeros((n, episodes, k * width, len(ACTION)))
    rec_mask = torch.zeros((n, episodes, k * width), dtype=torch.bool)
    for t, (ops_t, _, act_t, mask_t, *_) in enumerate(steps):
        rec_ops[t, :, : ops_t.shape[1]] = ops_t
        rec_act[t, :, : act_t.shape[1]] = act_t
        rec_mask[t, :, : mask_t.shape[1]] = mask_t
    rec_pu, rec_glob, rec_action, rec_logprob, rec_value, rec_partial = (
        torch.stack([s[j] for s in steps]) for j in (1, 4, 5, 6, 7, 8))
    traj = Trajectories(rec_ops, rec_pu, rec_act, rec_mask, rec_glob, rec_action, rec_logprob, rec_value,
                        rec_partial, makespans)
    return plans, traj
