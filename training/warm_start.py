"""The behaviour-cloning warm start of PPO, bounded by the run's budget.

Before PPO the actor clones, on every training problem, the best demonstration of
:mod:`partitiontuner.training.demonstrations` (cross-entropy of the expert's actions)
and the critic regresses the demonstration's return-to-go, for ``bc_epochs`` epochs of
``bc_batch`` problems per Adam step.

The warm start is part of the run, so it obeys the run's two bounds: it stops when the
time limit (``time_limit_min``, counted from the start of the run) has passed, and after
cloning :data:`DECISIONS_PER_STEP` times ``total_timesteps`` expert decisions (cloning
a decision costs far less than sampling one: no simulator, no rollout). Demonstrations
are recorded when first needed, so a short run does not record the whole corpus's. With
the default budget neither bound binds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch.nn as nn
import torch.optim as optim

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.problem import Problem
from partitiontuner.training.args import Args
from partitiontuner.training.demonstrations import (
    Demonstration,
    behaviour_cloning_loss,
    demonstration,
)
from partitiontuner.training.run_log import ProgressBar

#: expert decisions the warm start may clone per environment step of the budget
DECISIONS_PER_STEP = 2


def warm_start(agent: GNNPolicy, problems: Sequence[Problem], args: Args, np_rng: np.random.Generator,
               log: Callable[[str], None], deadline: float = float("inf")) -> dict[str, float]:
    """Behaviour-clone the best demonstration of each problem (see the module docstring).

    Args:
        agent: the policy, trained in place.
        problems: the training problems.
        args: ``bc_epochs``, ``bc_batch``, ``bc_learning_rate``, ``oracle_demo_s``,
            ``vf_coef``, ``max_grad_norm``, ``total_timesteps`` and ``progress`` are read.
        np_rng: shuffles the problems each epoch.
        log: one-line messages.
        deadline: ``time.time()`` after which cloning stops.

    Returns:
        ``{"accuracy", "decisions", "epochs"}``: the last epoch's expert-action accuracy,
        the expert decisions cloned and the epochs begun.
    """
    t0 = time.time()
    demos: dict[int, Demonstration] = {}
    budget = DECISIONS_PER_STEP * args.total_timesteps
    per_epoch = sum(p.num_ops for p in problems)
    bar = ProgressBar(args.progress, "clone", min(args.bc_epochs * per_epoch, budget))
    optimizer = optim.Adam(agent.parameters(), lr=args.bc_learning_rate, eps=1e-5)
    order = np.arange(len(problems))
    acc, cloned, epoch, stop = 0.0, 0, 0, ""
    try:
        for epoch in range(1, args.bc_epochs + 1):
            np_rng.shuffle(order)
            accs = []
            for start in range(0, len(order), args.bc_batch):
                optimizer.zero_grad()
                chunk = order[start:start + args.bc_batch]
                for i in chunk:
                    if i not in demos:
                        demos[i] = demonstration(problems[i], oracle_time_s=args.oracle_demo_s)
                    loss, a = behaviour_cloning_loss(agent, demos[i], args.vf_coef)
                    (loss / len(chunk)).backward()
                    accs.append(a)
                    cloned += len(demos[i].target)
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
                bar.update(cloned, f"epoch {epoch}/{args.bc_epochs} accuracy {np.mean(accs):.3f}")
                if time.time() > deadline:
                    stop = "the time limit"
                elif cloned >= budget:
                    stop = f"{budget} cloned decisions ({DECISIONS_PER_STEP} x --steps)"
                if stop:
                    break
            acc = float(np.mean(accs))
            log(f"behaviour cloning epoch {epoch}/{args.bc_epochs}: expert-action accuracy {acc:.3f}")
            if stop:
                log(f"behaviour cloning stopped in epoch {epoch} at {stop}")
                break
    finally:
        bar.close()
    sources: dict[str, int] = {}
    for d in demos.values():
        sources[d.source] = sources.get(d.source, 0) + 1
    log(f"warm start from {len(demos)} demonstrations ({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}) "
        f"in {time.time() - t0:.0f}s")
    return {"accuracy": acc, "decisions": float(cloned), "epochs": float(epoch)}
