"""The paper's static baselines: everything on the host CPU, and NPU-first.

``npu-first`` is the paper's *static type-based* operator scheduling: every op an NPU
supports goes to the NPU, the rest to the CPU, one partition per maximal same-PU run.
Choices where the paper has one CPU and one NPU:

* With several NPUs, an op goes to the first NPU (in platform order) that may run it.
* An op no NPU may run goes to the host CPU; if it may not run there either (pinned to
  another CPU, say), to the first PU in platform order that may run it.
* Partitions run in topological order of their first op.
"""

from __future__ import annotations

import numpy as np

from partitiontuner.agents.base import Planner
from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.repair import finish_plan
from partitiontuner.runs import runs_in_sequence


class CpuOnlyPlanner(Planner):
    """Every op on the host PU (``problem.host``), as maximal runs."""

    name = "cpu-only"

    def plan(self, problem: Problem) -> Plan:
        host = problem.host
        bad = np.flatnonzero(~problem.allowed[:, host])
        if len(bad):
            v = int(bad[0])
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise InfeasiblePlanError(
                f"cpu-only: op {problem.graph.nodes[v].name!r}{more} may not run on the host "
                f"{problem.pus[host]!r}: {problem.excluded_reason(v, host)}"
            )
        parts = runs_in_sequence(problem.graph, [host] * problem.num_ops)
        return finish_plan(problem, parts, self.name)


class NpuFirstPlanner(Planner):
    """The paper's static type-based baseline (see the module docstring)."""

    name = "npu-first"

    def plan(self, problem: Problem) -> Plan:
        parts = runs_in_sequence(problem.graph, npu_first_assignment(problem))
        return finish_plan(problem, parts, self.name)


def npu_first_assignment(problem: Problem) -> list[int]:
    """Op -> PU: the first NPU that may run it, else the host, else the first allowed PU."""
    npus = [j for j, d in enumerate(problem.platform.devices) if d.kind == "npu"]
    host = problem.host
    allowed = problem.allowed
    out = []
    for v in range(problem.num_ops):
        j = next((j for j in npus if allowed[v, j]), None)
        if j is None:
            j = host if allowed[v, host] else int(np.flatnonzero(allowed[v])[0])
        out.append(j)
    return out
