"""Models and optimizers of the benchmark, all trained by the one loop :func:`fit`.

``epochs`` full-batch steps, then the weights of the epoch with the best validation loss or
accuracy (DeepRobust's rule). ``gcn`` + ``adam`` is DeepRobust's GCN recipe (:func:`train_gcn`:
a dense 2-layer GCN trained as DeepRobust's ``GCN``, identical numbers). With the ``optim``
optimizers ``gcn`` is PyG's ``GCN(d, 16, 2, C, dropout=0.5)`` (the same network; DenseGCN's
weights are not routable), ``gat`` is PyG's ``GAT(d, 64, 2, C, heads=8, dropout=0.6)`` (8 heads
× 8 channels); Adam as above. The ``optim`` optimizers (:func:`optim.build_optimizer`) get the
first layer's weight (a 2-layer model has no hidden layer), the rest is AdamW at lr 0.01; every
optimizer decays weights by lr·wd = 5e-4 per step; learning rates as tuned per model on clean
Cora by ``benchmarks/bench_optim_accuracy.py --tune`` (README).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch_geometric.nn.models import GAT, GCN
from torch_geometric.utils import coalesce, from_scipy_sparse_matrix

import optim

from .datasets import Graph
from .metrics import accuracy_on
from .names import MODELS

EPOCHS = 200
ADAM_LR, ADAM_WEIGHT_DECAY = 0.01, 5e-4
STEP_DECAY = 5e-4
"""lr · weight_decay of every decoupled optimizer."""
OTHER_LR = 0.01
"""AdamW learning rate of the parameters the spectral optimizers do not take."""
MUON_DTYPE = torch.float32
"""Muon's Newton–Schulz dtype in the benchmark: fixed, so that results do not depend on the CPU."""
SPECTRA_CLIP = 1.0
"""SPECTRA's threshold ``c`` on the weight matrices' updates."""
SPECTRAL_LR = {"muon": {"gcn": 0.03, "gat": 1.0}, "htmuon": {"gcn": 0.1, "gat": 3.0},
               "rmnp": {"gcn": 3.0, "gat": 0.03}, "spectra": {"gcn": 0.1, "gat": 0.1}}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(name: str, in_features: int, classes: int) -> nn.Module:
    """PyG ``GCN`` (16 hidden, dropout 0.5) or ``GAT`` (8 heads × 8, dropout 0.6), 2 layers."""
    if name == "gcn":
        return GCN(in_features, 16, 2, classes, dropout=0.5)
    if name == "gat":
        return GAT(in_features, 64, 2, classes, heads=8, dropout=0.6)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def build_optimizer(name: str, model_name: str, model: nn.Module, lr: float | None = None) -> Optimizer:
    """Adam (lr 0.01, L2 5e-4), an ``optim`` optimizer on the first layer with AdamW elsewhere, or
    ``spectra``: AdamW on everything, SPECTRA (c = 1) soft-clipping both weight matrices. ``lr``:
    the learning rate of Adam or of the spectral group (default: Adam's, :data:`SPECTRAL_LR`)."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=ADAM_LR if lr is None else lr,
                                weight_decay=ADAM_WEIGHT_DECAY)
    lr = SPECTRAL_LR[name][model_name] if lr is None else lr
    # SPECTRA wraps AdamW that also takes the head; Muon's dtype is pinned (else measured per machine)
    extra = {"spectra": {"head": "spectral"}, "muon": {"ns_dtype": MUON_DTYPE}}.get(name, {})
    opt = optim.build_optimizer(model, "adamw" if name == "spectra" else name, lr=lr, weight_decay=STEP_DECAY / lr,
                                input_proj="spectral", adamw=dict(lr=OTHER_LR, weight_decay=STEP_DECAY / OTHER_LR),
                                **extra)
    if name != "spectra":
        return opt
    for group in opt.param_groups:
        group["clip_c"] = SPECTRA_CLIP if group["route"] == "spectral" else None
    return optim.SPECTRA(opt)


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


def train_gcn(graph: Graph, epochs: int = EPOCHS, lr: float = ADAM_LR, weight_decay: float = ADAM_WEIGHT_DECAY,
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


EdgeScale = Callable[[Tensor], Tensor]
"""(2, k) node pairs → (k,) weights: a defence's graph-free re-weighting of the edges."""


class EdgeScaled(nn.Module):
    """``model`` seeing every edge's weight (1 if not given) times ``scale`` of its endpoints."""

    def __init__(self, model: nn.Module, scale: EdgeScale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        scale = self.scale(edge_index)
        return self.model(x, edge_index, scale if edge_weight is None else edge_weight * scale)


class EdgeAugmented(nn.Module):
    """``model`` seeing the union of its input edges and the fixed ``anchor`` edges (a defence's
    graph-free additions, (n, n) symmetric, weighted): each pair at the larger of its two weights
    (an input edge without weight counts 1), differentiable in the input weights."""

    def __init__(self, model: nn.Module, anchor: sp.spmatrix):
        super().__init__()
        self.model, self.num_nodes = model, anchor.shape[0]
        anchor = sp.coo_matrix(anchor)
        self.anchor_index = torch.from_numpy(np.vstack([anchor.row, anchor.col]).astype(np.int64))
        self.anchor_weight = torch.from_numpy(anchor.data.astype(np.float32))

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
        union, weight = coalesce(torch.cat([edge_index, self.anchor_index.to(edge_index.device)], 1),
                                 torch.cat([edge_weight, self.anchor_weight.to(edge_weight)]),
                                 num_nodes=self.num_nodes, reduce="max")
        return self.model(x, union, weight)


def train_pyg(graph: Graph, model_name: str, optimizer_name: str, epochs: int,
              lr: float | None = None, edge_scale: EdgeScale | None = None,
              anchor: sp.spmatrix | None = None) -> tuple[nn.Module, Tensor, tuple]:
    """PyG ``model_name`` trained with ``optimizer_name`` (``lr`` as :func:`build_optimizer`) on
    ``graph`` (its edges re-weighted by ``edge_scale``, :class:`EdgeScaled`, then joined by the
    ``anchor`` edges, :class:`EdgeAugmented`) from the current random state; returns the model
    (eval mode), the dense (n, d) features and its structure inputs."""
    x, y, train, val = graph_tensors(graph)
    model = build_model(model_name, x.shape[1], int(y.max()) + 1)
    if edge_scale is not None:
        model = EdgeScaled(model, edge_scale)
    if anchor is not None:
        model = EdgeAugmented(model, anchor)
    inputs = (from_scipy_sparse_matrix(graph.adj)[0],)
    optimizer = build_optimizer(optimizer_name, model_name, model, lr)
    return fit(model, optimizer, x, inputs, y, train, val, epochs), x, inputs


def train_model(graph: Graph, model_name: str, optimizer_name: str, epochs: int,
                lr: float | None = None) -> tuple[nn.Module, Tensor, tuple]:
    """As :func:`train_pyg`, except ``gcn`` + ``adam``: DeepRobust's GCN (:func:`train_gcn`)."""
    if (model_name, optimizer_name) != ("gcn", "adam"):
        return train_pyg(graph, model_name, optimizer_name, epochs, lr)
    model, x, adj_norm = train_gcn(graph, epochs, ADAM_LR if lr is None else lr)
    return model, x, (adj_norm,)


def accuracy(graph: Graph, model_name: str, optimizer_name: str, seed: int, nodes: np.ndarray | None = None,
             epochs: int = EPOCHS, lr: float | None = None) -> float:
    """Accuracy in [0, 1] on ``nodes`` (default the test split) of ``model_name`` trained with
    ``optimizer_name`` (learning rate ``lr``, default as :func:`build_optimizer`) on ``graph``
    under ``seed``."""
    seed_everything(seed)
    model, x, inputs = train_model(graph, model_name, optimizer_name, epochs, lr)
    with torch.no_grad():
        output = model(x, *inputs)
    return accuracy_on(output, graph.labels, graph.idx_test if nodes is None else nodes)
