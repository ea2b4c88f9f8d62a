"""The benchmark's parts: training loop, attacks and their cache, defences, results file."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from kces.adapters import edge_difference
from kces.experiments import attacks
from kces.experiments.attacks import AttackedGraphs, Told, budget, random_insertion
from kces.experiments.datasets import Dataset, Graph, load_dataset
from kces.experiments.defences import apply_edge_stages, parse_defence, skip_reason
from kces.experiments.models import accuracy
from kces.experiments.results import finished, read_results
from tiny_graphs import write_tiny_npz


@pytest.fixture
def tiny(tmp_path: Path) -> Dataset:
    return load_dataset(str(write_tiny_npz(tmp_path / "tiny.npz")))


def flipped(adj: sp.spmatrix, base: sp.spmatrix) -> np.ndarray:
    """(k, 2) the pairs ``adj`` inserts into ``base``, then those it deletes."""
    return np.concatenate([edge_difference(adj, base), edge_difference(base, adj)])


def test_tiny_dataset_split(tiny: Dataset) -> None:
    graph = tiny.graph
    assert tiny.name == "tiny" and tiny.key.startswith("tiny-") and not tiny.featureless
    assert (graph.adj != graph.adj.T).nnz == 0 and graph.adj.diagonal().sum() == 0
    idx = np.concatenate([graph.idx_train, graph.idx_val, graph.idx_test])
    assert np.array_equal(np.sort(idx), np.arange(80)) and graph.idx_train.size == graph.idx_val.size == 8
    assert np.array_equal(np.flatnonzero(graph.train_mask), np.sort(graph.idx_train))


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
    flips = len(flipped(attacked.adj, tiny.graph.adj))
    assert 0 < flips <= budget(tiny.graph, 0.05) and (attacked.adj != attacked.adj.T).nnz == 0
    assert (tmp_path / "cache" / f"{tiny.key}_{attack}_v1_0.05_0.npz").is_file()
    again = AttackedGraphs(tmp_path / "cache", epochs=10).get(tiny, attack, 0.05, seed=0)
    assert len(calls) == 1 and (again.adj != attacked.adj).nnz == 0  # read from the cache, not recomputed
    fresh = AttackedGraphs(tmp_path / "other", epochs=10).get(tiny, attack, 0.05, seed=0)
    assert len(calls) == 2 and (fresh.adj != attacked.adj).nnz == 0  # recomputed: the same graph (seeded)
    assert (again.clean_adj != tiny.graph.adj).nnz == 0 and graphs.get(tiny, attack, 0.0, seed=0) is tiny.graph


def test_parse_defence() -> None:
    assert parse_defence("none") == () and parse_defence("kces+jaccard") == ("kces", "jaccard")
    assert parse_defence("kces+rgcn") == ("kces", "rgcn")
    assert parse_defence("kces+anchor") == ("kces", "anchor") and parse_defence("kces+anchor+rgcn")[-1] == "rgcn"
    for bad in ("nope", "kces+kces", "rgcn+kces", "none+kces", "", "anchor+kces", "kces+anchor+jaccard"):
        with pytest.raises(ValueError):
            parse_defence(bad)


def test_skip_reasons(tiny: Dataset, tmp_path: Path) -> None:
    featureless = load_dataset(str(write_tiny_npz(tmp_path / "blogs.npz", features=False)))
    assert featureless.featureless and "features" in skip_reason(("kces", "jaccard"), featureless, "gcn", "adam")
    assert "anchor needs node features" in skip_reason(("kces", "anchor"), featureless, "gcn", "adam")
    assert skip_reason(("kces", "anchor"), tiny, "gcn", "adam") is None
    assert skip_reason(("kces", "jaccard"), tiny, "gat", "muon") is None
    assert skip_reason(("rgcn",), tiny, "gcn", "adam") is None and skip_reason(("rgcn",), tiny, "gat", "adam")
    assert skip_reason(("svd",), tiny, "gcn", "adam") is None and skip_reason(("svd",), tiny, "gcn", "muon")


def test_edge_stages(tiny: Dataset) -> None:
    graph = tiny.graph
    chained = apply_edge_stages(("kces", "jaccard", "svd"), graph, seed=0, svd_rank=5)
    # the default's weights (a quarter on the edges between unlabelled nodes it flags), after Jaccard's pruning
    assert chained.pruned.nnz < graph.adj.nnz and set(np.unique(chained.pruned.data)) == {0.25, 1.0}
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

    assert set(attacks.LIVE_ATTACKS) == set(names.LIVE) and set(attacks.ADAPTIVE_ATTACKS) == set(names.ADAPTIVE)
    assert names.ATTACKS == names.PREPERTURBED + names.LIVE + names.ADAPTIVE
    assert all(names.ADAPTIVE_OF[name] in names.LIVE for name in names.ADAPTIVE)
    assert names.EDGE_STAGES == (*KCES_VARIANTS, "jaccard", "svd", "anchor")
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


def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path: Path) -> None:
    """``benchmarks/gpu.py`` is the one script a lent GPU runs; the same code runs here at toy sizes."""
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "benchmarks" / "gpu.py"), "--device", "cpu", "--sizes", "1500",
                    "--shapes", "32", "--repeats", "1", "--output", str(out)], check=True, capture_output=True,
                   timeout=300)
    result = json.loads(out.read_text())
    (graph,) = result["graphs"]
    assert "error" not in graph and graph["kc_scores"]["time_s"] > 0 and graph["undirected_edges"] == 7500
    (step,) = result["optimizers"]
    assert step["shape"] == [32, 32] and all(step[name] > 0 for name in ("Muon", "HTMuon", "torch.optim.Muon"))


def test_the_readme_tables_are_the_records() -> None:
    """Every table ``benchmarks/readme_tables.py`` makes from the committed records is in the README
    as it prints it: a record changed without the README (or the reverse) fails here."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    printed = subprocess.run([sys.executable, str(root / "benchmarks" / "readme_tables.py")], check=True,
                             capture_output=True, text=True, timeout=300).stdout
    tables = [block.split(" -->\n", 1) for block in printed.split("<!-- ")[1:]]
    assert [name for name, _ in tables] == ["published", "metaself", "trainlink", "votelink", "prbcd", "hubs",
                                            "worst", "ablation"]
    readme = (root / "README.md").read_text()
    assert "| **KCES (default)** | 79.1 / 72.8 (−6.3) |" in printed  # the default under (adaptive) Meta-Self, Cora
    for name, table in tables:
        assert table.strip() in readme, name


def _surrogate_loss(graph, adj) -> float:
    """Cross-entropy on the training nodes of a GCN trained on the clean graph, propagated over ``adj``."""
    import torch.nn.functional as F

    from kces.experiments.models import graph_tensors, normalized_adjacency, seed_everything, train_gcn

    seed_everything(0)
    model, x, _ = train_gcn(graph, epochs=60)
    _, y, train, _ = graph_tensors(graph)
    with torch.no_grad():
        return float(F.nll_loss(model(x, normalized_adjacency(adj))[train], y[train]))


@pytest.mark.parametrize("adaptive", [False, True])
def test_training_node_insertions(tiny: Dataset, adaptive: bool) -> None:
    """Budget spent exactly, every insertion from a training node to another class, seeded,
    the input untouched, and the surrogate's loss raised; the adaptive version queries the
    defence and keeps what survives it."""
    from kces.experiments.attacks import train_links
    from kces.experiments.defences import apply_edge_stages

    graph = tiny.graph
    before = graph.adj.copy()
    queries = []

    def defend(adj):
        queries.append(adj.nnz)
        # the neighbourhood rule: on this tiny graph the default prunes every such insertion, adaptive or not
        return apply_edge_stages(("kces-nbr",), graph.with_adj(adj), seed=0).adj

    attack = (lambda seed: train_links(graph, 0.1, seed, defend)) if adaptive else \
        (lambda seed: train_links(graph, 0.1, seed))
    adj = attack(0)
    assert (graph.adj != before).nnz == 0
    inserted = edge_difference(adj, graph.adj)
    assert len(inserted) == budget(graph, 0.1) > 0 and edge_difference(graph.adj, adj).size == 0
    train = set(graph.idx_train.tolist())
    assert all((u in train or v in train) and graph.labels[u] != graph.labels[v] for u, v in inserted)
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert (attack(0) != adj).nnz == 0 and (attack(1) != adj).nnz > 0
    assert _surrogate_loss(graph, adj) > _surrogate_loss(graph, graph.adj)
    if adaptive:
        from kces.experiments.attacks import ADAPTIVE_ROUNDS

        assert len(queries) == 3 * (ADAPTIVE_ROUNDS - 1)  # three attacks above, each queried every round but the last
        survived = lambda a: len(edge_difference(defend(a), graph.adj))  # noqa: E731
        assert survived(adj) > survived(train_links(graph, 0.1, 0))


def test_training_node_insertions_to_hubs(tiny: Dataset) -> None:
    """Budget spent exactly, every insertion from a training node to another class, each
    training node's targets the best-connected nodes of other classes in turn, deterministic,
    the input untouched, and the surrogate's loss raised."""
    from kces.experiments.attacks import train_hubs

    graph = tiny.graph
    before = graph.adj.copy()
    adj = train_hubs(graph, 0.1, 0, 0)
    assert (graph.adj != before).nnz == 0 and (train_hubs(graph, 0.1, 1, 0) != adj).nnz == 0
    inserted = edge_difference(adj, graph.adj)
    assert len(inserted) == budget(graph, 0.1) > len(graph.idx_train) and edge_difference(graph.adj, adj).size == 0
    degree = np.asarray((graph.adj != 0).sum(1)).ravel()
    labels, edges = graph.labels, {tuple(sorted(e)) for e in zip(*graph.adj.nonzero())}
    queues = {u: [v for v in sorted(range(graph.num_nodes), key=lambda v: (-degree[v], v)) if labels[v] != labels[u]]
              for u in graph.idx_train.tolist()}
    expected = set()
    while len(expected) < len(inserted):  # a loop reference: turns in index order, next unlinked hub
        for u, queue in queues.items():
            while queue and len(expected) < len(inserted):
                pair = tuple(sorted((u, queue.pop(0))))
                if pair not in edges:
                    edges.add(pair)
                    expected.add(pair)
                    break
    assert {tuple(sorted(e)) for e in inserted.tolist()} == expected
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert _surrogate_loss(graph, adj) > _surrogate_loss(graph, graph.adj)


@pytest.mark.parametrize("evade", ["cap", "pad"])
@pytest.mark.parametrize("rate", [0.05, 1.0])
def test_hub_insertions_evading_the_excess_check(tiny: Dataset, rate: float, evade: str) -> None:
    """Budget spent exactly and deterministically, the input untouched, every insertion between
    two classes; KCES's training-neighbour excess check flags none of them. ``cap`` only inserts
    at training nodes until the bound is reached everywhere (rate 1), then links unlabelled nodes;
    ``pad`` also links unlabelled nodes (to make room at a hub) from the start."""
    from kces.experiments.attacks import train_hubs
    from kces.labels import training_neighbour_excess

    graph = tiny.graph
    before = graph.adj.copy()
    adj = train_hubs(graph, rate, 0, 0, evade=evade)
    assert (graph.adj != before).nnz == 0 and (train_hubs(graph, rate, 1, 0, evade=evade) != adj).nnz == 0
    inserted = edge_difference(adj, graph.adj)
    assert len(inserted) == budget(graph, rate) and edge_difference(graph.adj, adj).size == 0
    labels, labelled = graph.labels, np.isin(np.arange(graph.num_nodes), graph.idx_train)
    assert (labels[inserted[:, 0]] != labels[inserted[:, 1]]).all()
    at_training = labelled[inserted].any(1)
    assert at_training.any() and at_training.all() == (evade == "cap" and rate == 0.05)
    upper = sp.triu(adj, k=1).tocoo()
    pairs = torch.from_numpy(np.vstack([upper.row, upper.col]).astype(np.int64))
    flagged = training_neighbour_excess(pairs, torch.from_numpy(labels), torch.from_numpy(graph.idx_train),
                                        int(labels.max()) + 1).numpy()
    new = {tuple(sorted(e)) for e in inserted.tolist()}
    assert not any(flag and (a, b) in new for flag, a, b in zip(flagged, upper.row, upper.col))
    assert _surrogate_loss(graph, adj) > _surrogate_loss(graph, graph.adj)
    with pytest.raises(ValueError, match="evade"):
        train_hubs(graph, rate, 0, 0, evade="hide")


def test_adaptive_attacks_are_cached_per_defence(tiny: Dataset, tmp_path: Path) -> None:
    graphs = AttackedGraphs(tmp_path / "cache", epochs=10)
    calls = []

    def defend(adj):
        calls.append(1)
        return adj

    with pytest.raises(ValueError, match="what it is told"):  # an adaptive attack needs its defence
        graphs.get(tiny, "trainlink-adaptive", 0.1, 0, "kces")
    first = graphs.get(tiny, "trainlink-adaptive", 0.1, 0, "kces", Told(defend))
    again = graphs.get(tiny, "trainlink-adaptive", 0.1, 0, "kces")  # cached: nothing to tell
    assert (first.adj != again.adj).nnz == 0 and len(calls) > 0
    count = len(calls)
    graphs.get(tiny, "trainlink-adaptive", 0.1, 0, "jaccard", Told(defend))
    assert len(calls) == 2 * count
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"{tiny.key}_trainlink-adaptive_v1_0.1_0_jaccard.npz", f"{tiny.key}_trainlink-adaptive_v1_0.1_0_kces.npz"]


def test_a_new_attack_version_attacks_anew(tiny: Dataset, tmp_path: Path, monkeypatch) -> None:
    """A graph an earlier version of an attack cached is never read as the current version's."""
    assert set(attacks.ATTACK_VERSIONS) == set(attacks.LIVE_ATTACKS) | set(attacks.ADAPTIVE_ATTACKS)
    calls = []
    original = attacks.LIVE_ATTACKS["dice"]
    monkeypatch.setitem(attacks.LIVE_ATTACKS, "dice", lambda *args: calls.append(args) or original(*args))
    graphs = AttackedGraphs(tmp_path / "cache", epochs=10)
    graphs.get(tiny, "dice", 0.1, seed=0)
    graphs.get(tiny, "dice", 0.1, seed=0)
    assert len(calls) == 1
    monkeypatch.setitem(attacks.ATTACK_VERSIONS, "dice", 2)
    graphs.get(tiny, "dice", 0.1, seed=0)
    assert len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"{tiny.key}_dice_v1_0.1_0.npz", f"{tiny.key}_dice_v2_0.1_0.npz"]
    assert graphs.key(tiny, "meta", 0.2, seed=3) == f"{tiny.key}_meta_0.2"  # a published file has no version


def test_edge_stages_key_names_the_edge_stages_and_hashes_their_settings(monkeypatch) -> None:
    from kces import Complexity, Pruning
    from kces.experiments import defences

    key = defences.edge_stages_key
    assert key(()) == key(("rgcn",)) == "none"  # a model defence has nothing to attack
    assert key(("kces", "rgcn")) == key(("kces",)) and key(("kces",)).startswith("kces-")
    assert key(("kces", "jaccard")).startswith("kces+jaccard-") and key(("svd",), 50) != key(("svd",), 20)
    assert len({key((stage,)) for stage in defences.KCES_VARIANTS}) == len(defences.KCES_VARIANTS)
    before = key(("kces",))
    monkeypatch.setitem(defences.KCES_VARIANTS, "kces", (Pruning(label_top_k=2), Complexity()))
    assert key(("kces",)) != before  # a changed default gives a new key, not the stale graph
    monkeypatch.setitem(defences.KCES_VARIANTS, "kces", (Pruning(), Complexity()))
    assert key(("kces",)) == before
    # a field added later is hashed only away from the value that gives the rule before it, so
    # that the graphs cached under the earlier keys stand; "auto" is hashed with the constant it reads
    assert key(("kces-nbr",)) == "kces-nbr-e971394f"
    assert key(("kces-soft-half",)) == "kces-soft-half-32b65f97"
    assert key(("kces-smooth-half",)) == "kces-smooth-half-f48698b7"  # the default of the fifth session
    for weight, neighbours in ((1.0, 0), (0.5, 0), (1.0, 20)):
        monkeypatch.setitem(defences.KCES_VARIANTS, "kces", (
            Pruning(unlabelled_weight=weight, feature_neighbours=neighbours), Complexity()))
        assert (key(("kces",)) == "kces-0ebe82c5") == (weight == 1.0 and neighbours == 0) and key(("kces",)) != before
        assert defences.earlier_rule(unlabelled_weight=weight) == Pruning(unlabelled_weight=weight, feature_neighbours=0)
    monkeypatch.setitem(defences.KCES_VARIANTS, "kces", (Pruning(), Complexity()))
    for graphs in ("features", "featureless"):
        monkeypatch.setitem(defences.AUTO_UNLABELLED_WEIGHT, graphs, 0.75)
        assert key(("kces",)) != before
        monkeypatch.undo()
    for constant, value in (("AUTO_FEATURE_NEIGHBOURS", 10), ("FEATURE_NEIGHBOURS_MAX_NODES", 1000)):
        monkeypatch.setattr(defences, constant, value)
        assert key(("kces",)) != before
        monkeypatch.undo()
    assert key(("kces",)) == before
    monkeypatch.setattr(defences, "MIN_NEIGHBOURHOOD_OVERLAP", 0.5)
    overlap_changed = key(("kces",))
    monkeypatch.setattr(defences, "EXCESS_Z", 3.0)
    assert len({before, overlap_changed, key(("kces",))}) == 3 and key(("svd",), 50).startswith("svd-")


def test_the_anchor_stage_joins_the_feature_anchors_which_the_attacker_is_given(
        tiny: Dataset, tmp_path: Path, monkeypatch) -> None:
    """``kces+anchor`` trains on KCES's output joined by the anchors (:func:`kces.anchor_adj`);
    the adaptive attacker runs the pruning stages and is given the anchors, which depend on the
    features alone; its graphs are cached under their own key."""
    import kces
    from kces.experiments import defences
    from kces.experiments.runner import run_grids

    graph, stages = tiny.graph, ("kces", "anchor")
    sanitized = kces.sanitize_adj(graph.adj, graph.features, graph.labels, graph.idx_train)
    anchored = kces.anchor_adj(sanitized, graph.features)
    defended = apply_edge_stages(stages, graph, 0)
    assert abs(defended.adj - anchored).max() == 0 and abs(defended.pruned - sanitized).max() == 0
    assert abs(defences.edge_defence(stages, graph, 0)(graph.adj) - sanitized).max() == 0
    anchors = defences.always_anchored(stages, graph)
    assert anchors.nnz > 0 and set(anchors.data) == {0.5} and defences.always_anchored(("kces",), graph) is None
    assert abs(sp.csr_matrix(sanitized).maximum(anchors) - anchored).max() == 0
    other = tiny.graph.with_adj(sp.csr_matrix(graph.adj.shape, dtype=np.float32))
    assert abs(defences.always_anchored(stages, other) - anchors).max() == 0  # the graph's edges play no part
    key = defences.edge_stages_key
    assert key(stages).startswith("kces+anchor-") and key(stages) != key(("kces",))
    seen = []
    monkeypatch.setitem(attacks.ADAPTIVE_ATTACKS, "prbcd-adaptive",
                        lambda graph, rate, seed, epochs, told: seen.append(told.anchor) or graph.adj)
    grid = dict(datasets=[str(tmp_path / "tiny.npz")], attacks=["prbcd-adaptive"], defences=["kces", "kces+anchor"],
                seeds=1, rates=[0.1], nettack_perturbations=[1], models=["gcn"], optimizers=["adam"], epochs=5)
    assert run_grids(tmp_path / "out", [grid], cache=tmp_path / "cache") == 0
    assert seen[0] is None and abs(seen[1] - anchors).max() == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        f"{tiny.key}_prbcd-adaptive_v1_0.1_0_{key(s)}.npz" for s in (("kces",), stages))

    def untold(*args):
        raise AssertionError("what the attacker is told is computed for a cached graph")

    monkeypatch.setattr("kces.experiments.runner.tell", untold)  # cached: not asked again
    assert run_grids(tmp_path / "again", [grid], cache=tmp_path / "cache") == 0 and len(seen) == 2


def test_a_changed_defence_is_attacked_anew(tiny: Dataset, tmp_path: Path, monkeypatch) -> None:
    """The runner caches an adaptive graph under the key of the defence's settings: rerunning
    after a default changed attacks the new defence instead of reading the old graph."""
    from kces import Complexity, Pruning
    from kces.experiments import defences
    from kces.experiments.runner import run_grids

    grid = dict(datasets=[str(tmp_path / "tiny.npz")], attacks=["trainlink-adaptive"], defences=["kces", "kces+rgcn"],
                seeds=1, rates=[0.1], nettack_perturbations=[1], models=["gcn"], optimizers=["adam"], epochs=5)
    cache = tmp_path / "cache"
    assert run_grids(tmp_path / "first", [grid], cache=cache) == 0
    old_key = defences.edge_stages_key(("kces",))
    # kces+rgcn shares the graph of kces
    assert [p.name for p in cache.iterdir()] == [f"{tiny.key}_trainlink-adaptive_v1_0.1_0_{old_key}.npz"]
    monkeypatch.setitem(defences.KCES_VARIANTS, "kces", (Pruning(label_top_k=2), Complexity()))
    new_key = defences.edge_stages_key(("kces",))
    assert run_grids(tmp_path / "second", [grid], cache=cache) == 0
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{tiny.key}_trainlink-adaptive_v1_0.1_0_{key}.npz" for key in (old_key, new_key))


def test_seedless_attacks_share_one_graph_across_seeds(tiny: Dataset, tmp_path: Path) -> None:
    graphs = AttackedGraphs(tmp_path / "cache", epochs=10)
    first, second = (graphs.get(tiny, "metaself", 0.1, seed) for seed in (0, 1))
    assert (first.adj != second.adj).nnz == 0 and (first.adj != tiny.graph.adj).nnz > 0
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{tiny.key}_metaself_v1_0.1.npz"]


def test_prbcd_through_the_defence(tiny: Dataset) -> None:
    """At most the budget, seeded, the input untouched, the surrogate's loss raised; the
    defence is queried on the poisoned graphs and what it prunes is withdrawn and re-spent."""
    from kces.experiments.attacks import GRADIENT_ROUNDS, prbcd_through_defence
    from kces.experiments.defences import apply_edge_stages

    graph = tiny.graph
    before = graph.adj.copy()
    queries = []

    def defend(adj):
        queries.append(adj.nnz)
        return apply_edge_stages(("kces",), graph.with_adj(adj), seed=0).adj

    adj = prbcd_through_defence(graph, 0.2, 0, 20, defend)
    assert (graph.adj != before).nnz == 0
    flips = len(flipped(adj, graph.adj))
    assert 0 < flips <= budget(graph, 0.2)
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0 and set(np.unique(adj.data)) == {1.0}
    assert 0 < len(queries) <= 2 * (2 * GRADIENT_ROUNDS + 1)  # two runs: ≤ 2 a round, 1 to choose between them
    assert (prbcd_through_defence(graph, 0.2, 0, 20, defend) != adj).nnz == 0
    assert _surrogate_loss(graph, adj) > _surrogate_loss(graph, graph.adj)


def test_prbcd_leaves_the_pairs_it_is_told_and_what_the_defence_pruned(tiny: Dataset) -> None:
    """PRBCD told to avoid pairs flips none of them (and without being told it does). The attack
    through the defence runs twice and keeps whichever poisoned graph fools its surrogate more:
    told which pairs the defence always prunes, its second run avoids them and every pair the
    defence pruned in an earlier round; else it is the blind run under another seed."""
    from kces.experiments import attacks
    from kces.experiments.attacks import prbcd_through_defence, rbcd_perturbed

    graph = tiny.graph

    def avoid(pairs):  # pairs of two even nodes
        return (pairs[0] % 2 == 0) & (pairs[1] % 2 == 0)

    assert avoid(torch.from_numpy(flipped(rbcd_perturbed(graph, 12, 0, 20), graph.adj).T)).any()
    told = flipped(rbcd_perturbed(graph, 12, 0, 20, avoid=avoid), graph.adj)
    assert len(told) == 12 and not avoid(torch.from_numpy(told.T)).any()

    poisoned, accuracies, pruned = [], [], []

    def defend(adj):  # prunes every inserted edge at a node below 20
        out = sp.lil_matrix(adj)
        for i, j in edge_difference(adj, graph.adj):
            if min(i, j) < 20:
                out[i, j] = out[j, i] = 0
                pruned.append((len(poisoned), int(i), int(j)))
        return sp.csr_matrix(out)

    through, surrogate = attacks.through_defence, attacks._surrogate_accuracy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attacks, "through_defence", lambda *a: poisoned.append(through(*a)) or poisoned[-1])
        patch.setattr(attacks, "_surrogate_accuracy", lambda *a: accuracies.append(surrogate(*a)) or accuracies[-1])
        blind = prbcd_through_defence(graph, 0.2, 0, 20, defend)
        # without a pair rule: the same attack under another seed, the graph the surrogate scores lower kept
        assert len(poisoned) == 2 and (poisoned[0] != poisoned[1]).nnz > 0
        assert len(accuracies) == 2 and (blind != poisoned[int(np.argmin(accuracies))]).nnz == 0
        first = poisoned[0]
        for log in (poisoned, accuracies, pruned):
            log.clear()
        aware = prbcd_through_defence(graph, 0.2, 0, 20, defend, avoid)
    assert len(poisoned) == 2 and (poisoned[0] != first).nnz == 0
    assert len(accuracies) == 2 and (aware != poisoned[int(np.argmin(accuracies))]).nnz == 0
    inserted = edge_difference(poisoned[1], graph.adj)
    second = flipped(poisoned[1], graph.adj)
    assert 0 < len(second) <= budget(graph, 0.2) and not avoid(torch.from_numpy(second.T)).any()
    withdrawn = {(i, j) for run, i, j in pruned if run == 1}
    assert withdrawn and not withdrawn & {(int(i), int(j)) for i, j in inserted}
    assert (prbcd_through_defence(graph, 0.2, 0, 20, defend, avoid) != aware).nnz == 0


def test_kept_edges_only_of_a_pruning_defence(tiny: Dataset) -> None:
    """What the defence keeps when it only removes edges; None when it re-weights (SVD)."""
    from kces.experiments.attacks import kept_edges

    adj = tiny.graph.adj
    kept = kept_edges(lambda a: apply_edge_stages(("kces",), tiny.graph.with_adj(a), seed=0).adj, adj)
    assert kept is not None and 0 < kept.nnz < adj.nnz and (kept - kept.multiply(adj)).nnz == 0
    assert kept_edges(lambda a: apply_edge_stages(("svd",), tiny.graph.with_adj(a), seed=0, svd_rank=5).adj,
                      adj) is None


def test_prbcd_aims_at_the_targets_it_is_given(tiny: Dataset) -> None:
    from kces.experiments.attacks import rbcd_perturbed

    graph = tiny.graph
    at_test, at_val = (rbcd_perturbed(graph, 10, 0, 20, targets=nodes) for nodes in (None, graph.idx_val))
    assert (at_test != rbcd_perturbed(graph, 10, 0, 20, targets=graph.idx_test)).nnz == 0
    assert (at_val != rbcd_perturbed(graph, 10, 0, 20, targets=graph.idx_val)).nnz == 0
    assert (at_val != at_test).nnz > 0
    assert len(flipped(at_val, graph.adj)) == 10
    with pytest.raises(ValueError, match="avoid is for PRBCD"):
        rbcd_perturbed(graph, 10, 0, 20, greedy=True, avoid=lambda pairs: pairs[0] == 0)


def test_prbcd_through_a_graph_free_reweighting(tiny: Dataset) -> None:
    """The surrogate sees every edge's weight times the defence's scale; a scale of ones is the
    plain attack, a scale that silences the pairs of two even nodes moves the attack elsewhere."""
    from torch_geometric.nn.models import GCN

    from kces.experiments.attacks import rbcd_perturbed
    from kces.experiments.models import EdgeScaled

    torch.manual_seed(0)
    model, x = GCN(5, 8, 2, 3).eval(), torch.randn(6, 5)
    edge_index, weight = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]), torch.rand(6)

    def scale(pairs):
        return torch.where((pairs[0] % 2 == 0) & (pairs[1] % 2 == 0), 0.25, 1.0)

    scaled = EdgeScaled(model, scale)
    torch.testing.assert_close(scaled(x, edge_index), model(x, edge_index, scale(edge_index)))
    torch.testing.assert_close(scaled(x, edge_index, weight), model(x, edge_index, weight * scale(edge_index)))

    graph = tiny.graph
    before = graph.adj.copy()
    plain = rbcd_perturbed(graph, 12, 0, 20)
    assert (rbcd_perturbed(graph, 12, 0, 20, edge_scale=lambda pairs: torch.ones(pairs.shape[1])) != plain).nnz == 0

    def silence_even(pairs):
        return torch.where((pairs[0] % 2 == 0) & (pairs[1] % 2 == 0), 0.0, 1.0)

    through = rbcd_perturbed(graph, 12, 0, 20, edge_scale=silence_even)
    assert len(flipped(through, graph.adj)) == 12 and (through != plain).nnz > 0
    assert (rbcd_perturbed(graph, 12, 0, 20, edge_scale=silence_even) != through).nnz == 0
    assert (graph.adj != before).nnz == 0


def test_prbcd_through_edges_a_defence_adds(tiny: Dataset) -> None:
    """The surrogate sees the union of its input and the fixed anchor edges, each pair at the
    larger weight (a reference built with scipy); an anchor with no edges is the plain attack; a
    real one changes what PRBCD flips, deterministically, within the budget, without mutation;
    so through the defence too."""
    from torch_geometric.nn.models import GCN

    from kces.experiments.attacks import rbcd_perturbed
    from kces.experiments.models import EdgeAugmented

    torch.manual_seed(0)
    model, x = GCN(5, 8, 2, 3).eval(), torch.randn(6, 5)
    edge_index, weight = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]), torch.rand(6)
    anchor = sp.csr_matrix(([0.5, 0.5, 0.5, 0.5], ([0, 1, 3, 5], [1, 0, 5, 3])), shape=(6, 6))
    given = sp.csr_matrix((weight.numpy(), edge_index.numpy()), shape=(6, 6))
    union = given.maximum(anchor).tocoo()
    expected = model(x, torch.from_numpy(np.vstack([union.row, union.col])).long(),
                     torch.from_numpy(union.data).float())
    torch.testing.assert_close(EdgeAugmented(model, anchor)(x, edge_index, weight), expected)
    ones = sp.csr_matrix((np.ones(6), edge_index.numpy()), shape=(6, 6)).maximum(anchor).tocoo()
    torch.testing.assert_close(EdgeAugmented(model, anchor)(x, edge_index), model(
        x, torch.from_numpy(np.vstack([ones.row, ones.col])).long(), torch.from_numpy(ones.data).float()))

    graph = tiny.graph
    before = graph.adj.copy()
    plain = rbcd_perturbed(graph, 12, 0, 20)
    assert (rbcd_perturbed(graph, 12, 0, 20, anchor=sp.csr_matrix(graph.adj.shape)) != plain).nnz == 0
    rng = np.random.default_rng(0)
    upper = sp.triu(sp.random(graph.num_nodes, graph.num_nodes, density=0.1, random_state=rng), k=1)
    anchored = (upper + upper.T).tocsr()
    anchored.data[:] = 1.0
    through = rbcd_perturbed(graph, 12, 0, 20, anchor=anchored)
    assert len(flipped(through, graph.adj)) == 12 and (through != plain).nnz > 0
    assert (rbcd_perturbed(graph, 12, 0, 20, anchor=anchored) != through).nnz == 0
    assert (graph.adj != before).nnz == 0

    from kces.experiments.attacks import prbcd_through_defence  # every surrogate of every attempt sees them

    def defend(adj):
        return apply_edge_stages(("kces",), graph.with_adj(adj), seed=0).adj

    pipeline = prbcd_through_defence(graph, 0.1, 0, 20, defend, anchor=anchored)
    assert 0 < len(flipped(pipeline, graph.adj)) <= budget(graph, 0.1)
    assert (prbcd_through_defence(graph, 0.1, 0, 20, defend, anchor=anchored) != pipeline).nnz == 0
    assert (prbcd_through_defence(graph, 0.1, 0, 20, defend) != pipeline).nnz > 0


def test_prbcd_through_a_defence_that_down_weights(tiny: Dataset) -> None:
    """Told the weights too, PRBCD through the defence makes a third attempt whose surrogate sees
    them and which avoids only what the defence prunes; the surrogate judging the attempts sees
    them as well; the defence's weighted output reads as the edges it keeps."""
    from kces.experiments.attacks import kept_edges, prbcd_through_defence

    graph = tiny.graph

    def even(pairs):
        return (pairs[0] % 2 == 0) & (pairs[1] % 2 == 0)

    def odd(pairs):
        return (pairs[0] % 2 == 1) & (pairs[1] % 2 == 1)

    def scale(pairs):  # odd pairs down-weighted
        return torch.where(odd(pairs), 0.25, 1.0)

    def defend(adj):  # down-weights odd pairs, prunes inserted even pairs
        out = sp.coo_matrix(adj)
        weight = scale(torch.from_numpy(np.vstack([out.row, out.col]).astype(np.int64))).numpy() * out.data
        inserted = np.asarray(graph.adj[out.row, out.col]).ravel() == 0
        keep = ~(inserted & (out.row % 2 == 0) & (out.col % 2 == 0))
        return sp.csr_matrix((weight[keep], (out.row[keep], out.col[keep])), shape=adj.shape)

    kept = kept_edges(defend, graph.adj)
    assert kept is not None and (kept != (graph.adj != 0)).nnz == 0 and set(kept.data) == {1.0}
    full = sp.coo_matrix(kept_edges(defend, graph.adj, full_weight=True))  # down-weighted edges count as undone
    assert set(full.data) == {1.0} and not ((full.row % 2 == 1) & (full.col % 2 == 1)).any()
    assert full.nnz == int((~((kept.tocoo().row % 2 == 1) & (kept.tocoo().col % 2 == 1))).sum())
    calls, surrogates = [], []
    rbcd, surrogate = attacks.rbcd_perturbed, attacks._surrogate_accuracy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attacks, "rbcd_perturbed", lambda *a, **k: calls.append(k) or rbcd(*a, **k))
        patch.setattr(attacks, "_surrogate_accuracy", lambda *a: surrogates.append(a[4]) or surrogate(*a))
        adj = prbcd_through_defence(graph, 0.2, 0, 20, defend, lambda pairs: even(pairs) | odd(pairs), scale=scale)
    pairs = torch.tensor([[0, 1, 0], [2, 3, 1]])  # even, odd, mixed
    weighted = [k for k in calls if k.get("edge_scale") is scale]
    assert weighted and len(weighted) < len(calls)
    assert all(k["avoid"](pairs).tolist() == [True, False, False] for k in weighted)
    assert len(surrogates) == 3 and all(s is scale for s in surrogates)
    assert 0 < len(flipped(adj, graph.adj)) <= budget(graph, 0.2)


def test_always_pruned_is_what_the_defence_prunes_wherever_it_stands(tiny: Dataset, monkeypatch) -> None:
    """Every pair it flags, inserted into the graph, is pruned by the stages; none for stages
    whose pruning depends on the whole graph. Under KCES then Jaccard only at training nodes:
    unlabelled pairs that Jaccard prunes would still vote in the KCES stage before it."""
    from kces.experiments import defences
    from kces.experiments.defences import always_pruned, jaccard_prune

    graph = tiny.graph
    rows, cols = np.triu_indices(graph.num_nodes, k=1)
    absent = np.asarray(graph.adj[rows, cols]).ravel() == 0
    pairs = torch.from_numpy(np.stack([rows[absent], cols[absent]]))
    at_training = torch.from_numpy(graph.train_mask[rows[absent]] | graph.train_mask[cols[absent]])
    for stages in [("kces",), ("kces-both",), ("kces-nbr",), ("kces-features",), ("jaccard",), ("kces", "jaccard")]:
        flagged = always_pruned(stages, graph)(pairs)
        if stages == ("kces", "jaccard"):
            flagged &= at_training
        assert 0 < int(flagged.sum()) < pairs.shape[1]
        u, v = pairs[:, flagged].numpy()
        inserted = graph.adj + sp.csr_matrix((np.ones(2 * u.size, dtype=np.float32),
                                              (np.r_[u, v], np.r_[v, u])), shape=graph.adj.shape)
        kept = apply_edge_stages(stages, graph.with_adj(inserted), seed=0).adj
        # the default down-weights the flagged pairs of two unlabelled nodes to a quarter, prunes the rest
        assert np.asarray(kept[u, v]).max() == (0.25 if stages == ("kces",) else 0.0)
    # neighbourhood labels come from the graph's neighbourhoods, not from the features alone; kces-both reads both
    by_features, by_votes = (always_pruned((stage,), graph)(pairs) for stage in ("kces-features", "kces-nbr"))
    assert not torch.equal(by_votes, by_features)
    assert torch.equal(always_pruned(("kces-both",), graph)(pairs), by_votes | by_features)  # either
    unlabelled = ~at_training & always_pruned(("kces-soft-half",), graph)(pairs)
    assert torch.equal(always_pruned(("kces-soft-half",), graph)(pairs), by_votes | by_features | unlabelled)
    # the default: the same, its labels read off the smoothed features
    for stage in ("kces-features", "kces-nbr", "kces-soft-half"):
        rule, complexity = defences.KCES_VARIANTS[stage]
        monkeypatch.setitem(defences.KCES_VARIANTS, stage, (dataclasses.replace(rule, feature_neighbours=20), complexity))
    by_features, by_votes = (always_pruned((stage,), graph)(pairs) for stage in ("kces-features", "kces-nbr"))
    unlabelled = ~at_training & always_pruned(("kces-soft-half",), graph)(pairs)
    assert torch.equal(always_pruned(("kces",), graph)(pairs), by_votes | by_features | unlabelled)
    monkeypatch.undo()
    # the fifth session's default flags the same pairs (it keeps them at half the weight, not a quarter)
    assert torch.equal(always_pruned(("kces-smooth-half",), graph)(pairs), always_pruned(("kces",), graph)(pairs))
    jaccard = always_pruned(("jaccard",), graph)(pairs)
    u, v = pairs[:, ~jaccard].numpy()
    inserted = sp.csr_matrix((np.ones(2 * u.size, dtype=np.float32), (np.r_[u, v], np.r_[v, u])), shape=graph.adj.shape)
    assert (jaccard_prune(inserted, graph.features) != inserted).nnz == 0  # the rest Jaccard keeps
    for stages in [(), ("svd",), ("kces-kc-only",), ("kces-top10",), ("rgcn",)]:
        assert always_pruned(stages, graph) is None
    featureless = dataclasses.replace(graph, features=sp.identity(graph.num_nodes, dtype=np.float32, format="csr"))
    assert always_pruned(("kces",), featureless) is None


def _meta_self_loss(graph, adj) -> float:
    """Meta-Self's objective: the surrogate fitted on ``adj``, its cross-entropy on the
    unlabelled nodes against the clean surrogate's labels."""
    from kces.experiments.metagradient import SelfTraining

    return SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj, device="cpu").value(adj)


def test_meta_self_surrogate_is_ridge_regression() -> None:
    """The dual closed form equals the primal ridge fit ``W = (Z_SᵀZ_S + λI)⁻¹ Z_Sᵀ Y_S`` of ``Z = Â² X``."""
    from kces.experiments.metagradient import RIDGE, _normalized, surrogate_logits

    gen = torch.Generator().manual_seed(0)
    n, d = 30, 12
    upper = torch.triu((torch.rand(n, n, generator=gen) < 0.2).double(), 1)
    adj = upper + upper.T
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    train = torch.tensor([0, 3, 5, 8, 13, 21])
    targets = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2])).double()
    z = _normalized(adj) @ _normalized(adj) @ x
    zs = z[train]
    ridge = RIDGE * (zs @ zs.T).diagonal().mean()
    weights = torch.linalg.solve(zs.T @ zs + ridge * torch.eye(d, dtype=torch.float64), zs.T @ targets)
    torch.testing.assert_close(surrogate_logits(adj, x @ x.T, train, targets), z @ weights)


def test_meta_self(tiny: Dataset) -> None:
    """Exactly the budget, deterministic, the input untouched, no node isolated, only allowed
    pairs flipped, and Meta-Self's loss raised."""
    from kces.experiments.metagradient import SelfTraining, meta_self

    graph = tiny.graph
    before = graph.adj.copy()
    count = budget(graph, 0.2)
    objective = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj)
    adj = meta_self(graph.adj, objective, count, per_step=count // 4 + 1)
    assert (graph.adj != before).nnz == 0
    assert (adj != graph.adj).nnz == 2 * count and (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    assert set(np.unique(adj.data)) == {1.0} and np.asarray(adj.sum(1)).min() >= 1
    again = meta_self(graph.adj, objective, count, per_step=count // 4 + 1)
    assert (again != adj).nnz == 0
    assert _meta_self_loss(graph, adj) > _meta_self_loss(graph, graph.adj) + 0.01
    unlabelled = np.ones(graph.num_nodes, dtype=bool)
    unlabelled[graph.idx_train] = False
    allowed = unlabelled[:, None] & unlabelled[None, :]
    restricted = meta_self(graph.adj, objective, count, allowed, count // 4 + 1)
    changed = sp.triu(restricted != graph.adj).tocoo()
    assert changed.nnz == count and allowed[changed.row, changed.col].all()
    with pytest.raises(ValueError, match="cannot flip"):
        meta_self(graph.adj, objective, 3, np.eye(graph.num_nodes, dtype=bool))


def test_meta_self_sees_the_anchor_edges(tiny: Dataset) -> None:
    """Told the edges a defence adds, the surrogate fits the union (a reference built with scipy:
    each pair at the larger weight); an anchor of no edges changes nothing; the attack through the
    defence then raises the loss of the anchored graph, within the budget, deterministically."""
    from kces.experiments.attacks import meta_self_through_defence
    from kces.experiments.metagradient import SelfTraining, _dense

    graph = tiny.graph
    rng = np.random.default_rng(0)
    upper = sp.triu(sp.random(graph.num_nodes, graph.num_nodes, density=0.05, random_state=rng), k=1)
    anchor = (upper + upper.T).tocsr()
    anchor.data[:] = 0.5
    plain = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj, device="cpu")
    anchored = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj, device="cpu", anchor=anchor)
    union = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj.maximum(anchor), device="cpu")
    torch.testing.assert_close(anchored.logits(_dense(graph.adj, "cpu")),
                               plain.logits(_dense(graph.adj.maximum(anchor), "cpu")))
    assert torch.equal(anchored.pseudo, union.pseudo)
    nothing = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj, device="cpu",
                           anchor=sp.csr_matrix(graph.adj.shape))
    assert nothing.value(graph.adj) == plain.value(graph.adj)

    def defend(adj):
        return apply_edge_stages(("kces",), graph.with_adj(adj), seed=0).adj

    adj = meta_self_through_defence(graph, 0.2, 0, 0, defend, anchor=anchor)
    assert 0 < len(flipped(adj, graph.adj)) <= budget(graph, 0.2)
    assert (meta_self_through_defence(graph, 0.2, 0, 0, defend, anchor=anchor) != adj).nnz == 0
    assert anchored.value(defend(adj)) > anchored.value(defend(graph.adj))


def test_meta_self_through_the_defence(tiny: Dataset) -> None:
    """At most the budget, deterministic, the input untouched, Meta-Self's loss raised, the
    defence queried."""
    from kces.experiments.attacks import meta_self_through_defence

    graph = tiny.graph
    before = graph.adj.copy()
    queries = []

    def defend(adj):
        queries.append(adj.nnz)
        return apply_edge_stages(("kces",), graph.with_adj(adj), seed=0).adj

    adj = meta_self_through_defence(graph, 0.2, 0, 0, defend)
    assert (graph.adj != before).nnz == 0 and len(queries) >= 4
    flips = len(flipped(adj, graph.adj))
    assert 0 < flips <= budget(graph, 0.2) and (adj != adj.T).nnz == 0
    assert (meta_self_through_defence(graph, 0.2, 0, 0, defend) != adj).nnz == 0
    assert _meta_self_loss(graph, adj) > _meta_self_loss(graph, graph.adj)


def test_meta_self_through_the_defence_told_what_it_always_prunes(tiny: Dataset) -> None:
    """Told which pairs the defence always prunes, Meta-Self through the defence runs three
    strategies — all pairs, unlabelled pairs less the flagged ones, all pairs less the flagged
    ones — the last two flipping no flagged pair, and keeps the one its objective scores highest
    on the defended graph."""
    from kces.experiments import attacks
    from kces.experiments.attacks import meta_self_through_defence
    from kces.experiments.metagradient import SelfTraining

    graph = tiny.graph
    train = graph.train_mask

    def avoid(pairs):  # pairs of two even nodes
        return (pairs[0] % 2 == 0) & (pairs[1] % 2 == 0)

    def defend(adj):
        return apply_edge_stages(("kces",), graph.with_adj(adj), seed=0).adj

    poisoned = []
    through = attacks.through_defence
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attacks, "through_defence", lambda *a: poisoned.append(through(*a)) or poisoned[-1])
        adj = meta_self_through_defence(graph, 0.2, 0, 0, defend, avoid)
    assert len(poisoned) == 3
    for k, strategy in enumerate(poisoned):
        pairs = flipped(strategy, graph.adj)
        assert 0 < len(pairs) <= budget(graph, 0.2)
        assert avoid(torch.from_numpy(pairs.T)).any() == (k == 0)  # the blind strategy flips flagged pairs
        assert k != 1 or not (train[pairs[:, 0]] | train[pairs[:, 1]]).any()
    objective = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.clean_adj)
    assert (adj != poisoned[int(np.argmax([objective.value(defend(a)) for a in poisoned]))]).nnz == 0


def test_pair_matrix() -> None:
    from kces.experiments.attacks import pair_matrix

    def first_odd(pairs):
        return pairs[0] % 2 == 1

    out = pair_matrix(first_odd, 7, chunk=4)
    expected = np.array([[i != j and min(i, j) % 2 == 1 for j in range(7)] for i in range(7)])
    assert out.dtype == bool and np.array_equal(out, expected)
    assert not pair_matrix(first_odd, 1).any()


def test_through_defence_withdraws_and_blocks_what_the_defence_pruned(tiny: Dataset) -> None:
    """A defence that prunes every edge at node 0 against an attack that inserts there first:
    each round's insertions are withdrawn and their budget spent again, later rounds are told to
    leave the withdrawn pairs alone, and the last round's insertions stay."""
    from kces.experiments.attacks import GRADIENT_ROUNDS, through_defence

    graph = tiny.graph
    n, count = graph.num_nodes, budget(graph, 0.1)
    calls = []

    def defend(adj):
        kept = sp.lil_matrix(adj)
        kept[0, :] = 0
        kept[:, 0] = 0
        return kept.tocsr()

    def attack(seen, left, round_, blocked):
        calls.append((left, blocked.copy()))
        free = [j for j in range(1, n) if graph.adj[0, j] == 0 and blocked[0, j] == 0][:left]
        return attacks.with_insertions(seen.adj, np.array(free, dtype=np.int64))

    adj = through_defence(graph, 0.1, defend, attack)
    batches = np.split(np.array([j for j in range(1, n) if graph.adj[0, j] == 0][:GRADIENT_ROUNDS * count]),
                       GRADIENT_ROUNDS)
    assert [left for left, _ in calls] == [count] * GRADIENT_ROUNDS
    for round_, (_, blocked) in enumerate(calls):
        withdrawn = np.concatenate([[], *batches[:round_]]).astype(int)
        assert np.all(blocked[0, withdrawn].toarray() == 1) and np.all(blocked[withdrawn, 0].toarray().ravel() == 1)
        assert np.all(blocked[0, batches[round_]].toarray() == 0)
    assert edge_difference(adj, graph.adj).tolist() == [[0, int(j)] for j in batches[-1]]
    assert edge_difference(graph.adj, adj).size == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_meta_self_on_cuda(tiny: Dataset) -> None:
    """The dense work on the GPU: the budget spent exactly and Meta-Self's loss raised as on the CPU."""
    from kces.experiments.metagradient import SelfTraining, meta_self

    graph = tiny.graph
    count = budget(graph, 0.2)
    objective = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.adj, device="cuda")
    adj = meta_self(graph.adj, objective, count, per_step=count // 4 + 1)
    assert (adj != graph.adj).nnz == 2 * count and (adj != adj.T).nnz == 0
    assert objective.value(adj) > objective.value(graph.adj) + 0.01


def test_vote_links_move_the_vote_then_link_the_training_node(tiny: Dataset) -> None:
    """``votelink-adaptive`` without the defence: the budget spent exactly, deterministic, the input
    untouched, insertions only, every training-node edge passes the default's neighbourhood label
    check, and the surrogate's training loss rises."""
    from kces.experiments.attacks import vote_links
    from kces.labels import label_disagreement

    graph = tiny.graph
    before = graph.adj.copy()
    adj = vote_links(graph, 0.2, seed=0)
    assert (graph.adj != before).nnz == 0 and (adj != adj.T).nnz == 0
    inserted = edge_difference(adj, graph.adj)
    assert len(inserted) == budget(graph, 0.2) and edge_difference(graph.adj, adj).size == 0
    assert (vote_links(graph, 0.2, seed=0) != adj).nnz == 0 and (vote_links(graph, 0.2, seed=1) != adj).nnz > 0
    at_training = graph.train_mask[inserted[:, 0]] | graph.train_mask[inserted[:, 1]]
    assert 0 < at_training.sum() < len(inserted)  # links and their helpers
    upper = sp.triu(adj, k=1).tocoo()
    pairs = torch.from_numpy(np.vstack([upper.row, upper.col]).astype(np.int64))
    flagged = label_disagreement(pairs, torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels),
                                 torch.from_numpy(graph.idx_train), int(graph.labels.max()) + 1,
                                 source="neighbourhood").numpy()
    flagged_keys = set((upper.row[flagged] * graph.num_nodes + upper.col[flagged]).tolist())
    trained = inserted[at_training]
    assert not flagged_keys & set((trained.min(1) * graph.num_nodes + trained.max(1)).tolist())
    assert _surrogate_loss(graph, adj) > _surrogate_loss(graph, graph.adj)


def test_vote_links_aim_by_the_class_scores_the_rule_reads(tiny: Dataset, tmp_path: Path) -> None:
    """The default smooths its feature labels: the attacker is given those class scores
    (``always_labelled``), aims by them, and its training-node links pass the neighbourhood check
    read with them; a rule that does not smooth gives None (the attack's own plain scores)."""
    from kces import Pruning
    from kces.experiments import defences
    from kces.experiments.attacks import vote_links
    from kces.experiments.datasets import upper_pairs
    from kces.labels import label_disagreement

    graph = tiny.graph
    scores = defences.always_labelled(("kces", "anchor"), graph)
    np.testing.assert_array_equal(scores, defences.rule_class_scores(Pruning(), graph).numpy())
    assert all(defences.always_labelled(stages, graph) is None for stages in (("kces-both",), ("jaccard",), ()))
    featureless = load_dataset(str(write_tiny_npz(tmp_path / "blogs.npz", features=False))).graph
    assert defences.always_labelled(("kces",), featureless) is None
    plain = defences.rule_class_scores(Pruning(feature_neighbours=0), graph).numpy()
    assert (vote_links(graph, 0.2, 0, scores=plain) != vote_links(graph, 0.2, 0)).nnz == 0
    adj = vote_links(graph, 0.2, 0, scores=scores)
    assert (adj != vote_links(graph, 0.2, 0)).nnz > 0
    inserted = edge_difference(adj, graph.adj)
    trained = inserted[graph.train_mask[inserted[:, 0]] | graph.train_mask[inserted[:, 1]]]
    pairs = upper_pairs(adj)
    flagged = label_disagreement(pairs, None, torch.from_numpy(graph.labels), torch.from_numpy(graph.idx_train),
                                 scores.shape[1], source="neighbourhood", scores=torch.from_numpy(scores)).numpy()
    flagged_keys = set((pairs[0].numpy()[flagged] * graph.num_nodes + pairs[1].numpy()[flagged]).tolist())
    assert len(trained) > 0 and not flagged_keys & set((trained.min(1) * graph.num_nodes + trained.max(1)).tolist())


def test_tell_is_what_each_part_tells_with_the_class_scores_computed_once(tiny: Dataset, monkeypatch) -> None:
    """``tell`` bundles the defence chain and what the attacker reads of it: the same as each
    ``always_*`` asked alone, the smoothed class scores computed once for all of them."""
    from kces.experiments import defences

    graph, stages = tiny.graph, ("kces", "anchor")
    pairs = torch.from_numpy(np.stack(np.triu_indices(graph.num_nodes, k=1)).astype(np.int64))
    computed = []
    rule_class_scores = defences.rule_class_scores
    monkeypatch.setattr(defences, "rule_class_scores", lambda *args: computed.append(1) or rule_class_scores(*args))
    told = defences.tell(stages, graph, 0)
    assert len(computed) == 1
    assert abs(told.defend(graph.adj) - defences.edge_defence(stages, graph, 0)(graph.adj)).max() == 0
    assert torch.equal(told.avoid(pairs), defences.always_pruned(stages, graph)(pairs))
    scale = told.scale(pairs)
    assert torch.equal(scale, defences.always_scaled(stages, graph)(pairs)) and set(scale.tolist()) == {0.25, 1.0}
    assert abs(told.anchor - defences.always_anchored(stages, graph)).max() == 0
    np.testing.assert_array_equal(told.scores, defences.always_labelled(stages, graph))
    jaccard = defences.tell(("jaccard",), graph, 0)
    assert jaccard.scale is None and jaccard.anchor is None and jaccard.scores is None and jaccard.avoid is not None


def test_vote_links_withdraw_what_the_defence_prunes(tiny: Dataset) -> None:
    """Through a defence that prunes every inserted training-node edge at two nodes attacked in
    the first poisoned graph it sees, the attacker withdraws those links with their helpers,
    never targets those nodes again and spends the budget freed on other links; a re-weighting
    defence is attacked as no defence."""
    from kces.experiments.attacks import vote_links

    graph = tiny.graph
    marked: list[int] = []

    def links(adj: sp.csr_matrix) -> list[tuple[int, int]]:
        """(training node, target) of the inserted training-node edges"""
        return [(a, b) if graph.train_mask[a] else (b, a) for a, b in edge_difference(adj, graph.adj).tolist()
                if graph.train_mask[a] or graph.train_mask[b]]

    def defend(adj: sp.csr_matrix) -> sp.csr_matrix:
        if not marked:
            marked.extend(u for _, u in links(adj)[:2])
        kept = sp.lil_matrix(adj)
        for t, u in links(adj):
            if u in marked:
                kept[t, u] = kept[u, t] = 0
        return sp.csr_matrix(kept)

    plain = vote_links(graph, 0.1, 0)
    adj = vote_links(graph, 0.1, 0, defend)
    inserted = edge_difference(adj, graph.adj)
    assert len(marked) == 2 and len(inserted) <= budget(graph, 0.1) and edge_difference(graph.adj, adj).size == 0
    assert not set(marked) & {u for _, u in links(adj)}
    assert len(links(adj)) >= len(links(plain)) - 1  # the freed budget spent on new links
    assert not {tuple(e) for e in edge_difference(plain, graph.adj).tolist() if marked[0] in e} & \
        {tuple(e) for e in inserted.tolist()}  # a withdrawn target's helpers went with it
    dense = vote_links(graph, 0.1, 0, lambda adj: sp.csr_matrix(adj.toarray() * 0.5 + 0.1))
    assert (dense != plain).nnz == 0


def test_vote_links_aim_at_test_nodes_where_a_link_weighs_most(tiny: Dataset) -> None:
    """Every target is a test node (or one of the nodes given); among those that need as few
    helpers, the one with the least degree plus anchor weight. With features that tell no node
    apart every node votes for one class, so every target of that class's training nodes needs no
    helper: anchors on half the test nodes then steer every link to the other half."""
    from kces.experiments.attacks import vote_links

    graph = dataclasses.replace(tiny.graph, features=sp.csr_matrix(np.ones((tiny.graph.num_nodes, 4))))

    def targets(adj: sp.csr_matrix) -> np.ndarray:
        inserted = edge_difference(adj, graph.adj)
        links = inserted[graph.train_mask[inserted[:, 0]] | graph.train_mask[inserted[:, 1]]]
        return np.where(graph.train_mask[links[:, 0]], links[:, 1], links[:, 0])

    heavy = graph.idx_test[::2]
    anchor = sp.diags(np.isin(np.arange(graph.num_nodes), heavy) * 100.0, format="csr")
    plain, steered = targets(vote_links(graph, 0.05, 0)), targets(vote_links(graph, 0.05, 0, anchor=anchor))
    assert plain.size == steered.size >= 5 and np.isin(np.concatenate([plain, steered]), graph.idx_test).all()
    assert np.isin(plain, heavy).mean() > 0.2 and not np.isin(steered, heavy).any(), np.isin(plain, heavy).mean()
    aimed = targets(vote_links(graph, 0.05, 0, targets=graph.idx_val))
    assert aimed.size > 0 and np.isin(aimed, graph.idx_val).all()


def _fillers(graph: Graph, adj: sp.csr_matrix) -> np.ndarray:
    """(k, 2) the insertions of ``vote_links`` that are neither a training-node link nor one of its
    helpers (a helper touches a target, which keeps its link)"""
    inserted = edge_difference(adj, graph.adj)
    at_training = graph.train_mask[inserted[:, 0]] | graph.train_mask[inserted[:, 1]]
    targets = set(inserted[at_training].ravel().tolist())
    return np.array([e for e in inserted[~at_training].tolist() if not targets & set(e)]).reshape(-1, 2)


def test_vote_links_spend_what_no_link_can_take_between_unlabelled_nodes(tiny: Dataset) -> None:
    """When no target is left (half the edges on the tiny graph), the rest of the budget goes to
    insertions between two unlabelled nodes of different classes, never a pair ``avoid`` flags,
    and through a defence the ones it prunes are withdrawn and spent again elsewhere."""
    from kces.experiments.attacks import vote_links

    graph = tiny.graph
    plain = vote_links(graph, 0.5, 0)
    fillers = _fillers(graph, plain)
    assert edge_difference(plain, graph.adj).shape[0] == budget(graph, 0.5) and len(fillers) > 20
    assert not graph.train_mask[fillers].any() and np.all(graph.labels[fillers[:, 0]] != graph.labels[fillers[:, 1]])

    def odd(pairs: torch.Tensor) -> torch.Tensor:
        return (pairs[0] + pairs[1]) % 2 == 1

    avoided = vote_links(graph, 0.5, 0, avoid=odd)
    assert edge_difference(avoided, graph.adj).shape[0] == budget(graph, 0.5)
    assert not odd(torch.from_numpy(_fillers(graph, avoided).T)).any() and odd(torch.from_numpy(fillers.T)).any()
    with pytest.raises(ValueError, match="cannot place"):
        vote_links(graph, 0.5, 0, avoid=lambda pairs: torch.ones(pairs.shape[1], dtype=torch.bool))

    def defend(adj: sp.csr_matrix) -> sp.csr_matrix:  # prunes every insertion between two nodes below 40
        kept = sp.lil_matrix(adj)
        for u, v in edge_difference(adj, graph.adj).tolist():
            if max(u, v) < 40:
                kept[u, v] = kept[v, u] = 0
        return sp.csr_matrix(kept)

    through = vote_links(graph, 0.5, 0, defend)
    assert edge_difference(through, graph.adj).shape[0] == budget(graph, 0.5)
    low = [(fillers.max(1) < 40).sum(), (_fillers(graph, through).max(1) < 40).sum()]
    assert low[0] >= 10 and low[1] <= low[0] / 3, low


def test_vote_links_keep_the_run_that_fools_their_surrogate_more(tiny: Dataset, monkeypatch) -> None:
    """Through a defence, the attacker keeps whichever of its two runs leaves its own surrogate,
    trained on what the defence keeps (with the defence's weights and anchors), less accurate on
    the test nodes; no defence to judge by: the first run."""
    from kces.experiments.attacks import vote_links

    graph, seen = tiny.graph, []
    anchor, scale = sp.identity(graph.num_nodes, format="csr") * 0.5, (lambda pairs: torch.ones(pairs.shape[1]))

    def surrogate(judged, seed, epochs, nodes, edge_scale, anchors):
        assert edge_scale is scale and anchors is anchor and np.array_equal(nodes, graph.idx_test) and epochs == 7
        seen.append(judged.adj)
        return accuracies[len(seen) - 1]

    monkeypatch.setattr(attacks, "_surrogate_accuracy", surrogate)
    for accuracies in ([0.9, 0.1], [0.1, 0.9]):
        seen.clear()
        adj = vote_links(graph, 0.5, 0, lambda adj: adj, epochs=7, scale=scale, anchor=anchor)
        assert len(seen) == 2 and (seen[0] != seen[1]).nnz > 0
        assert (adj != seen[int(np.argmin(accuracies))]).nnz == 0
    seen.clear()
    plain = vote_links(graph, 0.5, 0)
    rebuilt = vote_links(graph, 0.5, 0, lambda adj: sp.csr_matrix(adj.toarray() * 0.5 + 0.1))  # SVD-like
    assert (plain != rebuilt).nnz == 0 and not seen  # nothing to judge: the first run, no surrogate trained
