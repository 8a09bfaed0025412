"""Platforms: processing units (PUs), what each can run, and the links between them.

A platform is a YAML file: shipped presets live in ``partitiontuner/presets`` and are
named by their stem (``cpu-npu``); any other path is read as a file. Every pair of PUs
needs a link (latency + bandwidth); graph inputs start, and graph outputs must end, on
the host PU (the first CPU unless ``host`` says otherwise).

Each PU also names its **runtime**, what runs its partitions for real and measures its
ops: ``onnxruntime`` (the default for a CPU) with its execution ``providers`` (default
``[CPUExecutionProvider]``), their ``provider_options``, ``threads`` intra-op threads and
optionally the ``cores`` its thread(s) are pinned to; or ``emulated`` (the default for an
NPU: the emulator's time, see ``profiling/npu_emulator.py``). The runtime is checked
against this host when the file loads (installed providers, usable cores), since
profiles measured here and runs executed here depend on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from partitiontuner.errors import ConfigError
from partitiontuner.graph import OpNode
from partitiontuner.safe_io import parse_yaml, read_text

KINDS = ("cpu", "npu")
RUNTIMES = ("emulated", "onnxruntime")
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class OrtSettings:
    """How ONNX Runtime runs one PU's partitions and measures its ops.

    Two PUs with equal settings share one measurement of each op (the key of the
    profile tables and, through :attr:`signature`, of the profile cache).

    Attributes:
        threads: intra-op threads of each session.
        providers: execution providers, in ORT's order of preference.
        provider_options: per provider, its options as sorted ``(key, value)`` pairs
            (strings, as ORT takes them); empty: no options for any provider.
        cores: cores the PU's thread(s) are pinned to; ``None`` = not pinned.
    """

    threads: int = 1
    providers: tuple[str, ...] = (CPU_PROVIDER,)
    provider_options: tuple[tuple[tuple[str, str], ...], ...] = ()
    cores: tuple[int, ...] | None = None

    @property
    def signature(self) -> dict[str, Any]:
        """What a measurement depends on, for cache keys: ``{"threads": n}`` plus each
        other setting only where it differs from the default (so the keys of plain
        one-provider, unpinned PUs stay what they were before these settings existed)."""
        d: dict[str, Any] = {"threads": self.threads}
        if self.providers != (CPU_PROVIDER,):
            d["providers"] = list(self.providers)
        if any(self.provider_options):
            d["provider_options"] = [dict(o) for o in self.provider_options]
        if self.cores is not None:
            d["cores"] = list(self.cores)
        return d

    def options(self) -> list[dict[str, str]]:
        """``provider_options`` as ORT's ``InferenceSession`` takes them (one dict per provider)."""
        if not self.provider_options:
            return [{} for _ in self.providers]
        return [dict(o) for o in self.provider_options]

    def describe(self) -> str:
        """``"CPUExecutionProvider, 1 thread, core 0"``: one line for outputs."""
        cores = "" if self.cores is None else \
            f", core{'s' if len(self.cores) > 1 else ''} {', '.join(map(str, self.cores))}"
        return f"{', '.join(self.providers)}, {self.threads} thread{'s' if self.threads > 1 else ''}{cores}"


@dataclass(frozen=True)
class NpuConfig:
    """Parameters of the systolic-array NPU emulator (see ``profiling/npu_emulator.py``).

    Attributes:
        rows, cols: MAC array size (weight-stationary: rows = reduction, cols = outputs).
        clock_mhz: array clock.
        dram_bandwidth_gbps: off-chip bandwidth in GB/s (1 GB/s = 1,000 bytes/us).
        input_buffer_kib, weight_buffer_kib, acc_buffer_kib: on-chip SRAMs.
        bytes_per_element: operand width in DRAM (1 for int8).
        acc_bytes_per_element: accumulator / output width (4 for int32).
        vector_lanes: element-wise ops per cycle of the vector (ALU) unit.
    """

    rows: int
    cols: int
    clock_mhz: float
    dram_bandwidth_gbps: float
    input_buffer_kib: float = 32.0
    weight_buffer_kib: float = 256.0
    acc_buffer_kib: float = 128.0
    bytes_per_element: int = 1
    acc_bytes_per_element: int = 4
    vector_lanes: int = 16


@dataclass(frozen=True)
class Device:
    """One processing unit.

    Attributes:
        supports: op types it can run; ``None`` means every op (a CPU).
        max_conv_groups: largest Conv ``group`` it runs (VTA-like NPUs: 1, so no
            grouped or depthwise convolution); ``None`` = any.
        speed_factor: relative speed of this CPU against the measured host thread
            (0.4 models a little core: latency = measured / 0.4).
        memory_bytes: capacity for resident weights plus one partition's activations;
            ``None`` = unlimited.
        work_scale: multiplier on this PU's profiled work inside a real run (ops
            profiled alone run slower beside other partitions: shared caches and memory
            bandwidth, cold caches after a hand-off); 1 unless ``partitiontuner
            calibrate`` fitted it. Not part of the profile cache key: profiles are the
            ops alone, the scale is the cost model's.
        runtime: ``onnxruntime`` (run and measured with ONNX Runtime, see :attr:`ort`)
            or ``emulated`` (the NPU emulator's time); empty = the kind's default
            (``onnxruntime`` for a CPU, ``emulated`` for an NPU).
        providers, provider_options, cores: the ONNX Runtime settings (:class:`OrtSettings`).
    """

    name: str
    kind: str
    dispatch_overhead_us: float
    threads: int = 1
    speed_factor: float = 1.0
    memory_bytes: int | None = None
    supports: frozenset[str] | None = None
    max_conv_groups: int | None = None
    npu: NpuConfig | None = None
    work_scale: float = 1.0
    runtime: str = ""
    providers: tuple[str, ...] = (CPU_PROVIDER,)
    provider_options: tuple[tuple[tuple[str, str], ...], ...] = ()
    cores: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.runtime:  # frozen: the kind's default is filled in once
            object.__setattr__(self, "runtime", default_runtime(self.kind))

    @property
    def emulated(self) -> bool:
        """Its partitions take the emulator's time instead of running."""
        return self.runtime == "emulated"

    @property
    def ort(self) -> OrtSettings:
        """The ONNX Runtime settings of a PU that is not emulated."""
        return OrtSettings(self.threads, self.providers, self.provider_options, self.cores)

    def unsupported_reason(self, op: OpNode) -> str | None:
        """Why this device cannot run ``op`` (the rule that excludes it), or ``None``."""
        if self.supports is not None and op.op_type not in self.supports:
            return f"{op.op_type} is not among {self.name}'s supported op types"
        if self.max_conv_groups is not None and op.op_type in ("Conv", "ConvTranspose"):
            groups = int(op.attributes.get("group", 1))
            if groups > self.max_conv_groups:
                kind = "depthwise" if groups == op.input_shapes[0][1] else "grouped"
                return f"{kind} Conv (group={groups}) exceeds {self.name}'s max_conv_groups={self.max_conv_groups}"
        return None

    def can_run(self, op: OpNode) -> bool:
        return self.unsupported_reason(op) is None

    @property
    def settings(self) -> dict[str, Any]:
        """What a profile of this device depends on (part of the profile cache key)."""
        d: dict[str, Any] = {"kind": self.kind, "threads": self.threads, "speed_factor": self.speed_factor}
        if self.npu is not None:
            d["npu"] = self.npu.__dict__
        if self.runtime != default_runtime(self.kind):
            d["runtime"] = self.runtime
        if not self.emulated:  # only where they differ from the defaults: old keys stay valid
            d.update({k: v for k, v in self.ort.signature.items() if k != "threads"})
        return d


def default_runtime(kind: str) -> str:
    """``onnxruntime`` for a CPU, ``emulated`` for an NPU."""
    return "emulated" if kind == "npu" else "onnxruntime"


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    latency_us: float
    bandwidth_gbps: float  # GB/s = 1,000 bytes per microsecond

    def transfer_us(self, size_bytes: int | float) -> float:
        return self.latency_us + size_bytes / (self.bandwidth_gbps * 1000.0)


@dataclass(frozen=True)
class Platform:
    name: str
    description: str
    devices: tuple[Device, ...]
    links: Mapping[tuple[str, str], Link]
    host: str
    source: str = field(default="", compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @property
    def num_pus(self) -> int:
        return len(self.devices)

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise ConfigError(f"platform {self.name!r} has no PU named {name!r} (it has {', '.join(self.names)})")

    def pu_index(self, name: str) -> int:
        return self.names.index(self.device(name).name)

    def transfer_us(self, src: str, dst: str, size_bytes: int | float) -> float:
        """Time to move a tensor from ``src`` to ``dst``; 0 on the same PU."""
        if src == dst:
            return 0.0
        return self.links[(src, dst)].transfer_us(size_bytes)

    def with_cpu_threads(self, threads: int) -> Platform:
        """The same platform with every CPU PU set to ``threads`` intra-op threads."""
        if threads < 1:
            raise ConfigError(f"CPU thread count must be >= 1, got {threads}")
        for d in self.devices:
            if d.kind == "cpu" and d.cores is not None and len(d.cores) < threads:
                raise ConfigError(f"PU {d.name!r} is pinned to {_cores_text(d.cores)}: {threads} threads need as many cores")
        devices = tuple(
            Device(**{**d.__dict__, "threads": threads}) if d.kind == "cpu" else d for d in self.devices
        )
        return Platform(self.name, self.description, devices, self.links, self.host, self.source)


# ---------------------------------------------------------------------------------
# loading


def preset_names() -> tuple[str, ...]:
    files = resources.files("partitiontuner") / "presets"
    return tuple(sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml")))


def load_platform(spec: str | Path = "cpu-npu") -> Platform:
    """A preset name or a YAML file -> validated :class:`Platform`.

    Raises:
        ConfigError: unknown preset, unreadable or malformed YAML, inconsistent PUs.
    """
    spec = str(spec)
    if spec in preset_names():
        text = (resources.files("partitiontuner") / "presets" / f"{spec}.yaml").read_text()
        source = f"preset:{spec}"
    elif spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        text = read_text(spec, what="platform file")
        source = spec
    else:
        raise ConfigError(f"unknown platform {spec!r}: not a preset ({', '.join(preset_names())}) nor a YAML file")
    data = parse_yaml(text, where=f"platform {spec}")
    return platform_from_dict(data, source=source)


def platform_from_dict(data: Any, source: str = "") -> Platform:
    where = source or "platform"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name', 'pus' and 'links'")
    _only(data, {"name", "description", "pus", "links", "host"}, where)
    name = _req(data, "name", str, where)
    pus = data.get("pus")
    if not isinstance(pus, list) or not pus:
        raise ConfigError(f"{where}: 'pus' must be a non-empty list")
    devices = tuple(_device(p, f"{where}: pu #{i}") for i, p in enumerate(pus))
    names = [d.name for d in devices]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{where}: duplicate PU name {sorted(dup)[0]!r}")
    cpus = [d.name for d in devices if d.kind == "cpu"]
    host = data.get("host", cpus[0] if cpus else None)
    if host is None:
        raise ConfigError(f"{where}: a platform needs a CPU PU (or a 'host') to hold graph inputs and outputs")
    if host not in names:
        raise ConfigError(f"{where}: host {host!r} is not one of the PUs ({', '.join(names)})")
    links: dict[tuple[str, str], Link] = {}
    for i, raw in enumerate(data.get("links") or []):
        lw = f"{where}: link #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{lw}: expected a mapping")
        _only(raw, {"between", "from", "to", "latency_us", "bandwidth_gbps"}, lw)
        if "between" in raw:
            ends = raw["between"]
            if not (isinstance(ends, list) and len(ends) == 2):
                raise ConfigError(f"{lw}: 'between' must list two PUs")
            pairs = [(ends[0], ends[1]), (ends[1], ends[0])]
        else:
            pairs = [(raw.get("from"), raw.get("to"))]
        lat = _num(raw, "latency_us", lw, minimum=0.0)
        bw = _num(raw, "bandwidth_gbps", lw, minimum=0.0, strict=True)
        for a, b in pairs:
            for end in (a, b):
                if end not in names:
                    raise ConfigError(f"{lw}: unknown PU {end!r} (PUs: {', '.join(names)})")
            if a == b:
                raise ConfigError(f"{lw}: a link needs two different PUs, got {a!r} twice")
            if (a, b) in links:
                raise ConfigError(f"{lw}: a second link from {a!r} to {b!r} (each pair of PUs takes one link)")
            links[(a, b)] = Link(a, b, lat, bw)
    for a in names:
        for b in names:
            if a != b and (a, b) not in links:
                raise ConfigError(f"{where}: no link from {a!r} to {b!r}; every pair of PUs needs one")
    return Platform(name, str(data.get("description", "")), devices, MappingProxyType(links), host, source)


def _device(raw: Any, where: str) -> Device:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _only(raw, {"name", "kind", "threads", "speed_factor", "dispatch_overhead_us", "memory_mib",
                "supports", "max_conv_groups", "npu", "runtime", "providers", "provider_options", "cores",
                "work_scale"}, where)
    name = _req(raw, "name", str, where)
    where = f"{where.rsplit(':', 1)[0]}: pu {name!r}"
    kind = _req(raw, "kind", str, where)
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    threads = raw.get("threads", 1)
    if type(threads) is not int or threads < 1:
        raise ConfigError(f"{where}: threads must be a positive integer")
    speed = _num(raw, "speed_factor", where, default=1.0, minimum=0.0, strict=True)
    overhead = _num(raw, "dispatch_overhead_us", where, minimum=0.0)
    work_scale = _num(raw, "work_scale", where, default=1.0, minimum=0.0, strict=True)
    mem = _num(raw, "memory_mib", where, minimum=0.0, strict=True) if raw.get("memory_mib") is not None else None
    supports = raw.get("supports", "all" if kind == "cpu" else None)
    if supports is None:
        raise ConfigError(f"{where}: an NPU must list the op types it 'supports'")
    if supports == "all":
        sup = None
    elif isinstance(supports, list) and all(isinstance(s, str) for s in supports):
        sup = frozenset(supports)
    else:
        raise ConfigError(f"{where}: 'supports' must be 'all' or a list of op types")
    groups = raw.get("max_conv_groups")
    if groups is not None and (type(groups) is not int or groups < 1):
        raise ConfigError(f"{where}: max_conv_groups must be a positive integer")
    runtime = raw.get("runtime", default_runtime(kind))
    if runtime not in RUNTIMES:
        raise ConfigError(f"{where}: runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    npu = None
    if kind == "npu":
        cfg = raw.get("npu")
        if runtime == "emulated" or cfg is not None:  # the emulator's parameters
            if not isinstance(cfg, dict):
                raise ConfigError(f"{where}: an NPU needs an 'npu' section with its array size, clock and bandwidth")
            _only(cfg, set(NpuConfig.__dataclass_fields__), f"{where}: npu")
            npu = _npu_config(cfg, f"{where}: npu")
    elif "npu" in raw:
        raise ConfigError(f"{where}: only an NPU takes an 'npu' section")
    ort = _ort_settings(raw, kind, runtime, threads, where)
    return Device(
        name=name, kind=kind, dispatch_overhead_us=overhead, threads=threads, speed_factor=speed,
        memory_bytes=int(mem * 2**20) if mem is not None else None, supports=sup,
        max_conv_groups=groups, npu=npu, runtime=runtime, providers=ort.providers,
        provider_options=ort.provider_options, cores=ort.cores, work_scale=work_scale,
    )


def _ort_settings(raw: dict, kind: str, runtime: str, threads: int, where: str) -> OrtSettings:
    """The ONNX Runtime keys of a PU, checked against this host (providers installed,
    cores usable); their defaults when absent."""
    ort_keys = [k for k in ("providers", "provider_options", "cores") if k in raw]
    if runtime == "emulated":
        if kind == "cpu":
            raise ConfigError(f"{where}: only an NPU can be emulated (the emulator models a systolic array); "
                              "a CPU runs with runtime: onnxruntime")
        if ort_keys:
            raise ConfigError(f"{where}: '{ort_keys[0]}' is an ONNX Runtime setting, but the PU is emulated "
                              "(set runtime: onnxruntime to run it)")
        return OrtSettings(threads)
    if kind == "npu" and "providers" not in raw:
        raise ConfigError(f"{where}: an NPU with runtime onnxruntime must name its execution 'providers' "
                          "(e.g. [CPUExecutionProvider] to run it on this CPU for testing)")
    providers = raw.get("providers", [CPU_PROVIDER])
    if not (isinstance(providers, list) and providers and all(isinstance(p, str) and p for p in providers)):
        raise ConfigError(f"{where}: 'providers' must be a non-empty list of ONNX Runtime execution provider names")
    if len(set(providers)) < len(providers):
        raise ConfigError(f"{where}: 'providers' lists {next(p for p in providers if providers.count(p) > 1)!r} twice")
    if "providers" in raw:
        _check_installed(providers, where)
    options: tuple[tuple[tuple[str, str], ...], ...] = ()
    if "provider_options" in raw:
        raw_opts = raw["provider_options"]
        if not (isinstance(raw_opts, list) and all(isinstance(o, dict) for o in raw_opts)):
            raise ConfigError(f"{where}: 'provider_options' must be a list of mappings, one per provider")
        if len(raw_opts) != len(providers):
            raise ConfigError(f"{where}: 'provider_options' has {len(raw_opts)} entries for {len(providers)} "
                              f"provider(s); give one mapping per provider ({{}} for none)")
        for p, o in zip(providers, raw_opts, strict=True):
            bad = [k for k, v in o.items() if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None]
            if bad:
                raise ConfigError(f"{where}: provider_options of {p}: option {bad[0]!r} must be a name with a "
                                  "string, number or boolean value")
        options = tuple(tuple(sorted((k, _option_text(v)) for k, v in o.items())) for o in raw_opts)
        if not any(options):
            options = ()
    cores = None
    if "cores" in raw and raw["cores"] is not None:
        cores = _cores(raw["cores"], threads, where)
    return OrtSettings(threads, tuple(providers), options, cores)


def _option_text(value: Any) -> str:
    """An option value as ORT takes it: a string (YAML ``true`` -> ``"1"``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _check_installed(providers: list[str], where: str) -> None:
    import onnxruntime as ort

    installed = ort.get_available_providers()
    missing = [p for p in providers if p not in installed]
    if missing:
        raise ConfigError(f"{where}: execution provider {missing[0]!r} is not installed in this ONNX Runtime "
                          f"{ort.__version__} (installed: {', '.join(installed)})")


def _cores(raw: Any, threads: int, where: str) -> tuple[int, ...]:
    """A PU's ``cores``: distinct cores this process may use, at least one per thread."""
    if not (isinstance(raw, list) and raw and all(type(c) is int and c >= 0 for c in raw)):
        raise ConfigError(f"{where}: 'cores' must be a non-empty list of core numbers (0, 1, ...)")
    if len(set(raw)) < len(raw):
        raise ConfigError(f"{where}: 'cores' lists core {next(c for c in raw if raw.count(c) > 1)} twice")
    if not hasattr(os, "sched_getaffinity"):
        raise ConfigError(f"{where}: 'cores' needs a host that can pin threads (Linux); remove it here")
    usable = sorted(os.sched_getaffinity(0))
    for c in raw:
        if c not in usable:
            raise ConfigError(f"{where}: core {c} not available (this process may use {', '.join(map(str, usable))})")
    if len(raw) < threads:
        raise ConfigError(f"{where}: {threads} threads need as many cores, but 'cores' lists {len(raw)}")
    return tuple(raw)


def _cores_text(cores: tuple[int, ...]) -> str:
    return f"core{'s' if len(cores) > 1 else ''} {', '.join(map(str, cores))}"


#: NpuConfig fields that count things (integers >= 1); the rest are sizes and rates (> 0)
_NPU_INTS = ("rows", "cols", "bytes_per_element", "acc_bytes_per_element", "vector_lanes")


def _npu_config(cfg: dict, where: str) -> NpuConfig:
    """Every emulator parameter checked: the emulator divides by each of them."""
    values: dict[str, Any] = {}
    for key, f in NpuConfig.__dataclass_fields__.items():
        if key not in cfg and f.default is not MISSING:
            continue
        if key in _NPU_INTS:
            v = cfg.get(key)
            if type(v) is not int or v < 1:
                raise ConfigError(f"{where}: '{key}' must be a positive integer, got {v!r}")
            values[key] = v
        else:
            _num(cfg, key, where, minimum=0.0, strict=True)
            values[key] = cfg[key]  # as written (500 stays an int in settings and cache keys)
    return NpuConfig(**values)


def _only(d: dict, allowed: set[str], where: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _req(d: dict, key: str, typ: type, where: str):
    v = d.get(key)
    if not isinstance(v, typ) or (typ is str and not v):
        raise ConfigError(f"{where}: '{key}' is required ({typ.__name__})")
    return v


def _num(d: dict, key: str, where: str, *, default: float | None = None, minimum: float | None = None, strict: bool = False) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: '{key}' must be a number")
    if not math.isfinite(v):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {v}")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ConfigError(f"{where}: '{key}' must be {'>' if strict else '>='} {minimum}, got {v}")
    return float(v)
