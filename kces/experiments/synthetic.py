"""Reproducible synthetic graphs for scaling studies: a stochastic block model with
class-correlated Gaussian features, generated in O(n·d + E log E) time and memory.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..errors import InputError

_ROUNDS = 8  # draws (1% oversampled) until self-loops and duplicates are replaced; sparse graphs need 1


def sbm_graph(num_nodes: int, num_classes: int = 4, avg_degree: float = 10.0, homophily: float = 0.8,
              num_features: int = 64, noise: float = 1.0, train_ratio: float = 0.1, seed: int = 0) -> Data:
    """Stochastic block model with class-correlated Gaussian features, deterministic in ``seed``.

    Labels are balanced: a random permutation of the nodes is dealt round-robin into the classes
    (class sizes differ by at most one).
    Edges: ``round(num_nodes · avg_degree / 2)`` undirected edges, each drawn as a source node
    chosen uniformly and a target chosen uniformly within the source's class with probability
    ``homophily``, else uniformly among the nodes of the other classes — so the expected edge
    homophily (share of edges joining two nodes of one class) is ``homophily``. Self-loops and
    duplicates are dropped and redrawn (up to 8 rounds: sparse graphs reach the edge count
    exactly, very dense ones may end below it). Features: ``x_i = μ_{y_i} + noise · ε_i``
    with class means ``μ_c`` and noise ``ε_i`` both standard normal in ``num_features`` dimensions.
    The labels, training split and edges are drawn before the features, so they do not depend
    on ``num_features`` or ``noise``.

    Returns a :class:`~torch_geometric.data.Data` with ``x`` (n, d) float32, ``y`` (n,) int64,
    ``train_mask`` (n,) bool holding exactly ``round(train_ratio · n)`` nodes, and
    ``edge_index`` (2, E) int64 holding both directions of every edge, coalesced (sorted by
    row, then column), without self-loops or duplicates. Raises ``ValueError`` naming the bad
    argument.
    """
    _check(num_nodes, num_classes, avg_degree, homophily, num_features, noise, train_ratio)
    n = num_nodes
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    y = torch.empty(n, dtype=torch.int64)
    y[perm] = torch.arange(n) % num_classes
    # node ids grouped by class: class c occupies by_class[start[c] : start[c] + size[c]]
    by_class = torch.cat([perm[c::num_classes] for c in range(num_classes)])
    size = torch.bincount(y, minlength=num_classes)
    start = torch.cumsum(size, 0) - size
    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[torch.randperm(n, generator=gen)[:round(train_ratio * n)]] = True

    target = round(n * avg_degree / 2)
    keys = torch.empty(0, dtype=torch.int64)  # undirected edges as lo * n + hi, lo < hi, sorted
    for _ in range(_ROUNDS):
        missing = target - keys.numel()
        if missing <= 0:
            break
        new = _draw_edges(missing + missing // 100 + 100, y, by_class, start, size, homophily, gen)
        keys = torch.unique(torch.cat([keys, new]))
    if keys.numel() > target:  # drop the surplus of the 1% oversampling at random positions
        keep = torch.ones(keys.numel(), dtype=torch.bool)
        keep[torch.randperm(keys.numel(), generator=gen)[:keys.numel() - target]] = False
        keys = keys[keep]
    lo, hi = keys // n, keys % n
    both = torch.sort(torch.cat([lo * n + hi, hi * n + lo])).values
    del keys, lo, hi
    edge_index = torch.empty(2, both.numel(), dtype=torch.int64)
    torch.div(both, n, rounding_mode="floor", out=edge_index[0])
    torch.remainder(both, n, out=edge_index[1])
    del both

    means = torch.randn(num_classes, num_features, generator=gen)
    # x = noise · ε + means[y]; the one-hot product adds the means without an (n, d) temporary
    x = torch.randn(n, num_features, generator=gen).mul_(noise)
    x.addmm_(torch.nn.functional.one_hot(y, num_classes).float(), means)
    return Data(x=x, y=y, edge_index=edge_index, train_mask=train_mask, num_nodes=n)


def _draw_edges(count: int, y: Tensor, by_class: Tensor, start: Tensor, size: Tensor, homophily: float,
                gen: torch.Generator) -> Tensor:
    """``count`` SBM draws as keys ``lo * n + hi`` (≤ count,) int64, self-loops dropped."""
    n = y.numel()
    src = torch.randint(n, (count,), generator=gen)
    c = y[src]
    same = torch.rand(count, generator=gen) < homophily
    # float64 uniforms: floor(u · s) < s for every s < 2^53, so positions stay in range
    within = start[c] + (torch.rand(count, generator=gen, dtype=torch.float64) * size[c]).long()
    other = (torch.rand(count, generator=gen, dtype=torch.float64) * (n - size[c])).long()
    other += torch.where(other >= start[c], size[c], 0)  # skip the source's own class block
    dst = by_class[torch.where(same, within, other)]
    lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
    return (lo * n + hi)[lo != hi]


def _check(num_nodes, num_classes, avg_degree, homophily, num_features, noise, train_ratio) -> None:
    for name, value, low in (("num_nodes", num_nodes, 2), ("num_classes", num_classes, 2),
                             ("num_features", num_features, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_classes > num_nodes:
        raise InputError(f"num_classes ({num_classes}) exceeds num_nodes ({num_nodes}): a class would be empty")
    if num_nodes > 3_000_000_000:
        raise InputError(f"num_nodes must be <= 3e9 (edge keys lo * n + hi are int64), got {num_nodes}")
    if not 0 < avg_degree <= num_nodes - 1:
        raise InputError(f"avg_degree must be in (0, num_nodes - 1 = {num_nodes - 1}], got {avg_degree!r}")
    if not 0 <= homophily <= 1:
        raise InputError(f"homophily must be in [0, 1], got {homophily!r}")
    if not noise >= 0:
        raise InputError(f"noise (feature noise standard deviation) must be >= 0, got {noise!r}")
    if not 0 < train_ratio <= 1 or round(train_ratio * num_nodes) == 0:
        raise InputError(f"train_ratio must be in (0, 1] and select at least one of the {num_nodes} nodes, "
                         f"got {train_ratio!r}")
