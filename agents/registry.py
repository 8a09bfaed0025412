"""Planners by method name, with their options: what ``plan --method M`` calls.

Methods and options (an option given as ``None`` means "use the default", so a
command line can pass every flag it has):

=================  ==================================================================
``cpu-only``       none
``npu-first``      none
``greedy``         none
``partitiontuner`` ``switch_penalty_us`` (float >= 0; default: the PU's dispatch
                   overhead), ``parallel`` (bool, default True), ``max_mappings``
                   (int, default 256)
``heft``           none
``random``         ``samples`` (int >= 1, default 200), ``seed`` (int >= 0, default 0)
``oracle``         ``time_limit_s`` (float > 0), ``gap`` (float in [0, 1)), ``workers``
                   (int >= 1; default: deterministic mode), ``progress`` (bool)
``rl``             ``checkpoint`` (path), ``samples`` (int >= 1), ``seed`` (int >= 0),
                   ``budget_s`` (float >= 0; default 2 s up to 200 ops, growing with
                   the op count; 0 = the policy alone, no search)
=================  ==================================================================

``oracle`` and ``rl`` are imported only when requested, so the registry works before
(or without) those modules.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from partitiontuner.agents.base import Planner
from partitiontuner.errors import ConfigError

METHODS = ("cpu-only", "npu-first", "greedy", "partitiontuner", "heft", "random", "oracle", "rl")

#: the quick classical planners whose best plan is the reference a slower planner must
#: never lose to: the oracle's incumbents, training's validation reference and its
#: behaviour-cloning demonstrations (cpu-only is dominated and random is slow)
QUICK_METHODS = ("npu-first", "greedy", "partitiontuner", "heft")

_CLASSES = {
    "cpu-only": "partitiontuner.agents.baselines:CpuOnlyPlanner",
    "npu-first": "partitiontuner.agents.baselines:NpuFirstPlanner",
    "greedy": "partitiontuner.agents.greedy:GreedyPlanner",
    "partitiontuner": "partitiontuner.agents.paper:PartitionTunerPlanner",
    "heft": "partitiontuner.agents.heft:HeftPlanner",
    "random": "partitiontuner.agents.random_search:RandomPlanner",
    "oracle": "partitiontuner.agents.oracle:OraclePlanner",
    "rl": "partitiontuner.agents.rl_planner:RLPlanner",
}

OPTIONS: dict[str, dict[str, str]] = {
    "cpu-only": {},
    "npu-first": {},
    "greedy": {},
    "partitiontuner": {
        "switch_penalty_us": "fixed DP penalty per new partition in us (default: the PU's dispatch overhead)",
        "parallel": "schedule parallel branches on different PUs (default true)",
        "max_mappings": "branch-to-PU mappings tried exhaustively per block (default 256)",
    },
    "heft": {},
    "random": {"samples": "number of random plans (default 200)", "seed": "random seed (default 0)"},
    "oracle": {"time_limit_s": "stop after this many seconds and report the gap to the lower bound",
               "gap": "stop once the plan is proven within this relative gap (e.g. 0.01)",
               "workers": "solver threads on the wall clock (default: 2, deterministic and reproducible)",
               "progress": "print incumbent, bound and gap on stderr during long solves (default: when a terminal)"},
    "rl": {"checkpoint": "policy checkpoint (default: the shipped one)", "samples": "sampled plans, best kept",
           "seed": "sampling seed",
           "budget_s": "seconds of policy-guided search (default 2 s up to 200 ops, more on larger graphs; 0 = the policy alone)"},
}


def planner_options_help() -> str:
    """One line per method: its options, for ``--help`` texts."""
    lines = []
    for m in METHODS:
        opts = OPTIONS[m]
        lines.append(f"{m}: " + ("; ".join(f"{k} = {v}" for k, v in opts.items()) if opts else "no options"))
    return "\n".join(lines)


def quick_planners() -> list[Planner]:
    """One planner of each of :data:`QUICK_METHODS`, with default options."""
    return [make_planner(m) for m in QUICK_METHODS]


def make_planner(method: str, **options: Any) -> Planner:
    """The planner for ``method`` with ``options``.

    Raises:
        ConfigError: unknown method, unknown or bad option, or a planner module that is
            not available.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    given = {k: v for k, v in options.items() if v is not None}
    allowed = OPTIONS[method]
    for k in given:
        if k not in allowed:
            takes = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
            raise ConfigError(f"method {method!r} has no option {k!r} ({takes})")
    _check_values(method, given)
    module_name, cls_name = _CLASSES[method].split(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method {method!r} is not available: {exc}") from None
    try:
        return cls(**given)
    except TypeError as exc:
        raise ConfigError(f"method {method!r}: bad options {given}: {exc}") from None


def _check_values(method: str, given: dict[str, Any]) -> None:
    for k, v in given.items():
        if k in ("samples", "max_mappings") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{method}: {k} must be a positive integer, got {v!r}")
        if k == "seed" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ConfigError(f"{method}: seed must be a non-negative integer, got {v!r}")
        if k == "time_limit_s" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise ConfigError(f"{method}: the time limit must be a positive number of seconds, got {v!r}")
        if k == "budget_s" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise ConfigError(f"{method}: the search budget must be a number of seconds >= 0, got {v!r}")
        if k == "gap" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1):
            raise ConfigError(f"{method}: the gap must be a number in [0, 1), got {v!r}")
        if k == "workers" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{method}: workers must be a positive integer, got {v!r}")
        if k == "progress" and not isinstance(v, bool):
            raise ConfigError(f"{method}: progress must be true or false, got {v!r}")
        if k == "switch_penalty_us" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise ConfigError(f"{method}: switch_penalty_us must be a number >= 0, got {v!r}")
        if k == "parallel" and not isinstance(v, bool):
            raise ConfigError(f"{method}: parallel must be true or false, got {v!r}")
