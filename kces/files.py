"""Files of the command line: atomic writes, Nettack-layout ``.npz`` graphs, PyG ``.pt`` graphs.

Nothing here unpickles: ``.npz`` files are read with ``allow_pickle=False`` (object arrays in
them are copied byte for byte, never decoded) and ``.pt`` files with ``weights_only=True``.
"""
from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp
import torch

from .data import edge_difference, load_npz_graph

ADJ_KEYS = ("adj_data", "adj_indices", "adj_indptr")
SPLIT_KEYS = ("idx_train", "idx_val", "idx_test")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(binary file)`` into a temporary file beside it, fsync,
    then ``os.replace``: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def random_split(labels: np.ndarray, seed: int, train: float = 0.1, val: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random (not stratified) split of the labelled nodes (label >= 0): ``train``
    and ``val`` shares, the rest test. Returns three sorted int64 index arrays."""
    nodes = np.random.default_rng(seed).permutation(np.flatnonzero(labels >= 0))
    n_train, n_val = int(round(train * nodes.size)), int(round(val * nodes.size))
    parts = nodes[:n_train], nodes[n_train:n_train + n_val], nodes[n_train + n_val:]
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def read_npz(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, dict[str, np.ndarray]]:
    """A Nettack-layout ``.npz``: raw (n, n) adjacency, (n, d) float32 features (identity if
    there are no ``attr_*`` arrays), (n,) int64 labels and the ``idx_*`` split arrays it holds.

    Raises ``ValueError`` naming the file and the problem (unreadable, missing or
    inconsistent arrays)."""
    try:
        adj, features, labels = load_npz_graph(path)
        with np.load(path, allow_pickle=False) as loader:
            split = {key: loader[key].astype(np.int64).ravel() for key in SPLIT_KEYS if key in loader.files}
    except KeyError as error:
        raise ValueError(f"{path}: not a Nettack-layout .npz (no array {str(error.args[0]).split()[0]})") from None
    except Exception as error:  # numpy/zipfile raise many types for a bad file; all mean "cannot read"
        raise ValueError(f"{path}: cannot read it as .npz ({error_line(error)[:200]})") from None
    n = adj.shape[0]
    if adj.shape != (n, n) or features.shape[0] != n or labels.shape != (n,):
        raise ValueError(f"{path}: inconsistent shapes: adjacency {adj.shape}, features {features.shape}, "
                         f"labels {labels.shape}")
    for key, idx in split.items():
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{path}: {key} has node indices outside [0, {n})")
    return adj, features, labels, split


def undirected(adj: sp.spmatrix) -> sp.csr_matrix:
    """The symmetric 0/1 float32 adjacency without self-loops: edge {i, j} where ``adj`` has
    (i, j) or (j, i)."""
    adj = sp.csr_matrix(adj)
    sym = ((adj != 0) + (adj.T != 0)).astype(np.float32).tocsr()
    sym.setdiag(0)
    sym.eliminate_zeros()
    return sym


def sanitize_npz(src: Path, dst: Path, seed: int, train_ratio: float, options: dict) -> tuple[int, int]:
    """KCES on a Nettack-layout ``.npz``; writes ``dst`` with every other array kept byte for byte.

    A directed input is scored as its undirected version; a pruned edge {i, j} loses both
    (i, j) and (j, i); self-loops, weights and order of the kept entries stay. Returns the
    undirected edge counts (before, after)."""
    from .adapters import sanitize_adj

    adj, features, labels, split = read_npz(src)
    graph = undirected(adj)
    train = split["idx_train"] if "idx_train" in split else random_split(labels, seed, train_ratio, 0.0)[0]
    pruned = edge_difference(graph, sanitize_adj(graph, features, labels, train, **options))
    with np.load(src, allow_pickle=False) as loader:
        dtypes = {key: loader[key].dtype for key in ADJ_KEYS}
    arrays = {key: value.astype(dtypes[key]) for key, value in _without_pairs(adj, pruned).items()}
    atomic_write(dst, lambda f: _replace_members(src, f, arrays))
    return graph.nnz // 2, graph.nnz // 2 - len(pruned)


def _without_pairs(adj: sp.csr_matrix, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """CSR arrays (``adj_data``, ``adj_indices``, ``adj_indptr``) of ``adj`` without the entries
    (i, j) and (j, i) of each row of ``pairs`` (m, 2); the other entries keep their order."""
    n = adj.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(adj.indptr))
    gone = np.concatenate([pairs[:, 0] * n + pairs[:, 1], pairs[:, 1] * n + pairs[:, 0]])
    keep = ~np.isin(rows * n + adj.indices, gone)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=n))])
    return {"adj_data": adj.data[keep], "adj_indices": adj.indices[keep], "adj_indptr": indptr}


def _replace_members(src: Path, out: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """Copy the zip ``src`` into ``out`` with the ``.npy`` members of ``arrays`` replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            key = info.filename.removesuffix(".npy")
            if key in arrays:
                fresh = zipfile.ZipInfo(info.filename, info.date_time)
                fresh.compress_type = info.compress_type
                with zout.open(fresh, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arrays[key], allow_pickle=False)
            else:
                zout.writestr(info, zin.read(info))


def load_pyg(path: Path):
    """A ``torch_geometric.data.Data`` saved with ``torch.save``, loaded with ``weights_only=True``."""
    from torch_geometric.data import Data
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    try:
        with torch.serialization.safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
            data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for a bad file; all mean "cannot read"
        raise ValueError(f"{path}: cannot read it as a PyG Data .pt file ({error_line(error)[:200]})") from None
    if not isinstance(data, Data):
        raise ValueError(f"{path}: holds a {type(data).__name__}, expected a torch_geometric.data.Data")
    return data


def sanitize_pt(src: Path, dst: Path, seed: int, train_ratio: float, options: dict) -> tuple[int, int]:
    """KCES (the PyG transform) on a saved ``Data``; writes ``dst`` with all attributes kept and
    edge-level ones following the kept edges. Without ``train_mask`` a seeded ``train_ratio``
    split of the labelled nodes is used (and not stored). Returns the edge counts (before,
    after), undirected."""
    from .transform import KCES

    data = load_pyg(src)
    if not isinstance(getattr(data, "y", None), torch.Tensor) or data.y.dim() != 1:
        raise ValueError(f"{src}: the Data needs node labels y of shape (num_nodes,)")
    work = data
    if getattr(data, "train_mask", None) is None:
        work = data.clone()
        work.train_mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        work.train_mask[torch.from_numpy(random_split(data.y.numpy(), seed, train_ratio, 0.0)[0])] = True
    out = KCES(**options)(work)
    if work is not data:
        del out.train_mask
    atomic_write(dst, lambda f: torch.save(out, f))
    return data.edge_index.shape[1] // 2, out.edge_index.shape[1] // 2
