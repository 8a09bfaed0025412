"""On-disk cache of CPU measurements, so a second profiling run measures nothing.

An entry is one measured unit (an op, or a group of ops with its internal wiring).
Its key hashes what the time depends on: the unit's signature (each member's
:attr:`OpNode.signature` plus how members feed each other), the measurement settings
(the PU's threads, providers and cores; the protocol) and the host fingerprint (CPU model and flags, core count, ORT and
numpy versions, ORT build). A changed machine therefore misses the cache and
re-profiles; the old entries stay, harmlessly, under their own keys.

Layout: ``<root>/cpu/<key[:2]>/<key>.json``, each file written atomically and holding
its payload and a SHA-256 of it. A file that is not valid JSON (truncated), is not a
regular file (a FIFO would hang the reader, ``/dev/zero`` would fill memory) or is too
large, has the wrong schema or key, or whose checksum does not match is reported with one warning
line (logger ``partitiontuner.profiling.cache``) and treated as missing, so the
caller re-measures and overwrites it.

``root`` is ``$PARTITIONTUNER_CACHE`` if set, else ``platformdirs.user_cache_dir
("partitiontuner")``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform as _platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partitiontuner.atomic import write_text_atomic
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph
from partitiontuner.platform import OrtSettings
from partitiontuner.profiling.cpu_profiler import PROTOCOL, Measurement
from partitiontuner.safe_io import parse_json, read_text

ENV_VAR = "PARTITIONTUNER_CACHE"
#: an entry is a few hundred bytes; anything much larger is not one of ours
MAX_ENTRY_BYTES = 1 << 20
FORMAT = "partitiontuner-cache"
VERSION = 1


#: corrupt entries are reported here, one WARNING line each (Python's last-resort
#: handler prints it on stderr when the application configures no logging)
log = logging.getLogger("partitiontuner.profiling.cache")


# ---------------------------------------------------------------------------------
# what a measurement depends on


def unit_signature(graph: OpGraph, ops: Sequence[int]) -> str:
    """Canonical description of an op set's cost: members' signatures in topological
    order, where each member's activation inputs come from (another member's output,
    or the set's n-th external input) and which outputs leave the set. Two op sets
    with equal signatures run the same computation on same-shaped data."""
    from partitiontuner.subgraph import partition_io

    order = sorted(set(ops))
    ins, outs = partition_io(graph, order)
    ext = {t: k for k, t in enumerate(ins)}
    made = {t: (pos, slot) for pos, v in enumerate(order) for slot, t in enumerate(graph.nodes[v].outputs)}
    members = []
    for v in order:
        node = graph.nodes[v]
        wiring = [["m", *made[t]] if t in made else ["x", ext[t]] for t in node.inputs]
        members.append([node.signature, wiring])
    exported = sorted(made[t] for t in outs)
    return json.dumps([members, exported], separators=(",", ":"))


def _cpu_info() -> tuple[str, str]:
    """CPU model name and a hash of its feature flags (Linux ``/proc/cpuinfo``)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    model = model or _platform.processor() or _platform.machine()
    return model, hashlib.sha256(flags.encode()).hexdigest()[:12]


@functools.cache
def host_fingerprint() -> dict[str, Any]:
    """What makes this machine's CPU timings differ from another's."""
    import numpy as np
    import onnxruntime as ort

    model, flags = _cpu_info()
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    return {
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count() or 0,
        "machine": _platform.machine(), "system": _platform.system(),
        "onnxruntime": ort.__version__, "ort_build": build, "numpy": np.__version__,
    }


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """Short stable hash of a fingerprint (recorded as ``Profiles.host``)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def default_root() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("partitiontuner"))


# ---------------------------------------------------------------------------------
# the cache


class ProfileCache:
    """Measurements on disk, keyed by unit signature, settings and host.

    Args:
        root: cache directory; default :func:`default_root` (read when constructed).
        fingerprint: host fingerprint; default :func:`host_fingerprint`. Another value
            makes every key differ, as on another machine.

    Attributes:
        hits, misses, corrupt: lookups answered, not found, found corrupt.
    """

    def __init__(self, root: str | Path | None = None, fingerprint: dict[str, Any] | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.fingerprint = dict(fingerprint) if fingerprint is not None else host_fingerprint()
        self.host = fingerprint_id(self.fingerprint)
        self.hits = self.misses = self.corrupt = 0
        #: keys written by this object: trusted even under ``refresh``
        self._fresh: set[str] = set()
        self._unwritable = False

    def key(self, signature: str, threads: int | OrtSettings) -> str:
        """The entry of unit ``signature`` measured with ``threads`` intra-op threads, or
        with a PU's full ONNX Runtime settings (providers and cores count where they
        differ from the defaults: :attr:`OrtSettings.signature`)."""
        runtime = threads.signature if isinstance(threads, OrtSettings) else {"threads": threads}
        blob = json.dumps([FORMAT, VERSION, PROTOCOL, signature, runtime, self.host], separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / "cpu" / key[:2] / f"{key}.json"

    def get(self, key: str, *, refresh: bool = False) -> Measurement | None:
        """The cached measurement, or ``None`` (missing, corrupt, or ``refresh`` and
        not written by this object)."""
        if refresh and key not in self._fresh:
            self.misses += 1
            return None
        p = self.path(key)
        if not os.path.lexists(p):
            self.misses += 1
            return None
        try:  # a FIFO, a symlink to /dev/zero, a huge or deeply nested file: corrupt, not fatal
            data = parse_json(read_text(p, what="entry", error=ProfileError, max_bytes=MAX_ENTRY_BYTES),
                              where="entry", error=ProfileError)
        except ProfileError as exc:
            return self._bad(p, str(exc).removeprefix(f"entry {p} ").removeprefix("entry: "))
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            return self._bad(p, "wrong format or version")
        if data.get("key") != key:
            return self._bad(p, "key does not match its file name")
        payload = data.get("payload")
        if _checksum(payload) != data.get("sha256"):
            return self._bad(p, "checksum mismatch")
        try:
            m = Measurement.from_dict(payload)
        except (KeyError, TypeError, ValueError):
            return self._bad(p, "malformed measurement")
        self.hits += 1
        return m

    def put(self, key: str, m: Measurement, *, what: str = "") -> None:
        """Store ``m`` atomically under ``key``; ``what`` (op names) aids debugging."""
        payload = m.to_dict()
        data = {"format": FORMAT, "version": VERSION, "key": key, "what": what, "host": self.host,
                "payload": payload, "sha256": _checksum(payload)}
        self._fresh.add(key)
        try:
            write_text_atomic(self.path(key), json.dumps(data, separators=(",", ":")))
        except OSError as exc:
            if not self._unwritable:
                self._unwritable = True
                log.warning("partitiontuner: warning: cannot write the profile cache under %s (%s); "
                            "measurements will not be kept", self.root, exc.strerror or exc)

    def _bad(self, path: Path, why: str) -> None:
        self.corrupt += 1
        self.misses += 1
        log.warning("partitiontuner: warning: corrupt profile cache entry %s: %s; re-measuring", path, why)
        return None


def _checksum(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
