"""Policy checkpoints: one ``torch.save`` file, written atomically, read with
``torch.load(weights_only=True)``.

Contents (plain types and tensors only, so the safe loader accepts them):

* ``format`` (``"partitiontuner-policy"``), ``schema_version`` (the feature schema,
  :data:`partitiontuner.env.SCHEMA_VERSION`), ``project_version``;
* ``policy_config`` (the :class:`GNNPolicy` constructor arguments) and ``policy`` (its
  state dict);
* ``args`` (the training ``Args`` as a dict), ``global_step``, ``iteration``;
* for resuming (absent from the shipped policy): ``optimizer`` state, ``rng`` (torch,
  numpy generator states) and ``envs`` (each training env's episode snapshot);
* ``info``: anything else worth keeping (validation results, wall time).

A missing, truncated or foreign file, or a checkpoint of another feature schema,
raises :class:`~partitiontuner.errors.ConfigError` with one line naming the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from partitiontuner import __version__
from partitiontuner.atomic import write_bytes_atomic, write_text_atomic
from partitiontuner.env.features import SCHEMA_VERSION
from partitiontuner.errors import ConfigError

FORMAT = "partitiontuner-policy"
#: file name of the policy shipped in ``partitiontuner.checkpoints``
SHIPPED = "policy.pt"


@dataclass
class Checkpoint:
    policy_config: dict[str, int]
    policy_state: dict[str, torch.Tensor]
    args: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    iteration: int = 0
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    envs: list[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    project_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT, "schema_version": self.schema_version, "project_version": self.project_version,
            "policy_config": dict(self.policy_config), "policy": self.policy_state, "args": self.args,
            "global_step": self.global_step, "iteration": self.iteration, "info": self.info,
        }
        for key in ("optimizer", "rng", "envs"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    def make_policy(self):
        """A :class:`GNNPolicy` with these weights, in eval mode."""
        from partitiontuner.agents.gnn_policy import GNNPolicy

        try:
            policy = GNNPolicy(**self.policy_config)
            policy.load_state_dict(self.policy_state)
        except (TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"checkpoint weights do not fit the policy ({first})") from None
        policy.eval()
        return policy


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (a crash leaves the old file or the new one, never half)."""
    buf = io.BytesIO()
    torch.save(ckpt.to_dict(), buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


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
            envs=data.get("envs"),
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


def export_policy(src: str | Path, dst: str | Path, *, command: str, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the shippable form of a training checkpoint: weights, config and args
    only (no optimizer, RNG or env state), plus a JSON sidecar (``dst`` with ``.json``)
    holding the metadata and the command that produced it."""
    ck = load_checkpoint(src)
    slim = Checkpoint(ck.policy_config, ck.policy_state, ck.args, ck.global_step, ck.iteration, info=ck.info)
    dst = save_checkpoint(dst, slim)
    meta = {
        "format": FORMAT, "schema_version": slim.schema_version, "project_version": slim.project_version,
        "policy_config": slim.policy_config, "global_step": slim.global_step, "iteration": slim.iteration,
        "num_parameters": int(sum(t.numel() for t in slim.policy_state.values())),
        "size_bytes": dst.stat().st_size, "command": command, "args": slim.args, "info": slim.info,
        **(dict(extra) if extra else {}),
    }
    write_text_atomic(dst.with_suffix(".json"), json.dumps(meta, indent=1, default=str) + "\n")
    for f in (dst, dst.with_suffix(".json")):  # package data: readable by everyone
        f.chmod(0o644)
    return dst


def main(argv: list[str] | None = None) -> int:
    """``python -m partitiontuner.training.checkpoint SRC DST --command CMD``: ship a policy."""
    import argparse
    import sys

    from partitiontuner.errors import PartitionTunerError

    p = argparse.ArgumentParser(description="Write the shippable form of a training checkpoint (+ JSON metadata).")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--command", required=True, help="the command that trained it (recorded in the metadata)")
    p.add_argument("--extra", default=None, help="a JSON object merged into the metadata")
    args = p.parse_args(argv)
    try:
        extra = json.loads(args.extra) if args.extra else None
        path = export_policy(args.src, args.dst, command=args.command, extra=extra)
    except (PartitionTunerError, json.JSONDecodeError) as exc:
        print(f"partitiontuner: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size} bytes) and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
