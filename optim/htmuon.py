"""HTMuon: Muon with a heavy-tailed spectrum, ``U Σ^p Vᵀ`` (Pang et al. 2026, github.com/TDCSZ327/HTmuon)."""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from ._base import MatrixOptimizer, ParamsT, check_choice, check_int, check_number
from .newton_schulz import ns_spectral_power, svd_spectral_power

__all__ = ["HTMuon"]


class HTMuon(MatrixOptimizer):
    """HTMuon: replace Muon's ``U Vᵀ`` by ``U Σ^p Vᵀ`` of the (Nesterov) momentum ``M = U Σ Vᵀ``.

    For a weight ``W`` of shape ``(m, n)`` (``ndim > 2`` flattened to ``(shape[0], -1)``)::

        B ← lerp(B, G, 1 - momentum);  M = lerp(G, B, momentum) if nesterov else B
        W ← (1 - lr·weight_decay)·W - lr·sqrt(max(1, m/n))·U Σ^power Vᵀ

    ``power → 0`` is Muon with the exact ``U Vᵀ``; ``power = 1`` is momentum SGD. The update is not
    scale-invariant: it grows like ``‖M‖^power``.

    Args:
        params: weight matrices (``ndim >= 2``) or parameter groups.
        lr: learning rate (default 0.02).
        momentum: EMA factor of the momentum buffer, in ``[0, 1)`` (default 0.95).
        nesterov: Nesterov look-ahead (default True).
        weight_decay: decoupled weight decay (default 0).
        power: exponent ``p`` in ``[0, 1]`` (default 0.125, the authors' scripts).
        method: ``"svd"`` (fp32 SVD, the default) or ``"newton_schulz"`` (matmul-only inverse-root
            iterations, needs ``power = 2^-k``; see :func:`optim.newton_schulz.ns_spectral_power`).
        ns_steps: quintic steps per inverse root in the ``"newton_schulz"`` method, each followed by
            5 cubic polishing steps (default 8).
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
        power: float = 0.125,
        method: Literal["svd", "newton_schulz"] = "svd",
        ns_steps: int = 8,
        check_finite: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            power=power, method=method, ns_steps=ns_steps, check_finite=check_finite,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_number("power", group["power"], high=1.0)
        check_choice("method", group["method"], ("svd", "newton_schulz"))
        check_int("ns_steps", group["ns_steps"], low=0)
        if group["method"] == "newton_schulz":
            power = group["power"]
            if power == 0 or not math.log2(power).is_integer():
                raise ValueError(
                    f"method='newton_schulz' needs power = 2^-k (1, 0.5, 0.25, 0.125, ...), got {power!r}; "
                    "use method='svd' for other powers"
                )

    def _direction(self, matrix: Tensor, group: dict[str, Any]) -> Tensor:
        if group["method"] == "svd":
            return svd_spectral_power(matrix, group["power"])
        return ns_spectral_power(matrix, group["power"], fast_steps=group["ns_steps"])
