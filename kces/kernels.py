"""Gram matrices over propagated node features.

Every kernel takes ``z`` (m, d) with unit-norm rows and returns the (m, m) Gram matrix
(without the ridge ``λI``, which the complexity adds).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def linear_kernel(z: Tensor) -> Tensor:
    """``Z Zᵀ`` (cosine similarities, since rows are unit-norm)."""
    return z @ z.T


def ntk_relu_kernel(z: Tensor) -> Tensor:
    """Neural tangent kernel of an infinitely wide two-layer ReLU network, both layers trained.

    For unit vectors with cosine ``u``: ``Θ(u) = u κ0(u) + κ1(u)``, with the arc-cosine
    kernels ``κ0(u) = (π − arccos u)/π`` and ``κ1(u) = (u (π − arccos u) + sqrt(1 − u²))/π``.
    ``u`` is clamped a hair inside [−1, 1] so gradients stay finite on the diagonal.
    """
    eps = 1e-6 if z.dtype == torch.float32 else 1e-12
    u = (z @ z.T).clamp(-1 + eps, 1 - eps)
    angle = torch.pi - torch.arccos(u)
    kappa0 = angle / math.pi
    kappa1 = (u * angle + torch.sqrt(1 - u * u)) / math.pi
    return u * kappa0 + kappa1


KERNELS: dict[str, Callable[[Tensor], Tensor]] = {"linear": linear_kernel, "ntk": ntk_relu_kernel}


def ntk_random_features(z: Tensor, num_features: int, seed: int = 0) -> Tensor:
    """Random features ``Φ`` (m, D) of :func:`ntk_relu_kernel`: ``E[ΦΦᵀ] = Θ(Z Zᵀ)`` for unit rows.

    The gradient features of a width-``w`` two-layer ReLU network at a Gaussian init:
    ``sqrt(2/w) [relu(Z W), (step(Z W) ⊗ z)]`` with ``W`` (d, w) standard normal, since
    ``E[relu·relu] = κ1/2`` and ``E[step·step] = κ0/2``; ``w = max(1, num_features // (d + 1))``
    so ``D = w (d + 1) ≤ num_features``. ``W`` is drawn on the CPU in float64 from ``seed``, so
    every device and dtype gets the same features.
    """
    width = max(1, num_features // (z.shape[1] + 1))
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(z.shape[1], width, generator=generator, dtype=torch.float64).to(z.device, z.dtype)
    pre = z @ w
    gated = ((pre > 0).to(z.dtype)[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)
    return math.sqrt(2.0 / width) * torch.cat([torch.relu(pre), gated], dim=1)
