"""The ``kces`` command line end to end: sanitize → bench → report, resume, failing cells, bad arguments."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from kces.formats import load_pyg
from kces.cli import main
from tiny_graphs import write_tiny_npz

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_npz(tmp_path / "tiny.npz")


def bench(tiny: Path, out: Path, *extra: str) -> int:
    return main(["bench", "--datasets", str(tiny), "--out", str(out), "--epochs", "10", *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sanitize_bench_report_end_to_end(tiny: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    sanitized = tmp_path / "sanitized.npz"
    assert main(["sanitize", str(tiny), str(sanitized)]) == 0
    message = capsys.readouterr().out
    assert "undirected edges" in message and "pruned" in message and "re-weighted" in message
    with np.load(tiny) as before, np.load(sanitized) as after:
        assert set(before.files) == set(after.files)
        for key in before.files:
            if not key.startswith("adj_") or key == "adj_shape":
                np.testing.assert_array_equal(before[key], after[key])
        kept, full = (sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=f["adj_shape"])
                      for f in (after, before))
    assert 0 < kept.nnz < full.nnz and (kept != kept.T).nnz == 0 and (kept - full).max() <= 0
    assert set(np.unique(kept.data)) == {0.25, 1.0}  # the default down-weights to a quarter, with features too

    out = tmp_path / "run"
    code = bench(tiny, out, "--attacks", "dice,random", "--rates", "0,0.1",
                 "--defences", "none,kces,jaccard,kces+jaccard", "--models", "gcn,gat", "--optimizers", "adam,muon",
                 "--seeds", "2")
    assert code == 0
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2 * 2 * 4 * 2 * 2 * 2
    assert {r["status"] for r in records} == {"ok"}
    assert all(0 <= r["accuracy"] <= 1 and r["train_time_s"] > 0 for r in records)
    kces = [r for r in records if r["defence"] == "kces" and r["rate"] == 0.1]
    assert all(r["pruned"] > 0 and 0 <= r["precision"] <= 1 for r in kces)
    assert len(list((out / "cache").glob("*.npz"))) == 2 * 2  # live attacks at rate 0.1, per seed
    assert len(list((out / "scores").glob("*.npz"))) == 2 * 2

    assert main(["report", str(out)]) == 0
    rows = read_csv(out / "accuracy.csv")
    assert list(rows[0]) == ["dataset", "attack", "rate", "defence", "model", "optimizer", "n", "mean", "std"]
    assert len(rows) == 2 * 2 * 4 * 2 * 2 and all(r["n"] == "2" and 0 <= float(r["mean"]) <= 100 for r in rows)
    times = read_csv(out / "time.csv")
    assert [r["defence"] for r in times] == ["none", "kces", "jaccard", "kces+jaccard"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2 * 2 * 2 + 2  # accuracy per attack × model × optimizer, KC scores per attack
    assert all((out / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    report = (out / "report.md").read_text()
    assert "| perturbation rate (share of edges) | none | kces | jaccard | kces+jaccard |" in report
    assert "### tiny · dice · gat · muon" in report and "accuracy_tiny_dice_gcn_adam.png" in report


def test_resume_after_interruption_gives_the_same_table(tiny: Path, tmp_path: Path, capsys) -> None:
    grid = ("--attacks", "dice", "--rates", "0,0.1", "--defences", "none,kces", "--optimizers", "adam,muon",
            "--seeds", "2")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert bench(tiny, whole, *grid) == 0
    assert bench(tiny, cut, *grid) == 0
    lines = (cut / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:5]) + lines[5][:40])  # killed while writing cell 6
    shutil.rmtree(cut / "cache")  # attacked graphs are recomputed, from the same seeds
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # refuses to append without --resume
        bench(tiny, cut, *grid)
    assert exit_.value.code == 2 and "--resume" in capsys.readouterr().err
    assert bench(tiny, cut, *grid, "--resume") == 0
    assert "5 done before, 11 ok" in capsys.readouterr().err
    records = read_jsonl(cut / "results.jsonl")
    assert len({tuple(r[k] for k in ("rate", "defence", "optimizer", "seed")) for r in records}) == len(records) == 16
    for out in (whole, cut):
        assert main(["report", str(out), "--no-plots"]) == 0
    assert (cut / "accuracy.csv").read_text() == (whole / "accuracy.csv").read_text()


def test_resume_after_sigkill_gives_the_same_table(tiny: Path, tmp_path: Path) -> None:
    """A real ``kces bench`` process killed (SIGKILL) mid-run, then resumed."""
    grid = ("--attacks", "dice", "--rates", "0.1", "--defences", "none,kces", "--optimizers", "adam,muon",
            "--seeds", "3", "--epochs", "100")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert bench(tiny, whole, *grid) == 0
    command = [sys.executable, "-m", "kces", "bench", "--datasets", str(tiny), "--out", str(killed), *grid]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, deadline = killed / "results.jsonl", time.monotonic() + 120
    while not (results.is_file() and results.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    written = results.read_text().count("\n")
    assert 2 <= written < 12, "the run was not interrupted mid-grid"
    assert subprocess.run([*command, "--resume"], capture_output=True, timeout=300).returncode == 0
    assert len(read_jsonl(results)) == 12
    for out in (whole, killed):
        assert main(["report", str(out), "--no-plots"]) == 0
    assert (killed / "accuracy.csv").read_text() == (whole / "accuracy.csv").read_text()


def test_a_failing_cell_is_recorded_and_the_run_goes_on(tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from kces.experiments import defences

    def broken(*args, **kwargs):
        raise RuntimeError("jaccard exploded\non two lines")

    monkeypatch.setattr(defences, "jaccard_prune", broken)
    out = tmp_path / "run"
    grid = ("--attacks", "dice", "--rates", "0.1", "--defences", "none,jaccard,kces", "--seeds", "2")
    assert bench(tiny, out, *grid) == 1
    records = read_jsonl(out / "results.jsonl")
    assert [r["status"] for r in records] == ["ok", "error", "ok"] * 2
    assert records[1]["error"] == "RuntimeError: jaccard exploded on two lines"
    assert "2 failed" in capsys.readouterr().err
    monkeypatch.undo()
    assert bench(tiny, out, *grid, "--resume") == 0  # only the failed cells run again
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 8 and [r["status"] for r in records[6:]] == ["ok", "ok"]
    assert main(["report", str(out), "--no-plots"]) == 0
    assert "Failed cells" not in (out / "report.md").read_text()


def test_skipped_cells_and_model_defences(tmp_path: Path) -> None:
    pytest.importorskip("deeprobust")
    featureless = write_tiny_npz(tmp_path / "blogs.npz", features=False)
    out = tmp_path / "run"
    code = bench(featureless, out, "--attacks", "random", "--rates", "0.1", "--defences",
                 "jaccard,kces+svd,rgcn,kces+prognn", "--models", "gcn,gat", "--seeds", "1", "--svd-rank", "8",
                 "--with-prognn")
    assert code == 0
    status = {(r["defence"], r["model"]): r for r in read_jsonl(out / "results.jsonl")}
    assert status["jaccard", "gcn"]["status"] == "skipped" and "features" in status["jaccard", "gcn"]["reason"]
    assert status["rgcn", "gat"]["status"] == "skipped" and status["kces+svd", "gat"]["status"] == "skipped"
    for defence in ("kces+svd", "rgcn", "kces+prognn"):
        assert status[defence, "gcn"]["status"] == "ok" and 0 <= status[defence, "gcn"]["accuracy"] <= 1
    assert status["kces+svd", "gcn"]["pruned"] is not None and status["rgcn", "gcn"]["pruned"] is None


def test_sanitize_pyg_data(tmp_path: Path, capsys) -> None:
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    rng = np.random.default_rng(1)
    edge_index = to_undirected(torch.from_numpy(rng.integers(0, 40, (2, 120))))
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    y = torch.from_numpy(rng.integers(0, 2, 40))
    data = Data(x=torch.randn(40, 8) + y[:, None], edge_index=edge_index, y=y, name="toy",
                edge_attr=torch.arange(edge_index.shape[1], dtype=torch.float32))
    torch.save(data, tmp_path / "in.pt")
    assert main(["sanitize", str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), "--ratio", "0.2", "--seed", "3"]) == 0
    out = load_pyg(tmp_path / "out.pt")  # weights_only=True
    assert out.name == "toy" and "train_mask" not in out and torch.equal(out.x, data.x)
    assert 0 < out.edge_index.shape[1] < data.edge_index.shape[1]
    columns = {tuple(c) for c in data.edge_index.T.tolist()}
    assert all(tuple(c) in columns for c in out.edge_index.T.tolist())
    kept = out.edge_attr.long()  # the original column numbers: edge attributes follow their edges
    assert torch.equal(data.edge_index[:, kept], out.edge_index)


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith(f"kces {command}: error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize("args, message", [
    (["--datasets", "nope"], "unknown dataset 'nope'"),
    (["--attacks", "meta,nope"], "unknown attack 'nope'"),
    (["--defences", "none,nope"], "unknown defence 'nope'"),
    (["--defences", "rgcn+kces"], "must come last"),
    (["--defences", "prognn"], "--with-prognn"),
    (["--models", "gcm"], "unknown model 'gcm'"),
    (["--optimizers", "sgd"], "unknown optimizer 'sgd'"),
    (["--rates", "0,1.5"], "rate 1.5 is outside [0, 1]"),
    (["--rates", "-0.1"], "rate -0.1 is outside [0, 1]"),
    (["--rates", "0.1,x"], "expected comma-separated numbers"),
    (["--seeds", "0"], "seeds must be >= 1"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--models", ","], "no models given"),
    (["--attacks", "meta"], "meta needs the pre-perturbed Pro-GNN graphs"),
    (["--svd-rank", "100", "--defences", "svd"], "svd rank 100"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_bench_bad_arguments(tiny: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--datasets", str(tiny), "--attacks", "dice", "--out", str(out), *args])
    assert exit_.value.code == 2
    assert message in _one_line_error(capsys, "bench")
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a zip file at all", "not a .npz archive (not a zip file)"),
    ("no labels", "no array labels"),
])
def test_bench_unreadable_or_malformed_dataset(tmp_path: Path, capsys, content, message) -> None:
    path = tmp_path / "graph.npz"
    if content == "no labels":
        write_tiny_npz(path, labels=False)
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--datasets", str(path), "--attacks", "dice", "--out", str(out)])
    assert exit_.value.code == 2 and message in _one_line_error(capsys, "bench") and not out.exists()


def test_missing_preperturbed_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--datasets", "cora", "--attacks", "meta", "--rates", "0,0.3", "--out", str(out)])
    assert exit_.value.code == 2
    assert "no pre-perturbed meta graph of cora at rate 0.3" in _one_line_error(capsys, "bench")
    assert not out.exists()


@pytest.mark.parametrize("make_input, output, message", [
    (lambda p: None, "out.npz", "does not exist"),
    (lambda p: p.write_bytes(b"garbage"), "out.npz", "not a .npz archive (not a zip file)"),
    (lambda p: write_tiny_npz(p), "out.npz --seed -1", "--seed must be >= 0, got -1"),
    (lambda p: write_tiny_npz(p), ". --ratio 0.1", "is a directory; give a file name"),
    (lambda p: write_tiny_npz(p, labels=False), "out.npz", "no array labels"),
    (lambda p: write_tiny_npz(p), "out.pt", "OUTPUT must have the input's format"),
    (lambda p: write_tiny_npz(p), "missing/out.npz", "does not exist"),
    (lambda p: write_tiny_npz(p), "out.npz --ratio 2", "ratio must be a number in [0, 1]"),
])
def test_sanitize_bad_input(tmp_path: Path, capsys, make_input, output: str, message: str) -> None:
    source = tmp_path / "in.npz"
    make_input(source)
    target, *options = output.split()
    if target == ".":
        target = "folder.npz"
        (tmp_path / target).mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(source), str(tmp_path / target), *options])
    assert exit_.value.code == 2 and message in _one_line_error(capsys, "sanitize")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) in ([], ["in.npz"])


def test_sanitize_pt_that_is_not_a_graph(tmp_path: Path, capsys) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "in.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(tmp_path / "in.pt"), str(tmp_path / "out.pt")])
    assert exit_.value.code == 2 and "expected a torch_geometric.data.Data" in _one_line_error(capsys, "sanitize")
    assert not (tmp_path / "out.pt").exists()
    from torch_geometric.data import Data

    torch.save(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2), tmp_path / "unlabelled.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(tmp_path / "unlabelled.pt"), str(tmp_path / "out.pt")])
    assert exit_.value.code == 2 and "needs node labels y" in _one_line_error(capsys, "sanitize")


def test_report_bad_input(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path)])
    assert exit_.value.code == 2 and "results.jsonl does not exist" in _one_line_error(capsys, "report")
    (tmp_path / "results.jsonl").write_text('{"dataset": "x"}\n{}\n')
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path)])
    assert "line 1 is not a results record" in _one_line_error(capsys, "report")
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]


def test_help_on_every_command(capsys) -> None:
    for command in ([], ["demo"], ["sanitize"], ["bench"], ["report"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0 and "usage: kces" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_sanitize_raw_nettack_file_keeps_object_arrays(tmp_path: Path, capsys) -> None:
    source = SHARED / "npz" / "cora.npz"  # directed adjacency, object arrays idx_to_node / idx_to_class
    assert main(["sanitize", str(source), str(tmp_path / "cora.npz")]) == 0
    with zipfile.ZipFile(source) as before, zipfile.ZipFile(tmp_path / "cora.npz") as after:
        for name in ("idx_to_node.npy", "idx_to_class.npy", "attr_data.npy", "labels.npy"):
            assert before.read(name) == after.read(name)
    with np.load(source) as before, np.load(tmp_path / "cora.npz") as after:
        assert after["adj_indices"].dtype == before["adj_indices"].dtype
        assert 0 < after["adj_data"].size < before["adj_data"].size


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_real_metattack_cell_matches_the_committed_accuracy(tmp_path: Path) -> None:
    from kces.experiments.datasets import load_graph
    from kces.experiments.models import accuracy

    out = tmp_path / "run"
    assert main(["bench", "--datasets", "cora", "--attacks", "meta", "--rates", "0.05", "--defences", "none",
                 "--seeds", "1", "--out", str(out)]) == 0
    (record,) = read_jsonl(out / "results.jsonl")
    expected = accuracy(load_graph("cora", "meta", 0.05), "gcn", "adam", seed=0)
    assert record["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert record["accuracy"] == pytest.approx(0.7530180811882019, abs=1e-6)  # benchmarks/results, seed 0


def test_a_failure_inside_the_work_is_not_a_usage_error(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    """Only refused input (kces's InputError/InputTypeError), missing data and the memory guard
    are usage errors; a ValueError from inside the computation keeps its traceback."""
    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr("kces.adapters.sanitize", broken)
    with pytest.raises(ValueError, match="a bug deep inside"):
        main(["sanitize", str(tiny), str(tmp_path / "out.npz")])


def test_the_split_of_a_file_without_one_is_stratified() -> None:
    from kces.formats import random_split

    labels = np.repeat([0, 1, 2, -1], [50, 30, 15, 5])
    train, val, test = random_split(labels, seed=3, train=0.1, val=0.2)
    assert (train.size, val.size, test.size) == (10, 19, 66)  # round(0.1 · 95), round(0.2 · 95)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.flatnonzero(labels >= 0))
    for part, share in ((train, 0.1), (val, 0.2)):
        counts = np.bincount(labels[part], minlength=3)
        assert np.all(np.abs(counts - share * np.array([50, 30, 15])) <= 1)
    again = random_split(labels, seed=3, train=0.1, val=0.2)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


def test_sanitize_a_featureless_file_writes_the_default_weights(tmp_path: Path, capsys) -> None:
    """On a featureless graph the default down-weights some edges between unlabelled nodes: the
    written file carries those weights (both directions), exactly sanitize_adj's output."""
    from kces import sanitize_adj
    from kces.formats import random_split, read_npz, undirected

    blogs = write_tiny_npz(tmp_path / "blogs.npz", features=False)
    out = tmp_path / "sanitized.npz"
    assert main(["sanitize", str(blogs), str(out)]) == 0
    adj, features, labels, split = read_npz(blogs)
    graph = undirected(adj)
    assert "idx_train" not in split  # the CLI draws its seeded split (seed 0, 10% of the nodes)
    train = random_split(labels, 0, 0.1, 0.0)[0]
    expected = sp.csr_matrix(sanitize_adj(graph, features, labels, train, device="cpu"))
    with np.load(out) as f:
        written = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=f["adj_shape"])
    assert 0 < int((written.data < 1).sum()) and (written != written.T).nnz == 0
    assert abs(written - expected).max() < 1e-6
    n = int((sp.triu(written, k=1).data < 1).sum())
    assert f"({len(sp.triu(graph, k=1).data) - sp.triu(written, k=1).nnz} pruned, {n} re-weighted)" in \
        capsys.readouterr().out


def test_sanitize_pt_counts_the_edges_it_re_weights(tmp_path: Path, capsys) -> None:
    """The same featureless graph as a saved ``Data`` with weights 2 on every edge: the message
    counts the undirected edges whose weight changed (to 2 · 0.25), as many as the .npz face's."""
    from torch_geometric.data import Data

    from kces.formats import read_npz, undirected

    blogs = write_tiny_npz(tmp_path / "blogs.npz", features=False)
    assert main(["sanitize", str(blogs), str(tmp_path / "sanitized.npz")]) == 0
    npz_message = capsys.readouterr().out
    adj, _, labels, _ = read_npz(blogs)
    upper = sp.triu(undirected(adj), k=1).tocoo()
    edge_index = torch.from_numpy(np.hstack([np.vstack([upper.row, upper.col]), np.vstack([upper.col, upper.row])]))
    data = Data(edge_index=edge_index.long(), edge_weight=torch.full((edge_index.shape[1],), 2.0),
                y=torch.from_numpy(labels), num_nodes=adj.shape[0])
    torch.save(data, tmp_path / "in.pt")
    assert main(["sanitize", str(tmp_path / "in.pt"), str(tmp_path / "out.pt")]) == 0
    out = load_pyg(tmp_path / "out.pt")
    n = int(((out.edge_weight == 0.5) & (out.edge_index[0] < out.edge_index[1])).sum())
    assert n > 0 and set(out.edge_weight.tolist()) == {0.5, 2.0}
    counts = f"pruned, {n} re-weighted)"
    assert counts in capsys.readouterr().out and counts in npz_message


def _written_adj(path: Path) -> sp.csr_matrix:
    with np.load(path) as f:
        return sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=f["adj_shape"])


def test_sanitize_with_anchors_is_anchor_adj_after_sanitize_adj(tiny: Path, tmp_path: Path, capsys) -> None:
    """``--anchors`` on a symmetric 0/1 file writes exactly ``anchor_adj(sanitize_adj(...))``,
    every other array byte for byte; the message counts the anchors added where no edge was."""
    from kces import Anchoring, anchor_adj, sanitize_adj
    from kces.formats import random_split, read_npz

    out = tmp_path / "anchored.npz"
    assert main(["sanitize", str(tiny), str(out), "--anchors", "--anchor-k", "4", "--anchor-weight", "0.125"]) == 0
    adj, features, labels, _ = read_npz(tiny)
    sanitized = sp.csr_matrix(sanitize_adj(adj, features, labels, random_split(labels, 0, 0.1, 0.0)[0], device="cpu"))
    expected = sp.csr_matrix(anchor_adj(sanitized, features, anchoring=Anchoring(k=4, weight=0.125), device="cpu"))
    written = _written_adj(out)
    assert written.dtype == np.float32 and abs(written - expected).max() == 0 and written.nnz == expected.nnz
    assert set(np.unique(written.data).tolist()) == {0.125, 0.25, 1.0}  # anchors, down-weighted edges, the rest
    added = int((sp.triu(written, k=1).data == 0.125).sum())
    pruned, reweighted = (adj.nnz - sanitized.nnz) // 2, int((sp.triu(sanitized, k=1).data < 1).sum())
    assert added > 0 and reweighted > 0
    assert f"({pruned} pruned, {reweighted} re-weighted, {added} anchors added)" in capsys.readouterr().out
    with zipfile.ZipFile(tiny) as before, zipfile.ZipFile(out) as after:
        assert before.namelist() == after.namelist()
        for name in before.namelist():
            if name not in ("adj_data.npy", "adj_indices.npy", "adj_indptr.npy"):
                assert before.read(name) == after.read(name)


def test_sanitize_with_anchors_on_a_directed_integer_file(tiny: Path, tmp_path: Path) -> None:
    """A directed file with integer weights 3: the kept entries keep their weight and order at the
    head of each row, the anchors the graph lacked are added in both directions after them, at
    the anchor weight (float32 now); an anchor on a kept entry leaves its larger weight."""
    from kces.anchors import feature_anchors
    from kces.formats import read_npz

    with np.load(tiny) as f:
        arrays = dict(f)
    upper = sp.triu(sp.csr_matrix((arrays["adj_data"], arrays["adj_indices"], arrays["adj_indptr"]),
                                  shape=arrays["adj_shape"]), k=1).tocsr()
    arrays.update(adj_data=np.full(upper.nnz, 3, dtype=np.int32), adj_indices=upper.indices,
                  adj_indptr=upper.indptr)
    source, out = tmp_path / "directed.npz", tmp_path / "out.npz"
    np.savez(source, **arrays)
    plain = tmp_path / "plain.npz"
    assert main(["sanitize", str(source), str(plain), "--unlabelled-weight", "1"]) == 0  # prune only
    assert main(["sanitize", str(source), str(out), "--unlabelled-weight", "1", "--anchors"]) == 0
    kept, written = _written_adj(plain), _written_adj(out)
    assert written.dtype == np.float32 and kept.dtype == np.int32
    _, features, _, _ = read_npz(source)
    ends = feature_anchors(torch.from_numpy(features.toarray()), device="cpu").numpy()
    anchors = sp.csr_matrix((np.ones(ends.shape[1]), (ends[0], ends[1])), shape=kept.shape)
    expected = kept.astype(np.float32).maximum(anchors * 0.5)
    assert abs(written - expected).max() == 0 and written.nnz == expected.nnz
    for row in range(kept.shape[0]):  # kept entries first, in their order; the added ones after, sorted
        head = written.indices[written.indptr[row]:written.indptr[row] + kept.indptr[row + 1] - kept.indptr[row]]
        tail = written.indices[written.indptr[row] + head.size:written.indptr[row + 1]]
        assert np.array_equal(head, kept.indices[kept.indptr[row]:kept.indptr[row + 1]])
        assert np.array_equal(tail, np.sort(tail))
    assert np.all(written.data[written.data != 0.5] == 3)


def test_sanitize_pt_with_anchors_is_feature_anchors_after_kces(tmp_path: Path, capsys) -> None:
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    from kces import KCES, FeatureAnchors

    rng = np.random.default_rng(2)
    edge_index = to_undirected(torch.from_numpy(rng.integers(0, 40, (2, 120))))
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    y = torch.from_numpy(rng.integers(0, 2, 40))
    train_mask = torch.from_numpy(rng.random(40) < 0.3)
    data = Data(x=torch.randn(40, 8) + y[:, None], edge_index=edge_index, y=y, train_mask=train_mask)
    torch.save(data, tmp_path / "in.pt")
    assert main(["sanitize", str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), "--anchors", "--anchor-k", "3"]) == 0
    out = load_pyg(tmp_path / "out.pt")
    expected = FeatureAnchors({"k": 3})(KCES()(data))
    assert torch.equal(out.edge_index, expected.edge_index) and torch.equal(out.edge_weight, expected.edge_weight)
    added = (expected.edge_index.shape[1] - KCES()(data).edge_index.shape[1]) // 2
    assert added > 0 and f"{added} anchors added)" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    (["--anchor-k", "5"], "--anchor-k and --anchor-weight need --anchors"),
    (["--anchors", "--anchor-k", "0"], "k (feature neighbours per node) must be an integer >= 1"),
    (["--anchors", "--anchor-weight", "-1"], "weight (of an anchor edge) must be > 0"),
    (["--anchors", "featureless"], "anchors need node features"),
])
def test_sanitize_refuses_bad_anchors(tmp_path: Path, capsys, options: list[str], message: str) -> None:
    source = write_tiny_npz(tmp_path / "in.npz", features="featureless" not in options)
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(source), str(tmp_path / "out.npz"), *[o for o in options if o != "featureless"]])
    assert exit_.value.code == 2 and message in _one_line_error(capsys, "sanitize")
    assert not (tmp_path / "out.npz").exists()


def test_sanitize_unlabelled_weight_1_only_prunes_and_a_bad_one_is_refused(tiny: Path, tmp_path: Path,
                                                                            capsys) -> None:
    """``--unlabelled-weight 1`` writes the 0/1 graph ``sanitize_adj`` gives with that weight (the
    default's pruning, no down-weighting); a weight outside [0, 1] is a usage error naming it."""
    from kces import sanitize_adj
    from kces.formats import random_split, read_npz

    out = tmp_path / "pruned.npz"
    assert main(["sanitize", str(tiny), str(out), "--unlabelled-weight", "1"]) == 0
    assert "re-weighted" not in capsys.readouterr().out
    adj, features, labels, _ = read_npz(tiny)
    expected = sp.csr_matrix(sanitize_adj(adj, features, labels, random_split(labels, 0, 0.1, 0.0)[0],
                                          pruning=dict(unlabelled_weight=1.0), device="cpu"))
    written = _written_adj(out)
    assert set(np.unique(written.data)) == {1.0} and written.nnz < adj.nnz and (written != expected).nnz == 0
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(tiny), str(tmp_path / "bad.npz"), "--unlabelled-weight", "1.5"])
    message = _one_line_error(capsys, "sanitize")
    assert exit_.value.code == 2 and "unlabelled_weight must be a number in [0, 1]" in message
    assert not (tmp_path / "bad.npz").exists()


def test_sanitize_feature_neighbours_reaches_the_rule_and_a_bad_value_is_refused(tiny: Path, tmp_path: Path,
                                                                                 capsys) -> None:
    from kces import sanitize_adj
    from kces.formats import random_split, read_npz

    adj, features, labels, _ = read_npz(tiny)
    train = random_split(labels, 0, 0.1, 0.0)[0]
    written = {}
    for value in ("0", "20", None):
        out = tmp_path / f"out{value}.npz"
        assert main(["sanitize", str(tiny), str(out), *(["--feature-neighbours", value] if value else [])]) == 0
        written[value] = _written_adj(out)
    for value in (0, 20):
        expected = sanitize_adj(adj, features, labels, train, pruning=dict(feature_neighbours=value), device="cpu")
        assert abs(written[str(value)] - expected).max() == 0
    assert abs(written[None] - written["20"]).max() == 0 and abs(written["0"] - written["20"]).max() > 0
    with pytest.raises(SystemExit) as exit_:
        main(["sanitize", str(tiny), str(tmp_path / "bad.npz"), "--feature-neighbours", "-3"])
    assert exit_.value.code == 2 and "feature_neighbours must be an integer >= 0" in _one_line_error(capsys, "sanitize")
