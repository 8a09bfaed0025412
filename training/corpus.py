"""The training corpus: zoo models (training split) plus generated DAGs, on the
default platform and on randomised platforms.

* **Zoo**: :data:`partitiontuner.zoo.TRAIN_MODELS` with the committed fixture profiles
  (1-thread ORT measurements; NPUs by the emulator). ``googlenet``, ``resnext50`` and
  ``densenet121`` are never used.
* **Generated DAGs**: real ONNX graphs in the nine families of
  :mod:`partitiontuner.training.generators` (:data:`FAMILIES`), from 20 to 500 ops.
* **Their profiles**: NPUs by the emulator (as for any model); the CPU by the fitted
  cost model of :mod:`partitiontuner.profiling.cpu_model` (:func:`modelled_problem`).
* **Platforms**: ``cpu-npu``, and random variants (:func:`random_training_platform`):
  1-2 NPUs of random array size, clock, bandwidth, buffers, dispatch overhead and op
  support, an optional little CPU core, random links; 2 to 4 PUs. The ``cpu-2npu`` and
  ``big-little-npu`` presets themselves are never trained on (they test zero-shot).

Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partitiontuner.errors import ConfigError, PartitionTunerError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform, load_platform, platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.profiling.cpu_model import CpuCostModel, fit_cpu_model, modelled_profiles
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.training.generators import FAMILIES, generate_graph, generate_model
from partitiontuner.zoo import TRAIN_MODELS, UNSEEN_MODELS, load_model

__all__ = ["FAMILIES", "NPU_OPS", "CorpusEntry", "build_corpus", "fit_cpu_model", "generate_graph", "generate_model",
           "modelled_problem", "random_training_platform"]

NPU_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "LeakyRelu", "Add", "Sum", "Mul", "Sub", "BatchNormalization",
           "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Reshape", "Flatten")


def modelled_problem(graph: OpGraph, platform: Platform, cpu_model: CpuCostModel | None = None) -> Problem:
    """A problem whose CPU PUs cost by ``cpu_model`` (the fitted one by default) and
    NPUs by the emulator (:func:`partitiontuner.profiling.cpu_model.modelled_profiles`)."""
    return Problem(graph, platform, modelled_profiles(graph, platform, cpu_model))


# ---------------------------------------------------------------------------------
# random platforms


def random_training_platform(rng: np.random.Generator, name: str) -> Platform:
    """A plausible training platform: a CPU host, 1-2 NPUs and sometimes a little core
    (2-4 PUs), every parameter (array size, clock, bandwidth, buffers, dispatch overhead,
    op support, links) drawn from realistic ranges.

    Not :func:`partitiontuner.synthetic.random_platform`, which makes toy platforms
    of a given size for property tests.
    """
    pus: list[dict] = [{"name": "cpu", "kind": "cpu", "threads": 1, "dispatch_overhead_us": float(rng.uniform(3, 15))}]
    if rng.random() < 0.35:
        pus.append({"name": "little", "kind": "cpu", "threads": 1, "speed_factor": float(rng.uniform(0.25, 0.6)),
                    "dispatch_overhead_us": float(rng.uniform(5, 20))})
    for k in range(1 if rng.random() < 0.6 else 2):
        size = int(rng.choice([16, 32, 32, 64]))
        supports = [op for op in NPU_OPS if op in ("Conv", "Relu") or rng.random() > 0.12]
        pus.append({
            "name": f"npu{k}", "kind": "npu", "dispatch_overhead_us": float(rng.uniform(8, 60)), "max_conv_groups": 1,
            "supports": supports,
            "npu": {"rows": size, "cols": size, "clock_mhz": float(rng.uniform(200, 1000)),
                    "dram_bandwidth_gbps": float(rng.uniform(4, 25.6)),
                    "input_buffer_kib": float(rng.choice([32, 64, 128, 256])),
                    "weight_buffer_kib": float(rng.choice([128, 256, 512])),
                    "acc_buffer_kib": float(rng.choice([64, 128, 256])),
                    "bytes_per_element": 1, "acc_bytes_per_element": 4,
                    "vector_lanes": int(rng.choice([16, 32, 64]))},
        })
    names = [p["name"] for p in pus]
    links = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            links.append({"between": [a, b], "latency_us": float(rng.uniform(2, 40)), "bandwidth_gbps": float(rng.uniform(1, 20))})
    return platform_from_dict({"name": name, "description": "random training platform", "pus": pus, "links": links})


# ---------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class CorpusEntry:
    problem: Problem
    group: str  # "zoo" (training split on cpu-npu), "zoo-variant", "generated"
    description: str


def build_corpus(
    seed: int,
    *,
    generated: int = 96,
    min_ops: int = 20,
    max_ops: int = 500,
    zoo_variants: int = 2,
    variant_fraction: float = 0.5,
    zoo_models: Sequence[str] = TRAIN_MODELS,
    progress: bool = False,
) -> list[CorpusEntry]:
    """The training problems (deterministic in ``seed``).

    Args:
        seed: everything random derives from it.
        generated: number of generated graphs.
        min_ops, max_ops: size range of generated graphs (log-uniform).
        zoo_variants: random platforms each zoo model is also put on.
        variant_fraction: share of generated graphs on a random platform (the rest on cpu-npu).
        zoo_models: zoo models to include (never the unseen ones).
        progress: print a line per problem.
    """
    bad = set(zoo_models) & set(UNSEEN_MODELS)
    if bad:
        raise ConfigError(f"{sorted(bad)[0]!r} is an unseen model; it must stay out of the training corpus")
    rng = np.random.default_rng(seed)
    default = load_platform("cpu-npu")
    out: list[CorpusEntry] = []
    for name in zoo_models:
        g = load_model(name)
        try:
            out.append(CorpusEntry(Problem(g, default, fixture_profiles(g, default)), "zoo", f"{name} on cpu-npu"))
            for k in range(zoo_variants):
                plat = random_training_platform(rng, f"random-{name}-{k}")
                out.append(CorpusEntry(Problem(g, plat, fixture_profiles(g, plat)), "zoo-variant", f"{name} on {plat.name}"))
        except PartitionTunerError as exc:  # a model without fixtures is skipped, not fatal
            if progress:
                print(f"  skipping {name}: {exc}")
    cpu_model = fit_cpu_model()
    lo, hi = math.log(min_ops), math.log(max_ops)
    made = 0
    attempt = 0
    while made < generated:
        attempt += 1
        family = FAMILIES[made % len(FAMILIES)]
        target = int(round(math.exp(rng.uniform(lo, hi))))
        name = f"gen-{family}-{made}"
        try:
            g = generate_graph(rng, family, target, name)
        except PartitionTunerError:
            if attempt > 10 * generated:
                raise
            continue
        if not min_ops <= g.num_ops <= max_ops:
            continue
        plat = random_training_platform(rng, f"random-gen-{made}") if rng.random() < variant_fraction else default
        out.append(CorpusEntry(modelled_problem(g, plat, cpu_model), "generated", f"{name} ({g.num_ops} ops) on {plat.name}"))
        if progress:
            print(f"  {out[-1].description}")
        made += 1
    return out
