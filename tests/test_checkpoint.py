"""Reading policy checkpoints safely: a crafted file is refused before anything is built."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from partitiontuner.agents import policy_io
from partitiontuner.agents.gnn_policy import GNNPolicy
from partitiontuner.agents.policy_io import (
    POLICY_LIMITS,
    load_checkpoint,
    policy_checksum,
    shipped_checkpoint,
)
from partitiontuner.errors import ConfigError
from partitiontuner.training.checkpoint import Checkpoint, save_checkpoint

SMALL = {"channels": 8, "num_layers": 1, "hidden": 16}


def small_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    policy = GNNPolicy(**SMALL)
    return Checkpoint(dict(policy.config), {k: v.clone() for k, v in policy.state_dict().items()})


def write_raw(path, data: dict):
    torch.save(data, path)
    return path


@pytest.fixture
def no_building(monkeypatch):
    """Fail the test if the reader builds a policy of the crafted (too large) size."""
    built = []

    class Spy(GNNPolicy):
        def __init__(self, **config):
            built.append(config)
            assert all(config[k] <= POLICY_LIMITS[k][1] for k in POLICY_LIMITS), "built a policy out of bounds"
            super().__init__(**config)

    monkeypatch.setattr(policy_io, "GNNPolicy", Spy)
    return built


@pytest.mark.parametrize("key, value", [("num_layers", 100000), ("hidden", 6000), ("channels", 0),
                                        ("hidden", 12.5), ("num_layers", True)])
def test_config_out_of_bounds_is_refused_before_building(tmp_path, no_building, key, value):
    ck = small_checkpoint()
    data = ck.to_dict()
    data["policy_config"] = {**SMALL, key: value}
    path = write_raw(tmp_path / "crafted.pt", data)
    with pytest.raises(ConfigError, match=f"crafted.pt: policy {key} must be an integer"):
        load_checkpoint(path)
    assert no_building == []


def test_config_with_unknown_or_missing_keys_is_refused(tmp_path):
    data = small_checkpoint().to_dict()
    data["policy_config"] = {"channels": 8, "num_layers": 1}
    with pytest.raises(ConfigError, match="must have exactly channels, num_layers, hidden"):
        load_checkpoint(write_raw(tmp_path / "a.pt", data))
    data["policy_config"] = {**SMALL, "heads": 4}
    with pytest.raises(ConfigError, match="must have exactly"):
        load_checkpoint(write_raw(tmp_path / "b.pt", data))


def test_tensor_shapes_must_match_the_config(tmp_path, no_building):
    ck = small_checkpoint()
    bigger = replace(ck, policy_config={**SMALL, "hidden": 32})  # in bounds, but not these tensors
    with pytest.raises(ConfigError, match="do not fit the policy"):
        load_checkpoint(save_checkpoint(tmp_path / "shape.pt", bigger))
    missing = replace(ck, policy_state={k: v for k, v in list(ck.policy_state.items())[1:]})
    with pytest.raises(ConfigError, match="do not fit the policy"):
        load_checkpoint(save_checkpoint(tmp_path / "missing.pt", missing))
    ints = replace(ck, policy_state={k: v.to(torch.int64) for k, v in ck.policy_state.items()})
    with pytest.raises(ConfigError, match="float tensor"):
        load_checkpoint(save_checkpoint(tmp_path / "ints.pt", ints))
    assert no_building == [{**SMALL, "hidden": 32}, SMALL, SMALL]  # the files' own sizes, on the meta device


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    ck = small_checkpoint()
    name = next(iter(ck.policy_state))
    ck.policy_state[name].view(-1)[0] = bad
    with pytest.raises(ConfigError, match=f"weight {name} holds NaN or infinite"):
        load_checkpoint(save_checkpoint(tmp_path / "nan.pt", ck))


def test_flipped_bytes_are_caught_by_the_checksum(tmp_path):
    ck = small_checkpoint()
    path = save_checkpoint(tmp_path / "good.pt", ck)
    assert load_checkpoint(path).policy_state.keys() == ck.policy_state.keys()
    weight = max(ck.policy_state.values(), key=lambda t: t.numel())
    raw, needle = bytearray(path.read_bytes()), weight.contiguous().numpy().tobytes()[:64]
    at = bytes(raw).find(needle)
    assert at > 0 and bytes(raw).count(needle) == 1
    raw[at + 5] ^= 0x10  # one flipped bit in a mantissa: still a finite, plausible weight
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="damaged.pt: checkpoint weights do not match their checksum"):
        load_checkpoint(damaged)


def test_checkpoints_without_a_checksum_are_still_read(tmp_path):
    data = small_checkpoint().to_dict()
    assert data["policy_sha256"] == policy_checksum(data["policy"])
    del data["policy_sha256"]  # as written before checksums existed
    ck = load_checkpoint(write_raw(tmp_path / "old.pt", data))
    assert ck.make_policy().config == SMALL
    shipped = load_checkpoint(shipped_checkpoint())  # the shipped policy has none either
    assert shipped.policy_config == {"channels": 64, "num_layers": 4, "hidden": 128}


def test_plan_with_a_crafted_checkpoint_is_one_line_exit_2(tmp_path):
    data = small_checkpoint().to_dict()
    data["policy_config"] = {**SMALL, "num_layers": 100000}
    path = write_raw(tmp_path / "crafted.pt", data)
    res = subprocess.run([sys.executable, "-m", "partitiontuner.cli", "plan", "squeezenet", "--profiles", "fixture",
                          "--method", "rl", "--checkpoint", str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "num_layers must be an integer from 1 to 32" in res.stderr
