"""From names on a command line to a :class:`Problem`: model, platform, profiles,
constraints. Shared by the CLI, the evaluator and the RL environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from partitiontuner.constraints import Constraints
from partitiontuner.errors import ConfigError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import Platform, load_platform
from partitiontuner.problem import Problem
from partitiontuner.profiling.profiles import Profiles
from partitiontuner.zoo import load_model

#: where profiles come from: measured (and cached) on this machine, the committed
#: fixtures, or a profile JSON file
PROFILE_SOURCES = ("measure", "fixture")


@dataclass(frozen=True)
class ProblemSpec:
    """Everything that defines a problem, as a user states it.

    Attributes:
        model: zoo name or ``.onnx`` path.
        platform: preset name or YAML path.
        profiles: ``measure`` (this machine, cached), ``fixture`` (committed, zoo only)
            or a path to a profile JSON file.
        input_shapes: shapes for dynamic graph inputs.
        batch_size: first dimension of every graph input.
        threads: intra-op threads of every CPU PU.
        refresh: re-measure even when the cache has the numbers.
        constraints: pins, forbids and partition limits.
    """

    model: str = "squeezenet"
    platform: str = "cpu-npu"
    profiles: str = "measure"
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    batch_size: int | None = None
    threads: int | None = None
    refresh: bool = False
    constraints: Constraints = field(default_factory=Constraints)
    progress: bool = True


def load_problem(spec: ProblemSpec) -> Problem:
    graph = load_model(spec.model, input_shapes=spec.input_shapes, batch_size=spec.batch_size)
    platform = load_platform(spec.platform)
    if spec.threads is not None:
        platform = platform.with_cpu_threads(spec.threads)
    spec.constraints.check(graph, platform)  # a typo in a pattern fails before profiling
    profiles = get_profiles(graph, platform, spec)
    return Problem(graph, platform, profiles, spec.constraints)


def get_profiles(graph: OpGraph, platform: Platform, spec: ProblemSpec) -> Profiles:
    if spec.profiles == "measure":
        from partitiontuner.profiling.build import build_profiles

        return build_profiles(graph, platform, refresh=spec.refresh, progress=spec.progress)
    if spec.profiles == "fixture":
        from partitiontuner.profiling.fixtures import fixture_profiles

        return fixture_profiles(graph, platform)
    path = Path(spec.profiles)
    if path.suffix == ".json" or path.exists():
        profiles = Profiles.load_json(path)
        profiles.check_matches(graph, platform)
        return profiles
    raise ConfigError(f"unknown profile source {spec.profiles!r}: use measure, fixture or a profile .json file")
