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
* ``info``: anything else worth keeping (validation results, wall time);
* ``policy_sha256``: a checksum of the policy's tensors (names, dtypes, shapes, bytes),
  so flipped bytes are caught (checkpoints written before it existed, such as older
  shipped policies, have none and are checked by everything else).

A file is checked before any network is built, so a crafted one costs neither time nor
memory: the configuration against :data:`POLICY_LIMITS`, every tensor's name and shape
against what that configuration builds (on PyTorch's ``meta`` device, which allocates
nothing), the checksum, and that every weight is finite. A missing, truncated, foreign
or crafted file, or a checkpoint of another feature schema, raises
:class:`~partitiontuner.errors.ConfigError` with one line naming the file.
Writing checkpoints is training's business (:mod:`partitiontuner.training.checkpoint`);
this module sits in ``agents`` so that planning never imports training.
"""

from __future__ import annotations

import hashlib
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
#: inclusive bounds of the :class:`GNNPolicy` constructor arguments a checkpoint (or a
#: training run) may ask for: far above anything trained (64, 4, 128), far below what
#: exhausts memory
POLICY_LIMITS = {"channels": (1, 1024), "num_layers": (1, 32), "hidden": (1, 4096)}


def check_policy_config(config: Mapping[str, object]) -> dict[str, int]:
    """``config`` as :class:`GNNPolicy` arguments, if it names exactly
    :data:`POLICY_LIMITS`' keys with integers inside their bounds.

    Raises:
        ConfigError: a missing, unknown, non-integer or out-of-bounds entry.
    """
    if not isinstance(config, Mapping) or set(config) != set(POLICY_LIMITS):
        got = sorted(map(str, config)) if isinstance(config, Mapping) else type(config).__name__
        raise ConfigError(f"policy configuration must have exactly {', '.join(POLICY_LIMITS)}, got {got}")
    out = {}
    for key, (lo, hi) in POLICY_LIMITS.items():
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"policy {key} must be an integer from {lo} to {hi}, got {v!r}")
        out[key] = int(v)
    return out


def policy_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, by name."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
            "policy_sha256": policy_checksum(self.policy_state),
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
        ck = Checkpoint(
            policy_config=dict(data["policy_config"]),
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
    try:
        _check_policy(ck, data.get("policy_sha256"))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return ck


def _check_policy(ck: Checkpoint, checksum: object) -> None:
    """Refuse, before anything is built, a policy whose configuration is out of bounds,
    whose tensors are not what that configuration builds, whose bytes do not match the
    stored checksum, or whose weights are not finite."""
    ck.policy_config = check_policy_config(ck.policy_config)
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: v.shape for k, v in GNNPolicy(**ck.policy_config).state_dict().items()}
    state = ck.policy_state
    if set(state) != set(expected) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        extra, missing = sorted(set(map(str, state)) - set(expected)), sorted(set(expected) - set(state))
        raise ConfigError(f"checkpoint weights do not fit the policy {ck.policy_config} "
                          f"(unexpected {extra[:3]}, missing {missing[:3]})")
    for name, shape in expected.items():
        if state[name].shape != shape or not state[name].is_floating_point():
            raise ConfigError(f"checkpoint weights do not fit the policy: {name} is {state[name].dtype} "
                              f"{tuple(state[name].shape)}, the configuration needs a float tensor {tuple(shape)}")
    if checksum is not None and checksum != policy_checksum(state):
        raise ConfigError("checkpoint weights do not match their checksum (the file is damaged or was edited)")
    for name, t in state.items():
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"checkpoint weight {name} holds NaN or infinite values")


def shipped_checkpoint() -> Path:
    """The policy installed with the package (``partitiontuner/checkpoints/policy.pt``).

    Raises:
        ConfigError: the package has no trained policy.
    """
    path = Path(str(resources.files("partitiontuner.checkpoints") / SHIPPED))
    if not path.is_file():
        raise ConfigError(f"no shipped policy at {path}; train one with `partitiontuner train` and pass --checkpoint")
    return path
