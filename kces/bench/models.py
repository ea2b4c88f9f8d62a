"""Models and optimizers of the benchmark, all trained by :func:`kces.evaluate.fit`.

``epochs`` full-batch steps, then the weights of the epoch with the best validation loss or
accuracy (DeepRobust's rule). ``gcn`` + ``adam`` is DeepRobust's GCN recipe
(:func:`kces.evaluate.train_gcn`), so its accuracy is exactly :func:`kces.evaluate.gcn_accuracy`'s
(the numbers of ``benchmarks/robustness.py``). With the ``optim`` optimizers ``gcn`` is
PyG's ``GCN(d, 16, 2, C, dropout=0.5)`` (the same network; DenseGCN's weights are not routable),
``gat`` is PyG's ``GAT(d, 64, 2, C, heads=8, dropout=0.6)`` (8 heads × 8 channels); Adam as
above. The ``optim`` optimizers (:func:`optim.build_optimizer`) get the first layer's weight (a
2-layer model has no hidden layer), the rest is AdamW at lr 0.01; every optimizer decays weights
by lr·wd = 5e-4 per step; learning rates as tuned per model on clean Cora by
``benchmarks/bench_optim_accuracy.py`` (README).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch_geometric.utils import from_scipy_sparse_matrix

import optim

from ..data import Graph
from ..evaluate import fit, graph_tensors, train_gcn

MODELS = ("gcn", "gat")
OPTIMIZERS = ("adam", *optim.OPTIMIZERS)
EPOCHS = 200
ADAM_LR, ADAM_WEIGHT_DECAY = 0.01, 5e-4
STEP_DECAY = 5e-4
"""lr · weight_decay of every decoupled optimizer."""
OTHER_LR = 0.01
"""AdamW learning rate of the parameters the spectral optimizers do not take."""
SPECTRAL_LR = {"muon": {"gcn": 0.03, "gat": 1.0}, "htmuon": {"gcn": 0.1, "gat": 3.0},
               "rmnp": {"gcn": 3.0, "gat": 0.03}, "spectra": {"gcn": 0.1, "gat": 0.1}}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(name: str, in_features: int, classes: int) -> nn.Module:
    """PyG ``GCN`` (16 hidden, dropout 0.5) or ``GAT`` (8 heads × 8, dropout 0.6), 2 layers."""
    from torch_geometric.nn.models import GAT, GCN

    if name == "gcn":
        return GCN(in_features, 16, 2, classes, dropout=0.5)
    if name == "gat":
        return GAT(in_features, 64, 2, classes, heads=8, dropout=0.6)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def build_optimizer(name: str, model_name: str, model: nn.Module) -> Optimizer:
    """Adam (lr 0.01, L2 5e-4) or an ``optim`` optimizer on the first layer, AdamW elsewhere."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=ADAM_LR, weight_decay=ADAM_WEIGHT_DECAY)
    lr = SPECTRAL_LR[name][model_name]
    extra = {"head": "spectral", "clip_c": 1.0} if name == "spectra" else {}
    return optim.build_optimizer(model, name, lr=lr, weight_decay=STEP_DECAY / lr, input_proj="spectral",
                                 adamw_lr=OTHER_LR, adamw_weight_decay=STEP_DECAY / OTHER_LR, **extra)


def train_pyg(graph: Graph, model_name: str, optimizer_name: str, epochs: int) -> tuple[nn.Module, Tensor, tuple]:
    """PyG ``model_name`` trained with ``optimizer_name`` on ``graph`` from the current random
    state; returns the model (eval mode), the dense (n, d) features and its structure inputs."""
    x, y, train, val = graph_tensors(graph)
    model = build_model(model_name, x.shape[1], int(y.max()) + 1)
    inputs = (from_scipy_sparse_matrix(graph.adj)[0],)
    return fit(model, build_optimizer(optimizer_name, model_name, model), x, inputs, y, train, val, epochs), x, inputs


def train_model(graph: Graph, model_name: str, optimizer_name: str, epochs: int) -> tuple[nn.Module, Tensor, tuple]:
    """As :func:`train_pyg`, except ``gcn`` + ``adam``: DeepRobust's GCN (:func:`kces.evaluate.train_gcn`)."""
    if (model_name, optimizer_name) != ("gcn", "adam"):
        return train_pyg(graph, model_name, optimizer_name, epochs)
    model, x, adj_norm = train_gcn(graph, epochs, ADAM_LR, ADAM_WEIGHT_DECAY)
    return model, x, (adj_norm,)


def accuracy(graph: Graph, model_name: str, optimizer_name: str, seed: int, nodes: np.ndarray | None = None,
             epochs: int = EPOCHS) -> float:
    """Accuracy in [0, 1] on ``nodes`` (default the test split) of ``model_name`` trained with
    ``optimizer_name`` on ``graph`` under ``seed``."""
    seed_everything(seed)
    model, x, inputs = train_model(graph, model_name, optimizer_name, epochs)
    idx = torch.from_numpy(graph.idx_test if nodes is None else np.asarray(nodes, dtype=np.int64))
    with torch.no_grad():
        pred = model(x, *inputs).argmax(1)
    return (pred[idx] == torch.from_numpy(graph.labels)[idx]).float().mean().item()
