"""Measure competing plans like a benchmark tool: repeats interleaved across plans.

Measuring plan A ten times and then plan B ten times lets a change of the machine's
state (another process, frequency, cache) land on one plan only. Here every plan is
compiled once (sessions, reference tensors), then the repeats are spread over
``rounds`` rounds and each round runs every plan in turn, with ``warmup`` untimed runs
at the start of each block (the executor's worker threads are new in every block and
ONNX Runtime's first call on a thread is slower). Each plan's result is the median
and p10 / p90 of its timed runs, with the load and spread warnings of
:func:`partitiontuner.execute.run_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from partitiontuner.execute import ExecutionResult, Executor, check_repeat
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.stats import host_load


def blocks(repeat: int, rounds: int) -> list[int]:
    """``repeat`` timed runs split into ``rounds`` near-equal blocks (no empty block)."""
    rounds = max(1, min(rounds, repeat))
    return [repeat // rounds + (1 if r < repeat % rounds else 0) for r in range(rounds)]


def measure_interleaved(items: Sequence[tuple[Problem, Plan]], *, repeat: int = 10, warmup: int = 1, rounds: int = 5,
                        seed: int = 0, pin_cores: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> list[ExecutionResult]:
    """Run every ``(problem, plan)`` ``repeat`` times, interleaved; one result per item.

    Raises:
        PartitionTunerError: a bad ``repeat`` / ``warmup``, or a plan that cannot run.
    """
    check_repeat(repeat, warmup)
    load = host_load()
    executors = [Executor(p, plan, seed=seed, pin_cores=pin_cores) for p, plan in items]
    runs: list[list] = [[] for _ in executors]
    sizes = blocks(repeat, rounds)
    for r, n in enumerate(sizes):
        for k, ex in enumerate(executors):
            runs[k] += ex.run(warmup + n)[warmup:]
            if progress:
                progress(r * len(executors) + k + 1, len(sizes) * len(executors))
    return [ex.result(rs, warmup=warmup, load=load) for ex, rs in zip(executors, runs, strict=True)]
