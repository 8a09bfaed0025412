"""Writing policy checkpoints, and shipping one.

The format and the reader live in :mod:`partitiontuner.agents.policy_io` (planning
reads checkpoints without importing training); this module writes them atomically
(a crash leaves the old file or the new one, never half) and exports the shippable
form: weights, configuration and training ``Args`` without optimizer or RNG state,
plus a JSON sidecar with the metadata and the command that produced it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from partitiontuner.agents.policy_io import (
    FORMAT,
    SHIPPED,
    Checkpoint,
    load_checkpoint,
    shipped_checkpoint,
)
from partitiontuner.atomic import write_bytes_atomic, write_text_atomic

__all__ = ["FORMAT", "SHIPPED", "Checkpoint", "export_policy", "load_checkpoint", "save_checkpoint", "shipped_checkpoint"]


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (a crash leaves the old file or the new one, never half)."""
    buf = io.BytesIO()
    torch.save(ckpt.to_dict(), buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
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
