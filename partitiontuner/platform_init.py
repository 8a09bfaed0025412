"""``partitiontuner platform init``: a commented platform YAML for this host.

The file is a starting point to edit into the user's SoC. It describes what this
machine has, found without root and without running a model:

* the cores this process may run on (``os.sched_getaffinity``): one single-thread
  CPU PU per core (``cpu0``, ``cpu1``, ...; at most :data:`MAX_CPU_PUS`), so parallel
  branches can run side by side, as on the ``cpu-cpu`` preset;
* the CPU caches (``/sys/devices/system/cpu/cpu0/cache``), as comments;
* the ONNX Runtime execution providers installed here, as comments;
* links between the cores: shared memory, whose bandwidth is one large NumPy copy
  timed here (a rough figure; ``partitiontuner calibrate`` fits the real costs);
* a commented NPU section to fill in from the accelerator's data sheet.

The YAML loads with :func:`partitiontuner.platform.load_platform` as written.
"""

from __future__ import annotations

import os
import platform as pyplatform
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import ConfigError

#: more cores than this become threads of the last PU (a plan over 64 PUs helps no one)
MAX_CPU_PUS = 4
CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
#: what the shipped presets charge per partition and per transfer between cores
DISPATCH_OVERHEAD_US = 8
CORE_LINK_LATENCY_US = 3


@dataclass(frozen=True)
class Cache:
    level: int
    kind: str
    size: str
    shared_cpus: str


@dataclass(frozen=True)
class HostInfo:
    """What :func:`host_yaml` writes about this machine.

    Attributes:
        cores: CPU ids this process may run on.
        caches: cpu0's caches (empty where sysfs does not show them).
        providers: installed ONNX Runtime execution providers.
        copy_bandwidth_gbps: one large in-memory copy, GB/s.
    """

    hostname: str
    cpu_model: str
    cores: tuple[int, ...]
    caches: tuple[Cache, ...]
    providers: tuple[str, ...]
    copy_bandwidth_gbps: float


def read_caches(root: Path = CACHE_DIR) -> tuple[Cache, ...]:
    """cpu0's caches from sysfs; none where it is absent or unreadable."""
    out = []
    for d in sorted(root.glob("index*")):
        try:
            out.append(Cache(int((d / "level").read_text()), (d / "type").read_text().strip(),
                             (d / "size").read_text().strip(), (d / "shared_cpu_list").read_text().strip()))
        except (OSError, ValueError):
            continue
    return tuple(out)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or pyplatform.machine()


def copy_bandwidth_gbps(size_bytes: int = 8 * 2**20, repeats: int = 10) -> float:
    """Best of ``repeats`` copies of ``size_bytes`` (read + write counted once), the
    size of a large activation tensor handed from one core to another."""
    src = np.ones(size_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return size_bytes / best / 1e9


def host_info() -> HostInfo:
    import onnxruntime as ort

    cores = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else tuple(range(os.cpu_count() or 1))
    return HostInfo(socket.gethostname(), cpu_model(), cores, read_caches(), tuple(ort.get_available_providers()),
                    copy_bandwidth_gbps())


def host_yaml(info: HostInfo) -> str:
    """The commented platform file for ``info`` (see the module docstring)."""
    n = max(1, min(len(info.cores), MAX_CPU_PUS))
    groups = [info.cores[k::n] for k in range(n)] if info.cores else [(0,)]
    names = [f"cpu{k}" for k in range(n)]
    bw = max(0.1, round(info.copy_bandwidth_gbps, 1))
    lines = [
        "# Platform file written by `partitiontuner platform init` for this host. Edit it into your SoC:",
        "# rename PUs, add NPUs (template below), set the links to your interconnect. Check it with",
        "#   partitiontuner plan squeezenet --platform THIS_FILE --method greedy",
        f"# host:  {info.hostname}",
        f"# CPU:   {info.cpu_model}; this process may use cores {', '.join(map(str, info.cores))}",
    ]
    if info.caches:
        lines.append("# caches of cpu0 (level, type, size, shared with CPUs):")
        lines += [f"#   L{c.level} {c.kind:<11} {c.size:>8}  shared with {c.shared_cpus}" for c in info.caches]
    else:
        lines.append("# caches: not shown by /sys/devices/system/cpu/cpu0/cache on this host")
    lines.append(f"# ONNX Runtime execution providers installed here: {', '.join(info.providers) or 'none'}")
    lines += [
        f"# in-memory copy bandwidth measured now: {info.copy_bandwidth_gbps:.1f} GB/s (used for the core links)",
        "",
        f"name: {_slug(info.hostname)}",
        "description: >-",
        f"  This host ({info.cpu_model}), one single-thread CPU PU per core. Written by",
        "  partitiontuner platform init; edit into your SoC.",
        f"host: {names[0]}                 # graph inputs start and outputs end here",
        "pus:",
    ]
    for name, cores in zip(names, groups, strict=True):
        lines += [
            f"  - name: {name}",
            "    kind: cpu",
            f"    threads: {len(cores) if len(cores) > 1 else 1}          # ONNX Runtime intra-op threads",
            f"    dispatch_overhead_us: {DISPATCH_OVERHEAD_US}  # per partition; partitiontuner calibrate fits it",
            f"    # runs on core(s) {', '.join(map(str, cores))}; speed_factor: 0.35 would model a slower core",
        ]
    lines += _npu_template()
    lines.append("links:" if len(names) > 1 else "links: []            # one PU: no links; add one per pair of PUs")
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            lines += [f"  - between: [{names[a]}, {names[b]}]   # shared memory",
                      f"    latency_us: {CORE_LINK_LATENCY_US}",
                      f"    bandwidth_gbps: {bw}"]
    lines += [
        "  # - between: [cpu0, npu]          # one link per pair of PUs, e.g. over DRAM",
        "  #   latency_us: 15",
        "  #   bandwidth_gbps: 6",
    ]
    return "\n".join(lines) + "\n"


def _npu_template() -> list[str]:
    return [
        "  # An NPU, emulated from its data sheet (uncomment, fill in, add its links):",
        "  # - name: npu",
        "  #   kind: npu",
        "  #   dispatch_overhead_us: 25",
        "  #   max_conv_groups: 1         # no grouped / depthwise convolution",
        "  #   supports: [Conv, Gemm, MatMul, Relu, Clip, Add, Mul, BatchNormalization, MaxPool,",
        "  #              AveragePool, GlobalAveragePool, Concat, Reshape, Flatten]",
        "  #   memory_mib: 256            # weights + one partition's activations",
        "  #   npu:",
        "  #     rows: 32                 # MAC array (weight-stationary systolic)",
        "  #     cols: 32",
        "  #     clock_mhz: 500",
        "  #     dram_bandwidth_gbps: 12.8",
        "  #     input_buffer_kib: 128",
        "  #     weight_buffer_kib: 256",
        "  #     acc_buffer_kib: 128",
        "  #     bytes_per_element: 1     # int8 operands",
        "  #     acc_bytes_per_element: 4",
        "  #     vector_lanes: 32",
    ]


def _slug(text: str) -> str:
    s = "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()).strip("-")
    return f"host-{s}" if s else "this-host"


def write_host_platform(out: str | Path | None, *, force: bool = False, info: HostInfo | None = None) -> str:
    """Write (or return, if ``out`` is ``None``) the host's platform YAML, checked by
    loading it back.

    Raises:
        ConfigError: ``out`` exists (without ``force``) or cannot be written.
    """
    import yaml

    from partitiontuner.platform import load_platform, platform_from_dict

    text = host_yaml(info or host_info())
    platform_from_dict(yaml.safe_load(text), source="platform init")  # what the user gets must load
    if out is None:
        return text
    path = Path(out)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to replace it")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory")
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    load_platform(path)
    return text
