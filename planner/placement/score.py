"""The placement score, kept up to date as blocks move (the local search's and every
method's one scorer).

Score (lower is better) = spread points + time points:
- spread points: sum over group kinds k and tiers of w_k x W_tier x (max spread + mean
  spread), W_nvlink = W_leaf = 1, W_spine = SPINE_WEIGHT (Arnold, arXiv 2509.15940:
  crossing minipods costs up to 17% of bus bandwidth and up to 70% of send/recv, more than
  crossing racks; what leaving an NVLink domain costs is priced by the time term), w_k the
  kind's share of `bytes_per_step` (1 each when the job gives none);
- time points (planner/placement/timing.py): per kind with bytes, the priced per-step time
  of its farthest-reaching group, as percent lost against every group at its nearest reach.

A group's counts of blocks per domain of each tier, and per kind the histogram of spreads
and reaches, make moving a block O(its groups x tiers).
"""
from __future__ import annotations

from collections import Counter

from planner.placement.cluster import Cluster
from planner.placement.timing import reach, time_points

SPINE_WEIGHT = 10
TIER_WEIGHT = {"nvlink": 1, "leaf": 1, "spine": SPINE_WEIGHT}


def weights(c: Cluster) -> dict[str, float]:
    """Each kind's share of the bytes x the number of kinds (1 each without bytes); TP
    groups spread over blocks (tp_in_node off) without bytes of their own weigh as the
    heaviest kind: TP's per-layer all-reduces are a job's largest traffic."""
    given = dict(c.job.bytes_per_step)
    total = sum(given.get(k, 0.0) for k in c.kinds)
    if not given or total <= 0:
        return {k: 1.0 for k in c.kinds}
    out = {k: given.get(k, 0.0) / total * len(c.kinds) for k in c.kinds}
    if "tp" in out and "tp" not in given:
        out["tp"] = max(out.values())
    return out


class Scorer:
    """The score of `slot_of` (block -> slot), updated by `move`."""

    def __init__(self, c: Cluster, slot_of: tuple[int, ...] | list[int]):
        self.c = c
        self.slot_of = list(slot_of)
        tiers = len(c.tiers)
        self.weight = weights(c)
        self.seconds = c.tier_seconds
        self.groups_of: list[list[int]] = [[] for _ in range(c.blocks)]
        for i, g in enumerate(c.groups):
            for b in g.blocks:
                self.groups_of[b].append(i)
        self.count = [[Counter() for _ in range(tiers)] for _ in c.groups]  # per group and tier: blocks per domain
        self.spread = [[0] * tiers for _ in c.groups]
        self.hist = {(k, t): Counter() for k in c.kinds for t in range(tiers)}
        self.reaches = {k: Counter() for k in c.kinds}
        self.size = Counter(g.kind for g in c.groups)
        for i, g in enumerate(c.groups):
            for b in g.blocks:
                self._add(i, self.slot_of[b], 1)
            self._record(i, 1)

    def _add(self, i: int, slot: int, sign: int) -> None:
        for t, domain in enumerate(self.c.domains[slot]):
            counter = self.count[i][t]
            counter[domain] += sign
            if not counter[domain]:
                del counter[domain]

    def _record(self, i: int, sign: int) -> None:
        kind = self.c.groups[i].kind
        if sign > 0:
            self.spread[i] = [len(counter) - 1 for counter in self.count[i]]
        for t, v in enumerate(self.spread[i]):
            self.hist[(kind, t)][v] += sign
        self.reaches[kind][reach(self.spread[i])] += sign

    def move(self, block: int, slot: int) -> None:
        old = self.slot_of[block]
        if old == slot:
            return
        for i in self.groups_of[block]:
            self._record(i, -1)
            self._add(i, old, -1)
            self._add(i, slot, 1)
            self._record(i, 1)
        self.slot_of[block] = slot

    def spreads(self) -> dict[str, dict[str, tuple[int, float]]]:
        """kind -> tier -> (max spread, mean spread)."""
        out: dict[str, dict[str, tuple[int, float]]] = {}
        for k in self.c.kinds:
            out[k] = {}
            for t, tier in enumerate(self.c.tiers):
                h = self.hist[(k, t)]
                present = [v for v, n in h.items() if n > 0]
                out[k][tier] = (max(present), sum(v * n for v, n in h.items()) / self.size[k])
        return out

    def parts(self) -> tuple[float, float]:
        """(spread points, time points)."""
        spread = 0.0
        for kind, tiers in self.spreads().items():
            for tier, (mx, mean) in tiers.items():
                spread += self.weight[kind] * TIER_WEIGHT[tier] * (mx + mean)
        worst = {k: max(r for r, n in self.reaches[k].items() if n > 0) for k in self.seconds}
        return spread, time_points(self.seconds, worst)

    def total(self) -> float:
        return sum(self.parts())
