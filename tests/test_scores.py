"""KC scores: the three engines against each other, finite differences and a dense reference.

The reference below is written from the definitions only (plain numpy, float64):
``Â = D̃^-1/2 (A + I) D̃^-1/2``, ``Z = Â^k X`` rows unit-norm, ``H = k(Z_S) + λI``,
``GKC = trace(Yᵀ H⁻¹ Y)`` with centred one-hot labels, ``KC(e) = GKC(G) − GKC(G − e)``.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
from scipy.stats import spearmanr
from torch_geometric.utils import erdos_renyi_graph, to_undirected

import kces
from kces.complexity import graph_kernel_complexity, label_matrix
from kces.graph import gcn_propagate, undirected_edges
from kces.kernels import linear_kernel, ntk_relu_kernel

LAM = 0.05
NTK_EPS = 1e-12  # the documented clamp of the cosine "a hair inside [-1, 1]" (float64)


# ---------------------------------------------------------------- dense reference (numpy)

def ntk_reference(u, eps=0.0):
    """Θ(u) = u κ0(u) + κ1(u) written with the angle θ = arccos u:
    κ0 = 1 − θ/π, κ1 = (sin θ + (π − θ) cos θ)/π (Cho & Saul's arc-cosine kernels)."""
    u = np.clip(np.asarray(u, dtype=np.float64), -1 + eps, 1 - eps)
    theta = np.arccos(u)
    k0 = 1 - theta / np.pi
    k1 = (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / np.pi
    return u * k0 + k1


def dense_adjacency(pairs, weights, n):
    a = np.zeros((n, n))
    for (i, j), w in zip(pairs, weights):
        a[i, j] = a[j, i] = w
    return a


def reference_gkc(a, x, nodes, y_mat, k, kernel, lam):
    """GKC from a dense (n, n) adjacency ``a``; ``y_mat`` (|S|, C) already centred."""
    n = a.shape[0]
    at = a + np.eye(n)
    dinv = 1 / np.sqrt(at.sum(1))
    a_hat = dinv[:, None] * at * dinv[None, :]
    z = np.linalg.matrix_power(a_hat, k) @ x
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    zs = z[nodes]
    cos = zs @ zs.T
    gram = cos if kernel == "linear" else ntk_reference(cos, NTK_EPS)
    h = gram + lam * np.eye(len(nodes))
    return float(np.trace(y_mat.T @ np.linalg.solve(h, y_mat)))


def centred_one_hot(labels, num_classes):
    y = np.eye(num_classes)[labels]
    return y - y.mean(0, keepdims=True)


def reference_kc(pairs, weights, x, nodes, y_mat, k, kernel, lam):
    """Brute force: rebuild the graph without each edge and recompute GKC."""
    n = x.shape[0]
    base = reference_gkc(dense_adjacency(pairs, weights, n), x, nodes, y_mat, k, kernel, lam)
    out = []
    for e in range(len(pairs)):
        keep = [i for i in range(len(pairs)) if i != e]
        a = dense_adjacency([pairs[i] for i in keep], [weights[i] for i in keep], n)
        out.append(base - reference_gkc(a, x, nodes, y_mat, k, kernel, lam))
    return np.array(out)


def reference_derivative(pairs, weights, x, nodes, y_mat, k, kernel, lam, h=1e-5):
    """Central finite difference of GKC in each edge weight."""
    n = x.shape[0]
    out = []
    for e in range(len(pairs)):
        vals = []
        for step in (h, -h):
            w = list(weights)
            w[e] = w[e] + step
            vals.append(reference_gkc(dense_adjacency(pairs, w, n), x, nodes, y_mat, k, kernel, lam))
        out.append((vals[0] - vals[1]) / (2 * h))
    return np.array(out)


# ---------------------------------------------------------------- problems

def random_problem(seed, n=14, d=5, p=0.3, classes=3, n_train=7):
    """Tiny random undirected graph (float64 features) with a labelled node set."""
    torch.manual_seed(seed)
    edge_index = to_undirected(erdos_renyi_graph(n, p))
    x = torch.rand(n, d, dtype=torch.float64) + 0.1
    y = torch.randint(0, classes, (n,))
    y[:classes] = torch.arange(classes)  # every class among the first (training) nodes
    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[:n_train] = True
    return edge_index, x, y, train_mask


def pair_columns(edge_index):
    """(m, 2) undirected pairs i<j in sorted order, and the pair of every column."""
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    pairs = sorted({(int(a), int(b)) for a, b in zip(lo, hi)})
    index = {p: i for i, p in enumerate(pairs)}
    return pairs, torch.tensor([index[(int(a), int(b))] for a, b in zip(lo, hi)])


def per_pair(scores, columns, m):
    """Scores per undirected pair; asserts both directions of an edge agree exactly."""
    out = torch.full((m,), math.nan, dtype=scores.dtype)
    for c, p in enumerate(columns.tolist()):
        if not math.isnan(out[p]):
            assert out[p] == scores[c], "the two directions of an edge got different scores"
        out[p] = scores[c]
    assert not torch.isnan(out).any()
    return out.numpy()


def reference_inputs(edge_index, x, y, train_mask):
    nodes = train_mask.nonzero().view(-1).numpy()
    classes = int(y[train_mask].max()) + 1
    return x.numpy(), nodes, centred_one_hot(y.numpy()[nodes], classes)


CASES = [(kernel, k) for kernel in ("linear", "ntk") for k in (1, 2)]


# ---------------------------------------------------------------- engines

@pytest.mark.parametrize("kernel,k", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_engine_equals_brute_force_reference(seed, kernel, k):
    edge_index, x, y, mask = random_problem(seed)
    pairs, columns = pair_columns(edge_index)
    xs, nodes, y_mat = reference_inputs(edge_index, x, y, mask)
    ref = reference_kc(pairs, [1.0] * len(pairs), xs, nodes, y_mat, k, kernel, LAM)
    got = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="exact"))
    assert got.dtype == torch.float64 and got.shape == (edge_index.shape[1],)
    got = per_pair(got, columns, len(pairs))
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    assert np.abs(ref).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("kernel,k", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_woodbury_equals_exact(seed, kernel, k):
    edge_index, x, y, mask = random_problem(seed)
    exact = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="exact"))
    wood = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="woodbury"))
    scale = exact.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(wood, exact, rtol=1e-8, atol=1e-8 * float(scale))


@pytest.mark.parametrize("kernel,k", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_first_order_equals_finite_difference(seed, kernel, k):
    edge_index, x, y, mask = random_problem(seed)
    pairs, columns = pair_columns(edge_index)
    xs, nodes, y_mat = reference_inputs(edge_index, x, y, mask)
    fd = reference_derivative(pairs, [1.0] * len(pairs), xs, nodes, y_mat, k, kernel, LAM)
    got = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="first_order"))
    got = per_pair(got, columns, len(pairs))
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    assert np.abs(fd).max() > 1e-3


@pytest.mark.parametrize("kernel,k", CASES)
def test_first_order_ranks_like_exact(kernel, k):
    edge_index, x, y, mask = random_problem(3, n=20, p=0.25)
    first = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="first_order"))
    exact = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, kernel=kernel, lam=LAM, engine="exact"))
    rho = spearmanr(first.numpy(), exact.numpy()).statistic
    assert rho > 0.7, rho


def test_engines_agree_in_float32():
    """The default dtype path: float32 features, loose agreement with the float64 result."""
    edge_index, x, y, mask = random_problem(4)
    s64 = kces.kc_scores(edge_index, x, y, mask, complexity=dict(engine="exact", lam=0.1))
    for engine in ("exact", "woodbury"):
        s32 = kces.kc_scores(edge_index, x.float(), y, mask, complexity=dict(engine=engine, lam=0.1))
        assert s32.dtype == torch.float32
        torch.testing.assert_close(s32.double(), s64, rtol=1e-2, atol=1e-3 * float(s64.abs().max()))


# ---------------------------------------------------------------- lower level

@pytest.mark.parametrize("kernel,k", CASES)
def test_graph_kernel_complexity_equals_reference(kernel, k):
    edge_index, x, y, mask = random_problem(5)
    pairs, _ = pair_columns(edge_index)
    xs, nodes, y_mat = reference_inputs(edge_index, x, y, mask)
    edges = undirected_edges(edge_index, x.shape[0])
    assert [tuple(p) for p in edges.pairs.T.tolist()] == pairs
    labels = label_matrix(y[mask], 3, dtype=torch.float64)
    got = graph_kernel_complexity(x, edges, torch.from_numpy(nodes), labels, k=k, kernel=kernel, lam=LAM)
    ref = reference_gkc(dense_adjacency(pairs, [1.0] * len(pairs), x.shape[0]), xs, nodes, y_mat, k, kernel, LAM)
    assert got.dim() == 0
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_gcn_propagate_matches_dense_matrix_power():
    edge_index, x, _, _ = random_problem(6)
    pairs, _ = pair_columns(edge_index)
    w = torch.rand(len(pairs), dtype=torch.float64) + 0.5
    a = dense_adjacency(pairs, w.tolist(), x.shape[0]) + np.eye(x.shape[0])
    dinv = 1 / np.sqrt(a.sum(1))
    a_hat = dinv[:, None] * a * dinv[None, :]
    for k in (1, 2, 3):
        z = np.linalg.matrix_power(a_hat, k) @ x.numpy()
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        got = gcn_propagate(x, torch.tensor(pairs).T, w, k)
        np.testing.assert_allclose(got.numpy(), z, rtol=1e-12, atol=1e-12)


def test_label_matrix_hard_and_soft():
    y = torch.tensor([0, 2, 1, 2, 2])
    hard = label_matrix(y, 3)
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    torch.testing.assert_close(hard, one_hot - one_hot.mean(0))
    torch.testing.assert_close(hard.sum(0), torch.zeros(3))
    torch.testing.assert_close(label_matrix(y, 3, centre=False), one_hot)
    # soft labels (rows of class probabilities) are used as given, then centred
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2], [0.0, 0.5, 0.5], [0.3, 0.3, 0.4]],
                        dtype=torch.float64)
    torch.testing.assert_close(label_matrix(soft, 3), soft - soft.mean(0))
    torch.testing.assert_close(label_matrix(soft, 3, centre=False), soft)
    # one-hot rows given as "soft" labels are the hard labels
    torch.testing.assert_close(label_matrix(one_hot, 3), hard)


def test_label_matrix_is_centred_in_the_requested_dtype():
    """Regression: the one-hot labels were centred in float32 and only then cast, so float64
    KC scores carried ~1e-8 relative label rounding (1/7 is not a float32)."""
    y = torch.tensor([0, 1, 1, 2, 0, 1, 2])
    exact = np.eye(3)[y.numpy()]
    exact = exact - exact.mean(0)
    got = label_matrix(y, 3, dtype=torch.float64)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), exact, rtol=1e-15, atol=1e-15)
    assert label_matrix(y, 3).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("kernel", ["linear", "ntk"])
def test_soft_label_complexity_equals_reference(kernel):
    edge_index, x, _, mask = random_problem(7)
    pairs, _ = pair_columns(edge_index)
    nodes = mask.nonzero().view(-1)
    g = torch.Generator().manual_seed(0)
    soft = torch.softmax(torch.randn(nodes.numel(), 3, generator=g, dtype=torch.float64), dim=1)
    labels = label_matrix(soft, 3)
    edges = undirected_edges(edge_index, x.shape[0])
    got = graph_kernel_complexity(x, edges, nodes, labels, k=2, kernel=kernel, lam=LAM)
    ref_y = soft.numpy() - soft.numpy().mean(0)
    ref = reference_gkc(dense_adjacency(pairs, [1.0] * len(pairs), x.shape[0]), x.numpy(), nodes.numpy(),
                        ref_y, 2, kernel, LAM)
    assert float(got) == pytest.approx(ref, rel=1e-10)


# ---------------------------------------------------------------- weights

def weighted_problem(seed):
    edge_index, x, y, mask = random_problem(seed)
    pairs, columns = pair_columns(edge_index)
    g = torch.Generator().manual_seed(seed)
    pair_weight = torch.rand(len(pairs), generator=g, dtype=torch.float64) * 1.5 + 0.25
    return edge_index, x, y, mask, pairs, columns, pair_weight, pair_weight[columns]


@pytest.mark.parametrize("kernel", ["linear", "ntk"])
def test_weighted_graph_complexity_equals_reference(kernel):
    edge_index, x, y, mask, pairs, _, pair_weight, edge_weight = weighted_problem(8)
    xs, nodes, y_mat = reference_inputs(edge_index, x, y, mask)
    edges = undirected_edges(edge_index, x.shape[0], edge_weight)
    torch.testing.assert_close(edges.weight, pair_weight)
    labels = label_matrix(y[mask], 3, dtype=torch.float64)
    for k in (1, 2):
        got = graph_kernel_complexity(x, edges, torch.from_numpy(nodes), labels, k=k, kernel=kernel, lam=LAM)
        ref = reference_gkc(dense_adjacency(pairs, pair_weight.tolist(), x.shape[0]), xs, nodes, y_mat, k,
                            kernel, LAM)
        unweighted = reference_gkc(dense_adjacency(pairs, [1.0] * len(pairs), x.shape[0]), xs, nodes, y_mat,
                                   k, kernel, LAM)
        assert float(got) == pytest.approx(ref, rel=1e-10)
        assert abs(ref - unweighted) > 1e-6 * abs(ref)  # the weights matter


def test_weighted_scores_equal_reference():
    edge_index, x, y, mask, pairs, columns, pair_weight, edge_weight = weighted_problem(9)
    xs, nodes, y_mat = reference_inputs(edge_index, x, y, mask)
    w = pair_weight.tolist()
    ref = reference_kc(pairs, w, xs, nodes, y_mat, 2, "linear", LAM)
    for engine in ("exact", "woodbury"):
        got = kces.kc_scores(edge_index, x, y, mask, edge_weight=edge_weight,
                             complexity=dict(k=2, lam=LAM, engine=engine))
        np.testing.assert_allclose(per_pair(got, columns, len(pairs)), ref, rtol=1e-8,
                                   atol=1e-8 * np.abs(ref).max())
    # first order: removing e moves w_e to 0, so the estimate is w_e · ∂GKC/∂w_e
    fd = reference_derivative(pairs, w, xs, nodes, y_mat, 2, "linear", LAM)
    got = kces.kc_scores(edge_index, x, y, mask, edge_weight=edge_weight,
                         complexity=dict(k=2, lam=LAM, engine="first_order"))
    expected = pair_weight.numpy() * fd
    np.testing.assert_allclose(per_pair(got, columns, len(pairs)), expected, rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("engine", ["first_order", "exact", "woodbury"])
def test_permutation_equivariance(engine):
    edge_index, x, y, mask = random_problem(10)
    n, e = x.shape[0], edge_index.shape[1]
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(n, generator=g)         # new node j is old node perm[j]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)               # old node i is new node inverse[i]
    col_perm = torch.randperm(e, generator=g)     # new column c is old column col_perm[c]
    new_edge_index = inverse[edge_index][:, col_perm]
    base = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=2, lam=LAM, engine=engine))
    permuted = kces.kc_scores(new_edge_index, x[perm], y[perm], mask[perm],
                              complexity=dict(k=2, lam=LAM, engine=engine))
    torch.testing.assert_close(permuted, base[col_perm], rtol=1e-9, atol=1e-10 * float(base.abs().max()))
    # an index-tensor train_mask (instead of a bool mask) names the same set
    as_index = kces.kc_scores(new_edge_index, x[perm], y[perm], mask[perm].nonzero().view(-1),
                              complexity=dict(k=2, lam=LAM, engine=engine))
    torch.testing.assert_close(as_index, permuted, rtol=0, atol=0)


def far_edge_problem():
    """A random core holding all training nodes, and a long path hanging off it."""
    torch.manual_seed(11)
    core = to_undirected(erdos_renyi_graph(8, 0.45))
    path = torch.tensor([[7, 8], [8, 9], [9, 10], [10, 11], [11, 12], [12, 13]]).T
    edge_index = to_undirected(torch.cat([core, path], dim=1))
    n = 14
    x = torch.rand(n, 4, dtype=torch.float64) + 0.1
    y = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 0, 1, 2, 0, 1, 2])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:6] = True
    return edge_index, x, y, mask


@pytest.mark.parametrize("engine", ["first_order", "exact", "woodbury"])
@pytest.mark.parametrize("k", [1, 2])
def test_edges_beyond_k_hops_score_exactly_zero(engine, k):
    edge_index, x, y, mask = far_edge_problem()
    n = x.shape[0]
    adj = sp.coo_matrix((np.ones(edge_index.shape[1]), edge_index.numpy()), shape=(n, n))
    dist = shortest_path(adj, unweighted=True, indices=mask.nonzero().view(-1).numpy()).min(0)
    reach = np.minimum(dist[edge_index[0].numpy()], dist[edge_index[1].numpy()])
    far, near = reach > k, reach <= k
    assert far.sum() >= 4 and near.sum() >= 4
    scores = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=k, lam=LAM, engine=engine))
    assert torch.all(scores[torch.from_numpy(far)] == 0)
    assert torch.all(scores[torch.from_numpy(near)] != 0)


def test_scores_follow_columns_and_device_argument():
    edge_index, x, y, mask = random_problem(12)
    base = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=2, lam=LAM))
    flipped = kces.kc_scores(edge_index.flip(0), x, y, mask, complexity=dict(k=2, lam=LAM))
    torch.testing.assert_close(flipped, base, rtol=0, atol=0)
    cpu = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=2, lam=LAM), device="cpu")
    torch.testing.assert_close(cpu, base, rtol=0, atol=0)


def test_identity_features_when_x_is_none():
    edge_index, x, y, mask = random_problem(13)
    n = x.shape[0]
    none = kces.kc_scores(edge_index, None, y, mask, complexity=dict(lam=LAM, engine="exact"))
    eye = kces.kc_scores(edge_index, torch.eye(n), y, mask, complexity=dict(lam=LAM, engine="exact"))
    torch.testing.assert_close(none, eye, rtol=0, atol=0)
    pairs, columns = pair_columns(edge_index)
    ref = reference_kc(pairs, [1.0] * len(pairs), np.eye(n), mask.nonzero().view(-1).numpy(),
                       centred_one_hot(y[mask].numpy(), 3), 1, "linear", LAM)
    np.testing.assert_allclose(per_pair(none, columns, len(pairs)), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_sparse_features_are_densified():
    """``prepare`` densifies sparse ``x``; the scores equal those of the dense features."""
    edge_index, x, y, mask = random_problem(14)
    dense = kces.kc_scores(edge_index, x, y, mask, complexity=dict(lam=LAM))
    sparse = kces.kc_scores(edge_index, x.to_sparse(), y, mask, complexity=dict(lam=LAM))
    torch.testing.assert_close(sparse, dense, rtol=0, atol=0)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("theta", [0.3, math.pi / 3, math.pi / 2, 2.0, 2.9])
def test_ntk_kernel_closed_form(theta):
    z = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    got = ntk_relu_kernel(z)
    # off the diagonal: Θ = cos θ (1 − θ/π) + (sin θ + (π − θ) cos θ)/π
    expected = (math.cos(theta) * (1 - theta / math.pi)
                + (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / math.pi)
    assert float(got[0, 1]) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert float(got[1, 0]) == float(got[0, 1])
    # on the diagonal (u = 1): Θ(1) = 1·κ0(1) + κ1(1) = 1 + 1 = 2, up to the clamp
    torch.testing.assert_close(torch.diagonal(got), torch.full((2,), 2.0, dtype=torch.float64), rtol=0, atol=1e-5)


def test_ntk_kernel_special_values_and_psd():
    # u = 0: κ0 = 1/2, κ1 = 1/π → Θ = 1/π;  u = −1: Θ = 0;  u = 1/2: Θ = 2/3 + √3/(2π)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    got = ntk_relu_kernel(z)
    assert float(got[0, 1]) == pytest.approx(1 / math.pi, rel=1e-12)
    assert float(got[0, 2]) == pytest.approx(0.0, abs=1e-5)
    assert float(got[0, 3]) == pytest.approx(2 / 3 + math.sqrt(3) / (2 * math.pi), rel=1e-12)
    np.testing.assert_allclose(got.numpy(), ntk_reference(z.numpy() @ z.numpy().T), atol=1e-5)
    # a Gram matrix: symmetric positive semi-definite
    g = torch.Generator().manual_seed(0)
    zz = torch.nn.functional.normalize(torch.randn(30, 4, generator=g, dtype=torch.float64), dim=1)
    gram = ntk_relu_kernel(zz)
    torch.testing.assert_close(gram, gram.T, rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(gram).min() > -1e-8
    torch.testing.assert_close(linear_kernel(zz), zz @ zz.T, rtol=0, atol=0)


def test_ntk_kernel_gradient_is_finite_on_the_diagonal():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    z.requires_grad_(True)
    ntk_relu_kernel(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    for dtype in (torch.float32, torch.float64):
        zz = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=dtype), dim=1).requires_grad_(True)
        ntk_relu_kernel(zz).trace().backward()
        assert torch.isfinite(zz.grad).all()
