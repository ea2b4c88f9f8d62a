"""The names the benchmark grid accepts, in a module without imports so that ``kces --help``
stays fast; each registry (:mod:`.datasets`, :mod:`.attacks`, :mod:`.defences`, :mod:`.models`)
is built for exactly these names (tested)."""

DATASETS = ("cora", "citeseer", "polblogs", "cora_ml")
PREPERTURBED = ("meta", "nettack")
LIVE = ("dice", "random", "prbcd", "grbcd", "trainlink")
ADAPTIVE = ("trainlink-adaptive", "prbcd-adaptive")
"""Attacks that know the defence: each attacks the cell's whole defence chain."""
ATTACKS = PREPERTURBED + LIVE + ADAPTIVE
EDGE_STAGES = ("kces", "kces-top10", "kces-kc-only", "kces-labels-only", "kces-k2", "kces-nbr", "jaccard", "svd")
MODEL_DEFENCES = ("rgcn", "prognn")
DEFENCES = ("none", *EDGE_STAGES, *MODEL_DEFENCES)
MODELS = ("gcn", "gat")
OPTIMIZERS = ("adam", "muon", "htmuon", "rmnp", "spectra")
SVD_RANK = 50
"""Rank of the ``svd`` defence (DeepRobust's ``GCNSVD`` default)."""
