"""Solver backends; each wraps one solver behind the `Backend` interface."""

from .base import Backend
from .cbc import CbcBackend
from .cpsat import CpSatBackend
from .highs import HighsBackend
from .mpsolver import GlopBackend, MPSolverBackend, PdlpBackend, ScipBackend

BUILTIN_BACKENDS: tuple[type[Backend], ...] = (
    CpSatBackend,
    ScipBackend,
    HighsBackend,
    CbcBackend,
    GlopBackend,
    PdlpBackend,
)

__all__ = [
    "BUILTIN_BACKENDS",
    "Backend",
    "CbcBackend",
    "CpSatBackend",
    "GlopBackend",
    "HighsBackend",
    "MPSolverBackend",
    "PdlpBackend",
    "ScipBackend",
]
