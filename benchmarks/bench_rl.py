"""Benchmark of the RL planner against the oracle and the baselines (issue 7's targets).

Per model and platform: makespans of rl greedy, rl best-of-K, the oracle (exact; its
proof status is reported), greedy, npu-first and partitiontuner; each as a ratio to the
oracle; planning times. Suites:

* ``zoo``: the eleven built-in models on a platform (default ``cpu-npu``; fixture
  profiles), split into the training models and the unseen ones;
* ``zero-shot``: the zoo on ``cpu-2npu`` and ``big-little-npu`` (never trained on);
* ``pytorch``: models of unseen families exported from PyTorch (MobileNetV2, a
  transformer with explicit attention heads, a U-Net), profiled on this machine;
* ``speed``: greedy planning time of ResNet-50 and of a 10,000-op generated graph.

Oracle results are cached in a JSON file (``--oracle-cache``), since the exact search
takes minutes on the larger graphs; a cached entry is used only for the same model
hash, platform and profile numbers. With ``--ray [ADDRESS]`` the labels missing from
the cache are solved first, one Ray task per problem (each asking for the oracle's
worker threads), on a local Ray instance or the cluster at ADDRESS; the problems
travel with their profiles, so the ``pytorch`` suite's are measured here, once.

Usage::

    python benchmarks/bench_rl.py                         # all suites, shipped policy
    python benchmarks/bench_rl.py --suites zoo --checkpoint runs/ppo/policy-best.pt
    python benchmarks/bench_rl.py --ray                   # oracle labels as Ray tasks
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))  # tests/models.py: the PyTorch modules

from partitiontuner.agents.registry import make_planner  # noqa: E402
from partitiontuner.atomic import write_text_atomic  # noqa: E402
from partitiontuner.distributed import run_jobs  # noqa: E402
from partitiontuner.problem import Problem  # noqa: E402
from partitiontuner.simulate import Simulator  # noqa: E402
from partitiontuner.workflow import ProblemSpec, load_problem  # noqa: E402
from partitiontuner.zoo import UNSEEN_MODELS, ZOO  # noqa: E402

BASELINES = ("greedy", "npu-first", "partitiontuner")


def problem_key(pr: Problem) -> str:
    h = hashlib.sha256()
    h.update(pr.graph.content_hash.encode())
    h.update(pr.platform.name.encode())
    h.update(np.ascontiguousarray(np.round(pr.profiles.op_latency_us, 3)).tobytes())
    return h.hexdigest()[:16]


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


def timed(planner, pr: Problem) -> tuple[float, float]:
    t = time.perf_counter()
    plan = planner.plan(pr)
    return Simulator(pr).plan_makespan(plan), time.perf_counter() - t


def bench_problem(pr: Problem, label: str, oracle: OracleCache, rl_greedy, rl_best, split: str) -> dict:
    row: dict = {"model": label, "platform": pr.platform.name, "split": split, "ops": pr.num_ops}
    row["rl_us"], row["rl_time_s"] = timed(rl_greedy, pr)
    row["rl_best_us"], row["rl_best_time_s"] = timed(rl_best, pr)
    for m in BASELINES:
        row[f"{m}_us"], _ = timed(make_planner(m), pr)
    o = oracle.get(pr)
    row["oracle_us"], row["oracle_time_s"], row["oracle_proven"] = o["makespan_us"], o["time_s"], o["proven_optimal"]
    # the oracle must never be beaten; if a plan beats it (e.g. an oracle written for an
    # older cost model), ratios are reported against the best plan known and it is flagged
    row["best_known_us"] = min(row["oracle_us"], row["rl_us"], row["rl_best_us"], *(row[f"{m}_us"] for m in BASELINES))
    row["oracle_beaten"] = row["best_known_us"] < row["oracle_us"] * (1 - 1e-9)
    for k in ("rl", "rl_best", *BASELINES):
        row[f"{k}_ratio"] = row[f"{k}_us"] / row["best_known_us"]
    row["rl_not_worse_than_baselines"] = all(row["rl_us"] <= row[f"{m}_us"] * (1 + 1e-9) for m in BASELINES)
    print(f"  {label:14s} {pr.platform.name:15s} rl {row['rl_ratio']:.4f}  best-of-K {row['rl_best_ratio']:.4f}  "
          + "  ".join(f"{m} {row[f'{m}_ratio']:.4f}" for m in BASELINES)
          + f"  (oracle {row['oracle_us']:.0f} us{'' if row['oracle_proven'] else ' unproven'}"
          + (f", BEATEN: best known {row['best_known_us']:.0f} us" if row["oracle_beaten"] else "")
          + f"; rl {row['rl_time_s']:.2f}s)",
          flush=True)
    return row


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


def speed(rl_greedy) -> list[dict]:
    from partitiontuner.training.corpus import fit_cpu_model, modelled_problem

    rows = []
    pr = load_problem(ProblemSpec(model="resnet50", profiles="fixture", progress=False))
    _, t = timed(rl_greedy, pr)
    rows.append({"case": "resnet50 greedy", "ops": pr.num_ops, "time_s": t, "target_s": 1.0})
    from partitiontuner import synthetic
    from partitiontuner.platform import load_platform

    rng = np.random.default_rng(0)
    g = synthetic.random_graph(rng, 10_000)
    big = modelled_problem(g, load_platform("cpu-npu"), fit_cpu_model())
    _, t = timed(rl_greedy, big)
    rows.append({"case": "10,000-op generated graph greedy", "ops": big.num_ops, "time_s": t, "target_s": 10.0})
    for r in rows:
        print(f"  {r['case']}: {r['time_s']:.2f}s (target < {r['target_s']:.0f}s)", flush=True)
    return rows


def markdown(rows: list[dict], speed_rows: list[dict], k: int, oracle_limit_s: float) -> str:
    lines = [f"Ratios to the oracle (time limit {oracle_limit_s:.0f} s per problem; `proven` says whether it proved "
             "optimality). Where some plan beat an unproven oracle plan, ratios are to the best plan known "
             "(marked *).", "",
             f"| model | platform | split | ops | rl greedy | rl best-of-{k} | greedy | npu-first | partitiontuner | oracle us (proven) | rl time s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['platform']} | {r['split']} | {r['ops']} | {r['rl_ratio']:.4f} | {r['rl_best_ratio']:.4f} | "
                     f"{r['greedy_ratio']:.4f} | {r['npu-first_ratio']:.4f} | {r['partitiontuner_ratio']:.4f} | "
                     f"{r['oracle_us']:.0f} ({'yes' if r['oracle_proven'] else 'no'}){' *' if r['oracle_beaten'] else ''} | "
                     f"{r['rl_time_s']:.2f} |")
    if speed_rows:
        lines += ["", "| speed case | ops | time s | target s |", "|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['ops']} | {r['time_s']:.2f} | {r['target_s']:.0f} |" for r in speed_rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped one)")
    p.add_argument("--samples", type=int, default=64, help="K of best-of-K (default 64)")
    p.add_argument("--suites", nargs="+", default=["zoo", "zero-shot", "pytorch", "speed"],
                   choices=["zoo", "zero-shot", "pytorch", "speed"])
    p.add_argument("--platform", default="cpu-npu", help="platform of the zoo suite")
    p.add_argument("--models", nargs="+", default=list(ZOO), help="zoo models")
    p.add_argument("--oracle-time-limit", type=float, default=600.0)
    p.add_argument("--oracle-cache", default=str(ROOT / "results" / "oracle_cache.json"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench_rl"), help="writes OUT.json and OUT.md")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="solve the missing oracle labels as Ray tasks: a local Ray instance, or the cluster at ADDRESS")
    args = p.parse_args(argv)

    rl_greedy = make_planner("rl", checkpoint=args.checkpoint, samples=1)
    rl_best = make_planner("rl", checkpoint=args.checkpoint, samples=args.samples, seed=0)
    oracle = OracleCache(Path(args.oracle_cache), args.oracle_time_limit)
    suites: list[tuple[str, list[tuple[str, Problem, str]]]] = []  # (heading, [(label, problem, split)])
    if "zoo" in args.suites:
        suites.append((f"zoo on {args.platform}:", [
            (m, load_problem(ProblemSpec(model=m, platform=args.platform, profiles="fixture", progress=False)),
             "unseen" if m in UNSEEN_MODELS else "train") for m in args.models]))
    if "zero-shot" in args.suites:
        for plat in ("cpu-2npu", "big-little-npu"):
            suites.append((f"zero-shot on {plat}:", [
                (m, load_problem(ProblemSpec(model=m, platform=plat, profiles="fixture", progress=False)), "zero-shot")
                for m in args.models]))
    if "pytorch" in args.suites:
        suites.append((f"PyTorch exports on {args.platform} (measured profiles):",
                       [(name, pr, "pytorch") for name, pr in pytorch_problems(args.platform)]))
    if args.ray is not None:
        oracle.fill([pr for _, problems in suites for _, pr, _ in problems], args.ray)
    rows: list[dict] = []
    for heading, problems in suites:
        print(heading)
        for label, pr, split in problems:
            rows.append(bench_problem(pr, label, oracle, rl_greedy, rl_best, split))
    speed_rows = speed(rl_greedy) if "speed" in args.suites else []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint": str(rl_greedy.checkpoint), "samples": args.samples, "suites": args.suites,
            "oracle_time_limit_s": args.oracle_time_limit}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "speed": speed_rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, speed_rows, args.samples, args.oracle_time_limit))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
