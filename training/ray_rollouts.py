"""Where PPO's rollouts run: in this process, or in Ray actors (``train --ray [ADDRESS]``).

The trainer (:func:`partitiontuner.training.ppo.train`) sees one seam,
``workers.collect(agent, drawn, seeds)``: given the drawn problems, the current policy and
each drawn problem's sampling seed (:func:`problem_seeds`), it returns each drawn problem's recorded
:class:`~partitiontuner.agents.rl_planner.Trajectories` (episode 0 greedy, the rest
sampled), in draw order. The learner, validation and checkpoints stay in the driver.

* :class:`LocalRollouts`: in this process, one problem after another.
* :class:`RayRollouts`: ``ray_actors`` :class:`RolloutWorker` actors, each holding a
  policy copy and a slice of the corpus (the problems put in the object store once,
  fetched by their actor on its first call, their contexts built there). Per iteration the weights
  are put in the object store once (``ray.put(state_dict)``) and every actor with drawn
  problems gets one call. The slices balance the expected work (draw probability x op
  count, longest first), so a draw of the zoo's big models does not land on one actor
  by construction; a single iteration can still be unbalanced, since draws are random.

Same numbers with or without Ray, for any number of actors. Every drawn problem of an
iteration samples from a torch generator of its own, seeded by :func:`problem_seeds`
from (run seed, iteration, index of the problem in that iteration's draw); which
problems are drawn still comes from the run's numpy generator, in the driver. A
problem's episodes therefore depend on nothing another problem did: not on where it
runs, not on how many random numbers the problems before it consumed (which, with the
complete action space of :func:`~partitiontuner.agents.rl_planner.rollout`, depends on
the policy's choices, so no driver could skip ahead of a shared generator). The actors'
trajectories are bit-identical to the local ones, and ``--resume`` stays exact since
the seeds derive from the iteration number. This scheme changed the local numbers once
(runs before it sampled every problem from one shared generator in turn, so they are
not reproduced bit for bit); since then they are identical for any actor count, which
``tests/test_train_ray.py`` checks. The actors run torch with the run's thread count
and determinism setting, as the driver does.

Failures: an actor that dies (its process or its node lost) is restarted by Ray
(``max_restarts``) and the iteration's call on it is run again (``max_task_retries``);
the call carries the weights and the seeds, so the retry gives the same
trajectories. Ctrl-C reaches the driver inside ``ray.get``; the trainer saves the last
boundary's checkpoint and :meth:`RayRollouts.close` kills the actors. An unreachable
address fails before any work (:func:`partitiontuner.distributed.preflight`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import numpy as np
import torch

from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.rl_planner import Trajectories, rollout
from partitiontuner.distributed import DEFAULT_MAX_RETRIES, get_result, ray_session
from partitiontuner.env.features import MAX_PUS, ProblemContext
from partitiontuner.problem import Problem
from partitiontuner.training.args import Args

__all__ = ["LocalRollouts", "RayRollouts", "RolloutWorker", "balanced_slices", "problem_seeds", "record_rollout",
           "rollout_workers"]


def record_rollout(policy: GNNPolicy, ctx: ProblemContext, episodes: int, gen: torch.Generator) -> Trajectories:
    """One problem's recorded rollout for PPO: episode 0 greedy (the baseline), the
    other ``episodes - 1`` sampled from ``gen``, PU slots padded to ``MAX_PUS`` so that
    problems on any platform batch together. Call under ``no_grad``."""
    _, tr = rollout(policy, ctx, episodes, gen, greedy=1, record=True, pad_pus=MAX_PUS)
    assert tr is not None
    return tr


def problem_seeds(seed: int, iteration: int, count: int) -> list[int]:
    """The sampling seeds of an iteration's ``count`` drawn problems, one per position in
    the draw: a function of ``(seed, iteration, position)`` alone (numpy's
    ``SeedSequence``, so neighbouring positions and iterations get unrelated streams)."""
    return [int(np.random.SeedSequence([seed, iteration, j]).generate_state(1, np.uint64)[0] >> np.uint64(1))
            for j in range(count)]


def balanced_slices(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Split problem indices into ``parts`` slices of near-equal total cost: longest
    first, each to the currently lightest slice (ties to the lower slice). Each slice
    is sorted; none is empty when ``parts <= len(costs)``."""
    slices: list[list[int]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(parts), key=lambda k: (load[k], len(slices[k]), k))
        slices[k].append(i)
        load[k] += costs[i]
    return [sorted(s) for s in slices]


class LocalRollouts:
    """Rollouts in this process, one drawn problem after another.

    Args:
        contexts: every corpus problem's context, by corpus index.
        episodes: episodes per problem (1 greedy + the sampled ones).
    """

    def __init__(self, contexts: Sequence[ProblemContext], episodes: int):
        self.contexts = contexts
        self.episodes = episodes

    def collect(self, agent: GNNPolicy, drawn: Sequence[int], seeds: Sequence[int]) -> list[Trajectories]:
        """Each drawn problem's recorded trajectories, in draw order, each sampled from
        a generator seeded with its entry of ``seeds``."""
        agent.eval()
        with torch.no_grad():
            trajs = [record_rollout(agent, self.contexts[i], self.episodes, torch.Generator().manual_seed(seed))
                     for i, seed in zip(drawn, seeds, strict=True)]
        agent.train()
        return trajs

    def close(self) -> None:
        """Nothing to release."""


class RolloutWorker:
    """A Ray actor's state: a policy copy and the contexts of its slice of the corpus.

    The slice arrives as an object-store reference with every call (wrapped in a list,
    so Ray passes the reference rather than the problems) and is fetched and turned
    into contexts on the first call only; an actor restarted after a crash rebuilds
    them from the same reference, which the driver keeps alive.

    Args:
        policy_config: the policy's ``channels``, ``num_layers`` and ``hidden``.
        episodes: episodes per problem.
        threads: torch intra-op threads (the trainer's ``threads``).
        deterministic: ``torch.use_deterministic_algorithms`` (the trainer's setting).
    """

    def __init__(self, policy_config: dict[str, int], episodes: int, threads: int, deterministic: bool):
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        self.policy = GNNPolicy(**policy_config)
        self.episodes = episodes
        self.contexts: dict[int, ProblemContext] | None = None

    def collect(self, weights: dict[str, torch.Tensor], slice_ref: list, jobs: Sequence[tuple[int, int]]
                ) -> list[Trajectories]:
        """Load ``weights`` and roll out each ``(corpus index, sampling seed)`` job.

        Args:
            weights: the policy's state dict.
            slice_ref: ``[ref]``, ``ref`` holding this actor's ``(corpus index, problem)`` pairs.
            jobs: the problems to roll out, each with the seed of its sampling generator.
        """
        if self.contexts is None:
            import ray

            self.contexts = {i: ProblemContext(p) for i, p in ray.get(slice_ref[0])}
        self.policy.load_state_dict(weights)
        self.policy.eval()
        trajs = []
        with torch.no_grad():
            for i, seed in jobs:
                trajs.append(record_rollout(self.policy, self.contexts[i], self.episodes,
                                            torch.Generator().manual_seed(seed)))
        return trajs


class RayRollouts:
    """Rollouts in Ray actors, one slice of the corpus each (see the module docstring).

    Joins Ray (starting a local instance for ``"local"``) and starts the actors; call
    :meth:`close` when done, which kills them and leaves Ray as it was found.

    Args:
        address: ``"local"`` or a cluster's address (as ``--ray``).
        problems: the corpus, by index.
        draw_probs: each problem's draw probability (balances the slices).
        episodes: episodes per problem.
        policy_config: the policy's ``channels``, ``num_layers`` and ``hidden``.
        actors: how many actors; 0 = one per ``threads`` CPUs of the cluster, at most
            ``max_actors``; never more than there are problems. Each asks for ``threads``
            CPUs, unless there are more actors than CPUs for them: then for none.
        max_actors: the cap of the automatic count (the problems drawn per iteration).
        threads: CPUs (torch threads) of one actor.
        deterministic: the trainer's ``torch_deterministic``.
        max_restarts: times a dead actor is restarted and its call run again.
        worker_cls: the actor class (tests substitute one that fails).

    Raises:
        ConfigError: Ray missing or the cluster unreachable.
    """

    def __init__(self, address: str, problems: Sequence[Problem], draw_probs: Sequence[float], episodes: int,
                 policy_config: dict[str, int], actors: int = 0, max_actors: int = 0, threads: int = 1,
                 deterministic: bool = True, max_restarts: int = DEFAULT_MAX_RETRIES,
                 worker_cls: type = RolloutWorker):
        self._session = ray_session(address)
        self.ray = self._session.__enter__()
        try:
            ray = self.ray
            if actors <= 0:
                actors = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
                actors = min(actors, max_actors) if max_actors > 0 else actors
            actors = max(1, min(actors, len(problems)))
            slices = balanced_slices([q * p.num_ops for q, p in zip(draw_probs, problems, strict=True)], actors)
            self.owner = {i: k for k, s in enumerate(slices) for i in s}
            # more actors than the cluster has CPUs for (asked for explicitly) would wait
            # forever for CPUs: they then ask for none, spread over the nodes, and share cores
            fits = actors * threads <= ray.cluster_resources().get("CPU", 0)
            placement = {"num_cpus": threads} if fits else {"num_cpus": 0, "scheduling_strategy": "SPREAD"}
            actor_cls = ray.remote(worker_cls).options(**placement, max_restarts=max_restarts,
                                                       max_task_retries=max_restarts)
            self.slices = [ray.put([(i, problems[i]) for i in s]) for s in slices]
            self.workers = [actor_cls.remote(dict(policy_config), episodes, threads, deterministic) for _ in slices]
        except BaseException:
            self._session.__exit__(*sys.exc_info())
            raise

    def collect(self, agent: GNNPolicy, drawn: Sequence[int], seeds: Sequence[int]) -> list[Trajectories]:
        """Each drawn problem's recorded trajectories, in draw order, exactly as
        :meth:`LocalRollouts.collect` gives them."""
        weights = self.ray.put({k: v.detach().clone() for k, v in agent.state_dict().items()})
        jobs: list[list[tuple[int, int]]] = [[] for _ in self.workers]
        where = []
        for i, seed in zip((int(i) for i in drawn), seeds, strict=True):
            k = self.owner[i]
            where.append((k, len(jobs[k])))
            jobs[k].append((i, int(seed)))
        refs = {k: w.collect.remote(weights, [self.slices[k]], jobs[k]) for k, w in enumerate(self.workers) if jobs[k]}
        results = {k: get_result(self.ray, ref) for k, ref in refs.items()}
        return [results[k][m] for k, m in where]

    def close(self) -> None:
        """Kill the actors (also those still working after Ctrl-C) and leave Ray."""
        if self.ray is None:
            return
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(w, no_restart=True)
        self.workers, self.slices, self.ray = [], [], None
        self._session.__exit__(None, None, None)


def rollout_workers(args: Args, problems: Sequence[Problem], contexts: Sequence[ProblemContext],
                    draw_probs: np.ndarray) -> LocalRollouts | RayRollouts:
    """The rollout seam of a training run: :class:`RayRollouts` with ``args.ray``,
    otherwise :class:`LocalRollouts` (and Ray is never imported)."""
    episodes = 1 + args.samples_per_problem
    if not args.ray:
        return LocalRollouts(contexts, episodes)
    return RayRollouts(args.ray, problems, [float(q) for q in draw_probs], episodes,
                       {"channels": args.channels, "num_layers": args.num_layers, "hidden": args.hidden},
                       actors=args.ray_actors, max_actors=args.problems_per_iteration, threads=args.threads,
                       deterministic=args.torch_deterministic)
