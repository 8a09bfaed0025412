"""The project's error types: the CLI catches the base class and prints one line."""

from __future__ import annotations


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
