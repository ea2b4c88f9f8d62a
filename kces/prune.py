"""Which edges to prune, given their KC scores.

The default rule (``ratio=None, threshold="auto"``) was chosen by measurement on the Pro-GNN
Metattack, Nettack and DICE graphs (README, benchmarks/robustness.py). It looks only at
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

AUTO_THRESHOLD_SCALE = 2.0
"""``threshold="auto"`` prunes candidates with KC above this multiple of the mean |KC|."""


def check_ratio_threshold(ratio: float | None, threshold: float | str | None) -> None:
    """Validate the pruning budget arguments (``ValueError`` with the reason)."""
    if ratio is not None and threshold not in (None, "auto"):
        raise ValueError("give either ratio or threshold, not both")
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
    if isinstance(threshold, str) and threshold != "auto":
        raise ValueError(f"threshold must be a number or 'auto', got {threshold!r}")
    if isinstance(threshold, (int, float)) and not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")


def prune_mask(scores: Tensor, candidates: Tensor, disagree: Tensor | None, *,
               ratio: float | None = None, threshold: float | str | None = "auto") -> Tensor:
    """(m,) bool, True for the edges to prune.

    scores: (m,) KC scores; candidates: (m,) bool, edges eligible for pruning; disagree:
    (m,) bool, candidates whose endpoint labels disagree (pruned first), or None.
    """
    check_ratio_threshold(ratio, threshold)
    prune = torch.zeros_like(candidates) if disagree is None else disagree & candidates
    if ratio is not None:
        budget = int(round(ratio * scores.numel()))
        ranked = scores.masked_fill(~candidates | prune, -math.inf)
        order = torch.sort(ranked, descending=True, stable=True).indices[:budget]
        prune = prune.clone()
        prune[order[torch.isfinite(ranked[order])]] = True
        return prune
    if threshold is None:
        return prune
    bound = AUTO_THRESHOLD_SCALE * scores.abs().mean() if threshold == "auto" else torch.as_tensor(threshold, dtype=scores.dtype)
    return prune | (candidates & (scores > bound))
