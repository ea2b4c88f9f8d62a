"""Muon, HTMuon, RMNP, RowNorm and SPECTRA: updates against references, and the Optimizer contract."""

import io
import math

import pytest
import torch

from optim import RMNP, SPECTRA, HTMuon, Muon, RowNorm
from optim.newton_schulz import svd_spectral_power


def make_param(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=dtype))


def grads(shape, n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype) for _ in range(n)]


def nesterov_momenta(gradients, beta):
    """The Nesterov momentum matrices M_t = lerp(G_t, B_t, β), B_t = lerp(B_{t-1}, G_t, 1-β)."""
    buf, out = torch.zeros_like(gradients[0]), []
    for g in gradients:
        buf = buf + (1 - beta) * (g - buf)
        out.append(g + beta * (buf - g))
    return out


def polar(G):
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


# --- Muon -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 143), (143, 16), (48, 48)])
@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_muon_bf16_is_bit_identical_to_torch_muon(shape, adjust_lr_fn):
    ours, theirs = make_param(shape), make_param(shape)
    opt_ours = Muon([ours], lr=0.02, weight_decay=0.1, ns_dtype=torch.bfloat16, adjust_lr_fn=adjust_lr_fn)
    opt_theirs = torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn)
    for g in grads(shape, 4):
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
        assert torch.equal(ours, theirs)
    assert torch.equal(opt_ours.state[ours]["momentum_buffer"], opt_theirs.state[theirs]["momentum_buffer"])


@pytest.mark.parametrize("shape", [(16, 143), (143, 16), (64, 64), (7, 16)])
def test_muon_fp32_default_matches_torch_muon_within_2_percent(shape):
    start = make_param(shape)
    ours, theirs = make_param(shape), make_param(shape)
    opt_ours, opt_theirs = Muon([ours], lr=0.02), torch.optim.Muon([theirs], lr=0.02, weight_decay=0.0)
    for g in grads(shape, 3):
        ours.grad, theirs.grad = g.clone(), g.clone()
        before_ours, before_theirs = ours.detach().clone(), theirs.detach().clone()
        opt_ours.step()
        opt_theirs.step()
        d_ours, d_theirs = ours - before_ours, theirs - before_theirs
        assert ((d_ours - d_theirs).norm() / d_theirs.norm()).item() < 0.02
    assert not torch.equal(ours, start)


def test_muon_svd_method_is_exact_polar_step():
    shape = (12, 30)
    p = make_param(shape, dtype=torch.float64)
    start = p.detach().clone()
    gs = grads(shape, 3, dtype=torch.float64)
    opt = Muon([p], lr=0.1, momentum=0.9, weight_decay=0.01, method="svd")
    expected = start.clone()
    for g, m in zip(gs, nesterov_momenta(gs, 0.9)):
        p.grad = g
        opt.step()
        expected = expected * (1 - 0.1 * 0.01) - 0.1 * polar(m)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)


def test_muon_tall_scale_and_no_nesterov():
    shape = (40, 10)  # scale sqrt(40/10) = 2
    p = make_param(shape, dtype=torch.float64)
    start = p.detach().clone()
    g = grads(shape, 1, dtype=torch.float64)[0]
    p.grad = g
    Muon([p], lr=0.05, nesterov=False, method="svd").step()
    torch.testing.assert_close(p.detach(), start - 0.05 * 2 * polar(g))


def test_muon_flattens_conv_weights():
    conv, flat = make_param((8, 3, 2, 2)), make_param((8, 12))
    g = grads((8, 3, 2, 2), 1)[0]
    conv.grad, flat.grad = g, g.reshape(8, 12)
    Muon([conv]).step()
    Muon([flat]).step()
    assert torch.equal(conv.detach().reshape(8, 12), flat.detach())


# --- HTMuon -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(10, 25), (25, 10)])
def test_htmuon_power_zero_is_svd_muon(shape):
    a, b, c = (make_param(shape, dtype=torch.float64) for _ in range(3))
    opts = [HTMuon([a], power=0.0), HTMuon([b], power=1e-9), Muon([c], method="svd")]
    for g in grads(shape, 3, dtype=torch.float64):
        for p, opt in zip((a, b, c), opts):
            p.grad = g.clone()
            opt.step()
    torch.testing.assert_close(a.detach(), c.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(b.detach(), c.detach(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_htmuon_power_one_is_momentum_sgd(method):
    shape = (30, 12)  # tall: scale sqrt(30/12)
    p = make_param(shape, dtype=torch.float64)
    gs = grads(shape, 3, dtype=torch.float64)
    opt = HTMuon([p], lr=0.01, momentum=0.9, weight_decay=0.1, power=1.0, method=method)
    expected = p.detach().clone()
    for g, m in zip(gs, nesterov_momenta(gs, 0.9)):
        p.grad = g
        opt.step()
        expected = expected * (1 - 0.01 * 0.1) - 0.01 * math.sqrt(30 / 12) * m
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-9)


def test_htmuon_update_spectrum_and_newton_schulz_method():
    shape = (16, 40)
    gs = grads(shape, 1, dtype=torch.float64)
    deltas = []
    for method in ("svd", "newton_schulz"):
        p = make_param(shape, dtype=torch.float64)
        start = p.detach().clone()
        p.grad = gs[0]
        HTMuon([p], lr=1.0, momentum=0.5, power=0.25, method=method).step()
        deltas.append(start - p.detach())
    m = nesterov_momenta(gs, 0.5)[0]
    torch.testing.assert_close(torch.linalg.svdvals(deltas[0]), torch.linalg.svdvals(m).pow(0.25))
    torch.testing.assert_close(deltas[0], svd_spectral_power(m, 0.25))
    assert (deltas[1] - deltas[0]).norm() / deltas[0].norm() < 1e-6


# --- RMNP and RowNorm -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 143), (143, 16)])
def test_rmnp_rows_have_unit_norm_in_native_layout(shape):
    p = make_param(shape, dtype=torch.float64)
    gs = grads(shape, 2, dtype=torch.float64)
    opt = RMNP([p], lr=0.02)
    scale = math.sqrt(max(1, shape[0] / shape[1]))
    for g, m in zip(gs, nesterov_momenta(gs, 0.95)):
        before = p.detach().clone()
        p.grad = g
        opt.step()
        direction = (before - p.detach()) / (0.02 * scale)
        torch.testing.assert_close(direction.norm(dim=1), torch.ones(shape[0], dtype=torch.float64))
        torch.testing.assert_close(direction, m / m.norm(dim=1, keepdim=True))


def test_rownorm_scale_and_centering():
    shape = (7, 16)
    g = grads(shape, 1, dtype=torch.float64)[0]
    p, q = make_param(shape, dtype=torch.float64), make_param(shape, dtype=torch.float64)
    start = p.detach().clone()
    p.grad, q.grad = g, g.clone()
    RowNorm([p], lr=0.1).step()
    RowNorm([q], lr=0.1, centered=True).step()
    plain = (start - p.detach()) / 0.1
    centered = (start - q.detach()) / 0.1
    torch.testing.assert_close(plain.pow(2).mean(dim=1), torch.ones(7, dtype=torch.float64))  # row RMS 1
    torch.testing.assert_close(centered, plain - plain.mean(dim=0, keepdim=True))
    torch.testing.assert_close(centered.sum(dim=0), torch.zeros(16, dtype=torch.float64), rtol=0, atol=1e-12)


def test_centered_rownorm_head_never_moves_along_the_softmax_shift():
    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randint(0, 5, (64,))
    head = torch.nn.Linear(10, 5)
    opt = RowNorm([head.weight], lr=0.05, centered=True)
    mean_row = head.weight.detach().mean(dim=0).clone()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    torch.testing.assert_close(head.weight.detach().mean(dim=0), mean_row, rtol=0, atol=1e-6)
    assert losses[-1] < 0.9 * losses[0]


# --- SPECTRA ----------------------------------------------------------------------------------

def spectra_pair(shape, **kwargs):
    """A SPECTRA(AdamW) optimizer and a plain AdamW on identical float64 parameters (+ a bias)."""
    w1, w2 = make_param(shape, dtype=torch.float64), make_param(shape, dtype=torch.float64)
    b1, b2 = make_param((shape[0],), dtype=torch.float64), make_param((shape[0],), dtype=torch.float64)
    clipped = SPECTRA(torch.optim.AdamW([w1, b1], lr=0.01, weight_decay=0.1), **kwargs)
    plain = torch.optim.AdamW([w2, b2], lr=0.01, weight_decay=0.1)
    return (w1, b1, clipped), (w2, b2, plain)


def test_spectra_with_huge_threshold_is_the_base_optimizer():
    shape = (12, 20)
    (w1, b1, clipped), (w2, b2, plain) = spectra_pair(shape, clip_c=1e6)
    for g in grads(shape, 3, dtype=torch.float64):
        w1.grad, w2.grad = g.clone(), g.clone()
        b1.grad, b2.grad = g[:, 0].clone(), g[:, 0].clone()
        clipped.step()
        plain.step()
    torch.testing.assert_close(w1.detach(), w2.detach(), rtol=0, atol=1e-10)
    assert torch.equal(b1, b2)  # vectors are never clipped


@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_spectra_soft_clips_update_singular_values(shape):
    c = 0.5
    (w1, b1, clipped), (w2, b2, plain) = spectra_pair(shape, clip_c=c)
    g = grads(shape, 1, dtype=torch.float64)[0]
    w1.grad, w2.grad = g.clone(), g.clone()
    start = w1.detach().clone()
    clipped.step()
    plain.step()
    lr, wd = 0.01, 0.1
    base_update = (start - w2.detach()) / lr - wd * start  # AdamW's direction, ~sign(g)
    new_update = (start * (1 - lr * wd) - w1.detach()) / (lr * math.sqrt(max(1, shape[0] / shape[1])))
    s = torch.linalg.svdvals(base_update)
    assert s.max() > 4 * c  # the clipping is active
    torch.testing.assert_close(torch.linalg.svdvals(new_update), s / torch.sqrt(1 + s**2 / c**2))
    U, _, Vh = torch.linalg.svd(base_update, full_matrices=False)
    torch.testing.assert_close(new_update, (U * (s / torch.sqrt(1 + s**2 / c**2))) @ Vh)


def test_spectra_pre_clips_gradients_and_skips_unclipped_groups():
    shape = (10, 16)
    w, v = make_param(shape, dtype=torch.float64), make_param(shape, dtype=torch.float64)
    base = torch.optim.AdamW([{"params": [w]}, {"params": [v], "clip_c": None}], lr=0.01)
    opt = SPECTRA(base, clip_c=1.0, pre_clip_c=0.1)
    g = grads(shape, 1, dtype=torch.float64)[0] * 10
    w.grad, v.grad = g.clone(), g.clone()
    v_start = v.detach().clone()
    opt.step()
    s = torch.linalg.svdvals(g)
    torch.testing.assert_close(torch.linalg.svdvals(w.grad), s / torch.sqrt(1 + s**2 / 0.01))
    assert torch.equal(v.grad, g)  # clip_c=None: no pre-clip, no post-clip
    reference = torch.optim.AdamW([v_ref := torch.nn.Parameter(v_start)], lr=0.01)
    v_ref.grad = g.clone()
    reference.step()
    assert torch.equal(v, v_ref)


def test_spectra_groups_are_shared_with_the_base_optimizer():
    w = make_param((4, 6))
    base = torch.optim.AdamW([w], lr=0.01)
    opt = SPECTRA(base, clip_c=2.0)
    assert opt.param_groups[0] is base.param_groups[0] and base.param_groups[0]["clip_c"] == 2.0
    extra = make_param((3, 3))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert base.param_groups[1] is opt.param_groups[1] and base.param_groups[1]["clip_c"] == 2.0
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w.grad, extra.grad = torch.ones(4, 6), torch.ones(3, 3)
    opt.step()
    scheduler.step()
    assert [g["lr"] for g in base.param_groups] == [0.005, 0.25]


# --- the torch.optim.Optimizer contract --------------------------------------------------------

def build(kind, params):
    return {
        "muon": lambda: Muon(params, lr=0.02, weight_decay=0.01),
        "muon_bf16": lambda: Muon(params, ns_dtype=torch.bfloat16),
        "htmuon": lambda: HTMuon(params, weight_decay=0.01),
        "htmuon_ns": lambda: HTMuon(params, method="newton_schulz"),
        "rmnp": lambda: RMNP(params, weight_decay=0.01),
        "rownorm": lambda: RowNorm(params, centered=True),
        "spectra": lambda: SPECTRA(torch.optim.AdamW(params, lr=0.01), clip_c=0.5, pre_clip_c=1.0),
        "spectra_muon": lambda: SPECTRA(Muon(params), clip_c=0.5),
    }[kind]()


KINDS = ["muon", "muon_bf16", "htmuon", "htmuon_ns", "rmnp", "rownorm", "spectra", "spectra_muon"]
SHAPES = [(16, 40), (40, 16), (8, 2, 3)]


def run(params, opt, gradient_lists):
    for step_grads in gradient_lists:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_resumes_bit_identically(kind):
    gradient_lists = list(zip(*(grads(s, 6, seed=i) for i, s in enumerate(SHAPES))))
    params = [make_param(s, seed=i) for i, s in enumerate(SHAPES)]
    opt = build(kind, params)
    run(params, opt, gradient_lists[:3])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buffer)
    run(params, opt, gradient_lists[3:])

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = [torch.nn.Parameter(t) for t in saved["params"]]
    opt2 = build(kind, resumed)
    opt2.load_state_dict(saved["opt"])
    run(resumed, opt2, gradient_lists[3:])
    for p, q in zip(params, resumed):
        assert torch.equal(p, q)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("kind", KINDS)
def test_closure_skip_none_grads_zero_grad_and_scheduler(kind):
    params = [make_param(s, seed=i) for i, s in enumerate(SHAPES)]
    opt = build(kind, params)
    frozen_before = params[1].detach().clone()
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = sum((p**2).sum() for p in (params[0], params[2]))
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1 and torch.is_tensor(loss) and loss.item() > 0
    assert params[1].grad is None and torch.equal(params[1], frozen_before)
    assert params[1] not in opt.state or not opt.state[params[1]]
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    lr = opt.param_groups[0]["lr"]
    opt.step(closure)
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 0.1)


def test_param_groups_with_their_own_options():
    a, b = make_param((8, 8)), make_param((8, 8), seed=1)
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = Muon([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.1)
    a.grad, b.grad = torch.randn(8, 8), torch.randn(8, 8)
    opt.step()
    assert not torch.equal(a, a0) and torch.equal(b, b0)
