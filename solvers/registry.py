"""Name -> backend registry, default solver choice and a `solve` shortcut."""

from __future__ import annotations

from .backends import BUILTIN_BACKENDS, Backend
from .errors import UnknownSolver, UnsupportedModel
from .linear_model import LinearModel
from .result import SolveOptions, SolveResult

_backends: dict[str, Backend] = {}
_available: list[str] | None = None

# Preferred solvers per model class, best first; other available backends follow.
_PURE_INTEGER_ORDER = ("cpsat", "highs", "scip", "cbc")
_MIXED_INTEGER_ORDER = ("highs", "scip", "cbc")
_CONTINUOUS_ORDER = ("highs", "glop", "scip", "cbc", "pdlp")


def register(backend: Backend, replace: bool = False) -> None:
    """Add a backend under `backend.name`; a name is taken once unless replace=True."""
    global _available
    if backend.name in _backends and not replace:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _backends[backend.name] = backend
    _available = None


def registered() -> list[str]:
    """Sorted names of all registered backends, available or not."""
    return sorted(_backends)


def available() -> list[str]:
    """Sorted names of registered backends whose solver works here (probed once, cached)."""
    global _available
    if _available is None:
        _available = sorted(name for name, backend in _backends.items() if backend.is_available())
    return list(_available)


def get(name: str) -> Backend:
    """The backend called `name`; raises UnknownSolver if unregistered or unavailable."""
    names = ", ".join(available()) or "none"
    if name not in _backends:
        raise UnknownSolver(f"unknown solver {name!r}; available: {names}")
    if name not in available():
        raise UnknownSolver(f"solver {name!r} is not available on this machine; available: {names}")
    return _backends[name]


def default_for(model: LinearModel) -> str:
    """Pick a solver: CP-SAT for pure-integer models with integral coefficients,
    HiGHS for MILPs with continuous variables and for LPs, else any available
    backend that accepts the model. O(nnz)."""
    if model.is_pure_integer and model.has_integral_coefficients():
        preferred = _PURE_INTEGER_ORDER
    elif model.is_mip:
        preferred = _MIXED_INTEGER_ORDER
    else:
        preferred = _CONTINUOUS_ORDER
    names = available()
    for name in [*preferred, *names]:
        if name not in names:
            continue
        try:
            _backends[name].check_supported(model)
        except UnsupportedModel:
            continue
        return name
    raise UnsupportedModel(f"no available solver accepts {model!r}; available: {', '.join(names) or 'none'}")


def honours_work_limit(model: LinearModel, solver: str | None = None) -> bool:
    """Whether the backend that would solve `model` stops on SolveOptions.work_limit (else
    only its time limit stops it, and the result depends on the machine's load)."""
    return get(solver or default_for(model)).supports_work_limit


def solve(model: LinearModel, solver: str | None = None, options: SolveOptions | None = None) -> SolveResult:
    """Solve with the named backend, or with `default_for(model)` if solver is None."""
    return get(solver or default_for(model)).solve(model, options)


for _backend_class in BUILTIN_BACKENDS:
    register(_backend_class())
