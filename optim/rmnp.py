"""RMNP: row-normalised Nesterov momentum (Deng et al. 2026, github.com/Dominator-Index/RMNP)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ._base import MatrixOptimizer, ParamsT, check_number

__all__ = ["RMNP"]


class RMNP(MatrixOptimizer):
    """RMNP: Muon with the orthogonalisation replaced by row normalisation, ``O(mn)`` per step.

    For a weight ``W`` of shape ``(m, n)`` = ``(out_features, in_features)``, in that native layout
    (tall matrices are *not* transposed; ``ndim > 2`` is flattened to ``(shape[0], -1)``)::

        B ← lerp(B, G, 1 - momentum);  M = lerp(G, B, momentum) if nesterov else B
        D_i = M_i / (‖M_i‖₂ + eps)            for every row i
        W ← (1 - lr·weight_decay)·W - lr·sqrt(max(1, m/n))·D

    (The published code keeps an SGD-style buffer ``B ← μB + G``; after row normalisation that is
    the same direction, since both buffers differ by the factor ``1 - μ``.)

    Args:
        params: weight matrices (``ndim >= 2``) or parameter groups.
        lr: learning rate (default 0.02).
        momentum: EMA factor of the momentum buffer, in ``[0, 1)`` (default 0.95).
        nesterov: Nesterov look-ahead (default True).
        weight_decay: decoupled weight decay (default 0).
        eps: added to each row norm (default 1e-12).
        check_finite: raise ``FloatingPointError`` on nan/inf gradients before changing anything;
            ``None`` (default): only for CPU tensors (the check costs a host sync on accelerators).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
        check_finite: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        eps=eps, check_finite=check_finite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_number("eps", group["eps"])

    def _direction(self, matrix: Tensor, group: dict[str, Any]) -> Tensor:
        return matrix / (matrix.norm(dim=1, keepdim=True) + group["eps"])
