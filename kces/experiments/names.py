"""The names the benchmark grid accepts, in a module without imports so that ``kces --help``
stays fast; each registry (:mod:`.datasets`, :mod:`.attacks`, :mod:`.defences`, :mod:`.models`)
is built for exactly these names (tested)."""

DATASETS = ("cora", "citeseer", "polblogs", "cora_ml")
PREPERTURBED = ("meta", "nettack")
LIVE = ("dice", "random", "prbcd", "grbcd", "trainlink", "trainhub", "trainhub-capped", "trainhub-padded", "metaself")
ADAPTIVE_OF = {"trainlink-adaptive": "trainlink", "votelink-adaptive": "trainlink", "prbcd-adaptive": "prbcd",
               "metaself-adaptive": "metaself"}
"""Attacks that know the defence (each attacks the cell's whole defence chain) → the attack of the
same family that does not, which the report sets beside it."""
ADAPTIVE = tuple(ADAPTIVE_OF)
SEEDLESS = ("trainhub", "trainhub-capped", "trainhub-padded", "metaself", "metaself-adaptive")
"""Deterministic live attacks: one attacked graph per (dataset, rate[, defence]) shared by every
seed, like the pre-perturbed ones (an adaptive one runs the defence in its loop with seed 0)."""
ATTACKS = PREPERTURBED + LIVE + ADAPTIVE
EDGE_STAGES = ("kces", "kces-both", "kces-nbr", "kces-features", "kces-top10", "kces-kc-only", "kces-labels-only",
               "kces-k2", "kces-top2", "kces-nbr-labels-only", "kces-both-labels-only", "kces-soft", "kces-soft-half",
               "kces-smooth-half", "jaccard", "svd", "anchor")
MODEL_DEFENCES = ("rgcn", "prognn")
DEFENCES = ("none", *EDGE_STAGES, *MODEL_DEFENCES)
MODELS = ("gcn", "gat")
OPTIMIZERS = ("adam", "muon", "htmuon", "rmnp", "spectra")
SVD_RANK = 50
"""Rank of the ``svd`` defence (DeepRobust's ``GCNSVD`` default)."""
