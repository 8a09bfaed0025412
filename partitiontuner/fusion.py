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

from collections.abc import Iterable, Mapping

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
        """best[i] = best saving using the first i positions (runs broken at gaps)."""
        savings, max_len = self.savings, self.max_len
        best = [0.0] * (len(positions) + 1)
        for i in range(1, len(positions) + 1):
            b = best[i - 1]
            p_end = positions[i - 1]
            for length in range(2, max_len + 1):
                j = i - length
                if j < 0 or positions[j] != p_end - length + 1:
                    break
                s = savings.get((c, positions[j], length))
                if s is not None and best[j] + s[pu] > b:
                    b = best[j] + s[pu]
            best[i] = b
        return best

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
