"""Labels for the nodes KCES reasons about.

Training nodes carry their true labels. Every other node gets a label from kernel ridge
regression on (unit-norm) features against the training nodes — by default features averaged
over each node's nearest nodes by feature cosine (:func:`smoothed_features`; still graph-free) —:
its own class scores alone, *graph-free* (an attacker who only edits edges cannot move it at
all; ``label_source="features"``),
or those plus the mean of its unlabelled neighbours' (:func:`neighbourhood_scores`; edges at
training nodes cast no vote, so an attacker's edges there cannot move it, but edges between
unlabelled nodes can; ``"neighbourhood"``). By default (``"both"``) an edge must pass both.

A featureless graph has no such label: there a node's neighbourhood stands in for its
features (with identity features the propagated features ``ÂX = Â`` *are* the neighbourhoods),
and an edge whose endpoints share almost no neighbours is what disagrees.

There an edge also disagrees when it joins a training node to a node that has far more training
neighbours of that class than its other neighbours predict (:func:`training_neighbour_excess`): a
poisoning attacker reaches the training loss by linking training nodes, so that is where its
edges pile up, even when they pass the overlap test (edges to a community's interlinked hubs).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .graph import Identity, both_directions, node_mask
from .neighbours import feature_neighbour_pairs


MIN_NEIGHBOURHOOD_OVERLAP = 0.3
"""On a featureless graph an edge disagrees when the overlap of its endpoints' neighbour sets
(:func:`neighbourhood_overlap`) is at most this (chosen on Polblogs' validation nodes,
``benchmarks/selection.py``)."""


SMOOTHING_HOPS = 2
"""Times :func:`smoothed_features` averages the features over the nearest-neighbour graph (1, 2 and
k = 5, 10, 20 measured by the share of right feature labels on the validation nodes of Cora and
Citeseer: 2 hops over 20 neighbours the best on both, 74.7% / 78.7% against 70.7% / 72.0% unsmoothed)."""


EXCESS_Z = 2.5
"""A node's training neighbours are in excess when they exceed the count its other neighbours
predict by more than this many standard deviations (:func:`training_neighbour_excess`; chosen on
Polblogs' validation nodes, ``benchmarks/selection.py``)."""


def is_identity_like(x: Tensor) -> bool:
    """True for featureless graphs: every row of ``x`` (n, d) is one-hot on its own column."""
    if x.shape[1] < x.shape[0]:
        return False
    nonzero = x != 0
    if not bool((nonzero.sum(1) == 1).all()):
        return False
    return torch.unique(nonzero.float().argmax(1)).numel() == x.shape[0]


def is_featureless(x: Tensor | Identity) -> bool:
    """True when ``x`` carries no feature signal: an :class:`~kces.graph.Identity` or identity-like."""
    return isinstance(x, Identity) or is_identity_like(x)


def smoothed_features(x: Tensor, k: int, hops: int = SMOOTHING_HOPS) -> Tensor:
    """(n, d) ``x`` (n, d) averaged ``hops`` times over the graph that links each node to its ``k``
    nearest nodes by feature cosine (:func:`~kces.neighbours.feature_neighbour_pairs`, made
    symmetric, self-loops added, normalised as GCN's ``D^-1/2 (A + I) D^-1/2``), in ``x``'s dtype.
    Graph-free: read off the features alone, so no edge an attacker inserts or removes moves it.
    Work: the O(n² d) neighbour search (O(n · nnz) for sparse features), then O(hops · n k d)."""
    n = x.shape[0]
    pairs = feature_neighbour_pairs(x, k)
    loops = torch.arange(n, device=x.device).repeat(2, 1)
    index = torch.cat([pairs, pairs.flip(0), loops], 1)
    degree = torch.bincount(index[0], minlength=n).to(torch.float64)
    values = (degree[index[0]] * degree[index[1]]).rsqrt()
    propagate = torch.sparse_coo_tensor(index, values, (n, n), check_invariants=False).coalesce()
    smoothed = x.double()
    for _ in range(hops):
        smoothed = torch.sparse.mm(propagate, smoothed)
    return smoothed.to(x.dtype)


def feature_class_scores(x: Tensor, y: Tensor, train_nodes: Tensor, num_classes: int, lam: float = 1.0,
                         neighbours: int = 0) -> Tensor:
    """(n, C) class scores of a kernel ridge regression of the one-hot training labels on
    unit-norm features (linear kernel, ridge ``lam``), solved in the cheaper of its primal
    (d×d) or dual (|S|×|S|) form; with ``neighbours`` > 0 the features are first
    :func:`smoothed_features` over each node's ``neighbours`` nearest by feature cosine. Uses no
    edges."""
    if neighbours > 0:
        x = smoothed_features(x, neighbours)
    xn = torch.nn.functional.normalize(x, dim=1)
    xs = xn[train_nodes]
    targets = torch.nn.functional.one_hot(y[train_nodes], num_classes).to(x.dtype)
    ridge = lam * torch.eye(min(xs.shape), dtype=x.dtype, device=x.device)  # the smaller system's size
    if xs.shape[0] <= xs.shape[1]:
        coef = xs.T @ torch.linalg.solve(xs @ xs.T + ridge, targets)
    else:
        coef = torch.linalg.solve(xs.T @ xs + ridge, xs.T @ targets)
    return xn @ coef


def neighbourhood_scores(pairs: Tensor, scores: Tensor, labelled: Tensor) -> Tensor:
    """(n, C): each node's own ``scores`` (n, C) plus the mean scores of its unlabelled
    neighbours over the undirected ``pairs`` (2, m). Edges at labelled nodes do not vote — that
    is where a poisoning attacker inserts — so inserting edges at training nodes cannot move
    any node's vote; moving one takes edges among unlabelled nodes."""
    src, dst = both_directions(pairs)
    voter = ~labelled[src]
    total = torch.zeros_like(scores).index_add_(0, dst[voter], scores[src[voter]])
    count = torch.zeros(scores.shape[0], dtype=scores.dtype, device=scores.device)
    count.index_add_(0, dst[voter], torch.ones_like(dst[voter], dtype=scores.dtype))
    return scores + total / count.clamp(min=1)[:, None]


def label_score_sets(pairs: Tensor, scores: Tensor, labelled: Tensor, source: str) -> list[Tensor]:
    """The (n, C) class scores the label check reads under ``source``: the feature class scores
    ``scores`` (``"features"``), those plus the mean of the unlabelled neighbours' over the
    undirected ``pairs`` (2, m) (``"neighbourhood"``, :func:`neighbourhood_scores`; ``labelled``
    (n,) bool), or both (``"both"``: an edge disagrees when it does under either)."""
    score_sets = [scores] if source != "neighbourhood" else []
    if source != "features":
        score_sets.append(neighbourhood_scores(pairs, scores, labelled))
    return score_sets


def neighbourhood_overlap(pairs: Tensor, num_nodes: int) -> Tensor:
    """(m,) overlap coefficient ``|N(u) ∩ N(v)| / min(|N(u) − {v}|, |N(v) − {u}|)`` of the
    neighbour sets of the endpoints of each of the m distinct undirected edges ``pairs`` (2, m)
    (no self-loops), N taken in the graph those edges make; 1 where an endpoint has no other
    neighbour (nothing to compare). Unlike the Jaccard similarity it does not punish an edge
    for joining a low-degree node to a hub. Work: the sum over edges of the smaller degree."""
    n = num_nodes
    if pairs.shape[1] == 0:
        return torch.ones(0, device=pairs.device)
    src, dst = both_directions(pairs)
    keys, order = torch.sort(src * n + dst)
    neighbours = dst[order]
    degree = torch.bincount(src, minlength=n)
    start = torch.cumsum(degree, 0) - degree
    small_first = degree[pairs[0]] <= degree[pairs[1]]
    small, large = torch.where(small_first, pairs[0], pairs[1]), torch.where(small_first, pairs[1], pairs[0])
    count = degree[small]
    edge = torch.repeat_interleave(torch.arange(pairs.shape[1], device=pairs.device), count)
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)  # each edge's first row in `edge`
    within = torch.arange(edge.numel(), device=pairs.device) - first
    query = large[edge] * n + neighbours[start[small][edge] + within]  # is each neighbour of `small` one of `large`?
    found = keys[torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)] == query
    common = torch.bincount(edge[found], minlength=pairs.shape[1])
    others = count - 1  # the smaller endpoint's neighbours besides the other endpoint
    return torch.where(others > 0, common / others.clamp(min=1), torch.ones_like(common, dtype=torch.float))


def expected_training_neighbours(outside, num_train: int, num_nodes: int):
    """``(e, s)``: how many training neighbours nodes with ``outside`` neighbours outside the
    training set should have when the ``num_train`` training nodes are a random sample of the
    ``num_nodes`` nodes, ``e = outside·|S| / (n − |S|)``, and its standard deviation, taken as
    ``s = √(e + 1)``. ``outside``: a tensor, NumPy array or number; the results are alike."""
    expected = outside * num_train / max(num_nodes - num_train, 1)
    return expected, (expected + 1) ** 0.5


def training_neighbour_excess(pairs: Tensor, y: Tensor, train_nodes: Tensor, num_classes: int,
                              z: float = EXCESS_Z) -> Tensor:
    """(m,) bool: the edges of ``pairs`` (2, m) (distinct undirected edges) from a training node of
    class c to a node with an excess of class-c training neighbours.

    The training nodes ``train_nodes`` (labels ``y``) are a random sample of the n nodes, so a node
    with u neighbours outside it should have about ``e = u·|S| / (n − |S|)`` neighbours inside it
    (standard deviation taken as ``s = √(e + 1)``). Edges inserted at training nodes — the way a
    poisoning attacker reaches the training loss — raise that count at their other end: where the
    excess ``X`` = (training neighbours) − e exceeds ``z·s`` and exactly one class c has at least
    ``X − s`` training neighbours there (only it can account for the excess), the edges from the
    class-c training nodes are flagged, unless the node is itself a training node of class c.
    Where several classes could account for it, nothing is flagged. Work O(n·C + m)."""
    n = y.shape[0]
    device = pairs.device
    labelled = node_mask(train_nodes.to(device), n)
    src, dst = both_directions(pairs)
    from_train = labelled[src]
    outside = torch.bincount(dst[~from_train], minlength=n).double()
    counts = torch.zeros(n * num_classes, dtype=torch.float64, device=device)
    counts.index_add_(0, dst[from_train] * num_classes + y[src[from_train]],
                      torch.ones(int(from_train.sum()), dtype=torch.float64, device=device))
    counts = counts.view(n, num_classes)
    expected, spread = expected_training_neighbours(outside, train_nodes.numel(), n)
    excess = counts.sum(1) - expected
    accounts = counts >= (excess - spread)[:, None]
    attacker = accounts.to(torch.uint8).argmax(1)
    suspect = (excess > z * spread) & (accounts.sum(1) == 1)
    suspect[train_nodes] &= attacker[train_nodes] != y[train_nodes]
    u, v = pairs
    return ((labelled[u] & suspect[v] & (y[u] == attacker[v]))
            | (labelled[v] & suspect[u] & (y[v] == attacker[u])))


def label_disagreement(pairs: Tensor, x: Tensor | Identity, y: Tensor, train_nodes: Tensor, num_classes: int,
                       top_k: int = 1, source: str = "features", scores: Tensor | None = None) -> Tensor:
    """(m,) bool: the endpoints of each edge in ``pairs`` (2, m) disagree about their class.

    A training node's label is its true label and its only compatible class; any other node's
    label is the top class of its class scores and its compatible classes are its ``top_k``
    best. The scores are :func:`feature_class_scores` (``source="features"``: graph-free) or
    those plus the mean of its unlabelled neighbours' (``"neighbourhood"``,
    :func:`neighbourhood_scores`); ``"both"`` flags what either flags. An edge disagrees when
    neither endpoint's label is compatible with the other endpoint. Featureless graphs (``x`` an
    :class:`~kces.graph.Identity`, or :func:`is_identity_like`) carry no feature signal, so no
    label for an unlabelled node: there an edge disagrees when its endpoints' neighbourhoods
    overlap by at most :data:`MIN_NEIGHBOURHOOD_OVERLAP` (:func:`neighbourhood_overlap`), or when
    it joins a training node to a node with an excess of training neighbours of that node's class
    (:func:`training_neighbour_excess`). ``scores``: (n, C) class scores to label the unlabelled
    nodes by instead of ``feature_class_scores(x, y, train_nodes, num_classes)``, for a caller that
    asks many times (``x`` is then not read: the check is by labels).
    """
    if scores is None:
        if is_featureless(x):
            return ((neighbourhood_overlap(pairs, x.shape[0]) <= MIN_NEIGHBOURHOOD_OVERLAP)
                    | training_neighbour_excess(pairs, y, train_nodes, num_classes))
        scores = feature_class_scores(x, y, train_nodes, num_classes)
    n = scores.shape[0]
    labelled = node_mask(train_nodes.to(scores.device), n)
    src, dst = pairs
    disagree = torch.zeros(pairs.shape[1], dtype=torch.bool, device=scores.device)
    for label_scores in label_score_sets(pairs, scores, labelled, source):
        label = label_scores.argmax(1)
        label[train_nodes] = y[train_nodes]
        compatible = torch.zeros(n, num_classes, dtype=torch.bool, device=scores.device)
        compatible.scatter_(1, label_scores.topk(min(top_k, num_classes), dim=1).indices, True)
        compatible[train_nodes] = False
        compatible[train_nodes, y[train_nodes]] = True
        disagree |= ~compatible[dst, label[src]] & ~compatible[src, label[dst]]
    return disagree
