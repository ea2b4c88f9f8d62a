"""The option groups of KCES, each a frozen dataclass that validates itself on construction.

:class:`Complexity` says how the kernel complexity and the edge scores are computed
(:mod:`kces.complexity`); :class:`Pruning` says which edges go (:mod:`kces.prune`). Every
face (:func:`kces.sanitize`, :class:`kces.KCES`, :func:`kces.sanitize_adj`, ...) takes them as
``complexity=`` and ``pruning=``: an instance, a ``dict`` of its fields, or ``None`` for the
defaults, as PyG's ``GDC`` groups its sub-options. :class:`Anchoring` says which feature anchors
the anchoring faces (:mod:`kces.anchors`) join to a graph, as ``anchoring=``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

import torch

from .errors import InputError, InputTypeError
from .kernels import KERNELS

ENGINES = ("exact", "first_order", "woodbury")
FORMS = ("auto", "dual", "primal")
CANDIDATES = ("labelled", "all")
LABEL_SOURCES = ("features", "neighbourhood", "both")
Form = Literal["auto", "dual", "primal"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any, name: str) -> float:
    """``value`` as a Python float: a real number, NumPy scalar or 0-d tensor; ``TypeError`` otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise InputTypeError(f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


class _Options:
    def __repr__(self) -> str:
        """Only the fields that differ from their defaults, e.g. ``Pruning(ratio=0.1)``."""
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != f.default]
        return f"{type(self).__name__}({', '.join(changed)})"


@dataclass(frozen=True, repr=False)
class Complexity(_Options):
    """How the graph kernel complexity and the KC scores are computed.

    Args:
        k (int, default 1): propagation hops of ``Z = Â^k X``.
        kernel (str, default ``"linear"``): ``"linear"`` (``ZZᵀ``) or ``"ntk"`` (two-layer ReLU NTK).
        lam (float, default 1e-2): ridge ``λ`` of ``H = k(Z_S) + λI``.
        centre (bool, default True): centre the one-hot labels of S (column means removed).
        engine (str, default ``"first_order"``): ``"first_order"`` (one backward pass over the
            K-hop region of S), or the references ``"exact"`` and ``"woodbury"``.
        form (str, default ``"auto"``): ``"dual"`` (|S|×|S| solve), ``"primal"`` (D×D) or
            ``"auto"`` (the cheaper); first-order engine only.
        random_features (int, default 4096): NTK random features of the primal form.
        max_memory (int or None, default None): bytes the scoring may use (None: what the
            device has free); a larger estimate raises ``MemoryError`` before allocating.
    """

    k: int = 1
    kernel: str = "linear"
    lam: float = 1e-2
    centre: bool = True
    engine: str = "first_order"
    form: str = "auto"
    random_features: int = 4096
    max_memory: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.k) or self.k < 1:
            raise InputError(f"k (propagation hops) must be an integer >= 1, got {self.k!r}")
        if self.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel!r}; expected one of {tuple(KERNELS)}")
        lam = _real(self.lam, "lam")
        if not (lam > 0 and math.isfinite(lam)):
            raise InputError(f"lam (ridge) must be > 0 and finite, got {self.lam!r}")
        object.__setattr__(self, "lam", lam)
        if not isinstance(self.centre, bool):
            raise InputTypeError(f"centre must be True or False, got {self.centre!r}")
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}; expected one of {ENGINES}")
        if self.form not in FORMS:
            raise InputError(f"unknown form {self.form!r}; expected one of {FORMS}")
        if not _is_int(self.random_features) or self.random_features < 1:
            raise InputError(f"random_features must be an integer >= 1, got {self.random_features!r}")
        if self.max_memory is not None and not (_is_int(self.max_memory) and self.max_memory > 0):
            raise InputError(f"max_memory must be a positive number of bytes or None, got {self.max_memory!r}")


@dataclass(frozen=True, repr=False)
class Pruning(_Options):
    """Which edges :func:`kces.sanitize` prunes (the rule is in :mod:`kces.prune`).

    Args:
        ratio (float or None, default None): prune exactly ``round(ratio · m)`` of the m
            undirected edges, the most suspicious first (candidates whose labels disagree,
            then the other candidates, then the rest; each by descending KC).
        threshold (float, ``"auto"`` or None, default ``"auto"``): a number prunes exactly the
            edges whose KC score exceeds it; ``"auto"`` is the measured rule (candidates whose
            labels disagree, or whose KC exceeds twice the mean absolute KC); None: the label
            check alone.
        label_check (bool, default True): with ``"auto"``, ``None`` or ``ratio``: the label
            check (endpoint labels that disagree; on a featureless graph, endpoints whose
            neighbourhoods barely overlap or a pile-up of training neighbours,
            :func:`kces.labels.label_disagreement`) flags candidates.
        label_top_k (int, default 1): classes of an unlabelled node that count as compatible in
            the label check (its top ``label_top_k`` classes; 1 was chosen over 2 on validation
            nodes, README).
        label_source (str, default ``"both"``): an unlabelled node's class scores in the label
            check: ``"features"`` (kernel ridge regression on its own features, graph-free; the
            ``kces-features`` variant of the benchmark), ``"neighbourhood"`` (those plus the mean
            of its unlabelled neighbours'; edges at training nodes do not vote; ``kces-nbr``) or
            ``"both"`` (an edge disagrees when it does under either; chosen over the other two
            on validation nodes under attacks that know the rule, including one that moves the
            neighbourhood vote, README).
        candidates (str, default ``"labelled"``): ``"labelled"`` (edges touching a training
            node) or ``"all"``.
        unlabelled_weight (float in [0, 1] or ``"auto"``, default ``"auto"``): the weight kept by
            an edge between two non-candidate nodes whose graph-free labels disagree (feature
            labels; on a featureless graph the overlap check): 1 leaves them alone, 0 prunes them,
            in between the output carries edge weights (:attr:`kces.Sanitized.edge_weight`).
            ``"auto"``: :data:`kces.prune.AUTO_UNLABELLED_WEIGHT`, 0.25 on graphs with and
            without features (each chosen on validation nodes under attacks that know the rule,
            README; on graphs with features 1 until 2026-11-28's fourth session, then 0.5 until
            its sixth). A number below 1 needs the label check; without it ``"auto"`` is 1.
        feature_neighbours (int >= 0 or ``"auto"``, default ``"auto"``): the feature labels are
            read off each node's features averaged twice over the graph of its
            ``feature_neighbours`` nearest nodes by feature cosine (graph-free,
            :func:`kces.labels.smoothed_features`); 0 reads its own features alone. ``"auto"``:
            :data:`kces.prune.AUTO_FEATURE_NEIGHBOURS` (20, chosen on validation nodes under
            attacks that know the rule, README) on graphs of at most
            :data:`kces.prune.FEATURE_NEIGHBOURS_MAX_NODES` nodes, 0 (with a warning) on larger
            ones: the neighbour search takes O(n² d) time. Until 2026-11-28 (fifth session) the
            default was 0.
    """

    ratio: float | None = None
    threshold: float | str | None = "auto"
    label_check: bool = True
    label_top_k: int = 1
    candidates: str = "labelled"
    label_source: str = "both"
    unlabelled_weight: float | str = "auto"
    feature_neighbours: int | str = "auto"

    def __post_init__(self) -> None:
        if self.ratio is not None:
            ratio = _real(self.ratio, "ratio")
            if not 0.0 <= ratio <= 1.0:
                raise InputError(f"ratio must be a number in [0, 1], got {self.ratio!r}")
            if self.threshold not in (None, "auto"):
                raise InputError("give either ratio or threshold, not both")
            object.__setattr__(self, "ratio", ratio)
            object.__setattr__(self, "threshold", None)
        if isinstance(self.threshold, str):
            if self.threshold != "auto":
                raise InputError(f"threshold must be a number, 'auto' or None, got {self.threshold!r}")
        elif self.threshold is not None:
            threshold = _real(self.threshold, "threshold")
            if not math.isfinite(threshold):
                raise InputError(f"threshold must be finite, got {self.threshold!r}")
            object.__setattr__(self, "threshold", threshold)
        if not isinstance(self.label_check, bool):
            raise InputTypeError(f"label_check must be True or False, got {self.label_check!r}")
        if not _is_int(self.label_top_k) or self.label_top_k < 1:
            raise InputError(f"label_top_k must be an integer >= 1, got {self.label_top_k!r}")
        if self.candidates not in CANDIDATES:
            raise InputError(f"candidates must be one of {CANDIDATES}, got {self.candidates!r}")
        if self.label_source not in LABEL_SOURCES:
            raise InputError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")
        if isinstance(self.unlabelled_weight, str):
            if self.unlabelled_weight != "auto":
                raise InputError(f"unlabelled_weight must be a number in [0, 1] or 'auto', "
                                 f"got {self.unlabelled_weight!r}")
        else:
            weight = _real(self.unlabelled_weight, "unlabelled_weight")
            if not 0.0 <= weight <= 1.0:
                raise InputError(f"unlabelled_weight must be a number in [0, 1] or 'auto', "
                                 f"got {self.unlabelled_weight!r}")
            if weight < 1.0 and not self.label_check:
                raise InputError("unlabelled_weight < 1 re-weights edges by the label check: "
                                 "it needs label_check=True")
            object.__setattr__(self, "unlabelled_weight", weight)
        if not isinstance(self.feature_neighbours, str) or self.feature_neighbours != "auto":
            if not (_is_int(self.feature_neighbours) and self.feature_neighbours >= 0):
                raise InputError(f"feature_neighbours must be an integer >= 0 or 'auto', "
                                 f"got {self.feature_neighbours!r}")
            object.__setattr__(self, "feature_neighbours", int(self.feature_neighbours))


@dataclass(frozen=True, repr=False)
class Anchoring(_Options):
    """Which feature anchors join a graph (:mod:`kces.anchors`).

    Args:
        k (int, default 10): each node is linked to its ``k`` nearest nodes by feature cosine
            (chosen with the weight on validation nodes, ``benchmarks/anchor.py``).
        weight (float, default 0.5): an anchor's edge weight; an edge already in the graph keeps
            the larger of its own and this.
    """

    k: int = 10
    weight: float = 0.5

    def __post_init__(self) -> None:
        if not _is_int(self.k) or self.k < 1:
            raise InputError(f"k (feature neighbours per node) must be an integer >= 1, got {self.k!r}")
        weight = _real(self.weight, "weight")
        if not (weight > 0 and math.isfinite(weight)):
            raise InputError(f"weight (of an anchor edge) must be > 0 and finite, got {self.weight!r}")
        object.__setattr__(self, "weight", weight)


Options = TypeVar("Options", Complexity, Pruning, Anchoring)


def options(kind: type[Options], value: Options | Mapping[str, Any] | None, name: str) -> Options:
    """``value`` as a ``kind``: itself, ``kind(**value)`` for a mapping, the defaults for None."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return kind(**value)
    raise InputTypeError(f"{name} must be a {kind.__name__}, a dict of its fields or None, got {type(value).__name__}")
