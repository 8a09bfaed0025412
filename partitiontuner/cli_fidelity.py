"""Printing and file output for the fidelity commands (``calibrate``, ``run --trace /
--gantt``, ``plan --tune``), kept out of :mod:`partitiontuner.cli` so that module only
parses and dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table


def write_run_pictures(problem, plan, res, trace: str | None, gantt: str | None) -> None:
    """``run --trace F`` and ``run --gantt G``: the median run beside the simulation."""
    if not (trace or gantt):
        return
    from partitiontuner.simulate import simulate

    sim = simulate(problem, plan)
    if trace:
        from partitiontuner.trace import write_trace

        write_trace(res, sim, problem.pus, trace)
    if gantt:
        from partitiontuner.viz import gantt_measured_vs_simulated

        gantt_measured_vs_simulated(problem, plan, sim, res, gantt)


def print_tune(con: Console, tuned) -> None:
    """Predicted vs measured for every ``plan --tune`` candidate, and the rank agreement."""
    t = Table(title="--tune: candidates, predicted order (us)")
    for col in ("#", "source", "parts", "predicted", "measured", "p10", "p90", "meas./pred.", ""):
        t.add_column(col, justify="left" if col in ("source", "") else "right")
    for i, c in enumerate(tuned.candidates):
        m = c.measured
        t.add_row(str(i), c.source, str(c.plan.num_partitions), f"{c.predicted_us:.1f}", f"{m.measured_makespan_us:.1f}",
                  f"{m.measured_p10_us:.1f}", f"{m.measured_p90_us:.1f}", f"{m.measured_makespan_us / c.predicted_us:.3f}",
                  "<- chosen" if i == tuned.chosen else "")
    con.print(t)
    tau = tuned.kendall_tau
    con.print(f"rank agreement predicted vs measured: Kendall tau {'n/a' if tau != tau else f'{tau:.2f}'} over "
              f"{len(tuned.candidates)} plans; returning {tuned.best.source} (measured fastest)")
    warnings = dict.fromkeys(w for c in tuned.candidates for w in c.measured.warnings if "loaded" in w)
    for w in warnings:
        print(f"partitiontuner: warning: {w}", file=sys.stderr)


def run_calibrate(args: argparse.Namespace, con: Console, print_json: Callable[[Any], None]) -> int:
    from partitiontuner.microbench import CalibrateArgs, calibrate
    from partitiontuner.stats import load_warning

    cfg = CalibrateArgs(platform=args.platform, models=tuple(args.models) if args.models else CalibrateArgs.models,
                        profiles=args.profiles, repeat=args.repeat, budget_s=args.budget, pin_cores=args.pin_cores)
    cfg.check()
    warning = load_warning()
    if warning:
        print(f"partitiontuner: warning: {warning}", file=sys.stderr)
    progress = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    cal, path = calibrate(cfg, progress)
    if args.json:
        print_json({**cal.to_dict(), "path": str(path), "cost_model": "calibrated",
                    "warnings": [warning] if warning else []})
        return 0
    t = Table(title=f"calibration of {cal.platform} on this host ({cal.plans} plans, {cal.seconds:.0f} s)")
    for col in ("parameter", "fitted", "samples"):
        t.add_column(col, justify="left" if col == "parameter" else "right")
    for pu, v in cal.launch_us.items():
        slow = f" (work x{cal.slowdown[pu]:.2f} if fitted with a slowdown)" if pu in cal.slowdown else ""
        t.add_row(f"{pu} launch per partition{slow}", f"{v:.1f} us", str(cal.launch_samples.get(pu, "")))
    for (a, b), f in cal.links.items():
        t.add_row(f"{a}->{b} latency / bandwidth", f"{f.latency_us:.1f} us / {1 / max(f.us_per_byte, 1e-12) / 1000:.2f} GB/s",
                  str(f.samples))
    con.print(t)
    con.print(f"median |simulated / measured - 1| on the microbenchmarks: {100 * (cal.error_before or 0):.1f}% uncalibrated, "
              f"{100 * (cal.error_after or 0):.1f}% calibrated")
    con.print(f"written to {path}; used from now on with measured profiles (--no-calibration to opt out)")
    return 0
