"""OR-Tools linear_solver (pywraplp) backends: SCIP (MILP/LP), GLOP and PDLP (LP)."""

from __future__ import annotations

import time

import numpy as np

from ..linear_model import MatrixForm, LinearModel
from ..result import Limit, SolveOptions, SolveResult, Termination
from .base import Backend, time_limit_reached


class MPSolverBackend(Backend):
    """Common pywraplp translation and status mapping.

    OPTIMAL -> optimal (SCIP also returns it when it stops on the requested
    gap); FEASIBLE -> feasible; NOT_SOLVED -> no_solution; INFEASIBLE ->
    infeasible; UNBOUNDED -> unbounded; ABNORMAL / MODEL_INVALID -> error.
    FEASIBLE and NOT_SOLVED count as limit_hit only if a time limit was set
    and the solver ran for (almost) all of it; otherwise NOT_SOLVED is an error.
    GLOP's presolve reports unbounded LPs as INFEASIBLE, so GLOP's INFEASIBLE
    is confirmed by a second solve without presolve. PDLP's unbounded
    (dual-infeasible) LPs come back as NOT_SOLVED and therefore as error.
    """

    solver_id: str
    presolve_conflates_unbounded: bool = False
    not_solved_hint: str = ""

    def _seed_parameters(self, seed: int) -> str:
        """Solver-specific parameter string that sets the random seed ('' if none)."""
        return ""

    def _solve(self, model: LinearModel, form: MatrixForm, options: SolveOptions, started: float) -> SolveResult:
        from ortools.linear_solver import pywraplp

        solver = pywraplp.Solver.CreateSolver(self.solver_id)
        if solver is None:
            return self._result(form, started, Termination.error, message=f"OR-Tools has no {self.solver_id} support")
        xs = [solver.Var(lb, ub, integer, f"x{j}") for j, lb, ub, integer in form.variables()]
        for row, lb, ub, entries in form.rows():
            constraint = solver.RowConstraint(lb, ub, f"c{row}")
            for j, coef in entries:
                constraint.SetCoefficient(xs[j], coef)
        objective = solver.Objective()
        for j in np.flatnonzero(form.c).tolist():
            objective.SetCoefficient(xs[j], float(form.c[j]))
        objective.SetOffset(form.offset)
        objective.SetOptimizationDirection(form.maximize)

        if options.verbose:
            solver.EnableOutput()
        if options.time_limit_s is not None:
            solver.SetTimeLimit(max(1, round(options.time_limit_s * 1000)))
        solver.SetNumThreads(options.threads)  # returns False where unsupported (GLOP): ignored
        seed_parameters = self._seed_parameters(options.seed)
        if seed_parameters and not solver.SetSolverSpecificParametersAsString(seed_parameters):
            return self._result(form, started, Termination.error, message=f"{self.name} rejected {seed_parameters!r}")
        params = pywraplp.MPSolverParameters()
        if model.is_mip:
            params.SetDoubleParam(params.RELATIVE_MIP_GAP, options.rel_gap)

        solve_started = time.perf_counter()
        status = solver.Solve(params)
        if status == solver.INFEASIBLE and self.presolve_conflates_unbounded:
            # Presolve reports "infeasible or unbounded" as INFEASIBLE; without
            # presolve the simplex tells the two apart.
            if options.time_limit_s is not None:
                remaining = options.time_limit_s - (time.perf_counter() - solve_started)
                solver.SetTimeLimit(max(1, round(remaining * 1000)))
            params.SetIntegerParam(params.PRESOLVE, params.PRESOLVE_OFF)
            status = solver.Solve(params)
        solver_seconds = time.perf_counter() - solve_started
        limit_hit = time_limit_reached(options, solver_seconds)

        if status in (solver.OPTIMAL, solver.FEASIBLE):
            values = [x.solution_value() for x in xs]
            bound = objective.BestBound() if model.is_mip else None
            if status == solver.OPTIMAL:
                return self._result(form, started, Termination.optimal, values=values, dual_bound=bound)
            message = "time limit reached" if limit_hit else "solver stopped with an unproven solution"
            return self._result(
                form, started, Termination.feasible, values=values, dual_bound=bound,
                limit=Limit.time if limit_hit else None, message=message,
            )
        if status == solver.INFEASIBLE:
            return self._result(form, started, Termination.infeasible)
        if status == solver.UNBOUNDED:
            return self._result(form, started, Termination.unbounded)
        if status == solver.NOT_SOLVED and limit_hit:
            return self._result(
                form, started, Termination.no_solution, limit=Limit.time, message="time limit reached"
            )
        names = {solver.NOT_SOLVED: "NOT_SOLVED", solver.ABNORMAL: "ABNORMAL", solver.MODEL_INVALID: "MODEL_INVALID"}
        return self._result(
            form, started, Termination.error,
            message=f"{self.solver_id} status {names.get(status, status)} after {solver_seconds:.3f}s"
            + (f" ({self.not_solved_hint})" if status == solver.NOT_SOLVED and self.not_solved_hint else ""),
        )


class ScipBackend(MPSolverBackend):
    """SCIP through OR-Tools: MILP and LP."""

    name = "scip"
    solver_id = "SCIP"
    supports_integer = True
    supports_continuous = True

    def _seed_parameters(self, seed: int) -> str:
        return f"randomization/randomseedshift = {seed}"


class GlopBackend(MPSolverBackend):
    """GLOP (primal/dual simplex): LP only; single-threaded."""

    name = "glop"
    solver_id = "GLOP"
    presolve_conflates_unbounded = True
    supports_integer = False
    supports_continuous = True

    def _seed_parameters(self, seed: int) -> str:
        return f"random_seed: {seed}"


class PdlpBackend(MPSolverBackend):
    """PDLP (first-order primal-dual): LP only; optimal means within PDLP's tolerances."""

    name = "pdlp"
    solver_id = "PDLP"
    # OR-Tools maps PDLP's DUAL_INFEASIBLE (unbounded or infeasible) to NOT_SOLVED.
    not_solved_hint = "PDLP reports unbounded or dual-infeasible LPs this way"
    supports_integer = False
    supports_continuous = True
