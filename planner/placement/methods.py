"""Placements of a job's blocks on free nodes, and their score.

Score (lower is better): sum over group kinds k (dp, pp, cp, ep) of w_k x sum over tiers of
W_tier x (max spread + mean spread), with W_leaf = 1, W_spine = SPINE_WEIGHT (a group that
crosses spine domains pays more than one that crosses leaves: Arnold measures up to 17% of
bus bandwidth lost across minipods) and w_k the kind's share of `bytes_per_step` (1 each
when the job gives none).

Methods (each O(nodes log nodes + ranks)):
- `linear`: free nodes in name order (hostname order);
- `random`: free nodes in a seeded random order;
- `best_fit`: Slurm topology/tree as it allocates: the lowest switch whose subtree holds
  enough free nodes (the fewest free among those), then its leaves with the most free nodes
  first, nodes in order; blocks in rank order;
- `greedy` (ours): the same subtree, its leaves packed fullest-first, and the blocks laid
  out group by group (every PP group's blocks together, or every DP group's), whichever
  scores better.
"""
from __future__ import annotations

import random as random_module
from collections import defaultdict

from planner.placement.cluster import TIERS, Cluster

SPINE_WEIGHT = 10
SEED = 0


def weights(c: Cluster) -> dict[str, float]:
    given = dict(c.job.bytes_per_step)
    total = sum(given.get(k, 0.0) for k in c.kinds)
    if not given or total <= 0:
        return {k: 1.0 for k in c.kinds}
    return {k: given.get(k, 0.0) / total * len(c.kinds) for k in c.kinds}


def spreads(c: Cluster, node_of: tuple[int, ...]) -> dict[str, dict[str, tuple[int, float]]]:
    """kind -> tier -> (max spread, mean spread)."""
    acc: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for g in c.groups:
        for t, tier in enumerate(TIERS):
            acc[g.kind][tier].append(len({c.domains[node_of[b]][t] for b in g.blocks}) - 1)
    return {k: {tier: (max(v), sum(v) / len(v)) for tier, v in tiers.items()} for k, tiers in acc.items()}


def score(c: Cluster, node_of: tuple[int, ...]) -> float:
    w = weights(c)
    out = 0.0
    for kind, tiers in spreads(c, node_of).items():
        for tier, (mx, mean) in tiers.items():
            out += w[kind] * (SPINE_WEIGHT if tier == "spine" else 1) * (mx + mean)
    return out


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
    the groups of one kind are contiguous (each kind tried), nodes filled in that order."""
    leaves = _subtree(c)
    spine_of = {leaf[0]: c.domains[leaf[0]][1] for leaf in leaves}
    spine_free: dict[str, int] = defaultdict(int)
    for leaf in leaves:
        spine_free[spine_of[leaf[0]]] += len(leaf)
    ordered = sorted(leaves, key=lambda l: (-spine_free[spine_of[l[0]]], spine_of[l[0]], -len(l), l[0]))
    nodes = [n for leaf in ordered for n in leaf][:c.blocks]
    best = None
    for kind in (None, *c.kinds):
        order = _block_order(c, kind)
        node_of = [0] * c.blocks
        for slot, b in enumerate(order):
            node_of[b] = nodes[slot]
        candidate = tuple(node_of)
        key = (score(c, candidate), kind or "")
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
