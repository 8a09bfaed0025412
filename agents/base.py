"""The one planner interface, and helpers every planner shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from partitiontuner.plan import Plan
from partitiontuner.problem import Problem


class Planner(ABC):
    """``plan(problem) -> Plan``: a valid plan that obeys ``problem.constraints``, or
    :class:`~partitiontuner.errors.InfeasiblePlanError` naming the constraint that
    cannot be met."""

    name: ClassVar[str]

    @abstractmethod
    def plan(self, problem: Problem) -> Plan:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


Assignment = Sequence[int]  # op index -> PU index
