"""Faces for scipy/DeepRobust adjacency matrices and networkx graphs (networkx is imported
only by :func:`sanitize_networkx`)."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.utils import from_scipy_sparse_matrix

from .anchors import anchor
from .errors import InputError, InputTypeError
from .functional import sanitize
from .options import Anchoring, Complexity, Pruning

if TYPE_CHECKING:
    import networkx as nx


def edge_difference(adj: sp.spmatrix, other: sp.spmatrix) -> np.ndarray:
    """Undirected edges (i < j) present in ``adj`` and absent from ``other``, as (m, 2) int64."""
    diff = sp.triu((sp.csr_matrix(adj) != 0).astype(np.int8) - (sp.csr_matrix(other) != 0).astype(np.int8), k=1).tocoo()
    keep = diff.data > 0
    return np.stack([diff.row[keep], diff.col[keep]], axis=1).astype(np.int64)


def compute_device(device: Any) -> torch.device:
    """Where the scipy/numpy faces compute: ``device``, else the GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dense_features(features: Any) -> torch.Tensor | None:
    if features is None:
        return None
    if sp.issparse(features):
        features = features.toarray()
    if isinstance(features, torch.Tensor):
        features = features.to_dense() if features.is_sparse else features
        return features.detach().to(torch.float32)
    return torch.as_tensor(np.asarray(features, dtype=np.float32))


def _edges_of(adj: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """The stored non-zero entries of a square scipy/numpy ``adj`` as (row, col, data) arrays and
    as a PyG (edge_index, edge_weight); ``TypeError``/``ValueError`` for another kind or shape."""
    if isinstance(adj, torch.Tensor):
        raise InputTypeError("pass the adjacency as a scipy sparse matrix or numpy array (DeepRobust's "
                             "adj before utils.to_tensor), not a torch tensor")
    sparse_in = sp.issparse(adj)
    if not sparse_in and not isinstance(adj, np.ndarray):
        raise InputTypeError(f"adj must be a scipy sparse matrix or numpy array, got {type(adj).__name__}")
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise InputError(f"adj must be square, got shape {adj.shape}")
    coo = sp.coo_matrix(adj)
    stored = coo.data != 0
    row, col, data = coo.row[stored], coo.col[stored], coo.data[stored]
    edge_index, weight = from_scipy_sparse_matrix(sp.coo_matrix((data, (row, col)), shape=adj.shape))
    return row, col, data, edge_index, weight


def sanitize_adj(adj: Any, features: Any, labels: Any, idx_train: Any, *,
                 pruning: Pruning | Mapping[str, Any] | None = None,
                 complexity: Complexity | Mapping[str, Any] | None = None, device: Any = None) -> Any:
    """KCES on a DeepRobust-style adjacency: returns a new symmetric adjacency without the
    pruned edges, of the input's kind (scipy sparse → CSR of the same dtype; numpy dense →
    numpy; a scipy sparse *array* gives a ``csr_array``); a rule that re-weights (an
    ``unlabelled_weight`` below 1, as the default's) gives the kept edges their
    new weights (float32 for an integer input). ``features`` (n, d) scipy/numpy/torch
    or None (identity); ``labels`` (n,); ``idx_train`` training node indices or a bool mask;
    ``pruning``/``complexity`` as :func:`kces.sanitize`. Dense Gram work runs on CUDA when
    available unless ``device`` says otherwise.
    """
    row, col, data, edge_index, weight = _edges_of(adj)
    unweighted = bool(np.all(data == 1))
    result = sanitize(edge_index, _dense_features(features), labels, idx_train, num_nodes=adj.shape[0],
                      edge_weight=None if unweighted else weight.float(), device=compute_device(device),
                      pruning=pruning, complexity=complexity)
    mask = result.edge_mask.cpu().numpy()
    kept = data[mask] if result.edge_weight is None else result.edge_weight.cpu().numpy()
    dtype = adj.dtype if result.edge_weight is None or np.issubdtype(adj.dtype, np.floating) else np.float32
    return _like(adj, sp.csr_matrix((kept, (row[mask], col[mask])), shape=adj.shape, dtype=dtype))


def _like(adj: Any, out: sp.csr_matrix) -> Any:
    """``out`` as the kind of ``adj``: numpy dense, a scipy sparse array or matrix (CSR)."""
    if not sp.issparse(adj):
        return out.toarray()
    return sp.csr_array(out) if isinstance(adj, sp.sparray) else out


def anchor_adj(adj: Any, features: Any, *, anchoring: Anchoring | Mapping[str, Any] | None = None,
               device: Any = None) -> Any:
    """Feature anchors (:mod:`kces.anchors`) joined to a DeepRobust-style adjacency, e.g. the
    output of :func:`sanitize_adj`: a new symmetric adjacency of the input's kind (as
    :func:`sanitize_adj`; float32 for an integer or bool input) where an entry is the larger of
    the input's and the anchor weight at an anchor, the input's elsewhere. ``features`` (n, d)
    scipy/numpy/torch (a featureless graph has no anchors: ``ValueError``); ``anchoring``:
    :class:`kces.Anchoring` (or a dict of its fields; default ``k = 10``, weight 0.5). The feature
    cosines run on CUDA when available unless ``device`` says otherwise.
    """
    *_, edge_index, weight = _edges_of(adj)
    if features is None:
        raise InputError("anchors need node features; features is None (a featureless graph)")
    result = anchor(edge_index, _dense_features(features), num_nodes=adj.shape[0], edge_weight=weight.double(),
                    anchoring=anchoring, device=compute_device(device))
    out_row, out_col = result.edge_index.cpu().numpy()
    dtype = adj.dtype if np.issubdtype(adj.dtype, np.floating) else np.float32
    return _like(adj, sp.csr_matrix((result.edge_weight.cpu().numpy(), (out_row, out_col)), shape=adj.shape,
                                    dtype=dtype))


def sanitize_networkx(graph: nx.Graph, labels: Mapping[Hashable, int] | str, train_nodes: Iterable[Hashable], *,
                      features: Any = None, pruning: Pruning | Mapping[str, Any] | None = None,
                      complexity: Complexity | Mapping[str, Any] | None = None, device: Any = None) -> nx.Graph:
    """KCES on an undirected networkx graph; returns a copy without the pruned edges (all node,
    edge and graph attributes kept; a rule that re-weights sets the new ``weight`` of the edges
    it re-weights). ``labels``: node → label mapping or the name of a node
    attribute (only training nodes need one); ``features``: (n, d) rows in ``graph.nodes``
    order, or None for identity features; edge attribute ``weight`` is honoured;
    ``pruning``/``complexity`` as :func:`kces.sanitize`. Integer labels are the classes; any other
    labels (e.g. strings) are mapped to classes 0, 1, ... in sorted order.
    """
    import networkx as nx

    nodes, adj = _networkx_adjacency(graph, "sanitize_networkx")
    position = {node: i for i, node in enumerate(nodes)}
    train_nodes = list(train_nodes)
    unknown = [v for v in train_nodes if v not in position]
    if unknown:
        raise InputError(f"train_nodes holds {len(unknown)} node(s) not in the graph, e.g. {unknown[0]!r}")
    train = np.zeros(len(nodes), dtype=bool)
    train[[position[v] for v in train_nodes]] = True
    if isinstance(labels, str):
        labels = nx.get_node_attributes(graph, labels)
    y = np.full(len(nodes), -1, dtype=np.int64)
    known = {node: label for node, label in labels.items() if node in position}
    values = list(dict.fromkeys(known.values()))
    if all(isinstance(v, numbers.Integral) for v in values):
        classes = {v: int(v) for v in values}
    else:  # e.g. karate club's 'Mr. Hi' / 'Officer': classes in sorted order (first appearance if unsortable)
        try:
            values = sorted(values)
        except TypeError:
            pass
        classes = {v: c for c, v in enumerate(values)}
    for node, label in known.items():
        y[position[node]] = classes[label]
    sanitized = sanitize_adj(adj, features, y, train, pruning=pruning, complexity=complexity, device=device)
    # remove only the edges KCES pruned: a zero-weight edge is no edge of ``adj``, never scored
    out = graph.copy()
    out.remove_edges_from([(nodes[i], nodes[j]) for i, j in edge_difference(adj, sanitized)])
    _set_changed_weights(out, nodes, adj, sanitized)
    return out


def anchor_networkx(graph: nx.Graph, features: Any, *, anchoring: Anchoring | Mapping[str, Any] | None = None,
                    device: Any = None) -> nx.Graph:
    """Feature anchors (:mod:`kces.anchors`) joined to an undirected networkx graph, e.g. the
    output of :func:`sanitize_networkx`: a copy (all node, edge and graph attributes kept) where
    each anchor the graph lacked is a new edge with ``weight`` the anchor weight, and an edge an
    anchor lies on has ``weight`` the larger of its own (1 without) and that. ``features``: (n, d)
    rows in ``graph.nodes`` order (a featureless graph has no anchors: ``ValueError``);
    ``anchoring``/``device`` as :func:`anchor_adj`.
    """
    nodes, adj = _networkx_adjacency(graph, "anchor_networkx")
    out = graph.copy()
    _set_changed_weights(out, nodes, adj, anchor_adj(adj, features, anchoring=anchoring, device=device))
    return out


def _networkx_adjacency(graph: nx.Graph, face: str) -> tuple[list[Hashable], sp.csr_matrix]:
    """``graph``'s nodes and its (n, n) CSR adjacency in their order (edge attribute ``weight``, 1
    without); ``TypeError`` naming ``face`` unless ``graph`` is an undirected simple ``nx.Graph``,
    ``ValueError`` if it has no node."""
    import networkx as nx

    if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
        raise InputTypeError(f"{face} needs an undirected simple nx.Graph "
                             "(convert a DiGraph with .to_undirected(), a MultiGraph with nx.Graph(g))")
    if graph.number_of_nodes() == 0:
        raise InputError("the graph is empty (no nodes)")
    nodes = list(graph.nodes)
    return nodes, sp.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=nodes, weight="weight", format="csr"))


def _set_changed_weights(out: nx.Graph, nodes: list[Hashable], before: sp.csr_matrix, after: Any) -> None:
    """Give each pair of ``after`` (n, n, rows in ``nodes`` order) whose entry differs from
    ``before``'s that entry as the ``weight`` of its edge in ``out``, adding the edge if absent."""
    upper = sp.triu(sp.csr_matrix(after), k=1).tocoo()
    changed = upper.data != np.asarray(before[upper.row, upper.col]).ravel()
    for i, j, weight in zip(upper.row[changed], upper.col[changed], upper.data[changed]):
        out.add_edge(nodes[i], nodes[j], weight=float(weight))
