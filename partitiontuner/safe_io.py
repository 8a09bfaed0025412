"""Read user files safely: regular files only, a size cap, UTF-8, bounded nesting.

Every reader of a file a user hands us (plans, platforms, profiles, constraints,
profile-cache entries, ONNX models) goes through here, so that a FIFO does not hang
the command, a symlink to ``/dev/zero`` does not read until memory runs out, a
non-UTF-8 file and a deeply nested YAML/JSON document (``RecursionError`` in the
parser) become one clear error naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from partitiontuner.errors import ConfigError, PartitionTunerError

#: plans, platforms, profiles and constraints are small; 64 MiB is far above any real one
MAX_TEXT_BYTES = 64 * 2**20
#: protobuf cannot parse a model above 2 GiB (larger ones keep their weights outside)
MAX_MODEL_BYTES = 2 * 2**30
#: nesting deeper than this is no file of ours (the parsers recurse once per level)
MAX_DEPTH = 64


def check_regular_file(path: str | Path, *, what: str, error: type[PartitionTunerError] = ConfigError,
                       max_bytes: int = MAX_TEXT_BYTES) -> Path:
    """``path`` if it names an existing regular file of at most ``max_bytes``.

    Raises:
        error: missing, a directory, a FIFO or device (symlinks are followed), too big.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    _check_stat(st, path, what, error, max_bytes)
    return path


def read_bytes(path: str | Path, *, what: str, error: type[PartitionTunerError] = ConfigError,
               max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.

    The file is opened without blocking (a FIFO would otherwise wait for a writer) and
    checked on the open descriptor, then read up to the cap only.

    Args:
        path: the file.
        what: what the file is, for the message ("plan file", "platform file", ...).
        error: the error class to raise.
        max_bytes: refuse larger files.

    Raises:
        error: missing, not a regular file, too big, or unreadable.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        _check_stat(os.fstat(fd), path, what, error, max_bytes)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise error(f"{what} {path} is larger than {_size(max_bytes)}; refusing to read it")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, *, what: str, error: type[PartitionTunerError] = ConfigError,
              max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file (see :func:`read_bytes`).

    Raises:
        error: as :func:`read_bytes`, or the file is not UTF-8 text.
    """
    raw = read_bytes(path, what=what, error=error, max_bytes=max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (invalid byte at offset {exc.start})") from None


def parse_json(text: str, *, where: str, error: type[PartitionTunerError] = ConfigError) -> Any:
    """``json.loads`` that turns bad syntax and too deep nesting into ``error``."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (truncated or corrupt?) at line {exc.lineno}") from None
    except _DuplicateKey as exc:
        raise error(f"{where}: duplicate key {exc.args[0]!r}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None
    check_depth(data, where=where, error=error)
    return data


def parse_yaml(text: str, *, where: str, error: type[PartitionTunerError] = ConfigError) -> Any:
    """``yaml.safe_load`` that turns bad syntax and too deep nesting into ``error``."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise error(f"{where}: not valid YAML (malformed{line}){': ' + problem if problem else ''}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None
    check_depth(data, where=where, error=error)
    return data


def check_depth(data: Any, *, where: str, error: type[PartitionTunerError] = ConfigError,
                max_depth: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than ``max_depth`` (checked without recursion),
    so that no later recursive walk of the data can hit Python's recursion limit."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{where}: nested more than {max_depth} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item if isinstance(k, tuple))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the
    last one silently, so a repeated setting would quietly override the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


def _check_stat(st: os.stat_result, path: Path, what: str, error: type[PartitionTunerError], max_bytes: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a FIFO, socket or device?)")
    if st.st_size > max_bytes:
        raise error(f"{what} {path} is {_size(st.st_size)}, larger than the {_size(max_bytes)} limit")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
