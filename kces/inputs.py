"""User inputs checked and converted into the problem KCES solves: an undirected graph, dense
features, labels and the labelled (training) nodes, all on the compute device.

Every face converts its own types first (PyG ``Data``, scipy, networkx) and ends here, so
every face refuses the same bad input with the same ``ValueError``/``TypeError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import InputError, InputTypeError
from .graph import Identity, UndirectedEdges, undirected_edges


@dataclass(frozen=True)
class Problem:
    """``edges``: the undirected graph; ``x`` (n, d) float features on the compute device, or
    :class:`~kces.graph.Identity` for a featureless graph (never materialised);
    ``y`` (n,) int64 labels there; ``train_nodes`` (|S|,) sorted ids of the labelled nodes;
    ``num_classes``: 1 + the largest training label."""

    edges: UndirectedEdges
    x: Tensor | Identity
    y: Tensor
    train_nodes: Tensor
    num_classes: int


def _tensor(value: Any, name: str) -> Tensor:
    """A tensor, NumPy array or (nested) list as a tensor; anything else is a ``TypeError``."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype == object:
            raise InputTypeError(f"{name} must hold numbers, got an object array")
        return torch.as_tensor(array)
    raise InputTypeError(f"{name} must be a torch.Tensor, a NumPy array or a list, got {type(value).__name__}")


def check_labels(y: Any, num_nodes: int) -> Tensor:
    """(n,) int64 labels from ``y``: any integer or bool dtype, or floats that are whole numbers
    (``2.0``); fractional or non-finite floats are refused, never truncated."""
    if y is None:
        raise InputError("labels are missing: KCES needs the training nodes' labels (y)")
    y = _tensor(y, "y")
    if y.dim() != 1 or y.shape[0] != num_nodes or y.is_complex():
        raise InputError(f"y must be an integer tensor of shape ({num_nodes},), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not bool((torch.isfinite(y) & (y == y.round())).all()):
            raise InputError("y holds fractional or non-finite values: class labels must be whole numbers")
    return y.long()


def training_nodes(train_mask: Any, num_nodes: int) -> Tensor:
    """Sorted ids of the labelled nodes from a mask or an index, in every form a user passes.

    A mask: bool of shape (n,) (tensor, NumPy or list), or integers of shape (n,) holding only 0
    and 1 (e.g. uint8 or int64 masks). An index: integers, each node at most once. An integer
    input of shape (n,) with only 0/1 values is read as a mask, since as an index it would name
    two nodes many times over; with n <= 2 it is ambiguous and refused. Floats are refused.
    """
    if train_mask is None:
        raise InputError("train_mask is missing: KCES needs to know which nodes are labelled")
    mask = _tensor(train_mask, "train_mask")
    if mask.is_floating_point() or mask.is_complex():
        raise InputTypeError(f"train_mask must be a bool mask or an integer index tensor, got dtype {mask.dtype}")
    if mask.dim() != 1:
        raise InputError(f"train_mask must have shape ({num_nodes},) or be a 1-D index, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and mask.numel() == num_nodes and bool(((mask == 0) | (mask == 1)).all()):
        if num_nodes <= 2:
            raise InputError(f"train_mask {mask.tolist()} is ambiguous on a graph of {num_nodes} nodes: pass a "
                             "bool mask or an index of other dtype")
        mask = mask.bool()
    if mask.dtype == torch.bool:
        if mask.shape != (num_nodes,):
            raise InputError(f"train_mask must have shape ({num_nodes},), got {tuple(mask.shape)}")
        return mask.nonzero().view(-1)
    nodes = mask.long()
    if nodes.numel() and (nodes.min() < 0 or nodes.max() >= num_nodes):
        raise InputError("training node indices out of range")
    unique = torch.unique(nodes)
    if unique.numel() != nodes.numel():
        raise InputError(f"the training node index names {nodes.numel() - unique.numel()} node(s) twice; pass "
                         "each node once, or a bool mask")
    return unique


def prepare(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, num_nodes: int | None = None,
            edge_weight: Tensor | None = None, device: Any = None) -> Problem:
    """Check the inputs of :func:`kces.kc_scores` / :func:`kces.sanitize` and build the
    :class:`Problem` (arguments as there); the inputs are never modified."""
    if x is not None and not isinstance(x, Tensor):
        raise InputTypeError(f"x must be a torch.Tensor or None, got {type(x).__name__}")
    if not isinstance(edge_index, Tensor):
        raise InputTypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__} "
                             "(convert a NumPy array with torch.from_numpy)")
    if num_nodes is None:
        num_nodes = x.shape[0] if x is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
    edges = undirected_edges(edge_index, num_nodes, edge_weight)
    device = torch.device(device) if device is not None else (x.device if x is not None else edge_index.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for, but this torch build sees no CUDA device")
    if x is None:
        return _problem(edges, Identity(num_nodes, torch.get_default_dtype(), device), y, train_mask, num_nodes)
    return _problem(edges, check_features(x, num_nodes, device), y, train_mask, num_nodes)


def check_features(x: Tensor, num_nodes: int, device: torch.device) -> Tensor:
    """``x`` (n, d) as dense float features on ``device`` (float16/bfloat16 and integer inputs as
    float32); ``ValueError`` for another shape or non-finite entries."""
    if x.dim() != 2 or x.shape[0] != num_nodes:
        raise InputError(f"x must have shape ({num_nodes}, d), got {tuple(x.shape)}")
    if x.layout != torch.strided:
        x = x.to_dense()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not torch.isfinite(x).all():
        raise InputError("x has NaN or infinite entries")
    return x.to(device)


def _problem(edges: UndirectedEdges, x: Tensor | Identity, y: Any, train_mask: Any, num_nodes: int) -> Problem:
    y = check_labels(y, num_nodes)
    train_nodes = training_nodes(train_mask, num_nodes).to(y.device)
    if train_nodes.numel() == 0:
        raise InputError("there are no training nodes (train_mask is empty)")
    train_labels = y[train_nodes]
    if (train_labels < 0).any():
        raise InputError("training nodes have negative (missing) labels")
    if torch.unique(train_labels).numel() < 2:
        raise InputError("the training nodes hold a single class: kernel complexity needs at least two")
    return Problem(edges=edges, x=x, y=y.to(x.device), train_nodes=train_nodes.to(x.device),
                   num_classes=int(train_labels.max()) + 1)
