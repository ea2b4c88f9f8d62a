"""Matrix functions of optim.newton_schulz against SVD references (float64)."""

import pytest
import torch

from optim.newton_schulz import (
    MUON_COEFFICIENTS,
    iteration_dtype,
    newton_schulz,
    ns_inverse_sqrt,
    ns_soft_clip,
    ns_spectral_power,
    svd_spectral_power,
)

SHAPES = [(16, 143), (143, 16), (40, 40), (7, 64)]


def with_spectrum(m: int, n: int, singular_values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """An (m, n) float64 matrix with the given singular values and random singular vectors."""
    g = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return (U * singular_values) @ V.T


def polar(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_singular_values_in_published_band(shape):
    m, n = shape
    k = min(m, n)
    G = with_spectrum(m, n, torch.logspace(0, -2, k, dtype=torch.float64))
    O = newton_schulz(G)
    assert O.shape == G.shape and O.dtype == torch.float64
    s = torch.linalg.svdvals(O)
    # Keller Jordan: S' ~ Uniform(0.5, 1.5); 5 steps give [0.68, 1.14] on this spectrum.
    assert 0.6 < s.min() and s.max() < 1.2
    # Same singular vectors as the exact polar factor: O Vᵀ-projection onto U Vᵀ is positive.
    assert torch.einsum("ij,ij->", O, polar(G)) / k > 0.8


def test_newton_schulz_converges_with_more_steps_on_well_conditioned_input():
    G = with_spectrum(20, 50, torch.linspace(1.0, 0.5, 20, dtype=torch.float64))
    s = torch.linalg.svdvals(newton_schulz(G, steps=5))
    assert (s - 1).abs().max() < 0.35
    # The quintic does not converge to 1, it oscillates in its band: that is by design.
    s10 = torch.linalg.svdvals(newton_schulz(G, steps=10))
    assert 0.65 < s10.min() and s10.max() < 1.2


@pytest.mark.parametrize("shape", [(16, 143), (143, 16), (10, 20)])
def test_gram_path_equals_direct_iteration(shape):
    """fp32/fp64 wide matrices are iterated on their Gram matrix; the result must be the same."""
    G = with_spectrum(*shape, torch.logspace(0, -3, min(shape), dtype=torch.float64))
    a, b, c = MUON_COEFFICIENTS
    X = G / G.norm()
    X = X.T if shape[0] > shape[1] else X
    for _ in range(7):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    X = X.T if shape[0] > shape[1] else X
    torch.testing.assert_close(newton_schulz(G, steps=7), X, rtol=0, atol=1e-10)


def test_newton_schulz_bfloat16_and_dtype_choice():
    G = with_spectrum(16, 64, torch.linspace(1, 0.1, 16, dtype=torch.float64)).float()
    O = newton_schulz(G, dtype=torch.bfloat16)
    assert O.dtype == torch.bfloat16
    ref = newton_schulz(G.double())
    assert (O.double() - ref).norm() / ref.norm() < 0.03
    assert iteration_dtype(G) == torch.float32
    assert iteration_dtype(G.double()) == torch.float64
    assert iteration_dtype(G.bfloat16()) == torch.float32
    assert iteration_dtype(G, torch.float16) == torch.float16


def test_newton_schulz_of_zero_is_zero():
    assert torch.equal(newton_schulz(torch.zeros(4, 9)), torch.zeros(4, 9))


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_power_zero_is_exact_polar_factor(shape):
    G = with_spectrum(*shape, torch.logspace(0, -4, min(shape), dtype=torch.float64))
    O = svd_spectral_power(G, 0.0)
    torch.testing.assert_close(O, polar(G), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.svdvals(O), torch.ones(min(shape), dtype=torch.float64))


def test_svd_power_one_is_identity_and_rank_deficiency_is_kept():
    G = with_spectrum(12, 30, torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64))  # rank 3
    torch.testing.assert_close(svd_spectral_power(G, 1.0), G)
    s = torch.linalg.svdvals(svd_spectral_power(G, 0.0))
    torch.testing.assert_close(s[:3], torch.ones(3, dtype=torch.float64))
    assert s[3:].abs().max() < 1e-12  # null directions stay null


@pytest.mark.parametrize("power", [1.0, 0.5, 0.125])
@pytest.mark.parametrize("shape", [(16, 80), (80, 16), (24, 24)])
def test_ns_spectral_power_matches_svd(shape, power):
    singular_values = torch.logspace(0, -2, min(shape), dtype=torch.float64) * 7.0
    G = with_spectrum(*shape, singular_values)
    ref = svd_spectral_power(G, power)
    out = ns_spectral_power(G, power)
    assert (out - ref).norm() / ref.norm() < 1e-6
    s = torch.linalg.svdvals(out)
    torch.testing.assert_close(s, singular_values.pow(power), rtol=1e-5, atol=0)


def test_ns_spectral_power_float32_accuracy():
    G = with_spectrum(16, 80, torch.logspace(0, -2, 16, dtype=torch.float64))
    ref = svd_spectral_power(G, 0.125)
    out = ns_spectral_power(G.float(), 0.125)
    assert out.dtype == torch.float32
    assert (out.double() - ref).norm() / ref.norm() < 1e-2


@pytest.mark.parametrize("c", [0.01, 0.3, 1.0, 4.0])
@pytest.mark.parametrize("shape", [(16, 80), (80, 16), (30, 30)])
def test_soft_clip_singular_values(shape, c):
    singular_values = torch.logspace(1, -2, min(shape), dtype=torch.float64)  # σ_max/c up to 1000
    G = with_spectrum(*shape, singular_values)
    out = ns_soft_clip(G, c)
    expected = singular_values / torch.sqrt(1 + singular_values**2 / c**2)
    torch.testing.assert_close(torch.linalg.svdvals(out), expected, rtol=1e-7, atol=0)
    # Same singular vectors: H(G) = U diag(h(σ)) Vᵀ.
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    torch.testing.assert_close(out, (U * expected) @ Vh, rtol=0, atol=1e-8)


def test_soft_clip_float32_and_zero():
    singular_values = torch.logspace(0.5, -2, 16, dtype=torch.float64)
    G = with_spectrum(16, 50, singular_values)
    expected = singular_values / torch.sqrt(1 + singular_values**2)
    s = torch.linalg.svdvals(ns_soft_clip(G.float(), 1.0).double())
    torch.testing.assert_close(s, expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(ns_soft_clip(torch.zeros(3, 5), 1.0), torch.zeros(3, 5))


def test_ns_inverse_sqrt():
    S = with_spectrum(10, 10, torch.linspace(1.0, 0.05, 10, dtype=torch.float64))
    S = S @ S.T  # SPD, eigenvalues in [0.0025, 1]
    evals, evecs = torch.linalg.eigh(S)
    ref = (evecs * evals.rsqrt()) @ evecs.T
    torch.testing.assert_close(ns_inverse_sqrt(S, steps=5, fast_steps=5), ref, rtol=0, atol=1e-9)
    assert torch.equal(ns_inverse_sqrt(S, steps=0), torch.eye(10, dtype=torch.float64))


def test_measured_dtype_picks_the_faster_form_and_is_cached(monkeypatch):
    """The cost model: bf16 runs the direct form, fp32 the Gram form on wide matrices; each
    (device, shape, steps) is timed once per process."""
    from optim import newton_schulz as ns

    calls = []

    def fake_seconds(run):  # bf16 matmuls 4× faster than fp32, whatever the shape
        x = run()
        calls.append(x.dtype)
        return 1.0 if x.dtype == torch.bfloat16 else 4.0

    monkeypatch.setattr(ns, "_seconds", fake_seconds)
    monkeypatch.setattr(ns, "_MEASURED", {})
    cpu = torch.device("cpu")
    assert ns.measured_dtype(256, 256, 5, cpu) == torch.bfloat16  # direct vs direct: 15 vs 60
    # 16×1433: bf16 5·(2+1) = 15, fp32 Gram 1·2·4 + 5·4·4 = 88 -> still bf16 at a 4× rate gap
    assert ns.measured_dtype(16, 1433, 5, cpu) == torch.bfloat16
    monkeypatch.setattr(ns, "_seconds", lambda run: 2.0 if run().dtype == torch.bfloat16 else 1.0)
    assert ns.measured_dtype(64, 64, 5, cpu) == torch.float32
    assert ns.measured_dtype(256, 256, 5, cpu) == torch.bfloat16  # cached from the first call
    assert len(calls) == 8  # two products per dtype per shape, once


def test_default_newton_schulz_on_cpu_runs_in_the_measured_dtype():
    from optim.newton_schulz import measured_dtype, newton_schulz

    g = torch.randn(64, 200, generator=torch.Generator().manual_seed(0))
    chosen = measured_dtype(64, 200, 5, g.device)
    assert chosen in (torch.bfloat16, torch.float32)
    assert torch.equal(newton_schulz(g), newton_schulz(g, dtype=chosen))
    assert torch.equal(newton_schulz(g.T), newton_schulz(g.T, dtype=chosen))  # tall: same shape key
    assert newton_schulz(g.double()).dtype == torch.float64
