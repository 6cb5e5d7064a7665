"""One conformance suite that every registered backend must pass.

Tests are parametrized over the available backends, filtered by capability:
integer models run on backends with supports_integer, continuous models on
backends with supports_continuous, mixed models on backends with both.
Expected optima come from brute force or from scipy computed independently
of the model layer.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment, linprog

import solvers
from solvers import (
    Constraint,
    LinearExpr,
    LinearModel,
    ModelError,
    SolveOptions,
    SolveResult,
    Termination,
    UnknownSolver,
    UnsupportedModel,
    quicksum,
)

BACKENDS = solvers.available()
INTEGER_BACKENDS = [name for name in BACKENDS if solvers.get(name).supports_integer]
CONTINUOUS_BACKENDS = [name for name in BACKENDS if solvers.get(name).supports_continuous]
MIXED_BACKENDS = [name for name in INTEGER_BACKENDS if name in CONTINUOUS_BACKENDS]

# PDLP is a first-order method; its "optimal" is within ~1e-6 relative KKT error.
LOOSE_BACKENDS = {"pdlp"}


def tolerance(solver: str) -> float:
    return 1e-4 if solver in LOOSE_BACKENDS else 1e-6


def check_invariants(result: SolveResult) -> None:
    """Rules every result must obey, whatever the model."""
    assert isinstance(result.termination, Termination)
    assert result.seconds >= 0
    if result.limit_hit:
        assert result.termination in (Termination.feasible, Termination.no_solution)
    if result.termination in (Termination.optimal, Termination.feasible):
        assert result.values is not None and result.objective is not None
    else:
        assert result.values is None and result.objective is None
    if result.gap is not None:
        assert result.gap >= 0
    json.dumps(result.to_json())


def assert_optimal(result: SolveResult, model: LinearModel, expected: float) -> None:
    check_invariants(result)
    tol = tolerance(result.solver)
    assert result.termination is Termination.optimal, result.message
    assert not result.limit_hit
    assert result.objective == pytest.approx(expected, rel=tol, abs=tol)
    assert result.dual_bound == pytest.approx(result.objective, rel=1e-5, abs=1e-5)
    assert result.gap is not None and result.gap <= max(1e-5, tol)
    assert model.max_violation(result.values) <= tol * 10


# ----- instances ------------------------------------------------------------


def knapsack_data(n: int = 14, seed: int = 7) -> tuple[list[int], list[int], int]:
    rng = random.Random(seed)
    weights = [rng.randint(5, 40) for _ in range(n)]
    values = [w + rng.randint(-4, 10) for w in weights]
    return weights, values, int(0.4 * sum(weights))


def knapsack_brute_force(weights: list[int], values: list[int], capacity: int) -> int:
    n = len(weights)
    subsets = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    fits = subsets @ np.array(weights) <= capacity
    return int((subsets @ np.array(values))[fits].max())


def knapsack_model(weights: list[int], values: list[int], capacity: int) -> tuple[LinearModel, list]:
    model = LinearModel("knapsack")
    take = [model.add_binary(f"take[{i}]") for i in range(len(weights))]
    model.add(quicksum(w * x for w, x in zip(weights, take)) <= capacity, name="capacity")
    model.maximize(quicksum(v * x for v, x in zip(values, take)))
    return model, take


def assignment_costs(n: int = 6, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 100, size=(n, n))


def assignment_model(costs: np.ndarray, integer: bool) -> LinearModel:
    n = costs.shape[0]
    model = LinearModel("assignment")
    x = [[model.add_var(f"x[{i},{j}]", 0, 1, integer=integer) for j in range(n)] for i in range(n)]
    for i in range(n):
        model.add(quicksum(x[i]) == 1, name=f"worker{i}")
        model.add(quicksum(x[k][i] for k in range(n)) == 1, name=f"task{i}")
    model.minimize(quicksum(int(costs[i, j]) * x[i][j] for i in range(n) for j in range(n)))
    return model


# (tail, head, capacity, unit cost) and (source, sink, demand); fractional data
# so the optimum is fractional.
FLOW_ARCS = [
    (0, 1, 2.5, 1.0), (0, 2, 2.0, 2.0), (1, 2, 1.0, 1.0), (1, 3, 1.5, 3.0),
    (2, 3, 2.5, 1.0), (2, 4, 1.75, 4.0), (3, 4, 3.0, 1.0), (1, 4, 1.0, 6.0),
]
FLOW_COMMODITIES = [(0, 4, 2.5), (1, 3, 1.25), (0, 3, 1.0)]
FLOW_NODES = 5


def flow_reference_optimum() -> float:
    """Multicommodity min-cost flow solved by scipy.linprog on hand-built matrices."""
    n_arcs, n_com = len(FLOW_ARCS), len(FLOW_COMMODITIES)
    cost = np.array([arc[3] for arc in FLOW_ARCS] * n_com)
    a_eq, b_eq = [], []
    for k, (source, sink, demand) in enumerate(FLOW_COMMODITIES):
        for node in range(FLOW_NODES):
            row = np.zeros(n_arcs * n_com)
            for a, (tail, head, _, _) in enumerate(FLOW_ARCS):
                row[k * n_arcs + a] = (tail == node) - (head == node)
            a_eq.append(row)
            b_eq.append(demand if node == source else -demand if node == sink else 0.0)
    a_ub = np.zeros((n_arcs, n_arcs * n_com))
    for a in range(n_arcs):
        a_ub[a, a::n_arcs] = 1.0
    b_ub = [arc[2] for arc in FLOW_ARCS]
    reference = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
    assert reference.status == 0
    return float(reference.fun)


def flow_model() -> LinearModel:
    model = LinearModel("multicommodity")
    flow = {
        (k, a): model.add_var(f"f[{k},{a}]")
        for k in range(len(FLOW_COMMODITIES))
        for a in range(len(FLOW_ARCS))
    }
    for k, (source, sink, demand) in enumerate(FLOW_COMMODITIES):
        for node in range(FLOW_NODES):
            out_flow = quicksum(flow[k, a] for a, arc in enumerate(FLOW_ARCS) if arc[0] == node)
            in_flow = quicksum(flow[k, a] for a, arc in enumerate(FLOW_ARCS) if arc[1] == node)
            supply = demand if node == source else -demand if node == sink else 0.0
            model.add(out_flow - in_flow == supply)
    for a, (_, _, capacity, _) in enumerate(FLOW_ARCS):
        model.add(quicksum(flow[k, a] for k in range(len(FLOW_COMMODITIES))) <= capacity)
    model.minimize(quicksum(FLOW_ARCS[a][3] * var for (k, a), var in flow.items()))
    return model


def infeasible_model(integer: bool) -> LinearModel:
    model = LinearModel("infeasible")
    x = model.add_var("x", 0, 10, integer=integer)
    y = model.add_var("y", 0, 10, integer=integer)
    model.add(x + y >= 5)
    model.add(x + 2 * y <= 3)
    model.minimize(x + y)
    return model


def market_split_data(rows: int = 4, cols: int = 30, seed: int = 11) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(seed)
    coefs = [[rng.randint(0, 99) for _ in range(cols)] for _ in range(rows)]
    return coefs, [sum(row) // 2 for row in coefs]


def has_zero_slack_split(coefs: list[list[int]], targets: list[int]) -> bool:
    """Meet in the middle over the two halves of the columns: O(2^(n/2))."""
    matrix = np.array(coefs)
    half = matrix.shape[1] // 2

    def sums(block: np.ndarray) -> np.ndarray:
        k = block.shape[1]
        subsets = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
        return subsets @ block.T

    left = {tuple(row) for row in sums(matrix[:, :half]).tolist()}
    needed = np.array(targets) - sums(matrix[:, half:])
    return any(tuple(row) in left for row in needed.tolist())


def market_split_model(coefs: list[list[int]], targets: list[int]) -> LinearModel:
    """Cornuejols-Dawande market split, minimizing total slack: LP bound 0, very hard to close."""
    model = LinearModel("market split")
    x = [model.add_binary(f"x{j}") for j in range(len(coefs[0]))]
    slacks = []
    for i, (row, target) in enumerate(zip(coefs, targets)):
        over = model.add_var(f"over{i}", 0, sum(row), integer=True)
        under = model.add_var(f"under{i}", 0, sum(row), integer=True)
        model.add(quicksum(a * xj for a, xj in zip(row, x)) - over + under == target)
        slacks += [over, under]
    model.minimize(quicksum(slacks))
    return model


def signs_model(integer: bool, maximize: bool) -> tuple[LinearModel, list]:
    """Equality, negative lower bounds and an objective constant."""
    model = LinearModel("signs")
    x = model.add_var("x", -5, 5, integer=integer)
    y = model.add_var("y", -4, 6, integer=integer)
    z = model.add_var("z", -3, 3, integer=integer)
    model.add(x + y + z == 2)
    model.add(x - 2 * y <= 3)
    model.add(2 * x + z >= -6)
    objective = 3 * x - 2 * y + z + 7.5
    (model.maximize if maximize else model.minimize)(objective)
    return model, [x, y, z]


def signs_reference(integer: bool, maximize: bool) -> float:
    c = np.array([3.0, -2.0, 1.0])
    bounds = [(-5, 5), (-4, 6), (-3, 3)]
    if integer:
        best = None
        for x, y, z in itertools.product(*(range(lo, hi + 1) for lo, hi in bounds)):
            if x + y + z == 2 and x - 2 * y <= 3 and 2 * x + z >= -6:
                value = 3 * x - 2 * y + z + 7.5
                best = value if best is None else (max if maximize else min)(best, value)
        return best
    sign = -1.0 if maximize else 1.0
    reference = linprog(
        sign * c, A_ub=[[1, -2, 0], [-2, 0, -1]], b_ub=[3, 6], A_eq=[[1, 1, 1]], b_eq=[2], bounds=bounds
    )
    assert reference.status == 0
    return sign * reference.fun + 7.5


# ----- 1. knapsack ------------------------------------------------------------


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_knapsack_matches_brute_force(solver):
    weights, values, capacity = knapsack_data()
    model, take = knapsack_model(weights, values, capacity)
    result = solvers.solve(model, solver)
    assert_optimal(result, model, knapsack_brute_force(weights, values, capacity))
    chosen = [i for i, x in enumerate(take) if result.value(x) == 1.0]
    assert sum(weights[i] for i in chosen) <= capacity
    assert sum(values[i] for i in chosen) == result.objective


# ----- 2. assignment ----------------------------------------------------------


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_assignment_matches_linear_sum_assignment(solver):
    costs = assignment_costs()
    rows, cols = linear_sum_assignment(costs)
    model = assignment_model(costs, integer=True)
    assert_optimal(solvers.solve(model, solver), model, costs[rows, cols].sum())


@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_assignment_lp_relaxation_is_integral(solver):
    costs = assignment_costs(seed=5)
    rows, cols = linear_sum_assignment(costs)
    model = assignment_model(costs, integer=False)
    assert_optimal(solvers.solve(model, solver), model, costs[rows, cols].sum())


# ----- 3. multicommodity flow LP ---------------------------------------------------


def test_flow_reference_is_fractional():
    optimum = flow_reference_optimum()
    assert abs(optimum - round(optimum)) > 1e-3


@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_multicommodity_flow_lp(solver):
    model = flow_model()
    assert_optimal(solvers.solve(model, solver), model, flow_reference_optimum())


# ----- 4. infeasible and unbounded --------------------------------------------------


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_infeasible_integer_model(solver):
    result = solvers.solve(infeasible_model(integer=True), solver)
    check_invariants(result)
    assert result.termination is Termination.infeasible
    assert not result.limit_hit


@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_infeasible_lp(solver):
    result = solvers.solve(infeasible_model(integer=False), solver)
    check_invariants(result)
    assert result.termination is Termination.infeasible


@pytest.mark.parametrize("solver", BACKENDS)
def test_constraint_without_variables_that_fails_is_infeasible(solver):
    model = LinearModel()
    x = model.add_var("x", 0, 1, integer=not solvers.get(solver).supports_continuous)
    model.add(x - x >= 1)
    result = solvers.solve(model, solver)
    check_invariants(result)
    assert result.termination is Termination.infeasible


@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_unbounded_lp_is_never_reported_solved(solver):
    model = LinearModel()
    x = model.add_var("x", 0, 10)
    y = model.add_var("y", 0)
    model.add(x - y <= 2)
    model.maximize(x + y)
    result = solvers.solve(model, solver)
    check_invariants(result)
    # PDLP cannot tell "unbounded" from "dual infeasible" through OR-Tools: error.
    expected = {Termination.unbounded, Termination.error} if solver == "pdlp" else {Termination.unbounded}
    assert result.termination in expected


# ----- 5. time limit ------------------------------------------------------------------


def test_market_split_instance_has_no_zero_slack_solution():
    # So no solver can finish early by finding an objective-0 solution.
    assert not has_zero_slack_split(*market_split_data())


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_time_limited_hard_instance_is_not_reported_optimal(solver):
    model = market_split_model(*market_split_data())
    result = solvers.solve(model, solver, SolveOptions(time_limit_s=0.1))
    check_invariants(result)
    assert result.limit_hit, result
    assert result.termination in (Termination.feasible, Termination.no_solution)
    if result.termination is Termination.feasible:
        assert model.max_violation(result.values) <= 1e-6
        assert result.objective >= 1
        if result.dual_bound is not None:
            assert result.dual_bound <= result.objective + 1e-6
            assert result.gap > 1e-6


@pytest.mark.slow
def test_cbc_is_stopped_when_it_overruns_its_time_limit():
    # CBC's greedy-cover heuristic ignores -sec for many seconds on this model.
    n = 20_000
    model = LinearModel("cbc overrun")
    xs = [model.add_var(f"x{j}", 0, 10, integer=True) for j in range(n)]
    for j in range(n):
        model.add(xs[j] + 2 * xs[(j + 1) % n] + xs[(j + 7) % n] >= 3)
    model.minimize(quicksum(xs))
    result = solvers.solve(model, "cbc", SolveOptions(time_limit_s=0.2))
    check_invariants(result)
    assert result.limit_hit
    assert result.termination in (Termination.feasible, Termination.no_solution)


# ----- 6. sense, equalities, negative bounds, objective constant ----------------------


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_signs_integer(solver, maximize):
    model, _ = signs_model(integer=True, maximize=maximize)
    assert_optimal(solvers.solve(model, solver), model, signs_reference(True, maximize))


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_signs_continuous(solver, maximize):
    model, _ = signs_model(integer=False, maximize=maximize)
    assert_optimal(solvers.solve(model, solver), model, signs_reference(False, maximize))


@pytest.mark.parametrize("solver", MIXED_BACKENDS)
def test_mixed_integer_with_continuous_variables(solver):
    # max 5a + 4b + c with a integer; LP optimum has fractional a.
    model = LinearModel("mixed")
    a = model.add_var("a", 0, 10, integer=True)
    b = model.add_var("b", 0, 3.5)
    c = model.add_var("c", -2, 2)
    model.add(2 * a + b <= 7.7)
    model.add(a + c <= 3.2)
    model.maximize(5 * a + 4 * b + c)
    # a in 0..3; for each a: b = min(3.5, 7.7 - 2a), c = min(2, 3.2 - a).
    best = max(5 * k + 4 * min(3.5, 7.7 - 2 * k) + min(2, 3.2 - k) for k in range(4))
    assert_optimal(solvers.solve(model, solver), model, best)


# ----- 7. gap and dual bound --------------------------------------------------------


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_optimal_mip_gap_and_dual_bound(solver):
    weights, values, capacity = knapsack_data(n=12, seed=21)
    model, _ = knapsack_model(weights, values, capacity)
    result = solvers.solve(model, solver, SolveOptions(rel_gap=0.0))
    assert_optimal(result, model, knapsack_brute_force(weights, values, capacity))
    assert result.gap <= 1e-6
    assert result.dual_bound >= result.objective - 1e-6  # maximizing: bound from above
    summary = result.to_json()
    assert set(summary) == {"name", "status", "seconds", "gap", "limit_hit", "limit", "objective", "dual_bound"}
    assert summary["limit"] is None and summary["limit_hit"] is False
    assert summary["name"] == solver and summary["status"] == "optimal"


def test_relative_gap_formula():
    assert solvers.relative_gap(10.0, 8.0) == pytest.approx(0.2)
    assert solvers.relative_gap(0.0, 0.0) == 0.0
    assert solvers.relative_gap(None, 1.0) is None


# ----- 8. registry and model errors ---------------------------------------------------


def test_all_expected_backends_available():
    names = solvers.available()
    assert names == sorted(names)
    assert {"cpsat", "scip", "highs", "cbc"} <= set(INTEGER_BACKENDS)
    assert {"glop", "pdlp"} <= set(CONTINUOUS_BACKENDS)
    assert not solvers.get("glop").supports_integer and not solvers.get("pdlp").supports_integer
    assert not solvers.get("cpsat").supports_continuous


def test_unknown_solver_lists_available_names():
    with pytest.raises(UnknownSolver, match="cpsat"):
        solvers.get("gurobi-please")
    with pytest.raises(UnknownSolver):
        solvers.solve(LinearModel(), "nope")


def test_register_rejects_duplicate_names():
    with pytest.raises(ValueError):
        solvers.register(solvers.get("highs"))


def test_default_for():
    pure = LinearModel()
    x = pure.add_var("x", 0, 5, integer=True)
    pure.maximize(2 * x)
    assert solvers.default_for(pure) == "cpsat"
    assert solvers.solve(pure).solver == "cpsat"

    fractional = LinearModel()
    y = fractional.add_var("y", 0, 5, integer=True)
    fractional.add(0.5 * y <= 2)
    assert solvers.default_for(fractional) == "highs"

    mixed = LinearModel()
    mixed.add_var("i", 0, 5, integer=True)
    mixed.add_var("c", 0, 5)
    assert solvers.default_for(mixed) == "highs"

    lp = LinearModel()
    lp.add_var("c", 0, 5)
    assert solvers.default_for(lp) == "highs"


def test_unsupported_models_are_rejected():
    lp = LinearModel()
    lp.add_var("c", 0, 1)
    with pytest.raises(UnsupportedModel):
        solvers.get("cpsat").solve(lp)
    fractional = LinearModel()
    y = fractional.add_var("y", 0, 5, integer=True)
    fractional.maximize(0.5 * y)
    with pytest.raises(UnsupportedModel):
        solvers.get("cpsat").solve(fractional)
    for name in ("glop", "pdlp"):
        with pytest.raises(UnsupportedModel):
            solvers.get(name).solve(fractional)


def test_model_errors():
    model = LinearModel()
    with pytest.raises(ModelError, match="'n'"):
        model.add_var("n", 0, math.inf, integer=True)
    with pytest.raises(ModelError, match="'m'"):
        model.add_var("m", -math.inf, 3, integer=True)
    with pytest.raises(ModelError):
        model.add_var("empty", 3, 2)
    with pytest.raises(ModelError):
        model.add_var("nan", math.nan, 1)
    x = model.add_var("x", 0, 1)
    with pytest.raises(ModelError, match="non-finite"):
        model.add(math.nan * x <= 1)
    with pytest.raises(ModelError, match="non-finite"):
        model.add_constraint(x * math.inf, "<=", 1)
    with pytest.raises(ModelError):
        model.add_constraint(x, "<=", math.nan)
    with pytest.raises(ModelError):
        model.add_constraint(x, "<", 1)
    with pytest.raises(ModelError):
        model.minimize(math.nan * x)
    other = LinearModel()
    w = other.add_var("w", 0, 1)
    with pytest.raises(ModelError, match="different models"):
        x + w
    with pytest.raises(ModelError, match="another model"):
        model.add(w <= 1)
    assert model.num_constraints == 0
    model.add_var("free", -math.inf, math.inf)  # continuous variables may be free


# ----- 9. determinism ---------------------------------------------------------------


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
def test_repeated_mip_solves_are_identical(solver):
    # Ties in the costs make several optimal assignments; the same one must come back.
    costs = np.random.default_rng(0).integers(1, 4, size=(6, 6))
    model = assignment_model(costs, integer=True)
    options = SolveOptions(threads=1, seed=0)
    first, second = solvers.solve(model, solver, options), solvers.solve(model, solver, options)
    assert first.termination is Termination.optimal
    assert first.values == second.values and first.objective == second.objective


@pytest.mark.parametrize("solver", CONTINUOUS_BACKENDS)
def test_repeated_lp_solves_are_identical(solver):
    model = flow_model()
    first, second = solvers.solve(model, solver), solvers.solve(model, solver)
    assert first.termination is Termination.optimal
    assert first.values == second.values


# ----- randomized cross-check against brute force ------------------------------------


@st.composite
def small_integer_programs(draw):
    n = draw(st.integers(1, 4))
    bounds = [tuple(sorted(draw(st.lists(st.integers(-3, 3), min_size=2, max_size=2)))) for _ in range(n)]
    coef = st.integers(-4, 4)
    row = st.tuples(
        st.lists(coef, min_size=n, max_size=n), st.sampled_from(["<=", ">=", "=="]), st.integers(-6, 6)
    )
    rows = draw(st.lists(row, max_size=4))
    objective = draw(st.lists(coef, min_size=n, max_size=n))
    return bounds, rows, objective, draw(st.booleans())


@pytest.mark.parametrize("solver", INTEGER_BACKENDS)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=small_integer_programs())
def test_random_integer_programs_match_brute_force(solver, program):
    bounds, rows, objective, maximize = program
    model = LinearModel()
    xs = [model.add_var(f"x{j}", lo, hi, integer=True) for j, (lo, hi) in enumerate(bounds)]
    for coefs, sense, rhs in rows:
        model.add_constraint(quicksum(a * x for a, x in zip(coefs, xs)), sense, rhs)
    (model.maximize if maximize else model.minimize)(quicksum(c * x for c, x in zip(objective, xs)) + 1)

    holds = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b}
    best = None
    for point in itertools.product(*(range(lo, hi + 1) for lo, hi in bounds)):
        if all(holds[s](sum(a * v for a, v in zip(c, point)), r) for c, s, r in rows):
            value = sum(c * v for c, v in zip(objective, point)) + 1
            best = value if best is None else (max if maximize else min)(best, value)

    result = solvers.solve(model, solver)
    check_invariants(result)
    if best is None:
        assert result.termination is Termination.infeasible
    else:
        assert_optimal(result, model, best)


# ----- model layer ---------------------------------------------------------------------


def test_expression_arithmetic():
    model = LinearModel()
    x, y = model.add_var("x", -1, 1), model.add_var("y", 0, 2)
    expr = 2 * x + 3 * y - x + 4 - y / 2
    assert expr.terms == {x.index: 1.0, y.index: 2.5} and expr.constant == 4.0
    assert (-(x - 1)).terms == {x.index: -1.0} and (-(x - 1)).constant == 1.0
    assert sum([x, y, 1]).terms == quicksum([x, y, 1]).terms
    assert quicksum([x, 2 * y, 3, x]).terms == {x.index: 2.0, y.index: 2.0}
    assert (np.float64(2.0) * x).terms == {x.index: 2.0}
    assert (x * np.int64(3)).terms == {x.index: 3.0}
    assert expr.value([1.0, 2.0]) == pytest.approx(1 + 5 + 4)
    with pytest.raises(TypeError):
        x * y
    with pytest.raises(TypeError):
        quicksum([x, "y"])


def test_comparisons_build_constraints():
    model = LinearModel()
    x, y = model.add_var("x"), model.add_var("y")
    constraint = 3 <= x + 1
    assert isinstance(constraint, Constraint)
    assert constraint.sense == ">=" and constraint.rhs == 2.0
    assert (x + 2 <= y).sense == "<=" and (x + 2 <= y).rhs == -2.0
    assert (x == 4).sense == "=="
    with pytest.raises(TypeError):
        0 <= x <= 1
    # Variables stay usable as dict keys and in membership tests.
    assert {x: 1, y: 2}[y] == 2 and x in [y, x] and x != y and not (x == y)
    row = model.add(x + 2 <= y, name="gap")
    assert row == 0 and model.constraint_name(row) == "gap"
    with pytest.raises(TypeError):
        model.add(x)


def test_matrix_export():
    model = LinearModel()
    x = model.add_var("x", -1, 4)
    i = model.add_var("i", 0.5, 3.7, integer=True)
    model.add(2 * x - i >= 1)
    model.add_constraint(x + i, "==", 3)
    model.add(x <= 2 + i)
    model.maximize(x - 3 * i + 2)
    form = model.to_matrix()
    np.testing.assert_array_equal(form.A.toarray(), [[2, -1], [1, 1], [1, -1]])
    np.testing.assert_array_equal(form.row_lb, [1, 3, -np.inf])
    np.testing.assert_array_equal(form.row_ub, [np.inf, 3, 2])
    np.testing.assert_array_equal(form.c, [1, -3])
    np.testing.assert_array_equal(form.var_lb, [-1, 1])  # integer bounds rounded inward
    np.testing.assert_array_equal(form.var_ub, [4, 3])
    np.testing.assert_array_equal(form.integrality, [0, 1])
    assert form.offset == 2 and form.maximize
    assert model.is_mip and not model.is_pure_integer and model.num_nonzeros == 6
    assert model.max_violation([2.0, 1.0]) == 0.0
    assert model.max_violation([2.0, 1.5]) == pytest.approx(0.5)


@pytest.mark.slow
def test_large_model_builds():
    n = 100_000
    model = LinearModel("large")
    xs = [model.add_var(f"x{j}", 0, 10) for j in range(n)]
    for j in range(n):
        model.add(xs[j] + 2 * xs[(j + 1) % n] - xs[(j + 7) % n] <= 5)
    model.minimize(quicksum(xs))
    form = model.to_matrix()
    assert form.A.shape == (n, n) and form.A.nnz == 3 * n


def test_solve_options_validation():
    with pytest.raises(ValueError):
        SolveOptions(time_limit_s=0)
    with pytest.raises(ValueError):
        SolveOptions(threads=0)
    with pytest.raises(ValueError):
        SolveOptions(rel_gap=-1)


def test_result_value_helpers():
    model, take = knapsack_model([3, 4], [5, 6], 5)
    result = solvers.solve(model, "cpsat")
    assert result.value(take[1]) == 1.0
    assert result.value(5 * take[0] + 6 * take[1]) == result.objective == 6.0
    infeasible = solvers.solve(infeasible_model(True), "cpsat")
    with pytest.raises(solvers.SolverError):
        infeasible.value(take[0])


def test_empty_model_is_trivially_optimal():
    model = LinearModel()
    model.minimize(LinearExpr(constant=3.0))
    result = solvers.solve(model, "highs")
    assert result.termination is Termination.optimal and result.objective == 3.0


def test_cbc_leaves_no_files_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scratch = tempfile.gettempdir()
    before = {entry for entry in os.listdir(scratch) if entry.startswith("planner-cbc-")}
    model = market_split_model(*market_split_data(rows=2, cols=10))
    solvers.solve(model, "cbc")
    after = {entry for entry in os.listdir(scratch) if entry.startswith("planner-cbc-")}
    assert after <= before
    assert list(tmp_path.iterdir()) == []


def test_highs_proves_a_small_infeasible_integer_program_its_presolve_trips_on():
    """x1 + 2 x2 + 2 x3 = 1 with x1, x2 fixed at 0 and x3 in [-1, 1] integer: HiGHS's MIP
    presolve ends in a solve error; the backend retries without presolve (found by
    test_random_integer_programs_match_brute_force)."""
    model = LinearModel()
    xs = [model.add_var(f"x{j}", lo, hi, integer=True) for j, (lo, hi) in enumerate([(0, 0), (0, 0), (0, 0), (-1, 1)])]
    model.add_constraint(quicksum(a * x for a, x in zip([0, 1, 2, 2], xs)), "==", 1)
    model.minimize(quicksum(xs) + 1)
    assert solvers.solve(model, "highs").termination is Termination.infeasible
