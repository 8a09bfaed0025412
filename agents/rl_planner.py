"""The learned planner: the GNN policy decodes a plan op by op, then a search on the
simulator improves on the best of the policy's and the quick heuristics' plans
(:class:`RLPlanner`; the search is :mod:`partitiontuner.agents.local_search`).

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

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from partitiontuner.agents.base import Planner
from partitiontuner.agents.local_search import LocalSearch
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
from partitiontuner.plan import Plan, make_plan, validate_plan
from partitiontuner.problem import Problem


class RLPlanner(Planner):
    """Plan with a trained policy, then search around its plans on the simulator.

    With ``budget_s > 0`` (the default scales with the graph, :func:`default_budget_s`)
    the planner pools the policy's greedy plan, ``samples - 1`` sampled plans and the
    quick heuristics' plans (:func:`~partitiontuner.agents.registry.quick_planners`),
    runs :class:`~partitiontuner.agents.local_search.LocalSearch` from the best few
    (then iterated local search from the best plan, with random kicks) until the
    budget is spent or nothing improves, and returns the best plan found, so never one
    worse than a quick heuristic. ``budget_s = 0`` is the policy alone (greedy, or the
    best of ``samples``). The plan's ``info`` says what each source achieved, so a weak
    policy cannot hide behind the search: ``policy_makespan_us`` (greedy decode),
    ``sampled_makespan_us``, ``heuristic_makespan_us`` (best quick heuristic, with
    ``heuristic_method``), ``search_makespan_us`` and ``winner`` (``policy``,
    ``sample``, ``search`` or the heuristic's method name; ties go to the earlier of
    that list, heuristics before search).

    The budget covers the whole call; decoding the greedy plan and the heuristics
    always run (they are the floor), samples only while time is left, and the search
    checks the clock before every move.

    Args:
        checkpoint: a checkpoint file, or ``None`` for the policy shipped with the package.
        samples: plans decoded in lockstep: the greedy one plus ``samples - 1`` sampled
            (default: :data:`SEARCH_SAMPLES` with a search budget, 1 without).
        seed: seed of the sampling and of the search's move order.
        budget_s: seconds for the whole plan (``None``: :func:`default_budget_s`; 0: the
            policy alone).

    Raises:
        ConfigError: a bad checkpoint, ``samples < 1`` or a negative budget.
    """

    name = "rl"

    def __init__(self, checkpoint: str | Path | None = None, samples: int | None = None, seed: int = 0,
                 budget_s: float | None = None):
        if samples is not None and int(samples) < 1:
            raise ConfigError(f"--samples must be >= 1, got {samples}")
        if budget_s is not None and not (math.isfinite(float(budget_s)) and float(budget_s) >= 0):
            raise ConfigError(f"--budget-s must be a number of seconds >= 0, got {budget_s}")
        self.budget_s = None if budget_s is None else float(budget_s)
        self.samples = None if samples is None else int(samples)
        self.seed = int(seed)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else shipped_checkpoint()
        ck = load_checkpoint(self.checkpoint)
        self.policy = ck.make_policy()
        self.global_step = ck.global_step

    def __repr__(self) -> str:
        return (f"RLPlanner(checkpoint={str(self.checkpoint)!r}, samples={self.samples}, seed={self.seed}, "
                f"budget_s={self.budget_s})")

    def plan(self, problem: Problem) -> Plan:
        t0 = time.perf_counter()
        budget = default_budget_s(problem.num_ops) if self.budget_s is None else self.budget_s
        samples = self.samples or (SEARCH_SAMPLES if budget > 0 else 1)
        deadline = t0 + budget
        ctx = ProblemContext(problem)
        sim = ctx.sim
        # the policy alone decodes all its plans at once; with a budget the greedy plan
        # comes first (the floor), then the samples while time is left
        plans = decode(self.policy, ctx, samples if budget == 0 else 1, self.seed)
        decode_s = time.perf_counter() - t0
        if samples > len(plans) and time.perf_counter() + 2 * decode_s < deadline:
            plans = decode(self.policy, ctx, samples, self.seed)
        pool = [Source("policy", plans[0], sim.plan_makespan(plans[0]))]
        if len(plans) > 1:
            best_i = min(range(1, len(plans)), key=lambda i: (sim.plan_makespan(plans[i]), i))
            pool.append(Source("sample", plans[best_i], sim.plan_makespan(plans[best_i])))
        info: dict = {"checkpoint": self.checkpoint.name, "samples": len(plans), "seed": self.seed, "budget_s": budget,
                      "policy_makespan_us": pool[0].makespan_us,
                      "sampled_makespan_us": pool[1].makespan_us if len(pool) > 1 else None,
                      "decode_time_s": round(time.perf_counter() - t0, 4)}
        if budget > 0:
            heuristics = _heuristic_sources(problem, sim)
            pool += heuristics
            best_h = min(heuristics, key=lambda s: s.makespan_us, default=None)
            info["heuristic_makespan_us"] = best_h.makespan_us if best_h else None
            info["heuristic_method"] = best_h.name if best_h else None
            found = _search(problem, sim, pool, deadline, self.seed)
            info.update(found.info)
            if found.source is not None:
                pool.append(found.source)
        winner = min(pool, key=lambda s: s.makespan_us)  # the first of equals: policy, sample, heuristics, search
        info["winner"] = winner.name
        info["planning_time_s"] = round(time.perf_counter() - t0, 4)
        best = winner.plan
        info.update({k: v for k, v in best.info.items() if k not in info and k != "incumbent"})
        return Plan(best.partitions, best.model, best.model_hash, best.platform, self.name, info)


#: plans decoded in lockstep (greedy + samples) when the planner searches
SEARCH_SAMPLES = 8
#: plans the local search starts from (the best distinct ones of the pool)
SEARCH_STARTS = 3
#: iterated local search stops after this many kicks in a row that find nothing better
ILS_PATIENCE = 12


def default_budget_s(num_ops: int) -> float:
    """Search budget for a graph of ``num_ops`` ops: 2 s up to 200 ops, then growing with
    the square root of the size (a 10,000-op graph gets 14 s), so planning stays
    interactive while the search still gets a few passes over large graphs."""
    return round(2.0 * math.sqrt(max(1.0, num_ops / 200.0)), 3)


@dataclass(frozen=True)
class Source:
    """A candidate plan, which source produced it and its simulated makespan."""

    name: str
    plan: Plan
    makespan_us: float


@dataclass(frozen=True)
class _Found:
    source: Source | None
    info: dict


def _heuristic_sources(problem: Problem, sim) -> list[Source]:
    """The quick heuristics' plans that meet the problem's constraints."""
    from partitiontuner.agents.registry import quick_planners

    out = []
    for planner in quick_planners():
        try:
            plan = planner.plan(problem)
            validate_plan(problem, plan)
        except InfeasiblePlanError:
            continue
        out.append(Source(planner.name, plan, sim.plan_makespan(plan)))
    return out


def _search(problem: Problem, sim, pool: list[Source], deadline: float, seed: int) -> _Found:
    """Local search from the best distinct plans of ``pool``, then iterated local search
    from the best found, until ``deadline`` or :data:`ILS_PATIENCE` fruitless kicks."""
    t = time.perf_counter()
    names = problem.pus
    starts: dict[tuple, Source] = {}
    for s in sorted(pool, key=lambda s: s.makespan_us):
        starts.setdefault(tuple((p.ops, p.device) for p in s.plan.partitions), s)
    ls = LocalSearch(problem, sim, seed)
    best_parts, best_ms, origin = None, min(s.makespan_us for s in pool), None
    tried = applied = kicks = fruitless = 0
    ran = False
    for s in list(starts.values())[:SEARCH_STARTS]:
        if time.perf_counter() >= deadline:
            break
        ran = True
        res = ls.improve([(p.ops, names.index(p.device)) for p in s.plan.partitions], deadline)
        tried, applied = tried + res.moves_tried, applied + res.moves_applied
        if res.makespan_us < best_ms - 1e-9:
            best_parts, best_ms, origin = res.parts, res.makespan_us, s.name
    first = next(iter(starts.values()))
    current = best_parts or [(p.ops, names.index(p.device)) for p in first.plan.partitions]
    while ran and fruitless < ILS_PATIENCE and time.perf_counter() < deadline:
        kicks += 1
        res = ls.improve(ls.kick(current, 2 + kicks % 3), deadline)
        tried, applied = tried + res.moves_tried, applied + res.moves_applied
        if res.makespan_us < best_ms - 1e-9:
            best_parts, best_ms, fruitless, current = res.parts, res.makespan_us, 0, res.parts
            origin = origin or first.name
        else:
            fruitless += 1
    info = {"search_makespan_us": best_ms if ran else None, "search_moves": tried, "search_improvements": applied,
            "search_kicks": kicks, "search_from": origin, "search_time_s": round(time.perf_counter() - t, 4)}
    if best_parts is None:
        return _Found(None, info)
    return _Found(Source("search", make_plan(problem, best_parts, "rl"), best_ms), info)


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
