"""Combinatorial lower bounds on a block's cost: what the oracle can claim without search.

The cost of a block (:class:`~partitiontuner.agents.oracle_model.BlockModel`) is, with
a right boundary, ``SR + t(B)`` (the right partition's start plus the work of the ops
it takes), else the makespan ``M``; time 0 is the end of the left boundary's core.
Every op of the block runs in exactly one of: the left partition's grown part ``A``
(on the left PU, in ``[0, TL]``), a free slot (in ``[TL, SR]``, or before ``M``), or
the right partition's grown part ``B`` (charged as ``t(B)`` after ``SR``).

Work per op. A partition's work is its ops' summed times minus the savings of the
disjoint profiled groups it fuses (plus a dispatch overhead >= 0 for free slots).
Split each group's saving over its ops in proportion to their times: the share of
op ``v`` is ``saving * t_v / t(G)`` <= ``t_v`` (a group never saves more than its
ops' summed time). Then any partition's work is at least the sum over its ops of
``lw_v(p) = t_v(p) - max share of v over the groups holding it`` (>= 0): the fused
groups are disjoint, so each op gives up at most one share. Hence:

* **Critical path.** Along a path of block edges the ops lie in ``A`` (a prefix: ``A``
  is predecessor-closed), then in free slots (consecutive runs per slot: slots are
  convex, and an edge across slots starts its consumer's slot after the producer's
  ends, so the slots' intervals are disjoint and ordered inside ``[TL, SR]``), then in
  ``B`` (a suffix). So ``cost >= TL + (SR - TL) + t(B) >= sum over the path of
  min_p lw_v(p)``.
* **Load.** For any set ``Q`` of PUs, the ops that may run only on ``Q`` keep the PUs
  of ``Q`` busy for at least their summed ``min_{p in Q} lw_v(p)``, all inside
  ``[0, SR]`` except ``t(B)``: ``|Q| * cost >= that sum``. ``Q`` = every PU is the
  plain load bound; a single PU counts the ops only it may run.
* **Fixed transfers.** A tensor from the left to the right boundary partition, from
  the host to the right one (graph inputs) or from the left one to the host (graph
  outputs) crosses between fixed PUs: the cost is at least that transfer.

All three are bounds on the model's integer cost, so they compose through the
decomposition exactly as CP-SAT's own block bounds do (the oracle's dynamic program
over block lower bounds) and mix with them by taking the larger.
"""

from __future__ import annotations

import itertools
import math

from partitiontuner.agents.oracle_model import BlockModel


def op_lower_work(model: BlockModel) -> list[list[float | None]]:
    """``lw[v][p]``: a lower bound on unit ``v``'s share of any partition's work on PU
    ``p`` (``None`` where it may not run there), see the module docstring."""
    tab, P = model.tab, model.num_pus
    share: dict[tuple[int, int], list[float]] = {}  # (unit, position) -> largest share per PU
    for _members, local, saving in model.groups:
        ops = [(u, i, model.units[u][i]) for u, i in local]
        for p in range(P):
            if saving[p] <= 0:
                continue
            times = [tab.time[op][p] for _, _, op in ops]
            if any(t is None for t in times):
                continue
            total = sum(times)
            for (u, i, _), t in zip(ops, times, strict=True):
                row = share.setdefault((u, i), [0.0] * P)
                row[p] = max(row[p], saving[p] * t / total if total > 0 else 0.0)
    lw: list[list[float | None]] = []
    for v, unit in enumerate(model.units):
        row: list[float | None] = []
        for p in range(P):
            if model.ut[v][p] is None:
                row.append(None)
                continue
            given = sum(share.get((v, i), [0.0] * P)[p] for i in range(len(unit)))
            row.append(max(0.0, model.ut[v][p] - given))
        lw.append(row)
    return lw


def critical_path_bound(model: BlockModel, lw: list[list[float | None]]) -> float:
    """The longest path of block edges, each unit at its cheapest PU's lower work."""
    cheapest = [min(x for x in row if x is not None) for row in lw]
    preds: dict[int, list[int]] = {}
    for u, v in model.edges:
        preds.setdefault(v, []).append(u)
    longest = [0.0] * len(cheapest)
    for v in range(len(cheapest)):  # units are in a topological order
        longest[v] = cheapest[v] + max((longest[u] for u in preds.get(v, ())), default=0.0)
    return max(longest, default=0.0)


def load_bound(model: BlockModel, lw: list[list[float | None]]) -> float:
    """The largest, over sets ``Q`` of PUs, of the lower work of the ops that may run
    only on ``Q`` (at their cheapest PU of ``Q``) divided by ``|Q|``."""
    P = model.num_pus
    best = 0.0
    for size in range(1, P + 1):
        for Q in itertools.combinations(range(P), size):
            total = 0.0
            for row in lw:
                if all(row[p] is None for p in range(P) if p not in Q):
                    total += min(row[p] for p in Q if row[p] is not None)
            best = max(best, total / size)
    return best


def fixed_transfer_bound(model: BlockModel) -> int:
    """Transfers between the fixed boundary PUs and the host that the block always pays."""
    tab, left, right = model.tab, model.left, model.right
    out = 0
    if left is not None and right is not None and model.lr_bytes >= 0:
        out = max(out, tab.transfer(left.pu, right.pu, model.lr_bytes))
    if left is None and right is not None and model.r_in >= 0:
        out = max(out, tab.transfer(tab.host, right.pu, model.r_in))
    if right is None and left is not None and model.l_out >= 0:
        out = max(out, tab.transfer(left.pu, tab.host, model.l_out))
    return out


def block_lower_bound(model: BlockModel) -> int:
    """A lower bound on the block's optimal integer cost (see the module docstring)."""
    if not model.units:
        return fixed_transfer_bound(model)
    lw = op_lower_work(model)
    if any(all(x is None for x in row) for row in lw):
        return 0  # a unit no PU may run: the block is infeasible, CP-SAT says so
    best = max(critical_path_bound(model, lw), load_bound(model, lw))
    return max(fixed_transfer_bound(model), int(math.ceil(best - 1e-6)))
