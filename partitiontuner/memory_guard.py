"""Refuse work whose tensors cannot fit in this machine's memory, before allocating them.

A model with a 1x3x200000x200000 input, or ``--batch-size 100000``, loads fine (shapes
are only numbers) but profiling or running it would ask NumPy for hundreds of GiB and
die with a ``MemoryError`` traceback. The profiler and the executor's input feeds ask
here first, and the user gets one line naming the biggest tensor and its size against
the memory available.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from partitiontuner.errors import PartitionTunerError, ProfileError
from partitiontuner.graph import OpGraph

#: random feeds are drawn in float64 and then cast: up to 8 bytes per element on the way
_DRAW_BYTES_PER_ELEMENT = 8


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can get (``MemAvailable``), or ``None``
    if this system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_tensors_fit(graph: OpGraph, inputs: Iterable[str], doing: str, *, outputs: Iterable[str] = (),
                      extra_bytes: int = 0, error: type[PartitionTunerError] = ProfileError,
                      available: int | None = None) -> None:
    """Raise ``error`` if the tensors (plus ``extra_bytes``) cannot fit in memory.

    Args:
        graph: the graph whose tensors these are.
        inputs: activation tensors about to be filled with random values.
        doing: what they are for, for the message ("to profile op 'Conv_0'").
        outputs: activation tensors about to be allocated empty.
        extra_bytes: other memory the work needs (weights).
        error: the error class to raise.
        available: available bytes; default :func:`available_memory_bytes`.
    """
    drawn = [graph.tensors[t] for t in dict.fromkeys(inputs)]
    infos = drawn + [graph.tensors[t] for t in dict.fromkeys(outputs)]
    if not infos:
        return
    need = extra_bytes + sum(t.size_bytes for t in infos) + sum(_draw_bytes(t.shape) for t in drawn)
    available = available if available is not None else available_memory_bytes()
    if available is None or need <= available:
        return
    big = max(infos, key=lambda t: t.size_bytes)
    shape = "x".join(map(str, big.shape)) or "scalar"
    raise error(
        f"tensor {big.name!r} ({shape} {big.dtype}, {_gib(big.size_bytes)}) {doing} needs {_gib(need)} "
        f"in all, more than the {_gib(available)} of memory available; use a smaller --batch-size or --input-shape"
    )


def _draw_bytes(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * _DRAW_BYTES_PER_ELEMENT


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"
