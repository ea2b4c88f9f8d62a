"""``KCES``: the PyTorch Geometric transform (``transform=`` / ``pre_transform=``)."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import BaseTransform

from .errors import InputError, InputTypeError
from .functional import sanitize
from .options import Complexity, Pruning, options


class KCES(BaseTransform):
    r"""Prunes an undirected graph's most suspicious edges by kernel-complexity (KC) scores.

    Training-free: uses the labels ``data[label_attr]`` of the nodes in
    ``data[mask_attr]``, the features ``data.x`` (identity if absent) and, if present,
    ``data.edge_weight``. Returns a new ``Data``: every edge-level attribute
    (``edge_attr``, ``edge_weight``, ...) follows the kept edges, everything else is
    untouched; the input is never modified. A rule that re-weights (an ``unlabelled_weight``
    below 1, as the default) sets ``edge_weight`` (E',) on the output (the
    input's times the new weights): pass it to the model (``GCNConv(x, edge_index, edge_weight)``). A
    graph whose ``mask_attr`` selects no node (PyG
    applies transforms before a split exists, e.g. ``Planetoid(split="random")``) passes
    through unchanged with a ``UserWarning``. Edge-level attributes are those PyG's
    ``Data.is_edge_attr`` finds: a name containing ``"edge"``, or a first dimension equal to
    the number of edges when that differs from the number of nodes.

    Args:
        pruning (:class:`kces.Pruning` or dict, optional): which edges go (default: the
            measured rule of :mod:`kces.prune`), e.g. ``Pruning(ratio=0.1)``.
        complexity (:class:`kces.Complexity` or dict, optional): how the KC scores are
            computed (default: first-order, K = 1, linear kernel).
        label_attr (str, default ``"y"``): the node labels.
        mask_attr (str, default ``"train_mask"``): the labelled nodes (bool mask or index).
        store_scores (bool, default False): also store ``kc_score`` (E',) for the kept edges
            and ``pruned_edge_index`` (2, P).
        device (torch.device or str, optional): where the dense Gram work runs (default: the
            data's device).
    """

    def __init__(self, pruning: Pruning | Mapping[str, Any] | None = None,
                 complexity: Complexity | Mapping[str, Any] | None = None, *, label_attr: str = "y",
                 mask_attr: str = "train_mask", store_scores: bool = False, device: Any = None):
        self.pruning = options(Pruning, pruning, "pruning")
        self.complexity = options(Complexity, complexity, "complexity")
        self.label_attr, self.mask_attr = label_attr, mask_attr
        self.store_scores = store_scores
        self.device = device

    def forward(self, data: Data) -> Data:
        if isinstance(data, HeteroData):
            raise InputTypeError("KCES works on homogeneous graphs (Data), not HeteroData; "
                                 "convert with data.to_homogeneous() first")
        if not isinstance(data, Data):
            raise InputTypeError(f"KCES expects a torch_geometric.data.Data, got {type(data).__name__}")
        if data.edge_index is None:
            raise InputError("data has no edge_index")
        for attr in (self.label_attr, self.mask_attr):
            if getattr(data, attr, None) is None:
                raise InputError(f"data has no {attr!r} attribute; KCES needs the training labels "
                                 f"(set label_attr= / mask_attr=)")
        mask = data[self.mask_attr]
        if data.num_nodes and isinstance(mask, torch.Tensor) and (
                mask.numel() == 0 or (mask.dtype == torch.bool and not mask.any())):
            # PyG calls transforms before a split exists (e.g. Planetoid(split="random") reads
            # num_classes through them); nothing is labelled yet, so there is nothing to judge by
            warnings.warn(f"KCES: data.{self.mask_attr} selects no node, so the graph passes through "
                          "unsanitized; set the training split before this transform runs", UserWarning)
            return data
        weight = data.edge_weight if "edge_weight" in data else None
        result = sanitize(data.edge_index, data.x, data[self.label_attr], data[self.mask_attr],
                          num_nodes=data.num_nodes, edge_weight=weight, pruning=self.pruning,
                          complexity=self.complexity, device=self.device)
        out = data.edge_subgraph(result.edge_mask)
        if result.edge_weight is not None:
            out.edge_weight = result.edge_weight
        if self.store_scores:
            out.kc_score = result.scores[result.edge_mask.to(result.scores.device)].to(data.edge_index.device)
            out.pruned_edge_index = data.edge_index[:, ~result.edge_mask]
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.pruning}, {self.complexity})"
