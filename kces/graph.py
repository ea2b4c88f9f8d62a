"""Graph checks, the undirected edge list KCES scores, and GCN propagation.

KCES works on undirected graphs. An ``edge_index`` (2, E) holding both directions of each
edge is reduced to ``pairs`` (2, m) with ``pairs[0] < pairs[1]``, sorted, one weight per
pair; ``inverse`` (E,) maps every input column to its pair so results go back aligned.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import InputError, InputTypeError


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


@dataclass(frozen=True)
class Identity:
    """The identity features ``X = I`` (n, n) of a featureless graph, never materialised by the
    first-order scores (:func:`kces.complexity.region_rows` propagates one column per labelled
    node instead); ``shape``, ``dtype`` and ``device`` stand in for those of a tensor."""

    num_nodes: int
    dtype: torch.dtype
    device: torch.device

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.num_nodes)

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def dense(self) -> Tensor:
        """The (n, n) identity, for the reference engines on small graphs."""
        return torch.eye(self.num_nodes, dtype=self.dtype, device=self.device)


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``edge_index`` is a valid (2, E) integer index."""
    if not isinstance(edge_index, Tensor):
        raise InputTypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise InputTypeError(f"edge_index must hold integers, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise InputError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if num_nodes <= 0:
        raise InputError("the graph is empty (no nodes)")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise InputError(f"edge_index has node ids outside [0, {num_nodes}): "
                         f"min {int(edge_index.min())}, max {int(edge_index.max())}")


def undirected_edges(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> UndirectedEdges:
    """Collapse a symmetric ``edge_index`` into unique undirected pairs.

    Refuses self-loops, duplicate edges, a directed graph (an edge without its reverse)
    and, with ``edge_weight``, a pair whose two directions carry different weights.
    """
    check_edge_index(edge_index, num_nodes)
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor) or edge_weight.shape != (edge_index.shape[1],):
            raise InputError(f"edge_weight must be a tensor of shape ({edge_index.shape[1]},)")
        if not torch.isfinite(edge_weight).all() or (edge_weight < 0).any():
            raise InputError("edge_weight must be finite and non-negative")
    row, col = edge_index[0], edge_index[1]
    if (row == col).any():
        raise InputError(f"the graph has {int((row == col).sum())} self-loop(s); remove them first "
                         "(torch_geometric.utils.remove_self_loops): GCN propagation adds its own")
    # one stable sort of the undirected keys: in a symmetric graph without duplicates every
    # key appears exactly twice, once per direction, and the sorted keys are the sorted pairs
    upper = row < col
    key, order = torch.sort(torch.where(upper, row, col) * num_nodes + torch.where(upper, col, row), stable=True)
    first, second = key[0::2], key[1::2]
    if (key.numel() % 2 or not torch.equal(first, second) or bool((first[1:] == first[:-1]).any())
            or not torch.equal(upper[order[0::2]], ~upper[order[1::2]])):
        directed_key = row * num_nodes + col
        if torch.unique(directed_key).numel() != directed_key.numel():
            raise InputError("edge_index has duplicate edges; coalesce it first (torch_geometric.utils.coalesce)")
        raise InputError("the graph is directed (some edge lacks its reverse); KCES needs an undirected "
                         "graph: use torch_geometric.utils.to_undirected or torch_geometric.transforms.ToUndirected")
    pairs = torch.stack([first // num_nodes, first % num_nodes])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device) // 2
    if edge_weight is None:
        weight = torch.ones(pairs.shape[1])
    else:
        weight = torch.zeros(pairs.shape[1], dtype=edge_weight.dtype, device=edge_weight.device)
        weight = weight.scatter_(0, inverse, edge_weight)
        if not torch.equal(weight[inverse], edge_weight):
            raise InputError("edge_weight differs between the two directions of an edge")
    return UndirectedEdges(pairs=pairs, weight=weight, inverse=inverse, num_nodes=num_nodes)


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _csr_structure(row: Tensor, col: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR of entries (``row``, ``col``): ``crow`` (num_rows + 1,), ``col`` in row order, and
    ``entry`` (nnz,), the input position of each CSR entry (a stable sort by row)."""
    entry = torch.sort(row, stable=True).indices
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return crow, col[entry], entry


class _SpMM(torch.autograd.Function):
    """``A @ z`` for a sparse (r, n) ``A`` in CSR (``crow``, ``col``, ``values``), differentiable in
    ``values`` and ``z`` without ever holding an (nnz, d) tensor: ``∂/∂values`` is ``grad zᵀ``
    sampled on A's pattern, ``∂/∂z = Aᵀ grad`` (``A`` itself when ``symmetric``)."""

    @staticmethod
    def forward(ctx, values: Tensor, z: Tensor, crow: Tensor, col: Tensor, symmetric: bool) -> Tensor:
        ctx.save_for_backward(values, z, crow, col)
        ctx.symmetric = symmetric
        return _csr(crow, col, values, (crow.numel() - 1, z.shape[0])) @ z

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, z, crow, col = ctx.saved_tensors
        shape = (crow.numel() - 1, z.shape[0])
        grad_values = grad_z = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow, col, torch.zeros_like(values), shape)
            grad_values = torch.sparse.sampled_addmm(pattern, grad, z.T, beta=0.0).values()
        if ctx.needs_input_grad[1]:
            if ctx.symmetric:
                grad_z = _csr(crow, col, values, shape) @ grad
            else:
                rows = torch.repeat_interleave(torch.arange(shape[0], device=crow.device), crow.diff())
                crow_t, rows_t, entry = _csr_structure(col, rows, shape[1])
                grad_z = _csr(crow_t, rows_t, values[entry], (shape[1], shape[0])) @ grad
        return grad_values, grad_z, None, None, None


def positions(ids: Tensor, num_nodes: int) -> Tensor:
    """(num_nodes,) int64: the position of every node in ``ids`` (r,) distinct, −1 for the others."""
    position = torch.full((num_nodes,), -1, dtype=torch.long, device=ids.device)
    position[ids] = torch.arange(ids.numel(), device=ids.device)
    return position


def node_mask(ids: Tensor, num_nodes: int) -> Tensor:
    """(num_nodes,) bool, True at the nodes ``ids``."""
    mask = torch.zeros(num_nodes, dtype=torch.bool, device=ids.device)
    mask[ids] = True
    return mask


def both_directions(pairs: Tensor) -> tuple[Tensor, Tensor]:
    """(src, dst), each (2m,): the undirected ``pairs`` (2, m) in both directions, pair i at
    entries i and m + i."""
    return torch.cat([pairs[0], pairs[1]]), torch.cat([pairs[1], pairs[0]])


def gcn_norm(pairs: Tensor, weight: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Entries of ``Â = D̃^-1/2 (A + I) D̃^-1/2`` for undirected ``pairs`` (2, m) with ``weight`` (m,):
    the diagonal (n,) ``1/d̃_i`` and the edge entries (m,) ``w_ij / sqrt(d̃_i d̃_j)``, ``d̃ = 1 + Σ w``
    (``torch_geometric.nn.conv.gcn_conv.gcn_norm`` on the pair list, without building it twice)."""
    deg = torch.ones(num_nodes, dtype=weight.dtype, device=weight.device)
    deg = deg.index_add(0, pairs[0], weight).index_add(0, pairs[1], weight)
    inv_sqrt = deg.rsqrt()
    return inv_sqrt * inv_sqrt, inv_sqrt[pairs[0]] * weight * inv_sqrt[pairs[1]]


def gcn_propagate(x: Tensor, pairs: Tensor, weight: Tensor, k: int, rows: Tensor | None = None,
                  normalize: bool = True) -> Tensor:
    """``Z = Â^k X`` with rows L2-normalised (unless ``normalize=False``), ``Â = D̃^-1/2 (A + I) D̃^-1/2``.

    x: (n, d); pairs: (2, m) undirected edges; weight: (m,) edge weights, differentiable
    (KC scores flow through it); k ≥ 1 hops; rows: (r,) node ids to return, the last hop
    computed for them alone (default: all n). Returns (r, d) on ``x``'s device and dtype.
    Memory is O(n·d + m): the sparse products run in CSR, never on (m, d) messages.
    """
    n = x.shape[0]
    self_norm, norm = gcn_norm(pairs, weight.to(x.dtype), n)
    self_norm = self_norm[:, None]
    src, dst = both_directions(pairs)
    pair_of = torch.arange(pairs.shape[1], device=x.device).repeat(2)
    z = x
    if k > 1:
        crow, col, entry = _csr_structure(dst, src, n)
        values = norm[pair_of[entry]]
        for _ in range(k - 1):
            z = self_norm * z + _SpMM.apply(values, z, crow, col, True)
    if rows is None:  # last hop over the whole graph
        crow, col, entry = _csr_structure(dst, src, n)
        out = self_norm * z + _SpMM.apply(norm[pair_of[entry]], z, crow, col, True)
        return torch.nn.functional.normalize(out, dim=1) if normalize else out
    target, back = torch.unique(rows, return_inverse=True)
    position = positions(target, n)
    chosen = (position[dst] >= 0).nonzero().view(-1)  # entries of the rows asked for
    crow, col, entry = _csr_structure(position[dst[chosen]], src[chosen], target.numel())
    out = self_norm[target] * z[target] + _SpMM.apply(norm[pair_of[chosen[entry]]], z, crow, col, False)
    out = torch.nn.functional.normalize(out, dim=1) if normalize else out
    return out[back]


@dataclass(frozen=True)
class Region:
    """The part of a graph that can move the propagated rows of a node set S.

    ``nodes``: (n_r,) sorted global ids; ``edges``: (m_r,) ids of the undirected edges with an
    endpoint within k hops of S; ``pairs``: (2, m_r) those edges relabelled to ``nodes`` order
    (still ``pairs[0] < pairs[1]``); ``position``: (n,) local id of every global node, −1 outside.
    """

    nodes: Tensor
    edges: Tensor
    pairs: Tensor
    position: Tensor


def khop_region(pairs: Tensor, num_nodes: int, seeds: Tensor, k: int) -> Region:
    """Region of ``seeds`` (S) for k-hop GCN propagation over undirected ``pairs`` (2, m).

    ``(Â^k X)[S]`` reads features within k hops of S and the degrees of those nodes, so it
    depends exactly on the edges with an endpoint within k hops (the degree of a node at
    distance k counts all its edges); every other edge cannot change it. Propagating over
    ``Region.pairs`` gives the same rows for S as over the whole graph. (PyG's
    ``k_hop_subgraph`` keeps only edges inside the ball, which would cut those degrees.)
    """
    reached = torch.zeros(num_nodes, dtype=torch.bool, device=pairs.device)
    reached[seeds] = True
    for _ in range(k):
        grown = reached.clone()
        grown[pairs[1][reached[pairs[0]]]] = True
        grown[pairs[0][reached[pairs[1]]]] = True
        reached = grown
    edges = (reached[pairs[0]] | reached[pairs[1]]).nonzero().view(-1)
    kept = torch.zeros(num_nodes, dtype=torch.bool, device=pairs.device)
    kept[seeds] = True
    kept[pairs[:, edges].reshape(-1)] = True
    nodes = kept.nonzero().view(-1)
    position = positions(nodes, num_nodes)
    return Region(nodes=nodes, edges=edges, pairs=position[pairs[:, edges]], position=position)
