"""KC scores on ``torch.distributed``: the labelled nodes are sharded across ranks.

In the primal form GKC depends on the graph only through ``M = ΦᵀΦ`` (D, D) and
``B = ΦᵀY`` (D, C), sums over the labelled nodes S (:mod:`kces.complexity`). Rank r takes
a contiguous block S_r of the sorted labelled nodes (|S_r| equal up to one), propagates
only over the K-hop region of S_r (its shard and halo), and all-reduces ``M_r`` and ``B_r``.
Every rank then solves the small (D, D) system, gets ``G_M = ∂GKC/∂M`` and ``G_B =
∂GKC/∂B``, and back-propagates ``<G_M, M_r> + <G_B, B_r>`` to its region's edge weights:
by the chain rule the per-edge gradients summed over ranks are ``∂GKC/∂w``, so one
all-reduce of the (m,) gradient gives every rank the scores of all edges. They equal
:func:`kces.kc_scores` with ``form="primal"`` up to float summation order.

Every rank passes the same whole graph; the work and activation memory of a rank grow with
its region. Collectives wait at most ``timeout`` seconds, so a rank that fails or stalls
surfaces as an error on the others instead of a hang.

    torchrun --standalone --nproc-per-node 2 -m kces.distributed graph.pt scores.pt [--device cpu]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .complexity import feature_map, label_matrix, primal_complexity, region_rows
from .errors import InputError
from .formats import load_pyg
from .inputs import prepare
from .options import Complexity, options


def _all_reduce(tensor: Tensor, group, timeout: float) -> Tensor:
    """Sum ``tensor`` over the ranks of ``group`` in place, waiting at most ``timeout`` seconds."""
    dist.all_reduce(tensor, group=group, async_op=True).wait(timeout=datetime.timedelta(seconds=timeout))
    return tensor


def kc_scores(edge_index: Tensor, x: Tensor | None, y: Tensor, train_mask: Tensor, *,
              num_nodes: int | None = None, edge_weight: Tensor | None = None,
              complexity: Complexity | Mapping[str, Any] | None = None, device: Any = None, group=None,
              timeout: float = 600.0) -> Tensor:
    """KC score of the edge in each column of ``edge_index``, computed by all ranks of ``group``.

    Call it on every rank of an initialised process group (gloo for CPU tensors, NCCL for CUDA)
    with the same arguments, as :func:`kces.kc_scores`; always the first-order engine in the
    primal form (``complexity.engine`` must be ``"first_order"``, ``form`` ``"auto"`` or
    ``"primal"``). Returns (E,) on the compute device, the same on every rank. ``timeout``:
    seconds any collective may wait before raising.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("kces.distributed.kc_scores needs an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group, or run under torchrun)")
    if not timeout > 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout!r}")
    complexity = options(Complexity, complexity, "complexity")
    if complexity.engine != "first_order" or complexity.form == "dual":
        raise InputError("kces.distributed scores with the first-order engine in the primal form; got "
                         f"engine={complexity.engine!r}, form={complexity.form!r}")
    problem = prepare(edge_index, x, y, train_mask, num_nodes, edge_weight, device)
    edges, x = problem.edges, problem.x
    if edges.num_edges == 0:
        return torch.zeros(0, device=x.device)
    labels = label_matrix(problem.y[problem.train_nodes], problem.num_classes, complexity.centre, dtype=x.dtype)
    shard = torch.tensor_split(torch.arange(problem.train_nodes.numel(), device=x.device),
                               dist.get_world_size(group))[dist.get_rank(group)]
    with torch.enable_grad():
        region, weight, z_r = region_rows(x, edges, problem.train_nodes[shard], complexity.k, complexity.kernel,
                                          complexity.random_features, "primal", complexity.max_memory)
        phi = feature_map(z_r, complexity.kernel, complexity.random_features, seed=0)
        local = (phi.T @ phi, phi.T @ labels[shard])
        total = [_all_reduce(part.detach().clone(), group, timeout).requires_grad_(True) for part in local]
        gkc = primal_complexity(total[0], total[1], (labels * labels).sum(), complexity.lam)
        slopes = torch.autograd.grad(gkc, total)
        surrogate = sum((slope * part).sum() for slope, part in zip(slopes, local))
        (grad,) = torch.autograd.grad(surrogate, weight, allow_unused=True)
    scores = torch.zeros(edges.num_edges, dtype=x.dtype, device=x.device)
    if grad is not None:  # None on a rank without labelled nodes
        scores[region.edges] = grad
    _all_reduce(scores, group, timeout)
    return (scores * edges.weight.to(scores))[edges.inverse.to(x.device)]


def placement(device: str, local_rank: int, local_world_size: int, cuda_devices: int) -> tuple[str, torch.device]:
    """The process-group backend and compute device of one rank of the entry point.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when this node has a GPU). CPU tensors
    go through gloo; CUDA tensors through NCCL with one GPU per rank, ``cuda:LOCAL_RANK`` (NCCL
    cannot put two ranks on one GPU): more ranks on a node than GPUs is refused with a message.
    """
    if device not in ("cpu", "cuda", "auto"):
        raise InputError(f"--device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        device = "cuda" if cuda_devices > 0 else "cpu"
    if device == "cpu":
        return "gloo", torch.device("cpu")
    if local_world_size > cuda_devices:
        raise InputError(f"NCCL needs one GPU per rank: {local_world_size} ranks on this node but {cuda_devices} "
                         f"GPU(s); run --nproc-per-node {cuda_devices} or less, or pass --device cpu (gloo)")
    return "nccl", torch.device("cuda", local_rank)


def main(argv: list[str] | None = None) -> int:
    """``torchrun`` entry point: score the graph in INPUT, rank 0 writes the (E,) scores to OUTPUT."""
    parser = argparse.ArgumentParser(prog="python -m kces.distributed", description=main.__doc__)
    parser.add_argument("input", type=Path, help="a PyG Data saved with torch.save (edge_index, x, y, train_mask)")
    parser.add_argument("output", help="where rank 0 saves the scores tensor (torch.save)")
    parser.add_argument("--k", type=int, default=1, help="propagation hops")
    parser.add_argument("--kernel", default="linear", help="linear or ntk")
    parser.add_argument("--lam", type=float, default=1e-2, help="ridge")
    parser.add_argument("--device", default="auto",
                        help="cpu (gloo), cuda (NCCL, one GPU per rank) or auto (default: cuda if present)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a collective may wait")
    args = parser.parse_args(argv)
    try:
        backend, device = placement(args.device, int(os.environ.get("LOCAL_RANK", 0)),
                                    int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count())
    except InputError as error:
        parser.error(str(error))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    try:
        graph = load_pyg(args.input)
        complexity = Complexity(k=args.k, kernel=args.kernel, lam=args.lam)
        scores = kc_scores(graph.edge_index, graph.x, graph.y, graph.train_mask, complexity=complexity,
                           device=device, timeout=args.timeout)
        if dist.get_rank() == 0:
            torch.save(scores.cpu(), args.output)
    except BaseException:
        # a process group with a collective cut short blocks its teardown (and interpreter exit)
        # until every peer is gone: leave at once so torchrun sees the failure and stops the rest
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
