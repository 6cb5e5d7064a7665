"""Blocks of a job to domains, minimising the weighted spread of its groups (CP-SAT).

Tiers t = 0 (finest: NVLink domains or leaves) .. T-1 (spine), every domain inside one of
the next tier. Given blocks b, finest domains d with F_d free slots, groups g (sets of
blocks) of kinds k with integer weights a_kt:

    x[b][d] in {0,1}:  sum_d x[b][d] = 1;  sum_b x[b][d] <= F_d
    u0[g][d] >= x[b][d] (b in g);  ut[g][D] >= u(t-1)[g][d] (d in D)   g touches a domain
    S_gt = sum_D ut[g][D] - 1                                        (spread: touched - 1)
    M_kt >= S_gt  (g of kind k)
    min  sum_kt a_kt (n_k M_kt + sum_g S_gt) / n_k + sum_kt c_kt R_kt     (scaled to integers)

with, for the kinds given times (c_kt = time points of reaching past one domain of tier t,
planner/placement/timing.py), binaries R_kt >= S_gt / (domains_t - 1): the placement score
of planner/placement/score.py (max + mean spread per kind and tier, and the time of each
kind's farthest-reaching group). Slots inside a finest domain are interchangeable for the
spread, so the blocks of a domain take its free slots in order afterwards. Blocks x finest
domains binaries plus groups x domains of every tier; warm-started from a heuristic's
placement; deterministic work limit. Tiers with one domain are left out (no spread).

`solve_hierarchical` decomposes (groups to spine domains, then to leaves, then to NVLink
domains): the model of the top tiers alone (finest domains merged into their tier-t
domains, capacities summed) fixes each block's tier-t domain, and the next model allows
each block only the domains inside it. A group spread over s domains of tier t touches at
least s of every finer tier and reaches past each, so the merged model's finest tier
carries the weights and reach costs of the tiers below it too: its objective never exceeds
the score, and its dual bound bounds the score. The combination is never called optimal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from solvers import registry
from solvers.linear_model import LinearModel, quicksum
from solvers.result import SolveOptions, SolveResult, Termination, combined_limit, relative_gap

SCALE = 1000
WALL_GUARD = 4.0


@dataclass(frozen=True)
class PlacementInputs:
    blocks: int
    domains: tuple[tuple[tuple[str, ...], int], ...]  # finest domains: (its domain at each tier, free slots)
    groups: tuple[tuple[str, tuple[int, ...]], ...]  # (kind, blocks)
    weights: tuple[tuple[str, tuple[float, ...]], ...]  # kind -> weight of its spread at each tier
    reach_cost: tuple[tuple[str, tuple[float, ...]], ...] = ()  # kind -> points for reaching past each tier
    hint: tuple[int, ...] | None = None  # finest domain of every block
    allowed: tuple[tuple[int, ...], ...] | None = None  # per block: the finest domains it may take


@dataclass(frozen=True)
class PlacementSolution:
    domain_of_block: tuple[int, ...] | None
    result: SolveResult
    bound: float | None  # the least score of any placement: the dual bound, less what rounding could move
    variables: int
    constraints: int


def solve_placement(inputs: PlacementInputs, work_s: float, solver: str | None = None) -> PlacementSolution:
    model = LinearModel("placement")
    nb, doms = inputs.blocks, inputs.domains
    tiers = len(doms[0][0])
    allowed = inputs.allowed or tuple(tuple(range(len(doms))) for _ in range(nb))
    x = [{d: model.add_binary(f"x{b}_{d}") for d in allowed[b]} for b in range(nb)]
    for b in range(nb):
        model.add_constraint(quicksum(x[b].values()), "==", 1)
    for d, (_, free) in enumerate(doms):
        on = [x[b][d] for b in range(nb) if d in x[b]]
        if len(on) > free:
            model.add_constraint(quicksum(on), "<=", free)
    names = [sorted({n[t] for n, _ in doms}) for t in range(tiers)]
    index = [{n: i for i, n in enumerate(v)} for v in names]
    of = [[index[t][n[t]] for n, _ in doms] for t in range(tiers)]  # finest domain -> its tier-t domain
    parent = [{} for _ in range(tiers)]  # tier t: tier t-1 domain -> tier t domain
    for d in range(len(doms)):
        for t in range(1, tiers):
            parent[t][of[t - 1][d]] = of[t][d]
    used = _spread_tiers(doms)
    count = _group_counts(inputs)
    weight = dict(inputs.weights)
    objective = []
    rounding = 0.0  # the most the integer coefficients can move the objective: keeps the bound a bound
    maxima = {}
    hinted: dict = {}  # every variable's value at the hint: CP-SAT starts from a whole solution
    hint_of = _fitting_hint(inputs.hint, allowed, doms) if inputs.hint is not None else None
    for k in count:
        for t in used:
            maxima[(k, t)] = m = model.add_var(f"max{t}_{k}", 0, len(names[t]), integer=True)
            objective.append(_coef(weight[k][t]) * m)
            rounding += abs(_coef(weight[k][t]) - weight[k][t] * SCALE) * len(names[t])
    reach_vars = {}
    for k, costs in inputs.reach_cost:
        for t in used:
            if costs[t] > 0:
                r = model.add_binary(f"reach{t}_{k}")
                reach_vars[(k, t)] = (r, len(names[t]) - 1)
                objective.append(_coef(costs[t]) * r)
                rounding += abs(_coef(costs[t]) - costs[t] * SCALE)
    for i, (k, blocks) in enumerate(inputs.groups):
        touched: dict[int, object] = {}  # tier-t domain -> "the group touches it"
        for b in blocks:
            for d, var in x[b].items():
                key = of[0][d]
                if key not in touched:
                    touched[key] = model.add_binary(f"u{i}_0_{key}")
                    hinted[touched[key]] = 0.0
                model.add_constraint(touched[key] - var, ">=", 0)
                if hint_of is not None and hint_of[b] == d:
                    hinted[touched[key]] = 1.0
        for t in range(tiers):
            if t > 0:
                up: dict[int, object] = {}
                for key, var in touched.items():
                    p = parent[t][key]
                    if p not in up:
                        up[p] = model.add_binary(f"u{i}_{t}_{p}")
                        hinted[up[p]] = 0.0
                    model.add_constraint(up[p] - var, ">=", 0)
                    hinted[up[p]] = max(hinted[up[p]], hinted[var])
                touched = up
            if t not in used:
                continue
            spread = quicksum(touched.values()) - 1
            share = weight[k][t] / count[k]
            model.add_constraint(maxima[(k, t)] - spread, ">=", 0)
            at_hint = sum(hinted[v] for v in touched.values()) - 1
            hinted[maxima[(k, t)]] = max(hinted.get(maxima[(k, t)], 0.0), at_hint)
            objective.append(_coef(share) * spread)
            rounding += abs(_coef(share) - share * SCALE) * len(names[t])
            if (k, t) in reach_vars:
                r, most = reach_vars[(k, t)]
                model.add_constraint(most * r - spread, ">=", 0)
                hinted[r] = max(hinted.get(r, 0.0), float(at_hint > 0))
    model.minimize(quicksum(objective))
    if hint_of is not None:
        hinted.update({var: float(hint_of[b] == d) for b in range(nb) for d, var in x[b].items()})
        model.set_hint(hinted)
    guard = WALL_GUARD * work_s + 1.0
    result = registry.solve(model, solver, SolveOptions(time_limit_s=guard, work_limit=work_s, threads=1))
    domain_of = None
    if result.values is not None:
        domain_of = tuple(next(d for d, var in x[b].items() if result.values[var.index] > 0.5) for b in range(nb))
    bound = None
    if result.dual_bound is not None:
        bound = max(0.0, (result.dual_bound - rounding) / SCALE)
    return PlacementSolution(domain_of, result, bound, model.num_vars, model.num_constraints)


def _fitting_hint(hint: tuple[int, ...], allowed: tuple[tuple[int, ...], ...],
                  doms: tuple[tuple[tuple[str, ...], int], ...]) -> tuple[int, ...] | None:
    """The warm start inside `allowed` (a later stage of the decomposition may allow other
    domains than the warm start's): blocks outside it take the first allowed domain with
    room left; None when one finds none."""
    room = [free for _, free in doms]
    for b, d in enumerate(hint):
        if d in allowed[b]:
            room[d] -= 1
    out = list(hint)
    for b, d in enumerate(hint):
        if d not in allowed[b]:
            d = next((x for x in allowed[b] if room[x] > 0), None)
            if d is None:
                return None
            out[b] = d
            room[d] -= 1
    return tuple(out)


def solve_hierarchical(inputs: PlacementInputs, work_s: float, solver: str | None = None) -> PlacementSolution:
    """Top tiers first (module doc); `work_s` split evenly over the models solved."""
    doms = inputs.domains
    stages = [t for t in reversed(_spread_tiers(doms)) if t > 0]
    if not stages:
        return solve_placement(inputs, work_s, solver)
    share = work_s / (len(stages) + 1)
    allowed = inputs.allowed or tuple(tuple(range(len(doms))) for _ in range(inputs.blocks))
    solves: list[PlacementSolution] = []
    for t in stages:
        coarse = _merged(inputs, t, allowed)
        sol = solve_placement(coarse, share, solver)
        solves.append(sol)
        picked = sol.domain_of_block
        hint_fits = coarse.hint is not None and all(h in a for h, a in zip(coarse.hint, coarse.allowed))
        if hint_fits and (picked is None or objective(coarse, coarse.hint) <= objective(coarse, picked)):
            picked = coarse.hint  # not better than the warm start: keep it, so the next model can start from it
        if picked is None:
            return _combined(None, solves)
        chosen = [coarse.domains[c][0] for c in picked]  # block -> its domains from tier t up
        allowed = tuple(tuple(d for d in allowed[b] if doms[d][0][t:] == chosen[b]) for b in range(inputs.blocks))
    final = solve_placement(replace(inputs, allowed=allowed), share, solver)
    solves.append(final)
    return _combined(final.domain_of_block, solves)


def objective(inputs: PlacementInputs, domain_of: tuple[int, ...]) -> int:
    """The model's objective (scaled integers, as solve_placement writes it) of a placement."""
    doms = inputs.domains
    used = _spread_tiers(doms)
    count = _group_counts(inputs)
    weight, costs = dict(inputs.weights), dict(inputs.reach_cost)
    spreads = {(k, t): [] for k in count for t in used}
    for k, blocks in inputs.groups:
        for t in used:
            spreads[(k, t)].append(len({doms[domain_of[b]][0][t] for b in blocks}) - 1)
    total = 0
    for (k, t), v in spreads.items():
        if not v:
            continue
        total += _coef(weight[k][t]) * max(v) + _coef(weight[k][t] / count[k]) * sum(v)
        if k in costs and costs[k][t] > 0 and max(v) > 0:
            total += _coef(costs[k][t])
    return total


def _merged(inputs: PlacementInputs, t: int, allowed: tuple[tuple[int, ...], ...]) -> PlacementInputs:
    """The model with the finest domains merged into their tier-t domains (capacities summed;
    the tiers below folded into the new finest one, module doc)."""
    names = sorted({n[t:] for n, _ in inputs.domains})
    index = {n: i for i, n in enumerate(names)}
    free = [0] * len(names)
    of = []
    for n, f in inputs.domains:
        free[index[n[t:]]] += f
        of.append(index[n[t:]])
    hint = tuple(of[d] for d in inputs.hint) if inputs.hint is not None else None

    def folded(v: tuple[float, ...]) -> tuple[float, ...]:
        return (sum(v[:t + 1]), *v[t + 1:])

    return PlacementInputs(inputs.blocks, tuple(zip(names, free)), inputs.groups,
                           tuple((k, folded(w)) for k, w in inputs.weights),
                           tuple((k, folded(c)) for k, c in inputs.reach_cost), hint,
                           tuple(tuple(sorted({of[d] for d in a})) for a in allowed))


def _combined(domain_of, solves: list[PlacementSolution]) -> PlacementSolution:
    """The decomposition as one solve: feasible at best, the first model's bound."""
    results = [s.result for s in solves]
    bound = solves[0].bound
    objective = results[-1].objective if domain_of is not None else None
    dual = bound * SCALE if bound is not None else None
    result = SolveResult(results[-1].solver, Termination.feasible if domain_of is not None else Termination.no_solution,
                         objective, dual, relative_gap(objective, dual), sum(r.seconds for r in results),
                         combined_limit(r.limit for r in results), None,
                         f"hierarchical: {len(solves)} models, top tiers first; the bound is the first's")
    return PlacementSolution(domain_of, result, bound, sum(s.variables for s in solves),
                             sum(s.constraints for s in solves))


def _spread_tiers(doms) -> list[int]:
    """The tiers with more than one domain: the only ones a group can spread at."""
    return [t for t in range(len(doms[0][0])) if len({n[t] for n, _ in doms}) > 1]


def _group_counts(inputs: PlacementInputs) -> dict[str, int]:
    return {k: sum(1 for kk, _ in inputs.groups if kk == k) for k, _ in inputs.weights}


def _coef(weight: float) -> int:
    return max(1, int(math.floor(weight * SCALE + 0.5)))


def model_size(blocks: int, domains_per_tier: list[int], groups: int) -> int:
    """Binaries of the flat model (at most): what `auto` checks before building it."""
    return blocks * domains_per_tier[0] + groups * sum(domains_per_tier)
