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
from .observation import ObservationBuilder, flat_mask, observation_space
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
    step decides the current op; the environment then picks the next one among the
    ready ops (:meth:`partitiontuner.env.state.ScheduleState.next_op`): a ready successor
    that could start as soon as the current op's partition ends, else the ready op that
    could start earliest (ties broken by the critical-path-first reference order of
    :func:`partitiontuner.env.state.visit_order`). The order therefore depends on the
    placements so far, and is also each PU's run order. Each PU runs its partitions in the order they were created; the final plan is
    sequenced by :func:`partitiontuner.plan.from_orders`. With several problems
    (``problems=``), each reset draws one with ``np_random``.

    ## Action Space

    ``Discrete(2 * max_pus)``: action ``2 * pu + join``. ``join = 0`` opens a new
    partition on ``pu`` with the op; ``join = 1`` adds the op to ``pu``'s open (last
    created) partition, allowed only while no other partition reads from it (which
    keeps partitions convex, the plan deadlock-free and costs exact; see
    :mod:`partitiontuner.env.state`). ``max_pus`` defaults to the platform's PU count.

    The mask (``action_masks()``, ``info["action_mask"]`` and ``obs["action_mask"]``,
    int8) forbids PUs the op may not run on (unsupported, pinned elsewhere, forbidden),
    padded PU slots, joins that are not allowed, new partitions beyond
    ``max_partitions`` and placements that overflow a PU's memory. An all-zero mask
    raises. A masked action is, by default (``invalid_action="project"``), replaced by
    the nearest allowed one (same PU with the other join bit, else the lowest allowed
    index) and ``info["projected"]`` is True, so unmasked random agents (and
    ``check_env``) can run; ``invalid_action="raise"`` raises ``ValueError`` instead.

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

    No op decided; the first op of the visit order is current.

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

    * v0: initial version (feature schema :data:`partitiontuner.env.SCHEMA_VERSION`).
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
        self.action_space = spaces.Discrete(2 * self.max_pus)
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
        mask = self._mask()
        return self.builder.build(self.state, mask), self._info(mask)

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

    def step(self, action: int):
        a = int(action)
        if self.state.done:
            raise RuntimeError("step() after the episode terminated; call reset()")
        mask = self._mask()
        p, join = divmod(a, 2)
        projected = not (0 <= a < 2 * self.max_pus) or p >= self.state.num_pus or not mask[p, join]
        if projected:
            if self.invalid_action == "raise":
                raise ValueError(f"action {a} (PU {p}, {'join' if join else 'new'}) is masked for op "
                                 f"{self.problem.graph.nodes[self.state.current].name!r}")
            if 0 <= p < self.state.num_pus and mask[p, 1 - join]:
                join = 1 - join
            else:
                p, join = divmod(int(np.flatnonzero(mask.reshape(-1))[0]), 2)
        before = self.state.makespan
        self.state.apply(p, bool(join))
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
            mask = np.zeros((self.state.num_pus, 2), dtype=bool)
            info = {"action_mask": flat_mask(mask, self.max_pus), "makespan_us": makespan,
                    "ref_makespan_us": ref, "gain": gain, "plan": plan}
        else:
            reward = -(self.state.makespan - before) / ref if self.reward_mode == "shaped" else 0.0
            mask = self._mask()
            info = self._info(mask)
        if projected:
            info["projected"] = True
        self._actions.append(2 * p + join)
        self._return += reward
        return self.builder.build(self.state, mask), float(reward), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """``(2 * max_pus,)`` int8 mask of the current op's actions (all zero when done)."""
        if self.state.done:
            return np.zeros(2 * self.max_pus, dtype=np.int8)
        return flat_mask(self._mask(), self.max_pus)

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
    def _mask(self) -> np.ndarray:
        mask = self.state.action_mask()
        if not mask.any():
            raise PartitionTunerError(f"no action is allowed for op {self.problem.graph.nodes[self.state.current].name!r}")
        return mask

    def _info(self, mask: np.ndarray) -> dict[str, Any]:
        return {"action_mask": flat_mask(mask, self.max_pus)}
