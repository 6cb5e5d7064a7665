"""Imports go one way: planner.core -> topologies -> solvers -> models -> planner -> cli.

Every import in the package sources, at any depth of a module (also inside functions), is
read with `ast`; a module may import only from its own layer or a lower one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# lowest first; a module's layer is that of the longest prefix of its dotted name
LAYERS = ("planner.core", "topologies", "solvers", "models", "planner", "cli")


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a project module (None: not the project's)."""
    best = None
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(LAYERS[best]):
                best = i
    return best


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # `from planner import plan` names a module: judge the submodule, not the package
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names
                    if (ROOT / Path(*module.split("."), alias.name)).with_suffix(".py").exists()
                    or (ROOT / Path(*module.split("."), alias.name, "__init__.py")).exists()]
    return out


def source_files() -> list[Path]:
    files = [ROOT / "cli.py"]
    for package in ("planner", "topologies", "solvers", "models"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def violations(files: list[Path], root: Path = ROOT) -> list[str]:
    out = []
    for path in files:
        own = layer_of(module_name(path, root))
        for line, module in imported_modules(path, root):
            target = layer_of(module)
            if target is None:
                continue
            if target > own:
                out.append(f"{path.relative_to(root)}:{line} ({LAYERS[own]}) imports {module} ({LAYERS[target]})")
    return out


def test_every_import_goes_down_the_layers():
    assert violations(source_files()) == []


def test_the_package_root_imports_nothing_of_the_project():
    # `planner/__init__.py` runs before any planner.core module: it must stay a leaf
    assert [m for _, m in imported_modules(ROOT / "planner" / "__init__.py") if layer_of(m) is not None] == []


@pytest.mark.parametrize("lower, upper", [("planner/core/units.py", "topologies.io"),
                                          ("topologies/types.py", "solvers.registry"),
                                          ("solvers/flash.py", "planner.simulator"),
                                          ("models/forest.py", "planner.kinds.collective")])
def test_an_upward_import_is_caught(tmp_path, lower, upper):
    """The check itself can fail: a copy of a lower module that imports a higher one."""
    copy = ROOT / lower
    text = copy.read_text(encoding="utf-8") + f"\n\ndef _late():\n    import {upper}\n"
    fake = tmp_path / lower
    fake.parent.mkdir(parents=True)
    fake.write_text(text, encoding="utf-8")
    found = violations([fake], tmp_path)
    assert len(found) == 1 and upper in found[0]


def test_layer_of():
    assert layer_of("planner.core.errors") == 0
    assert layer_of("planner.simulator") == 4
    assert layer_of("models.forest") == 3
    assert layer_of("numpy") is None
