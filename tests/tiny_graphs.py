"""A tiny generated graph file for the command-line and benchmark tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


def write_tiny_npz(path: Path, n: int = 80, classes: int = 3, d: int = 30, seed: int = 0,
                   features: bool = True, labels: bool = True) -> Path:
    """A Nettack-layout planted-partition graph: (n, n) symmetric 0/1 adjacency, (n, d) binary
    features correlated with the class, (n,) labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    upper = np.triu(rng.random((n, n)) < np.where(y[:, None] == y[None, :], 0.15, 0.02), 1)
    adj = sp.csr_matrix((upper | upper.T).astype(np.float32))
    arrays = {"adj_data": adj.data, "adj_indices": adj.indices, "adj_indptr": adj.indptr,
              "adj_shape": np.array(adj.shape)}
    if features:
        prototypes = rng.random((classes, d)) < 0.3
        binary = (rng.random((n, d)) < 0.05) | (prototypes[y] & (rng.random((n, d)) < 0.6))
        x = sp.csr_matrix(binary.astype(np.float32))
        arrays.update(attr_data=x.data, attr_indices=x.indices, attr_indptr=x.indptr, attr_shape=np.array(x.shape))
    if labels:
        arrays["labels"] = y
    np.savez(path, **arrays)
    return path
