"""A literal discrete-event simulation of a plan, written independently of
``partitiontuner.simulate``: an event queue of partition completions and tensor
arrivals, and PUs that pick their next partition when it is their turn and its inputs
are there. The tests check that it agrees with the fast simulator."""

from __future__ import annotations

import heapq

from partitiontuner.plan import Plan
from partitiontuner.problem import Problem


def event_makespan(problem: Problem, plan: Plan) -> float:
    g, names = problem.graph, problem.pus
    parts = [p.ops for p in plan.partitions]
    pu_of = [names.index(p.device) for p in plan.partitions]
    owner = {v: i for i, ops in enumerate(parts) for v in ops}
    queue_of = {j: [i for i in range(len(parts)) if pu_of[i] == j] for j in range(len(names))}
    # which (tensor, PU) each partition waits for
    needs: list[set[tuple[str, int]]] = []
    for i, ops in enumerate(parts):
        want = set()
        for v in ops:
            for t in g.nodes[v].inputs:
                if t in g.producer and owner[g.producer[t]] == i:
                    continue
                want.add((t, pu_of[i]))
        needs.append(want)
    arrived: set[tuple[str, int]] = set()
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(time: float, kind: str, data: object) -> None:
        nonlocal seq
        heapq.heappush(events, (time, seq, kind, data))
        seq += 1

    host = problem.host
    for t in g.inputs:
        for j in range(len(names)):
            push(problem.transfer_us(host, j, t.size_bytes), "arrive", (t.name, j))
    busy = [False] * len(names)
    position = [0] * len(names)
    end: dict[int, float] = {}
    now = 0.0

    def try_start() -> None:
        for j in range(len(names)):
            if busy[j] or position[j] >= len(queue_of[j]):
                continue
            i = queue_of[j][position[j]]
            if needs[i] <= arrived:
                busy[j] = True
                duration = problem.partition_time(parts[i], j) + problem.overhead[j]
                push(now + duration, "done", i)

    try_start()
    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "arrive":
            arrived.add(data)
        else:
            i = data
            j = pu_of[i]
            busy[j] = False
            position[j] += 1
            end[i] = now
            for t in {t for v in parts[i] for t in g.nodes[v].outputs}:
                size = g.tensors[t].size_bytes
                for k in range(len(names)):
                    push(now + problem.transfer_us(j, k, size), "arrive", (t, k))
        try_start()
    assert len(end) == len(parts), "plan deadlocked"
    makespan = max(end.values())
    for t in g.outputs:
        i = owner[g.output_producers[t.name]]
        makespan = max(makespan, end[i] + problem.transfer_us(pu_of[i], host, t.size_bytes))
    return makespan
