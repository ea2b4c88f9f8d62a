"""Adaptive attacks (issue 9): every defence under an attack that does not know it and under the
adaptive version of the same attack, which runs the cell's defence chain on its own poisoned
graph and replaces what the defence prunes — a front-end to the ``kces bench`` runner.

Three attack families at 20% of the edges: ``trainlink``, insertions from training nodes to nodes
of another class (Metattack's habit without its gradient), with two adaptive versions: one
(``kces.experiments.attacks.train_links``) replaces what the defence prunes, the other
(``votelink-adaptive``, ``vote_links``; datasets with features) first moves the target's
neighbourhood vote, which KCES's default label check reads, with helper edges among unlabelled
nodes, and replaces what the defence prunes; PyG's PRBCD
against a surrogate trained on the clean graph, whose adaptive version
(``prbcd_through_defence``) trains the surrogate on what the defence keeps and re-spends what it
prunes, and against a defence that prunes some pairs wherever they stand (KCES's label check,
Jaccard: ``kces.experiments.defences.always_pruned``) also runs never flipping those, and against
one that down-weights some (the default, ``kces-smooth-half``, ``kces-soft-half``, ``kces-soft``:
``always_scaled``) also through those weights, keeping the poisoned graph that fools its
surrogate more (2 seeds: 1–3 minutes per adaptive cell); and
Meta-Self, a meta-gradient poisoning attack (``kces.experiments.metagradient``), whose adaptive
version (``meta_self_through_defence``) takes its meta-gradients on what the defence keeps,
re-spends what it prunes and also tries avoiding the training nodes' pairs altogether, keeping
the strategy its own surrogate scores higher (every defence; one attacked graph per dataset
and defence, shared by the seeds: 0.5–3 minutes per graph). Model defences (RGCN) have no edge
stage to query, so their adaptive attack is the non-adaptive one. Against ``kces-both+anchor``
(the default before 2026-11-28, ``kces-both``, joined by the opt-in feature anchors) the adaptive
attacks run ``kces-both`` in their loop and the PRBCD and Meta-Self surrogates see the anchors
(graph-free, given to the attacker); likewise against ``kces-soft-half+anchor``,
``kces-smooth-half+anchor`` and ``kces+anchor``, the two defaults before and the default joined by
them. What each adaptive attack is told comes from ``kces.experiments.defences.tell``. The
vote-moving attack aims by the class scores the cell's label check reads (the default's smoothed
feature labels, ``kces.experiments.defences.always_labelled``). A fourth family is rule-aware by construction and has no
adaptive version: ``trainhub``, insertions from the training nodes to the best-connected nodes of
other classes (``kces.experiments.attacks.train_hubs``), which share neighbours with each other
and so pass a check that trusts shared neighbours; and two versions that keep every node's
training neighbours under the bound of KCES's excess check: ``trainhub-capped`` skips a node at
the bound, ``trainhub-padded`` first links it to unlabelled nodes of the attacking class to make
room.
Results, tables (with the adaptive − non-adaptive difference per defence) and figures go to
``benchmarks/results/adaptive/``; an interrupted run continues where it stopped.

    python benchmarks/adaptive.py [--datasets cora,citeseer,polblogs] [--seeds 3] [--defences kces,kces-both+anchor]

"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kces.experiments.datasets import load_dataset
from kces.experiments.runner import run_grids

OUT = Path(__file__).parent / "results" / "adaptive"
DEFENCES = ["none", "jaccard", "svd", "rgcn", "kces", "kces-smooth-half", "kces-soft-half", "kces-both",
            "kces-both+jaccard", "kces-nbr", "kces-features", "kces-soft", "kces-both+anchor", "kces-soft-half+anchor",
            "kces-smooth-half+anchor", "kces+anchor"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer,polblogs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--defences", default=",".join(DEFENCES), help="comma-separated defences (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    datasets, defences = args.datasets.split(","), args.defences.split(",")
    with_features = [name for name in datasets if not load_dataset(name).featureless]
    grids = [dict(attacks=["trainlink", "trainlink-adaptive"], defences=defences, datasets=datasets,
                  seeds=args.seeds),
             *([dict(attacks=["votelink-adaptive"], defences=defences, seeds=args.seeds, datasets=with_features)]
               if with_features else []),
             dict(attacks=["prbcd", "prbcd-adaptive"], defences=defences, datasets=datasets, seeds=min(args.seeds, 2)),
             dict(attacks=["metaself", "metaself-adaptive"], defences=defences, datasets=datasets, seeds=args.seeds),
             dict(attacks=["trainhub", "trainhub-capped", "trainhub-padded"], defences=defences, datasets=datasets,
                  seeds=args.seeds)]
    return run_grids(args.out, grids, rates=[0.2], nettack_perturbations=[5], models=["gcn"], optimizers=["adam"])


if __name__ == "__main__":
    sys.exit(main())
