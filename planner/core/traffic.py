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

from planner.core.errors import InputError


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


GENERATORS = ("zipf", "hotspot", "uniform")


def is_generator(text: str) -> bool:
    """Whether --traffic names a generator rather than a file (an existing file wins)."""
    return not Path(text).exists() and text.partition(":")[0] in GENERATORS


def traffic_from_spec(spec: str, gpus: int, size: int) -> tuple[tuple[int, ...], ...]:
    """A traffic matrix from a generator spec `NAME:key=value,...` (docs/traffic.md); every
    GPU sends `size` bytes in all (its own share stays home: the diagonal is dropped).

    - `zipf:s=1.2,seed=0,experts=8,tokens=4096,self=0`: MoE-like skew. `experts` per GPU,
      popularity Zipf(s) over all of them, shuffled onto GPUs by the seed; every GPU routes
      `tokens` tokens (seeded multinomial) by that popularity, each token `size / tokens`
      bytes; `self` is an extra fraction of each GPU's tokens kept local.
    - `hotspot:gpus=2,share=0.5,seed=0`: `share` of every GPU's bytes go to `gpus` hot
      GPUs (chosen by the seed), the rest evenly to all.
    - `uniform`: every GPU sends size / G to each GPU.
    """
    import numpy as np

    name, _, rest = spec.partition(":")
    if name not in GENERATORS:
        raise InputError(f"unknown traffic generator {name!r} (one of {', '.join(GENERATORS)}; or a file)",
                         field="--traffic")
    known = {"zipf": {"s": 1.0, "seed": 0, "experts": 8, "tokens": 4096, "self": 0.0},
             "hotspot": {"gpus": 1, "share": 0.5, "seed": 0}, "uniform": {}}[name]
    params = dict(known)
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if key not in known or not eq:
            raise InputError(f"{name}: unknown or malformed parameter {item!r} (known: {', '.join(known) or 'none'})",
                             field="--traffic")
        try:
            params[key] = type(known[key])(float(value)) if isinstance(known[key], int) else float(value)
        except ValueError:
            raise InputError(f"{name}: {key} must be a number, got {value!r}", field="--traffic") from None
    rng = np.random.default_rng(int(params.get("seed", 0)))
    share = np.full((gpus, gpus), 1.0 / gpus)
    if name == "zipf":
        if params["s"] < 0 or params["experts"] < 1 or params["tokens"] < 1 or not 0 <= params["self"] < 1:
            raise InputError("zipf: needs s >= 0, experts >= 1, tokens >= 1, 0 <= self < 1", field="--traffic")
        e = gpus * params["experts"]
        popularity = 1.0 / np.arange(1, e + 1) ** params["s"]
        owner = rng.permutation(e) % gpus  # expert -> GPU, shuffled
        per_gpu = np.bincount(owner, weights=popularity, minlength=gpus)
        per_gpu /= per_gpu.sum()
        counts = rng.multinomial(params["tokens"], per_gpu, size=gpus).astype(float)
        stay = rng.binomial(params["tokens"], params["self"], size=gpus)
        counts[np.arange(gpus), np.arange(gpus)] += stay
        share = counts / counts.sum(axis=1, keepdims=True)
    elif name == "hotspot":
        hot_count = params["gpus"]
        if not 1 <= hot_count <= gpus or not 0 <= params["share"] <= 1:
            raise InputError(f"hotspot: needs 1 <= gpus <= {gpus} and 0 <= share <= 1", field="--traffic")
        hot = rng.choice(gpus, size=hot_count, replace=False)
        share = np.full((gpus, gpus), (1 - params["share"]) / gpus)
        share[:, hot] += params["share"] / hot_count
    matrix = np.floor(share * size).astype(np.int64)
    np.fill_diagonal(matrix, 0)
    return check_matrix(matrix.tolist(), gpus, spec)
