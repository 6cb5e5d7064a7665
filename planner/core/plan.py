"""The plan document every planning command writes (contract: planner.plan/v1).

Written deterministically: sorted keys, floats in their shortest exact form (so a plan
parses back to the very numbers that were simulated), and an atomic replace so a failed
run never leaves half a file. Wall-clock measurements are the keys `seconds` and
`*_seconds` (`metrics.synthesis_seconds`, `solver.seconds`, a model's own solve times);
with `reproducible=True` they are written as 0 wherever they are, outside `problem` (the
inputs, echoed) and `plan` (the body), so that the same input gives the same bytes.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from planner.core.errors import InputError

SCHEMA_ID = "planner.plan/v1"
KINDS = ("collective", "experts", "placement", "parallelism")  # the schema's; planner.kinds builds them


def is_wall_clock(key: str) -> bool:
    return key == "seconds" or key.endswith("_seconds")


@dataclass(frozen=True)
class Plan:
    kind: str
    problem: dict
    method: str
    metrics: dict
    bound: dict
    plan: dict
    solver: dict | None = None
    fallback: str | None = None
    provenance: dict = field(default_factory=dict)

    def to_json(self, reproducible: bool = False) -> dict:
        doc = {"schema": SCHEMA_ID, "kind": self.kind, "problem": self.problem, "method": self.method,
               "solver": self.solver, "fallback": self.fallback, "metrics": self.metrics, "bound": self.bound,
               "plan": self.plan, "provenance": self.provenance}
        if reproducible:
            doc = {k: v if k in ("problem", "plan") else _without_wall_clock(v) for k, v in doc.items()}
        return _normalise(doc)


def _without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: 0.0 if is_wall_clock(str(k)) and isinstance(v, (int, float)) and not isinstance(v, bool)
                else _without_wall_clock(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_wall_clock(v) for v in value]
    return value


def _normalise(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def dumps(doc: dict) -> str:
    """Indented JSON with sorted keys; arrays of plain values (a transfer row, a chunk)
    stay on one line so large schedules remain readable."""
    return _dump(doc, 0) + "\n"


def _dump(value: Any, depth: int) -> str:
    if isinstance(value, dict) and value:
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {_dump(value[k], depth + 1)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) and v for v in value):
        pad = " " * (depth + 1)
        return "[\n" + ",\n".join(pad + _dump(v, depth + 1) for v in value) + "\n" + " " * depth + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def write_text_atomic(path: str | Path, text: str, field: str = "-o") -> None:
    """Write all of `text` or nothing: a temporary file in the same folder, then a rename.
    The file gets the mode a plain open() would give; an unwritable place is bad input."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"cannot write here ({exc.strerror or exc.__class__.__name__})", source=str(path),
                         field=field) from None
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_plan(plan: Plan, path: str | Path, reproducible: bool = False) -> None:
    write_text_atomic(path, dumps(plan.to_json(reproducible)))


def read_plan(path: str | Path) -> dict:
    """A plan document, checked for the schema tag and the kind."""
    src = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", source=src) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a plan JSON file ({exc.__class__.__name__})", source=src) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        raise InputError(f"not a plan: 'schema' must be {SCHEMA_ID!r}", source=src, field="schema")
    if doc.get("kind") not in KINDS:
        raise InputError(f"unknown plan kind {doc.get('kind')!r}", source=src, field="kind")
    return doc


def plan_schema() -> dict:
    """The JSON Schema of plan documents (planner/schema/plan.schema.json)."""
    text = resources.files("planner").joinpath("schema/plan.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
