"""Observations: fixed-size arrays (so a vector env can hold different graphs) that
convert to :class:`torch_geometric.data.Data`.

Keys (``N = max_ops``, ``E = max_edges``, ``P = max_pus``):

* ``x`` ``(N, len(NODE_STATIC) + len(NODE_DYNAMIC))`` float32: op features, zero rows
  past ``num_ops``;
* ``edge_index`` ``(2, E)`` int64 and ``edge_attr`` ``(E, len(EDGE))`` float32: the
  data edges (producer -> consumer), zero past ``num_edges``;
* ``pu`` ``(P, len(PU))`` float32: PU features, zero rows past ``num_pus``;
* ``actions`` ``(N * 2 * P, len(ACTION))`` float32: one row per action
  ``op * 2 * P + 2 * pu + join`` (zero rows for ops that are not ready and for masked
  actions);
* ``action_mask`` ``(N * 2 * P,)`` int8: the same mask as ``info["action_mask"]``;
* ``glob`` ``(len(GLOBAL),)`` float32;
* ``meta`` ``(5,)`` int64: ``num_ops, num_edges, num_pus, suggested op, graph key``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch_geometric.data import Batch, Data

from partitiontuner.errors import ConfigError

from .features import (
    ACTION,
    EDGE,
    GLOBAL,
    NODE_DYNAMIC,
    NODE_STATIC,
    PU,
    ProblemContext,
    action_features,
    global_features,
    pu_features,
)
from .state import ScheduleState

NODE = len(NODE_STATIC) + len(NODE_DYNAMIC)
META = ("num_ops", "num_edges", "num_pus", "current", "graph_key")
_KEY_MAX = 2**62
#: bound of every float feature (all are log-scaled, so they stay far inside it)
_BOUND = 1e6


def observation_space(max_ops: int, max_edges: int, max_pus: int) -> spaces.Dict:
    f32 = np.float32
    return spaces.Dict({
        "x": spaces.Box(-_BOUND, _BOUND, (max_ops, NODE), f32),
        "edge_index": spaces.Box(0, max(max_ops - 1, 0), (2, max_edges), np.int64),
        "edge_attr": spaces.Box(-_BOUND, _BOUND, (max_edges, len(EDGE)), f32),
        "pu": spaces.Box(-_BOUND, _BOUND, (max_pus, len(PU)), f32),
        "actions": spaces.Box(-_BOUND, _BOUND, (max_ops * 2 * max_pus, len(ACTION)), f32),
        "action_mask": spaces.Box(0, 1, (max_ops * 2 * max_pus,), np.int8),
        "glob": spaces.Box(-_BOUND, _BOUND, (len(GLOBAL),), f32),
        "meta": spaces.Box(0, _KEY_MAX, (len(META),), np.int64),
    })


def flat_mask(mask: np.ndarray, max_pus: int) -> np.ndarray:
    """``(num_pus, 2)`` bool -> ``(2 * max_pus,)`` int8 (index ``2 * pu + join``), or
    ``(K, num_pus, 2)`` -> ``(K * 2 * max_pus,)`` (index ``i * 2 * max_pus + 2 * pu + join``)."""
    if mask.shape[-2] == max_pus:
        return mask.astype(np.int8).reshape(-1)
    m = mask.reshape(-1, mask.shape[-2], 2)
    out = np.zeros((m.shape[0], max_pus, 2), dtype=np.int8)
    out[:, : m.shape[1]] = m
    return out.reshape(-1)


def flat_action_mask(ops: list[int], masks: np.ndarray, max_ops: int, max_pus: int) -> np.ndarray:
    """The environment's ``(max_ops * 2 * max_pus,)`` int8 mask from the candidates'
    ``(len(ops), num_pus, 2)`` masks (index ``op * 2 * max_pus + 2 * pu + join``)."""
    return scatter_rows(ops, flat_mask(masks, max_pus), max_ops, 2 * max_pus)


def scatter_rows(ops: list[int], rows: np.ndarray, num_ops: int, width: int) -> np.ndarray:
    """Per-candidate rows (``len(ops) * width`` of them, candidate-major) into
    ``num_ops * width`` rows by op index (zeros elsewhere)."""
    out = np.zeros((num_ops, width, *rows.shape[1:]), dtype=rows.dtype)
    out[ops] = rows.reshape(len(ops), width, *rows.shape[1:])
    return out.reshape(num_ops * width, *rows.shape[1:])


class ObservationBuilder:
    """Builds the observation of one problem step by step (static parts padded once).

    Raises:
        ConfigError: the problem does not fit ``max_ops`` / ``max_edges`` / ``max_pus``.
    """

    def __init__(self, ctx: ProblemContext, max_ops: int, max_edges: int, max_pus: int):
        pr = ctx.problem
        n, m = pr.num_ops, ctx.edge_index.shape[1]
        for what, have, limit in (("ops", n, max_ops), ("edges", m, max_edges), ("PUs", pr.num_pus, max_pus)):
            if have > limit:
                raise ConfigError(f"model {pr.graph.name!r} has {have} {what}, more than the environment's max_{what.lower()}={limit}")
        self.ctx = ctx
        self.max_ops, self.max_edges, self.max_pus = max_ops, max_edges, max_pus
        self.x = np.zeros((max_ops, NODE), dtype=np.float32)
        self.x[:n, : len(NODE_STATIC)] = ctx.node_static
        self.edge_index = np.zeros((2, max_edges), dtype=np.int64)
        self.edge_index[:, :m] = ctx.edge_index
        self.edge_attr = np.zeros((max_edges, len(EDGE)), dtype=np.float32)
        self.edge_attr[:m] = ctx.edge_attr
        self.meta = np.array([n, m, pr.num_pus, 0, ctx.graph_key], dtype=np.int64)
        self._dyn = len(NODE_STATIC)
        self._joinable: set[int] = set()
        self._current = -1

    def reset(self, state: ScheduleState) -> None:
        n = self.ctx.problem.num_ops
        self.x[:n, self._dyn:] = 0.0
        self._joinable = set()
        self._current = -1
        self._mark_current(state)

    def update(self, state: ScheduleState) -> None:
        """Refresh the dynamic op columns after one :meth:`ScheduleState.apply`."""
        d = self._dyn
        v = state.history[-1]
        self.x[v, d + 0] = 1.0
        self.x[v, d + 1] = 0.0
        self.x[v, d + 3 + state.pu_of[v]] = 1.0
        now = {k for q, k in enumerate(state.open) if k >= 0 and state.joinable(q)}
        for k in self._joinable - now:
            self.x[state.parts[k], d + 2] = 0.0
        for k in now:
            self.x[state.parts[k], d + 2] = 1.0
        self._joinable = now
        self._mark_current(state)

    def _mark_current(self, state: ScheduleState) -> None:
        """Mark the suggested op (:attr:`ScheduleState.current`), unmarking the last one
        (the action may have decided another ready op)."""
        if self._current >= 0:
            self.x[self._current, self._dyn + 1] = 0.0
        self._current = state.current
        if not state.done:
            self.x[state.current, self._dyn + 1] = 1.0

    def build(self, state: ScheduleState, ops: list[int], masks: np.ndarray) -> dict[str, np.ndarray]:
        """The observation; ``ops`` / ``masks`` are :meth:`ScheduleState.candidate_masks`."""
        meta = self.meta.copy()
        meta[3] = max(state.current, 0)
        width = 2 * self.max_pus
        feats = action_features(self.ctx, state, ops, masks, self.max_pus)
        return {
            "x": self.x.copy(),
            "edge_index": self.edge_index.copy(),
            "edge_attr": self.edge_attr.copy(),
            "pu": pu_features(self.ctx, state, self.max_pus),
            "actions": scatter_rows(ops, feats, self.max_ops, width),
            "action_mask": flat_action_mask(ops, masks, self.max_ops, self.max_pus),
            "glob": global_features(self.ctx, state),
            "meta": meta,
        }


# ---------------------------------------------------------------------------------
# conversion to PyG


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def obs_to_data(obs: Mapping[str, np.ndarray | torch.Tensor]) -> Data:
    """One observation (unbatched) -> ``Data`` with the padding cut off.

    ``x``, ``edge_index``, ``edge_attr`` describe the graph; ``pu`` (``num_pus`` rows),
    ``actions`` and ``action_mask`` (``max_ops * 2 * max_pus`` rows, as in the
    observation, so the action index is unchanged), ``glob``, ``current`` and ``graph_key`` ride along.
    """
    meta = _as_tensor(obs["meta"]).long()
    n, m, p, cur, key = (int(x) for x in meta.tolist())
    return Data(
        x=_as_tensor(obs["x"])[:n].float(),
        edge_index=_as_tensor(obs["edge_index"])[:, :m].long(),
        edge_attr=_as_tensor(obs["edge_attr"])[:m].float(),
        pu=_as_tensor(obs["pu"])[:p].float(),
        actions=_as_tensor(obs["actions"]).float().unsqueeze(0),
        action_mask=_as_tensor(obs["action_mask"]).bool().unsqueeze(0),
        glob=_as_tensor(obs["glob"]).float().unsqueeze(0),
        current=torch.tensor([cur]),
        graph_key=torch.tensor([key]),
        num_nodes=n,
    )


def graphs_to_batch(obs: Mapping[str, torch.Tensor], rows: Sequence[int], node_columns: int | None = None) -> Batch:
    """The graphs of some rows of a batched observation as one PyG ``Batch``
    (``x``, ``edge_index``, ``edge_attr``, ``batch``, ``ptr``), keeping the first
    ``node_columns`` op columns (all by default). Vectorised: no per-graph ``Data``."""
    x, ei, ea, meta = obs["x"], obs["edge_index"], obs["edge_attr"], obs["meta"]
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    n = meta[rows_t, 0].long()
    m = meta[rows_t, 1].long()
    max_ops, max_edges = x.shape[1], ei.shape[2]
    node_keep = torch.arange(max_ops).unsqueeze(0) < n.unsqueeze(1)  # (R, N)
    edge_keep = torch.arange(max_edges).unsqueeze(0) < m.unsqueeze(1)  # (R, E)
    xs = x[rows_t]
    if node_columns is not None:
        xs = xs[..., :node_columns]
    ptr = torch.zeros(len(rows) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(n, 0)
    offset = ptr[:-1].view(-1, 1, 1)
    edges = (ei[rows_t].long() + offset).permute(1, 0, 2)  # (2, R, E)
    batch = Batch(
        x=xs[node_keep].float(),
        edge_index=edges[:, edge_keep],
        edge_attr=ea[rows_t][edge_keep].float(),
        batch=torch.repeat_interleave(torch.arange(len(rows)), n),
        ptr=ptr,
    )
    return batch
