"""Solver layer of the planner: a solver-neutral model and interchangeable backends.

    from solvers import Model, quicksum, solve
    m = Model("demo")
    x = [m.add_binary(f"x{i}") for i in range(3)]
    m.add(quicksum(x) <= 2)
    m.maximize(3 * x[0] + 2 * x[1] + x[2])
    result = solve(m)             # or solve(m, "highs", SolveOptions(time_limit_s=5))
"""

from .backends import Backend
from .errors import ModelError, SolverError, UnknownSolver, UnsupportedModel
from .model import Constraint, LinearExpr, MatrixForm, Model, Variable, quicksum
from .registry import available, default_for, get, register, registered, solve
from .result import SolveOptions, SolveResult, Termination, relative_gap

__all__ = [
    "Backend",
    "Constraint",
    "LinearExpr",
    "MatrixForm",
    "Model",
    "ModelError",
    "SolveOptions",
    "SolveResult",
    "SolverError",
    "Termination",
    "UnknownSolver",
    "UnsupportedModel",
    "Variable",
    "available",
    "default_for",
    "get",
    "quicksum",
    "register",
    "registered",
    "relative_gap",
    "solve",
]
