"""Shared skeleton of the matrix optimizers: validation, gradient checks, momentum, weight decay."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.nn.parameter import is_lazy
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
ITERATION_DTYPES = (None, torch.bfloat16, torch.float16, torch.float32, torch.float64)
"""Accepted values of an iteration-dtype option (``None``: chosen by device)."""


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number in the given interval."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_int(name: str, value: Any, *, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_bool(name: str, value: Any, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a bool (or None, if allowed)."""
    if not (isinstance(value, bool) or (allow_none and value is None)):
        raise ValueError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")


def check_gradients(params: list[Tensor], check_finite: list[bool | None], owner: str) -> None:
    """Refuse sparse, complex and (where asked) non-finite gradients, before anything is changed.

    ``check_finite`` per parameter: True, False, or None for "only if the gradient is on the CPU".
    The finiteness test is one sum per gradient (a nan/inf entry makes the sum non-finite) and
    one host synchronisation for all ``params`` together; only when a sum is not finite are the
    entries inspected, so a merely overflowing sum is not reported. On the CPU that costs one
    pass over the gradients; on an accelerator the synchronisation also stalls the host until
    the device catches up, which is why ``None`` (the default everywhere) skips it there.
    """
    for p in params:
        if p.grad.is_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients (parameter of shape {tuple(p.shape)})")
        if p.grad.is_complex():
            raise RuntimeError(f"{owner} does not support complex gradients (parameter of shape {tuple(p.shape)})")
    checked = [p for p, check in zip(params, check_finite)
               if check or (check is None and p.grad.device.type == "cpu")]
    if not checked:
        return
    sums = torch.stack([p.grad.sum(dtype=torch.float64 if p.grad.dtype == torch.float64 else torch.float32)
                        .to(checked[0].device) for p in checked])
    if bool(torch.isfinite(sums).all()):
        return
    bad = next((p for p in checked if not bool(torch.isfinite(p.grad).all())), None)
    if bad is not None:
        raise FloatingPointError(
            f"{owner}: non-finite (nan/inf) gradient in a parameter of shape {tuple(bad.shape)}; "
            "no parameter or optimizer state was changed, so the step can be skipped "
            "(catch FloatingPointError) or the loss/learning rate fixed. Pass check_finite=False "
            "to disable this check."
        )


def check_param(p: Tensor, owner: str) -> None:
    """Refuse lazy, sparse, complex, non-float or too-low-dimensional parameters."""
    if is_lazy(p):
        raise ValueError(
            f"{owner} got a parameter that is not initialised yet (a lazy module, e.g. in_channels=-1): "
            "run one forward pass of the model before building the optimizer"
        )
    if p.is_sparse:
        raise ValueError(f"{owner} does not support sparse parameters (shape {tuple(p.shape)})")
    if p.is_complex():
        raise ValueError(f"{owner} does not support complex parameters (shape {tuple(p.shape)})")
    if not p.is_floating_point():
        raise ValueError(f"{owner} needs floating-point parameters, got dtype {p.dtype}")
    if p.ndim < 2:
        raise ValueError(
            f"{owner} only optimizes weight matrices (ndim >= 2; ndim > 2 is flattened to "
            f"(shape[0], -1)), got a parameter of shape {tuple(p.shape)}: optimize biases, norms and "
            "other vectors with AdamW, e.g. via optim.build_optimizer(model, ...)"
        )


class MatrixOptimizer(Optimizer):
    """Momentum, then a per-matrix update direction, then decoupled weight decay.

    For each parameter ``W`` with a gradient ``G`` (any shape ``(m, ...)``, seen as the matrix
    ``(m, n)`` with ``n = numel/m``)::

        B ← lerp(B, G, 1 - momentum)                    # EMA momentum buffer
        M = lerp(G, B, momentum) if nesterov else B
        W ← (1 - lr·weight_decay)·W - lr·scale(m, n)·direction(M)

    Subclasses define :meth:`_direction` and :meth:`_scale` and validate their own group options
    in :meth:`_check_group`. Every group option is validated when the group is added.
    """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group's hyper-parameters and parameters, then add it."""
        owner = type(self).__name__
        merged = {**self.defaults, **param_group}
        check_number("lr", merged["lr"])
        check_number("momentum", merged["momentum"], high=1.0, high_open=True)
        check_number("weight_decay", merged["weight_decay"])
        check_bool("nesterov", merged["nesterov"])
        check_bool("check_finite", merged["check_finite"], allow_none=True)
        self._check_group(merged)
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            check_param(p[1] if isinstance(p, tuple) else p, owner)
        super().add_param_group({**param_group, "params": params})

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate optimizer-specific group options (raise ``ValueError``)."""

    def _direction(self, matrix: Tensor, group: dict[str, Any]) -> Tensor:
        """The update direction (m, n) for the momentum matrix ``matrix`` (m, n)."""
        raise NotImplementedError

    def _scale(self, rows: int, cols: int, group: dict[str, Any]) -> float:
        """Multiplier of ``lr`` for a ``rows × cols`` matrix: ``sqrt(max(1, rows/cols))``."""
        return math.sqrt(max(1.0, rows / cols))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; parameters whose ``grad`` is ``None`` are skipped.

        Raises ``FloatingPointError`` (before changing anything) on a non-finite gradient unless
        the group has ``check_finite=False``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        check_gradients([p for _, p in work], [g["check_finite"] for g, _ in work], type(self).__name__)
        for group, p in work:
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - group["momentum"])
            update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
            matrix = update.reshape(update.size(0), -1)
            direction = self._direction(matrix, group)
            lr = group["lr"]
            if group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])
            p.add_(direction.reshape(p.shape), alpha=-lr * self._scale(*matrix.shape, group))
        return loss
