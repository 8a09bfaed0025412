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
from pathlib import Path

import numpy as np
import torch

from partitiontuner.agents.base import Planner
from partitiontuner.env.features import (
    ProblemContext,
    action_features,
    global_features,
    pu_features,
)
from partitiontuner.env.observation import flat_mask
from partitiontuner.env.scheduling_env import finish_plan
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
        from partitiontuner.training.checkpoint import load_checkpoint, shipped_checkpoint

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
            return _decode(policy, ctx, samples, seed)
    finally:
        torch.set_num_threads(threads)


def _decode(policy, ctx: ProblemContext, samples: int, seed: int) -> list[Plan]:
    pr = ctx.problem
    p = pr.num_pus
    x = torch.as_tensor(ctx.node_static)
    ei = torch.as_tensor(ctx.edge_index)
    ea = torch.as_tensor(ctx.edge_attr)
    h, g = policy.encode(x, ei, ea)
    gen = torch.Generator().manual_seed(seed)
    states = [ScheduleState(pr, ctx.order, ctx.sim) for _ in range(samples)]
    g_rows = g.expand(samples, -1)
    greedy = torch.zeros(samples, dtype=torch.bool)
    greedy[0] = True
    n = pr.num_ops
    pu_buf = np.zeros((samples, p, len(pu_features(ctx, states[0], p)[0])), dtype=np.float32)
    act_buf = np.zeros((samples, 2 * p, action_features(ctx, states[0], np.zeros((p, 2), bool), p).shape[1]), dtype=np.float32)
    mask_buf = np.zeros((samples, 2 * p), dtype=bool)
    glob_buf = np.zeros((samples, len(global_features(ctx, states[0]))), dtype=np.float32)
    current = torch.zeros(samples, dtype=torch.long)
    for _step in range(n):
        for i, st in enumerate(states):
            current[i] = st.current
            mask = st.action_mask()
            if not mask.any():
                raise InfeasiblePlanError(f"no PU may run op {pr.graph.nodes[st.current].name!r}")
            mask_buf[i] = flat_mask(mask, p).astype(bool)
            pu_buf[i] = pu_features(ctx, st, p)
            act_buf[i] = action_features(ctx, st, mask, p)
            glob_buf[i] = global_features(ctx, st)
        logits, _ = policy.heads(
            h[current], g_rows, torch.from_numpy(pu_buf), torch.from_numpy(act_buf),
            torch.from_numpy(mask_buf), torch.from_numpy(glob_buf),
        )
        if samples > 1:
            sampled = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(-1)
            actions = torch.where(greedy, logits.argmax(-1), sampled)
        else:
            actions = logits.argmax(-1)
        for st, a in zip(states, actions.tolist(), strict=True):
            q, join = divmod(int(a), 2)
            st.apply(q, bool(join))
    return [finish_plan(ctx, st, "rl") for st in states]
