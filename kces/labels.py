"""Labels for the nodes KCES reasons about.

Training nodes carry their true labels. Every other node gets a *graph-free* label:
kernel ridge regression on its own (unit-norm) features against the training nodes. It
never looks at the edges, so an attacker who only edits edges cannot move it.
"""
from __future__ import annotations

import torch
from torch import Tensor


def is_identity_like(x: Tensor) -> bool:
    """True for featureless graphs: every row of ``x`` (n, d) is one-hot on its own column."""
    if x.shape[1] < x.shape[0]:
        return False
    nonzero = x != 0
    if not bool((nonzero.sum(1) == 1).all()):
        return False
    return torch.unique(nonzero.float().argmax(1)).numel() == x.shape[0]


def feature_labels(x: Tensor, y: Tensor, train_nodes: Tensor, num_classes: int, lam: float = 1.0) -> Tensor:
    """(n,) int64 labels: ``y`` on ``train_nodes``; elsewhere the argmax of a kernel ridge
    regression of the one-hot training labels on unit-norm features (linear kernel, ridge
    ``lam``), solved in the cheaper of its primal (d×d) or dual (|S|×|S|) form."""
    xn = torch.nn.functional.normalize(x, dim=1)
    xs = xn[train_nodes]
    targets = torch.nn.functional.one_hot(y[train_nodes], num_classes).to(x.dtype)
    if xs.shape[0] <= xs.shape[1]:
        coef = xs.T @ torch.linalg.solve(xs @ xs.T + lam * torch.eye(xs.shape[0], dtype=x.dtype, device=x.device), targets)
    else:
        coef = torch.linalg.solve(xs.T @ xs + lam * torch.eye(xs.shape[1], dtype=x.dtype, device=x.device), xs.T @ targets)
    labels = (xn @ coef).argmax(1)
    labels[train_nodes] = y[train_nodes]
    return labels
