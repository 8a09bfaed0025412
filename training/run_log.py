"""What a training run shows and records: rich progress bars, the CSV and TensorBoard logs.

Every PPO iteration becomes one row of ``<out dir>/logs/progress.csv`` (columns
:data:`CSV_FIELDS`; a resumed run appends to its run's file) and the same numbers as
TensorBoard scalars (``losses/*``, ``charts/*``, ``validation/*``: CleanRL's names).
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

from partitiontuner.training.args import Args

CSV_FIELDS = ("iteration", "global_step", "time_s", "sps", "learning_rate", "episodes", "episodic_gain",
              "greedy_gain", "better_than_greedy", "value_loss", "policy_loss", "entropy", "old_approx_kl",
              "approx_kl", "clipfrac", "explained_variance", "val_mean_ratio", "val_max_ratio")
_LOSSES = ("value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "explained_variance")
_CHARTS = ("episodic_gain", "greedy_gain", "better_than_greedy")


class RunLog:
    """The CSV and TensorBoard logs of one run, in ``log_dir``.

    Args:
        log_dir: created if needed.
        args: recorded as TensorBoard text.
        append: continue an existing ``progress.csv`` (a resumed run) instead of
            starting a new one.
    """

    def __init__(self, log_dir: Path, args: Args, append: bool):
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(log_dir))
        self.writer.add_text("hyperparameters",
                             "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
        csv_path = log_dir / "progress.csv"
        new = not (append and csv_path.exists())
        self.csv_file = open(csv_path, "w" if new else "a", newline="")  # noqa: SIM115 - closed in close()
        self.csv = csv.DictWriter(self.csv_file, fieldnames=CSV_FIELDS)
        if new:
            self.csv.writeheader()

    def validation_row(self, val: dict[str, float]) -> None:
        """The row of iteration 0: the starting policy's validation."""
        self.csv.writerow({"iteration": 0, "global_step": 0, "time_s": 0.0, "val_mean_ratio": val["mean"],
                           "val_max_ratio": val["max"]})

    def iteration(self, row: dict[str, Any], val: dict[str, float] | None) -> None:
        """One iteration's row (``val``: this iteration's validation, if it ran)."""
        step = row["global_step"]
        for name, r in (val or {}).items():
            self.writer.add_scalar(f"validation/{name}_ratio", r, step)
        self.writer.add_scalar("charts/learning_rate", row["learning_rate"], step)
        for key in _LOSSES:
            self.writer.add_scalar(f"losses/{key}", row[key], step)
        for key in _CHARTS:
            self.writer.add_scalar(f"charts/{key}", row[key], step)
        self.writer.add_scalar("charts/SPS", row["sps"], step)
        self.csv.writerow(row)
        self.csv_file.flush()

    def close(self) -> None:
        self.csv_file.close()
        self.writer.close()


class ProgressBar:
    """A rich progress bar (or nothing when ``show`` is false).

    Args:
        show: draw it.
        label: its name, shown first.
        total: the count at completion.
        done: the count already done (a resumed run).
    """

    def __init__(self, show: bool, label: str, total: int, done: int = 0):
        self.bar = None
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=done, status="")

    def update(self, done: int, status: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, status=status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def ppo_status(iteration: int, row: dict[str, Any], val: dict[str, float]) -> str:
    """The PPO bar's status: iteration, speed, gains and the last validation."""
    gain = f"gain {row['episodic_gain']:.3f} greedy {row['greedy_gain']:.3f}"
    v = f" val {val['mean']:.4f}/{val['max']:.4f}" if val else ""
    return f"it {iteration} {row['sps']} sps {gain}{v}"
