"""Tilings of a grid job (ours; starts for `greedy`'s local search).

When the blocks form a grid over the group kinds (planner/placement/bound.py `grid`), a
*split* cuts each kind's coordinate into d_k near-equal runs; the products of the runs are
tiles. A tiling is one split per tier, coarsest first: the job is split into tiles that are
packed into the top tier's domains, each domain's tiles split again for the tier below, and
so on; at the finest tier a domain's blocks take its free slots in order.

Which splits are built is chosen by an estimate: a kind cut into P pieces by a tier and the
tiers above it spreads P - 1 there (max and mean), as if every tile had a domain of its own
(w_k x W_tier x 2 (P - 1), plus the time points of the reach that gives); a split is kept
only when tiles of its largest size fit the tier's domains in number. The MAX_BUILT
cheapest are built and scored exactly. Packing: tiles largest first, each into the domain
it fits most tightly (so small tiles share domains); a tile that fits no domain fills the
emptiest ones in turn. O(splits looked at x kinds) for the estimate, at most MAX_SPLITS
over all tiers (per kind only the O(sqrt n) cuts with distinct run lengths);
O(MAX_BUILT x blocks x tiers) to build.
"""
from __future__ import annotations

import math
from functools import lru_cache

from planner.placement.bound import free_per_domain, grid
from planner.placement.cluster import Cluster
from planner.placement.score import TIER_WEIGHT, Scorer, weights
from planner.placement.timing import time_points

MAX_BUILT = 8
MAX_SPLITS = 50_000


def tilings(c: Cluster, keep: int = 1) -> list[tuple[int, ...]]:
    """The `keep` best tilings (block -> slot), best first; none when the job is no grid."""
    shape = grid(c)
    if shape is None:
        return []
    built = []
    for splits in _cheapest_splits(c, [shape[0][k][1] for k in c.kinds]):
        slot_of = _build(c, shape[1], splits)
        built.append((Scorer(c, slot_of).total(), len(built), slot_of))
    built.sort()
    return [slot_of for _, _, slot_of in built[:keep]]


def _cheapest_splits(c: Cluster, extent: list[int]) -> list[list[tuple[int, ...]]]:
    """The MAX_BUILT splits per tier (coarsest first) of least estimated score."""
    order = list(reversed(range(len(c.tiers))))
    free = [free_per_domain(c, c.tiers[t]) for t in order]
    w = weights(c)
    weight = [w[k] for k in c.kinds]
    seconds = c.tier_seconds
    found: list[tuple[float, int, list[tuple[int, ...]]]] = []
    count = 0
    examined = [0]  # splits looked at, at every tier: the enumeration stops at MAX_SPLITS

    def walk(level: int, pieces: tuple[int, ...], spent: float, reach: list[int], splits: list) -> None:
        nonlocal count
        if level == len(order):
            count += 1
            cost = spent + time_points(seconds, {k: r for k, r in zip(c.kinds, reach)})
            found.append((cost, count, list(splits)))
            found.sort()
            del found[MAX_BUILT:]
            return
        tier_weight = TIER_WEIGHT[c.tiers[order[level]]]
        for split in _splits([math.ceil(e / p) for e, p in zip(extent, pieces)]):
            if examined[0] >= MAX_SPLITS:
                return
            examined[0] += 1
            now = tuple(p * d for p, d in zip(pieces, split))
            size = math.prod(math.ceil(e / p) for e, p in zip(extent, now))
            if sum(f // size for f in free[level]) < math.prod(now):
                continue
            cost = spent + tier_weight * sum(x * 2 * (p - 1) for x, p in zip(weight, now))
            if len(found) == MAX_BUILT and cost >= found[-1][0]:
                continue
            walk(level + 1, now, cost, [r + (p > 1) for r, p in zip(reach, now)], splits + [split])

    walk(0, tuple(1 for _ in extent), 0.0, [0] * len(extent), [])
    return [splits for _, _, splits in found]


def _splits(lengths: list[int]) -> list[tuple[int, ...]]:
    """Vectors 1 <= d_k <= lengths[k], fewest pieces first; per kind only the least d_k
    giving each run length ceil(n / d_k) (the others cut into the same longest runs)."""
    vectors = [()]
    for n in lengths:
        vectors = [v + (d,) for v in vectors for d in _cuts(n)]
    return sorted(vectors, key=lambda v: (math.prod(v), v))


@lru_cache(maxsize=None)
def _cuts(n: int) -> tuple[int, ...]:
    out, longest = [], 0
    for d in range(1, n + 1):
        if -(-n // d) != longest:  # run lengths only shrink as d grows
            out.append(d)
            longest = -(-n // d)
    return tuple(out)


def _cut(blocks: list[int], coords: list[tuple[int, ...]], split: tuple[int, ...]) -> list[list[int]]:
    """`blocks` cut by `split`: per kind, its coordinates among them in d_k near-equal runs."""
    runs = []
    for i, d in enumerate(split):
        values = sorted({coords[b][i] for b in blocks})
        d = min(d, len(values))
        base, extra = divmod(len(values), d)
        run, at = {}, 0
        for j in range(d):
            for v in values[at:at + base + (j < extra)]:
                run[v] = j
            at += base + (j < extra)
        runs.append(run)
    tiles: dict[tuple[int, ...], list[int]] = {}
    for b in blocks:
        tiles.setdefault(tuple(runs[i][x] for i, x in enumerate(coords[b])), []).append(b)
    return [tiles[key] for key in sorted(tiles)]


def _build(c: Cluster, coords: list[tuple[int, ...]], splits: list[tuple[int, ...]]) -> tuple[int, ...]:
    order = list(reversed(range(len(c.tiers))))
    slot_of = [0] * c.blocks

    def place(tiles: list[list[int]], level: int, pool: list[int]) -> None:
        t = order[level]
        slots: dict[str, list[int]] = {}
        for x in pool:
            slots.setdefault(c.domains[x][t], []).append(x)
        room = {d: len(v) for d, v in slots.items()}
        held: dict[str, list[list[int]]] = {d: [] for d in slots}
        for tile in sorted(tiles, key=lambda v: (-len(v), v[0])):
            fits = [(room[d], d) for d in slots if room[d] >= len(tile)]
            while tile:
                d = min(fits)[1] if fits else max(slots, key=lambda d: (room[d], d))
                part, tile = tile[:room[d]], tile[room[d]:]
                held[d].append(part)
                room[d] -= len(part)
                fits = []
        for d in sorted(held):
            if not held[d]:
                continue
            if level == len(order) - 1:
                for x, b in zip(slots[d], (b for part in held[d] for b in part)):
                    slot_of[b] = x
            else:
                place([piece for part in held[d] for piece in _cut(part, coords, splits[level + 1])],
                      level + 1, slots[d])

    everything = sorted(range(c.blocks), key=lambda b: coords[b])
    place(_cut(everything, coords, splits[0]), 0, list(c.free))
    return tuple(slot_of)
