"""Matrix functions of a gradient-like matrix ``G`` of shape ``(m, n)``, by matmuls or by SVD.

All functions act on the singular values of ``G = U diag(σ) Vᵀ`` and return a matrix of the
same shape ``(m, n)``:

* :func:`newton_schulz` — Muon's quintic Newton–Schulz iteration, ``≈ U Vᵀ`` (singular values
  land in about ``[0.7, 1.2]``, inside the published band ``(0.5, 1.5)``, not exactly on 1).
* :func:`svd_spectral_power` — exact ``U diag(σ^p) Vᵀ`` by SVD (``p = 0``: exact ``U Vᵀ``).
* :func:`ns_spectral_power` — the same for ``p = 2^-k`` by matmuls only (inverse-root iterations).
* :func:`ns_soft_clip` — ``(I + G Gᵀ/c²)^(-1/2) G``, i.e. ``σ → σ / sqrt(1 + σ²/c²)``.
* :func:`ns_inverse_sqrt` — ``S^(-1/2)`` of a small SPD matrix, the building block of the two above.

Wide and tall matrices are handled by working on the smaller Gram matrix, so the cost is
``O(mn·min(m, n))``. The iteration dtype follows :func:`iteration_dtype`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "MUON_COEFFICIENTS",
    "iteration_dtype",
    "newton_schulz",
    "ns_inverse_sqrt",
    "ns_soft_clip",
    "ns_spectral_power",
    "svd_spectral_power",
]

MUON_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic coefficients ``(a, b, c)``: ``σ → aσ + bσ³ + cσ⁵``."""

_CUBIC: tuple[float, float, float] = (1.5, -0.5, 0.0)
"""Classical Newton–Schulz step ``σ → (3σ - σ³)/2``: converges quadratically to 1 on (0, √3)."""


def iteration_dtype(tensor: Tensor, dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype the iterations run in: ``dtype`` if given, else bf16 on CUDA, else fp32 (fp64 stays fp64)."""
    if dtype is not None:
        return dtype
    if tensor.is_cuda:
        return torch.bfloat16
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


_MEASURED: dict[tuple[str, int, int, int], torch.dtype] = {}
"""Per process: the faster Newton–Schulz dtype of each (device type, rows, columns, steps)."""


BF16_MARGIN = 1.1
"""bf16 is chosen only when fp32 is estimated more than this many times slower."""
MEASURE_ROWS = 512
"""Larger matrices are timed on a proxy of at most this many rows and the same aspect ratio."""


def _seconds(run: Callable[[], object]) -> float:
    """Best of 3 to 9 timings of ``run`` after one warm-up (more while under 20 ms in all), so a
    moment of contention for the CPU does not decide the dtype."""
    run()
    best, spent = math.inf, 0.0
    for attempt in range(9):
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if attempt >= 2 and spent > 2e-2:
            break
    return best


def measured_dtype(rows: int, cols: int, steps: int, device: torch.device) -> torch.dtype:
    """bf16 or fp32, whichever makes :func:`newton_schulz` of a (rows, cols) matrix faster on
    ``device`` (rows ≤ cols), from one timing per process of the matmuls it is made of.

    bf16 runs the direct form (``steps`` × two (r×c)·(c×r)-sized products and one (r×r)²);
    fp32 runs the Gram form when ``cols >= 2·rows`` (one Gram product per 5 steps, then about
    four (r×r)² products per step), else the direct form. Which wins depends on the CPU: with
    native bf16 dot products (AVX512-BF16, AMX) bf16 matmuls are several times faster than fp32,
    without them several times slower. The products are timed on a proxy of at most
    :data:`MEASURE_ROWS` rows with the same aspect ratio, their times scaled by the flop ratio:
    a few milliseconds once per shape and process. fp32 is kept unless bf16 is more than
    :data:`BF16_MARGIN` times faster (the choice is a timing, so it is per machine, not per seed;
    pass ``ns_dtype`` for results that must not depend on the machine).
    """
    key = (device.type, rows, cols, steps)
    if key not in _MEASURED:
        r = min(rows, MEASURE_ROWS)
        c = max(r, round(cols * r / rows))
        wide_scale, square_scale = (rows / r) ** 2 * (cols / c), (rows / r) ** 3
        cost = {}
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(r, c, device=device).to(dtype)
            a = x @ x.mT
            wide = _seconds(lambda: x @ x.mT) * wide_scale
            square = _seconds(lambda: a @ a) * square_scale
            if dtype == torch.float32 and cols >= 2 * rows:
                cost[dtype] = math.ceil(steps / 5) * 2 * wide + steps * 4 * square
            else:
                cost[dtype] = steps * (2 * wide + square)
        # fp32 is the more precise: bf16 only when it is clearly faster, so that a shape where the
        # two are close does not flip between processes with the noise of the timings
        faster = cost[torch.float32] > BF16_MARGIN * cost[torch.bfloat16]
        _MEASURED[key] = torch.bfloat16 if faster else torch.float32
    return _MEASURED[key]


def _precise_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _gram_polynomial(gram: Tensor, schedule: Sequence[tuple[float, float, float]]) -> Tensor:
    """Run Newton–Schulz on ``X`` (k, n) knowing only ``gram = X Xᵀ`` (k, k).

    Each step ``X ← (a I + b XXᵀ + c (XXᵀ)²) X`` is a polynomial ``P`` in the Gram matrix, so the
    iterate is ``Q X`` with ``Q = P_t ⋯ P_1`` (k, k) and the Gram matrix evolves as ``P A P``.
    Returns ``Q``; for a schedule that converges, ``Q → gram^(-1/2)``. ``gram`` must have its
    eigenvalues in ``(0, 1]``: a (rounding-)negative eigenvalue grows ×a² per quintic step.
    """
    product: Tensor | None = None
    for i, (a, b, c) in enumerate(schedule):
        if c:
            step = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        else:
            step = gram * b
        step.diagonal().add_(a)
        product = step if product is None else step @ product
        if i + 1 < len(schedule):
            gram = step @ gram @ step
    if product is None:
        return torch.eye(gram.size(0), dtype=gram.dtype, device=gram.device)
    return product


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximately orthogonalise ``G`` (m, n): returns ``≈ U Vᵀ`` (m, n) in the iteration dtype.

    ``G`` is divided by its Frobenius norm (so ``σ ≤ 1``), tall matrices are transposed, then
    ``steps`` quintic steps ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ`` are applied. In fp32/fp64 a
    matrix with aspect ratio >= 2 is iterated on its Gram matrix instead (same polynomial,
    ``O(k²n)`` once per 5 steps plus ``O(k³)`` per step, rather than ``O(k²n)`` per step); bf16
    always uses the direct form, which is what ``torch.optim.Muon`` and Keller Jordan's
    ``muon.py`` compute. ``dtype=None``: bf16 on CUDA, fp64 for fp64 input, and on a CPU the
    faster of bf16 and fp32 for this shape (:func:`measured_dtype`).
    """
    a, b, c = coefficients
    if dtype is None and G.device.type == "cpu" and G.dtype != torch.float64:
        dtype = measured_dtype(min(G.shape), max(G.shape), steps, G.device)
    X = G.to(iteration_dtype(G, dtype))
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.mT
    X = X.div(X.norm().clamp(min=eps))
    if X.dtype in (torch.float32, torch.float64) and X.size(1) >= 2 * X.size(0):
        # Re-form the Gram matrix every 5 steps: its rounding-negative eigenvalues (~ε) grow
        # ×a² ≈ 12 per step and must not reach the range where the quintic diverges.
        for done in range(0, steps, 5):
            X = _gram_polynomial(X @ X.mT, [coefficients] * min(5, steps - done)) @ X
    else:
        for _ in range(steps):
            A = X @ X.mT
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X = torch.addmm(X, B, X, beta=a)
    return X.mT if transposed else X


def ns_inverse_sqrt(S: Tensor, steps: int = 10, fast_steps: int = 0) -> Tensor:
    """``S^(-1/2)`` (k, k) for a symmetric positive definite ``S`` with eigenvalues in ``(0, 1]``.

    Coupled Newton–Schulz iteration written on the Gram matrix: ``fast_steps`` quintic steps with
    :data:`MUON_COEFFICIENTS` first (an eigenvalue ``λ ≪ 1`` grows ×11.9 per step, against ×2.25
    for the cubic step), then ``steps`` cubic steps, which converge quadratically. Eigenvalues
    far below ``11.9^-fast_steps · 2.25^-steps`` are not resolved (their root comes out too small).
    """
    return _gram_polynomial(S, [MUON_COEFFICIENTS] * fast_steps + [_CUBIC] * steps)


def svd_spectral_power(G: Tensor, power: float) -> Tensor:
    """Exact ``U diag(σ^power) Vᵀ`` (m, n) of ``G`` (m, n) by SVD in fp32 (fp64 for fp64 input).

    ``power = 0`` gives the exact polar factor ``U Vᵀ`` and ``power = 1`` gives ``G`` back.
    Singular values below ``max(m, n)·ε·σ_max`` count as zero and stay zero.
    """
    work = G.to(_precise_dtype(G))
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    tol = S.amax() * max(work.shape) * torch.finfo(work.dtype).eps
    scaled = torch.where(S > tol, S.clamp(min=torch.finfo(work.dtype).tiny).pow(power), 0.0)
    return (U * scaled) @ Vh


def ns_spectral_power(G: Tensor, power: float, fast_steps: int = 8, polish_steps: int = 5) -> Tensor:
    """``≈ U diag(σ^power) Vᵀ`` (m, n) for ``power = 2^-k`` (k ≥ 0), by matmuls only, in fp32/fp64.

    With ``Ĝ = G/‖G‖_F`` and ``A = ĜĜᵀ`` (the smaller Gram matrix), the result is
    ``‖G‖_F^p · A^(p/2) A^(-1/2) Ĝ``: ``A^(-1/2)`` by :func:`ns_inverse_sqrt` (so ``A^(-1/2) Ĝ`` is
    the polar factor) and ``A^(p/2)`` by ``k + 1`` successive square roots ``R = R·R^(-1/2)``.
    ``A`` (trace 1) is regularised to ``A + δI``, ``δ = 1e-6`` in fp32 (``1e-12`` in fp64), so that
    every root stays positive definite despite rounding: singular values well above
    ``sqrt(δ)·‖G‖_F`` (1e-3 in fp32) are accurate, smaller ones come out too small.
    """
    k = round(-math.log2(power))
    X = G.to(_precise_dtype(G))
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.mT
    scale = X.norm().clamp(min=torch.finfo(X.dtype).tiny)
    X = X / scale
    gram = X @ X.mT
    gram.diagonal().add_(1e-12 if X.dtype == torch.float64 else 1e-6)
    inv_sqrt = ns_inverse_sqrt(gram, polish_steps, fast_steps)
    root = gram @ inv_sqrt  # A^(1/2)
    for _ in range(k):
        norm = root.norm().clamp(min=torch.finfo(X.dtype).tiny)  # keep eigenvalues in (0, 1]
        unit = root / norm
        root = (unit @ ns_inverse_sqrt(unit, polish_steps, fast_steps)) * norm.sqrt()
    out = (root @ (inv_sqrt @ X)) * scale.pow(power)
    return out.mT if transposed else out


def ns_soft_clip(G: Tensor, c: float, steps: int = 10, dtype: torch.dtype | None = None) -> Tensor:
    """Soft spectral clipping ``(I + GGᵀ/c²)^(-1/2) G`` (m, n): ``σ → σ / sqrt(1 + σ²/c²)``, no SVD.

    ``B = I + GGᵀ/c²`` (smaller side) is divided by an upper bound ``β`` of its largest eigenvalue
    (``1 + min(‖GGᵀ‖_F, max row sum |GGᵀ|)/c²``) and inverted by a coupled Newton–Schulz
    iteration (SPECTRA, Jiang, Semenov & Stich 2026): ``steps // 2`` quintic steps, then the rest
    cubic. The smallest eigenvalue of ``B/β`` is ``≈ 1/β``, i.e. it belongs to the *small*
    singular values; 10 steps resolve ``σ_max/c`` up to ~1000.
    """
    X = G.to(iteration_dtype(G, dtype))
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.mT
    gram = X @ X.mT
    bound = torch.minimum(gram.norm(), gram.abs().sum(dim=1).amax())
    beta = 1.0 + bound / c**2
    B = gram / (c**2 * beta)
    B.diagonal().add_(1.0 / beta)
    out = (ns_inverse_sqrt(B, steps - steps // 2, steps // 2) @ X) / beta.sqrt()
    return out.mT if transposed else out
