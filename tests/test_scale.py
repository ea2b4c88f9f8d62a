"""Linear-time scoring: region restriction, CSR propagation, primal/dual/random-feature forms,
the memory guard, and multi-process scoring on torch.distributed (2 gloo processes)."""

import datetime
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch_geometric.data import Data

import kces
from kces import distributed
from kces.complexity import (complexity, complexity_of_gram, graph_kernel_complexity, pair_scores,
                             label_matrix)
from kces.graph import _csr_structure, _SpMM, gcn_propagate, khop_region, undirected_edges
from kces.options import Complexity
from kces.kernels import ntk_random_features, ntk_relu_kernel
from kces.experiments.synthetic import sbm_graph

LAM = 0.05


def sbm64(num_nodes=300, train_ratio=0.1, seed=0, num_features=8):
    """A small SBM graph in float64 (edge_index, x, y, train_mask)."""
    g = sbm_graph(num_nodes, num_classes=3, avg_degree=4.0, num_features=num_features,
                  train_ratio=train_ratio, seed=seed)
    return g.edge_index, g.x.double(), g.y, g.train_mask


def problem(num_nodes=300, train_ratio=0.1, seed=0, num_features=8):
    """(x, edges, nodes, labels) for the functions of kces.complexity."""
    edge_index, x, y, mask = sbm64(num_nodes, train_ratio, seed, num_features)
    nodes = mask.nonzero().view(-1)
    return x, undirected_edges(edge_index, num_nodes), nodes, label_matrix(y[nodes], 3, dtype=x.dtype)


def full_graph_gradient(x, edges, nodes, labels, k, **options):
    """Reference first-order scores: autograd through propagation over the *whole* graph."""
    weight = edges.weight.to(x.dtype).requires_grad_(True)
    total = graph_kernel_complexity(x, edges, nodes, labels, k=k, lam=LAM, weight=weight, **options)
    (grad,) = torch.autograd.grad(total, weight)
    return grad * weight.detach()


# ---------------------------------------------------------------- region restriction

@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("kernel,form", [("linear", "dual"), ("linear", "primal"), ("ntk", "dual")])
def test_region_scores_equal_full_graph_gradient_and_are_zero_outside(k, kernel, form):
    x, edges, nodes, labels = problem(train_ratio=0.03)
    got = pair_scores(x, edges, nodes, labels, Complexity(k=k, kernel=kernel, lam=LAM, form=form))
    ref = full_graph_gradient(x, edges, nodes, labels, k, kernel=kernel, form=form)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))
    region = khop_region(edges.pairs, edges.num_nodes, nodes, k)
    outside = torch.ones(edges.num_edges, dtype=torch.bool)
    outside[region.edges] = False
    assert 0 < outside.sum() < edges.num_edges  # the test graph has edges on both sides
    assert torch.all(got[outside] == 0)
    assert (got[~outside] != 0).float().mean() > 0.9


def test_khop_region_is_the_edges_within_k_hops():
    x, edges, nodes, _ = problem(train_ratio=0.02)
    pairs = edges.pairs
    for k in (1, 2):
        dist_ = torch.full((edges.num_nodes,), math.inf)
        dist_[nodes] = 0
        for hop in range(1, k + 1):  # breadth-first search, k rounds
            near = dist_ < hop
            step = near[pairs[0]] | near[pairs[1]]
            dist_[pairs[0][step]] = torch.minimum(dist_[pairs[0][step]], torch.tensor(float(hop)))
            dist_[pairs[1][step]] = torch.minimum(dist_[pairs[1][step]], torch.tensor(float(hop)))
        expected = (dist_[pairs[0]] <= k) | (dist_[pairs[1]] <= k)
        region = khop_region(pairs, edges.num_nodes, nodes, k)
        assert torch.equal(region.edges, expected.nonzero().view(-1))
        assert torch.equal(region.nodes[region.pairs], pairs[:, region.edges])
        assert torch.all(region.position[region.nodes] == torch.arange(region.nodes.numel()))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_propagate_rows_equals_full_rows(k):
    x, edges, _, _ = problem()
    weight = torch.rand(edges.num_edges, dtype=torch.float64) + 0.5
    full = gcn_propagate(x, edges.pairs, weight, k)
    rows = torch.tensor([17, 3, 250, 3, 0, 299])  # unsorted, with a repeat
    torch.testing.assert_close(gcn_propagate(x, edges.pairs, weight, k, rows=rows), full[rows],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_sparse_matmul_gradcheck(symmetric):
    torch.manual_seed(0)
    n = 7
    dense = (torch.rand(n, n, dtype=torch.float64) < 0.4).double()
    if symmetric:
        dense = ((dense + dense.T) > 0).double()
    else:
        dense = dense[:4]  # a (4, n) block of rows, as the last hop with rows=
    row, col = dense.nonzero().T
    crow, col_sorted, entry = _csr_structure(row, col, dense.shape[0])
    values = torch.rand(row.numel(), dtype=torch.float64)
    if symmetric:  # symmetric values too, as Â
        values = (values + values[[((row == c) & (col == r)).nonzero().item() for r, c in zip(row, col)]]) / 2
    values = values[entry].requires_grad_(True)
    z = torch.rand(n, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, z_: _SpMM.apply(v, z_, crow, col_sorted, symmetric), (values, z))
    reference = torch.zeros(dense.shape, dtype=torch.float64)
    reference[row[entry], col_sorted] = values.detach()
    torch.testing.assert_close(_SpMM.apply(values, z, crow, col_sorted, symmetric), reference @ z)


# ---------------------------------------------------------------- forms

def test_primal_equals_dual_for_the_linear_kernel():
    x, edges, nodes, labels = problem(train_ratio=0.1, num_features=8)  # |S| = 30 > d = 8
    z_s = gcn_propagate(x, edges.pairs, edges.weight.double(), 2)[nodes]
    dual = complexity(z_s, labels, lam=LAM, form="dual")
    primal = complexity(z_s, labels, lam=LAM, form="primal")
    assert float(primal) == pytest.approx(float(dual), rel=1e-10)
    scores = {form: pair_scores(x, edges, nodes, labels, Complexity(k=2, lam=LAM, form=form))
              for form in ("dual", "primal")}
    torch.testing.assert_close(scores["primal"], scores["dual"], rtol=1e-8, atol=1e-10)
    auto = pair_scores(x, edges, nodes, labels, Complexity(k=2, lam=LAM))  # |S| > d: primal
    assert torch.equal(auto, scores["primal"])


def test_ntk_primal_is_the_dual_of_its_random_feature_kernel():
    x, edges, nodes, labels = problem(train_ratio=0.1)
    z_s = gcn_propagate(x, edges.pairs, edges.weight.double(), 1)[nodes]
    phi = ntk_random_features(z_s, 300, seed=3)
    primal = complexity(z_s, labels, kernel="ntk", lam=LAM, form="primal", random_features=300, seed=3)
    dual = complexity_of_gram(phi @ phi.T + LAM * torch.eye(nodes.numel(), dtype=torch.float64), labels)
    assert float(primal) == pytest.approx(float(dual), rel=1e-9)


def test_ntk_random_features_approach_the_kernel():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(12, 5, dtype=torch.float64), dim=1)
    exact = ntk_relu_kernel(z)
    errors = []
    for features in (600, 60_000):
        phi = ntk_random_features(z, features, seed=1)
        assert phi.shape == (12, (features // 6) * 6)
        errors.append(float((phi @ phi.T - exact).abs().max()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 3, errors


def test_auto_form_picks_the_cheaper_side():
    from kces.complexity import NTK_DUAL_MAX, resolve_form

    assert resolve_form("auto", 10, 64, "linear") == "dual"
    assert resolve_form("auto", 100, 64, "linear") == "primal"
    assert resolve_form("auto", NTK_DUAL_MAX, 8, "ntk") == "dual"
    assert resolve_form("auto", NTK_DUAL_MAX + 1, 8, "ntk") == "primal"
    assert resolve_form("dual", 10**6, 8, "linear") == "dual"


@pytest.mark.parametrize("kernel", ["linear", "ntk"])
def test_float32_agrees_with_float64(kernel):
    edge_index, x, y, mask = sbm64(num_nodes=2000)
    options = dict(k=2, kernel=kernel, form="primal", random_features=512)
    s64 = kces.kc_scores(edge_index, x, y, mask, complexity=options)
    s32 = kces.kc_scores(edge_index, x.float(), y, mask, complexity=options)
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s64, rtol=1e-3, atol=1e-4 * float(s64.abs().max()))


def test_scores_are_deterministic():
    edge_index, x, y, mask = sbm64(num_nodes=2000)
    x = x.float()
    for kernel in ("linear", "ntk"):
        options = dict(kernel=kernel, form="primal", random_features=256)
        runs = [kces.kc_scores(edge_index, x, y, mask, complexity=options) for _ in range(2)]
        assert torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------- memory guard and options

def test_max_memory_refuses_with_a_clear_error():
    edge_index, x, y, mask = sbm64()
    with pytest.raises(MemoryError, match=r"first-order KC scores .* max_memory is 0\.00 GiB"):
        kces.kc_scores(edge_index, x, y, mask, complexity=dict(max_memory=1000))
    with pytest.raises(MemoryError, match="max_memory"):
        kces.sanitize(edge_index, x, y, mask, complexity=dict(max_memory=1000))
    assert kces.kc_scores(edge_index, x, y, mask, complexity=dict(max_memory=10**9)).shape == (edge_index.shape[1],)


@pytest.mark.parametrize("option,value,message", [
    ("form", "sparse", "unknown form"), ("random_features", 0, "random_features"),
    ("random_features", 2.5, "random_features"), ("max_memory", -1, "max_memory"),
    ("max_memory", 1.5e9, "max_memory")])
def test_bad_scale_options_are_rejected(option, value, message):
    edge_index, x, y, mask = sbm64(num_nodes=50, train_ratio=0.2)
    with pytest.raises(ValueError, match=message):
        kces.kc_scores(edge_index, x, y, mask, complexity={option: value})
    with pytest.raises(ValueError, match=message):
        kces.KCES(complexity={option: value})


def test_transform_passes_the_scale_options():
    edge_index, x, y, mask = sbm64(num_nodes=50, train_ratio=0.2)
    with pytest.raises(MemoryError):
        kces.KCES(complexity=dict(max_memory=10))(Data(x=x, y=y, edge_index=edge_index, train_mask=mask))


# ---------------------------------------------------------------- torch.distributed

def _rank(rank, world, init_file, out_dir, graph, fault):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    if rank == world - 1 and fault == "raise":
        os._exit(1)  # dies before the collectives
    if rank == world - 1 and fault == "stall":
        time.sleep(60)  # never joins them (killed by the test)
    start = time.perf_counter()
    try:
        scores = distributed.kc_scores(*graph, complexity=dict(k=2, lam=LAM), timeout=3)
    except Exception as error:  # noqa: BLE001 - the test inspects what the surviving rank saw
        (out_dir / f"error{rank}.txt").write_text(f"{time.perf_counter() - start:.1f} {error}")
        os._exit(1)  # a group with a collective cut short blocks teardown until its peers are gone
    torch.save(scores, out_dir / f"scores{rank}.pt")
    dist.destroy_process_group()


def _spawn(tmp_path, world, graph, fault=None):
    """Run ``_rank`` in ``world`` fresh processes; the exit codes of all but a stalled last rank."""
    context = mp.get_context("spawn")
    procs = [context.Process(target=_rank, args=(r, world, tmp_path / "init", tmp_path, graph, fault))
             for r in range(world)]
    for p in procs:
        p.start()
    waited = procs[:-1] if fault == "stall" else procs
    for p in waited:
        p.join(timeout=120)
    hung = [p.is_alive() for p in waited]
    for p in procs:
        p.kill()
        p.join()
    assert not any(hung), "a rank hung"
    return [p.exitcode for p in waited]


@pytest.mark.parametrize("world,labelled", [(2, 30), (3, 2)])
def test_distributed_scores_equal_single_process(tmp_path, world, labelled):
    """2 gloo ranks with 15 labelled nodes each; 3 ranks sharing 2 labelled nodes (one has none)."""
    edge_index, x, y, _ = graph = sbm64(num_nodes=300)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[torch.cat([(y == c).nonzero().view(-1)[:labelled // 2] for c in (0, 1)])] = True
    graph = (edge_index, x, y, mask)
    assert _spawn(tmp_path, world, graph) == [0] * world
    single = kces.kc_scores(*graph, complexity=dict(k=2, lam=LAM, form="primal"))
    assert (single != 0).sum() > 10
    for rank in range(world):
        got = torch.load(tmp_path / f"scores{rank}.pt", weights_only=True)
        torch.testing.assert_close(got, single, rtol=1e-9, atol=1e-12 * float(single.abs().max()))


@pytest.mark.parametrize("fault", ["raise", "stall"])
def test_distributed_rank_failure_is_an_error_not_a_hang(tmp_path, fault):
    """A rank that dies or never joins the collective: the other raises within the 3 s timeout."""
    exitcodes = _spawn(tmp_path, 2, sbm64(num_nodes=100), fault)
    assert exitcodes[0] != 0
    seconds, message = (tmp_path / "error0.txt").read_text().split(" ", 1)
    assert float(seconds) < 20, message
    if fault == "raise":
        assert exitcodes[1] != 0


def test_distributed_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed.kc_scores(*sbm64(num_nodes=50))


def torchrun(tmp_path, ranks: int, device: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(ranks), "-m", "kces.distributed", str(tmp_path / "graph.pt"),
                           str(tmp_path / "scores.pt"), "--k", "2", "--lam", str(LAM), "--timeout", "60",
                           "--device", device],
                          capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parent.parent)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torchrun_entry_point(tmp_path, device):
    """CPU ranks through gloo everywhere; CUDA ranks through NCCL, one GPU each, where present."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    edge_index, x, y, mask = sbm64(num_nodes=200)
    torch.save(Data(edge_index=edge_index, x=x, y=y, train_mask=mask), tmp_path / "graph.pt")
    ranks = 2 if device == "cpu" else min(2, torch.cuda.device_count())
    run = torchrun(tmp_path, ranks, device)
    assert run.returncode == 0, run.stderr[-2000:]
    single = kces.kc_scores(edge_index, x, y, mask, complexity=dict(k=2, lam=LAM, form="primal"))
    tolerance = {} if device == "cpu" else dict(rtol=1e-3, atol=1e-4 * float(single.abs().max()))
    torch.testing.assert_close(torch.load(tmp_path / "scores.pt", weights_only=True).double(), single, **tolerance)


def test_backend_and_device_of_each_rank():
    assert distributed.placement("cpu", 1, 2, cuda_devices=4) == ("gloo", torch.device("cpu"))
    assert distributed.placement("auto", 1, 2, cuda_devices=0) == ("gloo", torch.device("cpu"))
    assert distributed.placement("auto", 1, 2, cuda_devices=2) == ("nccl", torch.device("cuda", 1))
    assert distributed.placement("cuda", 0, 1, cuda_devices=1) == ("nccl", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="NCCL needs one GPU per rank: 2 ranks on this node but 1 GPU"):
        distributed.placement("auto", 1, 2, cuda_devices=1)
    with pytest.raises(ValueError, match="--device must be cpu, cuda or auto"):
        distributed.placement("gpu", 0, 1, cuda_devices=1)


def test_more_ranks_than_gpus_is_a_one_line_refusal(tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this node has a GPU per rank")
    edge_index, x, y, mask = sbm64(num_nodes=50)
    torch.save(Data(edge_index=edge_index, x=x, y=y, train_mask=mask), tmp_path / "graph.pt")
    run = torchrun(tmp_path, 2, "cuda")
    assert run.returncode != 0 and "NCCL needs one GPU per rank: 2 ranks on this node" in run.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", ["linear", "ntk"])
def test_cuda_fp32_scores_match_cpu_fp64(kernel):
    edge_index, x, y, mask = sbm64(num_nodes=5000)
    options = dict(k=2, kernel=kernel, form="primal", random_features=512)
    reference = kces.kc_scores(edge_index, x, y, mask, complexity=options)
    gpu = kces.kc_scores(edge_index, x.float(), y, mask, complexity=options,
                         device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu().double(), reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max()))
    with pytest.raises(MemoryError, match="max_memory"):
        kces.kc_scores(edge_index, x.float(), y, mask, device="cuda", complexity=dict(max_memory=1000))


@pytest.mark.parametrize("k,kernel", [(1, "linear"), (2, "linear"), (2, "ntk")])
def test_featureless_scores_equal_those_of_explicit_identity_features(k, kernel):
    """``x=None`` propagates one column per labelled node instead of building I (n, n); the
    scores are those of the explicit identity, in every form that does not draw random features."""
    edge_index, x, y, mask = sbm64(num_nodes=120, train_ratio=0.2)
    for form in ("dual",) if kernel == "ntk" else ("dual", "primal"):
        options = dict(k=k, kernel=kernel, lam=LAM, form=form)
        implicit = kces.kc_scores(edge_index, None, y, mask, complexity=options)
        explicit = kces.kc_scores(edge_index, torch.eye(120), y, mask, complexity=options)
        torch.testing.assert_close(implicit, explicit, rtol=1e-4, atol=1e-4 * explicit.abs().max())
    sanitized = kces.sanitize(edge_index, None, y, mask)
    assert torch.equal(sanitized.edge_mask, kces.sanitize(edge_index, torch.eye(120), y, mask).edge_mask)


def test_featureless_graph_never_builds_an_n_by_n_matrix():
    """30k featureless nodes: an identity would be 3.6 GB; scoring and sanitizing stay small."""
    code = """
import resource, torch, kces
from kces.experiments.synthetic import sbm_graph
g = sbm_graph(30_000, num_features=1, train_ratio=0.002, seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = kces.sanitize(g.edge_index, None, g.y, g.train_mask, complexity=dict(max_memory=512 * 2**20))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20, out.edge_mask.numel())
"""
    import subprocess
    import sys

    grown_gb, edges = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.split()
    assert int(edges) == 300_000 and float(grown_gb) < 0.5
