"""What the benchmark measures: accuracy on a node set, and how well pruning found the
attacker's edges. The defence itself never sees the clean graph; only these do."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..adapters import edge_difference
from .datasets import Graph


def accuracy_on(output: torch.Tensor, labels: np.ndarray, nodes: np.ndarray) -> float:
    """Share in [0, 1] of ``nodes`` whose arg-max of ``output`` (n, C) is their label in ``labels`` (n,)."""
    pred = output.argmax(1).cpu().numpy()
    nodes = np.asarray(nodes, dtype=np.int64)
    return float((pred[nodes] == labels[nodes]).mean())


def pruning_quality(graph: Graph, sanitized: sp.spmatrix) -> dict[str, float]:
    """How many edges were removed and their precision/recall against the attacker's insertions."""
    removed = {tuple(e) for e in edge_difference(graph.adj, sanitized)}
    inserted = {tuple(e) for e in graph.inserted_edges()}
    hits = len(removed & inserted)
    return {"pruned": len(removed), "inserted": len(inserted),
            "precision": hits / len(removed) if removed else float("nan"),
            "recall": hits / len(inserted) if inserted else float("nan")}
