"""Measuring a defence: a GCN trained exactly as DeepRobust's ``GCN``, Jaccard pruning as
DeepRobust's ``GCNJaccard``, DICE, and precision/recall of pruned edges.

These are the yardsticks of the benchmarks; the defence itself never sees the clean graph.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .data import Graph, edge_difference


def normalized_adjacency(adj: sp.spmatrix) -> torch.Tensor:
    """Sparse (n, n) tensor ``D̃^-1/2 (A + I) D̃^-1/2`` as DeepRobust's ``normalize_adj_tensor``."""
    a = sp.csr_matrix(adj, dtype=np.float32) + sp.eye(adj.shape[0], dtype=np.float32, format="csr")
    d = np.asarray(a.sum(1)).ravel() ** -0.5
    d[np.isinf(d)] = 0.0
    a = sp.diags(d) @ a @ sp.diags(d)
    a = a.tocoo()
    index = torch.from_numpy(np.vstack([a.row, a.col]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(a.data.astype(np.float32)), a.shape,
                                   check_invariants=False).coalesce()  # built from a valid scipy matrix


class DenseGCN(nn.Module):
    """DeepRobust's 2-layer GCN: ``log_softmax(Â relu(Â X W1 + b1) W2 + b2)``, dropout 0.5."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float = 0.5):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(in_features, hidden))
        self.b1 = nn.Parameter(torch.empty(hidden))
        self.w2 = nn.Parameter(torch.empty(hidden, classes))
        self.b2 = nn.Parameter(torch.empty(classes))
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(out), 1/sqrt(out))`` for weights and biases, in DeepRobust's order."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            w.data.uniform_(-bound, bound)
            b.data.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, adj_norm: torch.Tensor) -> torch.Tensor:
        h = F.relu(torch.sparse.mm(adj_norm, x @ self.w1) + self.b1)
        h = F.dropout(h, self.dropout, self.training)
        return F.log_softmax(torch.sparse.mm(adj_norm, h @ self.w2) + self.b2, dim=1)


DENSE_FILL = 0.1
"""Above this share of non-zeros the normalised adjacency is propagated dense, as DeepRobust's GCN
does for GCNSVD's dense reconstruction (then ~40× faster than a sparse product)."""


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, inputs: tuple[torch.Tensor, ...],
        y: torch.Tensor, idx_train: torch.Tensor, idx_val: torch.Tensor, epochs: int,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> nn.Module:
    """Train ``model(x, *inputs)`` ((n, C) logits, or log-probabilities with ``loss=F.nll_loss``)
    on ``idx_train`` for ``epochs`` full-batch steps, then load the weights of the epoch with the
    best validation loss or accuracy (DeepRobust's ``_train_with_val``); returns it in eval mode."""
    best_loss, best_acc, best_state = math.inf, -1.0, None
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        loss(model(x, *inputs)[idx_train], y[idx_train]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(x, *inputs)
        val_loss = loss(out[idx_val], y[idx_val]).item()
        val_acc = (out[idx_val].argmax(1) == y[idx_val]).float().mean().item()
        if val_loss < best_loss or val_acc > best_acc:
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            best_loss, best_acc = min(best_loss, val_loss), max(best_acc, val_acc)
    model.load_state_dict(best_state)
    model.eval()
    return model


def graph_tensors(graph: Graph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense (n, d) features, (n,) labels, and the training and validation indices of ``graph``."""
    return (torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels),
            torch.from_numpy(graph.idx_train), torch.from_numpy(graph.idx_val))


def train_gcn(graph: Graph, epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
              hidden: int = 16) -> tuple[DenseGCN, torch.Tensor, torch.Tensor]:
    """A GCN trained on ``graph.adj`` as DeepRobust's ``GCN.fit(..., idx_val)`` from the current
    random state: Adam on all parameters and the best validation epoch. Returns the model (eval
    mode), the (n, d) features and the normalised adjacency (dense above :data:`DENSE_FILL`)."""
    x, y, idx_train, idx_val = graph_tensors(graph)
    adj_norm = normalized_adjacency(graph.adj)
    if graph.adj.nnz > DENSE_FILL * graph.adj.shape[0] ** 2:
        adj_norm = adj_norm.to_dense()
    model = DenseGCN(x.shape[1], hidden, int(y.max()) + 1)
    model.reset_parameters()  # DeepRobust's fit() re-initialises the new model: same random stream
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    fit(model, opt, x, (adj_norm,), y, idx_train, idx_val, epochs, loss=F.nll_loss)
    return model, x, adj_norm


def gcn_accuracy(graph: Graph, seed: int, nodes: np.ndarray | None = None, epochs: int = 200,
                 lr: float = 0.01, weight_decay: float = 5e-4, hidden: int = 16) -> float:
    """Accuracy in [0, 1] on ``nodes`` (default ``graph.idx_test``) of :func:`train_gcn` under ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model, x, adj_norm = train_gcn(graph, epochs, lr, weight_decay, hidden)
    with torch.no_grad():
        pred = model(x, adj_norm).argmax(1)
    idx = torch.from_numpy(graph.idx_test if nodes is None else np.asarray(nodes))
    return (pred[idx] == torch.from_numpy(graph.labels)[idx]).float().mean().item()


def jaccard_prune(adj: sp.spmatrix, features: sp.spmatrix, threshold: float = 0.01) -> sp.csr_matrix:
    """Drop edges whose endpoints' binary features have Jaccard similarity < ``threshold``
    (DeepRobust ``GCNJaccard.drop_dissimilar_edges``, binary features)."""
    adj = sp.csr_matrix(adj, dtype=np.float32)
    feats = (sp.csr_matrix(features) != 0).astype(np.float32).tocsr()
    upper = sp.triu(adj, k=1).tocoo()
    inter = np.asarray(feats[upper.row].multiply(feats[upper.col]).sum(1)).ravel()
    counts = np.asarray(feats.sum(1)).ravel()
    union = counts[upper.row] + counts[upper.col] - inter
    jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = jac >= threshold
    kept = sp.coo_matrix((upper.data[keep], (upper.row[keep], upper.col[keep])), shape=adj.shape)
    return (kept + kept.T).tocsr()


def dice_attack(adj: sp.spmatrix, labels: np.ndarray, rate: float, seed: int) -> sp.csr_matrix:
    """DICE ("delete internally, connect externally"): ``round(rate * m)`` random edits, each
    removing an intra-class edge or inserting an inter-class non-edge with probability 1/2
    (DeepRobust ``DICE``), seeded. Deletions are capped by the intra-class edges there are.
    ``labels`` (n,) int; raises ``ValueError`` if the insertions cannot be placed."""
    rng = np.random.default_rng(seed)
    adj = sp.lil_matrix(adj, dtype=np.float32)
    n = adj.shape[0]
    upper = sp.triu(sp.csr_matrix(adj), k=1).tocoo()
    intra = np.flatnonzero(labels[upper.row] == labels[upper.col])
    budget = int(round(rate * upper.nnz))
    n_remove = min(int(rng.binomial(budget, 0.5)), intra.size)
    n_insert = budget - n_remove
    inter_pairs = (n * n - np.square(np.bincount(labels)).sum()) // 2
    if n_insert > inter_pairs - (upper.nnz - intra.size):
        raise ValueError(f"DICE cannot insert {n_insert} inter-class edges: too few inter-class non-edges")
    for k in rng.choice(intra, size=n_remove, replace=False):
        adj[upper.row[k], upper.col[k]] = adj[upper.col[k], upper.row[k]] = 0
    added = 0
    while added < n_insert:
        i, j = rng.integers(0, n, size=2)
        if labels[i] != labels[j] and adj[i, j] == 0:
            adj[i, j] = adj[j, i] = 1
            added += 1
    out = adj.tocsr()
    out.eliminate_zeros()
    return out


def pruning_quality(graph: Graph, sanitized: sp.spmatrix) -> dict[str, float]:
    """How many edges were removed and their precision/recall against the attacker's insertions."""
    removed = {tuple(e) for e in edge_difference(graph.adj, sanitized)}
    inserted = {tuple(e) for e in graph.inserted_edges()}
    hits = len(removed & inserted)
    return {"pruned": len(removed), "inserted": len(inserted),
            "precision": hits / len(removed) if removed else float("nan"),
            "recall": hits / len(inserted) if inserted else float("nan")}
