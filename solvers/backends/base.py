"""The Backend interface and the bookkeeping shared by all backends."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from ..errors import UnsupportedModel
from ..linear_model import MatrixForm, LinearModel
from ..result import Limit, SolveOptions, SolveResult, Termination, relative_gap

# An empty row `lb <= 0 <= ub` counts as violated beyond this slack.
_EMPTY_ROW_TOLERANCE = 1e-9


class Backend(ABC):
    """One solver. Subclasses set the class attributes and implement `_solve`."""

    name: ClassVar[str]
    supports_integer: ClassVar[bool]
    supports_continuous: ClassVar[bool]
    supports_work_limit: ClassVar[bool] = False  # honours SolveOptions.work_limit (deterministic stops)

    def __init__(self) -> None:
        self._available: bool | None = None

    def is_available(self) -> bool:
        """True if the solver imports and solves a one-variable model (cached)."""
        if self._available is None:
            self._available = self._probe()
        return self._available

    def _probe(self) -> bool:
        model = LinearModel("probe")
        x = model.add_var("x", 0, 3, integer=self.supports_integer)
        model.add(2 * x <= 4)
        model.maximize(x + 1)
        try:
            result = self.solve(model, SolveOptions(time_limit_s=30.0))
        # Any failure (missing library, broken binary, ...) means "not available".
        except Exception:
            return False
        return result.termination is Termination.optimal and abs(result.objective - 3.0) < 1e-6

    def check_supported(self, model: LinearModel) -> None:
        """Raise UnsupportedModel if this backend cannot represent `model`."""
        if model.is_mip and not self.supports_integer:
            raise UnsupportedModel(f"{self.name} solves continuous models only; the model has integer variables")
        if not model.is_pure_integer and not self.supports_continuous:
            raise UnsupportedModel(f"{self.name} solves integer models only; the model has continuous variables")

    def solve(self, model: LinearModel, options: SolveOptions | None = None) -> SolveResult:
        """Solve `model`; raises UnsupportedModel, otherwise reports problems in the result."""
        options = options or SolveOptions()
        self.check_supported(model)
        started = time.perf_counter()
        form = model.to_matrix()
        trivial = self._trivial_result(model, form, started)
        if trivial is not None:
            return trivial
        return self._solve(model, form, options, started)

    @abstractmethod
    def _solve(self, model: LinearModel, form: MatrixForm, options: SolveOptions, started: float) -> SolveResult:
        """Backend-specific solve. Empty rows are known to be satisfied and may be skipped."""

    def _trivial_result(self, model: LinearModel, form: MatrixForm, started: float) -> SolveResult | None:
        empty = np.diff(form.A.indptr) == 0
        violated = np.flatnonzero(
            empty & ((form.row_lb > _EMPTY_ROW_TOLERANCE) | (form.row_ub < -_EMPTY_ROW_TOLERANCE))
        )
        if violated.size:
            row = int(violated[0])
            message = f"constraint {model.constraint_name(row)!r} has no variables and cannot hold"
            return self._result(form, started, Termination.infeasible, message=message)
        if model.num_vars == 0:
            return self._result(form, started, Termination.optimal, values=(), message="empty model")
        return None

    def _result(
        self,
        form: MatrixForm,
        started: float,
        termination: Termination,
        *,
        values: Sequence[float] | None = None,
        dual_bound: float | None = None,
        limit: Limit | None = None,
        message: str = "",
    ) -> SolveResult:
        """Assemble a SolveResult.

        Integer variables are rounded to the nearest integer; the objective is
        recomputed from the returned values, so it always matches them. An
        optimal result without a solver-reported bound gets dual_bound =
        objective (exact for LP by strong duality; within rel_gap for MIP).
        Non-finite bounds become None.
        """
        objective = None
        clean: tuple[float, ...] | None = None
        if values is not None:
            x = np.array(values, dtype=np.float64)
            is_integer = form.integrality == 1
            x[is_integer] = np.round(x[is_integer])
            x += 0.0  # turns -0.0 into 0.0
            clean = tuple(x.tolist())
            objective = float(form.c @ x) + form.offset if x.size else form.offset
        if dual_bound is not None and not math.isfinite(dual_bound):
            dual_bound = None
        if termination is Termination.optimal and dual_bound is None:
            dual_bound = objective
        if dual_bound is not None and objective is not None:
            # A bound past the solution's own value is tolerance or rounding
            # noise (CBC prints bounds with 3 decimals); clamp it.
            dual_bound = max(dual_bound, objective) if form.maximize else min(dual_bound, objective)
        return SolveResult(
            solver=self.name,
            termination=termination,
            objective=objective,
            dual_bound=dual_bound,
            gap=relative_gap(objective, dual_bound),
            seconds=time.perf_counter() - started,
            limit=limit,
            values=clean,
            message=message,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def time_limit_reached(options: SolveOptions, solver_seconds: float, slack: float = 0.95) -> bool:
    """True if a time limit was set and the solver ran (almost) that long."""
    return options.time_limit_s is not None and solver_seconds >= slack * options.time_limit_s
