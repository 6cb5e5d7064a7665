"""A lower bound on the placement score from the free capacity per domain.

Per tier (NVLink domain, leaf, spine), with F the most free slots of one domain and, per kind k, c_k its
score weight (w_k x W_tier), n_k its groups, e_k the blocks of each:
- least spreads: a group of e blocks touches at least ceil(e / F) domains, so the kind's
  max spread is at least m_k = ceil(e_k / F) - 1;
- shared domains (when the blocks form a grid: block = one coordinate per kind, a kind-k
  group = the blocks equal in every other coordinate): a domain holding s blocks touches
  t_k groups of kind k with prod_k t_k >= s^(K-1) (Loomis-Whitney), t_k >= ceil(s / e_k),
  t_k <= n_k. Summed over domains, sum_k c_k / n_k x (groups touched) = sum_k c_k (mean
  spread_k + 1) >= N x min over s <= F of least(s) / s, least(s) the cheapest such t
  (integers, enumerated), N the blocks;
- so, with M = sum_k c_k m_k and B = what the means must sum to (the larger of the two
  lines above), the tier costs at least M + B when B <= M, else 2B (max >= mean per kind).
The time part: a group larger than every domain of a tier reaches past it. O(F x the
enumeration, at most MAX_ENUMERATION points per s).
"""
from __future__ import annotations

import math

from planner.placement.cluster import Cluster
from planner.placement.score import TIER_WEIGHT, weights

MAX_ENUMERATION = 20_000


def most_free(c: Cluster) -> dict[str, int]:
    """tier -> the most free slots of one of its domains."""
    return {tier: max(len(v) for v in c.free_in(tier).values()) for tier in c.tiers}


def least_spreads(c: Cluster) -> dict[str, dict[str, int]]:
    """kind -> tier -> the least max spread any placement has."""
    most = most_free(c)
    return {k: {t: max(math.ceil(len(g.blocks) / most[t]) - 1 for g in c.groups if g.kind == k) for t in c.tiers}
            for k in c.kinds}


def spread_bound(c: Cluster) -> float:
    return sum(spread_bound_by_tier(c).values())


def spread_bound_by_tier(c: Cluster) -> dict[str, float]:
    """tier -> the least spread points any placement scores at it."""
    most = most_free(c)
    w = weights(c)
    grid = _grid(c)
    out = {}
    for tier in c.tiers:
        weight = {k: w[k] * TIER_WEIGHT[tier] for k in c.kinds}
        means = 0.0
        maxima = 0.0
        for k in c.kinds:
            least = [math.ceil(len(g.blocks) / most[tier]) - 1 for g in c.groups if g.kind == k]
            maxima += weight[k] * max(least)
            means += weight[k] * sum(least) / len(least)
        if grid is not None:
            means = max(means, _shared_domains(grid, weight, most[tier], c.blocks))
        out[tier] = maxima + means if means <= maxima else 2 * means
    return out


def _grid(c: Cluster) -> dict[str, tuple[int, int]] | None:
    """kind -> (groups, blocks per group) when the blocks form a grid over the kinds
    (coordinates of each block's first rank), else None."""
    g = c.block_size
    kinds = c.kinds
    if not kinds:
        return None
    coords = [tuple(c.job.coordinates(b * g)[k] for k in kinds) for b in range(c.blocks)]
    if len(set(coords)) != len(coords):
        return None
    out = {}
    for i, k in enumerate(kinds):
        classes: dict[tuple, list[int]] = {}
        for b, x in enumerate(coords):
            classes.setdefault(x[:i] + x[i + 1:], []).append(b)
        expected = sorted(tuple(v) for v in classes.values())
        groups = sorted(grp.blocks for grp in c.groups if grp.kind == k)
        if groups != expected or len({len(v) for v in expected}) != 1:
            return None
        out[k] = (len(expected), len(expected[0]))
    return out


def _shared_domains(grid: dict[str, tuple[int, int]], weight: dict[str, float], most: int, blocks: int) -> float:
    """The least sum_k c_k x mean spread_k from the domains' Loomis-Whitney counts (module doc)."""
    kinds = list(grid)
    per_group = [weight[k] / grid[k][0] for k in kinds]
    best_ratio = math.inf
    for s in range(1, min(most, blocks) + 1):
        least = _least(s, [grid[k] for k in kinds], per_group)
        if least is None:
            return 0.0
        best_ratio = min(best_ratio, least / s)
    return blocks * best_ratio - sum(weight.values())


def _least(s: int, shape: list[tuple[int, int]], cost: list[float]) -> float | None:
    """min sum cost_k t_k over integers ceil(s / e_k) <= t_k <= n_k, prod t_k >= s^(K-1);
    None when the enumeration would exceed MAX_ENUMERATION points."""
    K = len(shape)
    need = s ** (K - 1)
    lo = [max(1, math.ceil(s / e)) for _, e in shape]
    hi = [n for n, _ in shape]
    if math.prod(h - l + 1 for l, h in zip(lo[:-1], hi[:-1])) > MAX_ENUMERATION:
        return None
    best = math.inf

    def walk(i: int, product: int, spent: float) -> None:
        nonlocal best
        if spent >= best:
            return
        if i == K - 1:
            t = max(lo[i], -(-need // product))
            if t <= hi[i]:
                best = min(best, spent + cost[i] * t)
            return
        for t in range(lo[i], hi[i] + 1):
            walk(i + 1, product * t, spent + cost[i] * t)

    walk(0, 1, 0.0)
    return best if best < math.inf else None
