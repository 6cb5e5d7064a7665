"""Blocks of a job to leaf domains, minimising the weighted spread of its groups (CP-SAT).

Given blocks b (one node each), leaves l with F_l free nodes, spine domains s (each leaf in
one), and groups g (sets of blocks) of kinds k with integer weights a_k (leaf) and A_k
(spine):

    x[b][l] in {0,1}:  sum_l x[b][l] = 1;  sum_b x[b][l] <= F_l
    u[g][l] >= x[b][l] (b in g)            the group touches leaf l
    v[g][s] >= u[g][l] (l in s)            the group touches spine domain s
    L_g = sum_l u[g][l] - 1,  S_g = sum_s v[g][s] - 1   (spread: domains touched - 1)
    M_k >= L_g, N_k >= S_g  (g of kind k)
    min  sum_k [ a_k (n_k M_k + sum_g L_g) + A_k (n_k N_k + sum_g S_g) ] / n_k
         + sum_k (c1_k R1_k + c2_k R2_k)                                    (scaled to integers)

with, for the kinds given times (reach costs c1_k = time points of reaching past one leaf,
c2_k of reaching past one spine domain, planner/placement/timing.py), binaries
R1_k >= L_g / (leaves - 1) and R2_k >= S_g / (spines - 1) over the kind's groups: the
placement score of planner/placement/score.py (max + mean spread per kind and tier, and
the time of each kind's farthest-reaching group). Nodes inside a leaf are interchangeable for the spread, so the blocks of a leaf
take its free nodes in order afterwards. Blocks x leaves binaries plus groups x (leaves +
spines); warm-started from a heuristic's placement; deterministic work limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from solvers import registry
from solvers.linear_model import LinearModel, quicksum
from solvers.result import SolveOptions, SolveResult

SCALE = 1000
WALL_GUARD = 4.0


@dataclass(frozen=True)
class PlacementInputs:
    blocks: int
    leaves: tuple[tuple[str, str, int], ...]  # (leaf, spine, free nodes)
    groups: tuple[tuple[str, tuple[int, ...]], ...]  # (kind, blocks)
    leaf_weight: tuple[tuple[str, float], ...]  # kind -> weight of its leaf spread
    spine_weight: tuple[tuple[str, float], ...]
    reach_cost: tuple[tuple[str, float, float], ...] = ()  # kind -> points past one leaf, past one spine
    hint: tuple[int, ...] | None = None  # leaf index of every block


@dataclass(frozen=True)
class PlacementSolution:
    leaf_of_block: tuple[int, ...] | None
    result: SolveResult
    bound: float | None  # the least score of any placement: the dual bound, less what rounding could move
    variables: int
    constraints: int


def solve_placement(inputs: PlacementInputs, work_s: float, solver: str | None = None) -> PlacementSolution:
    model = LinearModel("placement")
    nb, leaves = inputs.blocks, inputs.leaves
    x = [[model.add_binary(f"x{b}_{l}") for l in range(len(leaves))] for b in range(nb)]
    for b in range(nb):
        model.add_constraint(quicksum(x[b]), "==", 1)
    for l, (_, _, free) in enumerate(leaves):
        model.add_constraint(quicksum(x[b][l] for b in range(nb)), "<=", free)
    spines = sorted({s for _, s, _ in leaves})
    leaves_of = {s: [l for l, (_, sp, _) in enumerate(leaves) if sp == s] for s in spines}
    count = {k: sum(1 for kk, _ in inputs.groups if kk == k) for k, _ in inputs.leaf_weight}
    a, big = dict(inputs.leaf_weight), dict(inputs.spine_weight)
    objective = []
    rounding = 0.0  # the most the integer coefficients can move the objective: keeps the bound a bound
    maxima = {}
    for k in count:
        for tier in ("leaf", "spine"):
            if tier == "spine" and len(spines) == 1:
                continue
            m = model.add_var(f"max_{tier}_{k}", 0, len(leaves) if tier == "leaf" else len(spines), integer=True)
            maxima[(k, tier)] = m
            weight = a[k] if tier == "leaf" else big[k]
            objective.append(_coef(weight) * m)
            rounding += abs(_coef(weight) - weight * SCALE) * (len(leaves) if tier == "leaf" else len(spines))
    reach_vars = {}
    for k, past_leaf, past_spine in inputs.reach_cost:
        for tier, cost, domains in (("leaf", past_leaf, len(leaves)), ("spine", past_spine, len(spines))):
            if cost > 0 and domains > 1:
                r = model.add_binary(f"reach_{tier}_{k}")
                reach_vars[(k, tier)] = (r, domains - 1)
                objective.append(_coef(cost) * r)
                rounding += abs(_coef(cost) - cost * SCALE)

    def spread_terms(k: str, tier: str, spread, weight: float, domains: int) -> float:
        """A group's spread at a tier: under its kind's max, in the objective, forcing the
        kind's reach binary; returns what rounding its coefficient can move."""
        model.add_constraint(maxima[(k, tier)] - spread, ">=", 0)
        objective.append(_coef(weight / count[k]) * spread)
        if (k, tier) in reach_vars:
            r, most = reach_vars[(k, tier)]
            model.add_constraint(most * r - spread, ">=", 0)
        return abs(_coef(weight / count[k]) - weight / count[k] * SCALE) * domains

    for i, (k, blocks) in enumerate(inputs.groups):
        u = [model.add_binary(f"u{i}_{l}") for l in range(len(leaves))]
        for b in blocks:
            for l in range(len(leaves)):
                model.add_constraint(u[l] - x[b][l], ">=", 0)
        rounding += spread_terms(k, "leaf", quicksum(u) - 1, a[k], len(leaves))
        if len(spines) > 1:
            v = [model.add_binary(f"v{i}_{s}") for s in range(len(spines))]
            for s, name in enumerate(spines):
                for l in leaves_of[name]:
                    model.add_constraint(v[s] - u[l], ">=", 0)
            rounding += spread_terms(k, "spine", quicksum(v) - 1, big[k], len(spines))
    model.minimize(quicksum(objective))
    if inputs.hint is not None:
        model.set_hint({x[b][l]: float(inputs.hint[b] == l) for b in range(nb) for l in range(len(leaves))})
    guard = WALL_GUARD * work_s + 1.0
    result = registry.solve(model, solver, SolveOptions(time_limit_s=guard, work_limit=work_s, threads=1))
    leaf_of = None
    if result.values is not None:
        leaf_of = tuple(next(l for l in range(len(leaves)) if result.values[x[b][l].index] > 0.5) for b in range(nb))
    bound = None
    if result.dual_bound is not None:
        bound = max(0.0, (result.dual_bound - rounding) / SCALE)
    return PlacementSolution(leaf_of, result, bound, model.num_vars, model.num_constraints)


def _coef(weight: float) -> int:
    return max(1, int(math.floor(weight * SCALE + 0.5)))


def model_size(blocks: int, leaves: int, groups: int, spines: int) -> int:
    """Binaries of the model: what `auto` checks before building it."""
    return blocks * leaves + groups * (leaves + (spines if spines > 1 else 0))
