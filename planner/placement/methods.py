"""Placements of a job's blocks on free nodes (scored by planner/placement/score.py).

Methods:
- `linear`: free nodes in name order (hostname order); O(nodes);
- `random`: free nodes in a seeded random order; O(nodes);
- `best_fit`: Slurm topology/tree as it allocates: the lowest switch whose subtree holds
  enough free nodes (the fewest free among those), then its leaves with the most free nodes
  first, nodes in order; blocks in rank order; O(nodes log nodes);
- `greedy` (ours): the same subtree, its leaves packed fullest-first, and the blocks laid
  out group by group (every PP group's blocks together, or every DP group's), whichever
  scores better; then a local search (planner/placement/local_search.py).
"""
from __future__ import annotations

import random as random_module
from collections import defaultdict

from planner.placement.cluster import Cluster
from planner.placement.local_search import improve
from planner.placement.score import Scorer

SEED = 0


def spreads(c: Cluster, node_of: tuple[int, ...]) -> dict[str, dict[str, tuple[int, float]]]:
    """kind -> tier -> (max spread, mean spread)."""
    return Scorer(c, node_of).spreads()


def score(c: Cluster, node_of: tuple[int, ...]) -> float:
    return Scorer(c, node_of).total()


def linear(c: Cluster) -> tuple[int, ...]:
    return tuple(c.free[:c.blocks])


def random(c: Cluster) -> tuple[int, ...]:
    nodes = list(c.free)
    random_module.Random(SEED).shuffle(nodes)
    return tuple(nodes[:c.blocks])


def _subtree(c: Cluster) -> list[list[int]]:
    """Slurm's choice: the lowest domain (a leaf, else a spine, else everything) holding
    enough free nodes, the fewest free among those; its leaves' free nodes."""
    need = c.blocks
    leaves = c.leaves_free()
    by_spine: dict[str, list[str]] = defaultdict(list)
    for leaf, nodes in leaves.items():
        by_spine[c.domains[nodes[0]][1]].append(leaf)
    fits = [(len(v), name) for name, v in leaves.items() if len(v) >= need]
    if fits:
        return [leaves[min(fits)[1]]]
    spines = [(sum(len(leaves[l]) for l in ls), name) for name, ls in by_spine.items()]
    fitting = [x for x in spines if x[0] >= need]
    chosen = by_spine[min(fitting)[1]] if fitting else list(leaves)
    return [leaves[l] for l in sorted(chosen, key=lambda l: (-len(leaves[l]), l))]


def best_fit(c: Cluster) -> tuple[int, ...]:
    nodes = [n for leaf in _subtree(c) for n in leaf]
    return tuple(nodes[:c.blocks])


def greedy(c: Cluster) -> tuple[int, ...]:
    """Leaves of the chosen subtree, fullest first, grouped by spine; blocks ordered so that
    the groups of one kind are contiguous (each kind tried, and rank order), nodes filled
    in that order; each layout, and the free nodes in hostname order, improved by the local
    search; the best kept."""
    leaves = _subtree(c)
    spine_of = {leaf[0]: c.domains[leaf[0]][1] for leaf in leaves}
    spine_free: dict[str, int] = defaultdict(int)
    for leaf in leaves:
        spine_free[spine_of[leaf[0]]] += len(leaf)
    ordered = sorted(leaves, key=lambda l: (-spine_free[spine_of[l[0]]], spine_of[l[0]], -len(l), l[0]))
    nodes = [n for leaf in ordered for n in leaf][:c.blocks]
    starts = []
    for kind in (None, *c.kinds):
        node_of = [0] * c.blocks
        for slot, b in enumerate(_block_order(c, kind)):
            node_of[b] = nodes[slot]
        starts.append(tuple(node_of))
    starts.append(linear(c))
    best = None
    for i, start in enumerate(starts):
        candidate = improve(c, start)
        key = (score(c, candidate), i)
        if best is None or key < best[0]:
            best = (key, candidate)
    return best[1]


def _block_order(c: Cluster, kind: str | None) -> list[int]:
    """Blocks in rank order, or with the groups of `kind` laid out one after another."""
    if kind is None:
        return list(range(c.blocks))
    out, seen = [], set()
    for g in c.groups:
        if g.kind == kind:
            for b in g.blocks:
                if b not in seen:
                    seen.add(b)
                    out.append(b)
    return out + [b for b in range(c.blocks) if b not in seen]
