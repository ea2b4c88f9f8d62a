"""The benchmark's parts: training loop, attacks and their cache, defences, results file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kces.adapters import edge_difference
from kces.experiments import attacks
from kces.experiments.attacks import AttackedGraphs, budget, random_insertion
from kces.experiments.datasets import Dataset, load_dataset
from kces.experiments.defences import apply_edge_stages, parse_defence, skip_reason
from kces.experiments.models import accuracy
from kces.experiments.runner import finished, read_results
from tiny_graphs import write_tiny_npz


@pytest.fixture
def tiny(tmp_path: Path) -> Dataset:
    return load_dataset(str(write_tiny_npz(tmp_path / "tiny.npz")))


def test_tiny_dataset_split(tiny: Dataset) -> None:
    graph = tiny.graph
    assert tiny.name == "tiny" and tiny.key.startswith("tiny-") and not tiny.featureless
    assert (graph.adj != graph.adj.T).nnz == 0 and graph.adj.diagonal().sum() == 0
    idx = np.concatenate([graph.idx_train, graph.idx_val, graph.idx_test])
    assert np.array_equal(np.sort(idx), np.arange(80)) and graph.idx_train.size == graph.idx_val.size == 8


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_is_on_the_test_split_by_default(tiny: Dataset, seed: int) -> None:
    graph = tiny.graph
    default = accuracy(graph, "gcn", "adam", seed, epochs=40)
    assert default == accuracy(graph, "gcn", "adam", seed, graph.idx_test, epochs=40)
    half = accuracy(graph, "gcn", "adam", seed, graph.idx_test[:32], epochs=40)
    other = accuracy(graph, "gcn", "adam", seed, graph.idx_test[32:], epochs=40)
    assert default == pytest.approx((32 * half + (graph.idx_test.size - 32) * other) / graph.idx_test.size)


@pytest.mark.parametrize("model, optimizer", [("gcn", "rmnp"), ("gat", "adam"), ("gat", "spectra")])
def test_other_models_and_optimizers_are_deterministic(tiny: Dataset, model: str, optimizer: str) -> None:
    first = accuracy(tiny.graph, model, optimizer, 3, epochs=15)
    assert 0 <= first <= 1 and accuracy(tiny.graph, model, optimizer, 3, epochs=15) == first


def test_random_insertion(tiny: Dataset) -> None:
    graph = tiny.graph
    adj = random_insertion(graph, 0.1, seed=0, epochs=0)
    inserted = edge_difference(adj, graph.adj)
    assert len(inserted) == budget(graph, 0.1) > 0
    assert edge_difference(graph.adj, adj).size == 0 and (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert (random_insertion(graph, 0.1, seed=0, epochs=0) != adj).nnz == 0
    assert (random_insertion(graph, 0.1, seed=1, epochs=0) != adj).nnz > 0


@pytest.mark.parametrize("attack", ["prbcd", "grbcd"])
def test_rbcd_attack_changes_edges_and_is_cached(tiny: Dataset, tmp_path: Path, monkeypatch, attack: str) -> None:
    calls = []
    original = attacks.LIVE_ATTACKS[attack]
    monkeypatch.setitem(attacks.LIVE_ATTACKS, attack, lambda *args: calls.append(args) or original(*args))
    graphs = AttackedGraphs(tmp_path / "cache", epochs=10)
    attacked = graphs.get(tiny, attack, 0.05, seed=0)
    flips = len(edge_difference(attacked.adj, tiny.graph.adj)) + len(edge_difference(tiny.graph.adj, attacked.adj))
    assert 0 < flips <= budget(tiny.graph, 0.05) and (attacked.adj != attacked.adj.T).nnz == 0
    assert (tmp_path / "cache" / f"{tiny.key}_{attack}_0.05_0.npz").is_file()
    again = AttackedGraphs(tmp_path / "cache", epochs=10).get(tiny, attack, 0.05, seed=0)
    assert len(calls) == 1 and (again.adj != attacked.adj).nnz == 0  # read from the cache, not recomputed
    fresh = AttackedGraphs(tmp_path / "other", epochs=10).get(tiny, attack, 0.05, seed=0)
    assert len(calls) == 2 and (fresh.adj != attacked.adj).nnz == 0  # recomputed: the same graph (seeded)
    assert (again.clean_adj != tiny.graph.adj).nnz == 0 and graphs.get(tiny, attack, 0.0, seed=0) is tiny.graph


def test_parse_defence() -> None:
    assert parse_defence("none") == () and parse_defence("kces+jaccard") == ("kces", "jaccard")
    assert parse_defence("kces+rgcn") == ("kces", "rgcn")
    for bad in ("nope", "kces+kces", "rgcn+kces", "none+kces", ""):
        with pytest.raises(ValueError):
            parse_defence(bad)


def test_skip_reasons(tiny: Dataset, tmp_path: Path) -> None:
    featureless = load_dataset(str(write_tiny_npz(tmp_path / "blogs.npz", features=False)))
    assert featureless.featureless and "features" in skip_reason(("kces", "jaccard"), featureless, "gcn", "adam")
    assert skip_reason(("kces", "jaccard"), tiny, "gat", "muon") is None
    assert skip_reason(("rgcn",), tiny, "gcn", "adam") is None and skip_reason(("rgcn",), tiny, "gat", "adam")
    assert skip_reason(("svd",), tiny, "gcn", "adam") is None and skip_reason(("svd",), tiny, "gcn", "muon")


def test_edge_stages(tiny: Dataset) -> None:
    graph = tiny.graph
    chained = apply_edge_stages(("kces", "jaccard", "svd"), graph, seed=0, svd_rank=5)
    assert chained.pruned.nnz < graph.adj.nnz and set(np.unique(chained.pruned.data)) == {1.0}
    assert np.linalg.matrix_rank(chained.adj.toarray(), tol=1e-4) <= 5 and chained.seconds > 0
    kces_only = apply_edge_stages(("kces",), graph, seed=0)
    assert edge_difference(kces_only.adj, graph.adj).size == 0 and (kces_only.adj is kces_only.pruned or
                                                                     (kces_only.adj != kces_only.pruned).nnz == 0)
    assert apply_edge_stages((), graph, seed=0).pruned is None


def test_read_results_drops_a_cut_last_line(tmp_path: Path) -> None:
    record = {"dataset": "d", "attack": "dice", "rate": 0.1, "defence": "none", "model": "gcn", "optimizer": "adam",
              "seed": 0, "status": "ok"}
    runs = ((0, "ok"), (1, "error"), (0, "error"))
    lines = [json.dumps({**record, "seed": seed, "status": status}) + "\n" for seed, status in runs]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(lines) + lines[0][:30])
    records, end = read_results(path)
    assert len(records) == 3 and end == len("".join(lines).encode())
    assert finished(records) == set()  # seed 0's last record is an error, seed 1 failed: both rerun
    path.write_text(lines[0] + "{broken\n" + lines[1])
    with pytest.raises(ValueError, match="line 2"):
        read_results(path)


def test_adjacency_is_symmetric_after_every_live_attack(tiny: Dataset, tmp_path: Path) -> None:
    graphs = AttackedGraphs(tmp_path / "cache", epochs=5)
    for attack in ("dice", "random"):
        adj = graphs.get(tiny, attack, 0.2, seed=2).adj
        assert isinstance(adj, sp.csr_matrix) and (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0


def test_registries_hold_exactly_the_names_the_grid_accepts() -> None:
    import optim
    from kces.experiments import models, names
    from kces.experiments.defences import KCES_VARIANTS

    assert set(attacks.LIVE_ATTACKS) == set(names.LIVE) and names.ATTACKS == names.PREPERTURBED + names.LIVE
    assert names.EDGE_STAGES == (*KCES_VARIANTS, "jaccard", "svd")
    assert names.OPTIMIZERS == ("adam", *models.SPECTRAL_LR)
    assert set(models.SPECTRAL_LR) - {"spectra"} <= set(optim.OPTIMIZERS)
    for model in names.MODELS:
        models.build_model(model, 4, 2)


def test_the_library_and_the_command_line_parser_import_lightly() -> None:
    """``import kces`` and ``kces --help`` load neither torch nor the harness; the names resolve
    to the functions even after their modules were imported."""
    import subprocess
    import sys

    code = ("import sys, kces, kces.cli; kces.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'networkx', 'kces.experiments.runner') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    code = "import kces.transform, kces; print(callable(kces.sanitize), kces.Pruning.__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == \
        "True Pruning\n"
