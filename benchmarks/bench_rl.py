"""Benchmark of the RL planner against the best plan known (issue 16's targets).

Per instance: the policy alone (greedy decode, ``budget_s=0``), the default
``plan --method rl`` (policy-guided search with its default budget), each quick
heuristic (``npu-first``, ``greedy``, ``partitiontuner``, ``heft``) and their best
(the heuristic portfolio); each as a ratio to the best plan known (the oracle's where
it proved optimality; otherwise the best of every plan here). The summary gives, per
suite and overall, geometric means and worst cases of the three ratios, and the
policy alone against the portfolio: wins / ties / losses (ties within 1e-6 relative).
The cost model (calibrated or not) and the profiles of every instance are reported.

Suites:

* ``zoo``: the eleven built-in models on a platform (default ``cpu-npu``; fixture
  profiles), split into the training models and the unseen ones;
* ``zero-shot``: the zoo on ``cpu-2npu`` and ``big-little-npu`` (never trained on);
* ``suite``: the test split of the benchmark suite (:mod:`suite`; labels from
  ``results/suite_labels.json``), modelled profiles;
* ``pytorch``: models of unseen families exported from PyTorch (MobileNetV2, a
  transformer with explicit attention heads, a U-Net), profiled on this machine;
* ``speed``: default planning time of ResNet-50 and of a 10,000-op generated graph.

Oracle results are cached in a JSON file (``--oracle-cache``), since the exact search
takes minutes on the larger graphs; a cached entry is used only for the same model
hash, platform and profile numbers. With ``--ray [ADDRESS]`` the labels missing from
the cache are solved first, one Ray task per problem (each asking for the oracle's
worker threads), on a local Ray instance or the cluster at ADDRESS; the problems
travel with their profiles, so the ``pytorch`` suite's are measured here, once.

Usage::

    python benchmarks/bench_rl.py                         # all suites, shipped policy
    python benchmarks/bench_rl.py --suites zoo --models alexnet squeezenet --oracle-time-limit 30
    python benchmarks/bench_rl.py --ray                   # oracle labels as Ray tasks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))  # tests/models.py: the PyTorch modules
sys.path.insert(0, str(ROOT))  # suite.py

from suite import SuiteLabels, build_suite, problem_key  # noqa: E402

from partitiontuner.agents.registry import QUICK_METHODS, make_planner  # noqa: E402
from partitiontuner.atomic import write_text_atomic  # noqa: E402
from partitiontuner.calibrate import cost_model_of  # noqa: E402
from partitiontuner.distributed import run_jobs  # noqa: E402
from partitiontuner.errors import InfeasiblePlanError  # noqa: E402
from partitiontuner.problem import Problem  # noqa: E402
from partitiontuner.simulate import Simulator  # noqa: E402
from partitiontuner.workflow import ProblemSpec, load_problem  # noqa: E402
from partitiontuner.zoo import UNSEEN_MODELS, ZOO  # noqa: E402

HEURISTICS = QUICK_METHODS
#: relative difference under which two makespans tie
TIE = 1e-6


class OracleCache:
    def __init__(self, path: Path, time_limit_s: float):
        self.path = path
        self.time_limit_s = time_limit_s
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def key(pr: Problem) -> str:
        return f"{pr.graph.name}@{pr.platform.name}:{problem_key(pr)}"

    def get(self, pr: Problem) -> dict:
        key = self.key(pr)
        if key not in self.data:
            self.put(key, solve_label(LabelJob(pr, self.time_limit_s)))
        return self.data[key]

    def put(self, key: str, label: dict) -> None:
        """Store one label and save the cache at once, so an interrupted run keeps it."""
        self.data[key] = label
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def fill(self, problems: list[Problem], ray_address: str | None) -> None:
        """Solve every label the cache lacks, as Ray tasks when ``ray_address`` is set."""
        todo = list({self.key(pr): pr for pr in problems if self.key(pr) not in self.data}.items())
        jobs = [LabelJob(pr, self.time_limit_s) for _, pr in todo]
        run_jobs(jobs, solve_label, ray_address, num_cpus=lambda job: job.planner().workers,
                 on_done=lambda i, label: self.put(todo[i][0], label))


@dataclass(frozen=True)
class LabelJob:
    """One best-known label: the oracle on one problem (profiles included)."""

    problem: Problem
    time_limit_s: float

    def planner(self):
        return make_planner("oracle", time_limit_s=self.time_limit_s)


def solve_label(job: LabelJob) -> dict:
    t = time.perf_counter()
    plan = job.planner().plan(job.problem)
    return {"makespan_us": Simulator(job.problem).plan_makespan(plan), "time_s": round(time.perf_counter() - t, 2),
            "proven_optimal": bool(plan.info.get("proven_optimal", False))}


def timed(planner, pr: Problem) -> tuple[float, float, dict]:
    t = time.perf_counter()
    plan = planner.plan(pr)
    return Simulator(pr).plan_makespan(plan), time.perf_counter() - t, dict(plan.info)


def bench_problem(pr: Problem, label: str, oracle: OracleCache | None, rl_policy, rl_search, split: str,
                  known: dict | None = None) -> dict:
    """One instance: every ratio to the best plan known. ``known`` (a suite label) may
    carry a best-known makespan and the oracle's bound instead of the oracle cache."""
    row: dict = {"model": label, "platform": pr.platform.name, "split": split, "ops": pr.num_ops,
                 "profiles": pr.profiles.source, "cost_model": cost_model_of(pr)}
    row["policy_us"], row["policy_time_s"], _ = timed(rl_policy, pr)
    row["rl_us"], row["rl_time_s"], info = timed(rl_search, pr)
    row["rl_winner"] = info.get("winner")
    for m in HEURISTICS:
        try:
            row[f"{m}_us"], _, _ = timed(make_planner(m), pr)
        except InfeasiblePlanError:
            row[f"{m}_us"] = math.inf
    row["heuristic_us"] = min(row[f"{m}_us"] for m in HEURISTICS)
    row["heuristic_method"] = min(HEURISTICS, key=lambda m: row[f"{m}_us"])
    if known is not None:
        row["oracle_us"], row["oracle_proven"] = known.get("oracle_us"), bool(known.get("proven_optimal"))
        row["label_us"] = known.get("best_known_us")
    elif oracle is not None:
        o = oracle.get(pr)
        row["oracle_us"], row["oracle_time_s"], row["oracle_proven"] = o["makespan_us"], o["time_s"], o["proven_optimal"]
    else:
        row["oracle_us"], row["oracle_proven"] = None, False
    found = [row["policy_us"], row["rl_us"], row["heuristic_us"]]
    found += [x for x in (row["oracle_us"], row.get("label_us")) if x is not None]
    row["best_known_us"] = min(found)
    # the oracle must never be beaten; if a plan beats a proven oracle (e.g. a label
    # from an older cost model) the row is flagged
    row["oracle_beaten"] = bool(row["oracle_proven"] and row["best_known_us"] < row["oracle_us"] * (1 - 1e-9))
    for k in ("policy", "rl", "heuristic", *HEURISTICS):
        row[f"{k}_ratio"] = row[f"{k}_us"] / row["best_known_us"]
    row["policy_vs_portfolio"] = compare(row["policy_us"], row["heuristic_us"])
    print(f"  {label:16s} {pr.platform.name:15s} policy {row['policy_ratio']:.4f}  rl {row['rl_ratio']:.4f} "
          f"(winner {row['rl_winner']})  heuristics {row['heuristic_ratio']:.4f} ({row['heuristic_method']})  "
          f"[{row['policy_vs_portfolio']}; best known {row['best_known_us']:.0f} us"
          f"{' proven' if row['oracle_proven'] else ''}{', ORACLE BEATEN' if row['oracle_beaten'] else ''}; "
          f"rl {row['rl_time_s']:.2f}s]", flush=True)
    return row


def compare(a: float, b: float) -> str:
    """``win`` if ``a`` is shorter than ``b`` (beyond :data:`TIE`), ``loss`` if longer, else ``tie``."""
    if a < b * (1 - TIE):
        return "win"
    return "loss" if a > b * (1 + TIE) else "tie"


def geomean(xs: list[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else math.nan


def summarise(rows: list[dict]) -> dict:
    """Geometric means, worst cases and the policy's wins / ties / losses against the
    heuristic portfolio, for ``rows``."""
    out: dict = {"instances": len(rows)}
    for k in ("policy", "rl", "heuristic"):
        ratios = [r[f"{k}_ratio"] for r in rows]
        worst = max(rows, key=lambda r: r[f"{k}_ratio"]) if rows else None
        out[f"{k}_geomean"] = geomean(ratios)
        out[f"{k}_worst"] = worst[f"{k}_ratio"] if worst else math.nan
        out[f"{k}_worst_instance"] = f"{worst['model']}@{worst['platform']}" if worst else None
    for verdict, key in (("win", "policy_wins"), ("tie", "policy_ties"), ("loss", "policy_losses")):
        out[key] = sum(r["policy_vs_portfolio"] == verdict for r in rows)
    differ = out["policy_wins"] + out["policy_losses"]
    out["policy_win_share_where_different"] = out["policy_wins"] / differ if differ else math.nan
    winners: dict[str, int] = {}
    for r in rows:
        winners[r["rl_winner"]] = winners.get(r["rl_winner"], 0) + 1
    out["rl_winners"] = winners
    out["cost_models"] = sorted({r["cost_model"] for r in rows})
    out["profiles"] = sorted({r["profiles"] for r in rows})
    return out


def print_summary(name: str, s: dict) -> None:
    if not s["instances"]:
        return
    print(f"{name}: {s['instances']} instances ({', '.join(s['cost_models'])} cost model; profiles {', '.join(s['profiles'])})")
    for k, what in (("policy", "policy alone (greedy)"), ("rl", "plan --method rl (search)"), ("heuristic", "best heuristic")):
        print(f"  {what:28s} geomean {s[f'{k}_geomean']:.4f}  worst {s[f'{k}_worst']:.4f} ({s[f'{k}_worst_instance']})")
    print(f"  policy alone vs heuristic portfolio: {s['policy_wins']} wins / {s['policy_ties']} ties / "
          f"{s['policy_losses']} losses; rl winners {s['rl_winners']}")


def pytorch_problems(platform: str) -> list[tuple[str, Problem]]:
    import tempfile

    import torch
    from models import Attention, InvertedResidual, _double_conv, export
    from torch import nn

    class MobileNetV2(nn.Module):
        """torchvision's MobileNetV2 (width 1.0) layer configuration."""

        def __init__(self) -> None:
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
            cin = 32
            for t, c, n, s in cfg:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(1280, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x).mean(dim=(2, 3)))

    class Transformer(nn.Module):
        """Six pre-norm encoder layers, dim 256, 8 explicit heads, 128 tokens."""

        def __init__(self, dim: int = 256, heads: int = 8, layers: int = 6):
            super().__init__()
            self.layers = nn.ModuleList(nn.ModuleDict({
                "ln1": nn.LayerNorm(dim), "att": Attention(dim, heads), "ln2": nn.LayerNorm(dim),
                "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
            }) for _ in range(layers))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = x + layer["att"](layer["ln1"](x))
                x = x + layer["mlp"](layer["ln2"](x))
            return x

    class UNet(nn.Module):
        """Three levels (32-256 channels) on 128x128, ConvTranspose up-sampling, skip Concats."""

        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = _double_conv(3, 32), _double_conv(32, 64), _double_conv(64, 128)
            self.mid = _double_conv(128, 256)
            self.u3, self.d3 = nn.ConvTranspose2d(256, 128, 2, 2), _double_conv(256, 128)
            self.u2, self.d2 = nn.ConvTranspose2d(128, 64, 2, 2), _double_conv(128, 64)
            self.u1, self.d1 = nn.ConvTranspose2d(64, 32, 2, 2), _double_conv(64, 32)
            self.head = nn.Conv2d(32, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = nn.functional.max_pool2d
            e1 = self.e1(x)
            e2 = self.e2(p(e1, 2))
            e3 = self.e3(p(e2, 2))
            m = self.mid(p(e3, 2))
            d3 = self.d3(torch.cat([self.u3(m), e3], 1))
            d2 = self.d2(torch.cat([self.u2(d3), e2], 1))
            d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
            return self.head(d1)

    torch.manual_seed(0)
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    for name, module, example in (
        ("mobilenetv2", MobileNetV2(), torch.randn(1, 3, 224, 224)),
        ("transformer", Transformer(), torch.randn(1, 128, 256)),
        ("unet", UNet(), torch.randn(1, 3, 128, 128)),
    ):
        path = export(module, example, tmp / f"{name}.onnx")
        pr = load_problem(ProblemSpec(model=str(path), platform=platform, profiles="measure", progress=False))
        out.append((name, pr))
    return out


def speed(rl_search) -> list[dict]:
    from partitiontuner.training.corpus import fit_cpu_model, modelled_problem

    rows = []
    pr = load_problem(ProblemSpec(model="resnet50", profiles="fixture", progress=False))
    _, t, _ = timed(rl_search, pr)
    rows.append({"case": "resnet50 plan --method rl", "ops": pr.num_ops, "time_s": t, "target_s": 2.0})
    from partitiontuner import synthetic
    from partitiontuner.platform import load_platform

    rng = np.random.default_rng(0)
    g = synthetic.random_graph(rng, 10_000)
    big = modelled_problem(g, load_platform("cpu-npu"), fit_cpu_model())
    _, t, _ = timed(rl_search, big)
    rows.append({"case": "10,000-op generated graph plan --method rl", "ops": big.num_ops, "time_s": t, "target_s": 30.0})
    for r in rows:
        print(f"  {r['case']}: {r['time_s']:.2f}s (target <= {r['target_s']:.0f}s)", flush=True)
    return rows


def markdown(rows: list[dict], summaries: dict[str, dict], speed_rows: list[dict], meta: dict) -> str:
    lines = [f"Ratios to the best plan known (the oracle's where proven, time limit {meta['oracle_time_limit_s']:.0f} s; "
             "else the best of every plan in the row). `policy` = greedy decode alone; `rl` = default "
             "`plan --method rl` (policy-guided search); `heuristics` = best of "
             f"{', '.join(HEURISTICS)}. Checkpoint `{meta['checkpoint']}`.", "",
             "| suite | instances | cost model | profiles | policy geomean / worst | rl geomean / worst | "
             "heuristics geomean / worst | policy vs heuristics W/T/L | rl winners |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        if not s["instances"]:
            continue
        lines.append(f"| {name} | {s['instances']} | {', '.join(s['cost_models'])} | {', '.join(s['profiles'])} | "
                     f"{s['policy_geomean']:.4f} / {s['policy_worst']:.4f} | {s['rl_geomean']:.4f} / {s['rl_worst']:.4f} | "
                     f"{s['heuristic_geomean']:.4f} / {s['heuristic_worst']:.4f} | "
                     f"{s['policy_wins']}/{s['policy_ties']}/{s['policy_losses']} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(s["rl_winners"].items())) + " |")
    lines += ["", "| model | platform | split | ops | policy | rl (winner) | heuristics (best) | best known us | rl time s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['platform']} | {r['split']} | {r['ops']} | {r['policy_ratio']:.4f} | "
                     f"{r['rl_ratio']:.4f} ({r['rl_winner']}) | {r['heuristic_ratio']:.4f} ({r['heuristic_method']}) | "
                     f"{r['best_known_us']:.0f}{' (proven)' if r['oracle_proven'] else ''}"
                     f"{' ORACLE BEATEN' if r['oracle_beaten'] else ''} | {r['rl_time_s']:.2f} |")
    if speed_rows:
        lines += ["", "| speed case | ops | time s | target s |", "|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['ops']} | {r['time_s']:.2f} | {r['target_s']:.0f} |" for r in speed_rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped one)")
    p.add_argument("--budget-s", type=float, default=None, help="rl search budget (default: the planner's default)")
    p.add_argument("--suites", nargs="+", default=["zoo", "zero-shot", "suite", "pytorch", "speed"],
                   choices=["zoo", "zero-shot", "suite", "pytorch", "speed"])
    p.add_argument("--platform", default="cpu-npu", help="platform of the zoo and pytorch suites")
    p.add_argument("--models", nargs="+", default=list(ZOO), help="zoo models")
    p.add_argument("--suite-split", default="test", choices=["train", "validation", "test"], help="split of the suite")
    p.add_argument("--suite-limit", type=int, default=None, help="only the first N instances of the suite split")
    p.add_argument("--suite-labels", default=str(ROOT / "results" / "suite_labels.json"))
    p.add_argument("--oracle-time-limit", type=float, default=600.0)
    p.add_argument("--oracle-cache", default=str(ROOT / "results" / "oracle_cache.json"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench_rl"), help="writes OUT.json and OUT.md")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="solve the missing oracle labels as Ray tasks: a local Ray instance, or the cluster at ADDRESS")
    args = p.parse_args(argv)

    rl_policy = make_planner("rl", checkpoint=args.checkpoint, budget_s=0)
    rl_search = make_planner("rl", checkpoint=args.checkpoint, budget_s=args.budget_s)
    oracle = OracleCache(Path(args.oracle_cache), args.oracle_time_limit)
    suites: list[tuple[str, list[tuple[str, Problem, str, dict | None]]]] = []  # (name, [(label, problem, split, known)])
    if "zoo" in args.suites:
        suites.append((f"zoo on {args.platform}", [
            (m, load_problem(ProblemSpec(model=m, platform=args.platform, profiles="fixture", progress=False)),
             "unseen" if m in UNSEEN_MODELS else "train", None) for m in args.models]))
    if "zero-shot" in args.suites:
        for plat in ("cpu-2npu", "big-little-npu"):
            suites.append((f"zero-shot on {plat}", [
                (m, load_problem(ProblemSpec(model=m, platform=plat, profiles="fixture", progress=False)), "zero-shot", None)
                for m in args.models]))
    if "suite" in args.suites:
        labels = SuiteLabels(Path(args.suite_labels))
        insts = build_suite(split=args.suite_split, limit=args.suite_limit)
        suites.append((f"suite {args.suite_split} split", [
            (inst.name, inst.problem(), args.suite_split, labels.get(inst)) for inst in insts]))
    if "pytorch" in args.suites:
        suites.append((f"PyTorch exports on {args.platform} (measured profiles)",
                       [(name, pr, "pytorch", None) for name, pr in pytorch_problems(args.platform)]))
    if args.ray is not None:
        oracle.fill([pr for _, problems in suites for _, pr, _, known in problems if known is None], args.ray)
    rows: list[dict] = []
    summaries: dict[str, dict] = {}
    for name, problems in suites:
        print(f"{name}:")
        mine = [bench_problem(pr, label, oracle if known is None else None, rl_policy, rl_search, split, known)
                for label, pr, split, known in problems]
        rows += mine
        summaries[name] = summarise(mine)
    summaries["all"] = summarise(rows)
    for name, s in summaries.items():
        print_summary(name, s)
    speed_rows = speed(rl_search) if "speed" in args.suites else []
    out = Path(args.out)
    meta = {"checkpoint": str(rl_search.checkpoint), "budget_s": args.budget_s, "suites": args.suites,
            "oracle_time_limit_s": args.oracle_time_limit}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps({"meta": meta, "summary": summaries, "rows": rows,
                                                            "speed": speed_rows}, indent=1, default=str))
    write_text_atomic(out.with_suffix(".md"), markdown(rows, summaries, speed_rows, meta))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
