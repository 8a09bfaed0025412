"""Atomic file writes: a temporary file in the same directory, then ``os.replace``.

Nothing half-written is ever left under the final name, even on Ctrl-C. The file gets
the mode an ordinary ``open(path, "w")`` would give it (``0o666`` minus the user's
umask), not the ``0o600`` of :func:`tempfile.mkstemp`. A path that cannot be written
(a directory, a read-only or pseudo file system, a parent that is a file) raises
:class:`OutputError`, which is both a :class:`ConfigError` (the CLI prints one line)
and an :class:`OSError` (callers that tolerate an unwritable cache keep working).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from partitiontuner.errors import ConfigError

_UMASK_LOCK = threading.Lock()


class OutputError(ConfigError, OSError):
    """An output file or directory cannot be written where the user asked."""


def umask() -> int:
    """The process umask (reading it means setting it, so under a lock)."""
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def default_mode(directory: bool = False) -> int:
    """The mode a new file (``0o666``) or directory (``0o777``) gets under the umask."""
    return (0o777 if directory else 0o666) & ~umask()


def os_reason(exc: OSError) -> str:
    """The readable part of an OS error (``Permission denied``), without the errno."""
    return exc.strerror or str(exc) or type(exc).__name__


def check_writable(path: str | Path, *, what: str = "output", directory: bool = False) -> Path:
    """Raise :class:`OutputError` now if ``path`` clearly cannot be written later.

    Checked before any long work (profiling, planning) so a typo costs nothing: the
    target must not be a directory (or, for ``directory=True``, not a file), its
    nearest existing ancestor must be a writable directory.

    Returns:
        ``path`` as a :class:`Path`.
    """
    p = Path(path)
    if not directory and p.is_dir():
        raise OutputError(f"cannot write {what} {p}: it is a directory")
    if directory and p.exists() and not p.is_dir():
        raise OutputError(f"cannot write {what} {p}: it exists and is not a directory")
    parent = p.parent if not (directory and p.is_dir()) else p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {p}: {parent} is not writable")
    return p


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    Raises:
        OutputError: ``path`` cannot be written (nothing is left behind).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {os_reason(exc)}") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {path}: {os_reason(exc)}") from None
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda p: p.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda p: p.write_text(text))
