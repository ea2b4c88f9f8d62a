"""Bad inputs fail early with a ``ValueError``/``TypeError`` naming the problem."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data, HeteroData

import kces
from kces import KCES
from kces.experiments.datasets import load_graph


def problem():
    """A 6-cycle plus a chord; nodes 0, 1 (classes 0, 1) are labelled."""
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)]
    edge_index = torch.tensor(pairs + [(b, a) for a, b in pairs]).T.contiguous()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, generator=g)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    mask = torch.tensor([True, True, False, False, True, False])
    return edge_index, x, y, mask


def as_data(edge_index, x, y, mask, **extra):
    return Data(x=x, edge_index=edge_index, y=y, train_mask=mask, **extra)


# every entry point that takes an edge_index-shaped problem
def via_scores(ei, x, y, mask, **kw):
    return kces.kc_scores(ei, x, y, mask, **kw)


def via_sanitize(ei, x, y, mask, **kw):
    return kces.sanitize(ei, x, y, mask, **kw)


def via_transform(ei, x, y, mask, **kw):
    weight = kw.pop("edge_weight", None)
    data = as_data(ei, x, y, mask) if weight is None else as_data(ei, x, y, mask, edge_weight=weight)
    return KCES(**kw)(data)


ENTRY_POINTS = [via_scores, via_sanitize, via_transform]


@pytest.fixture(params=ENTRY_POINTS, ids=lambda f: f.__name__)
def run(request):
    return request.param


# ---------------------------------------------------------------- edge_index

def test_node_ids_out_of_range(run):
    ei, x, y, mask = problem()
    bad = ei.clone()
    bad[1, 0] = 6
    with pytest.raises(ValueError, match=r"node ids outside \[0, 6\)"):
        run(bad, x, y, mask)


def test_negative_node_ids(run):
    ei, x, y, mask = problem()
    bad = ei.clone()
    bad[0, 3] = -1
    with pytest.raises(ValueError, match=r"outside \[0, 6\).*min -1"):
        run(bad, x, y, mask)


def test_float_edge_index():
    ei, x, y, mask = problem()
    for entry in (via_scores, via_sanitize):
        with pytest.raises(TypeError, match="edge_index must hold integers"):
            entry(ei.float(), x, y, mask)
        with pytest.raises(TypeError, match="edge_index must hold integers"):
            entry(ei.bool(), x, y, mask)
    with pytest.raises(TypeError, match="edge_index must be a torch.Tensor"):
        kces.kc_scores(ei.numpy(), x, y, mask)


def test_edge_index_shape():
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        kces.kc_scores(torch.cat([ei, ei[:1]]), x, y, mask)
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        kces.kc_scores(ei.T.contiguous(), x, y, mask)


def test_self_loops(run):
    ei, x, y, mask = problem()
    bad = torch.cat([ei, torch.tensor([[2], [2]])], dim=1)
    with pytest.raises(ValueError, match="1 self-loop"):
        run(bad, x, y, mask)


def test_duplicate_edges(run):
    ei, x, y, mask = problem()
    bad = torch.cat([ei, ei[:, :2]], dim=1)
    with pytest.raises(ValueError, match="duplicate edges"):
        run(bad, x, y, mask)


def test_directed_graph(run):
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match="directed"):
        run(ei[:, 1:], x, y, mask)
    half = ei[:, : ei.shape[1] // 2]  # every edge in one direction only
    with pytest.raises(ValueError, match="directed"):
        run(half, x, y, mask)


def test_empty_graph():
    empty = torch.zeros(2, 0, dtype=torch.long)
    x, y, mask = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
    for entry in ENTRY_POINTS:
        with pytest.raises(ValueError, match="empty"):
            entry(empty, x, y, mask)
    with pytest.raises(ValueError, match="empty"):
        kces.kc_scores(empty, None, y, mask)


# ---------------------------------------------------------------- edge weights

def test_asymmetric_edge_weight(run):
    ei, x, y, mask = problem()
    w = torch.ones(ei.shape[1])
    w[0] = 2.0  # edge (0, 1) has weight 2, its reverse weight 1
    with pytest.raises(ValueError, match="edge_weight differs between the two directions"):
        run(ei, x, y, mask, edge_weight=w)


def test_bad_edge_weight_values_and_shape():
    ei, x, y, mask = problem()
    for bad in (torch.full((ei.shape[1],), -1.0), torch.full((ei.shape[1],), float("nan")),
                torch.full((ei.shape[1],), float("inf"))):
        with pytest.raises(ValueError, match="finite and non-negative"):
            kces.kc_scores(ei, x, y, mask, edge_weight=bad)
    with pytest.raises(ValueError, match=r"edge_weight must be a tensor of shape \(14,\)"):
        kces.kc_scores(ei, x, y, mask, edge_weight=torch.ones(13))


# ---------------------------------------------------------------- features

def test_nan_or_inf_features(run):
    ei, x, y, mask = problem()
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = x.clone()
        bad[3, 1] = value
        with pytest.raises(ValueError, match="x has NaN or infinite entries"):
            run(ei, bad, y, mask)


def test_wrong_feature_shape():
    ei, x, y, mask = problem()
    for entry in (via_scores, via_sanitize):
        with pytest.raises(ValueError, match=r"x must have shape \(6, d\), got \(5, 3\)"):
            entry(ei, x[:5], y, mask, num_nodes=6)
    with pytest.raises(ValueError, match=r"x must have shape \(6, d\), got \(5, 3\)"):
        KCES()(Data(x=x[:5], edge_index=ei, y=y, train_mask=mask, num_nodes=6))
    # without num_nodes the node count comes from x, and edge_index no longer fits
    with pytest.raises(ValueError, match=r"node ids outside \[0, 5\)"):
        kces.kc_scores(ei, x[:5], y, mask)
    with pytest.raises(ValueError, match=r"x must have shape \(6, d\), got \(6,\)"):
        kces.kc_scores(ei, x[:, 0], y, mask)
    with pytest.raises(TypeError, match="x must be a torch.Tensor or None"):
        kces.kc_scores(ei, x.numpy(), y, mask)


# ---------------------------------------------------------------- labels and mask

def test_missing_labels():
    ei, x, y, mask = problem()
    for entry in (via_scores, via_sanitize):
        with pytest.raises(ValueError, match="labels are missing"):
            entry(ei, x, None, mask)
    with pytest.raises(ValueError, match="no 'y' attribute"):
        KCES()(Data(x=x, edge_index=ei, train_mask=mask))
    with pytest.raises(ValueError, match="no 'train_mask' attribute"):
        KCES()(Data(x=x, edge_index=ei, y=y))
    with pytest.raises(ValueError, match="no 'labels' attribute"):
        KCES(label_attr="labels")(as_data(ei, x, y, mask))
    with pytest.raises(ValueError, match="train_mask is missing"):
        kces.kc_scores(ei, x, y, None)
    with pytest.raises(ValueError, match="no edge_index"):
        KCES()(Data(x=x, y=y, train_mask=mask))


def test_wrong_label_shape_or_type(run):
    ei, x, y, mask = problem()
    for bad in (y[:5], y[:, None]):
        with pytest.raises(ValueError, match=r"y must be an integer tensor of shape \(6,\)"):
            run(ei, x, bad, mask)


def test_wrong_mask_shape(run):
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match=r"train_mask must have shape \(6,\), got \(5,\)"):
        run(ei, x, y, mask[:5])
    with pytest.raises(ValueError, match="training node indices out of range"):
        kces.kc_scores(ei, x, y, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="training node indices out of range"):
        kces.kc_scores(ei, x, y, torch.tensor([-1, 1]))


def test_no_training_nodes():
    ei, x, y, mask = problem()
    for entry in (via_scores, via_sanitize):
        with pytest.raises(ValueError, match="no training nodes"):
            entry(ei, x, y, torch.zeros(6, dtype=torch.bool))
    # PyG calls transforms before a split exists: the graph passes through, with a warning
    data = as_data(ei, x, y, torch.zeros(6, dtype=torch.bool))
    with pytest.warns(UserWarning, match="passes through unsanitized"):
        out = KCES()(data)
    assert torch.equal(out.edge_index, data.edge_index) and out.keys() == data.keys()
    with pytest.raises(ValueError, match="no training nodes"):
        kces.sanitize(ei, x, y, torch.zeros(0, dtype=torch.long))


def test_single_class_among_training_nodes(run):
    ei, x, y, _ = problem()
    mask = torch.tensor([True, False, True, False, True, False])  # all class 0
    with pytest.raises(ValueError, match="single class"):
        run(ei, x, y, mask)


def test_negative_training_labels():
    ei, x, y, mask = problem()
    bad = y.clone()
    bad[1] = -1
    with pytest.raises(ValueError, match="negative"):
        kces.kc_scores(ei, x, bad, mask)
    bad = y.clone()
    bad[3] = -1  # an unlabelled node's missing label is fine
    assert kces.kc_scores(ei, x, bad, mask).shape == (14,)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval(ratio):
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\]"):
        kces.sanitize(ei, x, y, mask, pruning=dict(ratio=ratio))
    with pytest.raises(ValueError, match=r"ratio must be a number in \[0, 1\]"):
        KCES(pruning=kces.Pruning(ratio=ratio))


def test_options_of_the_wrong_type():
    ei, x, y, mask = problem()
    with pytest.raises(TypeError, match="ratio must be a real number, got str"):
        kces.sanitize(ei, x, y, mask, pruning=dict(ratio="0.1"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'ratios'"):
        KCES(pruning=dict(ratios=0.1))
    with pytest.raises(TypeError, match="pruning must be a Pruning, a dict of its fields or None"):
        KCES(pruning=0.1)
    with pytest.raises(TypeError, match="complexity must be a Complexity"):
        kces.kc_scores(ei, x, y, mask, complexity=kces.Pruning())
    with pytest.raises(TypeError, match="label_check must be True or False"):
        kces.Pruning(label_check=1)
    with pytest.raises(ValueError, match="label_top_k must be an integer >= 1"):
        KCES(pruning=dict(label_top_k=0))
    with pytest.raises(ValueError, match="random_features must be an integer >= 1"):
        KCES(complexity=dict(random_features=0))
    with pytest.raises(ValueError, match="unknown form 'both'"):
        KCES(complexity=dict(form="both"))


def test_options_are_frozen_and_normalised():
    import numpy as np

    rule = kces.Pruning(ratio=np.float32(0.25))
    assert rule.ratio == 0.25 and type(rule.ratio) is float and rule.threshold is None
    assert kces.Pruning(threshold=torch.tensor(0.5)).threshold == 0.5
    assert kces.Complexity(lam=np.float64(0.1)).lam == 0.1
    with pytest.raises(AttributeError):
        rule.ratio = 0.5


def test_ratio_and_threshold_together_and_bad_threshold():
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match="either ratio or threshold"):
        kces.sanitize(ei, x, y, mask, pruning=dict(ratio=0.1, threshold=0.5))
    with pytest.raises(ValueError, match="either ratio or threshold"):
        KCES(pruning=dict(ratio=0.1, threshold=0.5))
    for bad in (float("inf"), -float("inf"), float("nan")):
        with pytest.raises(ValueError, match="threshold must be finite"):
            KCES(pruning=dict(threshold=bad))
        with pytest.raises(ValueError, match="threshold must be finite"):
            kces.sanitize(ei, x, y, mask, pruning=dict(threshold=bad))
    with pytest.raises(ValueError, match="threshold must be a number, 'auto' or None"):
        KCES(pruning=dict(threshold="mean"))


def test_unknown_kernel_or_engine():
    ei, x, y, mask = problem()
    for entry in (via_scores, via_sanitize):
        with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
            entry(ei, x, y, mask, complexity=dict(kernel="rbf"))
        with pytest.raises(ValueError, match="unknown engine 'fast'"):
            entry(ei, x, y, mask, complexity=dict(engine="fast"))
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        KCES(complexity=dict(kernel="rbf"))
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        KCES(complexity=dict(engine="fast"))
    with pytest.raises(ValueError, match="k \\(propagation hops\\) must be an integer >= 1"):
        KCES(complexity=dict(k=0))
    with pytest.raises(ValueError, match=r"candidates must be one of \('labelled', 'all'\)"):
        kces.sanitize(ei, x, y, mask, pruning=dict(candidates="some"))


@pytest.mark.parametrize("k", [0, -1, 1.0, 2.5])
def test_bad_hops(run, k):
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match=r"k \(propagation hops\) must be an integer >= 1"):
        run(ei, x, y, mask, complexity=dict(k=k))


@pytest.mark.parametrize("lam", [0.0, -1e-3, float("nan")])
def test_bad_ridge(run, lam):
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match=r"lam \(ridge\) must be > 0"):
        run(ei, x, y, mask, complexity=dict(lam=lam))


def test_heterodata_and_other_objects_to_transform():
    hetero = HeteroData()
    hetero["paper"].x = torch.rand(3, 2)
    hetero["paper", "cites", "paper"].edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="HeteroData"):
        KCES()(hetero)
    ei, x, y, mask = problem()
    with pytest.raises(TypeError, match="expects a torch_geometric.data.Data"):
        KCES()({"edge_index": ei, "x": x, "y": y, "train_mask": mask})


# ---------------------------------------------------------------- adapters

def test_adapter_inputs():
    ei, x, y, mask = problem()
    adj = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), ei.numpy()), shape=(6, 6))
    idx = mask.nonzero().view(-1).numpy()
    with pytest.raises(TypeError, match="not a torch tensor"):
        kces.sanitize_adj(torch.from_numpy(adj.toarray()), x.numpy(), y.numpy(), idx)
    with pytest.raises(TypeError, match="scipy sparse matrix or numpy array"):
        kces.sanitize_adj(adj.toarray().tolist(), x.numpy(), y.numpy(), idx)
    with pytest.raises(ValueError, match="adj must be square"):
        kces.sanitize_adj(adj[:5], x.numpy(), y.numpy(), idx)
    loops = adj + sp.eye(6, dtype=np.float32, format="csr")
    with pytest.raises(ValueError, match="self-loop"):
        kces.sanitize_adj(loops, x.numpy(), y.numpy(), idx, device="cpu")
    directed = sp.triu(adj, k=1).tocsr()
    with pytest.raises(ValueError, match="directed"):
        kces.sanitize_adj(directed, x.numpy(), y.numpy(), idx, device="cpu")
    graph = nx.Graph(nx.from_scipy_sparse_array(adj))
    with pytest.raises(TypeError, match="undirected simple nx.Graph"):
        kces.sanitize_networkx(graph.to_directed(), {0: 0, 1: 1}, [0, 1])
    with pytest.raises(TypeError, match="undirected simple nx.Graph"):
        kces.sanitize_networkx(nx.MultiGraph(graph), {0: 0, 1: 1}, [0, 1])
    with pytest.raises(ValueError, match="negative"):  # a training node without a label
        kces.sanitize_networkx(graph, {0: 0, 1: 1}, [0, 1, 2], device="cpu")


def test_unknown_attack():
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        load_graph("cora", "pgd", 0.2)


# ---------------------------------------------------------------- allowed

def test_isolated_nodes_are_allowed():
    ei, x, y, mask = problem()
    n = 9  # nodes 6, 7, 8 are isolated; 6 is labelled
    x9 = torch.cat([x, torch.rand(3, 3)])
    y9 = torch.cat([y, torch.tensor([1, 0, 1])])
    mask9 = torch.cat([mask, torch.tensor([True, False, False])])
    scores = kces.kc_scores(ei, x9, y9, mask9, complexity=dict(engine="exact"))
    assert scores.shape == (ei.shape[1],) and torch.isfinite(scores).all()
    for engine in ("first_order", "woodbury"):
        s = kces.kc_scores(ei, x9, y9, mask9, complexity=dict(engine=engine))
        assert torch.isfinite(s).all()
    out = KCES(pruning=dict(ratio=0.2))(as_data(ei, x9, y9, mask9))
    assert out.num_nodes == n and out.x.shape == (n, 3)
    assert 0 < out.edge_index.shape[1] < ei.shape[1]
    # also without features: num_nodes comes from the Data
    out = KCES(pruning=dict(ratio=0.2))(Data(edge_index=ei, y=y9, train_mask=mask9, num_nodes=n))
    assert out.num_nodes == n
    adj = sp.csr_matrix((np.ones(ei.shape[1]), ei.numpy()), shape=(n, n))
    assert kces.sanitize_adj(adj, x9.numpy(), y9.numpy(), np.array([0, 1, 6]), device="cpu").shape == (n, n)


def test_float_train_mask_is_refused(run):
    ei, x, y, mask = problem()
    with pytest.raises(TypeError, match="train_mask must be a bool mask or an integer index"):
        run(ei, x, y, mask.float())


def test_sparse_csr_features_are_accepted():
    ei, x, y, mask = problem()
    dense = kces.kc_scores(ei, x, y, mask)
    assert torch.allclose(kces.kc_scores(ei, x.to_sparse_csr(), y, mask), dense)


# ---------------------------------------------------------------- no input may switch the defence off

def test_every_mask_form_selects_the_same_training_nodes(run):
    ei, x, y, mask = problem()
    reference = run(ei, x, y, mask)
    index = mask.nonzero().view(-1)
    for form in (mask.to(torch.uint8), mask.long(), mask.numpy(), mask.tolist(), index.numpy(), index.tolist(),
                 index.int(), index.flip(0)):
        out = run(ei, x, y, form)
        assert torch.equal(out.edge_index if hasattr(out, "edge_index") else out, reference.edge_index
                           if hasattr(reference, "edge_index") else reference)


def test_bool_mask_to_sanitize_adj_is_a_mask_not_two_indices():
    graph = load_graph("cora", "meta", 0.2)
    by_index = kces.sanitize_adj(graph.adj, graph.features, graph.labels, graph.idx_train, device="cpu")
    mask = np.zeros(graph.num_nodes, dtype=bool)
    mask[graph.idx_train] = True
    for form in (mask, mask.astype(np.uint8), mask.astype(np.int64), torch.from_numpy(mask)):
        out = kces.sanitize_adj(graph.adj, graph.features, graph.labels, form, device="cpu")
        assert (out != by_index).nnz == 0
    assert (graph.adj.nnz - by_index.nnz) // 2 == 1321  # the default rule's count on this graph


def test_ambiguous_or_repeated_indices_are_refused():
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="ambiguous"):
        kces.kc_scores(ei, torch.rand(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]))
    ei, x, y, mask = problem()
    with pytest.raises(ValueError, match="names 1 node\\(s\\) twice"):
        kces.kc_scores(ei, x, y, torch.tensor([0, 1, 1]))


def test_label_dtypes_are_cast_and_fractional_labels_refused(run):
    ei, x, y, mask = problem()
    reference = kces.kc_scores(ei, x, y, mask)
    for form in (y.int(), y.to(torch.int8), y.to(torch.uint8), y.bool(), y.float(), y.numpy(), y.tolist()):
        assert torch.equal(kces.kc_scores(ei, x, form, mask), reference)
    bad = y.float()
    bad[0] = 0.5
    with pytest.raises(ValueError, match="fractional"):
        run(ei, x, bad, mask)


def test_nan_thresholds_of_every_type_are_refused():
    ei, x, y, mask = problem()
    for nan in (np.float32("nan"), np.float64("nan"), torch.tensor(float("nan"))):
        with pytest.raises(ValueError, match="threshold must be finite"):
            kces.sanitize(ei, x, y, mask, pruning=dict(threshold=nan))


def test_half_features_numpy_edge_index_and_a_missing_cuda_device():
    ei, x, y, mask = problem()
    reference = kces.kc_scores(ei, x, y, mask)
    assert torch.equal(kces.kc_scores(ei, x.half(), y, mask), kces.kc_scores(ei, x.half().float(), y, mask))
    assert torch.allclose(kces.kc_scores(ei, x.bfloat16(), y, mask), reference, rtol=0.05, atol=0.5)
    with pytest.raises(TypeError, match="edge_index must be a torch.Tensor, got ndarray"):
        kces.kc_scores(ei.numpy(), None, y, mask)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            KCES(device="cuda")(as_data(ei, x, y, mask))


def test_networkx_string_labels_unknown_training_nodes_and_empty_graphs():
    g = nx.karate_club_graph()
    train = [0, 33, 1, 32]
    out = kces.sanitize_networkx(g, labels="club", train_nodes=train)
    as_ints = {v: int(c == "Officer") for v, c in nx.get_node_attributes(g, "club").items()}
    same = kces.sanitize_networkx(g, labels=as_ints, train_nodes=train)
    assert set(out.edges) == set(same.edges) and out.number_of_edges() < g.number_of_edges()
    with pytest.raises(ValueError, match="not in the graph, e.g. 99"):
        kces.sanitize_networkx(g, labels="club", train_nodes=[0, 33, 99])
    with pytest.raises(ValueError, match="empty"):
        kces.sanitize_networkx(nx.Graph(), labels={}, train_nodes=[])


def test_sanitize_adj_keeps_the_sparse_array_type():
    ei, x, y, mask = problem()
    adj = sp.csr_array((np.ones(ei.shape[1]), ei.numpy()), shape=(6, 6))
    assert isinstance(kces.sanitize_adj(adj, x.numpy(), y.numpy(), mask.numpy(), device="cpu"), sp.csr_array)
    assert isinstance(kces.sanitize_adj(sp.csr_matrix(adj), x.numpy(), y.numpy(), mask.numpy(), device="cpu"),
                      sp.csr_matrix)
