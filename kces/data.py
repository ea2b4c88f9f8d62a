"""Benchmark graphs, loaded exactly as DeepRobust loads them, without pickles.

Files are looked up, in this order, under an explicit ``root``, ``$KCES_DATA``, the
files embedded in the package (Cora clean + 20% Metattack) and ``../shared/data``
beside the current directory, all in one layout::

    npz/{name}.npz                                   clean graph (Nettack layout)
    prognn/splits/{name}_prognn_splits.json          Pro-GNN train/val/test split
    prognn/meta/{name}_meta_adj_{rate}.npz           Metattack, rate in {0.05..0.25}
    prognn/nettack/{name}_nettack_adj_{rate}.npz     Nettack, rate in {1.0..5.0}
    prognn/nettack/{name}_nettacked_nodes.json       Nettack's target nodes

A missing file is downloaded from its published address only when ``download=True``.
"""
from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

EMBEDDED_ROOT = Path(__file__).parent / "_data"
ATTACKS = ("meta", "nettack")
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

    def with_adj(self, adj: sp.spmatrix) -> "Graph":
        """The same graph with another (e.g. sanitized) adjacency."""
        return replace(self, adj=sp.csr_matrix(adj, dtype=np.float32))

    def inserted_edges(self) -> np.ndarray:
        """(m, 2) int64 array of undirected edges (i < j) in ``adj`` but not ``clean_adj``."""
        return edge_difference(self.adj, self.clean_adj)

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with x, edge_index, y and train/val/test masks."""
        from torch_geometric.data import Data

        n = self.num_nodes
        coo = self.adj.tocoo()
        edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        masks = {}
        for key, idx in (("train_mask", self.idx_train), ("val_mask", self.idx_val), ("test_mask", self.idx_test)):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.from_numpy(idx)] = True
            masks[key] = mask
        return Data(x=torch.from_numpy(self.features.toarray()), edge_index=edge_index,
                    y=torch.from_numpy(self.labels), num_nodes=n, **masks)


def edge_difference(adj: sp.spmatrix, other: sp.spmatrix) -> np.ndarray:
    """Undirected edges (i < j) present in ``adj`` and absent from ``other``, as (m, 2) int64."""
    diff = sp.triu((sp.csr_matrix(adj) != 0).astype(np.int8) - (sp.csr_matrix(other) != 0).astype(np.int8), k=1).tocoo()
    keep = diff.data > 0
    return np.stack([diff.row[keep], diff.col[keep]], axis=1).astype(np.int64)


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = [Path(p) for p in [os.environ.get("KCES_DATA")] if p]
    return roots + [EMBEDDED_ROOT, Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]


def find_file(relpath: str, root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Path of a data file (layout in the module docstring); downloads it if allowed."""
    for base in _candidates(root):
        if (base / relpath).is_file():
            return base / relpath
    if not download:
        raise FileNotFoundError(
            f"data file {relpath!r} not found under {[str(p) for p in _candidates(root)]}; "
            "pass root= or set $KCES_DATA, or download=True")
    top, _, rest = relpath.partition("/")
    sub, _, file = rest.rpartition("/") if top == "prognn" else ("", "", rest)
    target = _candidates(root)[0] / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(_URLS[top].format(sub=sub, file=file), target)
    return target


def _csr(loader, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix((loader[f"{prefix}_data"], loader[f"{prefix}_indices"], loader[f"{prefix}_indptr"]),
                         shape=tuple(loader[f"{prefix}_shape"]))


def load_npz_graph(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Read a Nettack-layout ``.npz``; returns raw (adj, features, labels).

    Featureless graphs (no ``attr_*`` keys, e.g. Polblogs) get identity features, as in
    DeepRobust. Only the needed keys are read, so object arrays in the file are ignored.
    """
    with np.load(path, allow_pickle=False) as loader:
        adj = _csr(loader, "adj")
        features = _csr(loader, "attr") if "attr_data" in loader.files else sp.eye(adj.shape[0], format="csr")
        labels = loader["labels"].astype(np.int64)
    return adj, sp.csr_matrix(features, dtype=np.float32), labels


def largest_connected_component(adj: sp.spmatrix) -> np.ndarray:
    """Node ids of the largest connected component, ascending (DeepRobust's order)."""
    _, component = sp.csgraph.connected_components(adj)
    sizes = np.bincount(component)
    return np.flatnonzero(component == np.argsort(sizes)[::-1][0])


def load_clean(name: str, root=None, download: bool = False):
    """Clean LCC graph exactly as ``deeprobust.graph.data.Dataset(setting='prognn')``."""
    adj, features, labels = load_npz_graph(find_file(f"npz/{name}.npz", root, download))
    adj = adj + adj.T
    adj.data[:] = np.minimum(adj.data, 1)
    keep = largest_connected_component(adj)
    adj = sp.csr_matrix(adj[keep][:, keep], dtype=np.float32)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj, features[keep], labels[keep]


def read_sparse_npz(path: str | os.PathLike) -> sp.csr_matrix:
    """A ``scipy.sparse.save_npz`` file, read with ``allow_pickle=False``, as float32 CSR."""
    with np.load(path, allow_pickle=False) as loader:
        fmt = loader["format"].item()
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if fmt not in ("csr", "csc"):
            raise ValueError(f"{path}: unsupported sparse format {fmt!r}")
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        mat = cls((loader["data"], loader["indices"], loader["indptr"]), shape=tuple(loader["shape"]))
    return sp.csr_matrix(mat, dtype=np.float32)


def load_graph(name: str = "cora", attack: str | None = None, rate: float = 0.0,
               root=None, download: bool = False) -> Graph:
    """A Pro-GNN benchmark graph: clean (``attack=None`` or ``rate=0``) or pre-perturbed.

    ``attack='meta'`` takes rates 0.05..0.25 (share of edges), ``'nettack'`` 1.0..5.0
    (perturbations per target node; then ``target_nodes`` is set). Matches DeepRobust's
    ``Dataset(name, setting='prognn')`` and ``PrePtbDataset`` on the same files.
    """
    if attack is not None and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS} or None")
    adj, features, labels = load_clean(name, root, download)
    with open(find_file(f"prognn/splits/{name}_prognn_splits.json", root, download)) as f:
        split = json.load(f)
    perturbed, targets = adj, np.zeros(0, dtype=np.int64)
    if attack is not None and rate > 0:
        tag = f"{rate:g}" if attack == "meta" else f"{float(rate):.1f}"
        perturbed = read_sparse_npz(find_file(f"prognn/{attack}/{name}_{attack}_adj_{tag}.npz", root, download))
        if perturbed.shape != adj.shape:
            raise ValueError(f"perturbed adjacency {perturbed.shape} does not match the clean LCC {adj.shape}")
        if attack == "nettack":
            with open(find_file(f"prognn/nettack/{name}_nettacked_nodes.json", root, download)) as f:
                targets = np.asarray(json.load(f)["attacked_test_nodes"], dtype=np.int64)
    return Graph(name=name, adj=perturbed, features=features, labels=labels,
                 idx_train=np.asarray(split["idx_train"], dtype=np.int64),
                 idx_val=np.asarray(split["idx_val"], dtype=np.int64),
                 idx_test=np.asarray(split["idx_test"], dtype=np.int64),
                 clean_adj=adj, target_nodes=targets)
