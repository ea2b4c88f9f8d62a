"""User inputs checked and converted into the problem KCES solves: an undirected graph, dense
features, labels and the labelled (training) nodes, all on the compute device.

Every face converts its own types first (PyG ``Data``, scipy, networkx) and ends here, so
every face refuses the same bad input with the same ``ValueError``/``TypeError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .graph import UndirectedEdges, undirected_edges


@dataclass(frozen=True)
class Problem:
    """``edges``: the undirected graph; ``x`` (n, d) float features on the compute device;
    ``y`` (n,) int64 labels there; ``train_nodes`` (|S|,) sorted ids of the labelled nodes;
    ``num_classes``: 1 + the largest training label."""

    edges: UndirectedEdges
    x: Tensor
    y: Tensor
    train_nodes: Tensor
    num_classes: int


def prepare(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, num_nodes: int | None = None,
            edge_weight: Tensor | None = None, device: Any = None) -> Problem:
    """Check the inputs of :func:`kces.kc_scores` / :func:`kces.sanitize` and build the
    :class:`Problem` (arguments as there); the inputs are never modified."""
    if x is not None and not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor or None, got {type(x).__name__}")
    if num_nodes is None:
        num_nodes = x.shape[0] if x is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
    edges = undirected_edges(edge_index, num_nodes, edge_weight)
    device = torch.device(device) if device is not None else (x.device if x is not None else edge_index.device)
    if x is None:
        x = torch.eye(num_nodes, device=device)
    if x.dim() != 2 or x.shape[0] != num_nodes:
        raise ValueError(f"x must have shape ({num_nodes}, d), got {tuple(x.shape)}")
    if x.layout != torch.strided:
        x = x.to_dense()
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("x has NaN or infinite entries")
    x = x.to(device)
    if y is None:
        raise ValueError("labels are missing: KCES needs the training nodes' labels (y)")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != num_nodes or y.is_floating_point():
        raise ValueError(f"y must be an integer tensor of shape ({num_nodes},)")
    if train_mask is None:
        raise ValueError("train_mask is missing: KCES needs to know which nodes are labelled")
    train_mask = torch.as_tensor(train_mask, device=y.device)
    if train_mask.is_floating_point():
        raise TypeError(f"train_mask must be a bool mask or an integer index tensor, got dtype {train_mask.dtype}")
    if train_mask.dtype == torch.bool:
        if train_mask.shape != (num_nodes,):
            raise ValueError(f"train_mask must have shape ({num_nodes},), got {tuple(train_mask.shape)}")
        train_nodes = train_mask.nonzero().view(-1)
    else:
        train_nodes = torch.unique(train_mask.long())
        if train_nodes.numel() and (train_nodes.min() < 0 or train_nodes.max() >= num_nodes):
            raise ValueError("training node indices out of range")
    if train_nodes.numel() == 0:
        raise ValueError("there are no training nodes (train_mask is empty)")
    train_labels = y[train_nodes]
    if (train_labels < 0).any():
        raise ValueError("training nodes have negative (missing) labels")
    if torch.unique(train_labels).numel() < 2:
        raise ValueError("the training nodes hold a single class: kernel complexity needs at least two")
    return Problem(edges=edges, x=x, y=y.to(device), train_nodes=train_nodes.to(device),
                   num_classes=int(train_labels.max()) + 1)
