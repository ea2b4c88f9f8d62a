"""Functional core on ``edge_index``: KC scores of every edge and the sanitized graph.

Every other face (the PyG transform, scipy/DeepRobust, networkx) converts to these calls.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .complexity import label_matrix, pair_scores
from .inputs import Problem, prepare
from .labels import feature_class_scores, is_featureless, label_disagreement
from .options import Complexity, Pruning, options
from .prune import candidate_mask, feature_neighbours, prune_mask, unlabelled_weight


@dataclass(frozen=True)
class Sanitized:
    """Result of :func:`sanitize`. ``edge_index`` (2, E') kept columns of the input;
    ``edge_mask`` (E,) True where a column was kept; ``scores`` (E,) its edge's KC score;
    ``edge_weight`` (E',) the kept columns' weights (the input's, 1 without, times what the rule
    leaves them) when the rule re-weights (an ``unlabelled_weight`` below 1, as the default's),
    else None."""

    edge_index: Tensor
    edge_mask: Tensor
    scores: Tensor
    edge_weight: Tensor | None = None


def problem_scores(problem: Problem, complexity: Complexity) -> Tensor:
    """(m,) KC scores of the undirected edges of ``problem`` (``problem.edges.pairs`` order)."""
    nodes = problem.train_nodes
    labels = label_matrix(problem.y[nodes], problem.num_classes, complexity.centre, dtype=problem.x.dtype)
    return pair_scores(problem.x, problem.edges, nodes, labels, complexity)


def kc_scores(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, *,
              num_nodes: int | None = None, edge_weight: Tensor | None = None,
              complexity: Complexity | Mapping[str, Any] | None = None, device: Any = None) -> Tensor:
    """KC score ``GKC(G) − GKC(G − e)`` of the edge in each column of ``edge_index``.

    edge_index: (2, E) undirected (both directions present), no self-loops or duplicates;
    x: (n, d) features or None for identity features; y: (n,) int labels; train_mask: (n,)
    bool or index tensor of labelled nodes (the set S); edge_weight: (E,) non-negative,
    equal in both directions; complexity: :class:`kces.Complexity` (or a dict of its fields).
    Returns (E,) on the compute device (``device``, else ``x``'s); both directions of an edge
    get the same score. Edges farther than ``k`` hops from every training node get exactly 0;
    the work and memory grow with the ``k``-hop region of the training nodes, not with n².
    """
    complexity = options(Complexity, complexity, "complexity")
    problem = prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device)
    if problem.edges.num_edges == 0:
        return torch.zeros(0, device=problem.x.device)
    return problem_scores(problem, complexity)[problem.edges.inverse.to(problem.x.device)]


def sanitize(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, *,
             num_nodes: int | None = None, edge_weight: Tensor | None = None,
             pruning: Pruning | Mapping[str, Any] | None = None,
             complexity: Complexity | Mapping[str, Any] | None = None, device: Any = None) -> Sanitized:
    """Prune the suspicious edges of an undirected graph (the rule: :mod:`kces.prune`).

    Arguments as :func:`kc_scores`, plus ``pruning``: :class:`kces.Pruning` (or a dict of its
    fields; default: the measured rule). The inputs are not modified; both directions of a
    pruned (or re-weighted) edge go together.
    """
    pruning = options(Pruning, pruning, "pruning")
    complexity = options(Complexity, complexity, "complexity")
    problem = prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device)
    edges, dev = problem.edges, problem.x.device
    if edges.num_edges == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=edge_index.device)
        return Sanitized(edge_index=edge_index.clone(), edge_mask=empty, scores=torch.zeros(0, device=dev))
    scores = problem_scores(problem, complexity)
    pairs, inverse = edges.pairs.to(dev), edges.inverse.to(dev)
    candidates = candidate_mask(pairs, problem.train_nodes, edges.num_nodes, pruning)
    disagree = unlabelled = None
    featureless = is_featureless(problem.x)
    weight = unlabelled_weight(pruning, featureless)
    if pruning.label_check:
        class_scores = None if featureless else feature_class_scores(
            problem.x, problem.y, problem.train_nodes, problem.num_classes,
            neighbours=feature_neighbours(pruning, edges.num_nodes))

        def disagreement(source: str) -> Tensor:
            return label_disagreement(pairs, problem.x, problem.y, problem.train_nodes, problem.num_classes,
                                      pruning.label_top_k, source, class_scores)
        if featureless or weight == 1.0 or pruning.label_source == "features":
            disagree = by_features = disagreement(pruning.label_source)
        else:  # the down-weighting reads the graph-free feature labels alone: computed once for both
            by_features, disagree = disagreement("features"), disagreement("neighbourhood")
            if pruning.label_source == "both":
                disagree = disagree | by_features
        if weight < 1.0:
            unlabelled = ~candidates & by_features
    pruned = prune_mask(scores, candidates, disagree, pruning)
    factor = None
    if unlabelled is not None:
        factor = torch.where(unlabelled, weight, 1.0).to(problem.x.dtype)
        pruned |= factor == 0
    edge_mask = ~pruned[inverse].to(edge_index.device)
    kept_weight = None
    if factor is not None:
        given = torch.ones(edge_index.shape[1], device=dev) if edge_weight is None else edge_weight.to(dev)
        kept_weight = (given * factor[inverse])[edge_mask.to(dev)].to(edge_index.device)
    return Sanitized(edge_index=edge_index[:, edge_mask], edge_mask=edge_mask, scores=scores[inverse],
                     edge_weight=kept_weight)
