"""Test accuracy of a 2-layer GCN and GAT on Cora (Pro-GNN split), clean and Metattack 20%,
trained with Adam, AdamW, Muon, HTMuon, RMNP and AdamW+SPECTRA, without and with KCES in front.

Protocol (the same for every optimizer):

* Graphs from ``kces.data.load_graph("cora")`` and ``load_graph("cora", attack="meta", rate=0.2)``
  (Pro-GNN's pre-attacked graph); raw binary features; KCES = ``kces.sanitize`` with its defaults.
* PyG ``GCN(1433, 16, 2, 7, dropout=0.5)`` and ``GAT(1433, 64, 2, 7, heads=8, dropout=0.6)``;
  200 full-batch epochs; the test accuracy at the epoch of best validation accuracy.
* Spectral optimizers via ``optim.build_optimizer(model, name, input_proj="spectral")``: a 2-layer
  model has no hidden layer, so the first layer's weight gets the spectral optimizer and the
  classifier layer, biases and attention vectors get AdamW (lr 0.01). For AdamW+SPECTRA both
  weight matrices are soft-clipped (``c = 1``).
* Weight decay gives every optimizer the same shrinkage per step, ``lr · wd = 5e-4`` (decoupled;
  Adam: the usual coupled L2 of 5e-4).
* The learning rate of each optimizer (of its spectral group) is picked per model from a
  5-point grid by mean validation accuracy over ``--tune-seeds`` seeds on the clean graph and
  reused for the other graphs; then ``--seeds`` seeds are run. Mean ± std are reported.

    python benchmarks/bench_optim_accuracy.py            # ~40 min on one CPU thread
    python benchmarks/bench_optim_accuracy.py --quick    # GCN only, 2 seeds, no tuning
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch_geometric.data import Data
from torch_geometric.nn.models import GAT, GCN

from kces import sanitize
from kces.data import load_graph
from optim import build_optimizer

RESULTS = Path(__file__).parent / "results" / "optim_accuracy.json"
STEP_DECAY = 5e-4  # lr · weight_decay for every decoupled optimizer
HEAD_LR = 0.01  # AdamW groups of the spectral optimizers (classifier layer, biases, attention)

MODELS: dict[str, Callable[[], nn.Module]] = {
    "GCN": lambda: GCN(1433, 16, 2, 7, dropout=0.5, cached=True),
    "GAT": lambda: GAT(1433, 64, 2, 7, heads=8, dropout=0.6),
}


def spectral(name: str, **kwargs) -> Callable[[nn.Module, float], Optimizer]:
    def make(model: nn.Module, lr: float) -> Optimizer:
        return build_optimizer(model, name, lr=lr, weight_decay=STEP_DECAY / lr, input_proj="spectral",
                               adamw_lr=HEAD_LR, adamw_weight_decay=STEP_DECAY / HEAD_LR, **kwargs)
    return make


# name → (factory(model, lr), learning-rate grid, ×3 apart; the middle value is used without tuning)
OPTIMIZERS: dict[str, tuple[Callable[[nn.Module, float], Optimizer], tuple[float, ...]]] = {
    "Adam": (lambda m, lr: torch.optim.Adam(m.parameters(), lr=lr, weight_decay=STEP_DECAY),
             (0.001, 0.003, 0.01, 0.03, 0.1)),
    "AdamW": (lambda m, lr: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=STEP_DECAY / lr),
              (0.001, 0.003, 0.01, 0.03, 0.1)),
    # An orthogonal or row-normalised update of a (h, 1433) weight has entries of RMS 1/sqrt(1433):
    # lr ≈ 0.4 matches the per-entry step of Adam at 0.01.
    "Muon": (spectral("muon"), (0.03, 0.1, 0.3, 1.0, 3.0)),
    "HTMuon": (spectral("htmuon"), (0.03, 0.1, 0.3, 1.0, 3.0)),
    "RMNP": (spectral("rmnp"), (0.03, 0.1, 0.3, 1.0, 3.0)),
    # c = 1 clips AdamW's ~±1 entries hard (a 16×1433 sign matrix has σ_max ≈ 42): larger lrs.
    "AdamW+SPECTRA": (spectral("spectra", head="spectral", clip_c=1.0), (0.01, 0.03, 0.1, 0.3, 1.0)),
}


def with_kces(data: Data) -> tuple[Data, int]:
    result = sanitize(data.edge_index, data.x, data.y, data.train_mask, num_nodes=data.num_nodes)
    sanitized = data.clone()
    sanitized.edge_index = result.edge_index
    return sanitized, int((~result.edge_mask).sum()) // 2


def train(model_name: str, optimizer: str, lr: float, data: Data, seed: int, epochs: int) -> tuple[float, float]:
    """(best validation accuracy, test accuracy at that epoch)."""
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    opt = OPTIMIZERS[optimizer][0](model, lr)
    best_val, test_at_best = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(dim=1)
        val = (pred[data.val_mask] == data.y[data.val_mask]).float().mean().item()
        if val > best_val:
            best_val = val
            test_at_best = (pred[data.test_mask] == data.y[data.test_mask]).float().mean().item()
    return best_val, test_at_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="GCN only, 2 seeds, 100 epochs, no tuning")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tune-seeds", type=int, default=2, help="seeds per grid point (0: no tuning)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-kces", action="store_true", help="skip the KCES-sanitized graphs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.tune_seeds, args.epochs, args.models = 2, 0, 100, ["GCN"]
    torch.set_num_threads(1)
    start = time.perf_counter()

    graphs = {"clean": load_graph("cora").to_pyg(), "meta 20%": load_graph("cora", attack="meta", rate=0.2).to_pyg()}
    pruned = {}
    if not args.no_kces:
        for name in list(graphs):
            graphs[f"{name} + KCES"], pruned[name] = with_kces(graphs[name])
    for data in graphs.values():
        data.x = data.x.to_sparse()  # 1.3% non-zero: the first layer's matmul is 2x faster sparse
    print({name: int(d.edge_index.size(1)) // 2 for name, d in graphs.items()}, "undirected edges", flush=True)

    chosen: dict[str, dict[str, float]] = {}
    tuning: list[dict] = []
    for model_name in args.models:
        chosen[model_name] = {}
        for optimizer, (_, grid) in OPTIMIZERS.items():
            if args.tune_seeds == 0:
                chosen[model_name][optimizer] = grid[len(grid) // 2]
                continue
            scores = {}
            for lr in grid:
                vals = [train(model_name, optimizer, lr, graphs["clean"], 100 + s, args.epochs)[0]
                        for s in range(args.tune_seeds)]
                scores[lr] = statistics.mean(vals)
                tuning.append({"model": model_name, "optimizer": optimizer, "lr": lr, "val": scores[lr]})
            chosen[model_name][optimizer] = max(grid, key=lambda lr: scores[lr])
            print(f"tuned {model_name} {optimizer}: lr {chosen[model_name][optimizer]} {scores}", flush=True)

    results: list[dict] = []
    for model_name in args.models:
        for optimizer in OPTIMIZERS:
            lr = chosen[model_name][optimizer]
            for graph_name, data in graphs.items():
                tests = [train(model_name, optimizer, lr, data, seed, args.epochs)[1] for seed in range(args.seeds)]
                row = {"model": model_name, "optimizer": optimizer, "graph": graph_name, "lr": lr,
                       "test": tests, "mean": statistics.mean(tests),
                       "std": statistics.stdev(tests) if len(tests) > 1 else 0.0}
                results.append(row)
                print(f"{model_name} {optimizer} {graph_name}: {100 * row['mean']:.2f} ± {100 * row['std']:.2f}",
                      flush=True)

    report = {"seeds": args.seeds, "tune_seeds": args.tune_seeds, "epochs": args.epochs,
              "kces_pruned_edges": pruned, "lr": chosen, "tuning": tuning, "results": results,
              "seconds": time.perf_counter() - start}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))

    columns = [(m, g) for m in args.models for g in graphs]
    print("\nTest accuracy (%), mean ± std over", args.seeds, "seeds\n")
    print("| optimizer (lr GCN/GAT) | " + " | ".join(f"{m} {g}" for m, g in columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for optimizer in OPTIMIZERS:
        lrs = "/".join(f"{chosen[m][optimizer]:g}" for m in args.models)
        cells = []
        for m, g in columns:
            row = next(r for r in results if (r["model"], r["optimizer"], r["graph"]) == (m, optimizer, g))
            cells.append(f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}")
        print(f"| {optimizer} ({lrs}) | " + " | ".join(cells) + " |")
    print(f"\nwritten to {args.output} ({report['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
