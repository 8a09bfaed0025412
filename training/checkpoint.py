"""Writing policy checkpoints, restoring a training run from one, and shipping one.

The format and the reader live in :mod:`partitiontuner.agents.policy_io` (planning
reads checkpoints without importing training); this module writes them atomically
(a crash or Ctrl-C leaves the old file or the new one, never half, never a temporary
file), restores a run's optimizer and generators from one (refusing crafted state with
one line), and exports the shippable form: weights, configuration and training
``Args`` without optimizer or RNG state, plus a JSON sidecar with the metadata and the
command that produced it.
"""

from __future__ import annotations

import copy
import io
import json
import math
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn, optim

from partitiontuner.agents.policy_io import (
    FORMAT,
    SHIPPED,
    Checkpoint,
    load_checkpoint,
    shipped_checkpoint,
)
from partitiontuner.atomic import write_bytes_atomic, write_text_atomic
from partitiontuner.errors import ConfigError, run_entry_point

__all__ = ["FORMAT", "SHIPPED", "Checkpoint", "export_policy", "load_checkpoint", "restore_run", "run_rng_state",
           "save_checkpoint", "save_uninterrupted", "shipped_checkpoint"]


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (a crash leaves the old file or the new one, never half)."""
    buf = io.BytesIO()
    torch.save(ckpt.to_dict(), buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


def run_rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
    """The two generators training draws from: numpy (problems, minibatches) and torch (action sampling)."""
    return {"torch": gen.get_state(), "numpy": copy.deepcopy(np_rng.bit_generator.state)}


def restore_run(ck: Checkpoint, path: str, agent: nn.Module, optimizer: optim.Optimizer, np_rng: np.random.Generator,
                gen: torch.Generator) -> None:
    """Load a training checkpoint's weights, optimizer and generator states.

    Raises:
        ConfigError: a shipped policy (no optimizer or generator state), or state that
            does not fit this run (a crafted or foreign checkpoint), naming the file.
    """
    if not ck.optimizer or ck.rng is None:
        raise ConfigError(f"{path}: a shipped policy, not a training checkpoint (no optimizer / RNG state to resume)")
    try:
        agent.load_state_dict(ck.policy_state)
        optimizer.load_state_dict(ck.optimizer)
        for p, state in optimizer.state.items():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state and state[key].shape != p.shape:
                    raise ValueError(f"optimizer {key} of shape {tuple(state[key].shape)} for a {tuple(p.shape)} parameter")
        gen.set_state(ck.rng["torch"])
        np_rng.bit_generator.state = copy.deepcopy(ck.rng["numpy"])
        float(ck.info.get("best_val", math.inf))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{path}: cannot resume from this checkpoint ({type(exc).__name__}: {first})") from None


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a checkpoint is written (then raise it), so an interrupt
    never leaves a half-written or temporary file behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit: list[int] = []
    old = signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hit:
        raise KeyboardInterrupt


def save_uninterrupted(path: str | Path, ck: Checkpoint) -> None:
    """:func:`save_checkpoint` with Ctrl-C held until the file is complete."""
    with _sigint_deferred():
        save_checkpoint(path, ck)




# ---------------------------------------------------------------------------------
# shipping a policy


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

    p = argparse.ArgumentParser(prog="python -m partitiontuner.training.checkpoint",
                                description="Write the shippable form of a training checkpoint (+ JSON metadata).")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--command", required=True, help="the command that trained it (recorded in the metadata)")
    p.add_argument("--extra", default=None, help="a JSON object merged into the metadata")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def run() -> int:
        try:
            extra = json.loads(args.extra) if args.extra else None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--extra is not JSON ({exc})") from None
        if extra is not None and not isinstance(extra, dict):
            raise ConfigError("--extra must be a JSON object")
        path = export_policy(args.src, args.dst, command=args.command, extra=extra)
        print(f"wrote {path} ({path.stat().st_size} bytes) and {path.with_suffix('.json')}")
        return 0

    return run_entry_point(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
