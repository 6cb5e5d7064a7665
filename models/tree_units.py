"""Weighted trees in whole units: the integer program that makes fair sharing proportional.

Links are shared max-min fairly among the streams crossing them (planner/simulator.py). A
forest's trees carry unequal weights, so fair shares are not the LP's shares and a
pipelined schedule loses 15-40% of the LP's rate on several servers. If every root's block
is cut into Q equal units and tree t carries n_t of them, each over n_t parallel streams,
then every stream needs the same rate q and a link with c streams needs c * q: when the
units' link loads fit the capacities, the fair share of every busy link is at least q and
each stream gets it, so the forest runs at the units' rate.

`unit_counts` chooses the n_t: minimise the largest link load over capacity subject to
sum n_t = Q per root, with n_t equal across the images of a base tree under the server
symmetry. The trees' fractional weights times Q are feasible for the relaxation, so the
forest's own time is the bound the integer solution is measured against (`ratio`). Solved
by CP-SAT, warm-started by largest-remainder rounding, within UNITS_WORK_LIMIT
deterministic seconds; a larger Q shrinks the rounding loss but shrinks the units, and with
them the slices a loop can pipeline (models/tree_packing.py chooses Q).
O(trees x path length) to build; the model has one variable per base tree and one row per
loaded link.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from models.forest import Forest, ForestError, link_crossings
from solvers import SolveOptions, SolveResult, Termination, registry
from solvers.linear_model import LinearModel, quicksum
from topologies.types import Topology

UNITS_WORK_LIMIT = 1.0     # CP-SAT deterministic seconds
UNITS_WALL_GUARD_S = 60.0  # stops a runaway only: the work limit decides
LOAD_SCALE = 1_000_000


@dataclass(frozen=True)
class Units:
    per_block: int                 # Q: units per root's block
    counts: tuple[int, ...]        # n_t for each tree of forest.trees
    ratio: float                   # the units' time over the fractional forest's (>= 1)
    solve: SolveResult


def link_uses(forest: Forest, topo: Topology) -> list[dict[int, int]]:
    """Per base tree: link index -> how many of its tree's arcs (and their images') cross it."""
    return link_crossings(forest.trees, topo, len(forest.base_trees))


def unit_counts(forest: Forest, topo: Topology, per_block: int, solver: str = "cpsat") -> Units:
    """Whole units per tree at Q = `per_block`, minimising the largest link time; kept on
    the forest (which is kept on its topology), so an allreduce's phases and a search's
    methods solve it once."""
    known = forest.__dict__.setdefault("_units", {})
    if (per_block, solver) not in known:
        known[(per_block, solver)] = _unit_counts(forest, topo, per_block, solver)
    return known[(per_block, solver)]


def _unit_counts(forest: Forest, topo: Topology, per_block: int, solver: str) -> Units:
    base = forest.base_trees
    uses = link_uses(forest, topo)
    cap = [l.bandwidth for l in topo.links]
    fractional = _max_load(uses, [float(t.weight) * per_block for t in base], cap)
    rounded = _largest_remainder(base, per_block)
    if _max_load(uses, rounded, cap) <= fractional * (1 + 1e-12):  # rounding loses nothing
        full = tuple(rounded[i % len(base)] for i in range(len(forest.trees)))
        return Units(per_block, full, 1.0, SolveResult("rounding", Termination.optimal, None, None, 0.0, 0.0,
                                                       None, None))
    model = LinearModel("tree-units")
    n = [model.add_var(f"n{i}", 0, per_block, integer=True) for i in range(len(base))]
    # link times in whole units of 1/LOAD_SCALE of a unit's time on a 1 GB/s link, so the
    # model is pure integer (CP-SAT, stopped by deterministic work: the same answer on
    # any machine)
    scale = [max(1, round(LOAD_SCALE / c)) for c in cap]
    start = _max_load(uses, rounded, cap)
    z = model.add_var("z", 0, math.ceil(start * LOAD_SCALE) + max(scale), integer=True)
    # every tree at a root counts, images included (an automorphism fixing the root adds
    # its images of that root's trees there)
    at_root: dict[int, dict[int, int]] = {}
    for i, t in enumerate(forest.trees):
        row = at_root.setdefault(t.root, {})
        row[i % len(base)] = row.get(i % len(base), 0) + 1
    for root in sorted({t.root for t in base}):
        model.add_constraint(quicksum(c * n[i] for i, c in sorted(at_root[root].items())), "==", per_block)
    rows: dict[int, dict[int, int]] = {}
    for i, row in enumerate(uses):
        for k, c in row.items():
            rows.setdefault(k, {})[i] = c
    for k in sorted(rows):
        model.add_constraint(quicksum(c * scale[k] * n[i] for i, c in rows[k].items()) - z, "<=", 0)
    model.minimize(z.to_expr())
    hint = {v: float(r) for v, r in zip(n, rounded)}
    hint[z] = float(max(sum(c * scale[k] * rounded[i] for i, c in rows[k].items()) for k in rows))
    model.set_hint(hint)
    result = registry.solve(model, solver, SolveOptions(time_limit_s=UNITS_WALL_GUARD_S, work_limit=UNITS_WORK_LIMIT,
                                                         threads=1))
    counts = rounded
    if result.values is not None and result.termination in (Termination.optimal, Termination.feasible):
        found = [int(round(result.values[v.index])) for v in n]
        if _max_load(uses, found, cap) <= _max_load(uses, rounded, cap):
            counts = found
    full = tuple(counts[i % len(base)] for i in range(len(forest.trees)))
    return Units(per_block, full, _max_load(uses, counts, cap) / fractional, result)


def _max_load(uses: list[dict[int, int]], counts, cap: list[float]) -> float:
    load: dict[int, float] = {}
    for row, c in zip(uses, counts):
        if c:
            for k, m in row.items():
                load[k] = load.get(k, 0.0) + c * m
    return max(v / cap[k] for k, v in load.items())


def _largest_remainder(base, per_block: int) -> list[int]:
    """n_t = floor(w_t Q), the remaining units to the largest fractions (ties: tree order)."""
    raw = [t.weight * per_block for t in base]  # exact: the weights are Fractions
    counts = [math.floor(x) for x in raw]
    for root in sorted({t.root for t in base}):
        mine = [i for i, t in enumerate(base) if t.root == root]
        left = per_block - sum(counts[i] for i in mine)
        if left < 0:
            raise ForestError(f"root {root}'s base trees weigh more than 1; units cannot tile its block")
        for i in sorted(mine, key=lambda i: (-(raw[i] - counts[i]), i))[:left]:
            counts[i] += 1
    return counts
