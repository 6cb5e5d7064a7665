"""A group's per-step communication time by how far it reaches, priced by the collective
planner, and its place in the placement score.

Reach of a group: 0 inside one leaf, 1 over several leaves of one spine domain, 2 over
several spine domains. For every group kind with `bytes_per_step`, the kind's first group
(its ranks' GPU indices inside their nodes) is laid on representative nodes of the cluster
for each reach (one leaf; the fewest leaves of one spine domain that hold it, at least two,
its blocks split evenly; the same over spine domains) and priced by
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

REACHES = ("leaf", "spine", "cluster")
COLLECTIVE_OF = {"dp": "allreduce", "cp": "allgather", "ep": "alltoall", "pp": "broadcast"}
TIME_POINTS = 100.0


def tier_seconds(c) -> dict[str, tuple[float, float, float]]:
    """kind -> seconds at reach 0, 1, 2 (non-decreasing) for the kinds with bytes_per_step.
    O(kinds x reaches) collective plans of one group each (the pricer caches group shapes)."""
    per_step = dict(c.job.bytes_per_step)
    by_leaf: dict[str, list[int]] = {}
    for node, (leaf, _) in enumerate(c.domains):
        by_leaf.setdefault(leaf, []).append(node)
    by_spine: dict[str, list[list[int]]] = {}
    for leaf in sorted(by_leaf, key=lambda l: (-len(by_leaf[l]), l)):
        by_spine.setdefault(c.domains[by_leaf[leaf][0]][1], []).append(by_leaf[leaf])
    out = {}
    for kind in c.kinds:
        size = per_step.get(kind, 0.0)
        if size <= 0:
            continue
        ranks = priced_ranks(kind, c.job.groups(kind)[0])
        blocks = list(dict.fromkeys(r // c.gpus_per_node for r in ranks))
        layouts = (_one_leaf(by_leaf, len(blocks)), _over_leaves(by_spine, len(blocks)),
                   _over_spines(by_spine, len(blocks)))
        out[kind] = _filled([None if nodes is None else group_seconds(c, kind, ranks, dict(zip(blocks, nodes)), size)
                             for nodes in layouts])
    return out


def priced_ranks(kind: str, ranks: tuple[int, ...]) -> tuple[int, ...]:
    """The ranks a kind's group is priced on: PP as one stage-to-stage copy (its first two)."""
    return ranks[:2] if kind == "pp" else ranks


def group_seconds(c, kind: str, ranks: tuple[int, ...], node_of_block, size: float) -> float:
    """Per-step seconds of `size` bytes of the kind's collective over `ranks`, block b of
    the job on node `node_of_block[b]`."""
    g = c.gpus_per_node
    gpus = tuple(c.topology.rank_of[c.gpus_of[node_of_block[r // g]][r % g]] for r in ranks)
    return c.pricer.seconds(COLLECTIVE_OF[kind], gpus, size)


def _filled(seconds: list[float | None]) -> tuple[float, float, float]:
    """A missing reach takes the next one's time (the last known one at the top); then
    non-decreasing: a group that reaches farther is given at least the time of a nearer
    reach (the pricer's methods can differ by a few per cent the other way)."""
    known = [s for s in seconds if s is not None]
    if not known:
        return (0.0, 0.0, 0.0)
    out, later = [], known[-1]
    for s in reversed(seconds):
        later = s if s is not None else later
        out.append(later)
    out.reverse()
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return tuple(out)


def _one_leaf(by_leaf: dict[str, list[int]], n: int) -> list[int] | None:
    biggest = max(by_leaf.values(), key=len)
    return biggest[:n] if len(biggest) >= n else None


def _split(lists: list[list[int]], n: int) -> list[int] | None:
    """n nodes over the fewest (at least two) of `lists` (largest first) that hold them,
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


def _over_leaves(by_spine: dict[str, list[list[int]]], n: int) -> list[int] | None:
    for leaves in sorted(by_spine.values(), key=lambda ls: -sum(map(len, ls))):
        found = _split(leaves, n)
        if found is not None:
            return found
    return None


def _over_spines(by_spine: dict[str, list[list[int]]], n: int) -> list[int] | None:
    spines = sorted(([x for leaf in ls for x in leaf] for ls in by_spine.values()), key=lambda v: (-len(v), v[0]))
    return _split(spines, n)


def reach(spine_spread: int, leaf_spread: int) -> int:
    return 2 if spine_spread > 0 else 1 if leaf_spread > 0 else 0


def time_points(seconds: dict[str, tuple[float, float, float]], worst_reach: dict[str, int]) -> float:
    """The score's time term for the farthest reach of each kind's groups."""
    base = sum(t[0] for t in seconds.values())
    if base <= 0:
        return 0.0
    return TIME_POINTS * sum(t[worst_reach.get(k, 0)] - t[0] for k, t in seconds.items()) / base
