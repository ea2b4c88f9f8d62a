"""The synthetic SBM graphs of the scaling benchmark: shapes, structure, targets, determinism."""
import pytest
import torch
from torch_geometric.utils import coalesce, is_undirected

from kces.experiments.synthetic import sbm_graph

N = 2000


@pytest.fixture(scope="module")
def graph():
    return sbm_graph(N, num_classes=4, avg_degree=10, homophily=0.7, num_features=16, train_ratio=0.1, seed=3)


def test_shapes_and_dtypes(graph):
    assert graph.x.shape == (N, 16) and graph.x.dtype == torch.float32
    assert graph.y.shape == (N,) and graph.y.dtype == torch.int64
    assert graph.train_mask.shape == (N,) and graph.train_mask.dtype == torch.bool
    assert graph.edge_index.dtype == torch.int64 and graph.edge_index.shape[0] == 2
    assert graph.num_nodes == N
    assert int(graph.train_mask.sum()) == 200
    assert torch.bincount(graph.y).tolist() == [500, 500, 500, 500]


def test_undirected_coalesced_simple(graph):
    ei = graph.edge_index
    assert is_undirected(ei, num_nodes=N)
    assert not bool((ei[0] == ei[1]).any())
    assert torch.equal(coalesce(ei, num_nodes=N), ei)  # sorted and free of duplicates
    assert int(ei.min()) >= 0 and int(ei.max()) < N


def test_degree_and_homophily_hit_their_targets(graph):
    ei = graph.edge_index
    assert ei.shape[1] == N * 10  # exactly round(n · avg_degree / 2) undirected edges
    assert abs((graph.y[ei[0]] == graph.y[ei[1]]).float().mean().item() - 0.7) < 0.02
    degree = torch.bincount(ei[0], minlength=N).float()
    assert degree.mean().item() == 10.0 and 8.5 < degree.var().item() < 11.0  # about Poisson(10)
    zero = sbm_graph(N, homophily=0.0, num_features=1)
    assert not bool((zero.y[zero.edge_index[0]] == zero.y[zero.edge_index[1]]).any())
    one = sbm_graph(N, homophily=1.0, num_features=1)
    assert bool((one.y[one.edge_index[0]] == one.y[one.edge_index[1]]).all())


def test_features_follow_the_class_means(graph):
    means = torch.stack([graph.x[graph.y == c].mean(0) for c in range(4)])
    residual = graph.x - means[graph.y]
    assert abs(residual.std().item() - 1.0) < 0.05  # noise = 1
    assert means.norm(dim=1).min().item() > 2.0  # class means ~ N(0, I_16): norm ≈ 4
    quiet = sbm_graph(100, num_features=8, noise=0.0)
    assert torch.unique(quiet.x, dim=0).shape[0] == 4  # every node sits on its class mean


def test_deterministic_for_a_seed_and_different_across_seeds(graph):
    again = sbm_graph(N, num_classes=4, avg_degree=10, homophily=0.7, num_features=16, train_ratio=0.1, seed=3)
    for key in ("x", "y", "edge_index", "train_mask"):
        assert torch.equal(graph[key], again[key]), key
    other = sbm_graph(N, num_classes=4, avg_degree=10, homophily=0.7, num_features=16, train_ratio=0.1, seed=4)
    for key in ("x", "y", "edge_index", "train_mask"):
        assert not torch.equal(graph[key], other[key]), key
    wide = sbm_graph(N, num_classes=4, avg_degree=10, homophily=0.7, num_features=64, noise=3.0, seed=3)
    for key in ("y", "edge_index", "train_mask"):  # the graph does not depend on the features
        assert torch.equal(graph[key], wide[key]), key


@pytest.mark.parametrize("kwargs, message", [
    ({"num_nodes": 1}, "num_nodes must be an integer >= 2"),
    ({"num_nodes": 100.0}, "num_nodes must be an integer"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"num_nodes": 3, "num_classes": 4, "avg_degree": 1}, "num_classes (4) exceeds num_nodes (3)"),
    ({"avg_degree": 0}, "avg_degree must be in (0, num_nodes - 1 = 99]"),
    ({"avg_degree": 100}, "avg_degree must be in"),
    ({"homophily": 1.5}, "homophily must be in [0, 1]"),
    ({"homophily": float("nan")}, "homophily must be in [0, 1]"),
    ({"num_features": 0}, "num_features must be an integer >= 1"),
    ({"noise": -1.0}, "noise (feature noise standard deviation) must be >= 0"),
    ({"train_ratio": 0.0}, "train_ratio must be in (0, 1]"),
    ({"train_ratio": 0.001}, "select at least one of the 100 nodes"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError) as err:
        sbm_graph(**{"num_nodes": 100, **kwargs})
    assert message in str(err.value)
