"""Benchmark datasets: the Pro-GNN graphs, loaded exactly as DeepRobust loads them (without
pickles), and any Nettack-layout ``.npz`` file.

Files are looked up, in this order, under an explicit ``root``, ``$KCES_DATA``, the
files embedded in the package (Cora clean + 20% Metattack) and ``shared/data`` beside the
repository (:data:`SHARED_ROOT`, whatever the current directory), all in one layout::

    npz/{name}.npz                                   clean graph (Nettack layout)
    prognn/splits/{name}_prognn_splits.json          Pro-GNN train/val/test split
    prognn/meta/{name}_meta_adj_{rate}.npz           Metattack, rate in {0.05..0.25}
    prognn/nettack/{name}_nettack_adj_{rate}.npz     Nettack, rate in {1.0..5.0}
    prognn/nettack/{name}_nettacked_nodes.json       Nettack's target nodes

A missing file is downloaded from its published address only when ``download=True``.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.utils import from_scipy_sparse_matrix

from ..adapters import edge_difference
from ..errors import InputError
from ..formats import SPLIT_KEYS, random_split, read_npz, read_sparse_npz, undirected
from ..labels import is_identity_like
from .names import DATASETS, PREPERTURBED

EMBEDDED_ROOT = Path(__file__).parents[1] / "_data"
SHARED_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
"""``shared/data`` beside the repository of this checkout (not the current directory)."""
_URLS = {
    "npz": "https://raw.githubusercontent.com/danielzuegner/gnn-meta-attack/master/data/{file}",
    "prognn": "https://raw.githubusercontent.com/ChandlerBang/Pro-GNN/master/{sub}/{file}",
}


@dataclass(frozen=True)
class Graph:
    """An undirected, unweighted benchmark graph with a fixed split.

    ``adj`` is (n, n) float32 CSR, symmetric, 0/1, no self-loops; ``features`` is
    (n, d) float32 CSR (identity for featureless graphs); ``labels`` is (n,) int64.
    ``clean_adj`` is the unperturbed adjacency (ground truth for attacks, never used by
    a defence); ``target_nodes`` are Nettack's attacked test nodes (else empty).
    """

    name: str
    adj: sp.csr_matrix
    features: sp.csr_matrix
    labels: np.ndarray
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    clean_adj: sp.csr_matrix
    target_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_nodes(self) -> int:
        return self.adj.shape[0]

    @property
    def train_mask(self) -> np.ndarray:
        """(n,) bool, True at the training nodes."""
        return index_mask(self.idx_train, self.num_nodes)

    def with_adj(self, adj: sp.spmatrix) -> "Graph":
        """The same graph with another (e.g. sanitized) adjacency."""
        return replace(self, adj=sp.csr_matrix(adj, dtype=np.float32))

    def inserted_edges(self) -> np.ndarray:
        """(m, 2) int64 array of undirected edges (i < j) in ``adj`` but not ``clean_adj``."""
        return edge_difference(self.adj, self.clean_adj)

    def to_pyg(self) -> Data:
        """A ``torch_geometric.data.Data`` with x, edge_index, y and train/val/test masks."""
        n = self.num_nodes
        edge_index = from_scipy_sparse_matrix(self.adj)[0]
        splits = (("train_mask", self.idx_train), ("val_mask", self.idx_val), ("test_mask", self.idx_test))
        masks = {key: torch.from_numpy(index_mask(idx, n)) for key, idx in splits}
        return Data(x=torch.from_numpy(self.features.toarray()), edge_index=edge_index,
                    y=torch.from_numpy(self.labels), num_nodes=n, **masks)


def upper_pairs(adj: sp.spmatrix) -> torch.Tensor:
    """(2, m) int64: each undirected edge of the symmetric ``adj`` (n, n) once, ``i < j``, in
    row-major order (the ``edge_index`` half that :mod:`kces` calls ``pairs``)."""
    upper = sp.triu(adj, k=1).tocoo()
    return torch.from_numpy(np.vstack([upper.row, upper.col]).astype(np.int64))


def index_mask(nodes: np.ndarray | list[int], num_nodes: int) -> np.ndarray:
    """(num_nodes,) bool, True at ``nodes`` (indices)."""
    mask = np.zeros(num_nodes, dtype=bool)
    mask[nodes] = True
    return mask


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = [Path(p) for p in [os.environ.get("KCES_DATA")] if p]
    return roots + [EMBEDDED_ROOT, SHARED_ROOT]


def find_file(relpath: str, root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Path of a data file (layout in the module docstring); downloads it if allowed."""
    for base in _candidates(root):
        if (base / relpath).is_file():
            return base / relpath
    if not download:
        raise FileNotFoundError(
            f"data file {relpath!r} not found under {', '.join(str(p) for p in _candidates(root))}; give the "
            "folder that holds it (kces bench --data-root DIR; root= in Python) or set $KCES_DATA")
    top, _, rest = relpath.partition("/")
    sub, _, file = rest.rpartition("/") if top == "prognn" else ("", "", rest)
    target = _candidates(root)[0] / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(_URLS[top].format(sub=sub, file=file), target)
    return target


def largest_connected_component(adj: sp.spmatrix) -> np.ndarray:
    """Node ids of the largest connected component, ascending (DeepRobust's order)."""
    _, component = sp.csgraph.connected_components(adj)
    sizes = np.bincount(component)
    return np.flatnonzero(component == np.argsort(sizes)[::-1][0])


def load_clean(name: str, root=None, download: bool = False):
    """Clean LCC graph exactly as ``deeprobust.graph.data.Dataset(setting='prognn')``."""
    adj, features, labels, _ = read_npz(find_file(f"npz/{name}.npz", root, download))
    adj = undirected(adj)
    keep = largest_connected_component(adj)
    return sp.csr_matrix(adj[keep][:, keep]), features[keep], labels[keep]


def load_graph(name: str = "cora", attack: str | None = None, rate: float = 0.0,
               root=None, download: bool = False) -> Graph:
    """A Pro-GNN benchmark graph: clean (``attack=None`` or ``rate=0``) or pre-perturbed.

    ``attack='meta'`` takes rates 0.05..0.25 (share of edges), ``'nettack'`` 1.0..5.0
    (perturbations per target node; then ``target_nodes`` is set). Matches DeepRobust's
    ``Dataset(name, setting='prognn')`` and ``PrePtbDataset`` on the same files.
    """
    if attack is not None and attack not in PREPERTURBED:
        raise InputError(f"unknown attack {attack!r}; expected one of {PREPERTURBED} or None")
    adj, features, labels = load_clean(name, root, download)
    with open(find_file(f"prognn/splits/{name}_prognn_splits.json", root, download)) as f:
        split = json.load(f)
    perturbed, targets = adj, np.zeros(0, dtype=np.int64)
    if attack is not None and rate > 0:
        tag = f"{rate:g}" if attack == "meta" else f"{float(rate):.1f}"
        perturbed = read_sparse_npz(find_file(f"prognn/{attack}/{name}_{attack}_adj_{tag}.npz", root, download))
        if perturbed.shape != adj.shape:
            raise InputError(f"perturbed adjacency {perturbed.shape} does not match the clean LCC {adj.shape}")
        if attack == "nettack":
            with open(find_file(f"prognn/nettack/{name}_nettacked_nodes.json", root, download)) as f:
                targets = np.asarray(json.load(f)["attacked_test_nodes"], dtype=np.int64)
    return Graph(name=name, adj=perturbed, features=features, labels=labels,
                 idx_train=np.asarray(split["idx_train"], dtype=np.int64),
                 idx_val=np.asarray(split["idx_val"], dtype=np.int64),
                 idx_test=np.asarray(split["idx_test"], dtype=np.int64),
                 clean_adj=adj, target_nodes=targets)


SPLIT_SEED = 0
"""Seed of the random 10/10/80 split of graphs that come without one (cora_ml, most files)."""


@dataclass(frozen=True)
class Dataset:
    """A clean benchmark graph. ``name`` is recorded in the results (the benchmark name or the
    file's stem); ``key`` names its files (the name, or stem + a hash of the file's bytes);
    ``named`` is True for the Pro-GNN datasets (only they have pre-perturbed graphs)."""

    name: str
    key: str
    graph: Graph
    named: bool

    @cached_property
    def featureless(self) -> bool:
        """True when the features are the identity (Polblogs): no feature signal."""
        features = self.graph.features
        return features.nnz == features.shape[0] and is_identity_like(torch.from_numpy(features.toarray()))


def load_dataset(spec: str, root: str | os.PathLike | None = None) -> Dataset:
    """``spec``: one of :data:`DATASETS` (files looked up as :func:`kces.data.find_file`, under
    ``root`` if given) or a path to a ``.npz`` file. Raises ``ValueError`` /
    ``FileNotFoundError`` naming the problem."""
    if spec in DATASETS:
        return Dataset(name=spec, key=spec, graph=_named_graph(spec, root), named=True)
    if spec.endswith(".npz"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {spec} does not exist")
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:10]
        return Dataset(name=path.stem, key=f"{path.stem}-{digest}", graph=_file_graph(path), named=False)
    raise InputError(f"unknown dataset {spec!r}; expected one of {', '.join(DATASETS)} or a path to a .npz file")


def _named_graph(name: str, root) -> Graph:
    """The Pro-GNN graph with its split, or (no Pro-GNN split, e.g. cora_ml) the clean largest
    component with a seeded random split."""
    try:
        find_file(f"prognn/splits/{name}_prognn_splits.json", root)
    except FileNotFoundError:
        adj, features, labels = load_clean(name, root)
        return _graph(name, adj, features, labels, random_split(labels, SPLIT_SEED))
    return load_graph(name, root=root)


def _file_graph(path: Path) -> Graph:
    adj, features, labels, split = read_npz(path)
    if split and len(split) < len(SPLIT_KEYS):
        raise InputError(f"{path}: has {sorted(split)} but not all of {SPLIT_KEYS}")
    idx = tuple(split[key] for key in SPLIT_KEYS) if split else random_split(labels, SPLIT_SEED)
    if any((labels[i] < 0).any() for i in idx):
        raise InputError(f"{path}: nodes of the split have negative (missing) labels")
    return _graph(path.stem, undirected(adj), features, labels, idx)


def _graph(name: str, adj, features, labels: np.ndarray, idx: tuple[np.ndarray, ...]) -> Graph:
    return Graph(name=name, adj=adj, features=features, labels=labels, idx_train=idx[0], idx_val=idx[1],
                 idx_test=idx[2], clean_adj=adj)
