"""Simulator throughput: full plan evaluations per second on one core.

Target (issue 5): >= 1,000 full ResNet50 plan evaluations per second. Plans are
random valid ones (random PU per op, maximal same-PU chains grouped), so the numbers
cover realistic partition counts. Run: ``python benchmarks/bench_simulator.py``.
"""

from __future__ import annotations

import platform as host
import time

import numpy as np

from partitiontuner.platform import load_platform
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.simulate import Simulator, simulate
from partitiontuner.zoo import load_model


def chain_plans(problem: Problem, rng: np.random.Generator, k: int) -> list[tuple[list[list[int]], list[int]]]:
    """k random valid plans: each op on a random allowed PU, joining its single
    predecessor's partition when that predecessor is on the same PU and feeds only it."""
    g = problem.graph
    out = []
    for _ in range(k):
        pu = [int(rng.choice(np.flatnonzero(problem.allowed[v]))) for v in range(g.num_ops)]
        parts: list[list[int]] = []
        owner = [-1] * g.num_ops
        for v in range(g.num_ops):
            preds = g.preds[v]
            if len(preds) == 1 and pu[preds[0]] == pu[v] and len(g.succs[preds[0]]) == 1 and owner[preds[0]] == len(parts) - 1:
                parts[-1].append(v)
                owner[v] = len(parts) - 1
            else:
                parts.append([v])
                owner[v] = len(parts) - 1
        out.append((parts, [pu[ops[0]] for ops in parts]))
    return out


def main() -> None:
    platform = load_platform("cpu-npu")
    print(f"host: {host.processor() or host.machine()}, python {host.python_version()}")
    print(f"{'model':<12} {'ops':>5} {'parts (avg)':>12} {'plans/s':>10} {'us/plan':>9} {'target':>8}")
    for name in ("resnet50", "googlenet"):
        graph = load_model(name)
        problem = Problem(graph, platform, fixture_profiles(graph, platform))
        sim = Simulator(problem)
        plans = chain_plans(problem, np.random.default_rng(0), 200)
        # sanity: the fast path agrees with the validating simulate()
        from partitiontuner.plan import make_plan

        p0 = make_plan(problem, list(zip(plans[0][0], plans[0][1], strict=True)), "bench")
        assert abs(simulate(problem, p0).makespan_us - sim.makespan(*plans[0])) < 1e-6
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            for parts, pus in plans:
                sim.makespan(parts, pus)
            best = max(best, len(plans) / (time.perf_counter() - t0))
        avg_parts = sum(len(p) for p, _ in plans) / len(plans)
        target = ">=1000" if name == "resnet50" else ""
        print(f"{name:<12} {graph.num_ops:>5} {avg_parts:>12.1f} {best:>10.0f} {1e6 / best:>9.1f} {target:>8}")


if __name__ == "__main__":
    main()
