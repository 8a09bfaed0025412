"""The Gymnasium environment: place and group the ops of one DNN, one op per step."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from partitiontuner.constraints import Constraints
from partitiontuner.errors import ConfigError, PartitionTunerError
from partitiontuner.plan import Plan, from_orders
from partitiontuner.problem import Problem
from partitiontuner.repair import finish_plan, needs_repair

from .features import MAX_PUS, ProblemContext
from .observation import ObservationBuilder, flat_action_mask, observation_space
from .state import ScheduleState

REWARD_MODES = ("shaped", "terminal")


def load_env_problem(model: str = "squeezenet", platform: str = "cpu-npu", profiles: str = "fixture",
                     constraints: Constraints | None = None) -> Problem:
    """A problem from names, as the CLI states them (``profiles``: ``fixture``,
    ``measure`` (cached) or a profile ``.json``)."""
    from partitiontuner.workflow import ProblemSpec, load_problem

    return load_problem(ProblemSpec(model=model, platform=platform, profiles=profiles,
                                    constraints=constraints or Constraints(), progress=False))


def plan_from_state(ctx: ProblemContext, state: ScheduleState, method: str = "rl", info: dict[str, Any] | None = None) -> Plan:
    """The plan of a finished episode: per-PU orders = creation order, sequenced by
    :func:`~partitiontuner.plan.from_orders`. Global constraints the masks cannot
    guarantee (``max_partitions``, ``min_partition_ops``, memory) are then enforced by
    :func:`partitiontuner.repair.repair` (which raises
    :class:`~partitiontuner.errors.InfeasiblePlanError` naming one it cannot meet)."""
    pr = ctx.problem
    if needs_repair(pr):
        return finish_plan(pr, state.partitions(), method, info, ctx.sim)
    names = pr.pus
    parts = [(sorted(ops), names[p]) for ops, p in zip(state.parts, state.part_pu, strict=True)]
    orders = {names[p]: ks for p, ks in state.per_pu_orders().items()}
    return from_orders(pr, parts, orders, method, info or {})


class PartitionTunerEnv(gym.Env):
    """Schedule a DNN's ops on heterogeneous PUs: placement plus grouping into partitions.

    ## Description

    An episode schedules one problem (graph + platform + profiles + constraints). Each
    step decides one *ready* op (all its predecessors decided), chosen by the action:
    its PU, and whether it joins that PU's open partition or opens a new one. Each PU
    runs its partitions in the order they were created; the final plan is sequenced by
    :func:`partitiontuner.plan.from_orders`. Every valid plan (convex partitions, a PU
    each, any per-PU order) is reachable: decide its partitions one after the other in
    the plan's sequence (:func:`partitiontuner.env.replay.actions_for_plan`; why this
    suffices: :mod:`partitiontuner.env.state`). The state also keeps a suggested op
    (:meth:`~partitiontuner.env.state.ScheduleState.next_op`, ``obs["meta"][3]``): the
    ready op that continues the last one's chain or could start earliest. With several
    problems (``problems=``), each reset draws one with ``np_random``.

    ## Action Space

    ``Discrete(max_ops * 2 * max_pus)``: action ``op * 2 * max_pus + 2 * pu + join``
    (:meth:`encode_action`). ``join = 0`` opens a new partition on ``pu`` with the op;
    ``join = 1`` adds the op to ``pu``'s open (last created) partition, allowed only
    while no other partition reads from it (which keeps partitions convex, the plan
    deadlock-free and costs exact; see :mod:`partitiontuner.env.state`). ``max_pus``
    defaults to the platform's PU count, ``max_ops`` to its op count.

    The mask (``action_masks()``, ``info["action_mask"]`` and ``obs["action_mask"]``,
    int8) allows only ready ops, and forbids PUs the op may not run on (unsupported,
    pinned elsewhere, forbidden), padded PU slots, joins that are not allowed, new
    partitions beyond ``max_partitions`` and placements that overflow a PU's memory
    (those global limits are relaxed when they would forbid every action). An all-zero
    mask raises. A masked action is, by default (``invalid_action="project"``),
    replaced by the nearest allowed one (same op and PU with the other join bit, else
    the op's lowest allowed action, else the lowest allowed index) and
    ``info["projected"]`` is True, so unmasked random agents (and ``check_env``) can
    run; ``invalid_action="raise"`` raises ``ValueError`` instead.

    ## Observation Space

    A ``Dict`` of fixed-size arrays (see :mod:`partitiontuner.env.observation`), padded
    to ``max_ops`` / ``max_edges`` / ``max_pus``; :func:`partitiontuner.env.obs_to_data`
    turns one into a ``torch_geometric.data.Data``.

    ## Rewards

    With ``T`` the final plan's makespan (by the simulator) and ``T_ref`` the best
    single-PU plan (:meth:`ProblemContext.reference`), the episode's return is exactly
    the normalised gain ``(T_ref - T) / T_ref``. ``reward_mode="terminal"`` pays it at
    the last step. ``"shaped"`` (default) pays ``-(M_t - M_{t-1}) / T_ref`` per step
    (``M_t``: the partial makespan after step ``t``, a potential-based shaping, so the
    optimal policy is unchanged), and at the last step the rest, ``gain - sum so far``.

    ## Starting State

    No op decided; the graph's source ops are ready.

    ## Episode End

    Terminates when every op is decided (``num_ops`` steps). Never truncates.

    ## Arguments

    ``problem`` (a :class:`Problem`), or ``model`` / ``platform`` / ``profiles`` /
    ``constraints`` names (default: SqueezeNet on ``cpu-npu`` from the committed
    fixture profiles, so constructing it measures nothing), or ``problems`` (a list).
    ``problem_weights`` sets the draw probabilities.
    ``max_ops`` / ``max_edges`` / ``max_pus`` fix the observation size (default: the
    largest problem given). ``reset(options={"problem": p})`` schedules ``p`` instead
    (it must fit), ``options={"index": i}`` picks ``problems[i]``.

    ## Version History

    * v0: initial version (feature schema :data:`partitiontuner.env.SCHEMA_VERSION`);
      the action names the ready op (before: the environment chose it), so every
      valid plan is reachable.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        problem: Problem | None = None,
        *,
        model: str = "squeezenet",
        platform: str = "cpu-npu",
        profiles: str = "fixture",
        constraints: Constraints | None = None,
        problems: Sequence[Problem] | None = None,
        problem_weights: Sequence[float] | None = None,
        max_ops: int | None = None,
        max_edges: int | None = None,
        max_pus: int | None = None,
        reward_mode: str = "shaped",
        invalid_action: str = "project",
        render_mode: str | None = None,
    ):
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if invalid_action not in ("project", "raise"):
            raise ConfigError(f"invalid_action must be 'project' or 'raise', got {invalid_action!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if problems is not None and problem is not None:
            raise ConfigError("give either problem= or problems=, not both")
        if problems is None:
            problems = [problem if problem is not None else load_env_problem(model, platform, profiles, constraints)]
        if not problems:
            raise ConfigError("problems= is empty")
        self.problems = list(problems)
        if problem_weights is not None:
            w = np.asarray(problem_weights, dtype=np.float64)
            if w.shape != (len(self.problems),) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError("problem_weights needs one non-negative weight per problem, not all zero")
            self.problem_weights: np.ndarray | None = w / w.sum()
        else:
            self.problem_weights = None
        self._contexts: dict[int, ProblemContext] = {}
        ctx0 = self._context(self.problems[0])
        self.max_ops = max_ops or max(p.num_ops for p in self.problems)
        self.max_edges = max_edges or max(len({(e.src, e.dst) for e in p.graph.edges}) for p in self.problems) or 1
        self.max_pus = max_pus or max(p.num_pus for p in self.problems)
        if self.max_pus > MAX_PUS:
            raise ConfigError(f"max_pus={self.max_pus}: the RL features describe at most {MAX_PUS} PUs")
        self.reward_mode = reward_mode
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(self.max_ops * 2 * self.max_pus)
        self.observation_space = observation_space(self.max_ops, self.max_edges, self.max_pus)
        self._load(ctx0)

    # --- problems ---------------------------------------------------------------------
    def _context(self, problem: Problem) -> ProblemContext:
        key = id(problem)
        ctx = self._contexts.get(key)
        if ctx is None or ctx.problem is not problem:
            ctx = ProblemContext(problem)
            self._contexts[key] = ctx
        return ctx

    def _load(self, ctx: ProblemContext) -> None:
        self.ctx = ctx
        self.builder = ObservationBuilder(ctx, self.max_ops, self.max_edges, self.max_pus)
        self.state = ScheduleState(ctx.problem, ctx.order, ctx.sim)

    @property
    def problem(self) -> Problem:
        return self.ctx.problem

    # --- Gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        self._episode_rng = copy.deepcopy(self.np_random.bit_generator.state)
        if "problem" in options:
            self._index: int | None = None
            self._load(self._context(options["problem"]))
        else:
            if "index" in options:
                self._index = int(options["index"])
            elif len(self.problems) > 1:
                self._index = int(self.np_random.choice(len(self.problems), p=self.problem_weights))
            else:
                self._index = 0
            self._load(self._context(self.problems[self._index]))
        self.builder.reset(self.state)
        self._return = 0.0
        self._actions: list[int] = []
        self.last_plan: Plan | None = None
        ops, masks = self._mask()
        return self.builder.build(self.state, ops, masks), self._info(ops, masks)

    # --- exact snapshots (for resuming training) -------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The episode so far, as plain data: the RNG state at its reset, the problem
        index and the actions taken. :meth:`restore` rebuilds the exact state."""
        if self._index is None:
            raise ConfigError("cannot snapshot an episode of a problem passed through reset(options=)")
        return {"rng": copy.deepcopy(self._episode_rng), "index": self._index, "actions": list(self._actions)}

    def restore(self, snap: dict[str, Any]):
        """Return to a :meth:`snapshot` (same problem, same decisions, same RNG state);
        returns the current ``(obs, info)``."""
        self.np_random.bit_generator.state = copy.deepcopy(snap["rng"])
        obs, info = self.reset(options={"index": int(snap["index"])})
        self._episode_rng = copy.deepcopy(snap["rng"])
        if len(self.problems) > 1:  # replay the draw that picked the problem
            self.np_random.choice(len(self.problems), p=self.problem_weights)
        for a in snap["actions"]:
            obs, _, _, _, info = self.step(int(a))
        return obs, info

    def encode_action(self, op: int, pu: int, join: bool) -> int:
        """The action index of deciding ``op`` on ``pu`` (joining its open partition or not)."""
        return (op * self.max_pus + pu) * 2 + int(join)

    def decode_action(self, action: int) -> tuple[int, int, int]:
        """``(op, pu, join)`` of an action index."""
        op, rest = divmod(int(action), 2 * self.max_pus)
        pu, join = divmod(rest, 2)
        return op, pu, join

    def step(self, action: int):
        a = int(action)
        if self.state.done:
            raise RuntimeError("step() after the episode terminated; call reset()")
        ops, masks = self._mask()
        v, p, join = self.decode_action(a)
        slot = {u: i for i, u in enumerate(ops)}
        i = slot.get(v, -1)
        projected = not (0 <= a < self.action_space.n) or i < 0 or p >= self.state.num_pus or not masks[i, p, join]
        if projected:
            if self.invalid_action == "raise":
                what = self.problem.graph.nodes[v].name if 0 <= v < self.problem.num_ops else str(v)
                raise ValueError(f"action {a} (op {what!r}, PU {p}, {'join' if join else 'new'}) is masked")
            if i >= 0 and p < self.state.num_pus and masks[i, p, 1 - join]:
                join = 1 - join
            else:
                if i < 0 or not masks[i].any():
                    i = int(np.flatnonzero(masks.reshape(len(ops), -1).any(axis=1))[0])
                p, join = divmod(int(np.flatnonzero(masks[i].reshape(-1))[0]), 2)
                v = ops[i]
        before = self.state.makespan
        self.state.apply(p, bool(join), v)
        self.builder.update(self.state)
        ref = self.ctx.ref_makespan
        terminated = self.state.done
        info: dict[str, Any]
        if terminated:
            plan = plan_from_state(self.ctx, self.state, "rl")
            makespan = self.ctx.sim.plan_makespan(plan)
            gain = (ref - makespan) / ref
            reward = gain - self._return if self.reward_mode == "shaped" else gain
            self.last_plan = plan
            ops, masks = [], np.zeros((0, self.state.num_pus, 2), dtype=bool)
            info = {"action_mask": self.action_masks(), "makespan_us": makespan,
                    "ref_makespan_us": ref, "gain": gain, "plan": plan}
        else:
            reward = -(self.state.makespan - before) / ref if self.reward_mode == "shaped" else 0.0
            ops, masks = self._mask()
            info = self._info(ops, masks)
        if projected:
            info["projected"] = True
        self._actions.append(self.encode_action(v, p, bool(join)))
        self._return += reward
        return self.builder.build(self.state, ops, masks), float(reward), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """``(max_ops * 2 * max_pus,)`` int8 mask of the ready ops' actions (all zero when done)."""
        if self.state.done:
            return np.zeros(self.action_space.n, dtype=np.int8)
        ops, masks = self._mask()
        return flat_action_mask(ops, masks, self.max_ops, self.max_pus)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        st, g = self.state, self.problem.graph
        names = self.problem.pus
        lines = [f"{g.name}: step {st.step_index}/{len(st.order)}, partial makespan {st.makespan:.1f} us"]
        for k in st.sequence():
            lines.append(f"  [{k}] {names[st.part_pu[k]]}: " + ", ".join(g.nodes[v].name for v in st.parts[k]))
        return "\n".join(lines)

    # --- helpers -------------------------------------------------------------------------------
    def _mask(self) -> tuple[list[int], np.ndarray]:
        ops, masks = self.state.candidate_masks()
        if not masks.any():
            names = ", ".join(repr(self.problem.graph.nodes[v].name) for v in ops)
            raise PartitionTunerError(f"no action is allowed for any ready op ({names})")
        return ops, masks

    def _info(self, ops: list[int], masks: np.ndarray) -> dict[str, Any]:
        return {"action_mask": flat_action_mask(ops, masks, self.max_ops, self.max_pus)}
