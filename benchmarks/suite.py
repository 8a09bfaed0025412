"""The benchmark suite with headroom (issue 16, item 2): deterministic by seed.

Instances are generated graphs of the nine families of
:mod:`partitiontuner.training.generators` at 50-300 ops (log-uniform) on the presets
(``cpu-npu``, ``cpu-2npu``, ``big-little-npu``) or on random platforms
(:func:`partitiontuner.training.corpus.random_training_platform`), half each. Profiles
are modelled (CPU by the fitted cost model, NPUs by the emulator), so the suite needs
no measurement and is the same on every machine. Instance ``i`` of seed ``s`` draws
everything from ``numpy.random.default_rng([s, i])``: the suite is a pure function of
the seed, and an instance does not depend on how many others are built.

Splits: the families in :data:`HELD_OUT` never enter training (a third of their
instances are validation, the rest test); the others are 70 % train, 15 % validation,
15 % test, by instance index. Checkpoints are selected on ``validation``; targets are
measured on ``test``.

Labels (``results/suite_labels.json``, written atomically after each instance): per
instance the best makespan known (the minimum over the oracle, the quick heuristics
and a local search from the best heuristic plan), the oracle's makespan, lower bound
and whether it proved optimality, with the time limit used. Labelling the whole suite
takes hours; label a slice::

    python benchmarks/suite.py list --split test
    python benchmarks/suite.py label --split test --limit 4 --time-limit 60
    python benchmarks/suite.py headroom --split test   # best heuristic / best known, geomean
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from partitiontuner.agents.local_search import LocalSearch
from partitiontuner.agents.registry import make_planner, quick_planners
from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import PartitionTunerError
from partitiontuner.platform import Platform, load_platform
from partitiontuner.problem import Problem
from partitiontuner.simulate import Simulator
from partitiontuner.training.corpus import fit_cpu_model, modelled_problem, random_training_platform
from partitiontuner.training.generators import FAMILIES, generate_graph

ROOT = Path(__file__).resolve().parent
LABELS = ROOT / "results" / "suite_labels.json"
PRESETS = ("cpu-npu", "cpu-2npu", "big-little-npu")
#: families never in the training split
HELD_OUT = ("nas", "unet")
SPLITS = ("train", "validation", "test")
MIN_OPS, MAX_OPS = 50, 300
#: instances per seed (a multiple of the nine families)
DEFAULT_SIZE = 180
#: local search from the best heuristic plan, per label, in seconds
LABEL_SEARCH_S = 5.0


@dataclass(frozen=True)
class SuiteInstance:
    """One instance: which family, size and platform, drawn from ``(seed, index)``."""

    seed: int
    index: int
    family: str
    target_ops: int
    platform: str  # a preset name, or "random-<seed>-<index>"
    split: str

    @property
    def name(self) -> str:
        return f"s{self.seed}-{self.index:03d}-{self.family}"

    def problem(self) -> Problem:
        """Graph, platform and modelled profiles (the same numbers on every machine)."""
        return _problem(self)


def split_of(family: str, index: int) -> str:
    """The split of instance ``index`` of ``family`` (module docstring)."""
    k = index // len(FAMILIES)  # how many of this family came before
    if family in HELD_OUT:
        return "validation" if k % 3 == 0 else "test"
    r = k % 20
    return "train" if r < 14 else ("validation" if r < 17 else "test")


def instance(seed: int, index: int) -> SuiteInstance:
    rng = np.random.default_rng([seed, index])
    family = FAMILIES[index % len(FAMILIES)]
    target = int(round(math.exp(rng.uniform(math.log(MIN_OPS), math.log(MAX_OPS)))))
    platform = str(rng.choice(PRESETS)) if rng.random() < 0.5 else f"random-{seed}-{index}"
    return SuiteInstance(seed, index, family, target, platform, split_of(family, index))


def build_suite(seed: int = 0, size: int = DEFAULT_SIZE, split: str | None = None, limit: int | None = None) -> list[SuiteInstance]:
    """The suite's instances (of one split if given; the first ``limit`` of them)."""
    out = [instance(seed, i) for i in range(size)]
    if split is not None:
        out = [x for x in out if x.split == split]
    return out[:limit] if limit is not None else out


def _platform(inst: SuiteInstance) -> Platform:
    if inst.platform in PRESETS:
        return load_platform(inst.platform)
    return random_training_platform(np.random.default_rng([inst.seed, inst.index, 1]), inst.platform)


@cache
def _cpu_model():
    return fit_cpu_model()


@cache
def _problem(inst: SuiteInstance) -> Problem:
    rng = np.random.default_rng([inst.seed, inst.index, 2])
    for _attempt in range(20):  # a family may fail at some draw; retry from the same stream
        try:
            g = generate_graph(rng, inst.family, inst.target_ops, inst.name)
        except PartitionTunerError:
            continue
        if MIN_OPS // 2 <= g.num_ops <= 2 * MAX_OPS:
            return modelled_problem(g, _platform(inst), _cpu_model())
    raise PartitionTunerError(f"suite instance {inst.name}: no {inst.family} graph near {inst.target_ops} ops")


def problem_key(pr: Problem) -> str:
    h = hashlib.sha256()
    h.update(pr.graph.content_hash.encode())
    h.update(pr.platform.name.encode())
    h.update(np.ascontiguousarray(np.round(pr.profiles.op_latency_us, 3)).tobytes())
    return h.hexdigest()[:16]


class SuiteLabels:
    """The label file: instance name -> label (kept only for the same problem numbers)."""

    def __init__(self, path: Path = LABELS):
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, inst: SuiteInstance) -> dict | None:
        label = self.data.get(inst.name)
        if label is None or label.get("key") != problem_key(inst.problem()):
            return None
        return label

    def put(self, inst: SuiteInstance, label: dict) -> None:
        self.data[inst.name] = label
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))


def label(inst: SuiteInstance, time_limit_s: float) -> dict:
    """Best known makespan of ``inst``: oracle, quick heuristics, local search."""
    pr = inst.problem()
    sim = Simulator(pr)
    heur = {p.name: p.plan(pr) for p in quick_planners()}
    h_ms = {m: sim.plan_makespan(p) for m, p in heur.items()}
    best_h = min(h_ms, key=h_ms.__getitem__)
    _, searched = LocalSearch(pr, sim).improve_plan(heur[best_h], time.perf_counter() + LABEL_SEARCH_S)
    t = time.perf_counter()
    oracle = make_planner("oracle", time_limit_s=time_limit_s).plan(pr)
    o_ms = sim.plan_makespan(oracle)
    return {
        "key": problem_key(pr), "family": inst.family, "ops": pr.num_ops, "platform": pr.platform.name, "split": inst.split,
        "heuristic_us": h_ms[best_h], "heuristic_method": best_h, "search_us": searched.makespan_us,
        "oracle_us": o_ms, "oracle_bound_us": float(oracle.info.get("lower_bound_us", 0.0)),
        "proven_optimal": bool(oracle.info.get("proven_optimal", False)), "oracle_time_limit_s": time_limit_s,
        "oracle_time_s": round(time.perf_counter() - t, 2),
        "best_known_us": min(o_ms, h_ms[best_h], searched.makespan_us),
    }


def headroom(labels: list[dict]) -> dict:
    """Geometric mean and worst of best heuristic / best known over ``labels``."""
    ratios = [x["heuristic_us"] / x["best_known_us"] for x in labels]
    return {"instances": len(ratios), "geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan,
            "worst": max(ratios, default=math.nan), "proven": sum(x["proven_optimal"] for x in labels)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["list", "label", "headroom"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="instances of the whole suite")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--limit", type=int, default=None, help="only the first N instances of the split")
    p.add_argument("--time-limit", type=float, default=60.0, help="oracle time limit per instance (s)")
    p.add_argument("--labels", default=str(LABELS))
    args = p.parse_args(argv)
    insts = build_suite(args.seed, args.size, args.split, args.limit)
    labels = SuiteLabels(Path(args.labels))
    if args.command == "list":
        for x in insts:
            print(f"{x.name:22s} {x.split:10s} {x.family:10s} ~{x.target_ops:3d} ops on {x.platform}")
        return 0
    if args.command == "label":
        for x in insts:
            if labels.get(x) is not None:
                continue
            lab = label(x, args.time_limit)
            labels.put(x, lab)
            print(f"{x.name}: {lab['ops']} ops on {lab['platform']}: best known {lab['best_known_us']:.1f} us "
                  f"(oracle {lab['oracle_us']:.1f}{' proven' if lab['proven_optimal'] else ''}, bound {lab['oracle_bound_us']:.1f}; "
                  f"search {lab['search_us']:.1f}; heuristic {lab['heuristic_us']:.1f} {lab['heuristic_method']})", flush=True)
    done = [lab for x in insts if (lab := labels.get(x)) is not None]
    h = headroom(done)
    print(f"headroom on {h['instances']} labelled {args.split} instances ({h['proven']} proven): best heuristic / best known "
          f"geomean {h['geomean']:.4f}, worst {h['worst']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
