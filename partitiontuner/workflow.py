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
#: fixtures, or else files measured elsewhere
PROFILE_SOURCES = ("measure", "fixture")
#: which cost-model parameters to use: this host's calibration when there is one and
#: profiles are measured (``auto``), the calibration or an error (``calibrated``), or
#: the platform's own numbers (``uncalibrated``)
COST_MODELS = ("auto", "calibrated", "uncalibrated")


@dataclass(frozen=True)
class ProblemSpec:
    """Everything that defines a problem, as a user states it.

    Attributes:
        model: zoo name or ``.onnx`` path.
        platform: preset name or YAML path.
        profiles: ``measure`` (this machine, cached), ``fixture`` (committed, zoo only)
            or files measured elsewhere (see :mod:`partitiontuner.profiling.importers`).
        input_shapes: shapes for dynamic graph inputs.
        batch_size: first dimension of every graph input.
        threads: intra-op threads of every CPU PU.
        refresh: re-measure even when the cache has the numbers.
        fill: complete imported profile files: ``emulator`` or ``measure``.
        constraints: pins, forbids and partition limits.
        cost_model: one of :data:`COST_MODELS`. Calibrations are fitted on top of
            measured profiles of this host, so ``auto`` applies one only with
            ``profiles="measure"``.
    """

    model: str = "squeezenet"
    platform: str = "cpu-npu"
    profiles: str = "measure"
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    batch_size: int | None = None
    threads: int | None = None
    refresh: bool = False
    fill: str | None = None
    constraints: Constraints = field(default_factory=Constraints)
    progress: bool = True
    cost_model: str = "auto"


def load_problem(spec: ProblemSpec) -> Problem:
    graph = load_model(spec.model, input_shapes=spec.input_shapes, batch_size=spec.batch_size)
    platform = load_platform(spec.platform)
    if spec.threads is not None:
        platform = platform.with_cpu_threads(spec.threads)
    spec.constraints.check(graph, platform)  # a typo in a pattern fails before profiling
    profiles = get_profiles(graph, platform, spec)
    platform, calibration = _calibration(platform, spec)
    return Problem(graph, platform, profiles, spec.constraints, calibration=calibration)


def _calibration(platform: Platform, spec: ProblemSpec):
    """The platform with this host's calibration applied (and the calibration), or as
    given (and ``None``), as ``spec.cost_model`` asks."""
    if spec.cost_model not in COST_MODELS:
        raise ConfigError(f"unknown cost model {spec.cost_model!r}: use {', '.join(COST_MODELS)}")
    if spec.cost_model == "uncalibrated" or (spec.cost_model == "auto" and spec.profiles != "measure"):
        return platform, None
    from partitiontuner.calibrate import calibrated_platform

    calibrated, applied = calibrated_platform(platform)
    if applied is None and spec.cost_model == "calibrated":
        raise ConfigError(f"no usable calibration of platform {platform.name!r} on this host: "
                          f"run `partitiontuner calibrate --platform {spec.platform}` first")
    return calibrated, applied


def get_profiles(graph: OpGraph, platform: Platform, spec: ProblemSpec) -> Profiles:
    if spec.fill and spec.profiles in PROFILE_SOURCES:
        raise ConfigError(f"--fill completes imported profile files, not --profiles {spec.profiles}")
    if spec.profiles == "measure":
        from partitiontuner.profiling.build import build_profiles

        return build_profiles(graph, platform, refresh=spec.refresh, progress=spec.progress)
    if spec.profiles == "fixture":
        from partitiontuner.profiling.fixtures import fixture_profiles

        return fixture_profiles(graph, platform)
    from partitiontuner.profiling.importers import import_profiles

    return import_profiles(spec.profiles, graph, platform, fill=spec.fill, refresh=spec.refresh, progress=spec.progress)


# ---------------------------------------------------------------------------------
# which platform a saved plan runs on


@dataclass(frozen=True)
class PlatformChoice:
    """The platform a command on a saved plan uses, and why.

    Attributes:
        platform: preset name or YAML path to load.
        source: ``plan`` (the platform saved in the plan file), ``option``
            (``--platform``) or ``default`` (neither said anything).
        note: one line for stderr when the user should hear about the choice.
    """

    platform: str
    source: str
    note: str | None = None


def saved_platform(plan_path: str | Path) -> str | None:
    """The ``platform`` a plan file names, or ``None`` if it cannot be read (loading the
    plan later reports why)."""
    from partitiontuner.errors import PartitionTunerError
    from partitiontuner.safe_io import parse_json, parse_yaml, read_text

    p = Path(plan_path)
    parse = parse_yaml if p.suffix in (".yaml", ".yml") else parse_json
    try:  # a FIFO or /dev/zero must not hang here: safe_io opens regular files only
        data = parse(read_text(p, what="plan file"), where=str(p))
    except PartitionTunerError:
        return None
    name = data.get("platform") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def platform_for_plan(option: str | None, plan_path: str | Path, default: str = "cpu-npu") -> PlatformChoice:
    """Use the plan's own platform unless ``--platform`` names one.

    Raises:
        ConfigError: the plan names a platform that is not a preset and no
            ``--platform`` says where its YAML file is.
    """
    from partitiontuner.platform import preset_names

    saved = saved_platform(plan_path)
    if option is not None:
        if saved is not None:
            chosen = load_platform(option).name
            if chosen != saved:
                return PlatformChoice(option, "option", f"{plan_path} was made for platform {saved!r}; "
                                                        f"using {chosen!r} as --platform says")
        return PlatformChoice(option, "option")
    if saved is None:
        return PlatformChoice(default, "default")
    if saved not in preset_names():
        raise ConfigError(f"{plan_path} was made for platform {saved!r}, which is not a preset; "
                          "give its YAML file with --platform")
    note = None if saved == default else f"using platform {saved!r} saved in {plan_path}"
    return PlatformChoice(saved, "plan", note)
