"""The README's result tables, one row per defence, from the records of the three grids.

Reads ``results/{robustness,adaptive,ablation}/results.jsonl`` (the last record of each cell, as
``kces report``) and prints markdown: the published attacks (clean / Metattack 20% / Nettack-5 /
DICE 20% per dataset), each adaptive family (the attack not knowing the defence / the one that
does, and the difference, as the report's "Adaptive against non-adaptive attacks"), the hub
attacks, each defence's worst case over the adaptive grid's attacks, and the ablation. Accuracy
in %, mean over the seeds; "n/a": the defence does not apply (skipped), "–": not run.

    python benchmarks/readme_tables.py [--tables published,metaself,...]
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from kces.experiments.names import ADAPTIVE_OF
from kces.experiments.report import accuracy_rows, adaptive_cell, latest, markdown_table
from kces.experiments.results import read_results

RESULTS = Path(__file__).parent / "results"
DATASETS = ("cora", "citeseer", "polblogs")
DEFENCES = ("none", "jaccard", "svd", "rgcn", "kces", "kces+anchor", "kces-smooth-half", "kces-soft-half",
            "kces-both", "kces-nbr", "kces-features", "kces-soft", "kces-both+jaccard", "kces-both+anchor",
            "kces-soft-half+anchor", "kces-smooth-half+anchor")
NAMES = {"none": "none", "jaccard": "Jaccard", "svd": "SVD", "rgcn": "RGCN", "kces": "**KCES (default)**",
         "kces+anchor": "default + anchors (`kces+anchor`)"}
HUBS = ("trainhub", "trainhub-capped", "trainhub-padded")
RATE = 0.2  # the budget of the adaptive grid and of the ablation's attacks
ABLATION = ("none", "kces-top10", "kces-kc-only", "kces-features", "kces-labels-only", "kces-k2", "kces-top2",
            "kces-nbr", "kces-nbr-labels-only", "kces", "kces-smooth-half", "kces-soft-half", "kces-both",
            "kces-both-labels-only", "anchor", "kces-both+anchor")
SCENARIOS = (("meta", 0, "clean"), ("meta", RATE, "Metattack 20%"), ("nettack", 5, "Nettack-5"),
             ("dice", RATE, "DICE 20%"), ("trainlink", RATE, "trainlink"),
             ("trainlink-adaptive", RATE, "trainlink-adaptive"), ("metaself", RATE, "Meta-Self"),
             ("metaself-adaptive", RATE, "Meta-Self adaptive"), ("prbcd", RATE, "PRBCD"),
             ("prbcd-adaptive", RATE, "PRBCD adaptive"), *((hub, RATE, hub) for hub in HUBS))


class Grid:
    """The mean accuracy (%) of each (dataset, attack, rate, defence) cell of one grid, and the
    cells skipped (the defence does not apply)."""

    def __init__(self, name: str):
        records = latest(read_results(RESULTS / name / "results.jsonl")[0])
        self.mean = {(r["dataset"], r["attack"], r["rate"], r["defence"]): r["mean"] for r in accuracy_rows(records)}
        self.skipped = {(r["dataset"], r["attack"], r["rate"], r["defence"]) for r in records
                        if r["status"] == "skipped"}

    def missing(self, keys: list[tuple]) -> str:
        """"n/a" when a cell of ``keys`` was skipped (the defence does not apply), else "–"."""
        return "n/a" if any(key in self.skipped for key in keys) else "–"

    def cells(self, keys: list[tuple]) -> str:
        """The cells' means joined by " / ", or one "n/a" / "–" when any is absent."""
        if not all(key in self.mean for key in keys):
            return self.missing(keys)
        return " / ".join(f"{self.mean[key]:.1f}" for key in keys)


@functools.cache
def _grid(name: str) -> Grid:
    """``name``'s records, read once per run."""
    return Grid(name)


def _name(defence: str) -> str:
    return NAMES.get(defence, f"`{defence}`")


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown_table(header, rows)).rstrip("\n")


def _minus(text: str) -> str:
    return text.replace("-", "−")


def published() -> str:
    grid = _grid("robustness")
    rows = [[_name(d), *(grid.cells([(ds, "meta", 0, d), (ds, "meta", RATE, d), (ds, "nettack", 5, d),
                                     (ds, "dice", RATE, d)]) for ds in DATASETS)]
            for d in DEFENCES if d != "rgcn"]
    return _table(["defence", "Cora: clean / Metattack 20% / Nettack-5 / DICE 20%", "Citeseer", "Polblogs"], rows)


def family(adaptive: str) -> str:
    """Each defence under ``adaptive``'s non-adaptive attack / under ``adaptive`` (difference)."""
    grid, plain = _grid("adaptive"), ADAPTIVE_OF[adaptive]
    datasets = [ds for ds in DATASETS if any(k[:2] == (ds, adaptive) for k in grid.mean)]
    rows = []
    for d in DEFENCES:
        row = [_name(d)]
        for ds in datasets:
            before, after = (ds, plain, RATE, d), (ds, adaptive, RATE, d)
            row.append(_minus(adaptive_cell(grid.mean[before], grid.mean[after]))
                       if before in grid.mean and after in grid.mean else grid.missing([before, after]))
        rows.append(row)
    return _table(["defence", *(ds.capitalize() for ds in datasets)], rows)


def hubs() -> str:
    grid = _grid("adaptive")
    rows = [[_name(d), *(grid.cells([(ds, hub, RATE, d) for hub in HUBS]) for ds in DATASETS)] for d in DEFENCES]
    return _table(["defence", "Cora", "Citeseer", "Polblogs"], rows)


def worst() -> str:
    """Each defence's lowest accuracy over the adaptive grid's attacks, and which attack."""
    grid = _grid("adaptive")
    rows = []
    for d in DEFENCES:
        row = [_name(d)]
        for ds in DATASETS:
            keys = [key for key in grid.mean if key[0] == ds and key[3] == d]
            if keys:
                key = min(keys, key=lambda k: (grid.mean[k], k[1]))
                row.append(f"{grid.mean[key]:.1f} (`{key[1]}`)")
            else:
                row.append("n/a" if any(k[0] == ds and k[3] == d for k in grid.skipped) else "–")
        rows.append(row)
    return _table(["defence", "Cora", "Citeseer", "Polblogs"], rows)


def ablation() -> str:
    grid = _grid("ablation")

    def cell(key: tuple) -> str:
        text = grid.cells([key])
        return f"**{text}**" if key[3] == "kces" and key in grid.mean else text

    rows = [[ds, label, *(cell((ds, attack, rate, d)) for d in ABLATION)]
            for ds in DATASETS for attack, rate, label in SCENARIOS]
    return _table(["dataset", "scenario", *("**default**" if d == "kces" else f"`{d}`" for d in ABLATION)], rows)


TABLES: dict[str, Callable[[], str]] = {
    "published": published, "metaself": lambda: family("metaself-adaptive"),
    "trainlink": lambda: family("trainlink-adaptive"), "votelink": lambda: family("votelink-adaptive"),
    "prbcd": lambda: family("prbcd-adaptive"), "hubs": hubs, "worst": worst, "ablation": ablation}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated tables (default: all)")
    args = parser.parse_args()
    for name in args.tables.split(","):
        if name not in TABLES:
            parser.error(f"unknown table {name!r}; choose from {', '.join(TABLES)}")
        print(f"<!-- {name} -->\n{TABLES[name]()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
