"""The GPU benchmark, one script for a lent accelerator (issue 10): KC scoring, the whole
``kces.sanitize`` and a 2-layer PyG GCN forward+backward on SBM graphs of growing size, and the
optimizer step times, all on one device; a size that does not fit is recorded with its error
(the memory guard's ``MemoryError`` or CUDA's out-of-memory) and the next is tried.

    PYTHONPATH=. python benchmarks/gpu.py                          # CUDA: 1M, 10M, 100M nodes
    python benchmarks/gpu.py --device cpu --sizes 2000 --shapes 64  # the same code on a CPU
    -> results/gpu.json (and a table on stdout)

Times are the best of ``--repeats`` after a warm-up, with the device synchronised; memory is
the device's peak allocation during the measurement (CUDA) or the process's peak RSS (CPU).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.nn.models import GCN

import kces
from kces.experiments.synthetic import sbm_graph
from optim import RMNP, HTMuon, Muon

RESULTS = Path(__file__).parent / "results" / "gpu.json"
OPTIMIZERS: dict[str, Callable[[torch.nn.Parameter], torch.optim.Optimizer]] = {
    "torch.optim.Muon": lambda p: torch.optim.Muon([p], lr=0.02, weight_decay=0.0),
    "Muon": lambda p: Muon([p]),
    "HTMuon": lambda p: HTMuon([p]),
    "HTMuon (NS)": lambda p: HTMuon([p], method="newton_schulz"),
    "RMNP": lambda p: RMNP([p]),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> dict:
    """Best time of ``fn`` over ``repeats`` runs after a warm-up, and the peak memory (GB)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"time_s": best, "peak_gb": peak / 2**30}


def graph_row(nodes: int, device: torch.device, repeats: int) -> dict:
    """KC scoring, sanitize and GCN fwd+bwd on an SBM graph of ``nodes`` nodes on ``device``."""
    row: dict = {"nodes": nodes}
    try:
        data = sbm_graph(nodes, num_features=64, seed=0).to(device)
        row["undirected_edges"] = data.edge_index.shape[1] // 2
        ei, x, y, mask = data.edge_index, data.x, data.y, data.train_mask
        row["kc_scores"] = timed(lambda: kces.kc_scores(ei, x, y, mask), device, repeats)
        row["sanitize"] = timed(lambda: kces.sanitize(ei, x, y, mask), device, repeats)
        model = GCN(64, 16, num_layers=2, out_channels=4, dropout=0.5).to(device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x, ei)[mask], y[mask]).backward()

        row["gcn_fwd_bwd"] = timed(step, device, repeats)
        row["kc_over_gcn"] = row["kc_scores"]["time_s"] / row["gcn_fwd_bwd"]["time_s"]
    except (MemoryError, torch.cuda.OutOfMemoryError, RuntimeError) as error:
        row["error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def optimizer_row(size: int, device: torch.device, repeats: int) -> dict:
    """ms per step of each optimizer on one (size, size) weight with a fixed gradient."""
    row: dict = {"shape": [size, size]}
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(size, size, generator=generator).to(device)
    for name, make in OPTIMIZERS.items():
        weight = torch.nn.Parameter(torch.randn(size, size, generator=generator).to(device))
        weight.grad = grad
        optimizer = make(weight)
        row[name] = timed(optimizer.step, device, repeats)["time_s"] * 1e3
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--shapes", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"device": name, "torch": torch.__version__, "graphs": [], "optimizers": []}
    for nodes in args.sizes:
        result["graphs"].append(graph_row(nodes, device, args.repeats))
        print(json.dumps(result["graphs"][-1]), flush=True)
    for size in args.shapes:
        result["optimizers"].append(optimizer_row(size, device, args.repeats))
        print(json.dumps(result["optimizers"][-1]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
