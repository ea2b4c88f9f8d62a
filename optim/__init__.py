"""Spectral optimizers for GNN weight matrices, and routing of a model's parameters to them.

>>> from optim import build_optimizer
>>> opt = build_optimizer(model, "rmnp", lr=0.02)  # hidden weight matrices: RMNP; the rest: AdamW
"""

from .htmuon import HTMuon
from .muon import Muon
from .rmnp import RMNP
from .routing import OPTIMIZERS, CombinedOptimizer, build_optimizer, param_groups
from .rownorm import RowNorm
from .spectra import SPECTRA

__all__ = [
    "OPTIMIZERS",
    "SPECTRA",
    "CombinedOptimizer",
    "HTMuon",
    "Muon",
    "RMNP",
    "RowNorm",
    "build_optimizer",
    "param_groups",
]
