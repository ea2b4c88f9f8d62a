"""Parameter routing for PyG models: roles, build_optimizer, and training through it."""

import io
import math

import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

from optim import OPTIMIZERS, SPECTRA, CombinedOptimizer, Muon, RowNorm, build_optimizer, param_groups


@pytest.fixture(scope="module")
def graph():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 12, generator=g)
    edge_index = torch.randint(0, 30, (2, 120), generator=g)
    y = torch.randint(0, 4, (30,), generator=g)
    return x, edge_index, y


def roles(model, **kwargs):
    return {name: group["role"] for group in param_groups(model, **kwargs) for name in group["param_names"]}


def test_gcn_roles():
    assert roles(GCN(12, 16, 3, 4)) == {
        "convs.0.lin.weight": "input", "convs.1.lin.weight": "hidden", "convs.2.lin.weight": "head",
        "convs.0.bias": "other", "convs.1.bias": "other", "convs.2.bias": "other",
    }
    r = roles(GCN(12, 16, 2, 4, jk="cat"))  # the JumpingKnowledge head is a Linear after the convs
    assert (r["convs.0.lin.weight"], r["convs.1.lin.weight"], r["lin.weight"]) == ("input", "hidden", "head")


def test_gat_attention_vectors_go_to_adamw():
    r = roles(GAT(12, 16, 3, 4, heads=2))
    assert r["convs.1.lin.weight"] == "hidden"
    assert all(r[f"convs.{i}.{a}"] == "other" for i in range(3) for a in ("att_src", "att_dst", "bias"))


def test_sage_and_gin_layers_group_all_their_matrices():
    r = roles(GraphSAGE(12, 16, 3, 4))
    assert r["convs.0.lin_l.weight"] == r["convs.0.lin_r.weight"] == "input"
    assert r["convs.1.lin_l.weight"] == r["convs.1.lin_r.weight"] == "hidden"
    assert r["convs.2.lin_l.weight"] == r["convs.2.lin_r.weight"] == "head"
    r = roles(GIN(12, 16, 3, 4))
    assert [r[f"convs.{i}.nn.lins.{j}.weight"] for i in range(3) for j in range(2)] == [
        "input", "input", "hidden", "hidden", "head", "head"]
    assert r["convs.1.nn.lins.0.bias"] == "other"
    r = roles(GIN(12, 16, 3, 4), head_module="convs.2.nn.lins.1")  # narrow the head to the last Linear
    assert (r["convs.2.nn.lins.0.weight"], r["convs.2.nn.lins.1.weight"]) == ("hidden", "head")


class HandWritten(nn.Module):
    """Linear encoder, two GCN layers, a hand-written attention vector, a norm and a classifier."""

    def __init__(self):
        super().__init__()
        self.node_type = nn.Embedding(3, 12)
        self.encoder = nn.Linear(12, 16)
        self.conv1 = GCNConv(16, 16)
        self.att = nn.Parameter(torch.randn(32, 1))  # pyGAT-style 2-D attention vector
        self.norm = nn.LayerNorm(16)
        self.conv2 = GCNConv(16, 16)
        self.mix = nn.Parameter(torch.randn(16, 16))  # a raw hidden matrix owned by the model itself
        self.classifier = nn.Linear(16, 4)

    def forward(self, x, edge_index):
        h = self.encoder(x).relu()
        h = self.norm(self.conv1(h, edge_index)).relu()
        return self.classifier(self.conv2(h, edge_index) @ self.mix)


def test_hand_written_module_roles_and_overrides():
    r = roles(HandWritten())
    assert r["encoder.weight"] == "input" and r["classifier.weight"] == "head"
    assert r["conv1.lin.weight"] == r["conv2.lin.weight"] == "hidden"
    assert r["mix"] == "hidden"  # a matrix on the model itself: position unknown, so hidden
    assert r["node_type.weight"] == r["att"] == r["norm.weight"] == r["encoder.bias"] == "other"
    r = roles(HandWritten(), input_module="conv1", head_module="conv2")
    assert (r["encoder.weight"], r["conv1.lin.weight"], r["conv2.lin.weight"]) == ("hidden", "input", "head")
    with pytest.raises(ValueError, match="no module named 'decoder'"):
        param_groups(HandWritten(), head_module="decoder")


def test_routes_frozen_parameters_and_group_layout():
    model = GCN(12, 16, 3, 4)
    model.convs[0].bias.requires_grad_(False)
    groups = param_groups(model, input_proj="spectral", head="centered_rownorm")
    assert [(g["role"], g["route"]) for g in groups] == [
        ("hidden", "spectral"), ("input", "spectral"), ("head", "centered_rownorm"), ("other", "adamw")]
    assert "convs.0.bias" not in {n for g in groups for n in g["param_names"]}
    with pytest.raises(ValueError, match="head"):
        param_groups(model, head="sgd")


def test_lazy_model_needs_a_forward_pass(graph):
    x, edge_index, _ = graph
    model = GCN(-1, 16, 3, 4)
    with pytest.raises(ValueError, match="forward pass"):
        param_groups(model)
    with pytest.raises(ValueError, match="forward pass"):
        build_optimizer(model, "muon")
    model(x, edge_index)
    assert roles(model)["convs.0.lin.weight"] == "input"


def test_two_layer_model_has_no_hidden_matrix_by_default():
    with pytest.raises(ValueError, match=r"input_proj='spectral'.*head='spectral'"):
        build_optimizer(GCN(12, 16, 2, 4), "rmnp")
    opt = build_optimizer(GCN(12, 16, 2, 4), "rmnp", input_proj="spectral")
    assert isinstance(opt, CombinedOptimizer)
    assert [type(o).__name__ for o in opt.optimizers] == ["RMNP", "AdamW"]
    assert [g["role"] for g in opt.param_groups] == ["input", "head", "other"]


def train(model, opt, graph, steps=25):
    x, edge_index, y = graph
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x, edge_index), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("model_cls", [GCN, GAT, GraphSAGE, GIN])
def test_build_optimizer_trains_pyg_models(model_cls, name, graph):
    torch.manual_seed(0)
    model = model_cls(12, 16, 3, 4)
    opt = build_optimizer(model, name, adamw=dict(lr=0.01), head="centered_rownorm")
    losses = train(model, opt, graph)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0]


def test_build_optimizer_structure_and_options():
    model = GCN(12, 16, 3, 4)
    opt = build_optimizer(model, "htmuon", lr=0.05, weight_decay=0.1, power=0.25, head="rownorm",
                          adamw=dict(lr=3e-3, weight_decay=0.0))
    assert [type(o) for o in opt.optimizers] == [type(opt.optimizers[0]), RowNorm, torch.optim.AdamW]
    hidden, head, other = opt.optimizers[0].param_groups[0], opt.optimizers[1].param_groups[0], \
        opt.optimizers[2].param_groups[0]
    assert (hidden["lr"], hidden["weight_decay"], hidden["power"]) == (0.05, 0.1, 0.25)
    assert (head["lr"], head["centered"], head["role"]) == (3e-3, False, "head")
    assert (other["lr"], other["weight_decay"]) == (3e-3, 0.0)
    # Only the outermost object checks gradients (once per step; by default CPU tensors only).
    assert opt.check_finite is None and hidden["check_finite"] is False and head["check_finite"] is False
    assert build_optimizer(model, "muon", check_finite=True).check_finite is True

    base = build_optimizer(model, "adamw", lr=0.1, weight_decay=0.0)
    assert isinstance(base, torch.optim.AdamW)
    assert [(g["role"], g["lr"], g["weight_decay"]) for g in base.param_groups] == [
        ("hidden", 0.1, 0.0), ("input", 1e-3, 0.01), ("head", 1e-3, 0.01), ("other", 1e-3, 0.01)]
    for group in base.param_groups:
        group["clip_c"] = 2.0 if group["route"] == "spectral" else None
    spectra = SPECTRA(base, pre_clip_c=0.5)
    assert [(g["role"], g["clip_c"], g["pre_clip_c"]) for g in spectra.param_groups] == [
        ("hidden", 2.0, 0.5), ("input", None, 0.5), ("head", None, 0.5), ("other", None, 0.5)]
    with pytest.raises(TypeError, match="unexpected options for AdamW"):
        build_optimizer(model, "adamw", power=0.5)

    model.convs[0].lin.weight.requires_grad_(False)
    model.convs[2].lin.weight.requires_grad_(False)
    for p in (c.bias for c in model.convs):
        p.requires_grad_(False)
    alone = build_optimizer(model, "muon")  # only the hidden matrix is trainable: no combination
    assert isinstance(alone, Muon) and alone.param_groups[0]["check_finite"] is None
    with pytest.raises(ValueError, match="name"):
        build_optimizer(model, "adam")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_built_optimizer_state_dict_and_scheduler(name, graph):
    def fresh():
        torch.manual_seed(0)
        model = GCN(12, 16, 3, 4)
        return model, build_optimizer(model, name, head="centered_rownorm")

    model, opt = fresh()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    train(model, opt, graph, steps=3)
    scheduler.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()}, buffer)
    train(model, opt, graph, steps=3)

    buffer.seek(0)
    saved = torch.load(buffer)
    model2, opt2 = fresh()
    model2.load_state_dict(saved["model"])
    scheduler2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    scheduler2.load_state_dict(saved["sched"])
    opt2.load_state_dict(saved["opt"])
    train(model2, opt2, graph, steps=3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    lrs = [g["lr"] for g in opt2.param_groups]
    assert lrs[0] < opt2.param_groups[0]["initial_lr"]  # the schedule drives every group


def test_combined_optimizer_raises_on_non_finite_adamw_gradient(graph):
    model = GCN(12, 16, 3, 4)
    opt = build_optimizer(model, "muon")
    train(model, opt, graph, steps=1)
    before = [p.detach().clone() for p in model.parameters()]
    x, edge_index, y = graph
    nn.functional.cross_entropy(model(x, edge_index), y).backward()
    model.convs[1].bias.grad[0] = math.nan  # a bias: owned by AdamW, which does not check itself
    with pytest.raises(FloatingPointError, match="CombinedOptimizer"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
