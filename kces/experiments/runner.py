"""The benchmark grid: every (dataset, attack, rate, defence, model, optimizer, seed) cell run once,
each finished cell appended at once to ``results.jsonl`` (flushed and fsynced), so an
interrupted run loses at most the cell in flight and ``resume`` continues where it stopped.

A record holds the cell's coordinates, ``status`` (``ok``, ``error`` or ``skipped``),
``accuracy`` (in [0, 1], on the test split or Nettack's target nodes), ``defence_time_s``
(the edge stages), ``train_time_s`` (the model, or the model defence), ``pruned`` /
``precision`` / ``recall`` (the last pruning stage's removed edges against the attacker's
insertions; None without a pruning stage or, for precision/recall, without removals or
insertions), ``error`` (one line, ``Type: message``) and ``reason`` (why a cell is skipped).
Every cell seeds Python, NumPy and torch with its seed: results do not depend on the order
or on what ran before.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.utils import from_scipy_sparse_matrix
from tqdm import tqdm

from ..adapters import edge_difference
from ..errors import InputError
from ..formats import atomic_write, reason
from ..functional import kc_scores
from .attacks import AttackedGraphs
from .datasets import Dataset, Graph, load_dataset
from .defences import apply_edge_stages, edge_stages_key, model_defence_accuracy, parse_defence, skip_reason, tell
from .metrics import pruning_quality
from .models import EPOCHS, accuracy, seed_everything
from .names import ADAPTIVE, ATTACKS, MODEL_DEFENCES, MODELS, OPTIMIZERS, PREPERTURBED, SEEDLESS, SVD_RANK
from .report import write_report
from .results import KEY_FIELDS, RESULTS, ResultsLog, finished, read_results



@dataclass(frozen=True)
class Cell:
    """One run: ``rate`` is a share of edges, or perturbations per target for Nettack."""

    dataset: str
    attack: str
    rate: float
    defence: str
    model: str
    optimizer: str
    seed: int

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, field) for field in KEY_FIELDS)


@dataclass(frozen=True)
class Plan:
    """A validated grid: loaded datasets, the cells in run order, where results go."""

    datasets: dict[str, Dataset]
    cells: list[Cell]
    out: Path
    graphs: AttackedGraphs
    epochs: int | None
    svd_rank: int


def _check_names(what: str, names: list[str], allowed: tuple[str, ...]) -> None:
    for name in names:
        if name not in allowed:
            raise InputError(f"unknown {what} {name!r}; expected one of {', '.join(allowed)}")


def _check_defences(defences: list[str], with_prognn: bool) -> set[str]:
    """Parse every defence; returns the stages used."""
    used = {stage for name in defences for stage in parse_defence(name)}
    if "prognn" in used and not with_prognn:
        raise InputError("prognn is slow (hours per Cora cell on a CPU): pass --with-prognn to run it")
    if used & set(MODEL_DEFENCES) and importlib.util.find_spec("deeprobust") is None:
        raise InputError("rgcn and prognn need DeepRobust: pip install --no-deps deeprobust==0.2.11 (README)")
    return used


def make_plan(*, datasets: list[str], attacks: list[str], rates: list[float], nettack_perturbations: list[float],
              defences: list[str], models: list[str], optimizers: list[str], seeds: int, out: Path,
              cache: Path | None = None, epochs: int | None = None, svd_rank: int = SVD_RANK,
              with_prognn: bool = False, data_root: str | os.PathLike | None = None) -> Plan:
    """Check every argument and load every input (datasets, pre-perturbed graphs), creating
    nothing; raises ``ValueError``/``FileNotFoundError`` naming the first problem.

    Cells: datasets × attacks × rates (Nettack: ``nettack_perturbations``) × seeds
    ``0..seeds-1`` × defences × models × optimizers, in that nesting. ``epochs``: training
    epochs of every model (None: 200, ProGNN 400). Live attacks are cached under ``cache``
    (default ``out/cache``)."""
    lists = {"datasets": datasets, "attacks": attacks, "defences": defences, "models": models,
             "optimizers": optimizers, "rates": rates, "nettack perturbations": nettack_perturbations}
    for what, values in lists.items():
        if not values:
            raise InputError(f"no {what} given")
    _check_names("attack", attacks, ATTACKS)
    used = _check_defences(defences, with_prognn)
    _check_names("model", models, MODELS)
    _check_names("optimizer", optimizers, OPTIMIZERS)
    for rate in rates:
        if not 0 <= rate <= 1:
            raise InputError(f"rate {rate:g} is outside [0, 1]")
    for count in nettack_perturbations:
        if not 0 <= count < math.inf:
            raise InputError(f"nettack perturbations per target must be >= 0, got {count:g}")
    for name, value in (("seeds", seeds), ("epochs", epochs), ("svd rank", svd_rank)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    loaded: dict[str, Dataset] = {}
    for spec in datasets:
        dataset = load_dataset(spec, data_root)
        if dataset.name in loaded:
            raise InputError(f"two datasets are named {dataset.name!r}")
        if "svd" in used and svd_rank >= dataset.graph.num_nodes - 1:
            raise InputError(f"svd rank {svd_rank} needs more than {svd_rank + 1} nodes; {dataset.name} has "
                             f"{dataset.graph.num_nodes}")
        loaded[dataset.name] = dataset
    graphs = AttackedGraphs(cache if cache is not None else out / "cache", epochs or EPOCHS, data_root)
    grid = [(attack, nettack_perturbations if attack == "nettack" else rates) for attack in attacks]
    for dataset in loaded.values():
        for attack, attack_rates in grid:
            for rate in attack_rates if attack in PREPERTURBED else ():
                graphs.get(dataset, attack, rate, seed=0)
    cells = [Cell(name, attack, rate, defence, model, optimizer, seed)
             for name in loaded for attack, attack_rates in grid for rate in attack_rates for seed in range(seeds)
             for defence in defences for model in models for optimizer in optimizers]
    return Plan(datasets=loaded, cells=cells, out=out, graphs=graphs, epochs=epochs, svd_rank=svd_rank)


def scores_path(plan: Plan, dataset: Dataset, cell: Cell, attacked: str) -> Path:
    """``<out>/scores/<graph key>.npz`` (the seed only in live attacks' keys; ``attacked``, the
    :func:`~.defences.edge_stages_key` of the cell's defence, only in adaptive ones')."""
    key = plan.graphs.key(dataset, cell.attack, cell.rate, cell.seed, attacked)
    return plan.out / "scores" / f"{key}.npz"


def save_scores(path: Path, graph: Graph, cell: Cell) -> None:
    """KC score of every undirected edge of the attacked ``graph`` (the inputs KCES sees), with
    whether the attacker inserted it: arrays ``pairs`` (m, 2) int64, ``score`` (m,) float32,
    ``adversarial`` (m,) bool, and ``dataset``/``attack``/``rate``/``seed`` scalars."""
    edge_index = from_scipy_sparse_matrix(graph.adj)[0]
    scores = kc_scores(edge_index, torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels),
                       torch.from_numpy(graph.idx_train), num_nodes=graph.num_nodes).cpu().numpy()
    upper = (edge_index[0] < edge_index[1]).numpy()
    pairs = edge_index[:, upper].T.numpy()
    inserted = edge_difference(graph.adj, graph.clean_adj)
    n = graph.num_nodes
    adversarial = np.isin(pairs[:, 0] * n + pairs[:, 1], inserted[:, 0] * n + inserted[:, 1])
    arrays = dict(pairs=pairs, score=scores[upper].astype(np.float32), adversarial=adversarial,
                  dataset=np.array(cell.dataset), attack=np.array(cell.attack), rate=np.array(cell.rate),
                  seed=np.array(cell.seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def blank_record(cell: Cell, status: str) -> dict[str, Any]:
    """A record of ``cell`` with every field, the measured ones None."""
    return {**asdict(cell), "status": status, "accuracy": None, "defence_time_s": None, "train_time_s": None,
            "pruned": None, "precision": None, "recall": None, "error": None, "reason": None}


def run_cell(plan: Plan, cell: Cell) -> dict[str, Any]:
    """Run one cell and return its record (raises on failure)."""
    dataset = plan.datasets[cell.dataset]
    stages = parse_defence(cell.defence)
    record = blank_record(cell, "ok")
    record["reason"] = skip_reason(stages, dataset, cell.model, cell.optimizer)
    if record["reason"]:
        return {**record, "status": "skipped"}
    seed_everything(cell.seed)

    attacked = edge_stages_key(stages, plan.svd_rank)
    told = None  # what the adaptive attacker is told, only when it attacks (not when its graph is cached)
    if cell.attack in ADAPTIVE and not plan.graphs.path(dataset, cell.attack, cell.rate, cell.seed, attacked).is_file():
        told = tell(stages, dataset.graph, 0 if cell.attack in SEEDLESS else cell.seed, plan.svd_rank)
    graph = plan.graphs.get(dataset, cell.attack, cell.rate, cell.seed, attacked, told)
    nodes = graph.target_nodes if cell.attack == "nettack" else graph.idx_test
    defended = apply_edge_stages(stages, graph, cell.seed, plan.svd_rank)
    record["defence_time_s"] = defended.seconds
    if defended.pruned is not None:
        quality = pruning_quality(graph, defended.pruned)
        record.update({key: quality[key] for key in ("pruned", "precision", "recall")})
    scores = scores_path(plan, dataset, cell, attacked)
    if stages[:1] == ("kces",) and cell.rate > 0 and not scores.is_file():
        save_scores(scores, graph, cell)
    trained = graph.with_adj(defended.adj)
    start = time.perf_counter()
    if stages and stages[-1] in MODEL_DEFENCES:
        record["accuracy"] = model_defence_accuracy(stages[-1], trained, cell.seed, nodes, plan.epochs)
    else:
        record["accuracy"] = accuracy(trained, cell.model, cell.optimizer, cell.seed, nodes, plan.epochs or EPOCHS)
    record["train_time_s"] = time.perf_counter() - start
    return record


def run(plan: Plan, done: set[tuple], log: ResultsLog) -> dict[str, int]:
    """Run the cells of ``plan`` not in ``done`` with a progress bar on stderr; returns the
    number of cells per status. A failing cell is recorded and the run goes on."""
    todo = [cell for cell in plan.cells if cell.key not in done]
    counts = {"ok": 0, "skipped": 0, "error": 0, "done before": len(plan.cells) - len(todo)}
    with tqdm(todo, desc="kces bench", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:
        for cell in bar:
            bar.set_postfix_str(f"{cell.dataset} {cell.attack} {cell.rate:g} {cell.defence} {cell.model} "
                                f"{cell.optimizer} seed {cell.seed}", refresh=False)
            try:
                record = run_cell(plan, cell)
            except Exception as error:  # a failing cell is recorded and the run continues
                record = {**blank_record(cell, "error"), "error": reason(error)}
            log.append(record)
            counts[record["status"]] += 1
    return counts


def execute(plan: Plan) -> dict[str, int]:
    """Run ``plan`` into ``plan.out/results.jsonl``, continuing the cells it already holds (a
    part-written last line is dropped); returns the number of cells per status. An interrupt
    leaves every finished cell on disk."""
    results = plan.out / RESULTS
    records, keep = read_results(results) if results.exists() else ([], None)
    plan.out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(results, keep)
    try:
        return run(plan, finished(records), log)
    finally:
        log.close()


def run_grids(out: Path, grids: list[dict[str, Any]], plots: bool = False, **common: Any) -> int:
    """Run several grids (each :func:`make_plan`'s arguments, with ``common``) into one ``out``
    directory, then write its report (with figures if ``plots``); the exit status of ``kces
    bench``. The grids share one results file, so a rerun continues where an interrupted one
    stopped, and cells added to a grid are run alone."""
    failed = 0
    for grid in grids:
        counts = execute(make_plan(out=out, **common, **grid))
        failed += counts["error"]
        print(f"{out}: " + ", ".join(f"{count} {status}" for status, count in counts.items()), file=sys.stderr)
    write_report(out, read_results(out / RESULTS)[0], plots=plots)
    return 1 if failed else 0
