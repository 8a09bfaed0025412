"""The project's error types: the CLI catches the base class and prints one line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PartitionTunerError(Exception):
    """Base of every error a user can cause (bad file, bad flag, impossible request)."""


class GraphLoadError(PartitionTunerError):
    """An ONNX model cannot be read, shape-inferred or understood."""


class ProfileError(PartitionTunerError):
    """Profiles are missing, corrupt or do not match the graph and platform."""


class InfeasiblePlanError(PartitionTunerError):
    """A plan is invalid, or no plan satisfies the constraints."""


class ConfigError(PartitionTunerError):
    """A bad option, platform, preset, checkpoint or constraint file."""


#: exit code of every command for an error the user caused
EXIT_USER_ERROR = 2
#: exit code after Ctrl-C (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130


def run_entry_point(func: Callable[[], int | None], *, debug: bool = False, prog: str = "partitiontuner") -> int:
    """Run a command's body and turn the errors a user can cause into one line on stderr.

    Every entry point (the CLI, ``python -m`` scripts) goes through here so they agree
    on the message prefix and the exit codes.

    Args:
        func: the command; its return value is the exit code (``None`` means 0).
        debug: re-raise instead of printing, so the traceback shows.
        prog: the name that starts the message.

    Returns:
        The exit code: ``func``'s, :data:`EXIT_USER_ERROR` for a
        :class:`PartitionTunerError`, :data:`EXIT_INTERRUPTED` after Ctrl-C.
    """
    try:
        return int(func() or 0)
    except PartitionTunerError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
