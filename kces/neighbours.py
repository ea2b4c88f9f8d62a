"""Each node's nearest nodes by feature cosine: the graph-free neighbours behind the feature
anchors (:mod:`kces.anchors`) and the smoothed feature labels (:func:`kces.labels.smoothed_features`).

Work: the (n, n) feature cosines in blocks of rows, O(n² d) time (O(n · nnz) for sparse features)
and O(n) rows' memory per block: benchmark sizes, not millions of nodes.
"""
from __future__ import annotations

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 24
"""Entries of one block of the cosine matrix (64 MiB in float32)."""
SPARSE_BELOW = 0.1
"""Share of non-zero features below which a block's cosines are a sparse × dense product: the
same float64 sums in another order (the same values for binary features); on the bag-of-words
features of Cora and Citeseer (1.3% / 0.9% non-zero) ``anchor_adj`` takes 0.69 / 0.90 s instead of
0.94 / 1.60 s (README, "Feature anchors")."""


def feature_neighbour_pairs(x: Tensor, k: int) -> Tensor:
    """(2, a) int64 undirected pairs (``pairs[0] < pairs[1]``, sorted): each node of ``x`` (n, d)
    linked to the ``k`` other nodes of highest feature cosine (ties by node index), positive
    cosine only. The cosines are computed in float64 and rounded to float32, so that equal cosines
    (frequent with binary features) tie whatever the summation order of the machine's matrix
    product."""
    n = x.shape[0]
    unit = torch.nn.functional.normalize(x.double(), dim=1)
    sparse = bool(torch.count_nonzero(unit) < SPARSE_BELOW * unit.numel())
    columns = unit.T.contiguous() if sparse else unit.T
    rows_per_block = max(1, BLOCK_ELEMENTS // max(n, 1))
    chosen = [torch.zeros(2, 0, dtype=torch.long, device=x.device)]
    for start in range(0, n, rows_per_block):
        rows = torch.arange(start, min(n, start + rows_per_block), device=x.device)
        block = unit[rows]
        cosine = (torch.sparse.mm(block.to_sparse(), columns) if sparse else block @ columns).float()
        cosine[torch.arange(rows.numel(), device=x.device), rows] = -float("inf")
        kth = cosine.topk(min(k, n), dim=1).values[:, -1:]  # the k-th largest of each row
        above, tied = cosine > kth, cosine == kth
        first_tied = tied & (tied.cumsum(1) <= k - above.sum(1, keepdim=True))  # ties by node index
        source, target = ((above | first_tied) & (cosine > 0)).nonzero(as_tuple=True)
        chosen.append(torch.stack([rows[source], target]))
    ends = torch.sort(torch.cat(chosen, 1), dim=0).values
    keys = torch.unique(ends[0] * n + ends[1])  # sorted: by first end, then second
    return torch.stack([keys // n, keys % n])
