"""The results file of the benchmark, ``results.jsonl``: one JSON record per finished cell,
appended and fsynced at once; the last record of a cell wins. The runner writes it, the
report reads it."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

RESULTS = "results.jsonl"
KEY_FIELDS = ("dataset", "attack", "rate", "defence", "model", "optimizer", "seed")


def record_key(record: dict[str, Any]) -> tuple:
    """The cell coordinates of a results record."""
    return tuple(record[field] for field in KEY_FIELDS)


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a results file, and the byte length of its complete lines. Text after the
    last newline (a line cut off mid-write) is ignored; a bad complete line raises ``ValueError``."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record_key(record)
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: line {number} is not a results record") from None
        records.append(record)
    return records, end


def finished(records: list[dict[str, Any]]) -> set[tuple]:
    """Keys of the cells whose last record is ``ok`` or ``skipped`` (not rerun by a resume)."""
    last = {record_key(record): record["status"] for record in records}
    return {key for key, status in last.items() if status in ("ok", "skipped")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class ResultsLog:
    """Append-only JSON lines; each record is on disk (fsync) before ``append`` returns."""

    def __init__(self, path: Path, keep_bytes: int | None = None):
        self.path = path
        if keep_bytes is not None and path.stat().st_size != keep_bytes:
            with open(path, "r+b") as f:  # drop a partly written last line before appending
                f.truncate(keep_bytes)
        self._file = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
