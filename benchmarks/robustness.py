"""Robustness benchmark: GCN accuracy under the published Pro-GNN attacks and live DICE, with and
without KCES — a front-end to the ``kces bench`` runner and ``kces report``.

Per dataset: Metattack 0–25% (test split), Nettack 1–5 perturbations per target (its target
nodes), DICE 20% (live, seeded by the cell's seed); defences none, Jaccard, SVD (rank 50),
KCES (the default), the default before (``kces-smooth-half``: the edges between unlabelled nodes
whose feature labels disagree at half their weight, not a quarter), the one before
(``kces-soft-half``: feature labels read off each node's own features, not smoothed over its
nearest feature neighbours), the one before that (``kces-both``: without down-weighting those
edges) and that
rule followed by Jaccard (``kces-both+jaccard``), the neighbourhood and feature-label variants
``kces-nbr`` and ``kces-features`` (earlier defaults), ``kces-soft`` (``kces-both`` down-weighting
those edges to 0.25, with each node's own feature labels), ``kces-both+anchor`` (``kces-both``
joined by the opt-in feature anchors, ``kces.anchors``; graphs with features),
``kces-soft-half+anchor``, ``kces-smooth-half+anchor`` and ``kces+anchor`` (the default joined by
them); GCN
trained as DeepRobust's ``GCN``; 5 seeds. Results, tables and figures go to
``benchmarks/results/robustness/`` (``results.jsonl``, ``report.md``, ...); an interrupted run
continues where it stopped.

    python benchmarks/robustness.py [--datasets cora,citeseer,polblogs] [--seeds 5] [--defences kces,kces-both+anchor]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kces.experiments.runner import run_grids

OUT = Path(__file__).parent / "results" / "robustness"
DEFENCES = ["none", "jaccard", "svd", "kces", "kces-smooth-half", "kces-soft-half", "kces-both", "kces-both+jaccard",
            "kces-nbr", "kces-features", "kces-soft", "kces-both+anchor", "kces-soft-half+anchor",
            "kces-smooth-half+anchor", "kces+anchor"]
GRIDS = [dict(attacks=["meta", "nettack"], rates=[0, 0.05, 0.1, 0.15, 0.2, 0.25],
              nettack_perturbations=[1, 2, 3, 4, 5]),
         dict(attacks=["dice"], rates=[0.2], nettack_perturbations=[5])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer,polblogs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--defences", default=",".join(DEFENCES), help="comma-separated defences (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return run_grids(args.out, GRIDS, plots=True, datasets=args.datasets.split(","), defences=args.defences.split(","),
                     models=["gcn"], optimizers=["adam"], seeds=args.seeds)


if __name__ == "__main__":
    sys.exit(main())
