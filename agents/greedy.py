"""The paper's profiling-based baseline: each op on its own best PU.

As NEST-C's single-op-optimal plan: ops in topological order, each on the allowed PU
that minimises the time to run it alone (its profiled time plus the PU's dispatch
overhead, as a profiler measures a single op) plus the transfers it causes from its
predecessors' PUs (and from the host for graph inputs). Transfers to later consumers
and graph outputs are not counted (they are the consumers' decision, as in the paper).
Then one partition per maximal same-PU run, in topological order. Ties go to the
lower PU index. Profiled fused groups do not enter the choice (the baseline weighs
single ops); the simulator still runs the groups inside each resulting partition
fused, as for every plan.
"""

from __future__ import annotations

from partitiontuner.agents.base import Planner
from partitiontuner.plan import Plan
from partitiontuner.problem import Problem
from partitiontuner.repair import finish_plan
from partitiontuner.runs import runs_in_sequence
from partitiontuner.simulate import Simulator


class GreedyPlanner(Planner):
    name = "greedy"

    def plan(self, problem: Problem) -> Plan:
        sim = Simulator(problem)
        parts = runs_in_sequence(problem.graph, greedy_assignment(problem, sim))
        return finish_plan(problem, parts, self.name, simulator=sim)


def greedy_assignment(problem: Problem, sim: Simulator) -> list[int]:
    allowed = problem.allowed.tolist()
    host = problem.host
    assign = [0] * problem.num_ops
    for v in range(problem.num_ops):
        best, best_t = -1, float("inf")
        for p in range(problem.num_pus):
            if not allowed[v][p]:
                continue
            t = sim.op_time[v][p] + sim.overhead[p]
            for u, size in sim.in_edges[v]:
                t += sim.transfer(assign[u], p, size)
            if sim.reads_input[v]:
                t += sim.transfer(host, p, sim.input_bytes[v])
            if t < best_t:
                best, best_t = p, t
        assign[v] = best
    return assign
