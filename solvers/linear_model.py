"""Solver-neutral linear model: variables, affine expressions, constraints.

Constraints are stored row-wise in flat typed arrays (CSR layout), so a model
with 1e5 variables and 1e5 constraints builds in about a second and exports to
scipy.sparse without copying per-row Python objects.
"""

from __future__ import annotations

import itertools
import math
import numbers
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
from scipy import sparse

from .errors import ModelError

SENSES = ("<=", ">=", "==")

# Integer bounds are rounded inward with this slack so 2.9999999999 stays 3.
_INTEGRALITY_SLACK = 1e-9

_model_ids = itertools.count(1)


def _combined_owner(a: int | None, b: int | None) -> int | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    raise ModelError("cannot combine variables that belong to different models")


class LinearExpr:
    """An affine expression: sum(coef * var[index]) + constant.

    `terms` maps variable index to coefficient. Arithmetic never mutates its
    operands, so `a + b` costs O(len(a) + len(b)); sum long series with
    `quicksum`, which is linear in the total number of terms.
    """

    __slots__ = ("terms", "constant", "model_id")
    __array_ufunc__ = None  # make numpy scalars defer to our reflected operators

    def __init__(
        self,
        terms: Mapping[int, float] | None = None,
        constant: float = 0.0,
        model_id: int | None = None,
    ) -> None:
        self.terms: dict[int, float] = {int(k): float(v) for k, v in terms.items()} if terms else {}
        self.constant = float(constant)
        self.model_id = model_id

    @classmethod
    def _wrap(cls, terms: dict[int, float], constant: float, model_id: int | None) -> LinearExpr:
        expr = object.__new__(cls)
        expr.terms = terms
        expr.constant = constant
        expr.model_id = model_id
        return expr

    def _combine(self, other: LinearExpr, sign: float) -> LinearExpr:
        owner = _combined_owner(self.model_id, other.model_id)
        terms = dict(self.terms)
        get = terms.get
        for index, coef in other.terms.items():
            terms[index] = get(index, 0.0) + sign * coef
        return LinearExpr._wrap(terms, self.constant + sign * other.constant, owner)

    def _scaled(self, factor: float) -> LinearExpr:
        if factor == 0.0:
            return LinearExpr._wrap({}, 0.0, self.model_id)
        terms = {index: factor * coef for index, coef in self.terms.items()}
        return LinearExpr._wrap(terms, factor * self.constant, self.model_id)

    def _compare(self, other: object, sense: str) -> Constraint:
        rhs = as_expr(other)
        if rhs is None:
            return NotImplemented
        diff = self._combine(rhs, -1.0)
        lhs = LinearExpr._wrap(diff.terms, 0.0, diff.model_id)
        return Constraint(lhs, sense, -diff.constant)

    def __add__(self, other: object) -> LinearExpr:
        operand = as_expr(other)
        return NotImplemented if operand is None else self._combine(operand, 1.0)

    __radd__ = __add__

    def __sub__(self, other: object) -> LinearExpr:
        operand = as_expr(other)
        return NotImplemented if operand is None else self._combine(operand, -1.0)

    def __rsub__(self, other: object) -> LinearExpr:
        operand = as_expr(other)
        return NotImplemented if operand is None else operand._combine(self, -1.0)

    def __mul__(self, factor: object) -> LinearExpr:
        if not isinstance(factor, numbers.Real):
            return NotImplemented
        return self._scaled(float(factor))

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> LinearExpr:
        if not isinstance(divisor, numbers.Real):
            return NotImplemented
        return self._scaled(1.0 / float(divisor))

    def __neg__(self) -> LinearExpr:
        return self._scaled(-1.0)

    def __pos__(self) -> LinearExpr:
        return self

    def __le__(self, other: object) -> Constraint:
        return self._compare(other, "<=")

    def __ge__(self, other: object) -> Constraint:
        return self._compare(other, ">=")

    def __eq__(self, other: object) -> Constraint:  # type: ignore[override]
        return self._compare(other, "==")

    __hash__ = None  # type: ignore[assignment]

    def value(self, values: Sequence[float]) -> float:
        """Evaluate at a full assignment `values[var.index]`. O(len(terms))."""
        return self.constant + sum(coef * values[index] for index, coef in self.terms.items())

    def __repr__(self) -> str:
        parts = [f"{coef:g}*x{index}" for index, coef in self.terms.items()]
        if self.constant or not parts:
            parts.append(f"{self.constant:g}")
        return " + ".join(parts)


@dataclass(frozen=True, eq=False, slots=True)
class Variable:
    """A decision variable; obtain one from `LinearModel.add_var` or `LinearModel.add_binary`."""

    model_id: int
    index: int
    name: str

    __array_ufunc__ = None

    def __hash__(self) -> int:
        return hash((self.model_id, self.index))

    def to_expr(self) -> LinearExpr:
        return LinearExpr._wrap({self.index: 1.0}, 0.0, self.model_id)

    def __add__(self, other: object) -> LinearExpr:
        return self.to_expr().__add__(other)

    __radd__ = __add__

    def __sub__(self, other: object) -> LinearExpr:
        return self.to_expr().__sub__(other)

    def __rsub__(self, other: object) -> LinearExpr:
        return self.to_expr().__rsub__(other)

    def __mul__(self, factor: object) -> LinearExpr:
        return self.to_expr().__mul__(factor)

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> LinearExpr:
        return self.to_expr().__truediv__(divisor)

    def __neg__(self) -> LinearExpr:
        return LinearExpr._wrap({self.index: -1.0}, 0.0, self.model_id)

    def __pos__(self) -> LinearExpr:
        return self.to_expr()

    def __le__(self, other: object) -> Constraint:
        return self.to_expr().__le__(other)

    def __ge__(self, other: object) -> Constraint:
        return self.to_expr().__ge__(other)

    def __eq__(self, other: object) -> Constraint | bool:  # type: ignore[override]
        if not isinstance(other, Variable):
            return self.to_expr().__eq__(other)
        if other.model_id != self.model_id:
            return False  # no constraint can link two models; plain identity
        constraint = self.to_expr()._compare(other, "==")
        # Keeps `x == y` usable as a truth value (dict lookups, `in`).
        return Constraint(constraint.expr, constraint.sense, constraint.rhs, self is other)

    def __ne__(self, other: object) -> bool:  # type: ignore[override]
        return self is not other

    def __repr__(self) -> str:
        return f"Variable({self.name!r}, index={self.index})"


@dataclass(frozen=True, eq=False)
class Constraint:
    """`expr <sense> rhs` with the expression's constant folded into `rhs`.

    Built by comparing expressions (`x + y <= 3`); add it with `LinearModel.add`.
    """

    expr: LinearExpr
    sense: str
    rhs: float
    same_variable: bool | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        if self.same_variable is None:
            raise TypeError(
                "a Constraint has no truth value; pass it to LinearModel.add() "
                "(chained comparisons such as 0 <= x <= 1 are not supported)"
            )
        return self.same_variable


Operand = Union[LinearExpr, Variable, numbers.Real]


def as_expr(value: object) -> LinearExpr | None:
    """Coerce a variable, expression or real number to a LinearExpr (None otherwise)."""
    if isinstance(value, LinearExpr):
        return value
    if isinstance(value, Variable):
        return value.to_expr()
    if isinstance(value, numbers.Real):
        return LinearExpr._wrap({}, float(value), None)
    return None


def quicksum(items: Iterable[Operand]) -> LinearExpr:
    """Sum variables, expressions and numbers in time linear in the number of terms."""
    terms: dict[int, float] = {}
    get = terms.get
    constant = 0.0
    owner: int | None = None
    for item in items:
        if isinstance(item, Variable):
            if item.model_id != owner:
                owner = _combined_owner(owner, item.model_id)
            terms[item.index] = get(item.index, 0.0) + 1.0
        elif isinstance(item, LinearExpr):
            if item.model_id is not None and item.model_id != owner:
                owner = _combined_owner(owner, item.model_id)
            for index, coef in item.terms.items():
                terms[index] = get(index, 0.0) + coef
            constant += item.constant
        elif isinstance(item, numbers.Real):
            constant += float(item)
        else:
            raise TypeError(f"cannot sum object of type {type(item).__name__}")
    return LinearExpr._wrap(terms, constant, owner)


@dataclass(frozen=True)
class MatrixForm:
    """Arrays for: min/max c @ x + offset s.t. row_lb <= A @ x <= row_ub, var_lb <= x <= var_ub.

    `integrality[j]` is 1 for integer variables and 0 for continuous ones;
    infinite bounds are +-inf.
    """

    c: np.ndarray
    offset: float
    maximize: bool
    A: sparse.csr_array
    row_lb: np.ndarray
    row_ub: np.ndarray
    var_lb: np.ndarray
    var_ub: np.ndarray
    integrality: np.ndarray
    hint: np.ndarray | None = None  # a starting solution (NaN where none), see LinearModel.set_hint

    def variables(self) -> Iterator[tuple[int, float, float, bool]]:
        """(index, lower bound, upper bound, is integer) of every variable."""
        for j, (lb, ub, integer) in enumerate(zip(self.var_lb.tolist(), self.var_ub.tolist(),
                                                  self.integrality.tolist())):
            yield j, lb, ub, bool(integer)

    def rows(self) -> Iterator[tuple[int, float, float, list[tuple[int, float]]]]:
        """(index, lower bound, upper bound, [(variable, coefficient)]) of every non-empty row."""
        indptr, indices, coefs = self.A.indptr.tolist(), self.A.indices.tolist(), self.A.data.tolist()
        for row, (lb, ub) in enumerate(zip(self.row_lb.tolist(), self.row_ub.tolist())):
            start, end = indptr[row], indptr[row + 1]
            if start != end:
                yield row, lb, ub, list(zip(indices[start:end], coefs[start:end]))


def _first_non_finite(coefs: Iterable[float]) -> float | None:
    for coef in coefs:
        if not math.isfinite(coef):
            return coef
    return None


class LinearModel:
    """A linear (mixed-integer) program independent of any solver."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.model_id = next(_model_ids)
        self._vars: list[Variable] = []
        self._var_lb = array("d")
        self._var_ub = array("d")
        self._var_integer = array("b")
        self._indptr = array("q", [0])
        self._indices = array("q")
        self._coefs = array("d")
        self._row_lb = array("d")
        self._row_ub = array("d")
        self._row_names: list[str] = []
        self._objective = LinearExpr._wrap({}, 0.0, None)
        self._maximize = False
        self._hint: dict[int, float] = {}

    # ----- variables -------------------------------------------------------

    def add_var(
        self, name: str, lb: float = 0.0, ub: float = math.inf, integer: bool = False
    ) -> Variable:
        """Add a variable. Integer variables need finite bounds, which are rounded inward."""
        lb, ub = float(lb), float(ub)
        if math.isnan(lb) or math.isnan(ub):
            raise ModelError(f"variable {name!r}: bounds must not be NaN (got [{lb}, {ub}])")
        if lb == math.inf or ub == -math.inf:
            raise ModelError(f"variable {name!r}: empty domain [{lb}, {ub}]")
        if integer:
            if not (math.isfinite(lb) and math.isfinite(ub)):
                raise ModelError(
                    f"integer variable {name!r} needs finite bounds (got [{lb}, {ub}])"
                )
            lb = float(math.ceil(lb - _INTEGRALITY_SLACK))
            ub = float(math.floor(ub + _INTEGRALITY_SLACK))
        if lb > ub:
            raise ModelError(f"variable {name!r}: empty domain [{lb}, {ub}]")
        var = Variable(self.model_id, len(self._vars), name)
        self._vars.append(var)
        self._var_lb.append(lb)
        self._var_ub.append(ub)
        self._var_integer.append(1 if integer else 0)
        return var

    def add_binary(self, name: str) -> Variable:
        """Add a 0/1 integer variable."""
        return self.add_var(name, 0.0, 1.0, integer=True)

    def set_hint(self, values: Mapping[Variable, float]) -> None:
        """A starting solution (a warm start): solvers that take one (CP-SAT) begin their
        search from it; others ignore it. A partial hint is allowed."""
        for var, value in values.items():
            if var.model_id != self.model_id:
                raise ModelError("a hint names a variable of another model")
            self._hint[var.index] = float(value)

    # ----- constraints -----------------------------------------------------

    def add_constraint(self, expr: Operand, sense: str, rhs: Operand, name: str = "") -> int:
        """Add `expr <sense> rhs`; returns the row index. O(number of terms)."""
        lhs, right = as_expr(expr), as_expr(rhs)
        if lhs is None or right is None:
            raise TypeError("constraint sides must be variables, expressions or numbers")
        if right.terms:
            lhs = lhs._combine(right, -1.0)
            bound = -lhs.constant
        else:
            bound = right.constant - lhs.constant
        return self._append_row(lhs, sense, bound, name)

    def add(self, constraint: Constraint, name: str = "") -> int:
        """Add a Constraint built with comparison operators; returns the row index."""
        if not isinstance(constraint, Constraint):
            raise TypeError(
                f"LinearModel.add expects a Constraint, got {type(constraint).__name__}"
            )
        return self._append_row(constraint.expr, constraint.sense, constraint.rhs, name)

    def _append_row(self, lhs: LinearExpr, sense: str, bound: float, name: str) -> int:
        label = name or f"#{len(self._row_names)}"
        if sense not in SENSES:
            raise ModelError(f"constraint {label!r}: sense must be one of {SENSES}, got {sense!r}")
        self._check_terms(lhs, f"constraint {label!r}")
        if not math.isfinite(bound):
            raise ModelError(f"constraint {label!r}: right-hand side must be finite, got {bound}")
        self._indices.extend(lhs.terms.keys())
        self._coefs.extend(lhs.terms.values())
        self._indptr.append(len(self._indices))
        self._row_lb.append(bound if sense != "<=" else -math.inf)
        self._row_ub.append(bound if sense != ">=" else math.inf)
        self._row_names.append(name)
        return len(self._row_names) - 1

    def _check_terms(self, expr: LinearExpr, what: str) -> None:
        if expr.model_id is not None and expr.model_id != self.model_id:
            raise ModelError(f"{what} uses variables of another model")
        if not expr.terms:
            return
        if expr.model_id is None:
            low, high = min(expr.terms), max(expr.terms)
            if low < 0 or high >= len(self._vars):
                raise ModelError(f"{what} refers to variable index outside 0..{len(self._vars) - 1}")
        if not math.isfinite(sum(expr.terms.values())):
            bad = _first_non_finite(expr.terms.values())
            if bad is not None:
                raise ModelError(f"{what} has a non-finite coefficient ({bad})")

    # ----- objective -------------------------------------------------------

    def minimize(self, expr: Operand) -> None:
        """Set the objective to minimize `expr`."""
        self._set_objective(expr, maximize=False)

    def maximize(self, expr: Operand) -> None:
        """Set the objective to maximize `expr`."""
        self._set_objective(expr, maximize=True)

    def _set_objective(self, expr: Operand, maximize: bool) -> None:
        objective = as_expr(expr)
        if objective is None:
            raise TypeError("objective must be a variable, expression or number")
        self._check_terms(objective, "objective")
        if not math.isfinite(objective.constant):
            raise ModelError(f"objective constant must be finite, got {objective.constant}")
        self._objective = objective
        self._maximize = maximize

    # ----- inspection ------------------------------------------------------

    @property
    def num_vars(self) -> int:
        return len(self._vars)

    @property
    def num_constraints(self) -> int:
        return len(self._row_names)

    @property
    def num_nonzeros(self) -> int:
        return len(self._indices)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(self._vars)

    @property
    def objective(self) -> LinearExpr:
        return self._objective

    @property
    def maximizing(self) -> bool:
        return self._maximize

    @property
    def is_mip(self) -> bool:
        """True if any variable is integer."""
        return any(self._var_integer)

    @property
    def is_pure_integer(self) -> bool:
        """True if every variable is integer (vacuously true for an empty model)."""
        return all(self._var_integer)

    def bounds(self, var: Variable) -> tuple[float, float]:
        return self._var_lb[var.index], self._var_ub[var.index]

    def is_integer(self, var: Variable) -> bool:
        return bool(self._var_integer[var.index])

    def constraint_name(self, row: int) -> str:
        return self._row_names[row] or f"#{row}"

    def has_integral_coefficients(self) -> bool:
        """True if every constraint and objective coefficient is an integer. O(nnz)."""
        coefs = np.array(self._coefs, dtype=np.float64)
        objective = np.fromiter(self._objective.terms.values(), dtype=np.float64)
        return bool(np.all(coefs == np.round(coefs)) and np.all(objective == np.round(objective)))

    def to_matrix(self) -> MatrixForm:
        """Export to sparse matrix form. O(num_vars + nnz); arrays are copies."""
        n, m = self.num_vars, self.num_constraints
        c = np.zeros(n)
        if self._objective.terms:
            c[np.fromiter(self._objective.terms.keys(), dtype=np.int64)] = np.fromiter(
                self._objective.terms.values(), dtype=np.float64
            )
        A = sparse.csr_array(
            (
                np.array(self._coefs, dtype=np.float64),
                np.array(self._indices, dtype=np.int64),
                np.array(self._indptr, dtype=np.int64),
            ),
            shape=(m, n),
        )
        return MatrixForm(
            c=c,
            offset=self._objective.constant,
            maximize=self._maximize,
            A=A,
            row_lb=np.array(self._row_lb, dtype=np.float64),
            row_ub=np.array(self._row_ub, dtype=np.float64),
            var_lb=np.array(self._var_lb, dtype=np.float64),
            var_ub=np.array(self._var_ub, dtype=np.float64),
            integrality=np.array(self._var_integer, dtype=np.uint8),
            hint=self._hint_array(n),
        )

    def _hint_array(self, n: int) -> np.ndarray | None:
        if not self._hint:
            return None
        hint = np.full(n, np.nan)
        hint[np.fromiter(self._hint.keys(), dtype=np.int64)] = np.fromiter(self._hint.values(), dtype=np.float64)
        return hint

    def max_violation(self, values: Sequence[float]) -> float:
        """Largest bound, row or integrality violation of an assignment (0.0 if feasible)."""
        form = self.to_matrix()
        x = np.asarray(values, dtype=np.float64)
        if x.shape != (self.num_vars,):
            raise ValueError(f"expected {self.num_vars} values, got shape {x.shape}")
        activity = form.A @ x
        violations = [
            form.row_lb - activity,
            activity - form.row_ub,
            form.var_lb - x,
            x - form.var_ub,
            np.where(form.integrality == 1, np.abs(x - np.round(x)), 0.0),
        ]
        return float(max(0.0, *(float(v.max(initial=0.0)) for v in violations)))

    def __repr__(self) -> str:
        kind = "MIP" if self.is_mip else "LP"
        return (
            f"LinearModel({self.name!r}, {kind}, vars={self.num_vars}, "
            f"constraints={self.num_constraints}, nnz={self.num_nonzeros})"
        )
