"""The Gymnasium environment (``PartitionTuner-v0``, registered on import), its
state machine and the policy's features.

Gymnasium 1.x (pinned ``>=1.0,<2``). Vector envs: use
``autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP``, so the observation returned
with ``terminated`` is already the next episode's first one and the finished episode's
last observation and info sit in ``info["final_obs"]`` / ``info["final_info"]`` (the
tests run it that way). PPO (:mod:`partitiontuner.training.ppo`) drives the same state
machine and features without the padded observations, several episodes of one problem
in lockstep, as the planner does.
"""

from __future__ import annotations

import gymnasium as gym

from .features import (
    ACTION,
    EDGE,
    GLOBAL,
    MAX_PUS,
    NODE_DYNAMIC,
    NODE_STATIC,
    PU,
    SCHEMA_VERSION,
    ProblemContext,
)
from .observation import graphs_to_batch, obs_to_data, observation_space
from .replay import actions_for_plan
from .scheduling_env import PartitionTunerEnv, load_env_problem, plan_from_state
from .state import ScheduleState, visit_order

ENV_ID = "PartitionTuner-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="partitiontuner.env.scheduling_env:PartitionTunerEnv")

__all__ = [
    "ACTION", "EDGE", "actions_for_plan", "ENV_ID", "GLOBAL", "MAX_PUS", "NODE_DYNAMIC", "NODE_STATIC", "PU", "SCHEMA_VERSION",
    "PartitionTunerEnv", "ProblemContext", "ScheduleState", "plan_from_state", "graphs_to_batch", "load_env_problem",
    "obs_to_data", "observation_space", "visit_order",
]
