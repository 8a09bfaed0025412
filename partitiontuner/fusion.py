"""Fusion inside a partition: the cheapest cover of its ops by profiled groups.

Profiled groups are runs of 2-3 consecutive ops of one sequential branch (Conv-Relu,
Conv-BN-Relu, Add-Relu, ...). A partition runs its ops as fused pieces: every
profiled group wholly inside it may run fused (its group time) instead of op by op,
groups used together must not share an op, and the runtime picks the cheapest such
cover. So a partition that *is* a profiled group lasts that group's time (when faster
than its ops one by one), a partition with no profiled group inside lasts the sum of
its ops, and a large partition still gets every fusion it contains. Because groups
are runs of one chain, the best cover is a weighted-interval dynamic program along
each chain: linear in the partition's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from partitiontuner.branches import sequential_branches
from partitiontuner.errors import ProfileError
from partitiontuner.graph import OpGraph


class FusionTable:
    """Per-PU savings of profiled groups, and the best cover of any op set.

    ``saving(group, pu) = max(0, sum of the group's op times - group time)``.
    """

    def __init__(self, graph: OpGraph, op_time: np.ndarray, group_time: Mapping[frozenset[int], np.ndarray]):
        chains = sequential_branches(graph)
        self.chain = [-1] * graph.num_ops
        self.pos = [-1] * graph.num_ops
        for c, chain in enumerate(chains):
            for k, v in enumerate(chain):
                self.chain[v] = c
                self.pos[v] = k
        self.chains = chains
        num_pus = op_time.shape[1]
        # (chain, first position, length) -> saving per PU
        self.savings: dict[tuple[int, int, int], list[float]] = {}
        self.max_len = 1
        for ops, gt in group_time.items():
            members = sorted(ops, key=lambda v: self.pos[v])
            c = self.chain[members[0]]
            start = self.pos[members[0]]
            if any(self.chain[v] != c for v in members) or [self.pos[v] for v in members] != list(range(start, start + len(members))):
                names = ", ".join(graph.nodes[v].name for v in members)
                raise ProfileError(f"profiled group [{names}] is not a run of consecutive ops of one sequential branch")
            total = op_time[members].sum(axis=0)
            with np.errstate(invalid="ignore"):
                s = np.where(np.isfinite(gt) & np.isfinite(total), np.maximum(total - gt, 0.0), 0.0)
            if (s > 0).any():
                self.savings[(c, start, len(members))] = [float(x) for x in s[:num_pus]]
                self.max_len = max(self.max_len, len(members))

    def saving(self, ops: Iterable[int], pu: int) -> float:
        """Largest total saving of disjoint profiled groups lying inside ``ops``."""
        if not self.savings:
            return 0.0
        by_chain: dict[int, list[int]] = {}
        chain, pos = self.chain, self.pos
        for v in ops:
            by_chain.setdefault(chain[v], []).append(pos[v])
        total = 0.0
        for c, positions in by_chain.items():
            if len(positions) > 1:
                total += self._chain_saving(c, sorted(positions), pu)
        return total

    def cover(self, ops: Iterable[int], pu: int) -> list[tuple[int, ...]]:
        """The groups (op indices) that the best cover runs fused."""
        by_chain: dict[int, list[int]] = {}
        for v in ops:
            by_chain.setdefault(self.chain[v], []).append(self.pos[v])
        used = []
        for c, positions in by_chain.items():
            for start, length in self._chain_cover(c, sorted(positions), pu):
                used.append(tuple(self.chains[c][start:start + length]))
        return sorted(used)

    def _chain_saving(self, c: int, positions: list[int], pu: int) -> float:
        best = self._dp(c, positions, pu)
        return best[-1]

    def _dp(self, c: int, positions: list[int], pu: int) -> list[float]:
        return cover_dp(self.savings, self.max_len, c, positions, pu)

    def _chain_cover(self, c: int, positions: list[int], pu: int) -> list[tuple[int, int]]:
        best = self._dp(c, positions, pu)
        out = []
        i = len(positions)
        while i > 0:
            if best[i] == best[i - 1]:
                i -= 1
                continue
            p_end = positions[i - 1]
            for length in range(2, self.max_len + 1):
                j = i - length
                s = self.savings.get((c, positions[j], length)) if j >= 0 and positions[j] == p_end - length + 1 else None
                if s is not None and abs(best[j] + s[pu] - best[i]) < 1e-12:
                    out.append((positions[j], length))
                    i = j
                    break
            else:  # pragma: no cover - best[i] > best[i-1] means some group ends here
                raise AssertionError("inconsistent fusion cover")
        return out


def cover_dp(
    savings: Mapping[tuple[int, int, int], Sequence[float]], max_len: int, chain: int, positions: Sequence[int], pu: int,
    skip: tuple[int, int, int] | None = None,
) -> list:
    """``best[i]`` = the best saving of disjoint groups inside the first ``i`` of the
    sorted ``positions`` of one chain (runs broken at gaps); arguments as for
    :func:`cover_step`, which it runs once per position."""
    best: list = [0] * (len(positions) + 1)  # ints stay ints: the oracle needs integer costs
    for i in range(1, len(positions) + 1):
        best[i] = cover_step(savings, max_len, chain, positions, best, i, positions[i - 1], pu, skip)
    return best


def cover_step(
    savings: Mapping[tuple[int, int, int], Sequence[float]], max_len: int, chain: int, positions: Sequence[int],
    best: Sequence[float], i: int, last: int, pu: int, skip: tuple[int, int, int] | None = None,
) -> float:
    """One step of the cover's weighted-interval dynamic program along one chain.

    The one implementation of the rule; :class:`FusionTable` runs it over a whole
    partition, the environment extends a partition by one op with it, and the oracle
    runs it on its integer savings.

    Args:
        savings: saving per PU of each profiled group, keyed by (chain, first
            position, length) (:attr:`FusionTable.savings`, or the oracle's integers).
        max_len: the longest group.
        chain: the chain the positions lie on.
        positions: the held chain positions, ascending; entries ``0 .. i-2`` are read.
        best: ``best[j]`` = best saving using the first ``j`` positions, for ``j < i``.
        i: how many positions the step covers (``>= 1``).
        last: the ``i``-th position (``positions[i - 1]``, which the caller may not
            have appended yet).
        pu: the PU whose savings count.
        skip: a group key to leave out (the oracle prices a cover without one group).

    Returns:
        ``best[i]``: the best saving of disjoint groups inside the first ``i`` positions
        (a group counts only if its positions are consecutive, i.e. no gap inside it).
    """
    b = best[i - 1]
    for length in range(2, max_len + 1):
        j = i - length
        if j < 0 or positions[j] != last - length + 1:
            break
        key = (chain, positions[j], length)
        s = savings.get(key)
        if s is not None and key != skip and best[j] + s[pu] > b:
            b = best[j] + s[pu]
    return b
