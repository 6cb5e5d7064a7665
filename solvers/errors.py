"""Exceptions raised by the solver layer."""

from __future__ import annotations


class SolverError(Exception):
    """Base class of every error raised by `solvers`."""


class ModelError(SolverError, ValueError):
    """The model is malformed: bad bounds, NaN coefficients, foreign variables."""


class UnsupportedModel(SolverError):
    """The model is valid but the chosen backend cannot represent it."""


class UnknownSolver(SolverError, LookupError):
    """No backend with that name is registered and available."""
