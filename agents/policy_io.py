"""Reading policy checkpoints: the planner's side of the checkpoint format.

A checkpoint is one ``torch.save`` file, read here with ``torch.load(weights_only=True)``
(plain types and tensors only, so no pickled code runs). Contents:

* ``format`` (:data:`FORMAT`), ``schema_version`` (the feature schema,
  :data:`partitiontuner.env.SCHEMA_VERSION`), ``project_version``;
* ``policy_config`` (the :class:`GNNPolicy` constructor arguments) and ``policy`` (its
  state dict);
* ``args`` (the training ``Args`` as a dict), ``global_step``, ``iteration``;
* for resuming (absent from the shipped policy): ``optimizer`` state and ``rng`` (the
  random generators' states);
* ``info``: anything else worth keeping (validation results, wall time).

A missing, truncated or foreign file, or a checkpoint of another feature schema,
raises :class:`~partitiontuner.errors.ConfigError` with one line naming the file.
Writing checkpoints is training's business (:mod:`partitiontuner.training.checkpoint`);
this module sits in ``agents`` so that planning never imports training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from partitiontuner import __version__
from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.env.features import SCHEMA_VERSION
from partitiontuner.errors import ConfigError

FORMAT = "partitiontuner-policy"
#: file name of the policy shipped in ``partitiontuner.checkpoints``
SHIPPED = "policy.pt"


@dataclass
class Checkpoint:
    """One checkpoint in memory (see the module docstring for the fields)."""

    policy_config: dict[str, int]
    policy_state: dict[str, torch.Tensor]
    args: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    iteration: int = 0
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    project_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT, "schema_version": self.schema_version, "project_version": self.project_version,
            "policy_config": dict(self.policy_config), "policy": self.policy_state, "args": self.args,
            "global_step": self.global_step, "iteration": self.iteration, "info": self.info,
        }
        for key in ("optimizer", "rng"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    def make_policy(self) -> GNNPolicy:
        """A :class:`GNNPolicy` with these weights, in eval mode.

        Raises:
            ConfigError: the weights do not fit the configured policy.
        """
        try:
            policy = GNNPolicy(**self.policy_config)
            policy.load_state_dict(self.policy_state)
        except (TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"checkpoint weights do not fit the policy ({first})") from None
        policy.eval()
        return policy


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint.

    Raises:
        ConfigError: missing, unreadable, foreign, or of another feature schema.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours or damaged"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"{p}: not a readable PartitionTuner checkpoint (truncated or corrupt? {first})") from None
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ConfigError(f"{p}: not a PartitionTuner policy checkpoint (no {FORMAT!r} header)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{p}: checkpoint uses feature schema v{data.get('schema_version')}, this version of PartitionTuner reads "
            f"v{SCHEMA_VERSION}; retrain with `partitiontuner train`"
        )
    try:
        return Checkpoint(
            policy_config={str(k): int(v) for k, v in data["policy_config"].items()},
            policy_state=dict(data["policy"]),
            args=dict(data.get("args") or {}),
            global_step=int(data.get("global_step", 0)),
            iteration=int(data.get("iteration", 0)),
            optimizer=data.get("optimizer"),
            rng=data.get("rng"),
            info=dict(data.get("info") or {}),
            schema_version=int(data["schema_version"]),
            project_version=str(data.get("project_version", "?")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{p}: malformed PartitionTuner checkpoint ({type(exc).__name__}: {exc})") from None


def shipped_checkpoint() -> Path:
    """The policy installed with the package (``partitiontuner/checkpoints/policy.pt``).

    Raises:
        ConfigError: the package has no trained policy.
    """
    path = Path(str(resources.files("partitiontuner.checkpoints") / SHIPPED))
    if not path.is_file():
        raise ConfigError(f"no shipped policy at {path}; train one with `partitiontuner train` and pass --checkpoint")
    return path
