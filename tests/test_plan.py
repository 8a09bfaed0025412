"""Plans: validation with clear messages, file round trips, atomic writes."""

from __future__ import annotations

import json

import pytest
import yaml
from graphs import chain, diamond, problem, two_pu_platform

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import (
    Partition,
    Plan,
    from_orders,
    load_plan,
    make_plan,
    save_plan,
    validate_plan,
)


@pytest.fixture
def dia():
    return problem(diamond(), two_pu_platform(), {"a": [5, 5], "b": [20, 20], "c": [20, None], "d": [5, 5]})


def _plan(p, parts):
    return Plan(tuple(Partition(tuple(o), d) for o, d in parts), p.graph.name, p.graph.content_hash, p.platform.name)


def test_valid_plan_passes(dia):
    validate_plan(dia, _plan(dia, [([0], "cpu"), ([1], "npu"), ([2], "cpu"), ([3], "cpu")]))


@pytest.mark.parametrize(
    "parts, message",
    [
        ([([0], "cpu"), ([1], "cpu"), ([3], "cpu")], "op 'c' is in no partition"),
        ([([0, 1], "cpu"), ([1, 2], "cpu"), ([3], "cpu")], "op 'b' is in partitions 0 and 1"),
        ([([0], "cpu"), ([1], "gpu"), ([2], "cpu"), ([3], "cpu")], "unknown PU 'gpu'"),
        ([([0], "cpu"), ([1], "cpu"), ([2], "npu"), ([3], "cpu")], "op 'c' cannot run on 'npu'"),
        ([([0, 3], "cpu"), ([1], "cpu"), ([2], "cpu")], "partition 0 is not convex"),
        ([([1], "cpu"), ([0], "cpu"), ([2], "cpu"), ([3], "cpu")], "runs before partition 1"),
    ],
)
def test_invalid_plans_name_the_first_violation(dia, parts, message):
    with pytest.raises(InfeasiblePlanError, match=message):
        validate_plan(dia, _plan(dia, parts))


def test_plan_for_another_model_is_rejected(dia):
    other = problem(chain(4), two_pu_platform(), {f"op{i}": [1, 1] for i in range(4)})
    plan = make_plan(other, [([0, 1, 2, 3], 0)], "x")
    with pytest.raises(InfeasiblePlanError, match="made for model 'chain4'"):
        validate_plan(dia, plan)


def test_orders_that_deadlock_are_rejected(dia):
    parts = [([0], "cpu"), ([1], "cpu"), ([2], "cpu"), ([3], "cpu")]
    with pytest.raises(InfeasiblePlanError, match="deadlock"):
        from_orders(dia, parts, {"cpu": [3, 0, 1, 2], "npu": []}, "x")
    plan = from_orders(dia, parts, {"cpu": [0, 2, 1, 3], "npu": []}, "x")
    assert [p.ops for p in plan.partitions] == [(0,), (2,), (1,), (3,)]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(dia, tmp_path, suffix):
    plan = make_plan(dia, [([0], 0), ([2], 0), ([1], 1), ([3], 0)], "manual", {"proven_optimal": True})
    path = tmp_path / f"plan{suffix}"
    save_plan(dia, plan, path, makespan_us=12.5)
    back = load_plan(dia, path)
    assert back == plan
    assert back.info["proven_optimal"] is True
    save_plan(dia, back, tmp_path / f"again{suffix}", makespan_us=12.5)
    assert (tmp_path / f"again{suffix}").read_text() == path.read_text()
    data = yaml.safe_load(path.read_text()) if suffix == ".yaml" else json.loads(path.read_text())
    assert data["order"] == {"cpu": [0, 1, 3], "npu": [2]}
    assert [p["backend"] for p in data["partitions"]] == ["cpu", "cpu", "npu", "cpu"]


def test_loading_a_plan_for_another_model_fails(dia, tmp_path):
    other = problem(chain(4), two_pu_platform(), {f"op{i}": [1, 1] for i in range(4)})
    save_plan(other, make_plan(other, [([0, 1, 2, 3], 0)], "x"), tmp_path / "p.yaml")
    with pytest.raises(InfeasiblePlanError, match="made for model 'chain4'"):
        load_plan(dia, tmp_path / "p.yaml")


def test_hand_edited_plan_errors(dia, tmp_path):
    plan = make_plan(dia, [([0], 0), ([1], 1), ([2], 0), ([3], 0)], "manual")
    path = tmp_path / "p.yaml"
    save_plan(dia, plan, path)
    data = yaml.safe_load(path.read_text())
    data["partitions"][1]["ops"] = ["b", "zzz"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InfeasiblePlanError, match="names op 'zzz'"):
        load_plan(dia, path)
    path.write_text("partitions: [")
    with pytest.raises(InfeasiblePlanError, match="not valid YAML"):
        load_plan(dia, path)
    with pytest.raises(InfeasiblePlanError, match="not found"):
        load_plan(dia, tmp_path / "missing.yaml")


def test_save_is_atomic(dia, tmp_path, monkeypatch):
    plan = make_plan(dia, [([0, 1, 2, 3], 0)], "manual")
    path = tmp_path / "p.json"
    save_plan(dia, plan, path)
    before = path.read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("partitiontuner.atomic.os.replace", boom)
    with pytest.raises(RuntimeError):
        save_plan(dia, make_plan(dia, [([0], 0), ([1], 0), ([2], 0), ([3], 0)], "manual"), path)
    assert path.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["p.json"]
