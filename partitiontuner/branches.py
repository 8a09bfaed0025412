"""Structure of an :class:`OpGraph`: branches, cut vertices, blocks, parallel width.

The paper's branch extractor finds *sequential* branches (chains of ops, one feeding
the next and nothing else) and *parallel* branches (chains that leave the same fork
and meet at the same join). Cut vertices are the ops every input-to-output path passes
through; at a cut vertex all earlier ops have finished and no later op has started,
so a schedule decomposes there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from partitiontuner.graph import OpGraph


@dataclass(frozen=True)
class Block:
    """Ops strictly between two consecutive cut vertices (``gap``), then the closing one.

    ``cut`` is the closing cut vertex, or ``None`` for a tail after the last cut vertex;
    ``branches`` are the gap's weakly connected components, each in topological order.
    """

    index: int
    gap: tuple[int, ...]
    cut: int | None
    branches: tuple[tuple[int, ...], ...]
    width: int

    @property
    def ops(self) -> tuple[int, ...]:
        return self.gap + ((self.cut,) if self.cut is not None else ())


@dataclass(frozen=True)
class GraphStructure:
    cut_vertices: tuple[int, ...]
    blocks: tuple[Block, ...]
    sequential_branches: tuple[tuple[int, ...], ...]
    max_parallel_width: int

    @property
    def max_block_ops(self) -> int:
        return max(len(b.ops) for b in self.blocks)


def cut_vertices(graph: OpGraph) -> tuple[int, ...]:
    """Ops that every path from a graph input to a graph output passes through.

    Nodes are topologically sorted, so ``v`` is a cut vertex iff no edge jumps over it:
    no op edge ``(a, b)`` with ``a < v < b``, no graph input read after ``v`` and no
    graph output written before ``v`` (inputs behave as edges from a source at -1,
    outputs as edges into a sink at ``n``).
    """
    n = graph.num_ops
    diff = [0] * (n + 2)  # spans over positions shifted by one: source is position 0

    def span(a: int, b: int) -> None:  # open interval (a, b) in shifted positions
        if b - a > 1:
            diff[a + 1] += 1
            diff[b] -= 1

    for e in graph.edges:
        span(e.src + 1, e.dst + 1)
    for consumers in graph.input_consumers.values():
        for c in consumers:
            span(0, c + 1)
    for producer in graph.output_producers.values():
        span(producer + 1, n + 1)
    cuts, running = [], 0
    for pos in range(1, n + 1):
        running += diff[pos]
        if running == 0:
            cuts.append(pos - 1)
    return tuple(cuts)


def sequential_branches(graph: OpGraph) -> tuple[tuple[int, ...], ...]:
    """Maximal chains ``u1 -> u2 -> ...`` where each link is the only way between them.

    A link ``u -> v`` joins a chain when ``v`` is ``u``'s only consumer and ``u`` is
    ``v``'s only producer (graph outputs written by ``u`` end the chain).
    """
    outputs = set(graph.output_producers.values())

    def linked(u: int) -> int | None:
        s = graph.succs[u]
        if len(s) == 1 and u not in outputs and graph.preds[s[0]] == (u,) and not _reads_input(graph, s[0]):
            return s[0]
        return None

    nxt = [linked(u) for u in range(graph.num_ops)]
    has_prev = {v for v in nxt if v is not None}
    chains = []
    for u in range(graph.num_ops):
        if u in has_prev:
            continue
        chain = [u]
        while nxt[chain[-1]] is not None:
            chain.append(nxt[chain[-1]])
        chains.append(tuple(chain))
    return tuple(chains)


def _reads_input(graph: OpGraph, v: int) -> bool:
    names = {t.name for t in graph.inputs}
    return any(t in names for t in graph.nodes[v].inputs)


def blocks(graph: OpGraph, cuts: tuple[int, ...] | None = None) -> tuple[Block, ...]:
    cuts = cut_vertices(graph) if cuts is None else cuts
    out: list[Block] = []
    prev = -1
    for c in [*cuts, graph.num_ops]:
        gap = tuple(range(prev + 1, c))
        cut = c if c < graph.num_ops else None
        if gap or cut is not None:
            comps = connected_components(graph, gap)
            out.append(Block(len(out), gap, cut, comps, _width(graph, gap) if gap else 1))
        prev = c
    return tuple(out)


def connected_components(graph: OpGraph, ops: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Weakly connected components of the subgraph induced by ``ops``, each sorted,
    ordered by their first op."""
    inside = set(ops)
    seen: set[int] = set()
    comps = []
    for s in ops:
        if s in seen:
            continue
        comp, queue = [], deque([s])
        seen.add(s)
        while queue:
            u = queue.popleft()
            comp.append(u)
            for v in graph.preds[u] + graph.succs[u]:
                if v in inside and v not in seen:
                    seen.add(v)
                    queue.append(v)
        comps.append(tuple(sorted(comp)))
    return tuple(sorted(comps))


def _width(graph: OpGraph, ops: tuple[int, ...]) -> int:
    """Largest antichain of the ops (Dilworth: n minus a maximum matching of the
    comparability bipartite graph)."""
    idx = {u: i for i, u in enumerate(ops)}
    n = len(ops)
    reach = [0] * n  # bitset of descendants within ops
    for i in range(n - 1, -1, -1):
        u = ops[i]
        bits = 0
        for v in graph.succs[u]:
            j = idx.get(v)
            if j is not None:
                bits |= (1 << j) | reach[j]
        reach[i] = bits
    adj = [[j for j in range(n) if reach[i] >> j & 1] for i in range(n)]
    match_r = [-1] * n

    def augment(i: int, seen: list[bool]) -> bool:
        for j in adj[i]:
            if not seen[j]:
                seen[j] = True
                if match_r[j] < 0 or augment(match_r[j], seen):
                    match_r[j] = i
                    return True
        return False

    matched = sum(augment(i, [False] * n) for i in range(n))
    return n - matched


def analyse(graph: OpGraph) -> GraphStructure:
    cuts = cut_vertices(graph)
    bl = blocks(graph, cuts)
    return GraphStructure(
        cut_vertices=cuts,
        blocks=bl,
        sequential_branches=sequential_branches(graph),
        max_parallel_width=max(b.width for b in bl),
    )


def chain_groups(graph: OpGraph, max_ops: int = 3) -> tuple[tuple[int, ...], ...]:
    """Candidate op groups: every run of 2..``max_ops`` consecutive ops of a sequential
    branch (Conv-Relu, Conv-BN-Relu, Add-Relu, ...), as NEST-C profiles them."""
    out = []
    for chain in sequential_branches(graph):
        for k in range(2, max_ops + 1):
            for s in range(len(chain) - k + 1):
                out.append(tuple(chain[s:s + k]))
    return tuple(sorted(out))
