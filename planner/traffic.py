"""All-to-all-v traffic matrices: bytes from GPU i to GPU j, from JSON, CSV or NPY.

JSON: `[[...], ...]` or `{"matrix": [[...], ...]}`; CSV: one row per source GPU, comma
separated, no header; NPY: a 2-D numeric array. Entries are bytes (whole, >= 0); the
diagonal (a GPU's data for itself) is ignored.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from planner.errors import InputError


def load_traffic(path: str, gpus: int) -> tuple[tuple[int, ...], ...]:
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", source=src)
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            import numpy as np

            arr = np.load(p, allow_pickle=False)
            if arr.ndim != 2:
                raise InputError(f"expected a 2-D array, got {arr.ndim}-D", source=src, field="matrix")
            rows = arr.tolist()
        elif suffix == ".csv":
            with p.open(newline="", encoding="utf-8") as fh:
                rows = [[_number(cell, src, f"row {i}, column {j}") for j, cell in enumerate(r)]
                        for i, r in enumerate(csv.reader(fh)) if r]
        else:
            doc = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(doc, dict):
                unknown = set(doc) - {"matrix"}
                if unknown:
                    raise InputError("unknown field (allowed: matrix)", source=src, field=sorted(unknown)[0])
                if "matrix" not in doc:
                    raise InputError("missing required field", source=src, field="matrix")
                doc = doc["matrix"]
            rows = doc
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read traffic matrix ({exc.__class__.__name__})", source=src) from None
    return check_matrix(rows, gpus, src)


def _number(cell: str, src: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise InputError(f"not a number: {cell!r}", source=src, field=where) from None


def check_matrix(rows: object, gpus: int, src: str | None = None) -> tuple[tuple[int, ...], ...]:
    if not isinstance(rows, list) or not rows:
        raise InputError("expected a non-empty list of rows", source=src, field="matrix")
    if len(rows) != gpus:
        raise InputError(f"has {len(rows)} rows, the topology has {gpus} GPUs", source=src, field="matrix")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != gpus:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"row {i} has {got} entries, expected {gpus}", source=src, field=f"matrix[{i}]")
        vals = []
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or v != int(v):
                raise InputError(f"bytes must be a whole number >= 0, got {v!r}", source=src, field=f"matrix[{i}][{j}]")
            vals.append(0 if i == j else int(v))
        out.append(tuple(vals))
    if not any(any(r) for r in out):
        raise InputError("the matrix moves no data", source=src, field="matrix")
    return tuple(out)
