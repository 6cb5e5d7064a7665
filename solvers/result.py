"""Solve options and solver-neutral results.

Status rule (as in OR-Tools MathOpt): `optimal` means the solver *proved*
optimality within the requested relative gap. A solution found before a limit
stopped the search is `feasible`, with `limit` saying which limit (`time`: the
wall clock, which depends on the machine's load; `work`: a deterministic work
limit, which does not); a limit with no solution is `no_solution`, with `limit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from .errors import SolverError
from .linear_model import LinearExpr, Variable

# Denominator floor of the relative gap, so a zero objective does not divide by zero.
GAP_DENOMINATOR_FLOOR = 1e-9


class Limit(StrEnum):
    """The limit that ended a search: the wall clock or a deterministic work budget."""

    time = "time"
    work = "work"


class Termination(StrEnum):
    """Why a solve ended.

    optimal      proved optimal within SolveOptions.rel_gap (LPs: solver's tolerances)
    feasible     has a solution, optimality not proved (usually a time limit)
    infeasible   proved infeasible (SCIP may also say this for "infeasible or unbounded")
    unbounded    proved unbounded (objective improves without limit)
    no_solution  stopped (usually by the time limit) before finding any solution
    error        the solver failed, rejected the model or gave an ambiguous answer;
                 see SolveResult.message
    """

    optimal = "optimal"
    feasible = "feasible"
    infeasible = "infeasible"
    unbounded = "unbounded"
    no_solution = "no_solution"
    error = "error"


@dataclass(frozen=True)
class SolveOptions:
    """Parameters common to every backend.

    time_limit_s bounds the solver call itself (model translation is not
    counted, but SolveResult.seconds includes it). seed and threads are best
    effort: a backend ignores what its solver does not expose.
    """

    time_limit_s: float | None = None
    threads: int = 1
    seed: int = 0
    rel_gap: float = 1e-6
    verbose: bool = False
    # Deterministic work limit where the solver has one (CP-SAT's deterministic time, close
    # to seconds on one core): the same model stops at the same point on any machine load.
    work_limit: float | None = None

    def __post_init__(self) -> None:
        if self.time_limit_s is not None and not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise ValueError(f"time_limit_s must be a positive finite number or None, got {self.time_limit_s}")
        if self.work_limit is not None and not (self.work_limit > 0 and math.isfinite(self.work_limit)):
            raise ValueError(f"work_limit must be a positive finite number or None, got {self.work_limit}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (0.0 <= self.rel_gap < 1.0):
            raise ValueError(f"rel_gap must be in [0, 1), got {self.rel_gap}")


def combined_limit(limits) -> Limit | None:
    """The limit that stopped several solves taken as one: the wall clock if it stopped
    any of them (then the whole depends on the machine's load), else the work limit if
    it stopped any."""
    found = set(limits)
    return Limit.time if Limit.time in found else Limit.work if Limit.work in found else None


def relative_gap(primal: float | None, dual: float | None) -> float | None:
    """|primal - dual| / max(1e-9, |primal|), or None if either bound is unknown."""
    if primal is None or dual is None:
        return None
    return abs(primal - dual) / max(GAP_DENOMINATOR_FLOOR, abs(primal))


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one solve.

    objective is the primal bound (value of the returned solution, including
    the objective constant), dual_bound the proven bound on the optimum (a
    lower bound when minimizing, an upper bound when maximizing), gap their
    relative distance. `limit` is the limit that stopped the search (None:
    the solver ended on its own). values[i] is the value of the variable with
    index i; values of integer variables are rounded to the nearest integer.
    """

    solver: str
    termination: Termination
    objective: float | None
    dual_bound: float | None
    gap: float | None
    seconds: float
    limit: Limit | None
    values: tuple[float, ...] | None
    message: str = ""

    @property
    def limit_hit(self) -> bool:
        return self.limit is not None

    @property
    def has_solution(self) -> bool:
        return self.values is not None

    def value(self, item: Variable | LinearExpr) -> float:
        """Value of a variable or expression in the returned solution."""
        if self.values is None:
            raise SolverError(f"{self.solver} returned no solution ({self.termination}): {self.message}")
        if isinstance(item, Variable):
            return self.values[item.index]
        if isinstance(item, LinearExpr):
            return item.value(self.values)
        raise TypeError(f"expected a Variable or LinearExpr, got {type(item).__name__}")

    def to_json(self) -> dict[str, object]:
        """Summary suitable for json.dumps (no solution values)."""
        return {
            "name": self.solver,
            "status": self.termination.value,
            "seconds": self.seconds,
            "gap": self.gap,
            "limit_hit": self.limit_hit,
            "limit": None if self.limit is None else self.limit.value,
            "objective": self.objective,
            "dual_bound": self.dual_bound,
        }
