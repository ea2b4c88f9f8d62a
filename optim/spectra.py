"""SPECTRA: soft spectral clipping of any optimizer's matrix updates (Jiang, Semenov & Stich 2026)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ._base import ITERATION_DTYPES, check_bool, check_choice, check_gradients, check_int, check_number
from .newton_schulz import ns_soft_clip

__all__ = ["SPECTRA"]


class SPECTRA(Optimizer):
    """Wrap ``base_optimizer`` and soft-clip the singular values of each 2-D update.

    The base optimizer steps as usual; for every parameter ``W`` with ``ndim >= 2`` (seen as
    ``(m, n)`` = ``(shape[0], -1)``) in a group whose ``clip_c`` is not ``None``, its update
    direction is recovered from ``W_new = (1 - lr·wd)·W - lr·U`` and replaced::

        U = (W - W_new)/lr - wd·W
        W_new = (1 - lr·wd)·W - lr·sqrt(max(1, m/n))·H(U),   H(U) = (I + UUᵀ/c²)^(-1/2) U

    ``H`` maps each singular value ``σ → σ / sqrt(1 + σ²/c²)`` (≈ σ below ``c``, → ``c`` above) and is
    computed by a coupled Newton–Schulz iteration (:func:`optim.newton_schulz.ns_soft_clip`), no SVD.
    With ``pre_clip_c`` the gradient itself is soft-clipped first (suppresses spectral spikes of
    the gradient noise). The recovery assumes decoupled weight decay (AdamW, Muon, ...): with a
    coupled-decay base (SGD, Adam) the ``wd·W`` part of the gradient is clipped along with it.

    ``clip_c``, ``pre_clip_c``, ``clip_steps`` and ``clip_dtype`` become per-group options of the
    wrapped optimizer's groups (``clip_c=None`` leaves a group unclipped); ``param_groups`` are the
    base optimizer's group dicts, so LR schedulers can drive either object, and ``state_dict()`` is
    the base optimizer's.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` (the paper wraps AdamW, Signum, AdEMAMix).
        clip_c: clipping threshold ``c`` of the update, in update units (not multiplied by lr)
            (default 1.0, the reference implementation's default).
        pre_clip_c: threshold for clipping the gradient before the base step, or ``None`` (default).
        clip_steps: Newton–Schulz steps (default 10).
        clip_dtype: iteration dtype; ``None`` is bf16 on CUDA, fp32 on CPU (fp64 stays fp64).
        check_finite: raise ``FloatingPointError`` on nan/inf gradients before changing anything;
            ``None`` (default): only for CPU tensors (the check costs a host sync on accelerators).
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        clip_c: float | None = 1.0,
        pre_clip_c: float | None = None,
        clip_steps: int = 10,
        clip_dtype: torch.dtype | None = None,
        check_finite: bool | None = None,
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        check_bool("check_finite", check_finite, allow_none=True)
        self.base_optimizer = base_optimizer
        self.check_finite = check_finite
        defaults = dict(clip_c=clip_c, pre_clip_c=pre_clip_c, clip_steps=clip_steps, clip_dtype=clip_dtype)
        super().__init__(base_optimizer.param_groups, defaults)
        self.state = base_optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the clipping options, add the group to the base optimizer, and share it."""
        merged = {**self.defaults, **param_group}
        check_number("clip_c", merged["clip_c"], low_open=True, allow_none=True)
        check_number("pre_clip_c", merged["pre_clip_c"], low_open=True, allow_none=True)
        check_int("clip_steps", merged["clip_steps"], low=1)
        check_choice("clip_dtype", merged["clip_dtype"], ITERATION_DTYPES)
        if not any(param_group is group for group in self.base_optimizer.param_groups):
            self.base_optimizer.add_param_group(param_group)
            param_group = self.base_optimizer.param_groups[-1]
        super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (the clipping options are stored in its groups)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the base optimizer and share its (new) group dicts and state again."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Pre-clip gradients (if asked), step the base optimizer, soft-clip the 2-D updates."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with_grad = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        check_gradients(with_grad, [self.check_finite] * len(with_grad), "SPECTRA")
        targets = [
            (group, p)
            for group in self.param_groups
            if group["clip_c"] is not None
            for p in group["params"]
            if p.grad is not None and p.ndim >= 2
        ]
        for group, p in targets:
            if group["pre_clip_c"] is not None:
                grad = p.grad.reshape(p.size(0), -1)
                clipped = ns_soft_clip(grad, group["pre_clip_c"], group["clip_steps"], group["clip_dtype"])
                p.grad.copy_(clipped.reshape(p.grad.shape))
        before = [p.detach().clone() for _, p in targets]
        self.base_optimizer.step()
        for (group, p), old in zip(targets, before):
            lr, weight_decay = group["lr"], group.get("weight_decay", 0.0)
            if lr == 0:
                continue
            update = ((old - p) / lr - weight_decay * old).reshape(p.size(0), -1)
            clipped = ns_soft_clip(update, group["clip_c"], group["clip_steps"], group["clip_dtype"])
            scale = math.sqrt(max(1.0, update.size(0) / update.size(1)))
            p.copy_(old * (1 - lr * weight_decay) - (lr * scale) * clipped.reshape(p.shape).to(p.dtype))
        return loss
