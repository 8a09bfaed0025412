"""Export a plan as what a compiler back end consumes: one ONNX model per partition
plus a manifest saying which PU runs it, in what order, and where its inputs come from.

Layout of the output directory::

    DIR/
      manifest.json        # the manifest (and manifest.yaml, the same content)
      manifest.yaml
      p000_cpu.onnx        # partition 0, a standalone model (weights included)
      p001_npu.onnx
      ...

Each partition model is :func:`partitiontuner.subgraph.subgraph_model` of its ops: its
graph inputs are the tensors it reads from other partitions (or the model's inputs),
its graph outputs the tensors other partitions (or the model's outputs) read; tensor
names are the original model's, so partitions connect by name. Every file passes
``onnx.checker.check_model(full_check=True)``. Running the partitions in the
manifest's ``sequence`` and passing tensors by name reproduces the model
(:func:`run_exported` does exactly that).

The manifest (``format: partitiontuner-export``) records per partition its id, PU and
PU kind, file, ops and op types, input tensors (shape, dtype, bytes, producing
partition or ``null`` for a graph input, and the PU it comes from) and output tensors
(consuming partitions, whether it is a graph output), the simulator's predicted start
and end; and for the plan the per-PU ``order``, a valid global ``sequence``, every
cross-PU ``transfer`` and the predicted makespan.

The export is atomic: everything is written into a temporary directory next to DIR,
which is then renamed onto DIR, so DIR is either absent, the previous export, or the
complete new one, never half written. An existing non-empty DIR is refused unless
``force``; even with ``force`` only a directory holding nothing but a previous export
(a ``manifest.json`` of this format and the files it names) is replaced, so a typo or
a user's notes next to an export are never deleted. (Replacing a non-empty DIR takes two renames: DIR to a backup, the new export
to DIR; between them DIR briefly does not exist, and a failure of the second rename
restores the backup.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from partitiontuner.atomic import OutputError, check_writable, default_mode, os_reason
from partitiontuner.errors import ConfigError, PartitionTunerError
from partitiontuner.plan import Plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.runtime import FORMAT, MANIFEST, VERSION, read_manifest
from partitiontuner.simulate import simulate
from partitiontuner.subgraph import partition_io, subgraph_model

MANIFEST_YAML = "manifest.yaml"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds.

    Attributes:
        out_dir: the export directory.
        files: partition model file names, by partition id.
        manifest: the manifest as written to ``manifest.json``.
    """

    out_dir: Path
    files: tuple[str, ...]
    manifest: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The ``export --json`` object: where the files went and the plan's shape."""
        m = self.manifest
        return {"out": str(self.out_dir), "manifest": str(self.out_dir / MANIFEST), "files": list(self.files),
                "num_partitions": len(self.files), "model": m["model"]["name"], "platform": m["platform"],
                "method": m["method"], "order": m["order"], "predicted_makespan_us": m["predicted_makespan_us"]}


def _tensor(problem: Problem, name: str) -> dict[str, Any]:
    t = problem.graph.tensors[name]
    return {"name": name, "shape": list(t.shape), "dtype": t.dtype, "size_bytes": int(t.size_bytes)}


def _file_name(i: int, device: str) -> str:
    return f"p{i:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', device)}.onnx"


def build_manifest(problem: Problem, plan: Plan) -> dict[str, Any]:
    """The manifest of ``plan`` (see the module docstring); validates the plan."""
    validate_plan(problem, plan, check_constraints=False)
    g, names = problem.graph, problem.pus
    sim = simulate(problem, plan)
    owner = {v: i for i, p in enumerate(plan.partitions) for v in p.ops}
    graph_outputs = {t.name for t in g.outputs}
    host = names[problem.host]
    consumers: dict[str, list[int]] = {}
    ios = [partition_io(g, p.ops) for p in plan.partitions]
    for i, (ins, _) in enumerate(ios):
        for t in ins:
            consumers.setdefault(t, []).append(i)
    parts = []
    for i, (p, (ins, outs)) in enumerate(zip(plan.partitions, ios, strict=True)):
        inputs = []
        for t in ins:
            j = owner[g.producer[t]] if t in g.producer else None
            inputs.append({**_tensor(problem, t), "producer": j, "from_device": plan.partitions[j].device if j is not None else host})
        outputs = [{**_tensor(problem, t), "consumers": consumers.get(t, []), "graph_output": t in graph_outputs} for t in outs]
        timing = sim.partitions[i]
        parts.append({
            "id": i, "device": p.device, "kind": problem.platform.device(p.device).kind, "file": _file_name(i, p.device),
            "ops": [g.nodes[v].name for v in p.ops], "op_types": sorted({g.nodes[v].op_type for v in p.ops}),
            "inputs": inputs, "outputs": outputs,
            "predicted_start_us": round(timing.start_us, 3), "predicted_end_us": round(timing.end_us, 3),
        })
    return {
        "format": FORMAT, "version": VERSION,
        "model": {"name": plan.model, "hash": plan.model_hash},
        "platform": problem.platform.name, "method": plan.method, "host": host,
        "graph_inputs": [{k: v for k, v in _tensor(problem, t.name).items()} for t in g.inputs],
        "graph_outputs": [{**_tensor(problem, t.name), "producer": owner[g.output_producers[t.name]]} for t in g.outputs],
        "partitions": parts,
        "order": plan.orders(names),
        "sequence": list(range(plan.num_partitions)),
        "transfers": [{"tensor": x.tensor, "size_bytes": x.size_bytes, "from": x.src_device, "to": x.dst_device,
                       "src_partition": None if x.src_partition < 0 else x.src_partition,
                       "dst_partition": None if x.dst_partition < 0 else x.dst_partition,
                       "predicted_us": round(x.end_us - x.start_us, 3)} for x in sim.transfers],
        "predicted_makespan_us": round(sim.makespan_us, 3),
    }


def _previous_export_files(out: Path) -> set[str]:
    """The names a previous export wrote into ``out``, per its manifest (empty set if
    ``out`` holds no readable manifest of this format)."""
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return set()
    try:
        return {MANIFEST, MANIFEST_YAML} | {str(p["file"]) for p in data.get("partitions", [])}
    except (TypeError, KeyError):
        return set()


def _check_target(out: Path, force: bool) -> bool:
    """Raise unless ``out`` may be written; return whether it holds files to replace.

    With ``force``, a directory is replaced only if every entry in it was written by a
    previous export (named in its manifest): a user's notes or a subfolder make it a
    refusal, never a deletion.
    """
    check_writable(out, what="export directory", directory=True)
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise ConfigError(f"cannot export into {out}: it contains the current directory; name a new directory")
    if not out.exists():
        return False
    if not any(out.iterdir()):
        return False
    if not force:
        raise ConfigError(f"export directory {out} exists and is not empty; use --force to replace a previous export")
    ours = _previous_export_files(out)
    if not ours:
        raise ConfigError(f"export directory {out} is not empty and holds no PartitionTuner export ({MANIFEST}); "
                          "refusing to delete it even with --force")
    foreign = sorted(x.name + ("/" if x.is_dir() else "") for x in out.iterdir() if x.name not in ours or not x.is_file())
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"export directory {out} holds files the previous export did not write ({shown}); "
                          "refusing to delete them even with --force")
    return True


def _write_model(model: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(model, str(path))


def export_plan(problem: Problem, plan: Plan, out_dir: str | Path, *, force: bool = False) -> ExportResult:
    """Write one checked ONNX model per partition plus the manifest into ``out_dir``, atomically.

    Args:
        problem: the problem the plan was made for.
        plan: a valid plan.
        out_dir: the directory to create (or replace, see ``force``).
        force: replace an existing non-empty ``out_dir`` holding a previous export.

    Returns:
        The directory, file names and manifest.

    Raises:
        ConfigError: ``out_dir`` exists and may not be replaced.
        InfeasiblePlanError: the plan is not valid for ``problem``.
        PartitionTunerError: a partition model fails the ONNX checker.
    """
    out = Path(os.path.abspath(out_dir)) if Path(out_dir).name in ("", ".", "..") else Path(out_dir)
    replace = _check_target(out, force)
    manifest = build_manifest(problem, plan)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write export directory {out}: {os_reason(exc)}") from None
    try:
        os.chmod(tmp, default_mode(directory=True))
        g = problem.graph
        for part, entry in zip(plan.partitions, manifest["partitions"], strict=True):
            outs = [t["name"] for t in entry["outputs"]]
            model = subgraph_model(g, part.ops, outputs=outs, name=f"{g.name}_p{entry['id']}")
            model.doc_string = f"partition {entry['id']} of {g.name} for {entry['device']} (plan: {plan.method})"
            try:
                onnx.checker.check_model(model, full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PartitionTunerError(f"partition {entry['id']} ({entry['device']}) is not a valid ONNX model: {first}") from None
            _write_model(model, tmp / entry["file"])
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        (tmp / MANIFEST_YAML).write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100))
        _move_into_place(tmp, out, replace)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write export directory {out}: {os_reason(exc)}") from None
        raise
    return ExportResult(out, tuple(p["file"] for p in manifest["partitions"]), manifest)


def _move_into_place(tmp: Path, out: Path, replace: bool) -> None:
    if not replace:
        if out.is_dir():  # empty: rename(2) replaces an empty directory atomically
            try:
                os.replace(tmp, out)
                return
            except OSError:
                out.rmdir()
        os.replace(tmp, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(backup)
    os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read an export's ``manifest.json`` (:func:`partitiontuner.runtime.read_manifest`,
    which the deployable runner shares).

    Raises:
        ConfigError: missing, unreadable or not an export manifest.
    """
    return read_manifest(out_dir)


def run_exported(out_dir: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an export the way a back end would: each partition model in ``sequence``
    (ONNX Runtime on this CPU, whatever its PU), tensors passed by name.

    Returns:
        The graph outputs by name.
    """
    import onnxruntime as ort

    out = Path(out_dir)
    m = load_manifest(out)
    tensors: dict[str, np.ndarray] = dict(feeds)
    parts = {p["id"]: p for p in m["partitions"]}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for i in m["sequence"]:
        p = parts[i]
        sess = ort.InferenceSession(str(out / p["file"]), so, providers=["CPUExecutionProvider"])
        names = [o["name"] for o in p["outputs"]]
        values = sess.run(names, {t["name"]: tensors[t["name"]] for t in p["inputs"]})
        tensors.update(zip(names, values, strict=True))
    return {t["name"]: tensors[t["name"]] for t in m["graph_outputs"]}
