"""Row-norm and centred row-norm updates for a softmax classifier head (Lau & Su 2026)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ._base import MatrixOptimizer, ParamsT, check_bool, check_number

__all__ = ["RowNorm"]


class RowNorm(MatrixOptimizer):
    """Row-normalised momentum, optionally centred across rows, for a classifier head.

    A softmax head ``W`` of shape ``(C, d)`` (classes × features, the ``nn.Linear`` layout) has two
    symmetries: permuting classes, and the shared shift ``W → W + 1vᵀ`` that leaves every softmax
    unchanged. Normalising each class row is permutation-equivariant; centring the normalised rows
    (``centered=True``) also makes the update orthogonal to the shift, so it never moves ``W``
    along the directions the loss cannot see (the mean row of ``W`` only changes by weight decay)::

        B ← lerp(B, G, 1 - momentum);  M = lerp(G, B, momentum) if nesterov else B
        D_i = M_i / (‖M_i‖₂ + eps);    if centered: D ← D - mean_i D_i
        W ← (1 - lr·weight_decay)·W - lr·sqrt(d)·D

    The factor ``sqrt(d)`` gives each row an RMS of 1 before centring, the size of a sign or Adam
    update, so AdamW learning rates carry over (this is also how :func:`optim.build_optimizer`
    uses it: with the AdamW learning rate). ``ndim > 2`` is flattened to ``(shape[0], -1)``.

    Args:
        params: weight matrices (``ndim >= 2``) or parameter groups.
        lr: learning rate (default 1e-3, the AdamW default).
        momentum: EMA factor of the momentum buffer, in ``[0, 1)`` (default 0.95).
        nesterov: Nesterov look-ahead (default True).
        weight_decay: decoupled weight decay (default 0).
        centered: subtract the mean normalised row (default False).
        eps: added to each row norm (default 1e-12).
        check_finite: raise ``FloatingPointError`` on nan/inf gradients before changing anything;
            ``None`` (default): only for CPU tensors (the check costs a host sync on accelerators).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        centered: bool = False,
        eps: float = 1e-12,
        check_finite: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        centered=centered, eps=eps, check_finite=check_finite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_bool("centered", group["centered"])
        check_number("eps", group["eps"])

    def _direction(self, matrix: Tensor, group: dict[str, Any]) -> Tensor:
        rows = matrix / (matrix.norm(dim=1, keepdim=True) + group["eps"])
        if group["centered"]:
            rows = rows - rows.mean(dim=0, keepdim=True)
        return rows

    def _scale(self, rows: int, cols: int, group: dict[str, Any]) -> float:
        return math.sqrt(cols)
