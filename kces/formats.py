"""Graph files, read and written without unpickling anything.

- Nettack-layout ``.npz`` (``adj_*`` CSR arrays, optional ``attr_*`` features, ``labels``,
  optional ``idx_train``/``idx_val``/``idx_test``): :func:`read_npz`, and
  :func:`write_npz_edges` which copies a file with some edges removed, re-weighted or joined,
  every other array kept byte for byte (object arrays in it are copied, never decoded);
- ``scipy.sparse.save_npz`` files: :func:`read_sparse_npz`;
- PyG ``Data`` saved with ``torch.save``: :func:`load_pyg` (``weights_only=True``; a plain
  ``torch.load`` of such a file needs ``torch.serialization.safe_globals`` with PyG's ``Data``
  classes, as :func:`load_pyg` does, or ``weights_only=False`` for a file you trust);
- :func:`atomic_write`, so a reader never sees half a file.

``.npz`` files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import os
import re
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

from .errors import InputError

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


def reason(error: BaseException) -> str:
    """``Type: message`` of ``error`` on one line, without terminal colour codes."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return f"{type(error).__name__}: {' '.join(message.split())}"


def _csr(loader, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix((loader[f"{prefix}_data"], loader[f"{prefix}_indices"], loader[f"{prefix}_indptr"]),
                         shape=tuple(loader[f"{prefix}_shape"]))


def read_npz(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, dict[str, np.ndarray]]:
    """A Nettack-layout ``.npz``: raw (n, n) adjacency, (n, d) float32 CSR features (identity, as
    in DeepRobust, if there are no ``attr_*`` arrays, e.g. Polblogs), (n,) int64 labels and the
    ``idx_*`` split arrays it holds. Only these keys are read, so object arrays are ignored.

    Raises ``ValueError`` naming the file and the problem (unreadable, missing or
    inconsistent arrays)."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as loader:
            adj = _csr(loader, "adj")
            features = _csr(loader, "attr") if "attr_data" in loader.files else sp.eye(adj.shape[0], format="csr")
            labels = loader["labels"].astype(np.int64)
            split = {key: loader[key].astype(np.int64).ravel() for key in SPLIT_KEYS if key in loader.files}
    except KeyError as error:
        raise InputError(f"{path}: not a Nettack-layout .npz (no array {str(error.args[0]).split()[0]})") from None
    except Exception as error:  # numpy/zipfile raise many types for a bad file; all mean "cannot read"
        raise InputError(f"{path}: cannot read it as .npz ({reason(error)})") from None
    features = sp.csr_matrix(features, dtype=np.float32)
    n = adj.shape[0]
    if adj.shape != (n, n) or features.shape[0] != n or labels.shape != (n,):
        raise InputError(f"{path}: inconsistent shapes: adjacency {adj.shape}, features {features.shape}, "
                         f"labels {labels.shape}")
    for key, idx in split.items():
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(f"{path}: {key} has node indices outside [0, {n})")
    return adj, features, labels, split


def read_sparse_npz(path: str | os.PathLike) -> sp.csr_matrix:
    """A ``scipy.sparse.save_npz`` file, read with ``allow_pickle=False``, as float32 CSR."""
    with np.load(path, allow_pickle=False) as loader:
        fmt = loader["format"].item()
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if fmt not in ("csr", "csc"):
            raise InputError(f"{path}: unsupported sparse format {fmt!r}")
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        mat = cls((loader["data"], loader["indices"], loader["indptr"]), shape=tuple(loader["shape"]))
    return sp.csr_matrix(mat, dtype=np.float32)


def undirected(adj: sp.spmatrix) -> sp.csr_matrix:
    """The symmetric 0/1 float32 adjacency without self-loops: edge {i, j} where ``adj`` has
    (i, j) or (j, i)."""
    adj = sp.csr_matrix(adj)
    sym = ((adj != 0) + (adj.T != 0)).astype(np.float32).tocsr()
    sym.setdiag(0)
    sym.eliminate_zeros()
    return sym


def random_split(labels: np.ndarray, seed: int, train: float = 0.1, val: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded split of the labelled nodes (label >= 0), stratified by class: ``round(train·N)``
    training and ``round(val·N)`` validation nodes, the rest test, every class in each part in
    proportion to its size (within one node). Returns three sorted int64 index arrays.

    Nodes are ordered by their position within their class, ``(rank + 1/2) / class size``, with
    ranks drawn at random, so that every prefix of the order is stratified."""
    rng = np.random.default_rng(seed)
    nodes = rng.permutation(np.flatnonzero(labels >= 0))
    classes = labels[nodes]
    rank = np.empty(nodes.size)
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        rank[members] = (np.arange(members.size) + 0.5) / members.size
    nodes = nodes[np.argsort(rank, kind="stable")]
    n_train, n_val = int(round(train * nodes.size)), int(round(val * nodes.size))
    parts = nodes[:n_train], nodes[n_train:n_train + n_val], nodes[n_train + n_val:]
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def write_npz_edges(src: Path, dst: Path, adj: sp.csr_matrix, removed: np.ndarray,
                    factors: sp.csr_matrix | None = None, joined: sp.csr_matrix | None = None) -> None:
    """Write ``dst``: the Nettack-layout ``src`` (whose raw adjacency is ``adj``, n × n) without
    the entries (i, j) and (j, i) of each row of ``removed`` (m, 2); each kept entry (i, j) with a
    stored value in ``factors`` (n, n) multiplied by it; then each stored entry (i, j) of
    ``joined`` (n, n) joined: a kept entry takes the larger of its value and ``joined``'s, a
    missing one is added at the end of its row (in column order). The kept entries keep their
    order and weights otherwise, and their dtypes (float32 when an integer weight is multiplied
    or entries are joined); every other array is copied byte for byte."""
    with np.load(src, allow_pickle=False) as loader:
        dtypes = {key: loader[key].dtype for key in ADJ_KEYS}
    arrays = _without_pairs(adj, removed)
    n = adj.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(arrays["adj_indptr"]))
    changed = False
    if factors is not None and factors.nnz:
        factor = np.asarray(sp.csr_matrix(factors)[rows, arrays["adj_indices"]]).ravel()
        arrays["adj_data"] = arrays["adj_data"] * np.where(factor != 0, factor, 1.0)
        changed = True
    if joined is not None and joined.nnz:
        arrays = _joined(rows, arrays, sp.csr_matrix(joined).tocoo(), n)
        changed = True
    if changed and not np.issubdtype(dtypes["adj_data"], np.floating):
        dtypes["adj_data"] = np.dtype(np.float32)
    arrays = {key: value.astype(dtypes[key]) for key, value in arrays.items()}
    atomic_write(dst, lambda f: _replace_members(src, f, arrays))


def _joined(rows: np.ndarray, arrays: dict[str, np.ndarray], joined: sp.coo_matrix, n: int) -> dict[str, np.ndarray]:
    """CSR arrays of ``arrays`` (whose entries lie in ``rows``) with the entries of ``joined``
    (no duplicates) joined: a present entry takes the larger value, a missing one is appended to
    its row, in column order."""
    keys = rows * n + arrays["adj_indices"]
    extra = joined.row.astype(np.int64) * n + joined.col
    order = np.argsort(extra)
    extra, values = extra[order], joined.data[order].astype(np.float64)
    data = arrays["adj_data"].astype(np.float64)
    present = np.isin(keys, extra)
    data[present] = np.maximum(data[present], values[np.searchsorted(extra, keys[present])])
    new = ~np.isin(extra, keys)
    all_rows = np.concatenate([rows, extra[new] // n])
    order = np.argsort(all_rows, kind="stable")  # kept entries first in each row, in their order
    return {"adj_data": np.concatenate([data, values[new]])[order],
            "adj_indices": np.concatenate([arrays["adj_indices"], extra[new] % n])[order],
            "adj_indptr": np.concatenate([[0], np.cumsum(np.bincount(all_rows, minlength=n))])}


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


def load_pyg(path: str | os.PathLike) -> Data:
    """A ``torch_geometric.data.Data`` saved with ``torch.save``, loaded with ``weights_only=True``."""
    try:
        with torch.serialization.safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
            data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for a bad file; all mean "cannot read"
        raise InputError(f"{path}: cannot read it as a PyG Data .pt file ({reason(error)})") from None
    if not isinstance(data, Data):
        raise InputError(f"{path}: holds a {type(data).__name__}, expected a torch_geometric.data.Data")
    return data


