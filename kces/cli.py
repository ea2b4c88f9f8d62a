"""The ``kces`` command line (also ``python -m kces``): ``demo``, ``sanitize``, ``bench``, ``report``.

Every bad argument or unreadable input ends with one line ``kces <command>: error: ...`` on
stderr and exit status 2, before any output file or directory is created. ``kces bench``
exits with 1 when some cells failed (they are recorded in ``results.jsonl``), 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from .errors import InputError, InputTypeError
from .experiments.names import ATTACKS, DATASETS, DEFENCES, MODELS, OPTIMIZERS, SVD_RANK

if TYPE_CHECKING:
    from torch_geometric.data import Data

    from .options import Anchoring, Complexity, Pruning

BENCH_EXAMPLE = """example (the Metattack part of the committed benchmarks/results/robustness, which
benchmarks/robustness.py runs together with Nettack and DICE):
  kces bench --datasets cora,citeseer,polblogs --attacks meta --rates 0,0.05,0.1,0.15,0.2,0.25 \\
             --defences none,jaccard,svd,kces,kces+jaccard --models gcn --optimizers adam \\
             --seeds 5 --out results
  kces report results"""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``<prog>: error: <message>`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def _names(text: str) -> list[str]:
    """A comma-separated list, stripped, without empty items or repeats (order kept)."""
    return list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def _numbers(text: str) -> list[float]:
    try:
        return list(dict.fromkeys(float(item) for item in _names(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_sanitize(commands: argparse._SubParsersAction) -> ArgumentParser:
    cmd = commands.add_parser("sanitize", help="prune suspicious edges of a graph file with KCES",
                              description="KCES on a Nettack-layout .npz (adj_*, optional attr_*, labels, optional "
                              "idx_train) or a PyG Data saved with torch.save (.pt, needs y; train_mask optional). "
                              "OUTPUT has the input's format, every other array or attribute kept.")
    cmd.add_argument("input", type=Path, metavar="INPUT", help=".npz or .pt graph")
    cmd.add_argument("output", type=Path, metavar="OUTPUT", help="where to write the sanitized graph (same suffix)")
    cmd.add_argument("--ratio", type=float,
                     help="prune exactly this share of the edges, the most suspicious first "
                     "(default: the measured rule)")
    cmd.add_argument("--unlabelled-weight", type=float,
                     help="the weight kept by an edge between two unlabelled nodes whose graph-free labels disagree: "
                     "1 leaves them (a 0/1 graph stays 0/1), 0 prunes them (default: 0.25)")
    cmd.add_argument("--feature-neighbours", type=int,
                     help="read the feature labels off features averaged over each node's this many nearest nodes "
                     "by feature cosine; 0 reads its own (default: 20 up to 20,000 nodes, 0 above)")
    cmd.add_argument("--k", type=int, default=1, help="propagation hops of the kernel (default 1)")
    cmd.add_argument("--train-ratio", type=float, default=0.1,
                     help="without idx_train / train_mask: share of labelled nodes drawn as training nodes (0.1)")
    cmd.add_argument("--seed", type=int, default=0, help="seed of that draw (default 0)")
    anchors = cmd.add_argument_group("feature anchors (opt-in; kces.Anchoring)")
    anchors.add_argument("--anchors", action="store_true",
                         help="then join each node's nearest feature neighbours as edges (needs node features)")
    anchors.add_argument("--anchor-k", type=int, help="feature neighbours per node (default 10)")
    anchors.add_argument("--anchor-weight", type=float, help="the anchors' edge weight (default 0.5)")
    cmd.set_defaults(run=_sanitize)
    return cmd


def _add_bench(commands: argparse._SubParsersAction) -> ArgumentParser:
    cmd = commands.add_parser(
        "bench", help="run an attack/defence grid into OUT/results.jsonl (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BENCH_EXAMPLE,
        description="Runs every dataset x attack x rate x seed x defence x model x optimizer cell and appends\n"
        "its result to OUT/results.jsonl as soon as it ends (--resume continues an interrupted run).\n"
        "Rate 0 is the clean graph; accuracy is on the test split (nettack: its target nodes).\n"
        "An adaptive attack (*-adaptive) attacks the defence chain of its cell and is cached per defence.")
    cmd.add_argument("--datasets", type=_names, default=["cora"],
                     help=f"comma-separated: {', '.join(DATASETS)} or paths to .npz files (default cora)")
    cmd.add_argument("--attacks", type=_names, default=["meta"], help=f"{', '.join(ATTACKS)} (default meta)")
    cmd.add_argument("--rates", type=_numbers, default=[0, 0.05, 0.1, 0.15, 0.2, 0.25],
                     help="shares of edges perturbed, in [0, 1] (default 0,0.05,0.1,0.15,0.2,0.25)")
    cmd.add_argument("--nettack-perturbations", type=_numbers, default=[1, 2, 3, 4, 5],
                     help="nettack's rates: perturbations per target node (default 1,2,3,4,5)")
    cmd.add_argument("--defences", type=_names, default=["none", "kces"],
                     help=f"{', '.join(DEFENCES)}, or chains such as kces+jaccard (default none,kces)")
    cmd.add_argument("--models", type=_names, default=["gcn"], help=f"{', '.join(MODELS)} (default gcn)")
    cmd.add_argument("--optimizers", type=_names, default=["adam"], help=f"{', '.join(OPTIMIZERS)} (default adam)")
    cmd.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per cell (default 5)")
    cmd.add_argument("--out", type=Path, required=True, help="output directory")
    cmd.add_argument("--resume", action="store_true",
                     help="continue OUT/results.jsonl: run only the missing and the failed cells")
    cmd.add_argument("--cache", type=Path, help="cache of live attacked graphs (default OUT/cache)")
    cmd.add_argument("--epochs", type=int, help="training epochs of every model (default 200; prognn 400)")
    cmd.add_argument("--svd-rank", type=int, default=SVD_RANK, help=f"rank of the svd defence (default {SVD_RANK})")
    cmd.add_argument("--with-prognn", action="store_true", help="allow the prognn defence (hours per cell on a CPU)")
    cmd.add_argument("--data-root", type=Path,
                     help="benchmark data folder (default: $KCES_DATA, the package's own files, then "
                     "shared/data beside the repository)")
    cmd.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    cmd.set_defaults(run=_bench)
    return cmd


def _add_report(commands: argparse._SubParsersAction) -> ArgumentParser:
    cmd = commands.add_parser("report", help="markdown, CSV and figures from a bench directory",
                              description="Writes DIR/report.md, DIR/accuracy.csv, DIR/time.csv and PNG figures "
                              "from DIR/results.jsonl (the last record of each cell wins).")
    cmd.add_argument("directory", type=Path, metavar="DIR", help="the --out directory of kces bench")
    cmd.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    cmd.set_defaults(run=_report)
    return cmd


def _add_demo(commands: argparse._SubParsersAction) -> ArgumentParser:
    cmd = commands.add_parser("demo", help="Cora under 20%% Metattack: GCN accuracy with and without KCES")
    cmd.add_argument("--seeds", type=int, default=5, help="training seeds (default 5)")
    cmd.set_defaults(run=_demo)
    return cmd


def _demo(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    if args.seeds < 1:
        fail("--seeds must be >= 1")
    from .experiments.demo import run_demo

    run_demo(args.seeds)
    return 0


def _sanitize(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    suffix = args.input.suffix
    if suffix not in (".npz", ".pt"):
        fail(f"INPUT must be a .npz or .pt file, got {args.input}")
    if args.output.suffix != suffix:
        fail(f"OUTPUT must have the input's format ({suffix}), got {args.output}")
    if not args.input.is_file():
        fail(f"{args.input} does not exist or is not a file")
    if args.output.resolve() == args.input.resolve():
        fail("OUTPUT must differ from INPUT")
    if args.output.is_dir():
        fail(f"OUTPUT {args.output} is a directory; give a file name")
    if not args.output.parent.is_dir():
        fail(f"the directory of OUTPUT, {args.output.parent}, does not exist")
    if not 0 < args.train_ratio <= 1:
        fail(f"--train-ratio must be in (0, 1], got {args.train_ratio}")
    if args.seed < 0:
        fail(f"--seed must be >= 0, got {args.seed}")
    if not args.anchors and (args.anchor_k, args.anchor_weight) != (None, None):
        fail("--anchor-k and --anchor-weight need --anchors")
    from .options import Anchoring, Complexity, Pruning

    auto = {"unlabelled_weight": args.unlabelled_weight, "feature_neighbours": args.feature_neighbours}
    pruning = Pruning(ratio=args.ratio, **{field: "auto" if value is None else value for field, value in auto.items()})
    complexity = Complexity(k=args.k)
    anchoring = None
    if args.anchors:
        given = {"k": args.anchor_k, "weight": args.anchor_weight}
        anchoring = Anchoring(**{field: value for field, value in given.items() if value is not None})
    start = time.perf_counter()
    counts = (sanitize_npz if suffix == ".npz" else sanitize_pt)(
        args.input, args.output, args.seed, args.train_ratio, pruning, complexity, anchoring)
    changes = f"{counts.before - counts.kept} pruned" + (f", {counts.reweighted} re-weighted" if counts.reweighted
                                                         else "")
    if anchoring is not None:
        changes += f", {counts.anchors} anchors added"
    print(f"kces sanitize: {args.input} -> {args.output}: {counts.before} -> {counts.kept + counts.anchors} "
          f"undirected edges ({changes}) in {time.perf_counter() - start:.2f} s")
    return 0


def _bench(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    import torch

    from .experiments.results import RESULTS
    from .experiments.runner import execute, make_plan

    if args.threads < 1:
        fail(f"--threads must be >= 1, got {args.threads}")
    results = args.out / RESULTS
    if args.out.exists() and not args.out.is_dir():
        fail(f"--out {args.out} is not a directory")
    if results.exists() and not args.resume:
        fail(f"{results} already exists: pass --resume to continue it, or choose another --out")
    plan = make_plan(datasets=args.datasets, attacks=args.attacks, rates=args.rates,
                     nettack_perturbations=args.nettack_perturbations, defences=args.defences,
                     models=args.models, optimizers=args.optimizers, seeds=args.seeds, out=args.out,
                     cache=args.cache, epochs=args.epochs, svd_rank=args.svd_rank,
                     with_prognn=args.with_prognn, data_root=args.data_root)
    torch.set_num_threads(args.threads)
    try:
        counts = execute(plan)
    except KeyboardInterrupt:
        print(f"kces bench: interrupted; finished cells are in {results}: rerun with --resume", file=sys.stderr)
        return 130
    print(f"kces bench: {len(plan.cells)} cells: {counts['done before']} done before, {counts['ok']} ok, "
          f"{counts['skipped']} skipped, {counts['error']} failed; results in {results}", file=sys.stderr)
    return 1 if counts["error"] else 0


def _report(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> int:
    from .experiments.report import check_report_dir, write_report

    if not args.directory.is_dir():
        fail(f"{args.directory} is not a directory")
    records = check_report_dir(args.directory, plots=not args.no_plots)
    written = write_report(args.directory, records, plots=not args.no_plots)
    print(f"kces report: wrote {len(written)} files into {args.directory} (see {args.directory / 'report.md'})")
    return 0


class EdgeCounts(NamedTuple):
    """Undirected edges of a ``kces sanitize`` run: of the input, kept by KCES, re-weighted by it,
    and anchors added where there was no edge."""

    before: int
    kept: int
    reweighted: int
    anchors: int


def sanitize_npz(src: Path, dst: Path, seed: int, train_ratio: float, pruning: Pruning,
                 complexity: Complexity, anchoring: Anchoring | None = None) -> EdgeCounts:
    """KCES on a Nettack-layout ``.npz``; writes ``dst`` with every other array kept byte for byte.

    A directed input is scored as its undirected version; a pruned edge {i, j} loses both
    (i, j) and (j, i), a re-weighted one (a rule with an ``unlabelled_weight`` below 1, as the
    default) has both multiplied by the factor; self-loops, weights and
    order of the kept entries stay otherwise. With ``anchoring`` the feature anchors
    (:mod:`kces.anchors`) are then joined to both directions, as :func:`kces.anchor_adj` joins
    them: an entry at an anchor keeps the larger of its weight and the anchor weight, a missing
    one is added (at the end of its row). Without ``idx_train`` a seeded ``train_ratio`` split of
    the labelled nodes is used."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from .adapters import compute_device, edge_difference, sanitize_adj
    from .anchors import feature_anchors
    from .formats import random_split, read_npz, undirected, write_npz_edges

    adj, features, labels, split = read_npz(src)
    graph = undirected(adj)
    joined = None
    if anchoring is not None:  # first: a featureless file is refused before any work
        ends = feature_anchors(torch.from_numpy(features.toarray()), k=anchoring.k,
                               device=compute_device(None)).cpu().numpy()
        joined = sp.csr_matrix((np.full(ends.shape[1], anchoring.weight), (ends[0], ends[1])), shape=graph.shape)
    train = split["idx_train"] if "idx_train" in split else random_split(labels, seed, train_ratio, 0.0)[0]
    sanitized = sp.csr_matrix(sanitize_adj(graph, features, labels, train, pruning=pruning, complexity=complexity))
    pruned = edge_difference(graph, sanitized)
    kept = sanitized.tocoo()
    before = np.asarray(graph[kept.row, kept.col]).ravel()
    changed = ~np.isclose(kept.data, before)
    factors = sp.csr_matrix((kept.data[changed] / before[changed], (kept.row[changed], kept.col[changed])),
                            shape=graph.shape)
    write_npz_edges(src, dst, adj, pruned, factors, joined)
    added = 0 if joined is None else sp.triu(joined, k=1).nnz - sp.triu(joined.multiply(sanitized), k=1).nnz
    reweighted = int(np.count_nonzero(changed & (kept.row < kept.col)))
    return EdgeCounts(graph.nnz // 2, graph.nnz // 2 - len(pruned), reweighted, added)


def sanitize_pt(src: Path, dst: Path, seed: int, train_ratio: float, pruning: Pruning,
                complexity: Complexity, anchoring: Anchoring | None = None) -> EdgeCounts:
    """KCES (the PyG transform) on a saved ``Data``, then with ``anchoring`` :class:`kces.FeatureAnchors`;
    writes ``dst`` with all attributes kept and edge-level ones following the kept edges (an
    input with other edge-level attributes than ``edge_weight`` is refused with anchors: an
    anchor has no value for them). Without ``train_mask`` a seeded ``train_ratio`` split of the
    labelled nodes is used (and not stored)."""
    import torch

    from .anchor_transform import FeatureAnchors
    from .formats import atomic_write, load_pyg, random_split
    from .transform import KCES

    data = load_pyg(src)
    if not isinstance(getattr(data, "y", None), torch.Tensor) or data.y.dim() != 1:
        raise InputError(f"{src}: the Data needs node labels y of shape (num_nodes,)")
    work = data
    if getattr(data, "train_mask", None) is None:
        work = data.clone()
        work.train_mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        work.train_mask[torch.from_numpy(random_split(data.y.numpy(), seed, train_ratio, 0.0)[0])] = True
    out = KCES(pruning, complexity)(work)
    kept = out.edge_index.shape[1] // 2
    counts = EdgeCounts(data.edge_index.shape[1] // 2, kept, _reweighted(data, out), 0)
    if anchoring is not None:
        out = FeatureAnchors(anchoring)(out)
        counts = counts._replace(anchors=out.edge_index.shape[1] // 2 - kept)
    if work is not data:
        del out.train_mask
    atomic_write(dst, lambda f: torch.save(out, f))
    return counts


def _reweighted(data: Data, out: Data) -> int:
    """How many undirected edges of ``out`` (a :class:`~kces.KCES` output of ``data``, whose edges
    are distinct) carry another weight than in ``data`` (1 where it has no ``edge_weight``)."""
    import torch

    if "edge_weight" not in out:
        return 0
    given = data.edge_weight if "edge_weight" in data else torch.ones(data.edge_index.shape[1])
    keys = data.edge_index[0] * data.num_nodes + data.edge_index[1]
    order = torch.argsort(keys)
    kept = out.edge_index[0] * data.num_nodes + out.edge_index[1]
    column = order[torch.searchsorted(keys[order], kept)]  # each kept edge's column in ``data``
    changed = ~torch.isclose(out.edge_weight.float(), given[column].float())
    return int((changed & (out.edge_index[0] < out.edge_index[1])).sum())


def build_parser() -> ArgumentParser:
    """The ``kces`` parser with its four commands."""
    parser = ArgumentParser(prog="kces", description="Kernel-Complexity Edge Sanitization for GNNs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_sanitize, _add_bench, _add_report):
        command = add(commands)
        command.set_defaults(command_parser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, so the message names the command
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with warnings.catch_warnings():  # library warnings (PyG contrib, torch sparse, DeepRobust) are noise here
            warnings.simplefilter("ignore")
            return args.run(args, args.command_parser.error)
    except (InputError, InputTypeError, FileNotFoundError, MemoryError) as error:
        # refused input (kces's own checks), missing data, or the memory guard: a usage error;
        # any other exception is a failure of the work and keeps its traceback
        args.command_parser.error(str(error))
