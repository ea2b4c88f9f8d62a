"""The experiment harness: the attack/defence benchmark behind ``kces bench``, ``kces report``
and ``kces demo``, and the scripts in ``benchmarks/``. The library (:mod:`kces`) never imports it.

``datasets`` (Pro-GNN graphs loaded exactly as DeepRobust, or a Nettack-layout ``.npz``;
``synthetic`` SBM graphs for scaling) → ``attacks`` (pre-perturbed Metattack/Nettack; live
DICE, random, PRBCD, GRBCD, cached) → ``defences`` (edge stages KCES, Jaccard, SVD, chained
with ``+``; model defences RGCN, ProGNN) → ``models`` (DeepRobust's GCN recipe, PyG GCN/GAT,
Adam or the ``optim`` optimizers, the one training loop ``fit``) → ``metrics`` (accuracy,
pruning precision/recall) → ``runner`` (the resumable grid, ``results.jsonl``) → ``report``
(markdown, CSV, figures); ``demo`` (the main job); ``names`` (what the grid accepts).
"""
