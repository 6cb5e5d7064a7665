"""OR-Tools CP-SAT backend: pure integer models with integral coefficients."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedModel
from ..linear_model import MatrixForm, LinearModel
from ..result import Limit, SolveOptions, SolveResult, Termination
from .base import Backend, time_limit_reached

# Values pass through float64, which is exact for integers up to 2**53.
_MAX_ABS_VALUE = 2**53


class CpSatBackend(Backend):
    """CP-SAT. Row bounds are rounded inward (exact, since row activities are integral).

    Status mapping: OPTIMAL -> optimal; FEASIBLE -> feasible (CP-SAT only
    returns it when a limit stopped the search); INFEASIBLE -> infeasible;
    MODEL_INVALID -> error (with the validation message); UNKNOWN -> no_solution.
    """

    name = "cpsat"
    supports_integer = True
    supports_continuous = False
    supports_work_limit = True  # max_deterministic_time

    def check_supported(self, model: LinearModel) -> None:
        super().check_supported(model)
        if not model.has_integral_coefficients():
            raise UnsupportedModel("cpsat needs integral constraint and objective coefficients")

    def _solve(self, model: LinearModel, form: MatrixForm, options: SolveOptions, started: float) -> SolveResult:
        from ortools.sat.python import cp_model

        largest = max(
            np.abs(form.var_lb).max(initial=0.0),
            np.abs(form.var_ub).max(initial=0.0),
            np.abs(form.A.data).max(initial=0.0),
            np.abs(form.c).max(initial=0.0),
        )
        if largest > _MAX_ABS_VALUE:
            raise UnsupportedModel(f"cpsat needs bounds and coefficients within +-2**53, got {largest:g}")
        cp = cp_model.CpModel()
        xs = [
            cp.new_int_var(int(lb), int(ub), f"x{j}")
            for j, (lb, ub) in enumerate(zip(form.var_lb.tolist(), form.var_ub.tolist()))
        ]
        indptr, indices = form.A.indptr.tolist(), form.A.indices.tolist()
        coefs = form.A.data.astype(np.int64).tolist()
        weighted_sum = cp_model.LinearExpr.weighted_sum
        for row, (lb, ub) in enumerate(zip(form.row_lb.tolist(), form.row_ub.tolist())):
            start, end = indptr[row], indptr[row + 1]
            if start == end:
                continue
            low = math.ceil(lb - 1e-9) if math.isfinite(lb) else cp_model.INT_MIN
            high = math.floor(ub + 1e-9) if math.isfinite(ub) else cp_model.INT_MAX
            terms = weighted_sum([xs[j] for j in indices[start:end]], coefs[start:end])
            cp.add_linear_constraint(terms, low, high)
        objective_support = np.flatnonzero(form.c)
        if objective_support.size:
            objective = weighted_sum(
                [xs[j] for j in objective_support.tolist()],
                form.c[objective_support].astype(np.int64).tolist(),
            )
            (cp.maximize if form.maximize else cp.minimize)(objective)

        if form.hint is not None:
            for j in np.flatnonzero(~np.isnan(form.hint)).tolist():
                cp.add_hint(xs[j], int(round(form.hint[j])))
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = options.threads
        params.random_seed = options.seed
        params.relative_gap_limit = options.rel_gap
        params.log_search_progress = options.verbose
        if options.time_limit_s is not None:
            params.max_time_in_seconds = options.time_limit_s
        if options.work_limit is not None:
            params.max_deterministic_time = options.work_limit
        status = solver.solve(cp)

        limited = _limit_that_stopped(solver, options)
        has_objective = bool(objective_support.size)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            values = list(solver.response_proto.solution)
            bound = solver.best_objective_bound + form.offset if has_objective else None
            if status == cp_model.OPTIMAL:
                return self._result(form, started, Termination.optimal, values=values, dual_bound=bound)
            return self._result(
                form, started, Termination.feasible, values=values, dual_bound=bound,
                limit=limited, message="search stopped by a limit before proving optimality",
            )
        if status == cp_model.INFEASIBLE:
            return self._result(form, started, Termination.infeasible)
        if status == cp_model.MODEL_INVALID:
            return self._result(form, started, Termination.error, message=f"model invalid: {cp.validate()}")
        return self._result(
            form, started, Termination.no_solution, limit=limited,
            message=f"CP-SAT status {solver.status_name(status)} after {solver.wall_time:.3f}s",
        )


def _limit_that_stopped(solver, options: SolveOptions) -> Limit | None:
    """Which limit ended a search that stopped short of a proof: the wall clock when it
    ran out (the answer then depends on the machine's load), else the work limit."""
    if time_limit_reached(options, solver.wall_time):
        return Limit.time
    if options.work_limit is not None:
        return Limit.work
    return Limit.time if options.time_limit_s is not None else None
