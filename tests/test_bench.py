"""The benchmark's parts: training loop, attacks and their cache, defences, results file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kces.bench import attacks
from kces.bench.attacks import AttackedGraphs, budget, random_insertion
from kces.bench.datasets import Dataset, load_dataset
from kces.bench.defenses import apply_edge_stages, parse_defense, skip_reason
from kces.bench.models import accuracy
from kces.bench.runner import finished, read_results
from kces.data import edge_difference
from kces.evaluate import gcn_accuracy
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
def test_gcn_adam_is_gcn_accuracy(tiny: Dataset, seed: int) -> None:
    graph = tiny.graph
    assert accuracy(graph, "gcn", "adam", seed, epochs=40) == gcn_accuracy(graph, seed, epochs=40)
    nodes = graph.idx_test[:20]
    assert accuracy(graph, "gcn", "adam", seed, nodes, epochs=40) == gcn_accuracy(graph, seed, nodes, epochs=40)


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


def test_parse_defense() -> None:
    assert parse_defense("none") == () and parse_defense("kces+jaccard") == ("kces", "jaccard")
    assert parse_defense("kces+rgcn") == ("kces", "rgcn")
    for bad in ("nope", "kces+kces", "rgcn+kces", "none+kces", ""):
        with pytest.raises(ValueError):
            parse_defense(bad)


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
    record = {"dataset": "d", "attack": "dice", "rate": 0.1, "defense": "none", "model": "gcn", "optimizer": "adam",
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
