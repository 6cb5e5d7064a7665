"""HiGHS backend through scipy.optimize.milp (MILP and LP)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings

import numpy as np

from ..linear_model import MatrixForm, LinearModel
from ..result import Limit, SolveOptions, SolveResult, Termination
from .base import Backend

# scipy.optimize.milp result.status codes.
_OPTIMAL, _LIMIT, _INFEASIBLE, _UNBOUNDED, _OTHER = 0, 1, 2, 3, 4


class HighsBackend(Backend):
    """HiGHS (scipy.optimize.milp). `threads` is ignored: scipy's HiGHS runs serially.

    Status mapping: 0 -> optimal; 1 (time/iteration limit) -> feasible if an
    incumbent exists, else no_solution, both with limit_hit; 2 -> infeasible;
    3 -> unbounded; 4 -> error. Two status-4 cases are retried once within
    the remaining time: "unbounded or infeasible" from presolve (re-solved
    without presolve to tell the two apart) and an LP "solve error" (re-solved
    with the interior point method).
    """

    name = "highs"
    supports_integer = True
    supports_continuous = True

    def _solve(self, model: LinearModel, form: MatrixForm, options: SolveOptions, started: float) -> SolveResult:
        sign = -1.0 if form.maximize else 1.0
        solve_started = time.perf_counter()
        result = self._run_milp(form, sign, options, options.time_limit_s)
        if result.status == _OTHER:
            retry = self._retry_options(result.message, model.is_mip)
            remaining = None
            if options.time_limit_s is not None:
                remaining = options.time_limit_s - (time.perf_counter() - solve_started)
            if retry and (remaining is None or remaining > 0):
                result = self._run_milp(form, sign, options, remaining, retry)

        if result.status == _OPTIMAL:
            return self._result(
                form, started, Termination.optimal, values=result.x,
                dual_bound=self._dual_bound(result, sign, form, model),
            )
        if result.status == _LIMIT:
            if result.x is not None:
                return self._result(
                    form, started, Termination.feasible, values=result.x,
                    dual_bound=self._dual_bound(result, sign, form, model),
                    limit=Limit.time, message=result.message,
                )
            return self._result(form, started, Termination.no_solution, limit=Limit.time, message=result.message)
        if result.status == _INFEASIBLE:
            return self._result(form, started, Termination.infeasible, message=result.message)
        if result.status == _UNBOUNDED:
            return self._result(form, started, Termination.unbounded, message=result.message)
        return self._result(form, started, Termination.error, message=result.message)

    @staticmethod
    def _retry_options(message: str, is_mip: bool) -> dict[str, object]:
        text = message.lower()
        if "unbounded or infeasible" in text:
            return {"presolve": False}
        if "solve error" in text and not is_mip:
            # HiGHS's dual simplex can give up on large degenerate LPs
            # ("excessive primal values"); its interior point method copes.
            return {"solver": "ipm"}
        if "solve error" in text:
            # HiGHS's MIP presolve can end in a solve error on a small infeasible model
            # (x1 + 2 x2 + 2 x3 = 1 over integers with x1, x2 fixed); without presolve it proves it.
            return {"presolve": False}
        return {}

    @staticmethod
    def _run_milp(
        form: MatrixForm,
        sign: float,
        options: SolveOptions,
        time_limit_s: float | None,
        overrides: dict[str, object] | None = None,
    ):
        from scipy.optimize import Bounds, LinearConstraint, milp

        solver_options: dict[str, object] = {
            "disp": options.verbose,
            "mip_rel_gap": options.rel_gap,
            "random_seed": options.seed,
        }
        if time_limit_s is not None:
            solver_options["time_limit"] = time_limit_s
        solver_options.update(overrides or {})
        constraints = LinearConstraint(form.A, form.row_lb, form.row_ub) if form.A.shape[0] else None
        with warnings.catch_warnings(), _stdout_to_stderr():
            # milp passes random_seed and solver to HiGHS verbatim but warns that it does so.
            warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
            return milp(
                sign * form.c,
                integrality=form.integrality,
                bounds=Bounds(form.var_lb, form.var_ub),
                constraints=constraints,
                options=solver_options,
            )

    @staticmethod
    def _dual_bound(result, sign: float, form: MatrixForm, model: LinearModel) -> float | None:
        # For LPs milp reports no MIP bound; the base class then uses the objective.
        bound = getattr(result, "mip_dual_bound", None)
        if not model.is_mip or bound is None or not np.isfinite(bound):
            return None
        return sign * float(bound) + form.offset


@contextlib.contextmanager
def _stdout_to_stderr():
    """HiGHS's MIP solver prints some debug lines from C++ straight to file descriptor 1
    whatever its options say ("HighsMipSolverData::transformNewIntegerFeasibleSolution ..."),
    which would corrupt a --json document on stdout: send fd 1 to stderr while it runs."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
