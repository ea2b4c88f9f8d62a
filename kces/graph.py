"""Graph checks, the undirected edge list KCES scores, and GCN propagation.

KCES works on undirected graphs. An ``edge_index`` (2, E) holding both directions of each
edge is reduced to ``pairs`` (2, m) with ``pairs[0] < pairs[1]``, sorted, one weight per
pair; ``inverse`` (E,) maps every input column to its pair so results go back aligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class UndirectedEdges:
    """Unique undirected edges of a graph.

    ``pairs``: (2, m) int64, ``pairs[0] < pairs[1]``, sorted lexicographically.
    ``weight``: (m,) float edge weights (1 for unweighted graphs).
    ``inverse``: (E,) int64, the pair of every column of the input ``edge_index``.
    """

    pairs: Tensor
    weight: Tensor
    inverse: Tensor
    num_nodes: int

    @property
    def num_edges(self) -> int:
        return self.pairs.shape[1]


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``edge_index`` is a valid (2, E) integer index."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must hold integers, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if num_nodes <= 0:
        raise ValueError("the graph is empty (no nodes)")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index has node ids outside [0, {num_nodes}): "
                         f"min {int(edge_index.min())}, max {int(edge_index.max())}")


def undirected_edges(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> UndirectedEdges:
    """Collapse a symmetric ``edge_index`` into unique undirected pairs.

    Refuses self-loops, duplicate edges, a directed graph (an edge without its reverse)
    and, with ``edge_weight``, a pair whose two directions carry different weights.
    """
    check_edge_index(edge_index, num_nodes)
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor) or edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must be a tensor of shape ({edge_index.shape[1]},)")
        if not torch.isfinite(edge_weight).all() or (edge_weight < 0).any():
            raise ValueError("edge_weight must be finite and non-negative")
    row, col = edge_index[0], edge_index[1]
    if (row == col).any():
        raise ValueError(f"the graph has {int((row == col).sum())} self-loop(s); remove them first "
                         "(torch_geometric.utils.remove_self_loops): GCN propagation adds its own")
    directed_key = row * num_nodes + col
    if torch.unique(directed_key).numel() != directed_key.numel():
        raise ValueError("edge_index has duplicate edges; coalesce it first (torch_geometric.utils.coalesce)")
    reverse_key = col * num_nodes + row
    sorted_key, _ = torch.sort(directed_key)
    pos = torch.searchsorted(sorted_key, reverse_key).clamp(max=max(sorted_key.numel() - 1, 0))
    if directed_key.numel() and not bool((sorted_key[pos] == reverse_key).all()):
        raise ValueError("the graph is directed (some edge lacks its reverse); KCES needs an undirected "
                         "graph: use torch_geometric.utils.to_undirected or torch_geometric.transforms.ToUndirected")
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    pair_key, inverse = torch.unique(lo * num_nodes + hi, sorted=True, return_inverse=True)
    pairs = torch.stack([pair_key // num_nodes, pair_key % num_nodes])
    if edge_weight is None:
        weight = torch.ones(pairs.shape[1])
    else:
        weight = torch.zeros(pairs.shape[1], dtype=edge_weight.dtype, device=edge_weight.device)
        weight = weight.scatter_(0, inverse, edge_weight)
        if not torch.equal(weight[inverse], edge_weight):
            raise ValueError("edge_weight differs between the two directions of an edge")
    return UndirectedEdges(pairs=pairs, weight=weight, inverse=inverse, num_nodes=num_nodes)


def gcn_propagate(x: Tensor, pairs: Tensor, weight: Tensor, k: int) -> Tensor:
    """``Z = Â^k X`` with rows L2-normalised, ``Â = D̃^-1/2 (A + I) D̃^-1/2``.

    x: (n, d); pairs: (2, m) undirected edges; weight: (m,) edge weights, differentiable
    (KC scores flow through it); k ≥ 1 hops. Returns (n, d) on ``x``'s device and dtype.
    """
    n = x.shape[0]
    weight = weight.to(x.dtype)
    src = torch.cat([pairs[0], pairs[1]])
    dst = torch.cat([pairs[1], pairs[0]])
    w = torch.cat([weight, weight])
    deg = torch.ones(n, dtype=x.dtype, device=x.device).index_add(0, dst, w)
    inv_sqrt = deg.rsqrt()
    norm = inv_sqrt[src] * w * inv_sqrt[dst]
    self_norm = inv_sqrt * inv_sqrt
    z = x
    for _ in range(k):
        z = (self_norm[:, None] * z).index_add(0, dst, norm[:, None] * z[src])
    return torch.nn.functional.normalize(z, dim=1)
