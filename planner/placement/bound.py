"""A lower bound on the placement score from the free capacity per domain.

Every placement has, per tier, a set Z of *kept* kinds: those none of whose groups spreads
over two domains of that tier (max spread 0). Kinds kept at a tier are kept at every coarser
one (domains nest), so Z_finest is inside Z_next and so on. The bound is the least, over
every such chain, of what the chain forces (`kept_bound`):
- kept kinds: the blocks their groups join (union-find) are *components* that lie whole in
  one domain, so they must pack: for every size x, the components of at least x blocks are
  at most sum over domains of floor(free / x); a chain that cannot pack is impossible;
- every other kind k has max spread >= 1, and each of its groups touches at least the
  fewest domains whose free slots hold every component the group meets (a group alone
  when nothing is kept), which bounds its max and mean spread;
- shared domains (when the blocks form a grid: block = one coordinate per kind, a kind-k
  group = the blocks equal in every other coordinate): a domain holding s blocks touches
  t_k groups of kind k with prod_k t_k >= s^(K-1) (Loomis-Whitney), t_k >= ceil(s / e_k),
  t_k <= min(n_k, s). Summed over domains, sum_k c_k / n_k x (groups touched) = sum_k c_k (mean
  spread_k + 1) >= N x min over s <= F of least(s) / s, least(s) the cheapest such t
  (integers, enumerated), N the blocks, F the most free slots of one domain;
- per tier, with c_k = w_k x W_tier, M = sum c_k x (least max spread) and B = what the
  means must sum to (the larger of the two lines above), the tier costs at least
  max(M, B) + B (max >= mean per kind);
- time points: a kind not kept at i tiers has a group that reaches past i of them.
O(2^K x (blocks + group members)) per tier for K kinds, chains O(2^(K x tiers)) at most,
plus O(F x MAX_ENUMERATION) for the grid.
"""
from __future__ import annotations

import math
from itertools import combinations

from planner.placement.cluster import Cluster
from planner.placement.score import TIER_WEIGHT, weights
from planner.placement.timing import time_points

MAX_ENUMERATION = 20_000


def free_per_domain(c: Cluster, tier: str) -> list[int]:
    """The free slots of each domain of `tier`, most first."""
    return sorted((len(v) for v in c.free_in(tier).values()), reverse=True)


def most_free(c: Cluster) -> dict[str, int]:
    """tier -> the most free slots of one of its domains."""
    return {tier: free_per_domain(c, tier)[0] for tier in c.tiers}


def least_spreads(c: Cluster) -> dict[str, dict[str, int]]:
    """kind -> tier -> the least max spread any placement has."""
    most = most_free(c)
    return {k: {t: max(math.ceil(len(g.blocks) / most[t]) - 1 for g in c.groups if g.kind == k) for t in c.tiers}
            for k in c.kinds}


def kept_bound(c: Cluster) -> float:
    """The least score any placement has (module doc): spread points and time points."""
    kinds = c.kinds
    subsets = [frozenset(z) for n in range(len(kinds) + 1) for z in combinations(kinds, n)]
    components = {z: _components(c, z) for z in subsets}
    shape = grid(c)
    w = weights(c)
    # cost[t][z]: tier t's least spread points when exactly the kinds z are kept there
    cost: list[dict[frozenset, float]] = []
    for tier in c.tiers:
        free = free_per_domain(c, tier)
        weight = {k: w[k] * TIER_WEIGHT[tier] for k in kinds}
        shared = _shared_domains(shape[0], weight, free[0], c.blocks) if shape is not None else 0.0
        cost.append({z: v for z in subsets
                     if (v := _tier_cost(c, z, components[z], free, weight, shared)) is not None})
    seconds = c.tier_seconds
    best = math.inf

    def walk(t: int, inside: frozenset | None, spent: float, spread_at: dict[str, int]) -> None:
        nonlocal best
        if spent >= best:
            return
        if t == len(c.tiers):
            best = min(best, spent + time_points(seconds, spread_at))
            return
        for z, v in cost[t].items():
            if inside is None or inside <= z:
                walk(t + 1, z, spent + v, {k: spread_at[k] + (k not in z) for k in kinds})

    walk(0, None, 0.0, {k: 0 for k in kinds})
    return best


def _components(c: Cluster, kept: frozenset) -> list[int]:
    """Block -> its component when the groups of the `kept` kinds stay whole (union-find)."""
    parent = list(range(c.blocks))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g in c.groups:
        if g.kind in kept:
            first = root(g.blocks[0])
            for b in g.blocks[1:]:
                parent[root(b)] = first
    return [root(b) for b in range(c.blocks)]


def _fewest_domains(free: list[int], blocks: int) -> int:
    """The fewest domains (free slots, most first) that hold `blocks`."""
    held = 0
    for n, f in enumerate(free, 1):
        held += f
        if held >= blocks:
            return n
    return len(free) + 1


def _tier_cost(c: Cluster, kept: frozenset, component: list[int], free: list[int],
               weight: dict[str, float], shared: float) -> float | None:
    """A tier's least spread points with exactly `kept` kept (module doc); None when its
    components cannot pack into the domains' free slots."""
    size: dict[int, int] = {}
    for r in component:
        size[r] = size.get(r, 0) + 1
    sizes = sorted(size.values(), reverse=True)
    for i, x in enumerate(sizes):
        if i == len(sizes) - 1 or sizes[i + 1] < x:
            if i + 1 > sum(f // x for f in free):
                return None
    maxima = means = 0.0
    for k in c.kinds:
        if k in kept:
            continue
        least = [_fewest_domains(free, sum(size[r] for r in {component[b] for b in g.blocks})) - 1
                 for g in c.groups if g.kind == k]
        maxima += weight[k] * max(1, *least)
        means += weight[k] * sum(least) / len(least)
    means = max(means, shared)
    return max(maxima, means) + means


def grid(c: Cluster) -> tuple[dict[str, tuple[int, int]], list[tuple[int, ...]]] | None:
    """When the blocks form a grid over the kinds (coordinates of each block's first rank):
    kind -> (groups, blocks per group), and each block's coordinates (0, 1, ... per kind,
    in `c.kinds` order); else None."""
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
    index = [{v: j for j, v in enumerate(sorted({x[i] for x in coords}))} for i in range(len(kinds))]
    return out, [tuple(index[i][v] for i, v in enumerate(x)) for x in coords]


def _shared_domains(grid: dict[str, tuple[int, int]], weight: dict[str, float], most: int, blocks: int) -> float:
    """The least sum_k c_k x mean spread_k from the domains' Loomis-Whitney counts (module doc)."""
    kinds = list(grid)
    per_group = [weight[k] / grid[k][0] for k in kinds]
    best_ratio = math.inf
    for s in range(1, min(most, blocks) + 1):
        best_ratio = min(best_ratio, _least(s, [grid[k] for k in kinds], per_group) / s)
    return blocks * best_ratio - sum(weight.values()) if best_ratio < math.inf else 0.0


def _least(s: int, shape: list[tuple[int, int]], cost: list[float]) -> float | None:
    """min sum cost_k t_k over integers ceil(s / e_k) <= t_k <= min(n_k, s) (s blocks touch
    at most s groups of a kind), prod t_k >= s^(K-1); infinite when no t is; sum cost_k x
    the least t_k (the product left out) when the enumeration would exceed MAX_ENUMERATION
    points."""
    K = len(shape)
    need = s ** (K - 1)
    lo = [max(1, math.ceil(s / e)) for _, e in shape]
    hi = [min(n, s) for n, _ in shape]
    if any(l > h for l, h in zip(lo, hi)):
        return math.inf
    if math.prod(h - l + 1 for l, h in zip(lo[:-1], hi[:-1])) > MAX_ENUMERATION:
        return sum(x * l for x, l in zip(cost, lo))
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
    return best
