"""Serving replicas over a heterogeneous GPU pool: how many of each configuration, in which
role, and how the traffic splits over them (a MILP, after Melange and HexGen-2's
formulations, with DistServe's prefill/decode disaggregation in the same model).

Given options j (a GPU type t_j, g_j GPUs, price p_j per GPU-hour, role colocated |
prefill | decode, capacity c_j requests/s in that role, its network's share already in
it), the GPUs A_t of each type, the rate R (objective `cost`) or the budget B (objective
`goodput`):

    n_j in Z+ replicas;  x_j >= 0 the requests/s option j serves (prefill/decode: handles)
    x_j <= c_j n_j;   sum_{j of type t} g_j n_j <= A_t
    sum_{prefill j} x_j = sum_{decode j} x_j        (every prefilled request is decoded)
    served = sum_{colocated j} x_j + sum_{prefill j} x_j;   cost = sum_j p_j g_j n_j
    cost:    min cost - eps served   s.t. served >= R   (and cost <= B when a budget is given)
    goodput: max served - eps cost   s.t. cost <= B

The LP relaxation (n_j continuous) is solved too: its optimum bounds the MILP's (a lower
bound on cost, an upper bound on goodput) under the same capacities. 2 x options
variables and options + types + 3 rows; solved by the registry's MILP default (HiGHS).
"""
from __future__ import annotations

from dataclasses import dataclass

from solvers import registry
from solvers.linear_model import LinearModel, quicksum
from solvers.result import SolveOptions, SolveResult

TIE_WEIGHT = 1e-6  # the second objective (served rate, or cost) only breaks ties


@dataclass(frozen=True)
class ServingOption:
    gpu: str
    gpus: int
    price_per_gpu_hour: float
    role: str
    capacity_rps: float
    max_count: int


@dataclass(frozen=True)
class ServingInputs:
    options: tuple[ServingOption, ...]
    available: tuple[tuple[str, int], ...]
    objective: str  # cost | goodput
    rate_rps: float
    budget_per_hour: float | None
    hint: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ServingSolution:
    counts: tuple[int, ...] | None
    served: tuple[float, ...] | None
    result: SolveResult
    relaxed: SolveResult
    bound: float | None  # the least cost or most goodput of any plan under these capacities (LP, dual bound)
    variables: int
    constraints: int


def build(inputs: ServingInputs, relax: bool = False) -> tuple:
    model = LinearModel("serving-replicas" + ("-lp" if relax else ""))
    opts = inputs.options
    n = [model.add_var(f"n{j}", 0, o.max_count, integer=not relax) for j, o in enumerate(opts)]
    x = [model.add_var(f"x{j}", 0, o.capacity_rps * o.max_count) for j, o in enumerate(opts)]
    for j, o in enumerate(opts):
        model.add_constraint(x[j] - o.capacity_rps * n[j], "<=", 0)
    for gpu, count in inputs.available:
        members = [j for j, o in enumerate(opts) if o.gpu == gpu]
        if members:
            model.add_constraint(quicksum(opts[j].gpus * n[j] for j in members), "<=", count)
    prefill = [x[j] for j, o in enumerate(opts) if o.role == "prefill"]
    decode = [x[j] for j, o in enumerate(opts) if o.role == "decode"]
    if prefill or decode:
        model.add_constraint(quicksum(prefill) - quicksum(decode), "==", 0)
    served = quicksum([x[j] for j, o in enumerate(opts) if o.role == "colocated"] + prefill)
    cost = quicksum(o.price_per_gpu_hour * o.gpus * n[j] for j, o in enumerate(opts))
    if inputs.budget_per_hour is not None:
        model.add_constraint(cost, "<=", inputs.budget_per_hour)
    if inputs.objective == "cost":
        model.add_constraint(served, ">=", inputs.rate_rps)
        model.minimize(cost - TIE_WEIGHT * served)
    else:
        model.maximize(served - TIE_WEIGHT * cost)
    if inputs.hint is not None and not relax:
        model.set_hint({n[j]: float(v) for j, v in enumerate(inputs.hint)})
    return model, n, x, cost, served


def solve_serving(inputs: ServingInputs, time_limit_s: float, solver: str | None = None) -> ServingSolution:
    model, n, x, _, _ = build(inputs)
    result = registry.solve(model, solver, SolveOptions(time_limit_s=time_limit_s, threads=1))
    lp, _, _, cost, served_rate = build(inputs, relax=True)
    relaxed = registry.solve(lp, None, SolveOptions(time_limit_s=time_limit_s, threads=1))
    counts = served = None
    if result.values is not None:
        counts = tuple(int(round(result.values[v.index])) for v in n)
        served = tuple(max(0.0, result.values[v.index]) for v in x)
    bounds = []
    if relaxed.values is not None:  # the LP's cost (objective cost) or served rate (goodput), tie-break left out
        bounds.append((cost if inputs.objective == "cost" else served_rate).value(relaxed.values))
    if result.dual_bound is not None:
        # cost - eps served >= dual gives cost >= dual; served - eps cost <= dual gives served <= dual + eps cost
        most_cost = sum(o.price_per_gpu_hour * o.gpus * o.max_count for o in inputs.options)
        bounds.append(result.dual_bound if inputs.objective == "cost" else result.dual_bound + TIE_WEIGHT * most_cost)
    bound = (max(bounds) if inputs.objective == "cost" else min(bounds)) if bounds else None
    return ServingSolution(counts, served, result, relaxed, bound, model.num_vars, model.num_constraints)
