"""Planning time against graph size: generated graphs of 100, 1,000 and 10,000 ops.

For ``rl`` (greedy decoding), ``heft``, ``partitiontuner`` and ``greedy`` on
``cpu-npu``; the ``oracle`` runs where it finishes within its time limit (and says
whether it proved optimality). Graphs are the RL corpus's generated families (chains
of residual / inception-like / NAS-cell blocks) with emulated NPU profiles and the CPU
cost model fitted to the measured fixtures, so every number is reproducible.

Run: ``python benchmarks/bench_planning.py [--sizes 100 1000 10000] [--oracle-limit 120]``.
"""

from __future__ import annotations

import argparse
import platform as host
import time

import numpy as np

from partitiontuner.agents.registry import make_planner
from partitiontuner.platform import load_platform
from partitiontuner.simulate import Simulator


def generated_problem(num_ops: int, seed: int, family: str):
    from partitiontuner.training.corpus import fit_cpu_model, generate_graph, modelled_problem

    graph = generate_graph(np.random.default_rng(seed), family, num_ops, f"{family}{num_ops}")
    return modelled_problem(graph, load_platform("cpu-npu"), fit_cpu_model())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--methods", nargs="+", default=["rl", "heft", "partitiontuner", "greedy", "oracle"])
    ap.add_argument("--oracle-limit", type=float, default=120.0, help="oracle time limit, s")
    ap.add_argument("--oracle-max-ops", type=int, default=1000, help="skip the oracle above this size")
    ap.add_argument("--family", default="inception", help="generated family (chain, residual, inception, nas, ...)")
    args = ap.parse_args()
    print(f"host: {host.processor() or host.machine()}, python {host.python_version()}; platform cpu-npu")
    print(f"{'ops':>6} {'method':<15} {'plan s':>9} {'makespan us':>13} {'/ best':>7}  note")
    for n in args.sizes:
        problem = generated_problem(n, seed=n, family=args.family)
        sim = Simulator(problem)
        results = {}
        for method in args.methods:
            if method == "oracle" and n > args.oracle_max_ops:
                print(f"{problem.num_ops:>6} {method:<15} {'-':>9} {'-':>13} {'-':>7}  skipped (> {args.oracle_max_ops} ops)")
                continue
            opts = {"time_limit_s": args.oracle_limit} if method == "oracle" else {}
            planner = make_planner(method, **opts)
            t0 = time.perf_counter()
            plan = planner.plan(problem)
            dt = time.perf_counter() - t0
            results[method] = (dt, sim.plan_makespan(plan), plan)
        best = min(m for _, m, _ in results.values())
        for method, (dt, makespan, plan) in results.items():
            note = ""
            if method == "oracle":
                note = "proven optimal" if plan.info.get("proven_optimal") else f"not proven (gap {plan.info.get('gap', float('nan')):.3f})"
            print(f"{problem.num_ops:>6} {method:<15} {dt:>9.3f} {makespan:>13.1f} {makespan / best:>7.3f}  {note}")


if __name__ == "__main__":
    main()
