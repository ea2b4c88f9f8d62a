"""Data loading against DeepRobust on the same files, and the evaluation yardsticks."""

import contextlib
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.utils import is_undirected, stochastic_blockmodel_graph

from kces.adapters import edge_difference
from kces.experiments.attacks import dice_attack
from kces.experiments.datasets import EMBEDDED_ROOT, Graph, find_file, load_graph
from kces.experiments.defences import jaccard_prune
from kces.experiments.metrics import pruning_quality
from kces.experiments.models import accuracy
from kces.formats import read_sparse_npz

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def no_env_root(monkeypatch):
    monkeypatch.delenv("KCES_DATA", raising=False)


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def deeprobust_load(root: Path, name: str, rate: float):
    """DeepRobust's own loaders on a flat directory holding its three files (no download)."""
    with quiet():
        dr_data = pytest.importorskip("deeprobust.graph.data")
        clean = dr_data.Dataset(root=str(root), name=name, setting="prognn")
        perturbed = dr_data.PrePtbDataset(root=str(root), name=name, attack_method="meta", ptb_rate=rate)
    return clean, perturbed


def flat_copy(base: Path, name: str, rate: float, target: Path) -> Path:
    files = [f"npz/{name}.npz", f"prognn/splits/{name}_prognn_splits.json",
             f"prognn/meta/{name}_meta_adj_{rate:g}.npz"]
    for rel in files:
        shutil.copy(base / rel, target / Path(rel).name)
    return target


def sparse_equal(a, b) -> bool:
    return a.shape == b.shape and (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz == 0


def assert_matches_deeprobust(graph: Graph, clean, perturbed):
    assert sparse_equal(graph.clean_adj, clean.adj)
    assert sparse_equal(graph.features, clean.features)
    assert graph.features.dtype == clean.features.dtype == np.float32
    assert np.array_equal(graph.labels, clean.labels)
    for ours, theirs in ((graph.idx_train, clean.idx_train), (graph.idx_val, clean.idx_val),
                         (graph.idx_test, clean.idx_test)):
        assert np.array_equal(ours, theirs)
    assert sparse_equal(graph.adj, perturbed.adj)
    assert not sparse_equal(graph.adj, graph.clean_adj)


def test_cora_matches_deeprobust(tmp_path, no_env_root):
    root = flat_copy(EMBEDDED_ROOT, "cora", 0.2, tmp_path)
    clean, perturbed = deeprobust_load(root, "cora", 0.2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cora.npz", "cora_prognn_splits.json", "cora_meta_adj_0.2.npz"])  # nothing was downloaded
    graph = load_graph("cora", "meta", 0.2)  # found among the embedded files
    assert graph.num_nodes == 2485
    assert_matches_deeprobust(graph, clean, perturbed)
    clean_only = load_graph("cora")
    assert sparse_equal(clean_only.adj, clean.adj) and sparse_equal(clean_only.clean_adj, clean.adj)
    assert len(clean_only.inserted_edges()) == 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not available")
@pytest.mark.parametrize("name", ["citeseer", "polblogs"])
def test_shared_graphs_match_deeprobust(tmp_path, name):
    root = flat_copy(SHARED, name, 0.2, tmp_path)
    clean, perturbed = deeprobust_load(root, name, 0.2)
    graph = load_graph(name, "meta", 0.2, root=SHARED)
    assert_matches_deeprobust(graph, clean, perturbed)
    if name == "polblogs":  # featureless: as DeepRobust, the LCC's rows of the full graph's identity
        features = graph.features.tocoo()
        assert features.shape[0] == graph.num_nodes < features.shape[1]
        assert np.all(features.data == 1) and features.nnz == graph.num_nodes
        assert len(np.unique(features.col)) == graph.num_nodes and np.all(np.diff(features.col) > 0)
        from kces.labels import is_identity_like
        assert is_identity_like(torch.from_numpy(graph.features.toarray()))


def test_graph_invariants_and_to_pyg(no_env_root):
    graph = load_graph("cora", "meta", 0.2)
    for adj in (graph.adj, graph.clean_adj):
        assert adj.dtype == np.float32 and adj.format == "csr"
        assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0 and set(np.unique(adj.data)) == {1.0}
    assert graph.labels.dtype == np.int64
    data = graph.to_pyg()
    n = graph.num_nodes
    assert data.num_nodes == n and data.x.shape == (n, 1433) and data.x.dtype == torch.float32
    assert np.array_equal(data.x.numpy(), graph.features.toarray())
    assert np.array_equal(data.y.numpy(), graph.labels)
    rebuilt = sp.csr_matrix((np.ones(data.edge_index.shape[1]), data.edge_index.numpy()), shape=(n, n))
    assert sparse_equal(rebuilt, graph.adj) and data.edge_index.shape[1] == graph.adj.nnz
    assert is_undirected(data.edge_index)
    for key, idx in (("train_mask", graph.idx_train), ("val_mask", graph.idx_val), ("test_mask", graph.idx_test)):
        mask = data[key]
        assert mask.dtype == torch.bool and int(mask.sum()) == len(idx)
        assert np.array_equal(np.flatnonzero(mask.numpy()), np.sort(idx))
    assert not (data.train_mask & data.test_mask).any()
    # with_adj swaps only the adjacency
    other = graph.with_adj(graph.clean_adj.astype(np.float64))
    assert other.adj.dtype == np.float32 and sparse_equal(other.adj, graph.clean_adj)
    assert other.features is graph.features and len(other.inserted_edges()) == 0


def test_edge_difference():
    a = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 0, 2], [1, 0, 0, 1], [0, 2, 1, 0]], dtype=np.float32))
    b = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]], dtype=np.float32))
    assert edge_difference(a, b).tolist() == [[0, 2], [1, 3]]
    assert edge_difference(b, a).tolist() == [[0, 3]]
    assert edge_difference(a, a).shape == (0, 2)
    assert edge_difference(a, b).dtype == np.int64


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data file 'npz/nosuch\.npz' not found.*--data-root DIR"):
        find_file("npz/nosuch.npz", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="cora.npz"):
        load_graph("cora", root=tmp_path)
    (tmp_path / "npz").mkdir()
    shutil.copy(EMBEDDED_ROOT / "npz" / "cora.npz", tmp_path / "npz" / "cora.npz")
    with pytest.raises(FileNotFoundError, match="cora_prognn_splits.json"):
        load_graph("cora", root=tmp_path)
    assert find_file("npz/cora.npz", root=tmp_path) == tmp_path / "npz" / "cora.npz"


def test_shared_data_is_found_beside_the_repository_from_any_directory(tmp_path, monkeypatch, no_env_root):
    from kces.experiments.datasets import SHARED_ROOT

    monkeypatch.chdir(tmp_path)
    if not (SHARED_ROOT / "npz" / "citeseer.npz").is_file():
        pytest.skip("needs ../shared/data")
    assert find_file("npz/citeseer.npz") == SHARED_ROOT / "npz" / "citeseer.npz"


def test_environment_root_comes_first(tmp_path, monkeypatch):
    (tmp_path / "npz").mkdir()
    shutil.copy(EMBEDDED_ROOT / "npz" / "cora.npz", tmp_path / "npz" / "cora.npz")
    monkeypatch.setenv("KCES_DATA", str(tmp_path))
    assert find_file("npz/cora.npz") == tmp_path / "npz" / "cora.npz"
    monkeypatch.delenv("KCES_DATA")
    assert find_file("npz/cora.npz") == EMBEDDED_ROOT / "npz" / "cora.npz"


def test_read_sparse_npz_roundtrip_and_refuses_pickles(tmp_path):
    g = np.random.default_rng(0)
    dense = (g.random((6, 5)) < 0.4) * g.integers(1, 4, (6, 5))
    for fmt in ("csr", "csc"):
        path = tmp_path / f"m_{fmt}.npz"
        sp.save_npz(path, sp.csr_matrix(dense).asformat(fmt))
        got = read_sparse_npz(path)
        assert got.format == "csr" and got.dtype == np.float32
        assert np.array_equal(got.toarray(), dense.astype(np.float32))
    path = tmp_path / "coo.npz"
    sp.save_npz(path, sp.coo_matrix(dense))
    with pytest.raises(ValueError, match="unsupported sparse format 'coo'"):
        read_sparse_npz(path)
    # a file whose arrays need unpickling is refused, not executed
    m = sp.csr_matrix(dense)
    path = tmp_path / "pickled.npz"
    np.savez(path, format=np.array("csr"), shape=np.array(m.shape), indices=m.indices, indptr=m.indptr,
             data=np.array(list(m.data), dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_sparse_npz(path)
    path = tmp_path / "pickled_format.npz"
    np.savez(path, format=np.array(["csr"], dtype=object), shape=np.array(m.shape), indices=m.indices,
             indptr=m.indptr, data=m.data)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_sparse_npz(path)


# ---------------------------------------------------------------- evaluation

def test_gcn_accuracy_on_clean_cora(no_env_root):
    graph = load_graph("cora")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        acc = accuracy(graph, "gcn", "adam", seed=0)
        assert 0.8 < acc <= 1.0
        # a given node set; the training nodes are fit well
        train_acc = accuracy(graph, "gcn", "adam", seed=0, nodes=graph.idx_train, epochs=50)
    assert train_acc > 0.8


def random_binary_problem(seed, n=16, d=10):
    g = np.random.default_rng(seed)
    upper = np.triu(g.random((n, n)) < 0.35, k=1)
    adj = sp.csr_matrix((upper | upper.T).astype(np.float32))
    feats = (g.random((n, d)) < 0.3).astype(np.float32) * g.integers(1, 3, (n, d))
    feats[3] = 0  # a featureless node: Jaccard 0 with everyone
    return adj, sp.csr_matrix(feats)


@pytest.mark.parametrize("threshold", [0.01, 0.1, 0.25])
def test_jaccard_prune_matches_brute_force(threshold):
    adj, feats = random_binary_problem(int(threshold * 100))
    out = jaccard_prune(adj, feats, threshold)
    binary = feats.toarray() != 0
    expected = set()
    for i in range(adj.shape[0]):
        for j in range(i + 1, adj.shape[0]):
            if adj[i, j]:
                inter, union = np.sum(binary[i] & binary[j]), np.sum(binary[i] | binary[j])
                if (inter / union if union else 0.0) >= threshold:
                    expected.add((i, j))
    kept = {tuple(e) for e in np.argwhere(np.triu(out.toarray(), k=1) != 0).tolist()}
    assert kept == expected
    assert (out != out.T).nnz == 0 and out.diagonal().sum() == 0
    assert len(expected) < adj.nnz // 2  # something was pruned
    assert not any(3 in e for e in kept)


def sbm_adjacency(seed=0):
    torch.manual_seed(seed)
    probs = torch.full((3, 3), 0.03) + torch.eye(3) * 0.3
    edge_index = stochastic_blockmodel_graph([20, 20, 20], probs)
    adj = sp.csr_matrix((np.ones(edge_index.shape[1], dtype=np.float32), edge_index.numpy()), shape=(60, 60))
    return adj, np.repeat(np.arange(3), 20)


def test_dice_attack():
    adj, labels = sbm_adjacency()
    adj_copy = adj.copy()
    m = adj.nnz // 2
    a = dice_attack(adj, labels, 0.2, seed=1)
    b = dice_attack(adj, labels, 0.2, seed=1)
    c = dice_attack(adj, labels, 0.2, seed=2)
    assert sparse_equal(a, b)
    assert not sparse_equal(a, c)
    assert sparse_equal(adj, adj_copy)  # input untouched
    for out in (a, c):
        assert (out != out.T).nnz == 0 and out.diagonal().sum() == 0
        removed, inserted = edge_difference(adj, out), edge_difference(out, adj)
        assert len(removed) + len(inserted) == round(0.2 * m)
        assert len(removed) > 0 and len(inserted) > 0
        assert all(labels[i] == labels[j] for i, j in removed)
        assert all(labels[i] != labels[j] for i, j in inserted)
    assert dice_attack(adj, labels, 0.0, seed=1).nnz == adj.nnz


def test_pruning_quality():
    clean, labels = sbm_adjacency(1)
    attacked = dice_attack(clean, labels, 0.3, seed=0)
    graph = Graph(name="toy", adj=attacked, features=sp.eye(60, format="csr"), labels=labels,
                  idx_train=np.arange(5), idx_val=np.arange(5, 10), idx_test=np.arange(10, 60), clean_adj=clean)
    inserted = graph.inserted_edges()
    assert len(inserted) > 2
    # prune two inserted edges and one clean edge
    clean_edge = next(e for e in edge_difference(attacked, sp.csr_matrix(attacked.shape)).tolist()
                      if tuple(e) not in {tuple(i) for i in inserted.tolist()})
    pruned = attacked.tolil()
    for i, j in [*inserted[:2].tolist(), clean_edge]:
        pruned[i, j] = pruned[j, i] = 0
    q = pruning_quality(graph, pruned.tocsr())
    assert q["pruned"] == 3 and q["inserted"] == len(inserted)
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(2 / len(inserted))
    q = pruning_quality(graph, attacked)
    assert q["pruned"] == 0 and np.isnan(q["precision"])


@pytest.mark.parametrize("jaccard", [False, True])
def test_gcn_recipe_equals_deeprobust_gcn_and_gcnjaccard(no_env_root, jaccard):
    """The harness's GCN + Adam (and Jaccard in front) gives DeepRobust's own ``GCN`` /
    ``GCNJaccard(threshold=0.01)`` test accuracy to the digit, same seed, same random stream."""
    defense = pytest.importorskip("deeprobust.graph.defense")
    graph = load_graph("cora", "meta", 0.2)
    ours = graph.with_adj(jaccard_prune(graph.adj, graph.features)) if jaccard else graph
    expected = accuracy(ours, "gcn", "adam", seed=0)
    torch.manual_seed(0)
    np.random.seed(0)
    cls = defense.GCNJaccard if jaccard else defense.GCN
    model = cls(nfeat=graph.features.shape[1], nhid=16, nclass=int(graph.labels.max()) + 1, device="cpu")
    with quiet():
        model.fit(graph.features, graph.adj, graph.labels, graph.idx_train, graph.idx_val,
                  **({"threshold": 0.01, "verbose": False} if jaccard else {}))
        got = model.test(graph.idx_test)
    assert got == pytest.approx(expected, abs=1e-6)
