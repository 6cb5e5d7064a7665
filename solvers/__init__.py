"""Solver layer of the planner: a solver-neutral model and interchangeable backends.

    from solvers import LinearModel, quicksum, solve
    m = LinearModel("demo")
    x = [m.add_binary(f"x{i}") for i in range(3)]
    m.add(quicksum(x) <= 2)
    m.maximize(3 * x[0] + 2 * x[1] + x[2])
    result = solve(m)             # or solve(m, "highs", SolveOptions(time_limit_s=5))
"""

from .backends import Backend
from .errors import ModelError, SolverError, UnknownSolver, UnsupportedModel
from .linear_model import Constraint, LinearExpr, MatrixForm, LinearModel, Variable, quicksum
from .registry import available, default_for, get, honours_work_limit, register, registered, solve
from .result import Limit, SolveOptions, SolveResult, Termination, combined_limit, relative_gap

__all__ = [
    "Backend",
    "Constraint",
    "Limit",
    "LinearExpr",
    "MatrixForm",
    "LinearModel",
    "ModelError",
    "SolveOptions",
    "SolveResult",
    "SolverError",
    "Termination",
    "UnknownSolver",
    "UnsupportedModel",
    "Variable",
    "available",
    "combined_limit",
    "default_for",
    "get",
    "honours_work_limit",
    "quicksum",
    "register",
    "registered",
    "relative_gap",
    "solve",
]
