"""Feature anchors (:mod:`kces.anchors`) and their faces: against slow references on small random
graphs, the PyG transform, the scipy/numpy face, bad inputs."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data, HeteroData
from torch_geometric.utils import to_undirected

import kces
from kces import Anchoring, FeatureAnchors
from kces.anchors import join_anchors
from kces.neighbours import feature_neighbour_pairs


def random_problem(seed=0, n=40, d=12, classes=3):
    """Binary features (many exact cosine ties), labels, 3 training nodes per class, a random
    undirected graph."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = (torch.rand(n, d, generator=g) < 0.3).float()
    x[torch.arange(n), y] = 1.0  # no node without features
    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[:3 * classes] = True
    upper = torch.triu(torch.rand(n, n, generator=g) < 0.08, 1).nonzero().T
    return x, y, train_mask, to_undirected(upper, num_nodes=n)


def reference_pairs(x, k):
    """The anchors by definition, one node at a time: its k nearest others by cosine (float64,
    rounded to float32; ties by index), positive only; pairs (i < j)."""
    x = x.double().numpy()
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pairs = set()
    for i in range(x.shape[0]):
        cosine = (unit @ unit[i]).astype(np.float32)
        others = sorted((j for j in range(x.shape[0]) if j != i), key=lambda j: (-cosine[j], j))
        pairs |= {(min(i, j), max(i, j)) for j in others[:k] if cosine[j] > 0}
    return sorted(pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("sparse", [False, True])
def test_feature_neighbour_pairs_against_the_reference(seed, k, sparse, monkeypatch):
    monkeypatch.setattr("kces.neighbours.SPARSE_BELOW", 1.01 if sparse else 0.0)  # either product, whatever the density
    x = random_problem(seed)[0]
    x[5] = 0.0  # a node without features: no positive cosine, no anchor
    x[7] = x[8]  # equal rows, and many equal cosines
    pairs = feature_neighbour_pairs(x, k)
    assert pairs.tolist() == [list(p) for p in zip(*reference_pairs(x, k))]
    assert bool((pairs[0] < pairs[1]).all()) and 5 not in pairs and [7, 8] in pairs.T.tolist()


def test_feature_neighbour_pairs_are_computed_in_blocks_as_in_one(monkeypatch):
    x = random_problem(3)[0]
    whole = feature_neighbour_pairs(x, 4)
    monkeypatch.setattr("kces.neighbours.BLOCK_ELEMENTS", 7 * x.shape[0])  # blocks of 7 rows
    assert torch.equal(feature_neighbour_pairs(x, 4), whole)
    monkeypatch.setattr("kces.neighbours.SPARSE_BELOW", 1.01)
    assert torch.equal(feature_neighbour_pairs(x, 4), whole)


def test_sparse_and_dense_products_agree_on_real_valued_features(monkeypatch):
    """Sparse real-valued features (about 5% non-zero, no ties): the sparse × dense product sums in
    another order, and the anchors come out the same."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 200, generator=g) * (torch.rand(300, 200, generator=g) < 0.05)
    sparse = feature_neighbour_pairs(x, 5)
    monkeypatch.setattr("kces.neighbours.SPARSE_BELOW", 0.0)
    assert sparse.shape[1] > 300 and torch.equal(feature_neighbour_pairs(x, 5), sparse)


def test_feature_anchors_both_directions_and_accepted_forms():
    x = random_problem(5)[0]
    anchors = kces.feature_anchors(x, k=5)
    pairs = feature_neighbour_pairs(x, 5)
    assert torch.equal(anchors, torch.cat([pairs, pairs.flip(0)], 1))
    before = x.clone()
    assert torch.equal(kces.feature_anchors(x.to_sparse(), k=5), anchors)
    assert torch.equal(kces.feature_anchors(x.double(), k=5), anchors)
    assert torch.equal(kces.feature_anchors(x.long(), k=5), anchors)
    assert torch.equal(x, before)
    with pytest.raises(TypeError, match="torch.Tensor"):
        kces.feature_anchors(x.numpy())
    with pytest.raises(ValueError, match="NaN"):
        kces.feature_anchors(torch.full((4, 2), float("nan")))


def test_join_anchors_keeps_the_input_columns_and_takes_the_larger_weight():
    x, y, train_mask, edge_index = random_problem(6)
    n = x.shape[0]
    anchors = kces.feature_anchors(x, k=4)
    weight = ((edge_index[0] * edge_index[1]) % 9 + 1) / 10  # in [0.1, 0.9], equal in both directions
    before = edge_index.clone(), weight.clone()
    joined = join_anchors(edge_index, anchors, 0.5, num_nodes=n, edge_weight=weight)
    assert torch.equal(edge_index, before[0]) and torch.equal(weight, before[1])
    e = edge_index.shape[1]
    assert torch.equal(joined.edge_index[:, :e], edge_index)
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense[edge_index[0], edge_index[1]] = weight.double()
    expected = dense.clone()
    expected[anchors[0], anchors[1]] = expected[anchors[0], anchors[1]].clamp(min=0.5)
    assert 0 < int(((dense > 0) & (dense < 0.5) & (expected == 0.5)).sum()) < anchors.shape[1]  # some raised
    got = torch.zeros(n, n, dtype=torch.float64)
    got[joined.edge_index[0], joined.edge_index[1]] = joined.edge_weight.double()
    torch.testing.assert_close(got, expected)
    assert joined.edge_index.shape[1] == int((expected != 0).sum())  # each edge once per direction
    new = joined.edge_index[:, e:]
    assert torch.equal(new, new[:, torch.argsort(new[0] * n + new[1])])
    unweighted = join_anchors(edge_index, anchors, 2.0, num_nodes=n)
    assert bool((unweighted.edge_weight[:e] >= 1).all()) and bool((unweighted.edge_weight[e:] == 2).all())


def test_anchor_is_feature_anchors_joined():
    x, y, train_mask, edge_index = random_problem(7)
    got = kces.anchor(edge_index, x, anchoring=dict(k=3, weight=0.25))
    want = join_anchors(edge_index, kces.feature_anchors(x, k=3), 0.25, num_nodes=x.shape[0])
    assert torch.equal(got.edge_index, want.edge_index) and torch.equal(got.edge_weight, want.edge_weight)
    again = kces.anchor(edge_index, x, num_nodes=x.shape[0], anchoring=Anchoring(k=3, weight=0.25))
    assert torch.equal(again.edge_index, got.edge_index) and torch.equal(again.edge_weight, got.edge_weight)
    with pytest.raises(ValueError, match="num_nodes"):
        kces.anchor(edge_index, x, num_nodes=x.shape[0] + 1)


@pytest.mark.parametrize("fields, error", [
    (dict(k=0), ValueError), (dict(k=2.5), ValueError), (dict(k=True), ValueError), (dict(weight=0), ValueError),
    (dict(weight=-1.0), ValueError), (dict(weight=float("inf")), ValueError), (dict(weight=float("nan")), ValueError),
    (dict(weight="half"), TypeError), (dict(weight=torch.ones(2)), TypeError)])
def test_anchoring_is_validated(fields, error):
    with pytest.raises(error):
        Anchoring(**fields)


def test_featureless_graphs_have_no_anchors():
    x, y, train_mask, edge_index = random_problem(8)
    n = x.shape[0]
    with pytest.raises(ValueError, match="featureless"):
        kces.feature_anchors(torch.eye(n))
    with pytest.raises(ValueError, match="featureless"):
        kces.feature_anchors(None)
    with pytest.raises(ValueError, match="featureless"):
        kces.anchor_adj(sp.eye(n, format="csr"), None)
    with pytest.raises(ValueError, match="featureless"):
        kces.anchor_adj(sp.eye(n, format="csr"), sp.eye(n))
    with pytest.raises(TypeError, match="anchoring"):
        kces.anchor(edge_index, x, anchoring=10)


def test_transform_matches_the_functional_core_and_keeps_everything_else():
    x, y, train_mask, edge_index = random_problem(9)
    data = Data(x=x, y=y, train_mask=train_mask, val_mask=~train_mask, edge_index=edge_index, name="g")
    snapshot = {key: value.clone() if torch.is_tensor(value) else value for key, value in data.items()}
    out = FeatureAnchors(dict(k=4))(data)
    want = kces.anchor(edge_index, x, anchoring=dict(k=4))
    assert torch.equal(out.edge_index, want.edge_index) and torch.equal(out.edge_weight, want.edge_weight)
    assert torch.equal(out.val_mask, data.val_mask) and out.name == "g" and torch.equal(out.x, x)
    for key, value in snapshot.items():
        assert (torch.equal(data[key], value) if torch.is_tensor(value) else data[key] == value), key
    assert "edge_weight" not in data
    chained = T.Compose([kces.KCES(), FeatureAnchors()])(data)
    kept = kces.KCES()(data)
    assert torch.equal(chained.edge_index[:, :kept.edge_index.shape[1]], kept.edge_index)
    assert repr(FeatureAnchors()) == "FeatureAnchors(Anchoring())"


def test_transform_refuses_what_it_cannot_keep_aligned():
    x, y, train_mask, edge_index = random_problem(10)
    data = Data(x=x, y=y, train_mask=train_mask, edge_index=edge_index,
                edge_attr=torch.ones(edge_index.shape[1], 2))
    with pytest.raises(ValueError, match="edge_attr"):
        FeatureAnchors()(data)
    with pytest.raises(ValueError, match="'x'"):
        FeatureAnchors()(Data(y=y, train_mask=train_mask, edge_index=edge_index, num_nodes=x.shape[0]))
    with pytest.raises(ValueError, match="undirected|both directions|symmetric"):
        FeatureAnchors()(Data(x=x, edge_index=edge_index[:, edge_index[0] < edge_index[1]]))
    with pytest.raises(TypeError):
        FeatureAnchors()(HeteroData())


@pytest.mark.parametrize("kind", ["csr", "array", "dense", "int"])
def test_anchor_adj_against_the_reference(kind):
    x, y, train_mask, edge_index = random_problem(11)
    n = x.shape[0]
    adj = sp.csr_matrix((np.ones(edge_index.shape[1], dtype=np.float32), edge_index.numpy()), shape=(n, n))
    given = {"csr": adj, "array": sp.csr_array(adj), "dense": adj.toarray(), "int": adj.astype(np.int64)}[kind]
    copy = given.copy()
    out = kces.anchor_adj(given, sp.csr_matrix(x.numpy()), anchoring=dict(k=4, weight=0.5), device="cpu")
    assert (abs(given - copy)).sum() == 0
    pairs = reference_pairs(x, 4)
    rows, cols = (np.array(side) for side in zip(*pairs))
    anchors = sp.csr_matrix((np.full(rows.size, 0.5), (rows, cols)), shape=(n, n))
    expected = adj.maximum(anchors + anchors.T).toarray()
    dense = out.toarray() if sp.issparse(out) else out
    np.testing.assert_allclose(dense, expected)
    assert out.dtype == np.float32
    kinds = {"csr": sp.csr_matrix, "array": sp.csr_array, "dense": np.ndarray, "int": sp.csr_matrix}
    assert isinstance(out, kinds[kind])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_anchors_on_cuda_match_cpu():
    x, y, train_mask, edge_index = random_problem(12)
    cpu = kces.anchor(edge_index, x, device="cpu")
    gpu = kces.anchor(edge_index, x, device="cuda")
    assert gpu.edge_index.device.type == "cpu"  # returned where the graph lives
    assert torch.equal(gpu.edge_index, cpu.edge_index) and torch.equal(gpu.edge_weight, cpu.edge_weight)
    on_gpu = FeatureAnchors()(Data(x=x, edge_index=edge_index).to("cuda"))
    assert on_gpu.edge_index.device.type == "cuda" and torch.equal(on_gpu.edge_index.cpu(), cpu.edge_index)


def test_anchor_networkx_matches_anchor_adj_and_keeps_attributes():
    import networkx as nx

    x, _, _, edge_index = random_problem(13)
    n = x.shape[0]
    names = [f"v{i}" for i in range(n)]
    graph = nx.Graph(title="g")
    graph.add_nodes_from((name, {"index": i}) for i, name in enumerate(names))
    for i, j in edge_index.T.tolist():
        if i < j:
            graph.add_edge(names[i], names[j], kind="road", **({"weight": 0.25} if (i + j) % 3 == 0 else {}))
    before = nx.node_link_data(graph, edges="links")
    out = kces.anchor_networkx(graph, x.numpy(), anchoring=dict(k=3), device="cpu")
    assert nx.node_link_data(graph, edges="links") == before and out.graph == {"title": "g"}
    adj = sp.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=names))
    expected = kces.anchor_adj(adj, x.numpy(), anchoring=dict(k=3), device="cpu").toarray()
    np.testing.assert_allclose(nx.to_numpy_array(out, nodelist=names), expected)
    assert all(out.edges[u, v]["kind"] == "road" for u, v in graph.edges)
    assert all(out.edges[u, v] == graph.edges[u, v] for u, v in graph.edges if "weight" not in graph.edges[u, v])
    added = [(u, v) for u, v in out.edges if not graph.has_edge(u, v)]
    assert added and all(out.edges[u, v] == {"weight": 0.5} for u, v in added)
    assert any(out.edges[u, v]["weight"] == 0.5 for u, v in graph.edges if "weight" in graph.edges[u, v])
    with pytest.raises(TypeError, match="anchor_networkx needs an undirected"):
        kces.anchor_networkx(nx.DiGraph(graph), x.numpy())
    with pytest.raises(ValueError, match="empty"):
        kces.anchor_networkx(nx.Graph(), np.zeros((0, 2)))
