"""How the label check's defaults were chosen: on validation nodes, never on test nodes.

For each candidate rule (``kces.Pruning``: the label check accepting an unlabelled node's top 1
or top 2 feature classes, with feature or neighbourhood class scores), GCN accuracy (DeepRobust's
recipe, seeds 0..``--seeds``-1) on the validation nodes of Cora and Citeseer in four scenarios —
clean, the published Metattack 20% and Nettack-5 graphs, and DICE 20% (seed 0) — and, for the
record only, on the test nodes (Nettack: its target nodes). The rule with the highest mean
validation accuracy over the eight graphs was the default (top 1 features) until attacks that know
the rule joined these scenarios (``selection_adaptive.py``: top 1 neighbourhood, then both label
sources). Featureless Polblogs, which has no
feature labels, decides the featureless graphs' check: the same scenarios plus training-node
insertions at 20% to random nodes (``trainlink``, seed 0) and to hubs (``trainhub``), under the
three earlier rules (only edges between two training nodes of different labels checked; no
check; the neighbourhood-overlap check alone — an edge whose endpoints' neighbour sets overlap
by at most a bound disagrees, ``kces.labels.neighbourhood_overlap`` — at six bounds) and the
overlap check joined by the training-neighbour excess check
(``kces.labels.training_neighbour_excess``): at 0.3 with six z, and at 0.2 and 0.4 with the chosen z.
Writes ``results/selection.json``.

    python benchmarks/selection.py [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from kces import Pruning, kc_scores, sanitize_adj
from kces.experiments.attacks import Told, dice_attack, prbcd_through_defence, train_hubs, train_links, vote_links
from kces.experiments.datasets import Graph, load_graph, upper_pairs
from kces.experiments.models import EPOCHS, accuracy
from kces.graph import node_mask
from kces.labels import EXCESS_Z, MIN_NEIGHBOURHOOD_OVERLAP, neighbourhood_overlap, training_neighbour_excess
from kces.prune import candidate_mask, prune_mask

OUT = Path(__file__).parent / "results" / "selection.json"
RULES = {"top1 features": Pruning(label_source="features", unlabelled_weight=1.0),
         "top2 features": Pruning(label_top_k=2, label_source="features", unlabelled_weight=1.0),
         "top1 neighbourhood": Pruning(label_source="neighbourhood", unlabelled_weight=1.0),
         "top2 neighbourhood": Pruning(label_source="neighbourhood", label_top_k=2, unlabelled_weight=1.0)}


def featureless_rule(disagreement: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]
                     ) -> Callable[[Graph], sp.csr_matrix]:
    """The default KC bound plus the edges that ``disagreement(pairs, labels, training nodes)``
    flags (``pairs`` (2, m): each undirected edge once), built from the library's parts."""
    def defend(graph: Graph) -> sp.csr_matrix:
        pairs = upper_pairs(graph.adj)
        edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)  # both directions, pair i at columns i and m + i
        y, train = torch.from_numpy(graph.labels), torch.from_numpy(graph.idx_train)
        scores = kc_scores(edge_index, None, y, train, num_nodes=graph.num_nodes)[:pairs.shape[1]]
        candidates = candidate_mask(pairs, train, graph.num_nodes, Pruning())
        kept = pairs[:, ~prune_mask(scores, candidates, disagreement(pairs, y, train), Pruning())].numpy()
        adj = sp.coo_matrix((np.ones(kept.shape[1], dtype=np.float32), tuple(kept)), shape=graph.adj.shape)
        return (adj + adj.T).tocsr()
    return defend


def training_pairs(pairs: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Edges between two training nodes of different labels (the first featureless rule)."""
    labelled = node_mask(train, len(y))
    return labelled[pairs[0]] & labelled[pairs[1]] & (y[pairs[0]] != y[pairs[1]])


def overlap_at_most(bound: float, excess_z: float | None = None
                    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Edges whose endpoints' neighbourhoods overlap by at most ``bound``, or (with ``excess_z``)
    that :func:`~kces.labels.training_neighbour_excess` flags at that z."""
    def disagree(pairs: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
        flagged = neighbourhood_overlap(pairs, len(y)) <= bound
        if excess_z is not None:
            flagged |= training_neighbour_excess(pairs, y, train, int(y.max()) + 1, excess_z)
        return flagged
    return disagree


DEFAULT_FEATURELESS = f"overlap <= {MIN_NEIGHBOURHOOD_OVERLAP:g} or excess z > {EXCESS_Z:g} (default)"
FEATURELESS_RULES: dict[str, Callable[[Graph], sp.csr_matrix]] = {
    "training pairs checked (first)": featureless_rule(training_pairs),
    "no label check (second)": featureless_rule(lambda pairs, y, train: None),
    **{f"neighbourhood overlap <= {bound:g}{' (third)' if bound == MIN_NEIGHBOURHOOD_OVERLAP else ''}":
       featureless_rule(overlap_at_most(bound)) for bound in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)},
    **{(DEFAULT_FEATURELESS if z == EXCESS_Z else f"overlap <= {MIN_NEIGHBOURHOOD_OVERLAP:g} or excess z > {z:g}"):
       featureless_rule(overlap_at_most(MIN_NEIGHBOURHOOD_OVERLAP, z)) for z in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)},
    **{f"overlap <= {bound:g} or excess z > {EXCESS_Z:g}": featureless_rule(overlap_at_most(bound, EXCESS_Z))
       for bound in (0.2, 0.4)}}


def measure(name: str, scenario: str, rule: str, graph: Graph, defended: sp.spmatrix, seeds: int) -> dict:
    """Validation and test accuracy (%, mean over seeds) of the GCN trained on ``defended``."""
    test = graph.target_nodes if scenario == "nettack 5" else graph.idx_test
    val, tst = (100 * np.mean([accuracy(graph.with_adj(defended), "gcn", "adam", seed, nodes)
                               for seed in range(seeds)]) for nodes in (graph.idx_val, test))
    print(f"{name:9} {scenario:13} {rule:32} validation {val:5.1f}  test {tst:5.1f}", flush=True)
    return dict(dataset=name, scenario=scenario, rule=rule, validation=val, test=tst)


def in_earlier_order(rows: list[dict], earlier: list[dict]) -> list[dict]:
    """``rows`` (dicts with ``dataset``, ``rule`` and ``scenario``) in the order of those ``earlier``
    rows, so that a results file measured again in part keeps its order; rows new to it last."""
    order = {(r["dataset"], r["rule"], r["scenario"]): i for i, r in enumerate(earlier)}
    return sorted(rows, key=lambda r: order.get((r["dataset"], r["rule"], r["scenario"]), len(order)))


def built(makers: dict[str, Callable[[], Graph]], wanted: set[str] | None) -> dict[str, Graph]:
    """The attacked graph of each scenario of ``makers`` (scenario → function making it, in order)
    that is in ``wanted`` (all when None): only the graphs a partial rerun measures are made."""
    return {scenario: make() for scenario, make in makers.items() if wanted is None or scenario in wanted}


def aimed_at_validation(clean: Graph, rate: float, told: Told, featureless: bool) -> dict[str, Callable[[], Graph]]:
    """Scenario → function making it: the adaptive attacks made here, not read from the adaptive
    benchmark's cache, aimed at the validation nodes through the defence ``told`` tells of (seed
    0): the vote-moving insertions at 20% (graphs with features; aiming by the class scores the
    rule reads) and PRBCD at ``rate`` told the pairs the rule always prunes or down-weights and
    the weights it gives."""
    makers = {} if featureless else {"votelink-adaptive": lambda: clean.with_adj(
        vote_links(clean, 0.2, 0, told.defend, told.avoid, EPOCHS, told.scale, targets=clean.idx_val,
                   scores=told.scores))}
    makers["prbcd-val, rule-aware"] = lambda: clean.with_adj(prbcd_through_defence(
        clean, rate, 0, EPOCHS, told.defend, told.avoid, targets=clean.idx_val, scale=told.scale))
    return makers


def scenarios(name: str) -> dict[str, Graph]:
    clean = load_graph(name)
    return {"clean": clean, "meta 20%": load_graph(name, "meta", 0.2), "nettack 5": load_graph(name, "nettack", 5.0),
            "dice 20%": clean.with_adj(dice_attack(clean.adj, clean.labels, 0.2, seed=0))}


def mean_validation(rows: list[dict]) -> dict[str, float]:
    rules = dict.fromkeys(r["rule"] for r in rows)
    return {rule: float(np.mean([r["validation"] for r in rows if r["rule"] == rule])) for rule in rules}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(name, scenario, rule, graph, sanitize_adj(graph.adj, graph.features, graph.labels,
                                                              graph.idx_train, pruning=pruning), args.seeds)
            for name in ("cora", "citeseer") for scenario, graph in scenarios(name).items()
            for rule, pruning in RULES.items()]
    blogs = scenarios("polblogs")
    blogs["trainlink 20%"] = blogs["clean"].with_adj(train_links(blogs["clean"], 0.2, seed=0))
    blogs["trainhub 20%"] = blogs["clean"].with_adj(train_hubs(blogs["clean"], 0.2, seed=0, epochs=0))
    default = FEATURELESS_RULES[DEFAULT_FEATURELESS]
    for graph in blogs.values():  # the rebuilt default is the library's
        library = sanitize_adj(graph.adj, graph.features, graph.labels, graph.idx_train)
        assert (sp.csr_matrix(library) != default(graph)).nnz == 0
    featureless = [measure("polblogs", scenario, rule, graph, defend(graph), args.seeds)
                   for scenario, graph in blogs.items() for rule, defend in FEATURELESS_RULES.items()]
    result = {"seeds": args.seeds}
    for key, part in (("with_features", rows), ("featureless", featureless)):
        means = mean_validation(part)
        print(f"{key}: mean validation accuracy", ", ".join(f"{rule} {mean:.2f}" for rule, mean in means.items()))
        result[key] = dict(rows=part, mean_validation=means, chosen=max(means, key=means.get))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
