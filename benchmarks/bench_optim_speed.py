"""Step time of the optim/ optimizers against AdamW and torch.optim.Muon, on GNN weight shapes.

Every optimizer steps one weight of each shape (``nn.Linear`` layout ``(out, in)``) with a fixed
gradient; the time per step is the median over steps after the first (the first allocates state
and is only used when it is the only one). Ratios to AdamW come from the same run. For each
shape it also reports the relative difference between our Muon's first update (default dtype)
and ``torch.optim.Muon``'s (bf16), and the speed-up over it.

A measurement whose estimated single step (scaled from the previous shape by ``min² · max``)
exceeds ``--max-seconds`` is skipped and reported as such. CPU runs use one thread; CUDA is
measured too when available.

    python benchmarks/bench_optim_speed.py            # ~3 minutes on one CPU thread
    python benchmarks/bench_optim_speed.py --quick    # shapes up to 1024², fewer steps
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim import Optimizer

from optim import RMNP, SPECTRA, HTMuon, Muon, RowNorm

SHAPES: list[tuple[tuple[int, int], str]] = [
    ((16, 1433), "GCN layer 1 on Cora"),
    ((64, 1433), "GAT layer 1 on Cora (8 heads x 8)"),
    ((64, 64), "GAT hidden layer"),
    ((256, 256), ""),
    ((1024, 1024), ""),
    ((4096, 4096), ""),
]
OPTIMIZERS: dict[str, Callable[[torch.nn.Parameter], Optimizer]] = {
    "AdamW": lambda p: torch.optim.AdamW([p], lr=1e-3),
    "torch.optim.Muon": lambda p: torch.optim.Muon([p], lr=0.02, weight_decay=0.0),  # = our defaults
    "Muon": lambda p: Muon([p]),
    "Muon (bf16)": lambda p: Muon([p], ns_dtype=torch.bfloat16),
    "HTMuon (SVD)": lambda p: HTMuon([p]),
    "HTMuon (NS)": lambda p: HTMuon([p], method="newton_schulz"),
    "RMNP": lambda p: RMNP([p]),
    "RowNorm (centred)": lambda p: RowNorm([p], centered=True),
    "AdamW+SPECTRA": lambda p: SPECTRA(torch.optim.AdamW([p], lr=1e-3)),
}
RESULTS = Path(__file__).parent / "results" / "optim_speed.json"


def cost(shape: tuple[int, int]) -> float:
    return min(shape) ** 2 * max(shape)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_optimizer(factory: Callable[[torch.nn.Parameter], Optimizer], weight: torch.Tensor,
                   grad: torch.Tensor, min_seconds: float, max_steps: int) -> tuple[float, int, torch.Tensor]:
    """Median seconds per step, steps timed, and the first step's update."""
    p = torch.nn.Parameter(weight.clone())
    p.grad = grad
    opt = factory(p)
    times = []
    while len(times) < max_steps and (len(times) < 2 or sum(times) < min_seconds):
        start = time.perf_counter()
        opt.step()
        sync(weight.device)
        times.append(time.perf_counter() - start)
        if len(times) == 1:
            first_update = (p.detach() - weight).cpu()
            if times[0] > min_seconds:  # slow: the first step is the measurement
                break
    steady = times[1:] or times
    return statistics.median(steady), len(steady), first_update


def run(device: torch.device, shapes: list[tuple[tuple[int, int], str]], min_seconds: float,
        max_steps: int, max_seconds: float) -> tuple[list[dict], list[dict]]:
    results, muon_vs_torch = [], []
    previous: dict[str, tuple[tuple[int, int], float]] = {}
    for shape, label in shapes:
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(*shape, generator=g).to(device)
        grad = torch.randn(*shape, generator=g).to(device)
        timings, updates = {}, {}
        for name, factory in OPTIMIZERS.items():
            row = {"device": device.type, "shape": list(shape), "label": label, "optimizer": name}
            if name in previous:
                prev_shape, prev_seconds = previous[name]
                estimate = prev_seconds * cost(shape) / cost(prev_shape)
                if estimate > max_seconds:
                    row.update(ms_per_step=None, steps=0, skipped=f"estimated {estimate:.0f} s per step")
                    results.append(row)
                    print(f"  {device.type} {shape} {name}: skipped ({row['skipped']})", flush=True)
                    continue
            seconds, steps, update = time_optimizer(factory, weight, grad, min_seconds, max_steps)
            previous[name] = (shape, seconds)
            timings[name], updates[name] = seconds, update
            row.update(ms_per_step=seconds * 1e3, steps=steps, skipped=None)
            results.append(row)
            print(f"  {device.type} {shape} {name}: {seconds * 1e3:.3f} ms ({steps} steps)", flush=True)
        for row in results:
            if row["shape"] == list(shape) and row["device"] == device.type and row["ms_per_step"] is not None:
                row["x_adamw"] = row["ms_per_step"] / (timings["AdamW"] * 1e3)
        if "Muon" in updates and "torch.optim.Muon" in updates:
            ours, theirs = updates["Muon"], updates["torch.optim.Muon"]
            muon_vs_torch.append({
                "device": device.type, "shape": list(shape),
                "speedup": timings["torch.optim.Muon"] / timings["Muon"],
                "speedup_bf16": timings["torch.optim.Muon"] / timings["Muon (bf16)"],
                "update_rel_diff": ((ours - theirs).norm() / theirs.norm()).item(),
            })
    return results, muon_vs_torch


def table(results: list[dict], muon_vs_torch: list[dict], device: str) -> str:
    rows = [r for r in results if r["device"] == device]
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in rows))
    header = "| optimizer | " + " | ".join(f"{m}×{n}" for m, n in shapes) + " |"
    lines = [f"Step time on {device} (ms per step; × AdamW in the same run)", "", header,
             "|" + "---|" * (len(shapes) + 1)]
    for name in OPTIMIZERS:
        cells = []
        for shape in shapes:
            r = next(r for r in rows if r["optimizer"] == name and tuple(r["shape"]) == shape)
            if r["ms_per_step"] is None:
                cells.append("skipped")
            elif name == "AdamW":
                cells.append(f"{r['ms_per_step']:.3g}")
            else:
                cells.append(f"{r['ms_per_step']:.3g} ({r['x_adamw']:.3g}×)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Our Muon vs torch.optim.Muon (bf16): speed-up, and relative difference of the first update",
              "", "| shape | speed-up (default dtype) | speed-up (bf16) | ‖Δours − Δtorch‖/‖Δtorch‖ |",
              "|---|---|---|---|"]
    for r in muon_vs_torch:
        if r["device"] == device:
            m, n = r["shape"]
            lines.append(f"| {m}×{n} | {r['speedup']:.2f}× | {r['speedup_bf16']:.2f}× | {r['update_rel_diff']:.2%} |")
    return "\n".join(lines)


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; absent in some builds
    if native_bf16 is not None:
        info["cpu_avx512_bf16"] = bool(native_bf16())
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shapes up to 1024x1024, fewer steps")
    parser.add_argument("--max-seconds", type=float, default=80.0,
                        help="skip a measurement whose estimated single step takes longer (default 80)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shapes = [s for s in SHAPES if not args.quick or cost(s[0]) <= cost((1024, 1024))]
    min_seconds, max_steps = (0.1, 10) if args.quick else (0.3, 30)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results, muon_vs_torch = [], []
    for device in devices:
        r, m = run(device, shapes, min_seconds, max_steps, args.max_seconds)
        results += r
        muon_vs_torch += m
    report = {"machine": machine(), "quick": args.quick, "max_seconds": args.max_seconds,
              "results": results, "muon_vs_torch": muon_vs_torch}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    for device in devices:
        print()
        print(table(results, muon_vs_torch, device.type))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
