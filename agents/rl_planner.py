"""The learned planner: the GNN policy decodes a plan op by op.

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

    ``n`` steps (the problem's op count) of ``E`` episodes, PU slots padded to ``P``:
    ``current`` ``(n, E)`` the op decided; ``pu`` ``(n, E, P, len(PU))``; ``actions``
    ``(n, E, 2P, len(ACTION))``; ``mask`` ``(n, E, 2P)`` bool; ``glob`` ``(n, E,
    len(GLOBAL))``; ``action`` ``(n, E)`` the action taken; ``logprob`` and ``value``
    ``(n, E)`` under the policy that acted; ``partial_us`` ``(n, E)`` the partial
    makespan before the step (for the shaped reward); ``makespan_us`` ``(E,)`` each
    finished plan's makespan by the simulator.
    """

    current: torch.Tensor
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
    x = torch.as_tensor(ctx.node_static)
    ei = torch.as_tensor(ctx.edge_index)
    ea = torch.as_tensor(ctx.edge_attr)
    h, g = policy.encode(x, ei, ea)
    states = [ScheduleState(pr, ctx.order, ctx.sim) for _ in range(episodes)]
    g_rows = g.expand(episodes, -1)
    is_greedy = torch.arange(episodes) < greedy
    n = pr.num_ops
    pu_buf = np.zeros((episodes, p, len(PU)), dtype=np.float32)
    act_buf = np.zeros((episodes, 2 * p, len(ACTION)), dtype=np.float32)
    mask_buf = np.zeros((episodes, 2 * p), dtype=bool)
    glob_buf = np.zeros((episodes, len(GLOBAL)), dtype=np.float32)
    current = torch.zeros(episodes, dtype=torch.long)
    if record:
        rec_current = torch.zeros((n, episodes), dtype=torch.long)
        rec_pu = torch.zeros((n, *pu_buf.shape))
        rec_act = torch.zeros((n, *act_buf.shape))
        rec_mask = torch.zeros((n, *mask_buf.shape), dtype=torch.bool)
        rec_glob = torch.zeros((n, *glob_buf.shape))
        rec_action = torch.zeros((n, episodes), dtype=torch.long)
        rec_logprob = torch.zeros((n, episodes))
        rec_value = torch.zeros((n, episodes))
        rec_partial = torch.zeros((n, episodes), dtype=torch.float64)
    for step in range(n):
        for i, st in enumerate(states):
            current[i] = st.current
            mask = st.action_mask()
            if not mask.any():
                raise InfeasiblePlanError(f"no PU may run op {pr.graph.nodes[st.current].name!r}")
            mask_buf[i] = flat_mask(mask, p).astype(bool)
            pu_buf[i] = pu_features(ctx, st, p)
            act_buf[i] = action_features(ctx, st, mask, p)
            glob_buf[i] = global_features(ctx, st)
            if record:
                rec_partial[step, i] = st.makespan
        pu_t, act_t, mask_t, glob_t = (torch.from_numpy(b) for b in (pu_buf, act_buf, mask_buf, glob_buf))
        logits, value = policy.heads(h[current], g_rows, pu_t, act_t, mask_t, glob_t)
        actions = logits.argmax(-1)
        if greedy < episodes:
            sampled = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
            actions = torch.where(is_greedy, actions, sampled)
        if record:
            rec_current[step] = current
            rec_pu[step], rec_act[step], rec_mask[step], rec_glob[step] = pu_t, act_t, mask_t, glob_t
            rec_action[step] = actions
            rec_logprob[step] = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
            rec_value[step] = value
        for st, a in zip(states, actions.tolist(), strict=True):
            q, join = divmod(int(a), 2)
            st.apply(q, bool(join))
    plans = [plan_from_state(ctx, st, "rl") for st in states]
    if not record:
        return plans, None
    makespans = torch.tensor([ctx.sim.plan_makespan(plan) for plan in plans], dtype=torch.float64)
    traj = Trajectories(rec_current, rec_pu, rec_act, rec_mask, rec_glob, rec_action, rec_logprob, rec_value,
                        rec_partial, makespans)
    return plans, traj
