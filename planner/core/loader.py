"""Reading description files (YAML or JSON) with errors that name file and field."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from planner.core.errors import InputError


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file; empty, unreadable or malformed files raise InputError."""
    p = Path(path)
    src = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", source=src) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file ({exc.__class__.__name__})", source=src) from None
    if not text.strip():
        raise InputError("file is empty", source=src)
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=src) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InputError(f"invalid YAML{where}: {problem}", source=src) from None
    if data is None:
        raise InputError("file is empty", source=src)
    return data


def expect_mapping(obj: Any, *, source: str | None, field: str | None, allowed: Iterable[str],
                   required: Iterable[str] = ()) -> dict:
    """`obj` must be a mapping with only `allowed` keys and all `required` keys."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a mapping, got {type(obj).__name__}", source=source, field=field)
    allowed = set(allowed)
    for key in obj:
        if key not in allowed:
            name = f"{field}.{key}" if field else str(key)
            raise InputError(f"unknown field (allowed: {', '.join(sorted(allowed))})", source=source, field=name)
    for key in required:
        if key not in obj:
            name = f"{field}.{key}" if field else key
            raise InputError("missing required field", source=source, field=name)
    return obj


def expect_type(value: Any, types: type | tuple[type, ...], *, source: str | None, field: str, what: str) -> Any:
    """`value` must be of `types` (bool is never accepted as a number)."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InputError(f"expected {what}, got {value!r}", source=source, field=field)
    if not isinstance(value, types):
        raise InputError(f"expected {what}, got {type(value).__name__} {value!r}", source=source, field=field)
    return value


def positive_int(value: Any, *, source: str | None, field: str, what: str) -> int:
    """`value` must be an integer of at least 1 (not a bool)."""
    expect_type(value, int, source=source, field=field, what=what)
    if value < 1:
        raise InputError(f"expected {what} of at least 1, got {value}", source=source, field=field)
    return value


def expect_list(value: Any, *, source: str | None, field: str, nonempty: bool = True) -> list:
    if not isinstance(value, list):
        raise InputError(f"expected a list, got {type(value).__name__}", source=source, field=field)
    if nonempty and not value:
        raise InputError("must not be empty", source=source, field=field)
    return value
