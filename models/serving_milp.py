"""Serving replicas over a heterogeneous GPU pool: how many of each configuration, in which
role, and how the traffic splits over them (a MILP, after Mélange and HexGen-2's
formulations, with DistServe's prefill/decode disaggregation in the same model).

Given options j (a GPU type t_j, g_j GPUs, price p_j per GPU-hour, role colocated |
prefill | decode, capacity c_j requests/s in that role), the GPUs A_t of each type, the
rate R (objective `cost`) or the budget B (objective `goodput`), and for each pair of GPU
types (s, u) whether a prefill on s may hand its KV cache to a decode on u (`pairs`), with
each option's network bandwidth e_j (bytes/s) and the KV bytes k of a request:

    n_j in Z+ replicas;  x_j >= 0 the requests/s option j serves (prefill/decode: handles)
    x_j <= c_j n_j;   sum_{j of type t} g_j n_j <= A_t
    f_su >= 0 for allowed pairs:  sum_u f_su = sum_{prefill j on s} x_j,
                                  sum_s f_su = sum_{decode j on u} x_j
    k sum_u f_su <= sum_{prefill j on s} e_j n_j;  k sum_s f_su <= sum_{decode j on u} e_j n_j
    served = sum_{colocated j} x_j + sum_su f_su;   cost = sum_j p_j g_j n_j
    cost:    min cost - eps served   s.t. served >= R   (and cost <= B when a budget is given)
    goodput: max served - eps cost   s.t. cost <= B

The LP relaxation (n_j continuous) is solved too: its optimum bounds the MILP's (a lower
bound on cost, an upper bound on goodput) under the same capacities. Options x pairs
variables, a few rows per option and type; solved by the registry's MILP default (HiGHS).
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
    network_Bps: float
    max_count: int


@dataclass(frozen=True)
class ServingInputs:
    options: tuple[ServingOption, ...]
    available: tuple[tuple[str, int], ...]
    objective: str  # cost | goodput
    rate_rps: float
    budget_per_hour: float | None
    kv_bytes_per_request: float
    pairs: tuple[tuple[str, str], ...]  # (prefill GPU type, decode GPU type) allowed
    hint: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ServingSolution:
    counts: tuple[int, ...] | None
    served: tuple[float, ...] | None
    result: SolveResult
    relaxed: SolveResult
    bound: float | None  # the LP relaxation's least cost or most goodput: no integer plan does better
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
    flows = {}
    for s, u in inputs.pairs:
        flows[(s, u)] = model.add_var(f"f_{s}_{u}", 0, sum(o.capacity_rps * o.max_count for o in opts))
    types = sorted({o.gpu for o in opts})
    k = inputs.kv_bytes_per_request
    for side, role in ((0, "prefill"), (1, "decode")):
        for t in types:
            members = [j for j, o in enumerate(opts) if o.gpu == t and o.role == role]
            incident = [f for (s, u), f in flows.items() if (s, u)[side] == t]
            handled = quicksum(x[j] for j in members) if members else 0
            moved = quicksum(incident) if incident else 0
            if not members and not incident:
                continue
            model.add_constraint(quicksum(incident) - handled if incident else -handled, "==", 0)
            if incident and k > 0:
                model.add_constraint(k * moved - quicksum(opts[j].network_Bps * n[j] for j in members), "<=", 0)
    served = quicksum([x[j] for j, o in enumerate(opts) if o.role == "colocated"] + list(flows.values()))
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
    bound = None
    if relaxed.values is not None:  # the LP's cost (objective cost) or served rate (goodput), tie-break left out
        bound = (cost if inputs.objective == "cost" else served_rate).value(relaxed.values)
    return ServingSolution(counts, served, result, relaxed, bound, model.num_vars, model.num_constraints)
