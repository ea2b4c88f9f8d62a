"""The faces of KCES: the PyG transform, ``sanitize``/``kc_scores`` on ``edge_index``, scipy /
numpy adjacencies (DeepRobust style) and networkx graphs; plus the embedded Cora Metattack."""

import copy
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.utils import is_undirected, stochastic_blockmodel_graph, to_undirected

import kces
from kces import KCES
from kces.adapters import edge_difference
from kces.experiments.datasets import load_graph
from kces.experiments.metrics import pruning_quality


# ---------------------------------------------------------------- a planted problem

N_PER_CLASS, CLASSES = 12, 3
N = N_PER_CLASS * CLASSES


def sbm_problem(seed=0):
    """SBM with class-correlated features, 4 training nodes per class and 4 planted
    inter-class edges, each touching a training node. Returns (Data, planted pairs)."""
    torch.manual_seed(seed)
    probs = torch.full((CLASSES, CLASSES), 0.01) + torch.eye(CLASSES) * 0.34
    edge_index = stochastic_blockmodel_graph([N_PER_CLASS] * CLASSES, probs)
    y = torch.arange(CLASSES).repeat_interleave(N_PER_CLASS)
    centroids = torch.randn(CLASSES, 8) * 2
    x = centroids[y] + 0.5 * torch.randn(N, 8)
    train_mask = torch.zeros(N, dtype=torch.bool)
    train_mask[torch.cat([torch.arange(c * N_PER_CLASS, c * N_PER_CLASS + 4) for c in range(CLASSES)])] = True
    existing = {(int(a), int(b)) for a, b in edge_index.T}
    planted = []
    for t, v in [(0, 20), (13, 30), (25, 5), (2, 33)]:  # training node t, node v of another class
        assert train_mask[t] and y[t] != y[v] and (t, v) not in existing
        planted.append((min(t, v), max(t, v)))
    extra = torch.tensor(planted).T
    edge_index = to_undirected(torch.cat([edge_index, extra], dim=1), num_nodes=N)
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train_mask), planted


def undirected_set(edge_index):
    return {(min(int(a), int(b)), max(int(a), int(b))) for a, b in edge_index.T}


def with_attributes(data):
    """Adds edge-level, node-level and graph-level attributes of several kinds."""
    e = data.edge_index.shape[1]
    g = torch.Generator().manual_seed(0)
    pair_weight = {}
    weight = torch.empty(e)
    for c, (a, b) in enumerate(data.edge_index.T.tolist()):
        key = (min(a, b), max(a, b))
        if key not in pair_weight:
            pair_weight[key] = float(torch.rand(1, generator=g)) + 0.5
        weight[c] = pair_weight[key]
    out = data.clone()
    out.edge_attr = torch.randn(e, 2, generator=g)
    out.edge_weight = weight
    out.edge_type = torch.randint(0, 5, (e,), generator=g)
    out.val_mask = ~data.train_mask
    out.node_feature = torch.randn(N, 5, generator=g)
    out.graph_feature = torch.randn(1, 4, generator=g)
    out.name = "planted-sbm"
    out.num_classes = CLASSES
    out.meta = {"source": "test", "version": 3}
    return out


def snapshot(data):
    return {key: value.clone() if torch.is_tensor(value) else copy.deepcopy(value) for key, value in data.items()}


def assert_same(data, snap):
    assert sorted(data.keys()) == sorted(snap.keys())
    for key, value in snap.items():
        if torch.is_tensor(value):
            assert data[key].dtype == value.dtype and torch.equal(data[key], value), key
        else:
            assert data[key] == value, key


# ---------------------------------------------------------------- the transform

def test_transform_prunes_the_planted_edges_and_keeps_most_others():
    data, planted = sbm_problem()
    out = KCES(store_scores=True)(data)
    kept, pruned = undirected_set(out.edge_index), undirected_set(out.pruned_edge_index)
    assert set(planted) <= pruned
    assert not set(planted) & kept
    assert kept | pruned == undirected_set(data.edge_index) and not kept & pruned
    y = data.y
    intra = {p for p in undirected_set(data.edge_index) if y[p[0]] == y[p[1]]}
    assert len(intra & kept) >= 0.8 * len(intra)


def test_transform_does_not_mutate_its_input():
    data = with_attributes(sbm_problem()[0])
    snap = snapshot(data)
    out = KCES(store_scores=True)(data)
    assert_same(data, snap)
    assert out is not data
    assert out.edge_index.shape[1] < data.edge_index.shape[1]
    assert "kc_score" not in data and "pruned_edge_index" not in data


def test_transform_keeps_other_attributes_and_aligns_edge_attributes():
    data = with_attributes(sbm_problem()[0])
    out = KCES()(data)
    # node- and graph-level attributes are untouched
    for key in ("x", "y", "train_mask", "val_mask", "node_feature", "graph_feature"):
        assert torch.equal(out[key], data[key]), key
    assert out.name == data.name and out.num_classes == CLASSES and out.meta == data.meta
    assert out.num_nodes == N
    # edge-level attributes follow their edges
    e_out = out.edge_index.shape[1]
    assert 0 < e_out < data.edge_index.shape[1]
    assert out.edge_attr.shape == (e_out, 2) and out.edge_weight.shape == (e_out,) and out.edge_type.shape == (e_out,)
    before = {tuple(p): (a.tolist(), float(w), int(t)) for p, a, w, t in
              zip(data.edge_index.T.tolist(), data.edge_attr, data.edge_weight, data.edge_type)}
    scaled = 0
    for p, a, w, t in zip(out.edge_index.T.tolist(), out.edge_attr, out.edge_weight, out.edge_type):
        attr, weight, kind = before[tuple(p)]
        assert (a.tolist(), int(t)) == (attr, kind) and float(w) in (weight, 0.25 * weight)
        scaled += float(w) != weight
    assert scaled > 0  # the default quarters the edges between unlabelled nodes whose feature labels disagree
    # still undirected, with symmetric weights
    assert is_undirected(out.edge_index, out.edge_weight, num_nodes=N)
    assert is_undirected(out.edge_index, num_nodes=N)


def test_transform_honours_edge_weight():
    data = with_attributes(sbm_problem()[0])
    out = KCES(store_scores=True, pruning=dict(label_check=False))(data)
    expected = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask, edge_weight=data.edge_weight)
    unweighted = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask)
    keep = ~torch.isin(data.edge_index[0] * N + data.edge_index[1],
                       out.pruned_edge_index[0] * N + out.pruned_edge_index[1])
    torch.testing.assert_close(out.kc_score, expected[keep])
    assert not torch.allclose(expected, unweighted, rtol=1e-3)


def test_transform_is_deterministic():
    data = with_attributes(sbm_problem()[0])
    a, b = KCES(store_scores=True)(data), KCES(store_scores=True)(data)
    assert sorted(a.keys()) == sorted(b.keys())
    for key in ("edge_index", "edge_attr", "edge_weight", "kc_score", "pruned_edge_index"):
        assert torch.equal(a[key], b[key]), key


def test_store_scores():
    data, _ = sbm_problem()
    out = KCES(store_scores=True)(data)
    plain = KCES()(data)
    assert "kc_score" not in plain and "pruned_edge_index" not in plain
    assert torch.equal(plain.edge_index, out.edge_index)
    e_out, p = out.edge_index.shape[1], out.pruned_edge_index.shape[1]
    assert out.kc_score.shape == (e_out,) and out.pruned_edge_index.shape == (2, p)
    assert e_out + p == data.edge_index.shape[1] and p > 0
    scores = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask)
    result = kces.sanitize(data.edge_index, data.x, data.y, data.train_mask)
    torch.testing.assert_close(out.kc_score, scores[result.edge_mask], rtol=0, atol=0)
    assert torch.equal(out.pruned_edge_index, data.edge_index[:, ~result.edge_mask])
    assert is_undirected(out.pruned_edge_index)


def test_ratio_zero_keeps_everything_and_ratio_one_prunes_everything():
    data = with_attributes(sbm_problem()[0])
    keep_all = KCES(pruning=dict(ratio=0.0, label_check=False))(data)
    assert torch.equal(keep_all.edge_index, data.edge_index)
    assert torch.equal(keep_all.edge_attr, data.edge_attr)
    drop_all = KCES(pruning=dict(ratio=1.0, candidates="all", label_check=False))(data)
    assert drop_all.edge_index.shape == (2, 0)
    assert drop_all.edge_attr.shape == (0, 2) and drop_all.edge_weight.shape == (0,)
    assert drop_all.num_nodes == N and torch.equal(drop_all.x, data.x)


def test_ratio_prunes_the_highest_scores():
    data, _ = sbm_problem()
    scores = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask)
    m = data.edge_index.shape[1] // 2
    ratio = 8.7 / m  # round(ratio * m) = 9, not the truncated 8
    out = KCES(pruning=dict(ratio=ratio, candidates="all", label_check=False), store_scores=True)(data)
    pruned = undirected_set(out.pruned_edge_index)
    assert len(pruned) == round(ratio * m) == 9
    kept_scores = out.kc_score
    pruned_mask = torch.isin(data.edge_index[0] * N + data.edge_index[1],
                             out.pruned_edge_index[0] * N + out.pruned_edge_index[1])
    assert scores[pruned_mask].min() >= kept_scores.max()


def test_thresholds():
    data, _ = sbm_problem()
    scores = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask)
    touches_train = data.train_mask[data.edge_index[0]] | data.train_mask[data.edge_index[1]]
    # a large finite threshold prunes nothing (no label check)
    out = KCES(pruning=dict(threshold=1e12, label_check=False))(data)
    assert torch.equal(out.edge_index, data.edge_index)
    # a very low one prunes every edge: a number is a bound on the score alone
    out = KCES(pruning=dict(threshold=-1e12))(data)
    assert out.edge_index.shape == (2, 0)
    # the label check alone (threshold=None) prunes only candidates: edges touching a training node
    out = KCES(pruning=dict(threshold=None))(data)
    assert out.edge_index.shape[1] < data.edge_index.shape[1]
    assert bool(touches_train[~torch.isin(data.edge_index[0] * N + data.edge_index[1],
                                          out.edge_index[0] * N + out.edge_index[1])].all())
    # the "auto" rule: prune candidates with KC above twice the mean absolute KC
    out = KCES(pruning=dict(label_check=False, candidates="all"))(data)
    assert torch.equal(out.edge_index, data.edge_index[:, ~(scores > 2 * scores.abs().mean())])
    # threshold=None and no label check prunes nothing
    out = KCES(pruning=dict(threshold=None, label_check=False))(data)
    assert torch.equal(out.edge_index, data.edge_index)
    with pytest.raises(ValueError, match="finite"):
        KCES(pruning=dict(threshold=float("inf")))


def test_engines_through_the_transform():
    data, planted = sbm_problem()
    data64 = Data(x=data.x.double(), edge_index=data.edge_index, y=data.y, train_mask=data.train_mask)
    outs = {engine: KCES(complexity=dict(engine=engine), store_scores=True)(data64)
            for engine in ("first_order", "exact", "woodbury")}
    assert torch.equal(outs["woodbury"].edge_index, outs["exact"].edge_index)
    torch.testing.assert_close(outs["woodbury"].kc_score, outs["exact"].kc_score, rtol=1e-8, atol=1e-10)
    for out in outs.values():
        assert out.kc_score.dtype == torch.float64
        assert set(planted) <= undirected_set(out.pruned_edge_index)


def test_compose_and_dataset_transform():
    data, _ = sbm_problem()
    direct = KCES()(data)
    composed = T.Compose([T.NormalizeFeatures(), KCES()])(data)
    after_norm = KCES()(T.NormalizeFeatures()(data.clone()))
    assert torch.equal(composed.edge_index, after_norm.edge_index)
    assert direct.edge_index.shape[1] < data.edge_index.shape[1]

    class Tiny(InMemoryDataset):
        def __init__(self, graphs, transform=None):
            super().__init__(None, transform)
            self.data, self.slices = self.collate(graphs)

    dataset = Tiny([data], transform=KCES())
    assert len(dataset) == 1
    assert torch.equal(dataset[0].edge_index, direct.edge_index)
    assert torch.equal(dataset[0].x, data.x)
    raw = Tiny([data])
    assert torch.equal(raw[0].edge_index, data.edge_index)


def test_repr():
    assert repr(KCES()) == "KCES(Pruning(), Complexity())"
    assert repr(KCES(pruning=dict(ratio=0.1), complexity=dict(k=2, kernel="ntk", engine="exact"))) == \
        "KCES(Pruning(ratio=0.1, threshold=None), Complexity(k=2, kernel='ntk', engine='exact'))"
    assert repr(KCES(pruning=dict(threshold=0.5))) == "KCES(Pruning(threshold=0.5), Complexity())"


def test_custom_label_and_mask_attributes():
    data, _ = sbm_problem()
    other = Data(x=data.x, edge_index=data.edge_index, labels=data.y, labelled=data.train_mask)
    a = KCES(label_attr="labels", mask_attr="labelled")(other)
    b = KCES()(data)
    assert torch.equal(a.edge_index, b.edge_index)


def test_isolated_nodes_are_kept():
    data, _ = sbm_problem()
    big = Data(x=torch.cat([data.x, torch.randn(3, 8)]), edge_index=data.edge_index,
               y=torch.cat([data.y, torch.tensor([0, 1, 2])]),
               train_mask=torch.cat([data.train_mask, torch.tensor([False, False, False])]))
    out = KCES(store_scores=True)(big)
    assert out.num_nodes == N + 3 and out.x.shape == (N + 3, 8)
    # unlabelled isolated nodes change no score, nor, with labels read off each node's own
    # features, any label (the default's smoothed feature labels do see their features)
    own = dict(feature_neighbours=0)
    out, small = KCES(own, store_scores=True)(big), KCES(own, store_scores=True)(data)
    assert torch.equal(out.edge_index, small.edge_index)
    torch.testing.assert_close(out.kc_score, small.kc_score)
    # an isolated training node is allowed too
    big.train_mask[N] = True
    out = KCES(pruning=dict(ratio=0.1))(big)
    assert out.num_nodes == N + 3 and 0 < out.edge_index.shape[1] < data.edge_index.shape[1]
    assert is_undirected(out.edge_index)


# ---------------------------------------------------------------- functional

def test_sanitize_functional():
    data, planted = sbm_problem()
    ei = data.edge_index
    snap = ei.clone()
    result = kces.sanitize(ei, data.x, data.y, data.train_mask)
    assert isinstance(result, kces.Sanitized)
    assert torch.equal(ei, snap)
    assert result.edge_mask.dtype == torch.bool and result.edge_mask.shape == (ei.shape[1],)
    assert torch.equal(result.edge_index, ei[:, result.edge_mask])
    torch.testing.assert_close(result.scores, kces.kc_scores(ei, data.x, data.y, data.train_mask), rtol=0, atol=0)
    # both directions of an edge go together
    kept = {tuple(p) for p in result.edge_index.T.tolist()}
    assert all((b, a) in kept for a, b in kept)
    assert not set(planted) & undirected_set(result.edge_index)
    # index-tensor train_mask is the same as the bool mask
    by_index = kces.sanitize(ei, data.x, data.y, data.train_mask.nonzero().view(-1))
    assert torch.equal(by_index.edge_mask, result.edge_mask)


def test_sanitize_without_edges():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    empty = torch.zeros(2, 0, dtype=torch.long)
    result = kces.sanitize(empty, x, y, torch.tensor([0, 1]))
    assert result.edge_index.shape == (2, 0) and result.edge_mask.shape == (0,) and result.scores.shape == (0,)
    assert kces.kc_scores(empty, x, y, torch.tensor([0, 1])).shape == (0,)


# ---------------------------------------------------------------- scipy / numpy / networkx

def adjacency(data, dtype=np.float32, weighted=False):
    row, col = data.edge_index.numpy()
    values = np.ones(row.size, dtype=dtype)
    if weighted:
        values = (1 + (np.minimum(row, col) * 7 + np.maximum(row, col)) % 5).astype(dtype)
    return sp.csr_matrix((values, (row, col)), shape=(N, N), dtype=dtype)


def removed_pairs(before, after):
    return {tuple(e) for e in edge_difference(before, after).tolist()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sanitize_adj_sparse(dtype):
    data, planted = sbm_problem()
    adj = adjacency(data, dtype)
    kept_copy = (adj.data.copy(), adj.indices.copy(), adj.indptr.copy())
    features, labels = data.x.numpy(), data.y.numpy()
    idx_train = data.train_mask.nonzero().view(-1).numpy()
    out = kces.sanitize_adj(adj, features, labels, idx_train, device="cpu")
    assert sp.issparse(out) and out.format == "csr" and out.dtype == dtype and out.shape == adj.shape
    assert (out != out.T).nnz == 0
    assert ((out != 0) > (adj != 0)).nnz == 0  # a subset of the input's edges
    assert edge_difference(out, adj).shape == (0, 2)
    for kept, array in zip(kept_copy, (adj.data, adj.indices, adj.indptr)):
        assert np.array_equal(kept, array)
    # the same edges as the functional core
    coo = adj.tocoo()
    ei = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    result = kces.sanitize(ei, data.x, data.y, torch.from_numpy(idx_train))
    expected = undirected_set(ei[:, ~result.edge_mask])
    assert removed_pairs(adj, out) == expected and set(planted) <= expected


def test_sanitize_adj_weighted_and_dense():
    data, _ = sbm_problem()
    adj = adjacency(data, np.float64, weighted=True)
    idx_train = data.train_mask.nonzero().view(-1).numpy()
    out = kces.sanitize_adj(adj, data.x.numpy(), data.y.numpy(), idx_train, device="cpu")
    kept = out.tocoo()
    factor = kept.data / np.asarray(adj[kept.row, kept.col]).ravel()
    assert set(np.unique(factor)) == {0.25, 1.0}  # weights kept, quartered where the default down-weights
    coo = adj.tocoo()
    ei = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    result = kces.sanitize(ei, data.x, data.y, torch.from_numpy(idx_train),
                           edge_weight=torch.from_numpy(coo.data.astype(np.float32)))
    assert removed_pairs(adj, out) == undirected_set(ei[:, ~result.edge_mask])
    rows, cols = ei[:, result.edge_mask].numpy()
    np.testing.assert_allclose(out[rows, cols].A1, result.edge_weight.numpy(), rtol=1e-6)  # the core's weights
    # dense numpy in, dense numpy out, same edges and dtype
    dense = adj.toarray()
    dense_copy = dense.copy()
    out_dense = kces.sanitize_adj(dense, data.x.numpy(), data.y.numpy(), idx_train, device="cpu")
    assert isinstance(out_dense, np.ndarray) and out_dense.dtype == dense.dtype
    assert np.array_equal(out_dense, out.toarray())
    assert np.array_equal(dense, dense_copy)
    # scipy features and torch features are accepted alike
    out_sp = kces.sanitize_adj(adj, sp.csr_matrix(data.x.numpy()), data.y.numpy(), idx_train, device="cpu")
    out_t = kces.sanitize_adj(adj, data.x, data.y.numpy(), idx_train, device="cpu")
    assert (out_sp != out).nnz == 0 and (out_t != out).nnz == 0


def networkx_problem():
    data, planted = sbm_problem()
    graph = nx.Graph(title="planted")
    names = [f"v{i}" for i in range(N)]
    for i, name in enumerate(names):
        graph.add_node(name, club=int(data.y[i]), index=i)
    for a, b in undirected_set(data.edge_index):
        graph.add_edge(names[a], names[b], kind=f"{a}-{b}")
    train = [names[i] for i in data.train_mask.nonzero().view(-1).tolist()]
    return data, graph, names, train, planted


def test_sanitize_networkx():
    data, graph, names, train, planted = networkx_problem()
    before = nx.node_link_data(graph, edges="links")
    labels = {v: graph.nodes[v]["club"] for v in train}  # only training nodes need a label
    features = data.x.numpy()
    out = kces.sanitize_networkx(graph, labels, train, features=features, device="cpu")
    assert out is not graph and nx.node_link_data(graph, edges="links") == before
    assert list(out.nodes) == list(graph.nodes)
    assert out.graph == {"title": "planted"}
    assert all(out.nodes[v] == graph.nodes[v] for v in graph.nodes)
    # edge attributes kept; the edges the default down-weights get weight 0.25 (1 without one)
    assert all(out.edges[u, v] == {**graph.edges[u, v], **({"weight": 0.25} if "weight" in out.edges[u, v] else {})}
               for u, v in out.edges)
    assert {out.edges[e].get("weight", 1.0) for e in out.edges} == {0.25, 1.0}
    removed = {tuple(sorted((graph.nodes[u]["index"], graph.nodes[v]["index"])))
               for u, v in graph.edges if not out.has_edge(u, v)}
    assert set(planted) <= removed and len(removed) < graph.number_of_edges() / 2
    # the same as sanitize_adj on the same graph (nodes in graph order)
    adj = sp.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=list(graph.nodes)))
    idx = np.array([graph.nodes[v]["index"] for v in train])
    labels_all = np.full(N, -1)
    labels_all[idx] = [labels[v] for v in train]
    expected = removed_pairs(adj, kces.sanitize_adj(adj, features, labels_all, idx, device="cpu"))
    assert removed == expected
    # labels may be given as the name of a node attribute
    by_attr = kces.sanitize_networkx(graph, "club", train, features=features, device="cpu")
    assert set(by_attr.edges) == set(out.edges)


def test_sanitize_networkx_keeps_zero_weight_edges_it_did_not_prune():
    """Regression: an edge with ``weight=0`` never reaches KCES (zero entries are not edges
    of the adjacency) but was removed from the returned graph, even with nothing pruned."""
    data, graph, names, train, _ = networkx_problem()
    u, v = next(iter(graph.edges))
    graph.edges[u, v]["weight"] = 0.0
    labels = {w: graph.nodes[w]["club"] for w in train}
    out = kces.sanitize_networkx(graph, labels, train, features=data.x.numpy(), device="cpu",
                                 pruning=dict(ratio=0.0, label_check=False))
    assert set(out.edges) == set(graph.edges)
    assert out.edges[u, v] == {"kind": graph.edges[u, v]["kind"], "weight": 0.0}


# ---------------------------------------------------------------- embedded data

def test_embedded_cora_metattack():
    graph = load_graph("cora", "meta", 0.2)
    assert graph.num_nodes == 2485 and graph.adj.shape == (2485, 2485)
    assert graph.features.shape == (2485, 1433) and graph.labels.shape == (2485,)
    inserted = graph.inserted_edges()
    assert inserted.shape[1] == 2 and len(inserted) > 500
    sanitized = kces.sanitize_adj(graph.adj, graph.features, graph.labels, graph.idx_train, device="cpu")
    quality = pruning_quality(graph, sanitized)
    assert quality["precision"] > 0.65 and quality["recall"] > 0.9, quality
    assert (sanitized != sanitized.T).nnz == 0


# ---------------------------------------------------------------- CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sanitize_on_cuda_matches_cpu():
    data = with_attributes(sbm_problem()[0])
    args = (data.edge_index, data.x, data.y, data.train_mask)
    for engine in ("first_order", "exact", "woodbury"):
        cpu = kces.sanitize(*args, complexity=dict(engine=engine), device="cpu")
        gpu = kces.sanitize(*args, complexity=dict(engine=engine), device="cuda")
        assert gpu.scores.device.type == "cuda" and gpu.edge_mask.device.type == "cpu"
        assert torch.equal(gpu.edge_mask, cpu.edge_mask)
        torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, rtol=1e-3, atol=1e-4)
    # data living on the GPU, with edge weights (PyG's Data.to moves in place: move a clone)
    ref = KCES(store_scores=True)(data)
    on_gpu = data.clone().to("cuda")
    assert data.x.device.type == "cpu"
    out = KCES(store_scores=True)(on_gpu)
    assert out.edge_index.device.type == "cuda"
    assert torch.equal(out.edge_index.cpu(), ref.edge_index)
    torch.testing.assert_close(out.edge_weight.cpu(), ref.edge_weight)


def test_ratio_and_threshold_mean_what_they_say():
    """``ratio=r`` prunes exactly round(r·m) undirected edges (label-flagged candidates first,
    then candidates, then the rest, each by KC); ``threshold=t`` exactly the edges scoring above t."""
    data = with_attributes(sbm_problem()[0])
    m = data.edge_index.shape[1] // 2
    scores = kces.kc_scores(data.edge_index, data.x, data.y, data.train_mask)
    default = kces.sanitize(data.edge_index, data.x, data.y, data.train_mask)
    flagged = undirected_set(data.edge_index[:, ~default.edge_mask])
    for ratio in (0.0, 0.01, 0.1, 0.5, 1.0):
        out = kces.sanitize(data.edge_index, data.x, data.y, data.train_mask, pruning=dict(ratio=ratio))
        pruned = undirected_set(data.edge_index[:, ~out.edge_mask])
        assert len(pruned) == round(ratio * m)
        assert pruned <= flagged or flagged <= pruned  # the default's evidence ranks first
    for t in (1e9, 0.0, float(scores.median()), -1e9):
        out = kces.sanitize(data.edge_index, data.x, data.y, data.train_mask, pruning=dict(threshold=t))
        assert torch.equal(out.edge_mask, ~(scores > t))


def test_planetoid_random_split_survives_the_transform(tmp_path):
    """``Planetoid(split="random")`` reads ``num_classes`` through the transform while every
    mask is still empty; then the split is drawn and the transform sanitizes every access."""
    import shutil
    import warnings

    from torch_geometric.datasets import Planetoid

    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "planetoid" / "cora" / "raw"
    if not raw.is_dir():
        pytest.skip("needs ../shared/data/planetoid")
    shutil.copytree(raw, tmp_path / "Cora" / "raw")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        dataset = Planetoid(str(tmp_path), "Cora", split="random", transform=KCES())
    assert dataset.num_classes == 7
    data = dataset[0]
    assert int(data.train_mask.sum()) == 140
    assert data.edge_index.shape[1] < dataset._data.edge_index.shape[1]


# ---------------------------------------------------------------- re-weighting instead of pruning

def unlabelled_disagreement_reference(data):
    """(E,) bool per column: both endpoints unlabelled and their top feature classes (the default's,
    smoothed over 20 feature neighbours) differ."""
    from kces.labels import feature_class_scores

    train = data.train_mask
    label = feature_class_scores(data.x, data.y, train.nonzero().view(-1), CLASSES, neighbours=20).argmax(1)
    u, v = data.edge_index
    return ~train[u] & ~train[v] & (label[u] != label[v])


def noisy_problem():
    """The planted problem with noisier features, so that some unlabelled neighbours' feature labels disagree."""
    data = with_attributes(sbm_problem()[0])
    data.x = data.x + 2.0 * torch.randn(data.x.shape, generator=torch.Generator().manual_seed(1))
    return data


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_unlabelled_weight_against_a_reference(weight):
    data = noisy_problem()
    flagged = unlabelled_disagreement_reference(data)
    assert 0 < int(flagged.sum()) < flagged.numel() / 2
    args = (data.edge_index, data.x, data.y, data.train_mask)
    plain = kces.sanitize(*args, edge_weight=data.edge_weight, pruning=dict(unlabelled_weight=1.0))
    assert plain.edge_weight is None
    result = kces.sanitize(*args, edge_weight=data.edge_weight, pruning=dict(unlabelled_weight=weight))
    assert torch.equal(result.edge_mask, plain.edge_mask & (~flagged if weight == 0 else True))
    expected = (data.edge_weight * torch.where(flagged, weight, 1.0))[result.edge_mask]
    torch.testing.assert_close(result.edge_weight, expected)
    unweighted = kces.sanitize(*args, pruning=dict(unlabelled_weight=weight))
    torch.testing.assert_close(unweighted.edge_weight, torch.where(flagged, weight, 1.0)[result.edge_mask])


def test_unlabelled_weight_through_the_faces():
    data = noisy_problem()
    flagged = unlabelled_disagreement_reference(data)
    snap = snapshot(data)
    pruning = kces.Pruning(unlabelled_weight=0.25)
    out = KCES(pruning)(data)
    assert_same(data, snap)
    result = kces.sanitize(data.edge_index, data.x, data.y, data.train_mask, edge_weight=data.edge_weight,
                           pruning=pruning)
    assert torch.equal(out.edge_index, result.edge_index) and torch.equal(out.edge_weight, result.edge_weight)
    assert torch.equal(out.edge_attr, data.edge_attr[result.edge_mask])
    # scipy: the kept entries carry the new weights
    adj = sp.csr_matrix((np.ones(data.edge_index.shape[1]), data.edge_index.numpy()), shape=(N, N))
    idx = data.train_mask.nonzero().view(-1).numpy()
    sanitized = kces.sanitize_adj(adj, data.x.numpy(), data.y.numpy(), idx, pruning=pruning, device="cpu")
    plain = kces.sanitize_adj(adj, data.x.numpy(), data.y.numpy(), idx, pruning=dict(unlabelled_weight=1.0),
                              device="cpu")
    u, v = data.edge_index.numpy()
    expected = np.where(flagged.numpy(), 0.25, 1.0) * np.asarray(plain[u, v]).ravel()
    np.testing.assert_allclose(np.asarray(sanitized[u, v]).ravel(), expected, rtol=1e-6)
    assert (sanitized != sanitized.T).nnz == 0
    # networkx: the re-weighted edges get the new weight, the others keep their attributes
    graph = nx.Graph()
    graph.add_nodes_from(range(N))
    graph.add_edges_from(undirected_set(data.edge_index), kind="road")
    labels = {int(i): int(data.y[i]) for i in idx}
    out = kces.sanitize_networkx(graph, labels, idx.tolist(), features=data.x.numpy(), pruning=pruning,
                                 device="cpu")
    assert "weight" not in graph.edges[next(iter(graph.edges))]
    for a, b in out.edges:
        assert out.edges[a, b] == ({"kind": "road", "weight": 0.25} if sanitized[a, b] == 0.25 else {"kind": "road"})
    assert {(min(a, b), max(a, b)) for a, b in out.edges} == set(zip(*sp.triu(sanitized, k=1).nonzero()))


def test_unlabelled_weight_on_a_featureless_graph_follows_the_structural_check():
    from kces.labels import label_disagreement

    data = noisy_problem()
    train = data.train_mask
    result = kces.sanitize(data.edge_index, None, data.y, train, pruning=dict(unlabelled_weight=0.5))
    plain = kces.sanitize(data.edge_index, None, data.y, train, pruning=dict(unlabelled_weight=1.0))
    assert plain.edge_weight is None
    pairs = data.edge_index[:, data.edge_index[0] < data.edge_index[1]]  # each undirected edge once
    structural = label_disagreement(pairs, torch.eye(N), data.y, train.nonzero().view(-1), CLASSES)
    disagree = {(int(a), int(b)) for (a, b), flag in zip(pairs.T, structural) if flag}
    u, v = data.edge_index
    flagged = ~train[u] & ~train[v] & torch.tensor([(min(a, b), max(a, b)) in disagree
                                                    for a, b in data.edge_index.T.tolist()])
    assert flagged.any() and torch.equal(result.edge_mask, plain.edge_mask)
    torch.testing.assert_close(result.edge_weight, torch.where(flagged, 0.5, 1.0)[result.edge_mask])


def test_unlabelled_weight_auto_is_a_quarter_with_and_without_features():
    from kces.prune import AUTO_UNLABELLED_WEIGHT

    assert AUTO_UNLABELLED_WEIGHT == {"features": 0.25, "featureless": 0.25}
    data = noisy_problem()
    args = (data.edge_index, data.y, data.train_mask)
    for x, weight in ((None, 0.25), (data.x, 0.25)):
        auto = kces.sanitize(args[0], x, *args[1:])
        explicit = kces.sanitize(args[0], x, *args[1:], pruning=dict(unlabelled_weight=weight))
        assert set(auto.edge_weight.tolist()) == {weight, 1.0}
        assert torch.equal(auto.edge_mask, explicit.edge_mask) and torch.equal(auto.edge_weight, explicit.edge_weight)
    assert kces.sanitize(args[0], data.x, *args[1:], pruning=dict(label_check=False)).edge_weight is None
    assert kces.sanitize(args[0], None, *args[1:], pruning=dict(label_check=False)).edge_weight is None
    assert repr(kces.Pruning(unlabelled_weight=0.25)) == "Pruning(unlabelled_weight=0.25)"


@pytest.mark.parametrize("value, error", [(1.5, ValueError), (-0.1, ValueError), ("half", ValueError),
                                          ([0.5], TypeError)])
def test_unlabelled_weight_is_validated(value, error):
    with pytest.raises(error, match="unlabelled_weight"):
        kces.Pruning(unlabelled_weight=value)
    with pytest.raises(ValueError, match="label_check"):
        kces.Pruning(unlabelled_weight=0.5, label_check=False)


# ---------------------------------------------------------------- smoothed feature labels

def test_feature_neighbours_auto_smooths_over_20_up_to_the_size_bound(monkeypatch):
    from kces import prune

    assert (prune.AUTO_FEATURE_NEIGHBOURS, prune.FEATURE_NEIGHBOURS_MAX_NODES) == (20, 20_000)
    data = noisy_problem()
    args = (data.edge_index, data.x, data.y, data.train_mask)
    auto = kces.sanitize(*args)
    explicit = kces.sanitize(*args, pruning=dict(feature_neighbours=20))
    own = kces.sanitize(*args, pruning=dict(feature_neighbours=0))
    assert torch.equal(auto.edge_mask, explicit.edge_mask) and torch.equal(auto.edge_weight, explicit.edge_weight)
    # the smoothed labels flag other edges than each node's own features do
    assert not (torch.equal(auto.edge_mask, own.edge_mask) and torch.equal(auto.edge_weight, own.edge_weight))
    # above the bound "auto" reads each node's own features, and says so
    monkeypatch.setattr(prune, "FEATURE_NEIGHBOURS_MAX_NODES", N - 1)
    with pytest.warns(UserWarning, match="feature_neighbours='auto' reads each node's own features"):
        large = kces.sanitize(*args)
    assert torch.equal(large.edge_mask, own.edge_mask) and torch.equal(large.edge_weight, own.edge_weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit value, a featureless graph: no warning
        assert torch.equal(kces.sanitize(*args, pruning=dict(feature_neighbours=20)).edge_mask, explicit.edge_mask)
        kces.sanitize(data.edge_index, None, data.y, data.train_mask)
    assert prune.feature_neighbours(kces.Pruning(label_check=False), 10) == 0


@pytest.mark.parametrize("value, error", [(-1, ValueError), (2.5, ValueError), ("many", ValueError),
                                          (True, ValueError), (None, ValueError)])
def test_feature_neighbours_is_validated(value, error):
    with pytest.raises(error, match="feature_neighbours"):
        kces.Pruning(feature_neighbours=value)
    assert kces.Pruning(feature_neighbours=np.int64(5)).feature_neighbours == 5
