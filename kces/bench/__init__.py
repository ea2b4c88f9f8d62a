"""The attack/defence benchmark behind ``kces bench`` and ``kces report``.

``datasets`` (Pro-GNN graphs by name, or a Nettack-layout ``.npz``) → ``attacks``
(pre-perturbed Metattack/Nettack; live DICE, random, PRBCD, GRBCD, cached) → ``defenses``
(edge stages KCES, Jaccard, SVD, chained with ``+``; model defences RGCN, ProGNN) →
``models`` (GCN, GAT; Adam or the ``optim`` optimizers) → ``runner`` (the resumable grid,
``results.jsonl``) → ``report`` (markdown, CSV, figures). File formats and atomic writes:
:mod:`kces.files`.
"""
