"""Robustness benchmark: GCN accuracy under the published Pro-GNN attacks, with and without KCES.

For each dataset: Metattack at 0–25% (accuracy on the test split), Nettack 1–5 perturbations
per target (accuracy on the attacked target nodes, as Pro-GNN), DICE at 20% (run live,
seeded by the training seed). Defences: none, Jaccard (< 0.01, binary features), KCES
(package default), KCES in front of Jaccard. The GCN follows DeepRobust's ``GCN`` recipe and
is checked against DeepRobust's own ``GCN``/``GCNJaccard`` on the Metattack graphs in the
same run. Also the precision/recall of the edges each defence prunes and its time.

    python benchmarks/robustness.py --datasets cora            # -> results/robustness_cora.json
    python benchmarks/robustness.py --datasets cora --attacks dice   # redo only those cells
    python benchmarks/robustness.py --report                   # -> results/robustness.md
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kces import sanitize_adj
from kces.data import Graph, load_graph
from kces.evaluate import dice_attack, gcn_accuracy, jaccard_prune, pruning_quality
from kces.labels import is_identity_like

RESULTS = Path(__file__).parent / "results"
META_RATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
NETTACK_RATES = (1.0, 2.0, 3.0, 4.0, 5.0)


def defences(graph: Graph) -> dict:
    """Name -> function(adj) -> sanitized adj. Jaccard needs real (binary) features."""
    def kces(adj):
        return sanitize_adj(adj, graph.features, graph.labels, graph.idx_train)

    out = {"none": lambda adj: adj, "kces": kces}
    if not is_identity_like(torch.from_numpy(graph.features.toarray())):
        out["jaccard"] = lambda adj: jaccard_prune(adj, graph.features)
        out["kces+jaccard"] = lambda adj: jaccard_prune(kces(adj), graph.features)
    return out


def deeprobust_accuracy(graph: Graph, seed: int, jaccard: bool) -> float:
    """DeepRobust's own GCN / GCNJaccard(threshold=0.01) on the same graph and split."""
    from deeprobust.graph.defense import GCN, GCNJaccard

    torch.manual_seed(seed)
    np.random.seed(seed)
    cls = GCNJaccard if jaccard else GCN
    model = cls(nfeat=graph.features.shape[1], nhid=16, nclass=int(graph.labels.max()) + 1, device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit(graph.features, graph.adj, graph.labels, graph.idx_train, graph.idx_val,
                  **({"threshold": 0.01, "verbose": False} if jaccard else {}))
        return model.test(graph.idx_test)


def evaluate_cell(graph: Graph, seeds: int, nodes=None, attacked_by_seed=None, check_deeprobust=False) -> dict:
    """Accuracy (%) per defence over seeds, plus pruning quality and defence time."""
    cell = {}
    for name, defend in defences(graph).items():
        accs, quality, seconds = [], [], []
        for seed in range(seeds):
            g = attacked_by_seed(seed) if attacked_by_seed else graph
            start = time.perf_counter()
            adj = defend(g.adj)
            seconds.append(time.perf_counter() - start)
            quality.append(pruning_quality(g, adj))
            accs.append(100 * gcn_accuracy(g.with_adj(adj), seed, nodes=nodes))
        cell[name] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                      "time_s": float(np.mean(seconds)),
                      **{k: float(np.nanmean([q[k] for q in quality])) for k in ("pruned", "precision", "recall")}}
    if check_deeprobust:
        for name, jac in (("deeprobust_gcn", False), ("deeprobust_jaccard", True)):
            if jac and "jaccard" not in cell:
                continue
            accs = [100 * deeprobust_accuracy(graph, seed, jac) for seed in range(seeds)]
            cell[name] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
    return cell


def run(dataset: str, root: str, seeds: int, attacks: list[str]) -> dict:
    """Evaluate the cells of ``attacks``; cells of other attacks already in the JSON are kept."""
    tasks = [("meta", r) for r in META_RATES] + [("nettack", r) for r in NETTACK_RATES] + [("dice", 0.2)]
    tasks = [t for t in tasks if t[0] in attacks]
    path = RESULTS / f"robustness_{dataset}.json"
    results = {"dataset": dataset, "seeds": seeds, "cells": []}
    if path.exists():
        previous = json.loads(path.read_text())
        if previous["seeds"] == seeds:
            results["cells"] = [c for c in previous["cells"] if c["attack"] not in attacks]
    for attack, rate in tqdm(tasks, desc=dataset):
        if attack == "dice":
            clean = load_graph(dataset, root=root)
            cell = evaluate_cell(clean, seeds, attacked_by_seed=lambda s: clean.with_adj(
                dice_attack(clean.adj, clean.labels, rate, seed=s)))
        else:
            graph = load_graph(dataset, attack, rate, root=root)
            nodes = graph.target_nodes if attack == "nettack" else None
            cell = evaluate_cell(graph, seeds, nodes=nodes, check_deeprobust=attack == "meta")
        results["cells"].append({"attack": attack, "rate": rate, "defences": cell})
    order = {a: i for i, a in enumerate(("meta", "nettack", "dice"))}
    results["cells"].sort(key=lambda c: (order[c["attack"]], c["rate"]))
    path.write_text(json.dumps(results, indent=1))
    return results


def report() -> str:
    """Markdown tables from every results/robustness_*.json."""
    lines = []
    for path in sorted(RESULTS.glob("robustness_*.json")):
        res = json.loads(path.read_text())
        names = ["none", "jaccard", "kces", "kces+jaccard"]
        lines += [f"### {res['dataset']} ({res['seeds']} seeds, GCN test accuracy %, mean ± std)", "",
                  "| attack | rate | " + " | ".join(names) + " | KCES pruned / precision / recall | KCES time (s) | DeepRobust GCN / GCNJaccard |",
                  "|---|---|" + "---|" * len(names) + "---|---|---|"]
        for cell in res["cells"]:
            d = cell["defences"]
            accs = [f"{d[n]['mean']:.1f} ± {d[n]['std']:.1f}" if n in d else "n/a" for n in names]
            k = d["kces"]
            dr = " / ".join(f"{d[n]['mean']:.1f}" for n in ("deeprobust_gcn", "deeprobust_jaccard") if n in d) or "–"
            lines.append(f"| {cell['attack']} | {cell['rate']:g} | " + " | ".join(accs)
                         + f" | {k['pruned']:.0f} / {k['precision']:.2f} / {k['recall']:.2f} | {k['time_s']:.2f} | {dr} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cora,citeseer,polblogs")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--attacks", default="meta,nettack,dice")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only write results/robustness.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for dataset in args.datasets.split(","):
            run(dataset, args.root, args.seeds, args.attacks.split(","))
    table = report()
    (RESULTS / "robustness.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
