"""``KCES``: the PyTorch Geometric transform (``transform=`` / ``pre_transform=``)."""
from __future__ import annotations

from typing import Any

import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import BaseTransform

from .prune import check_ratio_threshold
from .sanitize import check_options, sanitize


class KCES(BaseTransform):
    r"""Prunes an undirected graph's most suspicious edges by kernel-complexity (KC) scores.

    Training-free: uses the labels ``data[label_attr]`` of the nodes in
    ``data[mask_attr]``, the features ``data.x`` (identity if absent) and, if present,
    ``data.edge_weight``. Returns a new ``Data``: every edge-level attribute
    (``edge_attr``, ``edge_weight``, ...) follows the kept edges, everything else is
    untouched; the input is never modified. With ``store_scores=True`` the result also has
    ``kc_score`` (E',) for the kept edges and ``pruned_edge_index`` (2, P).

    Args:
        ratio: prune this share of all edges by highest KC (after the label check), or
        threshold: prune candidates with KC above this value; ``"auto"`` (default) is the
            measured rule of :mod:`kces.prune` (twice the mean absolute KC).
        k, kernel, lam, centre, engine, form, random_features, max_memory: the kernel
            complexity (:mod:`kces.complexity`, :func:`kces.kc_scores`).
        label_check, label_top_k, candidates: see :func:`kces.sanitize`.
        device: where the dense Gram work runs (default: the data's device).
    """

    def __init__(self, ratio: float | None = None, threshold: float | str | None = "auto", *,
                 label_attr: str = "y", mask_attr: str = "train_mask", k: int = 1,
                 kernel: str = "linear", lam: float = 1e-2, centre: bool = True,
                 engine: str = "first_order", form: str = "auto", random_features: int = 4096,
                 max_memory: int | None = None, label_check: bool = True, label_top_k: int = 2,
                 candidates: str = "labelled", store_scores: bool = False, device: Any = None):
        check_ratio_threshold(ratio, threshold)
        complexity = dict(k=k, kernel=kernel, lam=lam, engine=engine, form=form,
                          random_features=random_features, max_memory=max_memory)
        check_options(**complexity)
        self.ratio, self.threshold = ratio, None if ratio is not None else threshold
        self.label_attr, self.mask_attr = label_attr, mask_attr
        self.options = dict(**complexity, centre=centre, label_check=label_check, label_top_k=label_top_k,
                            candidates=candidates, device=device)
        self.store_scores = store_scores

    def forward(self, data: Data) -> Data:
        if isinstance(data, HeteroData):
            raise TypeError("KCES works on homogeneous graphs (Data), not HeteroData; "
                            "convert with data.to_homogeneous() first")
        if not isinstance(data, Data):
            raise TypeError(f"KCES expects a torch_geometric.data.Data, got {type(data).__name__}")
        if data.edge_index is None:
            raise ValueError("data has no edge_index")
        for attr in (self.label_attr, self.mask_attr):
            if getattr(data, attr, None) is None:
                raise ValueError(f"data has no {attr!r} attribute; KCES needs the training labels "
                                 f"(set label_attr= / mask_attr=)")
        weight = data.edge_weight if "edge_weight" in data else None
        result = sanitize(data.edge_index, data.x, data[self.label_attr], data[self.mask_attr],
                          num_nodes=data.num_nodes, edge_weight=weight, ratio=self.ratio,
                          threshold=self.threshold, **self.options)
        out = data.edge_subgraph(result.edge_mask)
        if self.store_scores:
            out.kc_score = result.scores[result.edge_mask.to(result.scores.device)].to(data.edge_index.device)
            out.pruned_edge_index = data.edge_index[:, ~result.edge_mask]
        return out

    def __repr__(self) -> str:
        budget = f"ratio={self.ratio}" if self.ratio is not None else f"threshold={self.threshold!r}"
        return (f"{self.__class__.__name__}({budget}, k={self.options['k']}, "
                f"kernel={self.options['kernel']!r}, engine={self.options['engine']!r})")
