"""Functional core on ``edge_index``: KC scores of every edge and the sanitized graph.

Every other face (the PyG transform, scipy/DeepRobust, networkx) converts to these calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .complexity import ENGINES, FORMS, kc_scores as pair_scores, label_matrix
from .graph import UndirectedEdges, undirected_edges
from .kernels import KERNELS
from .labels import label_disagreement
from .prune import check_ratio_threshold, prune_mask


@dataclass(frozen=True)
class Sanitized:
    """Result of :func:`sanitize`. ``edge_index`` (2, E') kept columns of the input;
    ``edge_mask`` (E,) True where a column was kept; ``scores`` (E,) its edge's KC score."""

    edge_index: Tensor
    edge_mask: Tensor
    scores: Tensor


@dataclass(frozen=True)
class _Problem:
    edges: UndirectedEdges
    x: Tensor
    y: Tensor
    train_nodes: Tensor
    num_classes: int


def _prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device) -> _Problem:
    if x is not None and not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor or None, got {type(x).__name__}")
    if num_nodes is None:
        num_nodes = x.shape[0] if x is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
    edges = undirected_edges(edge_index, num_nodes, edge_weight)
    device = torch.device(device) if device is not None else (x.device if x is not None else edge_index.device)
    if x is None:
        x = torch.eye(num_nodes, device=device)
    if x.dim() != 2 or x.shape[0] != num_nodes:
        raise ValueError(f"x must have shape ({num_nodes}, d), got {tuple(x.shape)}")
    if x.layout != torch.strided:
        x = x.to_dense()
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("x has NaN or infinite entries")
    x = x.to(device)
    if y is None:
        raise ValueError("labels are missing: KCES needs the training nodes' labels (y)")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != num_nodes or y.is_floating_point():
        raise ValueError(f"y must be an integer tensor of shape ({num_nodes},)")
    if train_mask is None:
        raise ValueError("train_mask is missing: KCES needs to know which nodes are labelled")
    train_mask = torch.as_tensor(train_mask, device=y.device)
    if train_mask.is_floating_point():
        raise TypeError(f"train_mask must be a bool mask or an integer index tensor, got dtype {train_mask.dtype}")
    if train_mask.dtype == torch.bool:
        if train_mask.shape != (num_nodes,):
            raise ValueError(f"train_mask must have shape ({num_nodes},), got {tuple(train_mask.shape)}")
        train_nodes = train_mask.nonzero().view(-1)
    else:
        train_nodes = torch.unique(train_mask.long())
        if train_nodes.numel() and (train_nodes.min() < 0 or train_nodes.max() >= num_nodes):
            raise ValueError("training node indices out of range")
    if train_nodes.numel() == 0:
        raise ValueError("there are no training nodes (train_mask is empty)")
    train_labels = y[train_nodes]
    if (train_labels < 0).any():
        raise ValueError("training nodes have negative (missing) labels")
    if torch.unique(train_labels).numel() < 2:
        raise ValueError("the training nodes hold a single class: kernel complexity needs at least two")
    return _Problem(edges=edges, x=x, y=y.to(device), train_nodes=train_nodes.to(device),
                    num_classes=int(train_labels.max()) + 1)


def check_options(k: int, kernel: str, lam: float, engine: str, form: str = "auto",
                  random_features: int = 4096, max_memory: int | None = None) -> None:
    """Validate the kernel-complexity options (``ValueError`` naming the bad one)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (propagation hops) must be an integer >= 1, got {k!r}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {tuple(KERNELS)}")
    if not lam > 0:
        raise ValueError(f"lam (ridge) must be > 0, got {lam!r}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
    if not isinstance(random_features, int) or random_features < 1:
        raise ValueError(f"random_features must be an integer >= 1, got {random_features!r}")
    if max_memory is not None and not (isinstance(max_memory, int) and max_memory > 0):
        raise ValueError(f"max_memory must be a positive number of bytes or None, got {max_memory!r}")


def _scores(problem: _Problem, centre: bool, **options) -> Tensor:
    nodes = problem.train_nodes
    labels = label_matrix(problem.y[nodes], problem.num_classes, centre, dtype=problem.x.dtype)
    return pair_scores(problem.x, problem.edges, nodes, labels, **options)


def kc_scores(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, *,
              num_nodes: int | None = None, edge_weight: Tensor | None = None, k: int = 1,
              kernel: str = "linear", lam: float = 1e-2, centre: bool = True,
              engine: str = "first_order", form: str = "auto", random_features: int = 4096,
              max_memory: int | None = None, device=None) -> Tensor:
    """KC score ``GKC(G) − GKC(G − e)`` of the edge in each column of ``edge_index``.

    edge_index: (2, E) undirected (both directions present), no self-loops or duplicates;
    x: (n, d) features or None for identity features; y: (n,) int labels; train_mask: (n,)
    bool or index tensor of labelled nodes (the set S). Returns (E,) on the compute device
    (``device``, else ``x``'s); both directions of an edge get the same score.

    ``form``: ``"dual"`` (|S|×|S| solve), ``"primal"`` (D×D, D the feature width; NTK through
    ``random_features`` random features) or ``"auto"`` (the cheaper); ``max_memory``: bytes the
    scoring may use (default: free memory of the device), refused with ``MemoryError`` beyond.
    Edges farther than ``k`` hops from every training node get exactly 0; the work and memory
    grow with the ``k``-hop region of the training nodes, not with n².
    """
    options = dict(k=k, kernel=kernel, lam=lam, engine=engine, form=form, random_features=random_features,
                   max_memory=max_memory)
    check_options(**options)
    problem = _prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device)
    if problem.edges.num_edges == 0:
        return torch.zeros(0, device=problem.x.device)
    return _scores(problem, centre, **options)[problem.edges.inverse.to(problem.x.device)]


def sanitize(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, *,
             num_nodes: int | None = None, edge_weight: Tensor | None = None,
             ratio: float | None = None, threshold: float | str | None = "auto",
             label_check: bool = True, label_top_k: int = 2, candidates: str = "labelled", k: int = 1,
             kernel: str = "linear", lam: float = 1e-2, centre: bool = True,
             engine: str = "first_order", form: str = "auto", random_features: int = 4096,
             max_memory: int | None = None, device=None) -> Sanitized:
    """Prune the suspicious edges of an undirected graph (rule in :mod:`kces.prune`).

    Arguments as :func:`kc_scores`, plus ``ratio``/``threshold`` (how many to prune),
    ``label_check`` (prune candidates whose endpoint labels disagree, ``label_top_k`` feature
    classes counting as compatible, see :func:`kces.labels.label_disagreement`) and ``candidates``
    (``"labelled"``: edges touching a training node; ``"all"``). The inputs are not
    modified; both directions of a pruned edge go together.
    """
    options = dict(k=k, kernel=kernel, lam=lam, engine=engine, form=form, random_features=random_features,
                   max_memory=max_memory)
    check_options(**options)
    check_ratio_threshold(ratio, threshold)
    if not isinstance(label_top_k, int) or label_top_k < 1:
        raise ValueError(f"label_top_k must be an integer >= 1, got {label_top_k!r}")
    if candidates not in ("labelled", "all"):
        raise ValueError(f"candidates must be 'labelled' or 'all', got {candidates!r}")
    problem = _prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device)
    edges, dev = problem.edges, problem.x.device
    if edges.num_edges == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=edge_index.device)
        return Sanitized(edge_index=edge_index.clone(), edge_mask=empty, scores=torch.zeros(0, device=dev))
    scores = _scores(problem, centre, **options)
    pairs, inverse = edges.pairs.to(dev), edges.inverse.to(dev)
    src, dst = pairs
    labelled = torch.zeros(edges.num_nodes, dtype=torch.bool, device=dev)
    labelled[problem.train_nodes] = True
    eligible = labelled[src] | labelled[dst] if candidates == "labelled" else torch.ones_like(src, dtype=torch.bool)
    disagree = (label_disagreement(pairs, problem.x, problem.y, problem.train_nodes,
                                   problem.num_classes, label_top_k) if label_check else None)
    pruned = prune_mask(scores, eligible, disagree, ratio=ratio, threshold=threshold)
    edge_mask = ~pruned[inverse].to(edge_index.device)
    return Sanitized(edge_index=edge_index[:, edge_mask], edge_mask=edge_mask, scores=scores[inverse])
