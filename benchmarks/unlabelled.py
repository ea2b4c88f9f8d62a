"""Checking the edges between unlabelled nodes too: measured on validation nodes, not adopted.

The default inspects only edges at training nodes; PRBCD aimed at the test nodes puts most of its
insertions between two unlabelled nodes, joining nodes of different classes. The candidates add
to the default: prune an edge between two unlabelled nodes whose graph-free feature labels
(:func:`kces.labels.feature_class_scores`) disagree — and whose endpoints share no neighbour
(``cn0``), and (``cos<t``) whose unit-norm features have cosine similarity below t.

GCN accuracy (DeepRobust's recipe, seeds 0..``--seeds``-1) on the *validation* nodes of Cora and
Citeseer, test nodes for the record only: the four scenarios of ``selection.py`` (clean,
Metattack 20%, Nettack-5, DICE 20%) and PRBCD aimed at the validation nodes at the test attack's
density (``round(0.2·m·|val|/|test|)`` flips, seed 0): against a GCN on the clean graph; through
each rule, re-spending what it prunes (``prbcd_through_defence`` not told the rule); and
through each rule told the pairs its graph-free part prunes — the default's label check at
training nodes, the candidates' disagreeing unlabelled pairs below the cosine bound (``cn0``
needs the graph, so that attacker avoids every disagreeing unlabelled pair) — as the
benchmark's ``prbcd-adaptive`` now runs it. About 20 minutes per dataset on one core. Writes
``results/unlabelled.json``.

    python benchmarks/unlabelled.py [--datasets cora,citeseer] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import normalize

from kces import sanitize_adj
from kces.experiments.attacks import rbcd_perturbed, budget, prbcd_through_defence
from kces.experiments.datasets import Graph
from kces.experiments.defences import KCES_VARIANTS, always_pruned
from kces.experiments.models import EPOCHS
from kces.labels import feature_class_scores, label_disagreement
from selection import measure, scenarios

OUT = Path(__file__).parent / "results" / "unlabelled.json"
RULES: dict[str, tuple[bool, float | None] | None] = {
    "default": None, "disagree, cn0": (True, None), "disagree, cn0, cos<0.05": (True, 0.05),
    "disagree, cn0, cos<0.1": (True, 0.1), "disagree, cos<0.05": (False, 0.05)}
"""name → what the candidate adds to the default: (also require no common neighbour, cosine bound
or None); None: nothing."""
BASE = KCES_VARIANTS["kces-features"][0]
"""The rule the candidates add to: feature labels, the default when this was measured (the default
reads the unlabelled neighbours' vote too since, ``selection_adaptive.py``)."""


def unlabelled_disagreement(graph: Graph, cosine_below: float | None,
                            top_k: int = 1) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(rows, cols) → bool: both endpoints unlabelled, neither's feature label among the other's
    ``top_k`` best feature classes (1: their feature labels differ), and (with ``cosine_below``)
    their unit-norm features' cosine below it. Graph-free."""
    x, y = torch.from_numpy(graph.features.toarray()).double(), torch.from_numpy(graph.labels)
    train, num_classes = torch.from_numpy(graph.idx_train), int(y.max()) + 1
    scores = feature_class_scores(x, y, train, num_classes)
    unit = normalize(sp.csr_matrix(graph.features), axis=1)
    labelled = graph.train_mask

    def flags(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        pairs = torch.from_numpy(np.vstack([rows, cols])).long()
        disagree = label_disagreement(pairs, x, y, train, num_classes, top_k, scores=scores).numpy()
        out = ~labelled[rows] & ~labelled[cols] & disagree
        if cosine_below is not None:
            out &= np.asarray(unit[rows].multiply(unit[cols]).sum(1)).ravel() < cosine_below
        return out
    return flags


def rule(graph: Graph, no_common: bool, cosine_below: float | None) -> Callable[[sp.csr_matrix], sp.csr_matrix]:
    """adj → :data:`BASE`'s output less the edges the candidate flags."""
    flags = unlabelled_disagreement(graph, cosine_below)

    def defend(adj: sp.csr_matrix) -> sp.csr_matrix:
        kept = sp.triu(sanitize_adj(adj, graph.features, graph.labels, graph.idx_train, pruning=BASE), k=1).tocoo()
        flagged = flags(kept.row, kept.col)
        if no_common:
            flagged &= np.asarray(adj[kept.row].multiply(adj[kept.col]).sum(1)).ravel() == 0
        out = sp.coo_matrix((kept.data[~flagged], (kept.row[~flagged], kept.col[~flagged])), shape=adj.shape)
        return (out + out.T).tocsr()
    return defend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.datasets.split(","):
        graphs = scenarios(name)
        clean = graphs["clean"]
        rate = 0.2 * clean.idx_val.size / clean.idx_test.size
        graphs["prbcd-val"] = clean.with_adj(rbcd_perturbed(clean, budget(clean, rate), 0, EPOCHS,
                                                             targets=clean.idx_val))
        default_flags = always_pruned(("kces-features",), clean)
        for rule_name, added in RULES.items():
            if added is None:
                defend, avoid = (lambda adj: sanitize_adj(adj, clean.features, clean.labels, clean.idx_train,
                                                          pruning=BASE), default_flags)
            else:
                defend, flags = rule(clean, *added), unlabelled_disagreement(clean, added[1])
                avoid = (lambda pairs, flags=flags: default_flags(pairs)
                         | torch.from_numpy(flags(pairs[0].numpy(), pairs[1].numpy())))
            attacked = dict(graphs)
            attacked["prbcd-val, adaptive"] = clean.with_adj(
                prbcd_through_defence(clean, rate, 0, EPOCHS, defend, targets=clean.idx_val))
            attacked["prbcd-val, rule-aware"] = clean.with_adj(
                prbcd_through_defence(clean, rate, 0, EPOCHS, defend, avoid, targets=clean.idx_val))
            rows += [measure(name, scenario, rule_name, graph, defend(graph.adj), args.seeds)
                     for scenario, graph in attacked.items()]
    means = {rule_name: {name: float(np.mean([r["validation"] for r in rows
                                              if r["rule"] == rule_name and r["dataset"] == name]))
                         for name in args.datasets.split(",")} for rule_name in RULES}
    print("mean validation accuracy:", json.dumps(means))
    args.out.write_text(json.dumps({"seeds": args.seeds, "rows": rows, "mean_validation": means}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
