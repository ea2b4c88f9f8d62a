"""Muon: momentum orthogonalised by Newton–Schulz (Keller Jordan, github.com/KellerJordan/Muon)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from ._base import ITERATION_DTYPES, MatrixOptimizer, ParamsT, check_choice, check_int, check_number
from .newton_schulz import MUON_COEFFICIENTS, newton_schulz, svd_spectral_power

__all__ = ["Muon"]


class Muon(MatrixOptimizer):
    """Muon — MomentUm Orthogonalized by Newton–Schulz, for hidden weight matrices.

    For a weight ``W`` of shape ``(m, n)`` (``ndim > 2`` is flattened to ``(shape[0], -1)``, as for
    convolution filters) with gradient ``G``::

        B ← lerp(B, G, 1 - momentum);  M = lerp(G, B, momentum) if nesterov else B
        O = NS5(M) ≈ U Vᵀ          (quintic Newton–Schulz, or the exact U Vᵀ with method="svd")
        W ← (1 - lr·weight_decay)·W - lr·s·O,   s = sqrt(max(1, m/n))           ("original")
                                                s = 0.2·sqrt(max(m, n))          ("match_rms_adamw")

    With ``ns_dtype=torch.bfloat16`` this is the update of ``torch.optim.Muon`` (same operations).
    By default the iteration dtype is bf16 on CUDA, fp64 for fp64 parameters, and on a CPU the
    faster of bf16 and fp32 for each weight shape, measured once per process
    (:func:`optim.newton_schulz.measured_dtype`: CPUs with native bf16 favour it, others fp32);
    fp32/fp64 matrices with aspect ratio >= 2 are iterated on their small Gram matrix (same
    polynomial, fewer flops).

    Args:
        params: weight matrices (``ndim >= 2``) or parameter groups; biases, norms and embeddings
            belong in AdamW (see :func:`optim.build_optimizer`).
        lr: learning rate, in units of spectral norm per step (default 0.02, Keller Jordan).
        momentum: EMA factor of the momentum buffer, in ``[0, 1)`` (default 0.95).
        nesterov: use the Nesterov look-ahead ``lerp(G, B, momentum)`` (default True).
        weight_decay: decoupled weight decay, ``W ← (1 - lr·wd)·W`` (default 0).
        ns_steps: Newton–Schulz steps (default 5).
        ns_coefficients: quintic coefficients ``(a, b, c)`` (default (3.4445, -4.7750, 2.0315)).
        eps: floor of the Frobenius norm in the pre-normalisation (default 1e-7).
        ns_dtype: iteration dtype; ``None`` chooses as above.
        method: ``"newton_schulz"`` or ``"svd"`` (exact ``U Vᵀ`` in fp32/fp64, a reference).
        adjust_lr_fn: ``"original"`` or ``"match_rms_adamw"`` (Moonlight), as in ``torch.optim.Muon``.
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
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
        eps: float = 1e-7,
        ns_dtype: torch.dtype | None = None,
        method: Literal["newton_schulz", "svd"] = "newton_schulz",
        adjust_lr_fn: Literal["original", "match_rms_adamw"] = "original",
        check_finite: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            ns_steps=ns_steps, ns_coefficients=ns_coefficients, eps=eps, ns_dtype=ns_dtype,
            method=method, adjust_lr_fn=adjust_lr_fn, check_finite=check_finite,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_int("ns_steps", group["ns_steps"], low=1)
        coefficients = group["ns_coefficients"]
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError(f"ns_coefficients must be a tuple (a, b, c), got {coefficients!r}")
        for name, value in zip("abc", coefficients):
            check_number(f"ns_coefficients[{name}]", value, low=-math.inf)
        check_number("eps", group["eps"], low_open=True)
        check_choice("ns_dtype", group["ns_dtype"], ITERATION_DTYPES)
        check_choice("method", group["method"], ("newton_schulz", "svd"))
        check_choice("adjust_lr_fn", group["adjust_lr_fn"], ("original", "match_rms_adamw"))

    def _direction(self, matrix: Tensor, group: dict[str, Any]) -> Tensor:
        if group["method"] == "svd":
            return svd_spectral_power(matrix, 0.0)
        return newton_schulz(matrix, group["ns_steps"], tuple(group["ns_coefficients"]),
                             group["eps"], group["ns_dtype"])

    def _scale(self, rows: int, cols: int, group: dict[str, Any]) -> float:
        if group["adjust_lr_fn"] == "match_rms_adamw":
            return 0.2 * math.sqrt(max(rows, cols))
        return math.sqrt(max(1.0, rows / cols))
