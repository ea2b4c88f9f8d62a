"""Which edges to prune, given their KC scores.

The default rule (:class:`kces.Pruning` ``()``: ``ratio=None, threshold="auto"``) was chosen by
measurement on the Pro-GNN Metattack, Nettack and DICE graphs and under adaptive attacks
(README, ``benchmarks/selection.py``, ``benchmarks/selection_adaptive.py``).
It looks only at *candidate* edges, those touching a labelled node, because only there do
labels say anything, and prunes a candidate when
1. its endpoints' labels disagree (true labels on labelled nodes; elsewhere an unlabelled
   node's top class by its features, and by its features plus its unlabelled neighbours': either
   disagreeing is enough, see :func:`kces.labels.label_disagreement`; on a
   featureless graph: its endpoints share few of their other neighbours, see
   :func:`kces.labels.neighbourhood_overlap`, or it links a training node to a node with an
   excess of training neighbours of that class, see :func:`kces.labels.training_neighbour_excess`), or
2. its KC score exceeds twice the mean absolute KC score of all edges (scale-free; needs
   no attack budget).
It also keeps the edges between two unlabelled nodes whose graph-free labels disagree (feature
labels; on a featureless graph: they share few of their other neighbours) at
:data:`AUTO_UNLABELLED_WEIGHT` of their weight (``unlabelled_weight="auto"``; chosen on
validation nodes under attacks that know the rule, which move to those edges): the output then
carries edge weights.
``ratio=r`` prunes exactly ``round(r·m)`` edges ranked by that evidence (1. first, then the
other candidates, each by descending KC, then the other edges); ``threshold=t`` exactly the
edges whose KC exceeds ``t``; ``threshold=None`` only 1. Ties are broken by edge order (stable).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .graph import node_mask
from .options import Pruning

AUTO_THRESHOLD_SCALE = 2.0
"""``threshold="auto"`` prunes candidates with KC above this multiple of the mean |KC|."""
AUTO_UNLABELLED_WEIGHT = {"features": 0.25, "featureless": 0.25}
"""``unlabelled_weight="auto"``: the weight kept by an edge between two unlabelled nodes whose
feature labels disagree (``"features"``) or, on a featureless graph, that the overlap check flags
(``"featureless"``); each chosen on validation nodes under attacks that know the rule
(``benchmarks/selection_adaptive.py``: Cora and Citeseer; Polblogs). With features it was 0.5
from 2026-11-28's fourth session to its sixth."""

AUTO_FEATURE_NEIGHBOURS = 20
"""``feature_neighbours="auto"``: the feature labels are read off features averaged over each
node's 20 nearest nodes by feature cosine (:func:`kces.labels.smoothed_features`; chosen on
validation nodes under attacks that know the rule, ``benchmarks/selection_adaptive.py``)."""
FEATURE_NEIGHBOURS_MAX_NODES = 20_000
"""``feature_neighbours="auto"`` searches the neighbours on graphs of at most this many nodes (the
search is O(n² d): 19 s for 20,000 nodes with 64 dense features on one core of the AMD EPYC this
was measured on) and warns and reads each node's own features on larger ones."""


def feature_neighbours(rule: Pruning, num_nodes: int) -> int:
    """The nearest feature neighbours ``rule`` smooths the feature labels over on a graph of
    ``num_nodes`` nodes: its ``feature_neighbours``, ``"auto"`` resolved by the graph's size
    (:data:`FEATURE_NEIGHBOURS_MAX_NODES`, with a ``UserWarning`` above it); 0 without the label
    check."""
    if not rule.label_check:
        return 0
    if rule.feature_neighbours != "auto":
        return rule.feature_neighbours
    if num_nodes > FEATURE_NEIGHBOURS_MAX_NODES:
        warnings.warn(f"feature_neighbours='auto' reads each node's own features on this graph of {num_nodes} "
                      f"nodes (> {FEATURE_NEIGHBOURS_MAX_NODES}: the neighbour search takes O(n² d) time); "
                      f"pass Pruning(feature_neighbours={AUTO_FEATURE_NEIGHBOURS}) to search anyway, or 0 to "
                      "silence this", stacklevel=3)
        return 0
    return AUTO_FEATURE_NEIGHBOURS


def unlabelled_weight(rule: Pruning, featureless: bool) -> float:
    """The weight ``rule`` leaves the flagged edges between two non-candidate nodes: its
    ``unlabelled_weight``, ``"auto"`` resolved by whether the graph is ``featureless``; 1 (off)
    without the label check."""
    if not rule.label_check:
        return 1.0
    if rule.unlabelled_weight == "auto":
        return AUTO_UNLABELLED_WEIGHT["featureless" if featureless else "features"]
    return rule.unlabelled_weight


def candidate_mask(pairs: Tensor, train_nodes: Tensor, num_nodes: int, rule: Pruning) -> Tensor:
    """(m,) bool, the edges of ``pairs`` (2, m) eligible for pruning under ``rule.candidates``:
    those touching a node of ``train_nodes``, or all."""
    if rule.candidates == "all":
        return torch.ones(pairs.shape[1], dtype=torch.bool, device=pairs.device)
    labelled = node_mask(train_nodes.to(pairs.device), num_nodes)
    return labelled[pairs[0]] | labelled[pairs[1]]


def prune_mask(scores: Tensor, candidates: Tensor, disagree: Tensor | None, rule: Pruning) -> Tensor:
    """(m,) bool, True for the edges to prune.

    scores: (m,) KC scores; candidates: (m,) bool, edges eligible under the rule; disagree: (m,)
    bool, edges whose endpoint labels disagree, or None without the label check; ``rule``: its
    ``ratio`` and ``threshold`` (:class:`kces.Pruning`):

    - ``ratio=r``: exactly ``round(r·m)`` edges, the most suspicious first by the evidence of
      the default rule: candidates whose labels disagree, then the other candidates, then the
      remaining edges, each tier by descending KC, ties by edge order;
    - ``threshold=t`` (a number): exactly the edges with KC above ``t``;
    - ``threshold="auto"``: candidates whose labels disagree, and candidates with KC above
      twice the mean absolute KC; ``threshold=None``: the label check alone.
    """
    flagged = torch.zeros_like(candidates) if disagree is None else disagree & candidates
    if rule.ratio is not None:
        budget = int(round(rule.ratio * scores.numel()))
        by_score = torch.sort(scores, descending=True, stable=True).indices
        tier = flagged.long() + candidates.long()  # 2: flagged candidate, 1: candidate, 0: other
        order = by_score[torch.sort(tier[by_score], descending=True, stable=True).indices]
        prune = torch.zeros_like(candidates)
        prune[order[:budget]] = True
        return prune
    if rule.threshold is None:
        return flagged
    if rule.threshold != "auto":
        return scores > torch.as_tensor(rule.threshold, dtype=scores.dtype)
    return flagged | (candidates & (scores > AUTO_THRESHOLD_SCALE * scores.abs().mean()))
