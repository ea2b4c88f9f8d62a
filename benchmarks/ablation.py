"""Which part of the KCES rule defends? GCN accuracy for the variants of the pruning rule in
``kces.experiments.defences.KCES_VARIANTS`` — a front-end to the ``kces bench`` runner.

Variants (first-order KC, linear kernel, S = training nodes): ``kces`` (the package default:
the KC bound and the label check by each unlabelled node's top class, from its features smoothed
over its nearest feature neighbours and from its neighbourhood vote, both of which must agree,
and the edges between unlabelled nodes whose feature labels disagree at a quarter of their weight),
``kces-smooth-half`` (the default before: the same at half the weight), ``kces-soft-half`` (the one
before: each node's own features, not smoothed) and ``kces-both`` (the one before that: without
the down-weighting); of the rule with graph-free feature labels
(``kces-features``), ``kces-top10`` (the paper's literal reading: prune the 10% highest-KC
edges), ``kces-kc-only`` (the KC bound, no label check), ``kces-labels-only`` (the label check,
no KC bound), ``kces-k2`` (two hops), ``kces-top2`` (an earlier default: an unlabelled node's two
best feature classes both count as compatible); ``kces-nbr`` (the neighbourhood vote alone, the
default before) and ``kces-nbr-labels-only`` (its label check, no KC bound); and
``kces-both-labels-only`` (``kces-both``'s label check, no KC bound); and the opt-in feature anchors
(``kces.anchors``) alone (``anchor``: no pruning) and after ``kces-both`` (``kces-both+anchor``), to
show what the pruning adds to them. Scenarios: clean,
Metattack 20%, Nettack 5 (its target nodes), DICE 20%, and at 20% three attack families each
without and with knowledge of the variant (``benchmarks/adaptive.py``): training-node insertions
(``trainlink``), Meta-Self (``metaself``) and PRBCD (``prbcd``, 2 seeds), and the rule-aware
insertions to other classes' hubs (``trainhub``; ``trainhub-capped`` and ``trainhub-padded``
under the excess check's bound). The attacked graphs of the variants the adaptive benchmark also
runs can be shared through the cache if that ran first: copy ``results/adaptive/cache/*`` here.
Results, tables and figures go to ``benchmarks/results/ablation/``; an interrupted run
continues where it stopped.

    python benchmarks/ablation.py [--datasets cora,citeseer,polblogs] [--seeds 3] [--defences anchor,kces-both+anchor]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kces.experiments.runner import run_grids

OUT = Path(__file__).parent / "results" / "ablation"
DEFENCES = ["none", "kces-top10", "kces-kc-only", "kces-labels-only", "kces", "kces-smooth-half", "kces-soft-half",
            "kces-both", "kces-nbr", "kces-features", "kces-k2", "kces-top2", "kces-nbr-labels-only",
            "kces-both-labels-only", "anchor", "kces-both+anchor"]


def grids(seeds: int) -> list[dict]:
    """The ablation's grids at ``seeds`` GCN seeds (PRBCD's attacked graphs at 2 at most, as in
    ``adaptive.py``)."""
    at_20 = dict(rates=[0.2], nettack_perturbations=[5], seeds=seeds)
    return [dict(attacks=["meta", "nettack"], rates=[0, 0.2], nettack_perturbations=[5], seeds=seeds),
            dict(attacks=["dice"], **at_20),
            dict(attacks=["trainlink", "trainlink-adaptive", "metaself", "metaself-adaptive", "trainhub",
                          "trainhub-capped", "trainhub-padded"], **at_20),
            dict(attacks=["prbcd", "prbcd-adaptive"], **{**at_20, "seeds": min(seeds, 2)})]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer,polblogs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--defences", default=",".join(DEFENCES), help="comma-separated defences (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return run_grids(args.out, grids(args.seeds), datasets=args.datasets.split(","),
                     defences=args.defences.split(","),
                     models=["gcn"], optimizers=["adam"])


if __name__ == "__main__":
    sys.exit(main())
