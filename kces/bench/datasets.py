"""Datasets of the benchmark: the Pro-GNN graphs by name, or any Nettack-layout ``.npz`` file."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..data import Graph, find_file, load_clean, load_graph
from ..labels import is_identity_like
from ..files import SPLIT_KEYS, random_split, read_npz, undirected

NAMED = ("cora", "citeseer", "polblogs", "cora_ml")
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
    """``spec``: one of :data:`NAMED` (files looked up as :func:`kces.data.find_file`, under
    ``root`` if given) or a path to a ``.npz`` file. Raises ``ValueError`` /
    ``FileNotFoundError`` naming the problem."""
    if spec in NAMED:
        return Dataset(name=spec, key=spec, graph=_named_graph(spec, root), named=True)
    if spec.endswith(".npz"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {spec} does not exist")
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:10]
        return Dataset(name=path.stem, key=f"{path.stem}-{digest}", graph=_file_graph(path), named=False)
    raise ValueError(f"unknown dataset {spec!r}; expected one of {', '.join(NAMED)} or a path to a .npz file")


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
        raise ValueError(f"{path}: has {sorted(split)} but not all of {SPLIT_KEYS}")
    idx = tuple(split[key] for key in SPLIT_KEYS) if split else random_split(labels, SPLIT_SEED)
    if any((labels[i] < 0).any() for i in idx):
        raise ValueError(f"{path}: nodes of the split have negative (missing) labels")
    return _graph(path.stem, undirected(adj), features, labels, idx)


def _graph(name: str, adj, features, labels: np.ndarray, idx: tuple[np.ndarray, ...]) -> Graph:
    return Graph(name=name, adj=adj, features=features, labels=labels, idx_train=idx[0], idx_val=idx[1],
                 idx_test=idx[2], clean_adj=adj)
