"""Feature anchors: graph-free edges joined to a (sanitized) graph.

The attacks that still hurt the sanitized graph do it through a few inserted edges at nodes of low
degree, which then dominate those nodes' propagated features. An *anchor* links a node to one of
its ``k`` nearest nodes by feature cosine. Anchors are read off the features alone: an attacker who
edits edges can neither remove nor move one, and an inserted edge moves a node's propagated
features less. Their cost: an anchor joins two nodes of the same class less often than a clean
graph's edge does (Cora / Citeseer at ``k = 10``: 53% / 56%, against 80% / 74% for the graphs'
edges), so they cost accuracy on a clean graph (README: "Feature anchors"). Keeping only the
neighbours of the same feature label raised that to 72% / 73% and lowered the accuracy on
validation nodes further (README).

The anchors are joined at weight ``w``: an edge already in the graph keeps the larger of its
weight and ``w``. Work: the (n, n) feature cosines in blocks of rows, O(n² d) time (O(n · nnz) for
sparse features) and O(n) rows' memory per block: benchmark sizes, not millions of nodes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import InputError, InputTypeError
from .graph import undirected_edges
from .inputs import check_features
from .labels import is_identity_like
from .neighbours import feature_neighbour_pairs
from .options import Anchoring, options


def feature_anchors(x: Tensor, *, k: int = 10, device: Any = None) -> Tensor:
    """The anchors of the nodes of ``x`` (n, d) (dense or sparse) as an ``edge_index`` (2, 2a),
    both directions: :func:`~kces.neighbours.feature_neighbour_pairs`, each node's ``k`` nearest
    by feature cosine. A featureless graph (identity-like ``x``, or None) has no feature
    neighbours: ``ValueError``. Computed on ``device`` (default ``x``'s), returned there."""
    Anchoring(k=k)  # validates k
    if x is None:
        raise InputError("anchors need node features; x is None (a featureless graph)")
    if not isinstance(x, Tensor):
        raise InputTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    x = check_features(x, x.shape[0], torch.device(device) if device is not None else x.device)
    if is_identity_like(x):
        raise InputError("anchors need node features; x is identity-like (a featureless graph)")
    pairs = feature_neighbour_pairs(x, k)
    return torch.cat([pairs, pairs.flip(0)], 1)


@dataclass(frozen=True)
class Anchored:
    """Result of :func:`anchor`: ``edge_index`` (2, E + 2a') the input's columns in their order,
    then the anchors the graph lacked (both directions, sorted); ``edge_weight`` (E + 2a',) the
    input's weights (1 without) raised to the anchor weight where an anchor lies on an edge, then
    the anchor weight."""

    edge_index: Tensor
    edge_weight: Tensor


def join_anchors(edge_index: Tensor, anchors: Tensor, weight: float, *, num_nodes: int,
                 edge_weight: Tensor | None = None) -> Anchored:
    """Join the ``anchors`` ((2, 2a) both directions, :func:`feature_anchors`) at ``weight`` to the
    undirected graph ``edge_index`` (2, E) (``edge_weight`` (E,) or None for 1). Inputs are not
    modified."""
    edges = undirected_edges(edge_index, num_nodes, edge_weight)
    given = (torch.ones(edge_index.shape[1], device=edge_index.device) if edge_weight is None
             else edge_weight.to(torch.promote_types(edge_weight.dtype, torch.float32)))
    keys = edges.pairs[0] * num_nodes + edges.pairs[1]
    ends = anchors[:, anchors[0] < anchors[1]].to(edge_index.device)
    anchor_keys = ends[0] * num_nodes + ends[1]
    raised = torch.where(torch.isin(keys, anchor_keys)[edges.inverse], given.clamp(min=weight), given)
    new = ends[:, ~torch.isin(anchor_keys, keys)]
    new = torch.cat([new, new.flip(0)], 1)
    new = new[:, torch.argsort(new[0] * num_nodes + new[1], stable=True)]
    return Anchored(edge_index=torch.cat([edge_index, new], 1),
                    edge_weight=torch.cat([raised, given.new_full((new.shape[1],), weight)]))


def anchor(edge_index: Tensor, x: Tensor, *, num_nodes: int | None = None, edge_weight: Tensor | None = None,
           anchoring: Anchoring | Mapping[str, Any] | None = None, device: Any = None) -> Anchored:
    """The undirected graph ``edge_index`` (2, E) (``edge_weight`` (E,) or None for 1) joined by
    the anchors of the nodes of ``x`` (n, d) (:func:`feature_anchors`; :func:`join_anchors`);
    ``anchoring``: :class:`kces.Anchoring` (or a dict of its fields; default ``k = 10``,
    weight 0.5). The inputs are not modified."""
    anchoring = options(Anchoring, anchoring, "anchoring")
    anchors = feature_anchors(x, k=anchoring.k, device=device)
    if num_nodes is not None and num_nodes != x.shape[0]:
        raise InputError(f"num_nodes is {num_nodes} but x has {x.shape[0]} rows")
    num_nodes = x.shape[0]
    return join_anchors(edge_index, anchors, anchoring.weight, num_nodes=num_nodes, edge_weight=edge_weight)
