"""``kces report DIR``: markdown, CSV tables and figures from ``DIR/results.jsonl``.

The last record of each cell wins. Written into ``DIR``: ``report.md``; ``accuracy.csv``
(dataset, attack, rate, defence, model, optimizer, n, mean, std: accuracy in %, population
std over the seeds); ``time.csv`` (seconds per dataset × defence); ``accuracy_*.png`` (accuracy
vs rate, one line per defence, per dataset × attack × model × optimizer) and ``kc_*.png``
(histograms of the KC scores of adversarial and clean edges, from ``DIR/scores``).
"""
from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..formats import atomic_write
from .names import ADAPTIVE_OF
from .results import KEY_FIELDS, RESULTS, read_results, record_key

GROUP = KEY_FIELDS[:-1]  # a table cell: every coordinate but the seed
PANEL = ("dataset", "attack", "model", "optimizer")  # one table and one figure: rates × defences
ACCURACY_COLUMNS = (*GROUP, "n", "mean", "std")
TIME_COLUMNS = ("dataset", "defence", "n", "defence_time_s_mean", "defence_time_s_std", "train_time_s_mean")


def latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each cell, in the order the cells first appear."""
    last: dict[tuple, dict[str, Any]] = {}
    for record in records:
        last[record_key(record)] = record
    return list(last.values())


def _orderer(records: list[dict[str, Any]], fields: Iterable[str]) -> Callable[[tuple], tuple]:
    """Sort key for tuples of ``fields``: rates by value, the rest in order of first appearance."""
    fields = tuple(fields)
    first = {field: {} for field in fields}
    for record in records:
        for field in fields:
            first[field].setdefault(record[field], len(first[field]))
    return lambda key: tuple(value if field == "rate" else first[field][value] for field, value in zip(fields, key))


def _groups(records: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[tuple(record[field] for field in fields)].append(record)
    order = _orderer(records, fields)
    return {key: groups[key] for key in sorted(groups, key=order)}


def accuracy_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (%) of the accuracy of the ``ok`` cells per dataset × attack × rate ×
    defence × model × optimizer."""
    rows = []
    for key, group in _groups([r for r in records if r["status"] == "ok"], GROUP).items():
        acc = 100 * np.array([r["accuracy"] for r in group])
        rows.append({**dict(zip(GROUP, key)), "n": acc.size, "mean": acc.mean(), "std": acc.std()})
    return rows


def time_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seconds of the edge stages (mean, std) and of the training (mean) per dataset × defence."""
    rows = []
    for (dataset, defence), group in _groups([r for r in records if r["status"] == "ok"],
                                             ("dataset", "defence")).items():
        seconds = np.array([r["defence_time_s"] for r in group])
        rows.append({"dataset": dataset, "defence": defence, "n": seconds.size,
                     "defence_time_s_mean": seconds.mean(), "defence_time_s_std": seconds.std(),
                     "train_time_s_mean": float(np.mean([r["train_time_s"] for r in group]))})
    return rows


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([f"{row[c]:g}" if c == "rate" else f"{row[c]:.4f}" if isinstance(row[c], float) else row[c]
                         for c in columns])
    return buffer.getvalue()


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mean(values: Iterable[float | None], digits: int) -> str:
    """Mean of the values that are not None, as text ("–" if there are none)."""
    present = [v for v in values if v is not None]
    return f"{np.mean(present):.{digits}f}" if present else "–"


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", "_".join(map(_text, parts)))


def _rate_label(attack: str) -> str:
    return "perturbations per target node" if attack == "nettack" else "perturbation rate (share of edges)"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table, and an empty line after it."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def adaptive_cell(plain: float, known: float) -> str:
    """Accuracy (%) under an attack not knowing the defence / under its adaptive version
    (difference)."""
    return f"{plain:.1f} / {known:.1f} ({known - plain:+.1f})"


def _accuracy_section(records: list[dict[str, Any]], rows: list[dict[str, Any]], figures: set[str]) -> list[str]:
    lines = ["## Accuracy (%)", "", "Mean ± std over the seeds; `skipped`: the defence does not apply "
             "(see the end), `error`: every seed failed.", ""]
    mean = {tuple(r[f] for f in GROUP): f"{r['mean']:.1f} ± {r['std']:.1f}" for r in rows}
    for (dataset, attack, model, optimizer), group in _groups(records, PANEL).items():
        defences = list(dict.fromkeys(r["defence"] for r in group))
        status = {(r["rate"], r["defence"]): r["status"] for r in group if r["status"] != "ok"}
        table = []
        for rate in sorted({r["rate"] for r in group}):
            keys = [(dataset, attack, rate, d, model, optimizer) for d in defences]
            table.append([f"{rate:g}", *(mean.get(k, status.get((rate, k[3]), "")) for k in keys)])
        lines += [f"### {dataset} · {attack} · {model} · {optimizer}", "",
                  *markdown_table([_rate_label(attack), *defences], table)]
        figure = f"accuracy_{_slug(dataset, attack, model, optimizer)}.png"
        if figure in figures:
            lines += [f"![accuracy vs rate]({figure})", ""]
    return lines


def _adaptive_section(rows: list[dict[str, Any]]) -> list[str]:
    """Per defence, accuracy under each adaptive attack next to its non-adaptive version at the
    same budget, and the difference (adaptive − non-adaptive)."""
    mean = {tuple(r[f] for f in GROUP): r["mean"] for r in rows}
    pairs = sorted({(r["dataset"], ADAPTIVE_OF[r["attack"]], r["attack"], r["model"], r["optimizer"])
                    for r in rows if r["attack"] in ADAPTIVE_OF})
    if not pairs:
        return []
    lines = ["## Adaptive against non-adaptive attacks (%)", "",
             "Each cell: accuracy under the attack that does not know the defence / under its adaptive "
             "version, which attacks the whole defence chain of the cell (difference in brackets).", ""]
    for dataset, attack, adaptive, model, optimizer in pairs:
        group = [r for r in rows if (r["dataset"], r["model"], r["optimizer"]) == (dataset, model, optimizer)
                 and r["attack"] == adaptive]
        defences = list(dict.fromkeys(r["defence"] for r in group))
        table = []
        for rate in sorted({r["rate"] for r in group}):
            row = [f"{rate:g}"]
            for defence in defences:
                plain = mean.get((dataset, attack, rate, defence, model, optimizer))
                known = mean.get((dataset, adaptive, rate, defence, model, optimizer))
                row.append("" if plain is None or known is None else adaptive_cell(plain, known))
            table.append(row)
        lines += [f"### {dataset} · {attack} vs {adaptive} · {model} · {optimizer}", "",
                  *markdown_table([_rate_label(attack), *defences], table)]
    return lines


def _pruning_section(records: list[dict[str, Any]]) -> list[str]:
    pruning = [r for r in records if r["status"] == "ok" and r["pruned"] is not None]
    if not pruning:
        return []
    lines = ["## Edges removed by the pruning defences", "",
             "Edges removed (precision / recall against the attacker's insertions), mean over the cells.", ""]
    for (dataset, attack), group in _groups(pruning, ("dataset", "attack")).items():
        defences = list(dict.fromkeys(r["defence"] for r in group))
        cells = _groups(group, ("rate", "defence"))
        table = []
        for rate in sorted({r["rate"] for r in group}):
            row = [f"{rate:g}"]
            for defence in defences:
                cell = cells.get((rate, defence), [])
                pruned, precision, recall = (_mean((r[k] for r in cell), digits)
                                             for k, digits in (("pruned", 0), ("precision", 2), ("recall", 2)))
                row.append(f"{pruned} ({precision} / {recall})" if cell else "")
            table.append(row)
        lines += [f"### {dataset} · {attack}", "", *markdown_table([_rate_label(attack), *defences], table)]
    return lines


def _other_sections(records: list[dict[str, Any]], times: list[dict[str, Any]], kc_figures: list[str]) -> list[str]:
    lines = ["## Time per cell (s)", "", "Edge stages of the defence (mean ± std) and the training of the model "
             "(mean; for rgcn/prognn this is the defence).", ""]
    lines += markdown_table(["dataset", "defence", "cells", "defence", "training"],
                    [[r["dataset"], r["defence"], str(r["n"]), f"{r['defence_time_s_mean']:.3f} ± "
                      f"{r['defence_time_s_std']:.3f}", f"{r['train_time_s_mean']:.2f}"] for r in times])
    if kc_figures:
        lines += ["## KC scores of adversarial and clean edges", "",
                  "KC score of every edge of the attacked graph (the input KCES sees); only edges near a "
                  "labelled node have a non-zero score.", "", *(f"![KC scores]({f})" for f in kc_figures), ""]
    for status, fields, title in (("skipped", ("dataset", "defence", "model", "optimizer", "reason"), "Skipped cells"),
                                  ("error", (*GROUP, "error"), "Failed cells")):
        groups = _groups([r for r in records if r["status"] == status], fields)
        if groups:
            rows = [[*map(_text, key), str(len(group))] for key, group in groups.items()]
            lines += [f"## {title}", "", *markdown_table([*fields, "cells"], rows)]
    return lines


def _accuracy_figure(rows: list[dict[str, Any]], title: str, attack: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for defence in dict.fromkeys(r["defence"] for r in rows):
        line = [r for r in rows if r["defence"] == defence]
        axes.errorbar([r["rate"] for r in line], [r["mean"] for r in line], yerr=[r["std"] for r in line],
                      marker="o", capsize=3, label=defence)
    axes.set(xlabel=_rate_label(attack), ylabel="accuracy (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def _kc_figure(files: list[Path], title: str):
    from matplotlib.figure import Figure

    by_rate: dict[float, list[Any]] = defaultdict(list)
    for path in files:
        with np.load(path, allow_pickle=False) as data:
            by_rate[float(data["rate"])].append((data["score"], data["adversarial"]))
    rates = sorted(by_rate)
    figure = Figure(figsize=(4 * len(rates), 3.5), layout="constrained")
    for axes, rate in zip(figure.subplots(1, len(rates), squeeze=False)[0], rates):
        scores = np.concatenate([s for s, _ in by_rate[rate]])
        adversarial = np.concatenate([a for _, a in by_rate[rate]])
        bins = np.linspace(scores.min(), scores.max() + 1e-12, 50)
        for mask, label in ((~adversarial, "clean"), (adversarial, "adversarial")):
            if mask.any():
                axes.hist(scores[mask], bins=bins, alpha=0.6, log=True, label=f"{label} ({mask.sum()})")
        axes.set(title=f"rate {rate:g}", xlabel="KC score", ylabel="edges")
        axes.legend()
    figure.suptitle(title)
    return figure


def _save_figure(path: Path, figure) -> None:
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=110))


def check_report_dir(directory: Path, plots: bool) -> list[dict[str, Any]]:
    """The latest records of ``directory/results.jsonl``; ``ValueError`` if it cannot be read or
    matplotlib is missing for the figures. Writes nothing."""
    path = directory / RESULTS
    if not path.is_file():
        raise InputError(f"{path} does not exist (run kces bench --out {directory} first)")
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("the figures need matplotlib (pip install 'kces[plot]'), or pass --no-plots") from None
    return latest(read_results(path)[0])


def _write_figures(directory: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """Accuracy-vs-rate figures of ``rows`` and KC-score histograms of ``directory/scores``."""
    written = []
    for (dataset, attack, model, optimizer), group in _groups(rows, PANEL).items():
        path = directory / f"accuracy_{_slug(dataset, attack, model, optimizer)}.png"
        _save_figure(path, _accuracy_figure(group, f"{dataset} · {attack} · {model} · {optimizer}", attack))
        written.append(path)
    score_files: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted((directory / "scores").glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            score_files[(str(data["dataset"]), str(data["attack"]))].append(path)
    for (dataset, attack), files in score_files.items():
        path = directory / f"kc_{_slug(dataset, attack)}.png"
        _save_figure(path, _kc_figure(files, f"KC scores: {dataset} · {attack}"))
        written.append(path)
    return written


def write_report(directory: Path, records: list[dict[str, Any]], plots: bool = True) -> list[Path]:
    """Write the report files of ``records`` into ``directory``; returns their paths."""
    rows, times = accuracy_rows(records), time_rows(records)
    written = _write_figures(directory, rows) if plots else []
    names = {p.name for p in written}
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "error")}
    lines = ["# Benchmark report", "",
             f"`{RESULTS}`: {len(records)} cells: {counts['ok']} ok, {counts['skipped']} skipped, "
             f"{counts['error']} failed. Accuracy on the test split (Nettack: on its target nodes). "
             "Tables: `accuracy.csv`, `time.csv`.", "",
             *_accuracy_section(records, rows, names), *_adaptive_section(rows), *_pruning_section(records),
             *_other_sections(records, times, sorted(n for n in names if n.startswith("kc_")))]
    texts = {"accuracy.csv": _csv_text(rows, ACCURACY_COLUMNS), "time.csv": _csv_text(times, TIME_COLUMNS),
             "report.md": "\n".join(lines)}
    for name, text in texts.items():
        atomic_write(directory / name, lambda f, text=text: f.write(text.encode()))
        written.append(directory / name)
    return written
