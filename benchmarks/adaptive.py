"""Adaptive attacks (issue 9): every defence under an attack that does not know it and under
the adaptive version of the same attack, which runs the cell's defence chain on its own
poisoned graph and replaces what the defence prunes — a front-end to the ``kces bench`` runner.

The attack family is ``trainlink``: insertions from training nodes to nodes of another class
(Metattack's habit without its gradient), 20% of the edges; ``trainlink-adaptive`` knows the
defence (``kces.experiments.attacks.train_links``). Model defences (RGCN) have no edge stage
to query, so their adaptive attack is the non-adaptive one. Results, tables (with the
adaptive − non-adaptive difference per defence) and figures go to
``benchmarks/results/adaptive/``; an interrupted run continues where it stopped.

    python benchmarks/adaptive.py [--datasets cora,citeseer,polblogs] [--seeds 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kces.experiments.runner import run_grids

OUT = Path(__file__).parent / "results" / "adaptive"
DEFENCES = ["none", "jaccard", "svd", "rgcn", "kces", "kces+jaccard", "kces-nbr"]
GRIDS = [dict(attacks=["trainlink", "trainlink-adaptive"], rates=[0.2], nettack_perturbations=[5])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer,polblogs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return run_grids(args.out, GRIDS, datasets=args.datasets.split(","), defences=DEFENCES, models=["gcn"],
                     optimizers=["adam"], seeds=args.seeds)


if __name__ == "__main__":
    sys.exit(main())
