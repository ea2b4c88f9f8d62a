"""Hyper-parameter validation and bad inputs: clear errors, nothing changed."""

import math

import numpy as np
import pytest
import torch

from optim import RMNP, SPECTRA, CombinedOptimizer, HTMuon, Muon, RowNorm


def weight(shape=(6, 8)):
    return torch.nn.Parameter(torch.randn(*shape))


COMMON_BAD = [
    ("lr", -0.1),
    ("lr", math.nan),
    ("lr", "0.1"),
    ("momentum", -0.5),
    ("momentum", 1.0),
    ("weight_decay", -1e-4),
    ("weight_decay", math.inf),
    ("nesterov", 1),
    ("check_finite", "yes"),
]
SPECIFIC_BAD = [
    (Muon, "ns_steps", 0),
    (Muon, "ns_steps", 2.5),
    (Muon, "ns_coefficients", (1.0, 2.0)),
    (Muon, "ns_coefficients", (1.0, math.nan, 2.0)),
    (Muon, "eps", 0.0),
    (Muon, "ns_dtype", torch.int32),
    (Muon, "method", "qr"),
    (Muon, "adjust_lr_fn", "moonlight"),
    (HTMuon, "power", -0.1),
    (HTMuon, "power", 1.5),
    (HTMuon, "method", "eig"),
    (HTMuon, "ns_steps", -1),
    (RMNP, "eps", -1e-8),
    (RowNorm, "centered", "yes"),
    (RowNorm, "eps", math.nan),
]
CLASSES = [Muon, HTMuon, RMNP, RowNorm]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("name,value", COMMON_BAD)
def test_common_hyperparameters_are_validated(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls([weight()], **{name: value})


@pytest.mark.parametrize("cls,name,value", SPECIFIC_BAD)
def test_specific_hyperparameters_are_validated(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls([weight()], **{name: value})


def test_numpy_scalars_and_named_parameters_are_accepted():
    p = weight()
    opt = Muon([("layer.weight", p)], lr=np.float32(0.01), ns_steps=np.int64(5))
    assert opt.param_groups[0]["param_names"] == ["layer.weight"]
    p.grad = torch.randn_like(p)
    opt.step()


def test_htmuon_newton_schulz_needs_power_of_two():
    HTMuon([weight()], method="newton_schulz", power=0.25)
    with pytest.raises(ValueError, match=r"2\^-k"):
        HTMuon([weight()], method="newton_schulz", power=0.3)
    with pytest.raises(ValueError, match=r"2\^-k"):
        HTMuon([weight()], method="newton_schulz", power=0.0)


def test_bad_group_is_refused_and_not_added():
    opt = Muon([weight()])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [weight()], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_parameters_that_are_not_float_matrices_are_refused(cls):
    with pytest.raises(ValueError, match="ndim >= 2"):
        cls([torch.nn.Parameter(torch.randn(5))])
    with pytest.raises(ValueError, match="complex"):
        cls([torch.nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="sparse"):
        cls([torch.nn.Parameter(torch.eye(3).to_sparse())])
    with pytest.raises(ValueError, match="not initialised"):
        cls([torch.nn.parameter.UninitializedParameter()])


@pytest.mark.parametrize("cls", CLASSES)
def test_sparse_gradient_is_refused(cls):
    p = weight((3, 3))
    opt = cls([p])
    p.grad = torch.eye(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def make(kind, params):
    if kind == "spectra":
        return SPECTRA(torch.optim.AdamW(params, lr=0.1), clip_c=1.0)
    if kind == "combined":
        return CombinedOptimizer([Muon(params[:1]), torch.optim.AdamW(params[1:], lr=0.1)])
    return kind(params, lr=0.1)


@pytest.mark.parametrize("kind", CLASSES + ["spectra", "combined"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_gradient_raises_before_changing_anything(kind, bad):
    params = [weight(), weight((4, 4))]
    opt = make(kind, params)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # a good step creates state
    before = [p.detach().clone() for p in params]
    state_before = {k: v.clone() for k, v in opt.state[params[0]].items() if torch.is_tensor(v)}
    params[0].grad = torch.randn_like(params[0])
    params[1].grad = torch.randn_like(params[1])
    params[1].grad[2, 3] = bad
    with pytest.raises(FloatingPointError, match=r"non-finite .* shape \(4, 4\)"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    for key, value in state_before.items():
        assert torch.equal(opt.state[params[0]][key], value)
    # After the error the optimizer still works (skip the batch and go on).
    params[1].grad = torch.randn_like(params[1])
    opt.step()
    assert all(torch.isfinite(p).all() for p in params)


def test_overflowing_but_finite_gradient_is_not_reported():
    p = weight((2, 2))
    opt = RMNP([p])
    p.grad = torch.full((2, 2), 3e38)  # the sum overflows to inf, every entry is finite
    opt.step()
    assert torch.isfinite(p).all()


def test_non_finite_check_can_be_disabled():
    p = weight()
    opt = Muon([p], check_finite=False)
    p.grad = torch.full_like(p, math.nan)
    opt.step()
    assert torch.isnan(p).all()


def test_spectra_options_are_validated():
    base = torch.optim.AdamW([weight()])
    for kwargs, name in [({"clip_c": 0.0}, "clip_c"), ({"clip_c": -1.0}, "clip_c"),
                         ({"pre_clip_c": -0.1}, "pre_clip_c"), ({"clip_steps": 0}, "clip_steps"),
                         ({"clip_dtype": "bf16"}, "clip_dtype"), ({"check_finite": 1}, "check_finite")]:
        with pytest.raises(ValueError, match=name):
            SPECTRA(base, **kwargs)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        SPECTRA([weight()])


def test_combined_optimizer_errors():
    a, b = weight(), weight()
    combined = CombinedOptimizer([Muon([a]), torch.optim.AdamW([b])])
    with pytest.raises(ValueError, match="sub-optimizer"):
        combined.add_param_group({"params": [weight()]})
    with pytest.raises(ValueError, match="2 optimizers"):
        combined.load_state_dict({"optimizers": [combined.optimizers[0].state_dict()]})
    with pytest.raises(ValueError, match="more than one parameter group"):
        CombinedOptimizer([Muon([a]), torch.optim.AdamW([a])])
    with pytest.raises(TypeError):
        CombinedOptimizer([Muon([a]), "adamw"])
    with pytest.raises(ValueError, match="at least one"):
        CombinedOptimizer([])
