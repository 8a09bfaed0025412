"""Shared pytest fixtures, kept small and generic."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from partitiontuner.graph import OpGraph


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the profile cache (``PARTITIONTUNER_CACHE``) at a fresh temporary folder."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("PARTITIONTUNER_CACHE", str(root))
    return root


@functools.cache
def _zoo_graph(name: str) -> OpGraph:
    from partitiontuner.zoo import load_model

    return load_model(name)


@pytest.fixture(scope="session")
def zoo_graph() -> Callable[[str], OpGraph]:
    """``zoo_graph(name)``: the built-in model, loaded once per test session.

    OpGraphs are immutable records, so tests may share them; do not mutate one.
    """
    return _zoo_graph
