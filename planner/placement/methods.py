"""Placements of a job's blocks on free slots (scored by planner/placement/score.py; a slot
is a node when the job takes whole nodes).

Methods:
- `linear`: free slots in name order (hostname order); O(slots);
- `random`: free slots in a seeded random order; O(slots);
- `best_fit`: Slurm topology/tree as it allocates: the lowest domain (a node, a switch)
  whose subtree holds enough free slots (the fewest free among those), then its leaves
  with the most free slots first, slots in order; blocks in rank order; O(slots log slots);
- `greedy` (ours): the same subtree, its domains packed fullest-first at every tier, and
  the blocks laid out group by group (every PP group's blocks together, or every DP
  group's); and, for a grid job, the best tiling (planner/placement/tiling.py); each
  improved by a local search (planner/placement/local_search.py), the best kept.
"""
from __future__ import annotations

import random as random_module
from collections import defaultdict

from planner.placement.cluster import Cluster
from planner.placement.local_search import improve
from planner.placement.score import Scorer
from planner.placement.tiling import tilings

SEED = 0


def spreads(c: Cluster, slot_of: tuple[int, ...]) -> dict[str, dict[str, tuple[int, float]]]:
    """kind -> tier -> (max spread, mean spread)."""
    return Scorer(c, slot_of).spreads()


def score(c: Cluster, slot_of: tuple[int, ...]) -> float:
    return Scorer(c, slot_of).total()


def linear(c: Cluster) -> tuple[int, ...]:
    return tuple(c.free[:c.blocks])


def random(c: Cluster) -> tuple[int, ...]:
    slots = list(c.free)
    random_module.Random(SEED).shuffle(slots)
    return tuple(slots[:c.blocks])


def _subtree(c: Cluster) -> list[int]:
    """Slurm's choice: the lowest domain (finest tier first, else the whole cluster) holding
    enough free slots, the fewest free among those; its free slots."""
    for tier in c.tiers:
        free = c.free_in(tier)
        fits = [(len(v), name) for name, v in free.items() if len(v) >= c.blocks]
        if fits:
            return free[min(fits)[1]]
    return list(c.free)


def best_fit(c: Cluster) -> tuple[int, ...]:
    chosen = set(_subtree(c))
    leaves = [v for v in ([x for x in slots if x in chosen] for slots in c.free_in("leaf").values()) if v]
    leaves.sort(key=lambda v: (-len(v), c.domains[v[0]][c.tier("leaf")]))
    return tuple(x for leaf in leaves for x in leaf)[:c.blocks]


def _packed(c: Cluster) -> list[int]:
    """The chosen subtree's slots, fullest domain first at every tier (coarsest first; ties
    to the domain with the earlier slot), slot order inside the finest."""
    chosen = _subtree(c)
    free: list[dict[str, int]] = [defaultdict(int) for _ in c.tiers]
    first: list[dict[str, int]] = [{} for _ in c.tiers]
    for x in chosen:
        for t, d in enumerate(c.domains[x]):
            free[t][d] += 1
            first[t].setdefault(d, x)

    def key(x: int) -> tuple:
        doms = c.domains[x]
        return tuple(v for t in reversed(range(len(c.tiers))) for v in (-free[t][doms[t]], first[t][doms[t]])) + (x,)

    return sorted(chosen, key=key)


def greedy(c: Cluster) -> tuple[int, ...]:
    """The subtree's slots packed fullest-first (`_packed`); blocks ordered so that the
    groups of one kind are contiguous (each kind tried, and rank order), slots filled in
    that order; each layout, the free slots in hostname order and the best tiling
    improved by the local search; the best kept."""
    slots = _packed(c)[:c.blocks]
    starts = []
    for kind in (None, *c.kinds):
        slot_of = [0] * c.blocks
        for place, b in enumerate(_block_order(c, kind)):
            slot_of[b] = slots[place]
        starts.append(tuple(slot_of))
    starts.append(linear(c))
    starts.extend(tilings(c))
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
