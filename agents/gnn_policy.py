"""The GNN policy: a message-passing encoder over the op graph, and a head that scores
every (ready op, PU, join bit) action from the op's embedding, the graph's, the PU's
and the action's features, so one set of weights serves platforms with 2, 3 or 4 PUs
and any number of ready ops: which op to decide next is the argmax (or a sample) over
all the ready ops' actions at once, scored on one scale.

Encoder choice: GINE-style sum aggregation (Hu et al., "Strategies for Pre-training
Graph Neural Networks", ICLR 2020, https://arxiv.org/abs/1905.12265) with separate
edge projections for producer->consumer and consumer->producer messages. Why:

* edge features matter (tensor bytes decide transfer costs) and GINE adds them to
  every message, where GraphSAGE ignores them;
* sum aggregation keeps magnitudes (how many consumers, how many bytes leave an op);
  GAT's softmax normalises them away, and attention buys little on graphs whose
  in-degree is mostly 1;
* two directions: whether an op should move to the NPU depends as much on what
  follows it (a long run of convolutions) as on what feeds it.

The encoder reads only the *static* op columns (:data:`partitiontuner.env.NODE_STATIC`),
so a graph is encoded once per episode (the planner) or once per distinct graph in a
minibatch (PPO); what changes per step (where the inputs are, when each PU is free,
what each action would cost) reaches the head through the PU and action rows, which
the environment computes exactly with the simulator. That is what makes a 10,000-op
graph plan in seconds. The value head reads the pooled graph embedding, the mean
embedding of the ready ops, the PU embeddings and the global progress features,
detached: only the actor's loss trains the shared encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Categorical
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from partitiontuner.env.features import ACTION, EDGE, GLOBAL, NODE_STATIC, PU
from partitiontuner.env.observation import graphs_to_batch

#: logits of masked actions (finite, so that 0 * logit stays 0 in the entropy)
MASKED = -1e9


class DirGINEConv(MessagePassing):
    r"""GINE convolution with direction-aware edge features.

    .. math::
        \mathbf{h}_v' = \mathrm{MLP}\Big((1 + \epsilon)\,\mathbf{h}_v
        + \sum_{u \to v} \mathrm{ReLU}(\mathbf{h}_u + \mathbf{W}_{\rightarrow}\mathbf{e}_{uv})
        + \sum_{v \to w} \mathrm{ReLU}(\mathbf{h}_w + \mathbf{W}_{\leftarrow}\mathbf{e}_{vw})\Big)

    Based on GINE (https://arxiv.org/abs/1905.12265); messages flow both ways along
    each directed edge, with separate edge projections.

    Args:
        channels: size of node embeddings (in and out).
        edge_dim: size of edge features.
        eps: initial :math:`\epsilon` (default ``0.0``).
        train_eps: learn :math:`\epsilon` (default ``True``).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)`, edge features :math:`(|\mathcal{E}|, D)`
        - **output:** node features :math:`(|\mathcal{V}|, C)`
    """

    def __init__(self, channels: int, edge_dim: int, eps: float = 0.0, train_eps: bool = True):
        super().__init__(aggr="add")
        self.channels = channels
        self.edge_dim = edge_dim
        self.initial_eps = eps
        self.lin_fwd = nn.Linear(edge_dim, channels)
        self.lin_bwd = nn.Linear(edge_dim, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))
        if train_eps:
            self.eps = nn.Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_fwd.reset_parameters()
        self.lin_bwd.reset_parameters()
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        fwd = self.propagate(edge_index, x=x, e=self.lin_fwd(edge_attr))
        bwd = self.propagate(edge_index.flip(0), x=x, e=self.lin_bwd(edge_attr))
        return self.mlp((1 + self.eps) * x + fwd + bwd)

    def message(self, x_j: Tensor, e: Tensor) -> Tensor:
        return torch.relu(x_j + e)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, edge_dim={self.edge_dim})"


class GraphEncoder(nn.Module):
    """Input projection, ``num_layers`` residual :class:`DirGINEConv` layers with layer
    norm, and a pooled graph embedding (mean and max, projected).

    Shapes:
        - **input:** ``x`` :math:`(|\\mathcal{V}|, F)`, ``edge_index`` :math:`(2, |\\mathcal{E}|)`,
          ``edge_attr`` :math:`(|\\mathcal{E}|, D)`, ``batch`` :math:`(|\\mathcal{V}|,)`
        - **output:** node embeddings :math:`(|\\mathcal{V}|, C)`, graph embeddings :math:`(G, C)`
    """

    def __init__(self, in_dim: int, edge_dim: int, channels: int, num_layers: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, channels)
        self.convs = nn.ModuleList(DirGINEConv(channels, edge_dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(num_layers))
        self.pool = nn.Linear(2 * channels, channels)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.inp(x))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = norm(h + conv(h, edge_index, edge_attr))
        mean = scatter(h, batch, dim=0, dim_size=num_graphs, reduce="mean")
        mx = scatter(h, batch, dim=0, dim_size=num_graphs, reduce="max")
        return h, torch.relu(self.pool(torch.cat([mean, mx], dim=-1)))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class GNNPolicy(nn.Module):
    """Actor-critic over observations of :class:`partitiontuner.env.PartitionTunerEnv`.

    Args:
        channels: embedding size of ops, PUs and graphs.
        num_layers: message-passing layers.
        hidden: hidden size of the actor and critic MLPs.

    The CleanRL interface: :meth:`get_value` and :meth:`get_action_and_value` take a
    batched observation (a dict of tensors with a leading batch dimension). Both accept
    ``cache``, a dict from graph key to its encoding, for rollouts under ``no_grad``
    (the caller creates and discards it; parameters must not change while it lives).
    """

    def __init__(self, channels: int = 64, num_layers: int = 4, hidden: int = 128):
        super().__init__()
        self.config = {"channels": channels, "num_layers": num_layers, "hidden": hidden}
        self.node_columns = len(NODE_STATIC)
        self.encoder = GraphEncoder(len(NODE_STATIC), len(EDGE), channels, num_layers)
        self.pu_net = nn.Sequential(nn.Linear(len(PU), channels), nn.Tanh(), nn.Linear(channels, channels))
        self.actor = _mlp([3 * channels + len(ACTION), hidden, hidden, 1])
        self.critic = _mlp([3 * channels + len(GLOBAL), hidden, hidden, 1])

    # --- building blocks (shared by the observation path and the planner's fast path) -------
    def encode(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor | None = None,
               num_graphs: int = 1) -> tuple[Tensor, Tensor]:
        """Node embeddings ``(N, C)`` and graph embeddings ``(G, C)`` from static op columns."""
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.encoder(x[:, : self.node_columns], edge_index, edge_attr, batch, num_graphs)

    def heads(self, h_ops: Tensor, g: Tensor, pu: Tensor, actions: Tensor, mask: Tensor, glob: Tensor) -> tuple[Tensor, Tensor]:
        """Masked logits ``(B, K * 2P)`` and values ``(B,)``.

        Row ``i * 2P + 2 * pu + join`` of a batch row is the action that puts its
        ``i``-th candidate op on ``pu``. The actor runs on the allowed rows only (an
        observation has a row for every op of the graph, most of them not ready).

        Args:
            h_ops: ``(B, K, C)`` embeddings of each row's candidate ops (``(B, C)``: one).
            g: ``(B, C)`` graph embedding.
            pu: ``(B, P, len(PU))``; actions: ``(B, K * 2P, len(ACTION))``; mask:
                ``(B, K * 2P)`` bool; glob: ``(B, len(GLOBAL))``.
        """
        if h_ops.dim() == 2:
            h_ops = h_ops.unsqueeze(1)
        b, rows, _ = actions.shape
        width = 2 * pu.shape[1]
        pu_emb = self.pu_net(pu)  # (B, P, C)
        pu_valid = pu[..., :1]  # the "valid" column
        bi, ai = mask.nonzero(as_tuple=True)
        slot = torch.div(ai, width, rounding_mode="floor")
        q = torch.div(ai % width, 2, rounding_mode="floor")
        inp = torch.cat([h_ops[bi, slot], g[bi], pu_emb[bi, q], actions[bi, ai]], dim=-1)
        scores = self.actor(inp).squeeze(-1)
        logits = torch.full((b, rows), MASKED, dtype=scores.dtype, device=scores.device).index_put((bi, ai), scores)
        pu_mean = (pu_emb * pu_valid).sum(1) / pu_valid.sum(1).clamp(min=1.0)
        ready = mask.view(b, -1, width).any(-1).to(h_ops.dtype).unsqueeze(-1)  # (B, K, 1)
        h_ready = (h_ops * ready).sum(1) / ready.sum(1).clamp(min=1.0)
        # the critic reads the shared embeddings but does not train them: value errors
        # must not move the actor (it would undo the warm start, and PPO's critic-only
        # warm-up would not be critic-only)
        value = self.critic(torch.cat([g.detach(), h_ready.detach(), pu_mean.detach(), glob], dim=-1)).squeeze(-1)
        return logits, value

    # --- observations ----------------------------------------------------------------------
    def _encode_rows(self, obs: Mapping[str, Tensor], cache: dict[int, tuple[Tensor, Tensor]] | None) -> tuple[Tensor, Tensor]:
        """Each row's op embeddings ``(B, N, C)`` (``N = max_ops``; rows past the graph's
        ops repeat its last op, whose actions are masked) and graph embedding ``(B, C)``,
        encoding each distinct graph (by graph key) once."""
        meta = obs["meta"]
        keys = meta[:, 4]
        uniq, inverse = torch.unique(keys, return_inverse=True)
        rows = torch.arange(keys.shape[0])
        first = torch.full((uniq.shape[0],), keys.shape[0], dtype=torch.long)
        first = first.scatter_reduce(0, inverse, rows, reduce="amin")
        key_list = uniq.tolist()
        todo = [i for i, k in enumerate(key_list) if cache is None or k not in cache]
        encoded: dict[int, tuple[Tensor, Tensor]] = {}
        if todo:
            batch = graphs_to_batch(obs, [int(first[i]) for i in todo], self.node_columns)
            h, g = self.encode(batch.x, batch.edge_index, batch.edge_attr, batch.batch, len(todo))
            for j, i in enumerate(todo):
                encoded[key_list[i]] = (h[batch.ptr[j]: batch.ptr[j + 1]], g[j])
            if cache is not None:
                cache.update(encoded)
        parts = [encoded[k] if k in encoded else cache[k] for k in key_list]  # type: ignore[index]
        sizes = torch.tensor([hp.shape[0] for hp, _ in parts])
        offsets = torch.zeros(len(parts), dtype=torch.long)
        offsets[1:] = torch.cumsum(sizes, 0)[:-1]
        h_all = torch.cat([hp for hp, _ in parts], dim=0)
        g_all = torch.stack([gp for _, gp in parts], dim=0)
        n = meta[:, 0].long().clamp(min=1)
        local = torch.minimum(torch.arange(obs["x"].shape[1]).unsqueeze(0), (n - 1).unsqueeze(1))  # (B, N)
        h_ops = h_all[offsets[inverse].unsqueeze(1) + local]
        return h_ops, g_all[inverse]

    def forward(self, obs: Mapping[str, Tensor], cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """Masked logits ``(B, N * 2P)`` and values ``(B,)`` of a batched observation."""
        h_ops, g = self._encode_rows(obs, cache)
        return self.heads(h_ops, g, obs["pu"].float(), obs["actions"].float(), obs["action_mask"].bool(), obs["glob"].float())

    def get_value(self, obs: Mapping[str, Tensor], cache: dict | None = None) -> Tensor:
        return self.forward(obs, cache)[1]

    def get_action_and_value(self, obs: Mapping[str, Tensor], action: Tensor | None = None, cache: dict | None = None,
                             greedy: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(action, log_prob, entropy, value)``; samples (or takes the argmax with
        ``greedy``) unless ``action`` is given."""
        logits, value = self.forward(obs, cache)
        dist = Categorical(logits=logits)
        if action is None:
            action = logits.argmax(-1) if greedy else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), value

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
