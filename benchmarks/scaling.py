"""Scaling study (issue 5): KC scoring against a GCN forward+backward pass and Jaccard pruning
on synthetic SBM graphs (``kces.experiments.synthetic.sbm_graph``: 4 classes, homophily 0.8, 10% labelled).

For every size, in the same run: generating the graph; the graph alone held in memory (the
baseline); ``kces.kc_scores`` (default call); one forward+backward pass of a 2-layer PyG GCN
(``GCNConv``, cross-entropy on the training nodes, dropout 0.5); Jaccard pruning as DeepRobust's
``GCNJaccard`` does it for continuous features (cosine similarity < 0.01 dropped); the dense
exact reference (``form="dual"``) while |S|² · 8 bytes stays small, with its largest score
difference from the default call; and at one size a 2-process gloo run of ``kces.distributed``.

Every measurement runs in a fresh process (this script with ``--one``) that loads the graph
from a temporary file, so its peak RSS (``ru_maxrss``, absolute: it includes Python, torch and
the ~0.4 GB of imports) is its own; the baseline process loads the graph and does nothing
else, so a method's increment is its peak minus the baseline. Times are the best of
``--repeats`` runs after one warm-up (fewer runs once 20 s are spent). Each process runs
under an address-space limit (``--memory-limit``), so a measurement that would outgrow it
fails with a memory error instead of pushing the machine into the OOM killer.

    python benchmarks/scaling.py                                  # 10k, 100k, 1M nodes
    python benchmarks/scaling.py --sizes 10000 100000 --methods graph gcn jaccard
    python benchmarks/scaling.py --report                         # redraw from results/scaling.json
    -> results/scaling.json, results/scaling.md, results/scaling.png
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.models import GCN

import kces
from kces.experiments.synthetic import sbm_graph

RESULTS = Path(__file__).parent / "results"
METHODS = ("graph", "baseline", "kc", "gcn", "jaccard", "dense", "distributed")
LABELS = {"graph": "graph generation", "baseline": "graph held (baseline)", "kc": "KC scoring",
          "gcn": "GCN fwd+bwd", "jaccard": "Jaccard (cosine)", "dense": "dense reference"}
REPEAT_BUDGET_S = 20.0


def graph_config(args: argparse.Namespace, nodes: int) -> dict:
    return dict(num_nodes=nodes, num_classes=4, avg_degree=10.0, homophily=0.8,
                num_features=args.feature_dim, train_ratio=0.1, seed=0)


# --- measurements, each inside its own process ---------------------------------------------

def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def best_time(fn, repeats: int) -> tuple[float, int, object]:
    """Best wall time (s) of ``fn()`` over up to ``repeats`` runs after one warm-up run (fewer
    once :data:`REPEAT_BUDGET_S` seconds are spent, at least one), the number of timed runs and
    the last run's result. A run's result is released before the next starts, so peak memory
    is that of one run."""
    result = fn()
    times: list[float] = []
    while len(times) < repeats and sum(times) < REPEAT_BUDGET_S:
        result = None
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), len(times), result


def cosine_prune(edge_index: Tensor, x: Tensor, threshold: float = 0.01, chunk: int = 1 << 18) -> Tensor:
    """DeepRobust ``GCNJaccard`` for non-binary features (``dropedge_cosine``), vectorised: drop
    every undirected edge whose endpoints have ``a·b / (‖a‖‖b‖ + 1e-8) < threshold``.

    edge_index: (2, E) both directions; x: (n, d). Similarities are computed once per undirected
    edge, ``chunk`` edges at a time (memory ~ 3 · chunk · d floats). Returns the kept (2, E')
    edges, both directions.
    """
    upper = edge_index[:, edge_index[0] < edge_index[1]]
    norm = x.norm(dim=1)
    keep = torch.empty(upper.shape[1], dtype=torch.bool)
    for s in range(0, upper.shape[1], chunk):
        a, b = upper[0, s:s + chunk], upper[1, s:s + chunk]
        keep[s:s + chunk] = (x[a] * x[b]).sum(1) / (norm[a] * norm[b] + 1e-8) >= threshold
    kept = upper[:, keep]
    return torch.cat([kept, kept.flip(0)], dim=1)


def measure(method: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one measurement in this (fresh) process and return its record."""
    graph_file, scores_file = workdir / f"graph_{args.nodes}.pt", workdir / f"kc_{args.nodes}.pt"
    if method == "graph":
        seconds, runs, data = best_time(lambda: sbm_graph(**graph_config(args, args.nodes)), args.repeats)
        record = {"time_s": seconds, "runs": runs, "peak_rss_gb": peak_rss_gb(),
                  "undirected_edges": data.num_edges // 2, "labelled": int(data.train_mask.sum())}
        torch.save({k: data[k] for k in ("x", "y", "edge_index", "train_mask")}, graph_file)
        return record
    g = torch.load(graph_file, weights_only=True)
    x, y, edge_index, train_mask = g["x"], g["y"], g["edge_index"], g["train_mask"]
    if method == "baseline":
        return {"peak_rss_gb": peak_rss_gb()}
    if method == "kc":
        seconds, runs, scores = best_time(lambda: kces.kc_scores(edge_index, x, y, train_mask), args.repeats)
        record = {"time_s": seconds, "runs": runs, "peak_rss_gb": peak_rss_gb()}
        torch.save(scores, scores_file)
        return record
    if method == "gcn":
        torch.manual_seed(0)
        model = GCN(x.shape[1], args.hidden, num_layers=2, out_channels=int(y.max()) + 1, dropout=0.5)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x, edge_index)[train_mask], y[train_mask]).backward()

        seconds, runs, _ = best_time(step, args.repeats)
        return {"time_s": seconds, "runs": runs, "peak_rss_gb": peak_rss_gb()}
    if method == "jaccard":
        seconds, runs, kept = best_time(lambda: cosine_prune(edge_index, x), args.repeats)
        return {"time_s": seconds, "runs": runs, "peak_rss_gb": peak_rss_gb(),
                "pruned_undirected": (edge_index.shape[1] - kept.shape[1]) // 2}
    if method == "dense":
        return dense_reference(x, y, edge_index, train_mask, args, scores_file)
    if method == "distributed":
        return distributed_check(graph_file, scores_file, args, workdir)
    raise ValueError(f"unknown method {method!r}")


def dense_reference(x, y, edge_index, train_mask, args, scores_file: Path) -> dict:
    """The exact dense dual form (|S|×|S| Gram), timed; its max |Δ| from the default scores."""
    labelled = int(train_mask.sum())
    if labelled > args.dense_max_labelled:
        return {"skipped": f"|S| = {labelled} > --dense-max-labelled {args.dense_max_labelled}"}
    seconds, runs, reference = best_time(lambda: kces.kc_scores(edge_index, x, y, train_mask,
                                                                complexity=dict(form="dual")),
                                         args.repeats)
    record = {"time_s": seconds, "runs": runs, "peak_rss_gb": peak_rss_gb()}
    if scores_file.exists():
        reference, default = reference.double(), torch.load(scores_file, weights_only=True).double()
        record["max_abs_diff"] = (reference - default).abs().max().item()
        record["max_abs_score"] = reference.abs().max().item()
    return record


# --- 2-process gloo run of kces.distributed ------------------------------------------------

def distributed_check(graph_file: Path, scores_file: Path, args: argparse.Namespace, workdir: Path) -> dict:
    """2-process gloo run of ``kces.distributed.kc_scores`` against the 1-process scores.

    Every rank passes the whole graph and gets the (E,) scores of all columns back. Records
    rank 0's wall time, each rank's peak RSS and the max |Δ| from the single-process default
    call (the primal form, as the distributed one).
    """
    import torch.multiprocessing as mp

    mp.spawn(_distributed_rank, args=(graph_file, workdir, max(1, args.threads // 2)), nprocs=2, join=True)
    ranks = [json.loads((workdir / f"rank{r}.json").read_text()) for r in range(2)]
    scores = torch.load(workdir / "distributed_scores.pt", weights_only=True).double()
    single = (torch.load(scores_file, weights_only=True) if scores_file.exists()
              else _single_process_scores(graph_file)).double()
    return {"status": "ok", "processes": 2, "threads_per_process": max(1, args.threads // 2),
            "time_s": ranks[0]["time_s"], "peak_rss_gb": [r["peak_rss_gb"] for r in ranks],
            "max_abs_diff": (scores - single).abs().max().item(), "max_abs_score": single.abs().max().item()}


def _single_process_scores(graph_file: Path) -> Tensor:
    g = torch.load(graph_file, weights_only=True)
    return kces.kc_scores(g["edge_index"], g["x"], g["y"], g["train_mask"])


def _distributed_rank(rank: int, graph_file: Path, workdir: Path, threads: int) -> None:
    import torch.distributed as dist

    from kces import distributed

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{workdir / 'gloo_init'}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=300))
    try:
        g = torch.load(graph_file, weights_only=True)
        dist.barrier()
        start = time.perf_counter()
        scores = distributed.kc_scores(g["edge_index"], g["x"], g["y"], g["train_mask"])
        dist.barrier()
        seconds = time.perf_counter() - start
        if rank == 0:
            torch.save(scores, workdir / "distributed_scores.pt")
        (workdir / f"rank{rank}.json").write_text(json.dumps({"time_s": seconds, "peak_rss_gb": peak_rss_gb()}))
    finally:
        dist.destroy_process_group()


# --- driver ----------------------------------------------------------------------------------

def run_one(method: str, nodes: int, args: argparse.Namespace, workdir: Path) -> dict:
    """``measure`` in a fresh subprocess; a failure or timeout becomes ``{"error": ...}``."""
    cmd = [sys.executable, __file__, "--one", method, "--nodes", str(nodes), "--workdir", str(workdir),
           "--threads", str(args.threads), "--feature-dim", str(args.feature_dim), "--hidden", str(args.hidden),
           "--repeats", str(args.repeats), "--memory-limit", str(args.memory_limit),
           "--dense-max-labelled", str(args.dense_max_labelled)]
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s", "load_1min": load}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1][:300], "load_1min": load}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_1min": load}


def run_size(nodes: int, args: argparse.Namespace) -> dict:
    row: dict = {"nodes": nodes}
    with tempfile.TemporaryDirectory(prefix="kces_scaling_") as tmp:
        for method in ("graph", "baseline", *[m for m in METHODS[2:] if m in args.methods]):
            if method == "distributed" and nodes != args.distributed_nodes:
                continue
            row[method] = run_one(method, nodes, args, Path(tmp))
            print(f"  {nodes:>9,} {method:<12} {json.dumps(row[method])}", flush=True)
            if method == "graph":
                if "error" in row["graph"]:
                    return row
                row.update(undirected_edges=row["graph"].pop("undirected_edges"),
                           labelled=row["graph"].pop("labelled"))
    for other in ("gcn", "jaccard"):
        if "time_s" in row.get("kc", {}) and "time_s" in row.get(other, {}):
            row[f"kc_over_{other}"] = row["kc"]["time_s"] / row[other]["time_s"]
    return row


def cell(record: dict | None) -> str:
    """'time s / peak GB', 'peak GB', or why there is no number."""
    if not record:
        return "–"
    if "time_s" in record:
        return f"{record['time_s']:.3g} s / {record['peak_rss_gb']:.2f} GB"
    if "peak_rss_gb" in record:
        return f"{record['peak_rss_gb']:.2f} GB"
    if "error" in record:
        return f"failed: {record['error']}"
    return (record.get("skipped") or record["status"]).replace("|", "\\|")  # a pipe would split the cell


def report(result: dict) -> str:
    """Markdown: settings, machine and load, then one row per size (time / absolute peak RSS)."""
    m = result["machine"]
    lines = [
        "# Scaling: KC scoring vs GCN forward+backward vs Jaccard pruning",
        "",
        f"`python benchmarks/scaling.py {result['argv']}` — {result['date']}; {m['cpu']}, {m['threads']} of "
        f"{m['cores']} cores, torch {m['torch']}; 1-min load average {m['load'][0]:.2f}–{m['load'][1]:.2f} "
        "at the start of the measurements (the machine is shared: timings are noisy).",
        "",
        f"SBM graphs (`kces.experiments.synthetic.sbm_graph`): 4 classes, average degree 10, homophily 0.8, "
        f"d = {result['feature_dim']}, 10% labelled (|S|), seed 0. GCN hidden {result['hidden']}. "
        "Cells: best time of up to "
        f"{result['repeats']} runs after a warm-up / absolute peak RSS of the process that ran it "
        "(Python + torch + imports included; 'graph held' is a process that only loads the graph).",
        "",
        "| nodes | undirected edges | \\|S\\| | " + " | ".join(LABELS.values())
        + " | max \\|Δ\\| dense vs default (relative) | KC / GCN | KC / Jaccard |",
        "|" + "---|" * (len(LABELS) + 6),
    ]
    for row in result["rows"]:
        dense = row.get("dense", {})
        diff = dense["max_abs_diff"] / dense["max_abs_score"] if "max_abs_diff" in dense else None
        lines.append("| " + " | ".join([
            f"{row['nodes']:,}", f"{row.get('undirected_edges', 0):,}", f"{row.get('labelled', 0):,}",
            *[cell(row.get(key)) for key in LABELS],
            "–" if diff is None else f"{diff:.2e}",
            *[f"{row[k]:.2f}×" if k in row else "–" for k in ("kc_over_gcn", "kc_over_jaccard")]]) + " |")
    dist = result.get("distributed")
    lines.append("")
    if dist:
        peaks = ", ".join(f"{p:.2f}" for p in dist["peak_rss_gb"])
        text = (f"{dist['time_s']:.3g} s, peak RSS per process {peaks} GB, "
                f"max |Δ| from 1 process {dist['max_abs_diff']:.2e} (max |score| {dist['max_abs_score']:.2e})"
                if dist.get("status") == "ok" else cell(dist))
        lines.append(f"2-process gloo run (`kces.distributed`) at {result['distributed_nodes']:,} nodes: {text}.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Log-log time and peak RSS against nodes, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for colour, (key, label) in enumerate(LABELS.items()):
        for ax, field in ((ax_t, "time_s"), (ax_m, "peak_rss_gb")):
            points = [(r["nodes"], r[key][field]) for r in result["rows"] if field in r.get(key, {})]
            if points:
                ax.loglog(*zip(*points), marker="o", color=f"C{colour}", label=label)
    ax_t.set(xlabel="nodes", ylabel="time (s)", title="time (best of runs)")
    ax_m.set(xlabel="nodes", ylabel="peak RSS (GB)", title="peak RSS of the process")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"SBM, average degree 10, d = {result['feature_dim']}, 10% labelled; "
                 f"{result['machine']['threads']} CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS[2:]), choices=METHODS[2:],
                        help="what to measure besides graph generation and the baseline")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--feature-dim", type=int, default=64, help="d (64 or 128 in the issue)")
    parser.add_argument("--hidden", type=int, default=16, help="GCN hidden width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit", type=float, default=10.0, help="address-space limit per process, GB")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement process")
    parser.add_argument("--dense-max-labelled", type=int, default=20_000,
                        help="run the dense reference only up to this |S| (its Gram is |S|² · 8 bytes)")
    parser.add_argument("--distributed-nodes", type=int, default=100_000)
    parser.add_argument("--report", action="store_true", help="only redraw scaling.md/.png from scaling.json")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        limit = int(args.memory_limit * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one, args, args.workdir)))
        return

    if args.report:
        write_report(json.loads((RESULTS / "scaling.json").read_text()))
        return
    print(f"threads {args.threads}, d {args.feature_dim}, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = [run_size(n, args) for n in args.sizes]
    loads = [r[k]["load_1min"] for r in rows for k in METHODS if isinstance(r.get(k), dict)]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "argv": " ".join(sys.argv[1:]),
        "feature_dim": args.feature_dim, "hidden": args.hidden, "repeats": args.repeats,
        "distributed_nodes": args.distributed_nodes,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                    "load": [min(loads), max(loads)]},
        "rows": rows,
        "distributed": next((r["distributed"] for r in rows if "distributed" in r), None),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=1) + "\n")
    write_report(result)


def write_report(result: dict) -> None:
    text = report(result)
    (RESULTS / "scaling.md").write_text(text)
    plot(result, RESULTS / "scaling.png")
    print(text)


if __name__ == "__main__":
    main()
