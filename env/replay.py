"""A plan as environment actions: the constructive half of the action space's
completeness (:mod:`partitiontuner.env.state` states the argument).

The plan's partitions are decided one after the other in the plan's sequence, each
partition's ops in ascending index (the graph's topological order): its first op opens a
new partition on the partition's PU, the others join it. The finished episode has the
plan's partitions and the plan's per-PU orders, so the simulator gives it the identical
makespan; the tests replay random plans and the oracle's this way.
"""

from __future__ import annotations

from partitiontuner.errors import InfeasiblePlanError
from partitiontuner.plan import Plan, validate_plan

from .state import ScheduleState

#: one decision: ``(op, pu, join)``
Action = tuple[int, int, bool]


def actions_for_plan(state: ScheduleState, plan: Plan) -> list[Action]:
    """The ``(op, pu, join)`` decisions that build ``plan`` from the start of an episode.

    Each decision is checked against the state's masks on the way (the state is left as
    it was found: the decisions are applied, then undone).

    Args:
        state: a state with no op decided yet (its problem is the plan's).
        plan: a valid plan of that problem.

    Returns:
        One decision per op, in the order to take them.

    Raises:
        ValueError: ``state`` has decided ops already.
        InfeasiblePlanError: the plan is not valid for the problem, or it breaks one of
            the masks (a memory capacity or partition limit that the plan exceeds).
    """
    if state.step_index:
        raise ValueError(f"actions_for_plan needs a state at the start of an episode, not after {state.step_index} steps")
    pr = state.problem
    validate_plan(pr, plan, check_constraints=False)
    names = pr.pus
    actions: list[Action] = []
    for part in plan.partitions:
        p = names.index(part.device)
        for i, v in enumerate(sorted(part.ops)):
            actions.append((v, p, i > 0))
    records = []
    try:
        for v, p, join in actions:
            if not state.action_mask(v)[p, int(join)]:
                node = pr.graph.nodes[v].name
                raise InfeasiblePlanError(f"the plan puts op {node!r} on {names[p]!r} "
                                          f"({'joining' if join else 'opening'} a partition), which the masks forbid")
            records.append(state.apply(p, join, v))
    finally:
        for r in reversed(records):
            state.undo(r)
    return actions
