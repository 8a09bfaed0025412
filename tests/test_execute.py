"""The executor: outputs equal the whole-model run; timing invariants that hold by
construction (emulated time, transfer arrival, little-core padding); clean failures.

Measured timings are never compared with expected numbers (the machine is shared);
only lower bounds the executor guarantees (it waits *at least* until a deadline) and
sanity (positive, finite) are asserted.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from graphs import chain, diamond, problem, two_pu_platform

from partitiontuner import execute
from partitiontuner.errors import InfeasiblePlanError, PartitionTunerError
from partitiontuner.execute import run_plan
from partitiontuner.plan import Plan, make_plan
from partitiontuner.platform import Platform, load_platform, platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.simulate import simulate
from partitiontuner.waiting import measure_wait_precision, wait_until
from partitiontuner.zoo import load_model

# ---------------------------------------------------------------------------------
# helpers


def zoo_problem(name: str, platform: str = "cpu-npu") -> Problem:
    """A zoo model with the committed fixture profiles (a missing fixture fails the test)."""
    g, pf = load_model(name), load_platform(platform)
    return Problem(g, pf, fixture_profiles(g, pf))


def interval_plan(p: Problem, block: int, method: str = "mixed") -> Plan:
    """Blocks of ``block`` consecutive ops (in topological order, hence convex)
    alternating between the NPU (when it can run the whole block) and the CPU; adjacent
    blocks on one PU merged."""
    npu = p.pus.index("npu")
    parts: list[tuple[list[int], int]] = []
    for k, lo in enumerate(range(0, p.num_ops, block)):
        ops = list(range(lo, min(lo + block, p.num_ops)))
        pu = npu if k % 2 == 1 and all(p.allowed[v, npu] for v in ops) else p.host
        if parts and parts[-1][1] == pu:
            parts[-1][0].extend(ops)
        else:
            parts.append((ops, pu))
    return make_plan(p, parts, method)


def check_sane(res: execute.ExecutionResult, plan: Plan) -> None:
    assert math.isfinite(res.measured_makespan_us) and res.measured_makespan_us > 0
    assert len(res.makespan_runs_us) == res.repeat
    assert len(res.partitions) == plan.num_partitions
    for part, want in zip(res.partitions, plan.partitions, strict=True):
        assert part.device == want.device
        assert 0 <= part.measured_start_us <= part.measured_end_us <= res.measured_makespan_us + 1e-6
        assert math.isfinite(part.measured_us_median) and part.measured_us_median >= 0


# ---------------------------------------------------------------------------------
# zoo models: outputs match the whole-model run


@pytest.mark.parametrize("model", ["squeezenet", "resnet18"])
def test_cpu_only_and_mixed_plans_reproduce_the_model(model: str) -> None:
    p = zoo_problem(model)
    cpu_only = make_plan(p, [(list(range(p.num_ops)), p.host)], "cpu-only")
    mixed = interval_plan(p, 6)
    assert {q.device for q in mixed.partitions} == {"cpu", "npu"} and mixed.num_partitions >= 4
    for plan in (cpu_only, mixed):
        res = run_plan(p, plan, repeat=1, warmup=0)
        assert res.outputs_match, f"{model} {plan.method}: max abs error {res.max_abs_error}"
        assert res.max_abs_error <= execute.ATOL + execute.RTOL * 1.0
        assert res.simulated_makespan_us == pytest.approx(simulate(p, plan).makespan_us)
        check_sane(res, plan)
    assert res.emulated_pus == ("npu",)
    assert any(part.emulated for part in res.partitions) and not all(part.emulated for part in res.partitions)
    d = res.to_dict()
    assert {"measured_makespan_us", "simulated_makespan_us", "outputs_match", "per_partition", "emulated_pus"} <= set(d)
    assert [x["id"] for x in d["per_partition"]] == list(range(mixed.num_partitions))


def test_wrong_tensor_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a corrupted reference tensor handed on by the NPU
    changes the outputs, and outputs_match says so."""
    p = problem(chain(4), two_pu_platform(), {f"op{i}": [1.0, 1.0] for i in range(4)})
    plan = make_plan(p, [([0, 1], 0), ([2], 1), ([3], 0)], "test")
    real = execute.reference_run

    def corrupted(problem, feeds, extra=()):
        ref = real(problem, feeds, extra)
        ref["t2"] = ref["t2"] + 1.0  # what the emulated NPU hands on
        return ref

    monkeypatch.setattr(execute, "reference_run", corrupted)
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert not res.outputs_match and res.max_abs_error == pytest.approx(1.0, rel=1e-6)


# ---------------------------------------------------------------------------------
# timing invariants that hold by construction


def test_emulated_time_transfers_and_inputs_are_respected() -> None:
    # cpu overhead 1, npu overhead 2; link 300 us + 1,000 bytes/us; tensors 1,000 bytes
    pf = two_pu_platform(latency_us=300.0, bandwidth_gbps=1.0)
    p = problem(chain(4), pf, {"op0": [1.0, 2000.0], "op1": [1.0, 1.0], "op2": [1.0, 3000.0], "op3": [1.0, 1.0]})
    plan = make_plan(p, [([0], 1), ([1], 0), ([2], 1), ([3], 0)], "test")
    res = run_plan(p, plan, repeat=2, warmup=0)
    assert res.outputs_match and res.emulated_pus == ("npu",) and res.padded_pus == ()
    assert any("emulated" in n for n in res.notes)
    parts = res.partitions
    transfer = 300.0 + 1.0
    eps = 1e-3
    # graph input on the host at t = 0, then across the link
    assert parts[0].measured_start_us >= transfer - eps
    # emulated partitions last work + overhead at least
    assert parts[0].measured_us >= 2000.0 + 2.0 - eps
    assert parts[2].measured_us >= 3000.0 + 2.0 - eps
    # every consumer on the other PU waits for producer end + transfer
    for a, b in zip(parts, parts[1:], strict=False):
        assert b.measured_start_us >= a.measured_end_us + transfer - eps
    # the output made on the CPU needs no transfer; the makespan covers every partition
    assert res.measured_makespan_us >= parts[-1].measured_end_us - eps
    assert res.measured_makespan_us >= 2 * 2002.0 + 1000.0 + 4 * transfer
    assert [q.simulated_start_us for q in parts] == pytest.approx([t.start_us for t in simulate(p, plan).partitions])


def test_output_made_on_the_npu_must_reach_the_host() -> None:
    pf = two_pu_platform(latency_us=500.0, bandwidth_gbps=1.0)
    p = problem(chain(2), pf, {"op0": [1.0, 1.0], "op1": [1.0, 100.0]})
    plan = make_plan(p, [([0], 0), ([1], 1)], "test")
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert res.outputs_match
    npu_part = res.partitions[1]
    assert res.measured_makespan_us >= npu_part.measured_end_us + 501.0 - 1e-3
    assert res.simulated_makespan_us == pytest.approx(simulate(p, plan).makespan_us)


def test_three_pus_and_a_host_without_partitions() -> None:
    pf = two_pu_platform(latency_us=50.0, extra_npus=1)  # cpu, npu, npu2
    p = problem(chain(4), pf, {f"op{i}": [1.0, 30.0, 40.0] for i in range(4)})
    plan = make_plan(p, [([0], 1), ([1], 2), ([2], 0), ([3], 2)], "test")
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert res.outputs_match and res.emulated_pus == ("npu", "npu2")
    parts = res.partitions
    for a, b in zip(parts, parts[1:], strict=False):
        assert b.measured_start_us >= a.measured_end_us + 51.0 - 1e-3
    assert res.measured_makespan_us >= parts[-1].measured_end_us + 51.0 - 1e-3
    all_npu = make_plan(p, [([0, 1, 2, 3], 1)], "test")  # the host only receives the output
    res = run_plan(p, all_npu, repeat=1, warmup=0)
    assert res.outputs_match and res.measured_makespan_us >= 51.0 + 4 * 30.0 + 2.0 + 51.0 - 1e-3


def test_parallel_branches_on_two_pus() -> None:
    p = problem(diamond(), two_pu_platform(), {n: [1.0, 500.0] for n in ("a", "b", "c", "d")})
    plan = make_plan(p, [([0], 0), ([2], 1), ([1], 0), ([3], 0)], "test")
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert res.outputs_match
    check_sane(res, plan)


def _big_little() -> Platform:
    return platform_from_dict({
        "name": "bl", "pus": [
            {"name": "big", "kind": "cpu", "dispatch_overhead_us": 1},
            {"name": "little", "kind": "cpu", "speed_factor": 0.25, "dispatch_overhead_us": 1}],
        "links": [{"between": ["big", "little"], "latency_us": 1, "bandwidth_gbps": 10}],
    })


class _SlowSession:
    """Wraps an ORT session so every run lasts at least ``delay_s``."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s

    def run(self, outputs, feeds):
        t = time.perf_counter()
        out = self.inner.run(outputs, feeds)
        wait_until(t + self.delay_s)
        return out


def test_little_core_is_padded_to_measured_over_speed_factor() -> None:
    p = problem(chain(3), _big_little(), {f"op{i}": [1.0, 4.0] for i in range(3)})
    plan = make_plan(p, [([0], 0), ([1], 1), ([2], 0)], "test")
    ex = execute.Executor(p, plan)
    step = ex.steps[1]
    assert not step.emulated and step.pad_factor == pytest.approx(4.0)
    object.__setattr__(step, "session", _SlowSession(step.session, 2e-3))
    rec = ex.run(1)[0]
    assert rec.end[1] - rec.start[1] >= 4 * 2e-3 - 1e-6  # >= 2 ms run / 0.25
    res = run_plan(p, plan, repeat=1, warmup=0)
    assert res.outputs_match and res.padded_pus == ("little",) and res.emulated_pus == ()


# ---------------------------------------------------------------------------------
# bad input and failures


def test_failing_partition_raises_instead_of_hanging() -> None:
    p = problem(chain(3), two_pu_platform(), {f"op{i}": [1.0, 50_000.0] for i in range(3)})
    plan = make_plan(p, [([0], 0), ([1], 1), ([2], 0)], "test")
    ex = execute.Executor(p, plan)

    class Broken:
        def run(self, outputs, feeds):
            raise RuntimeError("device lost")

    object.__setattr__(ex.steps[0], "session", Broken())
    before = threading.active_count()
    caught: list[BaseException] = []

    def body() -> None:
        try:
            ex.run(2)
        except BaseException as exc:  # handed to the test thread below
            caught.append(exc)

    runner = threading.Thread(target=body, daemon=True)
    runner.start()
    runner.join(timeout=300)  # a hang guard, not a speed requirement
    assert not runner.is_alive(), "the executor hung after a partition failed"
    assert len(caught) == 1 and isinstance(caught[0], PartitionTunerError) and "device lost" in str(caught[0])
    assert threading.active_count() <= before  # the workers are gone


def test_plan_for_another_model_is_rejected() -> None:
    p = problem(chain(3), two_pu_platform(), {f"op{i}": [1.0, 1.0] for i in range(3)})
    other = problem(chain(4), two_pu_platform(), {f"op{i}": [1.0, 1.0] for i in range(4)})
    plan = make_plan(other, [([0, 1, 2, 3], 0)], "test")
    with pytest.raises(InfeasiblePlanError, match="made for model"):
        run_plan(p, plan, repeat=1)
    with pytest.raises(PartitionTunerError, match="repeat"):
        run_plan(p, make_plan(p, [([0, 1, 2], 0)], "test"), repeat=0)


def test_wait_until_never_returns_early() -> None:
    for d in (0.0, 20e-6, 150e-6, 1e-3):
        deadline = time.perf_counter() + d
        late = wait_until(deadline)
        assert time.perf_counter() >= deadline and late >= 0.0
    assert wait_until(time.perf_counter() - 1.0) == 0.0
    w = measure_wait_precision(duration_us=200.0, samples=20)
    assert 0.0 <= w.median_late_us <= w.p90_late_us <= w.max_late_us
    assert 0.0 <= w.cpu_fraction <= 1.5 and math.isfinite(w.sleep_only_median_late_us)
