"""Which edges to prune, given their KC scores.

The default rule (:class:`kces.Pruning` ``()``: ``ratio=None, threshold="auto"``) was chosen by measurement on the Pro-GNN
Metattack, Nettack and DICE graphs (README, ``benchmarks/robustness.py``). It looks only at
*candidate* edges, those touching a labelled node, because only there do labels say
anything, and prunes a candidate when
1. its endpoints' labels disagree (true labels on labelled nodes, graph-free feature
   labels elsewhere with their two best classes counting as compatible, see
   :func:`kces.labels.label_disagreement`; on featureless graphs only labelled–labelled
   edges are checked), or
2. its KC score exceeds twice the mean absolute KC score of all edges (scale-free; needs
   no attack budget).
``threshold=t`` replaces 2.'s bound by ``t``; ``ratio=r`` replaces it by "the ``round(r·m)``
highest-KC candidates" (m = all edges). Ties are broken by edge order (stable).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .options import Pruning

AUTO_THRESHOLD_SCALE = 2.0
"""``threshold="auto"`` prunes candidates with KC above this multiple of the mean |KC|."""


def candidate_mask(pairs: Tensor, train_nodes: Tensor, num_nodes: int, rule: Pruning) -> Tensor:
    """(m,) bool, the edges of ``pairs`` (2, m) eligible for pruning under ``rule.candidates``:
    those touching a node of ``train_nodes``, or all."""
    if rule.candidates == "all":
        return torch.ones(pairs.shape[1], dtype=torch.bool, device=pairs.device)
    labelled = torch.zeros(num_nodes, dtype=torch.bool, device=pairs.device)
    labelled[train_nodes] = True
    return labelled[pairs[0]] | labelled[pairs[1]]


def prune_mask(scores: Tensor, candidates: Tensor, disagree: Tensor | None, rule: Pruning) -> Tensor:
    """(m,) bool, True for the edges to prune.

    scores: (m,) KC scores; candidates: (m,) bool, edges eligible for pruning; disagree:
    (m,) bool, candidates whose endpoint labels disagree (pruned first), or None; ``rule``:
    its ``ratio`` and ``threshold``.
    """
    prune = torch.zeros_like(candidates) if disagree is None else disagree & candidates
    if rule.ratio is not None:
        budget = int(round(rule.ratio * scores.numel()))
        ranked = scores.masked_fill(~candidates | prune, -math.inf)
        order = torch.sort(ranked, descending=True, stable=True).indices[:budget]
        prune = prune.clone()
        prune[order[torch.isfinite(ranked[order])]] = True
        return prune
    if rule.threshold is None:
        return prune
    bound = (AUTO_THRESHOLD_SCALE * scores.abs().mean() if rule.threshold == "auto"
             else torch.as_tensor(rule.threshold, dtype=scores.dtype))
    return prune | (candidates & (scores > bound))
