"""KCES: Kernel-Complexity Edge Sanitization for graph neural networks.

Training-free defence against adversarial edges: score every edge by how much the graph
kernel complexity of the labels drops when it is removed, and prune the suspicious ones.

The names below are imported on first use, so ``import kces`` (and ``kces --help``) stays
light; the experiment harness lives in :mod:`kces.experiments` and is never imported here.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
_EXPORTS = {"KCES": "transform", "Complexity": "options", "Pruning": "options", "Sanitized": "functional",
            "kc_scores": "functional", "sanitize": "functional", "sanitize_adj": "adapters",
            "sanitize_networkx": "adapters", "Anchoring": "options", "Anchored": "anchors", "anchor": "anchors",
            "feature_anchors": "anchors", "anchor_adj": "adapters", "anchor_networkx": "adapters",
            "FeatureAnchors": "anchor_transform"}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .adapters import anchor_adj, anchor_networkx, sanitize_adj, sanitize_networkx
    from .anchor_transform import FeatureAnchors
    from .anchors import Anchored, anchor, feature_anchors
    from .options import Anchoring, Complexity, Pruning
    from .functional import Sanitized, kc_scores, sanitize
    from .transform import KCES


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kces' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
