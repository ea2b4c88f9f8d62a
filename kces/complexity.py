"""Graph kernel complexity (GKC) and per-edge kernel-complexity (KC) scores.

With ``Z = Â^K X`` (rows unit-norm), a node set ``S`` with label matrix ``Y`` (|S|, C) and a
kernel ``k``, ``H = k(Z_S) + λI`` and ``GKC = trace(Yᵀ H⁻¹ Y)``: the squared RKHS norm of
the labels, the quantity in the NTK generalisation bound ``sqrt(2 yᵀH⁻¹y / n)``.
``KC(e) = GKC(G) − GKC(G − e)``: positive when removing ``e`` makes the labels easier to fit.

The Gram algebra runs on the cheaper side: the *dual* (|S|, |S|) solve above, or the
*primal* (D, D) one through a feature map ``Φ`` with ``k(Z_S) = ΦΦᵀ`` (``Φ = Z_S`` for the
linear kernel, random features of the NTK otherwise), since ``(ΦΦᵀ + λI)⁻¹ = (I −
Φ(λI + ΦᵀΦ)⁻¹Φᵀ)/λ`` gives ``GKC = (‖Y‖² − trace(Bᵀ(λI + ΦᵀΦ)⁻¹B))/λ`` with ``B = ΦᵀY``.
In the primal form GKC depends on the graph only through ``ΦᵀΦ`` and ``ΦᵀY``.

Engines for the KC scores, all on the device of ``x``:
- ``exact``: remove each edge and recompute (the reference; O(m) propagations);
- ``first_order``: ``∂GKC/∂w_e`` at ``w = 1`` for all edges from one backward pass
  (removing ``e`` moves ``w_e`` from 1 to 0, so ``KC(e) ≈ ∂GKC/∂w_e``), propagating only
  over the K-hop region of S (edges farther away score exactly 0): O(n·d + m) memory;
- ``woodbury``: exact like ``exact``, but each removal only recomputes the rows of ``Z_S``
  within K hops of the edge and updates ``H⁻¹`` by a low-rank (Woodbury) correction.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import k_hop_subgraph

from .graph import Identity, Region, UndirectedEdges, gcn_norm, gcn_propagate, khop_region, positions
from .kernels import KERNELS, ntk_random_features
from .memory import check_memory
from .options import Complexity, Form

NTK_DUAL_MAX = 4096
"""``form="auto"`` with the NTK kernel solves exactly (dual) up to this many labelled nodes,
and through ``random_features`` NTK random features above."""


def label_matrix(y: Tensor, num_classes: int, centre: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    """(|S|, C) one-hot labels of ``y`` (|S|,), minus their column means if ``centre``.

    ``y`` may also be given as (|S|, C) soft labels (rows of class probabilities).
    One-hot labels are built in ``dtype`` (default: torch's default dtype).
    """
    labels = y if y.dim() == 2 else torch.nn.functional.one_hot(y, num_classes).to(dtype or torch.get_default_dtype())
    return labels - labels.mean(0, keepdim=True) if centre else labels


def gram(z_s: Tensor, kernel: str, lam: float) -> Tensor:
    """``H = k(Z_S) + λI``, (|S|, |S|)."""
    return KERNELS[kernel](z_s) + lam * torch.eye(z_s.shape[0], dtype=z_s.dtype, device=z_s.device)


def complexity_of_gram(h: Tensor, labels: Tensor) -> Tensor:
    """``trace(Yᵀ H⁻¹ Y)`` through a Cholesky solve; ``h`` symmetric positive definite."""
    chol = torch.linalg.cholesky(h)
    return (labels * torch.cholesky_solve(labels, chol)).sum()


def primal_complexity(phi_gram: Tensor, phi_labels: Tensor, label_norm: Tensor, lam: float) -> Tensor:
    """``(‖Y‖² − trace(Bᵀ(λI + ΦᵀΦ)⁻¹B))/λ`` from ``phi_gram = ΦᵀΦ`` (D, D), ``phi_labels = B = ΦᵀY``
    (D, C) and ``label_norm = ‖Y‖²`` (0-d). Solved in float64 (the D×D system is small and
    ``λ`` may be tiny next to ``ΦᵀΦ``); returned in ``phi_gram``'s dtype."""
    eye = torch.eye(phi_gram.shape[0], dtype=torch.float64, device=phi_gram.device)
    chol = torch.linalg.cholesky(phi_gram.double() + lam * eye)
    b = phi_labels.double()
    fitted = (b * torch.cholesky_solve(b, chol)).sum()
    return ((label_norm.double() - fitted) / lam).to(phi_gram.dtype)


def resolve_form(form: Form, num_nodes: int, d: int, kernel: str) -> str:
    """``"dual"`` or ``"primal"``: ``form``, or for ``"auto"`` the cheaper side for |S| =
    ``num_nodes`` rows of ``Z`` with ``d`` features (NTK: dual up to :data:`NTK_DUAL_MAX` rows)."""
    if form != "auto":
        return form
    if kernel == "linear":
        return "dual" if num_nodes <= d else "primal"
    return "dual" if num_nodes <= NTK_DUAL_MAX else "primal"


def feature_map(z_s: Tensor, kernel: str, random_features: int, seed: int) -> Tensor:
    """``Φ`` (|S|, D) with ``ΦΦᵀ = k(Z_S)`` (linear: exactly ``Z_S``; NTK: in expectation)."""
    if kernel == "linear":
        return z_s
    return ntk_random_features(z_s, random_features, seed)


def complexity(z_s: Tensor, labels: Tensor, *, kernel: str = "linear", lam: float = 1e-2,
               form: Form = "auto", random_features: int = 4096, seed: int = 0) -> Tensor:
    """GKC of propagated rows ``z_s`` (|S|, d) with labels (|S|, C): the dual (|S|, |S|) solve
    or the primal (D, D) one (:func:`resolve_form`). 0-d, differentiable in ``z_s``.
    ``random_features``/``seed``: width and seed of the NTK random features (primal NTK only)."""
    if resolve_form(form, z_s.shape[0], z_s.shape[1], kernel) == "dual":
        return complexity_of_gram(gram(z_s, kernel, lam), labels)
    phi = feature_map(z_s, kernel, random_features, seed)
    return primal_complexity(phi.T @ phi, phi.T @ labels, (labels * labels).sum(), lam)


def graph_kernel_complexity(x: Tensor, edges: UndirectedEdges, nodes: Tensor, labels: Tensor, *,
                            k: int = 1, kernel: str = "linear", lam: float = 1e-2,
                            weight: Tensor | None = None, form: Form = "dual",
                            random_features: int = 4096, seed: int = 0) -> Tensor:
    """GKC of the graph ``edges`` (optionally re-weighted by ``weight`` (m,)) on node set ``nodes``.

    x: (n, d) features (an :class:`~kces.graph.Identity` is materialised); nodes: (|S|,) int64;
    labels: (|S|, C) from :func:`label_matrix`. Returns a 0-d tensor (differentiable in ``x`` and
    ``weight``). Propagates over the whole graph: the reference the region-restricted scores
    are tested against.
    """
    x = x.dense() if isinstance(x, Identity) else x
    w = edges.weight.to(x.device) if weight is None else weight
    z = gcn_propagate(x, edges.pairs.to(x.device), w, k)
    return complexity(z[nodes], labels, kernel=kernel, lam=lam, form=form,
                      random_features=random_features, seed=seed)


def pair_scores(x: Tensor | Identity, edges: UndirectedEdges, nodes: Tensor, labels: Tensor, options: Complexity,
                seed: int = 0) -> Tensor:
    """KC score of every undirected edge, (m,) in ``edges.pairs`` order, on ``x``'s device.

    x: (n, d) features or :class:`~kces.graph.Identity`; nodes: (|S|,) labelled node ids;
    labels: (|S|, C) from :func:`label_matrix`. ``options.form``/``random_features`` and
    ``seed`` (of the NTK random features) apply to the ``first_order`` engine; the reference
    engines solve the dual exactly. ``options.max_memory``: bytes the ``first_order`` scoring may use (default: what
    the device has free); a larger estimate raises ``MemoryError`` before anything big is
    allocated. (``options.centre`` is read where ``labels`` are built.)
    """
    k, kernel, lam = options.k, options.kernel, options.lam
    if options.engine == "first_order":
        return _first_order_scores(x, edges, nodes, labels, k, kernel, lam, options.form, options.random_features,
                                   seed, options.max_memory)
    if isinstance(x, Identity):  # the references propagate every column: they materialise I
        check_memory(x.num_nodes ** 2 * x.element_size() * (2 * k + 2), options.max_memory, x.device,
                     f"the {options.engine} engine on {x.num_nodes} featureless nodes (identity features)")
        x = x.dense()
    with torch.no_grad():
        if options.engine == "exact":
            return _exact_scores(x, edges, nodes, labels, k, kernel, lam)
        return _woodbury_scores(x, edges, nodes, labels, k, kernel, lam)


def _first_order_scores(x, edges, nodes, labels, k, kernel, lam, form, random_features, seed,
                        max_memory) -> Tensor:
    """``∂GKC/∂w_e · w_e`` computed on the K-hop region of ``nodes`` only; 0 outside it."""
    solved = resolve_form(form, nodes.numel(), x.shape[1], kernel)
    with torch.enable_grad():
        region, weight, z_s = region_rows(x, edges, nodes, k, kernel, random_features, solved, max_memory)
        total = complexity(z_s, labels, kernel=kernel, lam=lam, form=solved,
                           random_features=random_features, seed=seed)
        (grad,) = torch.autograd.grad(total, weight)
    return edge_scores(edges, region, grad, weight)


def region_rows(x: Tensor | Identity, edges: UndirectedEdges, nodes: Tensor, k: int, kernel: str,
                random_features: int, form: str, max_memory: int | None) -> tuple[Region, Tensor, Tensor]:
    """``Z_S`` (|S|, d) propagated over the K-hop region of ``nodes`` alone, after checking the
    scoring fits in ``max_memory``. Returns the region, its edge weights (m_r,) as a leaf that
    requires grad (``Z_S`` is differentiable in them) and ``Z_S``. Call under grad mode.

    Identity features are never built: ``(Â^k I)[S] = ((Â^k)[:, S])ᵀ`` since ``Â`` is symmetric,
    so one column per labelled node is propagated, (n_r, |S|), and ``Z_S`` has the region's n_r
    columns (the others are zero in every row of S, so no kernel value changes).
    """
    region = khop_region(edges.pairs.to(x.device), edges.num_nodes, nodes, k)
    featureless = isinstance(x, Identity)
    d = region.nodes.numel() if featureless else x.shape[1]
    width = d if kernel == "linear" else random_features
    propagated = nodes.numel() if featureless else d
    check_memory(scoring_bytes(region.nodes.numel(), region.edges.numel(), propagated, nodes.numel(), width,
                               form, k, x.element_size()), max_memory, x.device,
                 f"first-order KC scores ({region.nodes.numel()} nodes and {region.edges.numel()} edges "
                 f"in the {k}-hop region, |S| = {nodes.numel()}, {form} form)")
    weight = edges.weight.to(device=x.device, dtype=x.dtype)[region.edges].requires_grad_(True)
    local = region.position[nodes]
    if not featureless:
        return region, weight, gcn_propagate(x[region.nodes], region.pairs, weight, k, rows=local)
    columns = torch.zeros(region.nodes.numel(), nodes.numel(), dtype=x.dtype, device=x.device)
    columns[local, torch.arange(nodes.numel(), device=x.device)] = 1
    z_t = gcn_propagate(columns, region.pairs, weight, k, normalize=False)
    return region, weight, torch.nn.functional.normalize(z_t.T, dim=1)


def edge_scores(edges: UndirectedEdges, region: Region, grad: Tensor, weight: Tensor) -> Tensor:
    """(m,) scores ``∂GKC/∂w_e · w_e`` from the region's gradient ``grad`` (m_r,); 0 outside it."""
    scores = torch.zeros(edges.num_edges, dtype=grad.dtype, device=grad.device)
    scores[region.edges] = grad * weight.detach()
    return scores


def scoring_bytes(region_nodes: int, region_edges: int, d: int, labelled: int, width: int, form: str,
                  k: int, itemsize: int) -> int:
    """Estimated peak bytes of :func:`_first_order_scores`: the region's features and their
    k hops of activations and gradients, its CSR structure, and the Gram algebra."""
    propagation = region_nodes * d * itemsize * (2 * k + 4) + region_edges * (2 * 6 * 8 + 4 * itemsize)
    if form == "dual":
        algebra = 4 * labelled * labelled * itemsize
    else:
        algebra = 3 * labelled * width * itemsize + 3 * width * width * 8
    return propagation + algebra


def _exact_scores(x, edges, nodes, labels, k, kernel, lam) -> Tensor:
    base = graph_kernel_complexity(x, edges, nodes, labels, k=k, kernel=kernel, lam=lam)
    scores = torch.empty(edges.num_edges, dtype=x.dtype, device=x.device)
    weight = edges.weight.to(device=x.device, dtype=x.dtype)
    for e in range(edges.num_edges):
        removed = weight.clone()
        removed[e] = 0
        scores[e] = base - graph_kernel_complexity(x, edges, nodes, labels, k=k, kernel=kernel, lam=lam,
                                                   weight=removed)
    return scores


def _woodbury_scores(x, edges, nodes, labels, k, kernel, lam) -> Tensor:
    """Exact leave-one-edge-out GKC by a rank-2r update of ``H⁻¹``, r = |rows of Z_S that move|.

    If ``H' = H + E`` where E is non-zero only in rows/columns R, write ``D = H'[:, R] − H[:, R]``
    and ``P = I[:, R]``; then ``E = [D P] M [D P]ᵀ`` with ``M = [[0, I], [I, −D_RR]]`` and
    ``M⁻¹ = [[D_RR, I], [I, 0]]``, so with ``A = H⁻¹Y`` and ``U = [D P]``:
    ``GKC' = GKC − trace((UᵀA)ᵀ (M⁻¹ + UᵀH⁻¹U)⁻¹ (UᵀA))``.
    """
    n, m = x.shape[0], edges.num_edges
    device = x.device
    pairs = edges.pairs.to(device)
    weight = edges.weight.to(device=device, dtype=x.dtype)
    kern = KERNELS[kernel]
    z = gcn_propagate(x, pairs, weight, k)
    z_s = z[nodes]
    h_inv = torch.linalg.inv(gram(z_s, kernel, lam))
    a = h_inv @ labels
    position = positions(nodes, n)
    both = torch.cat([pairs, pairs.flip(0)], dim=1)
    scores = torch.zeros(m, dtype=x.dtype, device=device)
    for e in range(m):
        # rows of Z that change when e is removed: nodes within k hops of its endpoints
        moved, _, _, _ = k_hop_subgraph(pairs[:, e], k, both, num_nodes=n)
        r_nodes = moved[position[moved] >= 0]
        if r_nodes.numel() == 0:
            continue
        # (Â'^k X)[r_nodes] needs the k-hop ball around them, with degrees of the whole graph
        ball, ball_edges, _, edge_mask = k_hop_subgraph(r_nodes, k, both, num_nodes=n, relabel_nodes=True)
        removed = weight.clone()
        removed[e] = 0
        self_norm, norm = gcn_norm(pairs, removed, n)
        z_new = _propagate_in_ball(x[ball], ball_edges, self_norm[ball], norm.repeat(2)[edge_mask], k)
        z_r = z_new[torch.searchsorted(ball, r_nodes)]
        r = position[r_nodes]
        z_s_new = z_s.clone()
        z_s_new[r] = z_r
        d = kern(torch.cat([z_s_new, z_r]))[: nodes.numel(), nodes.numel():] - _kernel_columns(kern, z_s, r)
        u = torch.cat([d, torch.eye(nodes.numel(), dtype=x.dtype, device=device)[:, r]], dim=1)
        eye = torch.eye(r.numel(), dtype=x.dtype, device=device)
        m_inv = torch.cat([torch.cat([d[r], eye], 1), torch.cat([eye, torch.zeros_like(eye)], 1)], 0)
        ua = u.T @ a
        scores[e] = (ua * torch.linalg.solve(m_inv + u.T @ h_inv @ u, ua)).sum()
    return scores


def _kernel_columns(kern, z_s: Tensor, r: Tensor) -> Tensor:
    """Columns ``r`` of ``k(Z_S)`` (without ridge), (|S|, |r|)."""
    return kern(torch.cat([z_s, z_s[r]]))[: z_s.shape[0], z_s.shape[0]:]


def _propagate_in_ball(x_ball: Tensor, ball_edges: Tensor, self_norm: Tensor, norm: Tensor, k: int) -> Tensor:
    """``Â'^k X`` (rows unit-norm) on a relabelled ball: ``x_ball`` (b, d), ``ball_edges`` (2, E_b)
    directed, ``self_norm`` (b,) and ``norm`` (E_b,) the entries of ``Â'`` (:func:`kces.graph.gcn_norm`
    of the whole graph)."""
    src, dst = ball_edges
    z = x_ball
    for _ in range(k):
        z = (self_norm[:, None] * z).index_add(0, dst, norm[:, None] * z[src])
    return torch.nn.functional.normalize(z, dim=1)
