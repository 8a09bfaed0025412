"""Plan quality against the oracle: every zoo model x every planner x every preset.

Uses the committed fixture profiles, so the numbers are reproducible anywhere. Prints,
per preset, each method's makespan ratio to the oracle (``*`` marks models whose
oracle did not prove optimality within the limit: their ratios are against the best
plan found), the paper's two gains for ``partitiontuner`` and ``rl``, and planning
times; ``--out DIR`` also writes each preset's full evaluation (CSV, Markdown, chart).

Run: ``python benchmarks/bench_quality.py [--presets ...] [--models ...] [--time-limit 300] [--ray [ADDRESS]]``.
All presets' (model, method) jobs form one batch; with ``--ray`` each is a Ray task (a
local Ray instance, or the cluster at ADDRESS) and the tables are the same. The time
after each preset's heading is the sum of its planning times.
"""

from __future__ import annotations

import argparse
import platform as host

from partitiontuner.agents.registry import METHODS
from partitiontuner.errors import run_entry_point
from partitiontuner.evaluate import evaluate_platforms, write_outputs
from partitiontuner.platform import preset_names
from partitiontuner.zoo import ZOO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(preset_names()))
    ap.add_argument("--models", nargs="+", default=list(ZOO))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--time-limit", type=float, default=300.0, help="oracle time limit per model, s")
    ap.add_argument("--out", default=None, help="write each preset's evaluation under OUT/<preset>/")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="run the jobs as Ray tasks: a local Ray instance, or the cluster at ADDRESS")
    args = ap.parse_args()
    print(f"host: {host.processor() or host.machine()}, python {host.python_version()}; fixture profiles")
    evs = evaluate_platforms(args.models, args.methods, args.presets, "fixture", oracle_time_limit_s=args.time_limit,
                             ray_address=args.ray)
    for preset, ev in evs.items():
        dt = sum(r.planning_time_s for r in ev.rows)
        methods = [m for m in args.methods if m != "oracle"]
        print(f"\n## {preset}  ({dt:.0f} s)\n")
        print("| model | " + " | ".join(methods) + " | oracle ms | proven |")
        print("|---|" + "---:|" * len(methods) + "---:|---|")
        worst = {m: 0.0 for m in methods}
        for model in args.models:
            oracle = ev.row(model, "oracle")
            best = min(r.makespan_us for r in ev.rows if r.model == model)
            cells = []
            for m in methods:
                r = ev.row(model, m)
                ratio = r.makespan_us / (oracle.makespan_us if oracle and oracle.oracle_proven else best)
                worst[m] = max(worst[m], ratio)
                cells.append(f"{ratio:.3f}")
            proven = "yes" if oracle and oracle.oracle_proven else "no*"
            print(f"| {model} | " + " | ".join(cells) + f" | {oracle.makespan_us / 1000:.3f} | {proven} |")
        print("| **worst** | " + " | ".join(f"**{worst[m]:.3f}**" for m in methods) + " | | |")
        for m in ("partitiontuner", "rl"):
            if m in methods:
                gains = [(model, ev.row(model, m).gain_vs_static_pct, ev.row(model, m).gain_vs_profiling_pct) for model in args.models]
                print(f"\n{m}: gain over npu-first / greedy (%): " + ", ".join(f"{mo} {a:+.2f}/{b:+.2f}" for mo, a, b in gains))
        if args.out:
            write_outputs(ev, f"{args.out}/{preset}")


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main, prog="bench_quality"))
