"""Demonstrations for the behaviour-cloning warm start of PPO.

Before PPO, the policy imitates, on every training problem, the best plan among a few
classical ones: the baselines' plans replayed exactly into (op, PU, join) actions
(:func:`replay_actions`, :func:`partitiontuner.env.replay.actions_for_plan`; the
paper's algorithm, greedy, HEFT, npu-first), and three rollouts of the environment's own state machine
(:func:`heuristic_actions`): myopic (least partial makespan), a two-step lookahead
(each action followed by two myopic steps, then undone), and the per-PU dynamic
program's finish time (these follow the state's suggested op order). Which one wins differs between graphs; the policy learns from
the features when each applies, and PPO then improves on all of them with the
simulator's reward. Without the warm start, PPO spends most of its budget escaping
one trap: joining every op into one huge NPU partition, which forfeits every fused
group (conv + bn + relu) and costs about 9 % on ResNet-50.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from partitiontuner.env.features import (
    ProblemContext,
    action_features,
    global_features,
    pu_features,
)
from partitiontuner.env.observation import flat_mask
from partitiontuner.env.replay import Action, actions_for_plan
from partitiontuner.env.state import ScheduleState
from partitiontuner.errors import PartitionTunerError
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem

#: the rollouts of the environment's own state machine that :func:`heuristic_actions` knows
HEURISTIC_ROLLOUTS = ("myopic", "lookahead", "dp")


def _argmin_action(st: ScheduleState, key) -> tuple[int, int]:
    """The allowed action ``(pu, join)`` with the least ``key(pu, join)`` (ties: the
    key's later fields, then the lower PU and join bit)."""
    mask = st.action_mask()
    keys = [(*key(p, b), p, b) for p in range(st.num_pus) for b in (0, 1) if mask[p, b]]
    assert keys, "no allowed action"
    best = min(keys)
    return best[-2], best[-1]


def _myopic(st: ScheduleState) -> tuple[int, int]:
    def key(p: int, b: int) -> tuple[float, ...]:
        c = st.evaluate(p, bool(b))
        return c.makespan_us, c.end_us

    return _argmin_action(st, key)


def _lookahead(st: ScheduleState, depth: int = 2) -> tuple[int, int]:
    def key(p: int, b: int) -> tuple[float, ...]:
        first = st.evaluate(p, bool(b)).makespan_us
        records = [st.apply(p, bool(b))]
        for _ in range(depth):
            if st.done:
                break
            q, c = _myopic(st)
            records.append(st.apply(q, bool(c)))
        k = (st.makespan, first)
        for r in reversed(records):
            st.undo(r)
        return k

    return _argmin_action(st, key)


def _dp(ctx: ProblemContext, st: ScheduleState) -> tuple[int, int]:
    def key(p: int, b: int) -> tuple[float, ...]:
        c = st.evaluate(p, bool(b))
        return c.end_us - c.work_delta_us + ctx.dp_costs(st, p)[b], c.makespan_us

    return _argmin_action(st, key)


def heuristic_actions(ctx: ProblemContext, kind: str) -> list[Action]:
    """The ``(op, pu, join)`` decisions of one heuristic rollout (see module docstring)."""
    st = ScheduleState(ctx.problem, ctx.order, ctx.sim)
    actions: list[Action] = []
    while not st.done:
        if kind == "myopic":
            p, b = _myopic(st)
        elif kind == "lookahead":
            p, b = _lookahead(st)
        elif kind == "dp":
            p, b = _dp(ctx, st)
        else:
            raise ValueError(f"unknown heuristic {kind!r}")
        actions.append((st.current, p, bool(b)))
        st.apply(p, bool(b))
    return actions


def replay_actions(ctx: ProblemContext, plan: Plan) -> list[Action]:
    """``plan`` as ``(op, pu, join)`` decisions (exact: the episode ends with the plan's
    makespan).

    Raises:
        InfeasiblePlanError: a plan the masks forbid (e.g. it exceeds a memory capacity).
    """
    return actions_for_plan(ScheduleState(ctx.problem, ctx.order, ctx.sim), plan)


def rollout_makespan(ctx: ProblemContext, actions: Sequence[Action]) -> float:
    """Makespan of a decision sequence (by the simulator, on the finished plan)."""
    from partitiontuner.env.scheduling_env import plan_from_state

    st = ScheduleState(ctx.problem, ctx.order, ctx.sim)
    for v, p, b in actions:
        st.apply(p, bool(b), v)
    return ctx.sim.plan_makespan(plan_from_state(ctx, st))


def oracle_plan(problem: Problem, time_limit_s: float) -> Plan | None:
    """The oracle's plan if it proves optimality within ``time_limit_s`` on one thread,
    else ``None`` (a plan found before the limit would depend on the machine's speed,
    and training must be a function of its seed). Never call this on an unseen model:
    :func:`partitiontuner.training.corpus.build_corpus` keeps them out of the corpus."""
    from partitiontuner.agents.oracle import OraclePlanner
    from partitiontuner.zoo import UNSEEN_MODELS

    assert problem.graph.name not in UNSEEN_MODELS, "oracle demonstrations are for training problems only"
    plan = OraclePlanner(time_limit_s=time_limit_s, workers=1).plan(problem)
    return plan if plan.info.get("proven_optimal") else None


def best_demonstration(ctx: ProblemContext, oracle_time_s: float = 0.0) -> tuple[list[Action], float, str]:
    """The best of the replayed quick planners' plans
    (:data:`partitiontuner.agents.registry.QUICK_METHODS`), the heuristic rollouts and (``oracle_time_s > 0``)
    the replayed oracle plan: ``(actions, makespan, source)``."""
    from partitiontuner.agents.registry import quick_planners

    candidates: list[tuple[float, str, list[Action]]] = []
    for planner in quick_planners():
        try:
            actions = replay_actions(ctx, planner.plan(ctx.problem))
        except PartitionTunerError:
            continue
        candidates.append((rollout_makespan(ctx, actions), planner.name, actions))
    for kind in HEURISTIC_ROLLOUTS:
        actions = heuristic_actions(ctx, kind)
        candidates.append((rollout_makespan(ctx, actions), kind, actions))
    if oracle_time_s > 0:
        plan = oracle_plan(ctx.problem, oracle_time_s)
        if plan is not None:
            try:
                actions = replay_actions(ctx, plan)
                candidates.append((rollout_makespan(ctx, actions), "oracle", actions))
            except PartitionTunerError:
                pass
    makespan, source, actions = min(candidates, key=lambda c: (c[0], c[1]))
    return actions, makespan, source


@dataclass
class Demonstration:
    """One problem's expert episode, as the policy's fast path consumes it.

    Tensors have one row per step, candidate (ready) ops padded to ``K``: ``ops``
    ``(n, K)`` op indices, ``pu`` ``(n, P, len(PU))``, ``actions`` ``(n, K * 2P,
    len(ACTION))``, ``mask`` ``(n, K * 2P)`` bool, ``glob`` ``(n, len(GLOBAL))``,
    ``target`` ``(n,)`` expert actions (``i * 2P + 2 * pu + join`` for candidate ``i``)
    and ``value`` ``(n,)`` the expert episode's return-to-go under the shaped reward.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    pu: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    glob: torch.Tensor
    ops: torch.Tensor
    target: torch.Tensor
    value: torch.Tensor
    makespan_us: float
    source: str


def demonstration(problem: Problem, oracle_time_s: float = 0.0) -> Demonstration:
    """Record the best demonstration of ``problem`` with the policy's inputs (see
    :func:`best_demonstration`)."""
    ctx = ProblemContext(problem)
    expert, makespan, source = best_demonstration(ctx, oracle_time_s)
    p = problem.num_pus
    width = 2 * p
    st = ScheduleState(problem, ctx.order, ctx.sim)
    pus, acts, masks, globs, partial, cands, target = [], [], [], [], [], [], []
    for v, q, b in expert:
        ops, mask = st.candidate_masks()
        i = ops.index(v)
        assert mask[i, q, int(b)], "a demonstration took a masked action"
        cands.append(ops)
        target.append(i * width + 2 * q + int(b))
        pus.append(pu_features(ctx, st, p))
        acts.append(action_features(ctx, st, ops, mask, p))
        masks.append(flat_mask(mask, p).astype(bool))
        globs.append(global_features(ctx, st))
        partial.append(st.makespan)
        st.apply(q, bool(b), v)
    k = max(len(o) for o in cands)
    n = len(expert)
    ops_t = torch.zeros((n, k), dtype=torch.long)
    act_t = torch.zeros((n, k * width, acts[0].shape[1]))
    mask_t = torch.zeros((n, k * width), dtype=torch.bool)
    for t in range(n):
        ops_t[t, : len(cands[t])] = torch.as_tensor(cands[t])
        act_t[t, : len(acts[t])] = torch.from_numpy(acts[t])
        mask_t[t, : len(masks[t])] = torch.from_numpy(masks[t])
    ref = ctx.ref_makespan
    gain = (ref - makespan) / ref
    return Demonstration(
        x=torch.as_tensor(ctx.node_static), edge_index=torch.as_tensor(ctx.edge_index),
        edge_attr=torch.as_tensor(ctx.edge_attr), pu=torch.as_tensor(np.stack(pus)),
        actions=act_t, mask=mask_t, glob=torch.as_tensor(np.stack(globs)), ops=ops_t,
        target=torch.as_tensor(target), value=torch.as_tensor([gain + m / ref for m in partial], dtype=torch.float32),
        makespan_us=makespan, source=source,
    )


def behaviour_cloning_loss(policy, demo: Demonstration, vf_coef: float) -> tuple[torch.Tensor, float]:
    """Cross-entropy of the expert's actions under the masked policy plus ``vf_coef``
    times the value's squared error; also the accuracy of the greedy action."""
    h, g = policy.encode(demo.x, demo.edge_index, demo.edge_attr)
    n = demo.target.shape[0]
    logits, value = policy.heads(h[demo.ops], g.expand(n, -1), demo.pu, demo.actions, demo.mask, demo.glob)
    ce = torch.nn.functional.cross_entropy(logits, demo.target)
    v_loss = 0.5 * ((value - demo.value) ** 2).mean()
    acc = float((logits.argmax(-1) == demo.target).float().mean())
    loss = ce + vf_coef * v_loss
    return loss, acc if math.isfinite(acc) else 0.0
