"""Route a GNN's parameters to optimizers: hidden weight matrices → spectral, the rest → AdamW."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.optim import Optimizer

from ._base import check_bool, check_choice, check_gradients
from .htmuon import HTMuon
from .muon import Muon
from .rmnp import RMNP
from .rownorm import RowNorm

__all__ = ["CombinedOptimizer", "OPTIMIZERS", "build_optimizer", "param_groups"]

OPTIMIZERS: tuple[str, ...] = ("muon", "htmuon", "rmnp", "adamw")
"""Names accepted by :func:`build_optimizer` for the spectral route."""
ADAMW_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.999)}
"""AdamW of the groups the spectral optimizer does not take (``build_optimizer(adamw=...)``)."""

_SPECTRAL: dict[str, type[Optimizer]] = {"muon": Muon, "htmuon": HTMuon, "rmnp": RMNP}
_ROLES = ("hidden", "input", "head", "other")


class CombinedOptimizer(Optimizer):
    """Several optimizers over disjoint parameters, stepped, saved and scheduled as one.

    ``param_groups`` are the sub-optimizers' own group dicts (in order), so an LR scheduler on the
    combined optimizer scales every group; ``state`` is a read-only view of their states;
    ``state_dict()`` is ``{"optimizers": [sub.state_dict(), ...]}``. Groups can only be added to
    the sub-optimizers before combining them.

    Args:
        optimizers: the optimizers, stepped in this order.
        check_finite: raise ``FloatingPointError`` on any nan/inf gradient before any sub-optimizer
            steps (so none of them changes anything); ``None`` (default) checks CPU tensors only
            (see :func:`optim._base.check_gradients` for the cost).
    """

    def __init__(self, optimizers: Sequence[Optimizer], check_finite: bool | None = None) -> None:
        optimizers = list(optimizers)
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        for optimizer in optimizers:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"expected torch.optim.Optimizer instances, got {type(optimizer).__name__}")
        check_bool("check_finite", check_finite, allow_none=True)
        self.optimizers = optimizers
        self.check_finite = check_finite
        super().__init__([group for optimizer in optimizers for group in optimizer.param_groups], {})
        self._link()

    def _link(self) -> None:
        self.param_groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]
        self.state = ChainMap(*(optimizer.state for optimizer in self.optimizers))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Register a group that one of the sub-optimizers already owns (used while constructing)."""
        if not any(param_group is group for optimizer in self.optimizers for group in optimizer.param_groups):
            raise ValueError(
                "CombinedOptimizer cannot tell which sub-optimizer should own a new group: add it to one "
                "of .optimizers before combining them"
            )
        super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizers": [state dict of each sub-optimizer]}``."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load each sub-optimizer's state dict, then share their new group dicts again."""
        saved = state_dict.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError(
                f"expected a CombinedOptimizer state dict with {len(self.optimizers)} optimizers, "
                f"got {type(saved).__name__ if saved is None else len(saved)}"
            )
        for optimizer, optimizer_state in zip(self.optimizers, saved):
            optimizer.load_state_dict(optimizer_state)
        self._link()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Evaluate ``closure`` once (if given), check gradients, then step every sub-optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.check_finite is not False:
            with_grad = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            check_gradients(with_grad, [self.check_finite] * len(with_grad), "CombinedOptimizer")
        for optimizer in self.optimizers:
            optimizer.step()
        return loss


def _is_matrix(p: Tensor) -> bool:
    return p.ndim == 2 and min(p.shape) > 1


def _layers(model: nn.Module) -> tuple[list[tuple[str, list[Tensor]]], list[Tensor]]:
    """Weight layers in registration order, and the matrices whose position is unknown.

    A message-passing module (PyG ``MessagePassing``) is one layer with all the weight matrices
    inside it; a leaf module owning 2-D parameters (``nn.Linear``, PyG ``Linear``, a hand-written
    layer) is one layer with those. Matrices owned directly by a module that also has submodules
    (e.g. an ``nn.Parameter`` on the model itself) cannot be placed in the forward order and are
    returned separately. Embeddings and vectors (a dimension of size 1, like an attention vector)
    are neither.
    """
    from torch_geometric.nn.conv import MessagePassing

    layers: list[tuple[str, list[Tensor]]] = []
    unplaced: list[Tensor] = []
    seen: set[int] = set()
    message_passing: list[str] = []
    for name, module in model.named_modules():
        if any(prefix == "" or name.startswith(prefix + ".") for prefix in message_passing):
            continue
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            continue
        is_message_passing = isinstance(module, MessagePassing)
        if is_message_passing:
            message_passing.append(name)
        candidates = module.parameters(recurse=is_message_passing)
        matrices = [p for p in candidates if _is_matrix(p) and id(p) not in seen]
        seen.update(id(p) for p in matrices)
        if not matrices:
            continue
        if is_message_passing or next(module.children(), None) is None:
            layers.append((name, matrices))
        else:
            unplaced.extend(matrices)
    return layers, unplaced


def _module_matrices(model: nn.Module, name: str, layers: list[tuple[str, list[Tensor]]]) -> set[int]:
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(f"no module named {name!r} in the model; its weight layers are {[n for n, _ in layers]}")
    return {id(p) for p in modules[name].parameters() if _is_matrix(p)}


def param_groups(
    model: nn.Module,
    *,
    input_proj: Literal["adamw", "spectral"] = "adamw",
    head: Literal["adamw", "spectral", "rownorm", "centered_rownorm"] = "adamw",
    input_module: str | None = None,
    head_module: str | None = None,
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into role groups for :func:`build_optimizer`.

    Weight layers are found in registration order (see below); the first layer's weight matrices
    are the input projection (``role="input"``), the last layer's the classifier head
    (``role="head"``; a single layer is the head), the matrices of all layers in between are
    ``role="hidden"``, and everything else (biases, norms, GAT attention vectors, embeddings,
    ``(1, n)``/``(n, 1)`` vectors, ``ndim > 2`` tensors) is ``role="other"``.

    A layer is a PyG ``MessagePassing`` module (``GCNConv``, ``SAGEConv``, ``GINConv``, ``GATConv``,
    ...; all matrices inside it, e.g. both ``lin_l``/``lin_r`` of SAGE or the MLP of GIN) or a leaf
    module owning 2-D parameters (``nn.Linear``, PyG ``Linear``, hand-written layers). So in PyG's
    ``GCN(in, hidden, num_layers=3, out)``, ``convs.0`` is the input projection, ``convs.1``
    hidden and ``convs.2`` the head; with ``jk="cat"`` the final ``lin`` is the head. Matrices
    owned directly by a module with submodules (an ``nn.Parameter`` on the model itself) have no
    known position and are hidden. Registration order is taken as forward order; override the ends
    with ``input_module``/``head_module`` (names as in ``model.named_modules()``; a module inside a
    layer narrows the role to it). Weights are assumed in ``nn.Linear``'s ``(out, in)`` layout.

    Returns:
        Non-empty groups in the order hidden, input, head, other, each
        ``{"params": [...], "param_names": [...], "role": ..., "route": ...}`` where ``route`` is
        ``"spectral"`` (hidden; input if ``input_proj="spectral"``; head if ``head="spectral"``),
        ``"rownorm"``/``"centered_rownorm"`` (head) or ``"adamw"``. Frozen parameters are left out.

    Raises:
        ValueError: for a lazily initialised parameter (``in_channels=-1``; run a forward pass
            first), an unknown module name or option.
    """
    check_choice("input_proj", input_proj, ("adamw", "spectral"))
    check_choice("head", head, ("adamw", "spectral", "rownorm", "centered_rownorm"))
    named = list(model.named_parameters())
    for name, p in named:
        if is_lazy(p):
            raise ValueError(
                f"parameter {name!r} is not initialised yet (lazy module, e.g. in_channels=-1): run one "
                "forward pass of the model (e.g. model(x, edge_index)) before building the optimizer"
            )
    layers, unplaced = _layers(model)
    layer_ids = {id(p) for _, matrices in layers for p in matrices} | {id(p) for p in unplaced}
    input_ids = (
        _module_matrices(model, input_module, layers) if input_module is not None
        else {id(p) for p in layers[0][1]} if layers else set()
    )
    head_ids = (
        _module_matrices(model, head_module, layers) if head_module is not None
        else {id(p) for p in layers[-1][1]} if layers else set()
    )
    routes = {"hidden": "spectral", "input": input_proj, "head": head, "other": "adamw"}
    members: dict[str, list[tuple[str, Tensor]]] = {role: [] for role in _ROLES}
    for name, p in named:
        if not p.requires_grad:
            continue
        if id(p) in head_ids:
            role = "head"
        elif id(p) in input_ids:
            role = "input"
        elif id(p) in layer_ids:
            role = "hidden"
        else:
            role = "other"
        members[role].append((name, p))
    return [
        {"params": [p for _, p in members[role]], "param_names": [n for n, _ in members[role]],
         "role": role, "route": routes[role]}
        for role in _ROLES
        if members[role]
    ]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float | None = None,
    weight_decay: float | None = None,
    *,
    adamw: Mapping[str, Any] | None = None,
    input_proj: Literal["adamw", "spectral"] = "adamw",
    head: Literal["adamw", "spectral", "rownorm", "centered_rownorm"] = "adamw",
    input_module: str | None = None,
    head_module: str | None = None,
    check_finite: bool | None = None,
    **kwargs: Any,
) -> Optimizer:
    """One optimizer for the whole model: ``name`` on hidden weight matrices, AdamW elsewhere.

    ``name`` picks the optimizer of the ``route="spectral"`` groups of :func:`param_groups`
    (routing options ``input_proj``, ``head``, ``input_module``, ``head_module`` as there):
    ``"muon"`` (:class:`Muon`), ``"htmuon"`` (:class:`HTMuon`), ``"rmnp"`` (:class:`RMNP`) or
    ``"adamw"`` (AdamW for them too, e.g. to wrap in :class:`SPECTRA`). ``lr``/``weight_decay``
    (default: that optimizer's own) and ``**kwargs`` (e.g. ``power=``, ``ns_dtype=``) go to it.
    The other groups use AdamW with ``adamw`` (default ``dict(lr=1e-3, weight_decay=0.01,
    betas=(0.9, 0.999))``); a row-norm head uses :class:`RowNorm` with AdamW's lr and weight decay.
    ``check_finite``: as the optimizers' (``None``: only for CPU tensors), done once per step by
    the outermost object.

    Returns the optimizer itself when one suffices, else a :class:`CombinedOptimizer`; every group
    keeps its ``role``, ``route`` and ``param_names``. SPECTRA is composed from outside::

        base = build_optimizer(model, "adamw", lr=0.1, input_proj="spectral")
        for group in base.param_groups:
            group["clip_c"] = 1.0 if group["route"] == "spectral" else None
        opt = SPECTRA(base)

    Raises:
        ValueError: unknown ``name``; a model without any matrix routed to the spectral optimizer
            (e.g. a 2-layer GCN has only an input layer and a head: pass ``input_proj="spectral"``
            and/or ``head="spectral"``); see also :func:`param_groups`.
    """
    check_choice("name", name, OPTIMIZERS)
    adamw = {**ADAMW_DEFAULTS, **(adamw or {})}
    groups = param_groups(model, input_proj=input_proj, head=head,
                          input_module=input_module, head_module=head_module)
    spectral = [g for g in groups if g["route"] == "spectral"]
    if not spectral:
        layers = [n for n, _ in _layers(model)[0]]
        raise ValueError(
            f"{type(model).__name__} has no weight matrix routed to {name!r}: its weight layers are "
            f"{layers} (first = input projection, last = head, both AdamW by default) and none lies "
            "between them; pass input_proj='spectral' and/or head='spectral' to optimize them with it"
        )
    rownorm = [g for g in groups if g["route"] in ("rownorm", "centered_rownorm")]
    others = [g for g in groups if g["route"] == "adamw"]
    for group in rownorm:
        group["centered"] = group["route"] == "centered_rownorm"
    overrides = {key: value for key, value in (("lr", lr), ("weight_decay", weight_decay)) if value is not None}
    optimizers: list[Optimizer] = []
    if name == "adamw":
        if kwargs:
            raise TypeError(f"unexpected options for AdamW: {sorted(kwargs)}")
        others = [{**group, **overrides} for group in spectral] + others
    single = (name != "adamw") + bool(rownorm) + bool(others) == 1
    inner_check = check_finite if single else False
    if name != "adamw":
        optimizers.append(_SPECTRAL[name](spectral, **overrides, check_finite=inner_check, **kwargs))
    if rownorm:
        optimizers.append(RowNorm(rownorm, lr=adamw["lr"], weight_decay=adamw["weight_decay"],
                                  check_finite=inner_check))
    if others:
        optimizers.append(torch.optim.AdamW(others, **adamw))
    return optimizers[0] if single else CombinedOptimizer(optimizers, check_finite=check_finite)
