"""A group's per-step communication time by how far it reaches, priced by the collective
planner, and its place in the placement score.

Reach of a group: the number of tiers (planner/placement/cluster.py, finest first) at which
it spreads: 0 inside one domain of the finest tier (an NVLink domain, else a leaf), 1 over
several of them inside one domain of the next tier, ..., len(tiers) over the top tier's
domains. For every group kind with `bytes_per_step`, the kind's first group (its ranks'
places inside their blocks) is laid on representative slots of the cluster for each reach
(inside the largest finest domain; over the fewest domains of the tier below, at least
two, inside one domain of the reach's tier, its blocks split evenly) and priced by
`planner.training.comm.CommPricer`: the measured link efficiencies, the group's share of
each link it shares with the job's other groups (topologies/groups.py). DP runs an
all-reduce, CP an all-gather, EP an all-to-all, PP one stage-to-stage copy (its first two
stages). A reach the cluster cannot hold the group at takes the next reach's time.

The score adds TIME_POINTS x (sum over kinds of the time of the kind's farthest-reaching
group - the same with every group at its nearest reach) / the latter: one point per percent
of per-step communication lost, the scale of one leaf of spread.
"""
from __future__ import annotations

import math

COLLECTIVE_OF = {"tp": "allreduce", "dp": "allreduce", "cp": "allgather", "ep": "alltoall", "pp": "broadcast"}
TIME_POINTS = 100.0


def reaches(c) -> tuple[str, ...]:
    """Names of the reaches: inside one domain of each tier, then the whole cluster."""
    return c.tiers + ("cluster",)


def tier_seconds(c) -> dict[str, tuple[float, ...]]:
    """kind -> seconds at each reach (non-decreasing) for the kinds with bytes_per_step.
    O(kinds x reaches) collective plans of one group each (the pricer caches group shapes)."""
    per_step = dict(c.job.bytes_per_step)
    members = _members(c)
    out = {}
    for kind in c.kinds:
        size = per_step.get(kind, 0.0)
        if size <= 0:
            continue
        ranks = priced_ranks(kind, c.job.groups(kind)[0])
        blocks = list(dict.fromkeys(r // c.block_size for r in ranks))
        layouts = [_inside(members[0], len(blocks))]
        layouts += [_across(c, members, r, len(blocks)) for r in range(1, len(c.tiers) + 1)]
        out[kind] = _filled([None if slots is None else group_seconds(c, kind, ranks, dict(zip(blocks, slots)), size)
                             for slots in layouts])
    return out


def priced_ranks(kind: str, ranks: tuple[int, ...]) -> tuple[int, ...]:
    """The ranks a kind's group is priced on: PP as one stage-to-stage copy (its first two)."""
    return ranks[:2] if kind == "pp" else ranks


def group_seconds(c, kind: str, ranks: tuple[int, ...], slot_of_block, size: float) -> float:
    """Per-step seconds of `size` bytes of the kind's collective over `ranks`, block b of
    the job on slot `slot_of_block[b]`."""
    b = c.block_size
    places = (c.slots[slot_of_block[r // b]].gpus[r % b] for r in ranks)
    gpus = tuple(c.topology.rank_of[c.gpus_of[node][x]] for node, x in places)
    return c.pricer.seconds(COLLECTIVE_OF[kind], gpus, size)


def _filled(seconds: list[float | None]) -> tuple[float, ...]:
    """A missing reach takes the next one's time (the last known one at the top); then
    non-decreasing: a group that reaches farther is given at least the time of a nearer
    reach (the pricer's methods can differ by a few per cent the other way)."""
    known = [s for s in seconds if s is not None]
    if not known:
        return (0.0,) * len(seconds)
    out, later = [], known[-1]
    for s in reversed(seconds):
        later = s if s is not None else later
        out.append(later)
    out.reverse()
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return tuple(out)


def _members(c) -> list[dict[str, list[int]]]:
    """Per tier: every domain's slots (busy ones too: representative places), a domain's
    listed as its children's, largest child first (the finest tier: slot order)."""
    out: list[dict[str, list[int]]] = [{}]
    for slot, domains in enumerate(c.domains):
        out[0].setdefault(domains[0], []).append(slot)
    for t in range(1, len(c.tiers)):
        merged: dict[str, list[int]] = {}
        for child in _largest_first(out[t - 1]):
            merged.setdefault(c.domains[child[0]][t], []).extend(child)
        out.append(merged)
    return out


def _largest_first(domains: dict[str, list[int]]) -> list[list[int]]:
    return sorted(domains.values(), key=lambda v: (-len(v), v[0]))


def _inside(finest: dict[str, list[int]], n: int) -> list[int] | None:
    biggest = _largest_first(finest)[0]
    return biggest[:n] if len(biggest) >= n else None


def _across(c, members: list[dict[str, list[int]]], r: int, n: int) -> list[int] | None:
    """n slots over the fewest domains of tier r - 1 inside one domain of tier r (the whole
    cluster for r = the number of tiers), the largest such domain that holds them."""
    top = len(c.tiers)
    by_parent: dict[str, list[list[int]]] = {}
    for child in _largest_first(members[r - 1]):
        by_parent.setdefault(c.domains[child[0]][r] if r < top else "", []).append(child)
    for children in sorted(by_parent.values(), key=lambda ls: -sum(map(len, ls))):
        found = _split(children, n)
        if found is not None:
            return found
    return None


def _split(lists: list[list[int]], n: int) -> list[int] | None:
    """n slots over the fewest (at least two) of `lists` (largest first) that hold them,
    as evenly as they allow (each list's share capped at its size, the rest to the next);
    None when two of them do not exist or all of them cannot hold n."""
    if len(lists) < 2 or n < 2 or sum(map(len, lists)) < n:
        return None
    for k in range(max(2, math.ceil(n / len(lists[0]))), min(len(lists), n) + 1):
        if sum(len(x) for x in lists[:k]) < n:
            continue
        shares = [0] * k
        left = n
        for i in sorted(range(k), key=lambda i: len(lists[i])):  # smallest first: capped ones pass the rest on
            shares[i] = min(len(lists[i]), left // (k - sum(1 for s in shares if s)))
            left -= shares[i]
        if left or min(shares) == 0:
            continue
        return [x for i in range(k) for x in lists[i][:shares[i]]]
    return None


def reach(spreads) -> int:
    """The tiers a group spreads at (its spread per tier, finest first)."""
    return sum(1 for v in spreads if v > 0)


def time_points(seconds: dict[str, tuple[float, ...]], worst_reach: dict[str, int]) -> float:
    """The score's time term for the farthest reach of each kind's groups."""
    base = sum(t[0] for t in seconds.values())
    if base <= 0:
        return 0.0
    return TIME_POINTS * sum(t[worst_reach.get(k, 0)] - t[0] for k, t in seconds.items()) / base
