"""Test accuracy of a 2-layer GCN and GAT on Cora (Pro-GNN split), clean and Metattack 20%,
trained with Adam and the ``optim`` optimizers, without and with KCES in front (``kces-features``,
the default when this was measured: feature labels alone) — a front-end
to the ``kces bench`` runner and its one training loop (``kces.experiments.models.fit``).

Protocol: the runner's models and optimizers (``kces.experiments.models``): PyG ``GCN`` and
``GAT``, the first layer's weight to the spectral optimizer (a 2-layer model has no hidden
layer), AdamW at lr 0.01 elsewhere, the same shrinkage ``lr · wd = 5e-4`` per step; ``gcn`` +
``adam`` is DeepRobust's GCN recipe; 200 epochs, the weights of the best validation epoch.
Results, tables and figures go to ``benchmarks/results/optim_accuracy/``.

``--tune`` instead picks each optimizer's learning rate per model from a 5-point grid (×3
apart) by mean validation accuracy over ``--tune-seeds`` seeds on the clean graph, prints the
grid and the choice, and writes ``tuning.json`` there: copy the choice into
``kces.experiments.models.SPECTRAL_LR``.

    python benchmarks/bench_optim_accuracy.py [--seeds 10]
    python benchmarks/bench_optim_accuracy.py --tune [--tune-seeds 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from kces.experiments.datasets import load_graph
from kces.experiments.models import accuracy
from kces.experiments.names import MODELS, OPTIMIZERS
from kces.experiments.runner import run_grids

OUT = Path(__file__).parent / "results" / "optim_accuracy"
LR_GRID = {"muon": (0.03, 0.1, 0.3, 1.0, 3.0), "htmuon": (0.03, 0.1, 0.3, 1.0, 3.0),
           "rmnp": (0.03, 0.1, 0.3, 1.0, 3.0), "spectra": (0.01, 0.03, 0.1, 0.3, 1.0)}
"""Learning-rate grids of the spectral groups: an orthogonal or row-normalised update of a (h, 1433)
weight has entries of RMS 1/sqrt(1433), so lr ≈ 0.4 matches Adam's per-entry step at 0.01; SPECTRA's
c = 1 clips AdamW's ~±1 entries hard, hence larger rates."""


def tune(tune_seeds: int, out: Path) -> dict:
    """Mean validation accuracy of every (model, optimizer, lr) on clean Cora, and the best lr."""
    graph = load_graph("cora")
    table = {}
    for model in MODELS:
        for optimizer, grid in LR_GRID.items():
            scores = {lr: float(np.mean([accuracy(graph, model, optimizer, 100 + s, graph.idx_val, lr=lr)
                                         for s in range(tune_seeds)])) for lr in grid}
            table[f"{model} {optimizer}"] = {"validation": scores, "lr": max(grid, key=lambda lr: scores[lr])}
            print(f"{model} {optimizer}: lr {table[f'{model} {optimizer}']['lr']:g} {scores}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(table, indent=1))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tune", action="store_true", help="only pick the learning rates")
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tune:
        tune(args.tune_seeds, args.out)
        return 0
    grid = dict(attacks=["meta"], rates=[0, 0.2], nettack_perturbations=[5])
    return run_grids(args.out, [grid], datasets=["cora"], defences=["none", "kces-features"], models=list(MODELS),
                     optimizers=list(OPTIMIZERS), seeds=args.seeds)


if __name__ == "__main__":
    sys.exit(main())
