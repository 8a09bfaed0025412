"""User controls and explanations: reason codes, strict mode, constraint parsing, and
every planner obeying pins, forbids, partition limits and memory on zoo models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from graphs import chain, diamond, problem, two_pu_platform

from partitiontuner.agents.registry import METHODS, make_planner
from partitiontuner.cli import main
from partitiontuner.constraints import Constraints, PlacementRule, load_constraints, parse_rule
from partitiontuner.errors import ConfigError, InfeasiblePlanError
from partitiontuner.plan import make_plan, memory_use, validate_plan
from partitiontuner.platform import load_platform, platform_from_dict
from partitiontuner.problem import Problem
from partitiontuner.profiling.fixtures import fixture_profiles
from partitiontuner.report import check_strict, placement_report
from partitiontuner.simulate import simulate
from partitiontuner.zoo import load_model


def _report(p, parts):
    plan = make_plan(p, parts, "manual")
    return placement_report(p, plan, simulate(p, plan))


def test_reason_codes_on_a_hand_built_graph():
    # a: pinned to cpu; b: npu cannot run it; c: forbidden on npu; d: chosen by cost
    times = {"a": [5, 1], "b": [20, None], "c": [20, 2], "d": [5, 1]}
    p = problem(diamond(), two_pu_platform(), times,
                constraints=Constraints(pins=(PlacementRule("a", "cpu"),), forbids=(PlacementRule("c", "npu"),)))
    rep = _report(p, [([0], 0), ([1], 0), ([2], 0), ([3], 0)])
    reasons = {o.op: o.reason for o in rep.ops}
    assert reasons == {"a": "pinned", "b": "unsupported", "c": "forbidden", "d": "cost"}
    d = next(o for o in rep.ops if o.op == "d")
    assert d.detail["latency_us"] == {"cpu": 5.0, "npu": 1.0}
    # on npu, d would need b and c (1,000 bytes each) moved in and its output moved back:
    # 3 x 11 us, against nothing on the cpu
    assert d.detail["transfer_avoided_us"] == pytest.approx(33.0)
    b = next(o for o in rep.ops if o.op == "b")
    assert b.detail["excluded_by"]["npu"] == "no npu profile for this op"  # the hand profile has none
    assert "--forbid" in next(o for o in rep.ops if o.op == "c").detail["excluded_by"]["npu"]
    # every op's span lies inside its partition
    for o, part in ((o, rep.partitions[o.partition]) for o in rep.ops):
        assert part.start_us <= o.start_us <= o.end_us <= part.end_us + 1e-9


def test_memory_reason_when_the_faster_pu_is_full():
    plat = two_pu_platform(npu_memory_mib=0.003)  # ~3 KB: room for one 1,000-byte op's activations
    p = problem(chain(2), plat, {"op0": [10, 1], "op1": [10, 1]})
    rep = _report(p, [([0], 1), ([1], 0)])
    op1 = next(o for o in rep.ops if o.op == "op1")
    assert op1.reason == "memory" and op1.detail["faster_pu"] == "npu"


def test_strict_and_fallback_warning():
    p = problem(chain(3), two_pu_platform(), {"op0": [10, 1], "op1": [10, None], "op2": [10, 1]})
    rep = _report(p, [([0], 1), ([1], 0), ([2], 1)])
    assert rep.fallback_summary() == "1 op fell back to the CPU because no NPU can run it (1 x Relu)"
    with pytest.raises(InfeasiblePlanError, match=r"--strict: 1 op\(s\) fall back .*op1 \(Relu\)"):
        check_strict(p, rep)
    all_cpu = _report(p, [([0, 1, 2], 0)])
    assert all_cpu.fallback_summary() is None  # nothing fell back: the plan uses no NPU


def test_rule_parsing_and_matching():
    g = diamond()
    assert parse_rule("a=cpu", "=", "pin") == PlacementRule("a", "cpu")
    assert parse_rule("type:Relu:npu", ":", "forbid") == PlacementRule("Relu", "npu", "type")
    assert PlacementRule("Relu", "npu").matches(g) == [0, 1, 2]  # an op type
    assert PlacementRule("[bc]", "npu").matches(g) == [1, 2]  # a glob over names
    assert PlacementRule("d", "npu").matches(g) == [3]  # an exact name wins
    with pytest.raises(ConfigError, match="expected PATTERN=PU"):
        parse_rule("a", "=", "pin")
    with pytest.raises(ConfigError, match="matches no op"):
        problem(g, two_pu_platform(), {n: [1, 1] for n in "abcd"}, constraints=Constraints(pins=(PlacementRule("zzz", "cpu"),)))
    with pytest.raises(ConfigError, match="no PU 'gpu'"):
        problem(g, two_pu_platform(), {n: [1, 1] for n in "abcd"}, constraints=Constraints(pins=(PlacementRule("a", "gpu"),)))


def test_constraints_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("pin: {a: cpu}\nforbid: {Relu: [npu]}\nmax_partitions: 3\nmin_partition_ops: 1\nstrict: true\n")
    c = load_constraints(f)
    assert c.pins == (PlacementRule("a", "cpu"),) and c.forbids == (PlacementRule("Relu", "npu"),)
    assert (c.max_partitions, c.min_partition_ops, c.strict) == (3, 1, True)
    f.write_text("pinn: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'pinn'"):
        load_constraints(f)
    with pytest.raises(ConfigError, match="must be >= 1"):
        Constraints(max_partitions=0)


def test_pinning_every_pu_away_is_a_clear_error():
    with pytest.raises(InfeasiblePlanError, match="op 'op1' can run on no PU"):
        problem(chain(2), two_pu_platform(), {"op0": [1, 1], "op1": [1, None]},
                constraints=Constraints(forbids=(PlacementRule("op1", "cpu"),)))


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_every_planner_obeys_constraints_on_zoo_models(method):
    """Pins, forbids, a partition limit and an NPU memory capacity together."""
    base = load_platform("cpu-npu")
    data = {"name": "cpu-npu-small", "pus": [
        {"name": d.name, "kind": d.kind, "dispatch_overhead_us": d.dispatch_overhead_us,
         **({"supports": sorted(d.supports), "max_conv_groups": d.max_conv_groups, "npu": dict(d.npu.__dict__),
             "memory_mib": 4} if d.kind == "npu" else {})} for d in base.devices],
        "links": [{"from": a, "to": b, "latency_us": lk.latency_us, "bandwidth_gbps": lk.bandwidth_gbps}
                  for (a, b), lk in base.links.items()]}
    plat = platform_from_dict(data)
    for model in ("squeezenet", "alexnet"):
        g = load_model(model)
        prof = fixture_profiles(g, base)
        from partitiontuner.profiling.profiles import Profiles

        prof = Profiles(prof.model, prof.model_hash, plat.name, prof.pus, prof.op_names, prof.op_latency_us,
                        prof.op_spread, prof.groups)
        first, last = g.nodes[0].name, g.nodes[-2].name
        c = Constraints(pins=(PlacementRule(first, "cpu"),), forbids=(PlacementRule(last, "npu"),), max_partitions=6)
        p = Problem(g, plat, prof, c)
        opts = {"oracle": {"time_limit_s": 8}, "random": {"samples": 20}}.get(method, {})
        plan = make_planner(method, **opts).plan(p)
        validate_plan(p, plan)  # checks pins, forbids, partition limit and memory
        dev = plan.device_of(g.num_ops)
        assert dev[0] == "cpu" and dev[g.num_ops - 2] != "npu"
        assert plan.num_partitions <= 6
        assert memory_use(p, plan)[1] <= 4 * 2**20


def test_cli_plan_with_constraints_and_report(tmp_path, capsys):
    code = main(["plan", "squeezenet", "--profiles", "fixture", "--method", "greedy", "--pin", "Softmax=cpu",
                 "--forbid", "n0:npu", "--max-partitions", "4", "--json", "--out", str(tmp_path / "p.yaml"),
                 "--dot", str(tmp_path / "p.dot")])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    placement = {o["op"]: o for o in data["placement"]}
    assert placement["n0"]["device"] == "cpu" and placement["n0"]["reason"] == "forbidden"
    assert len(data["partitions"]) <= 4
    assert {o["reason"] for o in data["placement"]} <= {"pinned", "unsupported", "forbidden", "memory", "cost"}
    assert (tmp_path / "p.dot").read_text().startswith("digraph")
    code = main(["plan", "squeezenet", "--profiles", "fixture", "--method", "greedy", "--strict"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--strict" in err[0]


def test_cli_rejects_impossible_constraints(capsys):
    code = main(["plan", "shufflenet", "--profiles", "fixture", "--method", "greedy", "--pin", "Transpose=npu"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "can run on no PU" in err[0]


def test_allowed_mask_combines_support_and_rules():
    g = load_model("squeezenet")
    plat = load_platform("cpu-npu")
    p = Problem(g, plat, fixture_profiles(g, plat), Constraints(forbids=(PlacementRule("Conv", "npu"),)))
    conv = np.array([n.op_type == "Conv" for n in g.nodes])
    assert not p.allowed[conv, 1].any() and p.allowed[conv, 0].all()
    assert not p.allowed[[n.op_type == "Softmax" for n in g.nodes], 1].any()


def test_fallback_and_strict_with_two_cpu_like_pus():
    """On big-little-npu an op no NPU can run still chooses between two CPUs (reason
    ``cost``); it is a fallback all the same, so the warning and --strict fire."""
    g, pf = load_model("squeezenet"), load_platform("big-little-npu")
    p = Problem(g, pf, fixture_profiles(g, pf))
    softmax = next(n.index for n in g.nodes if n.op_type == "Softmax")
    rest = [v for v in range(g.num_ops) if v != softmax]
    for cpu in ("big", "little"):
        rep = _report(p, [(rest, "npu"), ([softmax], cpu)])
        (fb,) = rep.fallbacks()
        assert fb.op_type == "Softmax" and fb.device == cpu and fb.reason == "cost" and fb.fallback == "Softmax"
        assert rep.fallback_summary() == "1 op fell back to the CPU because no NPU can run it (1 x Softmax)"
        with pytest.raises(InfeasiblePlanError, match=r"--strict: 1 op\(s\) fall back .*Softmax"):
            check_strict(p, rep)
    # an op the NPU could run, placed on a CPU by choice, is no fallback
    conv = next(n.index for n in g.nodes if n.op_type == "Conv")
    rep = _report(p, [([conv], "big"), ([v for v in rest if v != conv], "npu"), ([softmax], "little")])
    assert [o.op_type for o in rep.fallbacks()] == ["Softmax"]
