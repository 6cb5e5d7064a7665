"""Replica counts of one layer's experts: how many slots each logical expert gets.

Two ways, both filling exactly `slots` with 1 <= r_e <= `max_per_expert`:
- `replica_counts` (water-filling): each redundant slot goes to the heaviest load per
  replica. It minimises the heaviest replica, but on heavy skew it makes many replicas of
  about the same size, and when more than one per GPU is above half the target, two of
  them share a GPU (on 64 GPUs x 5 slots with lognormal(0, 2) loads, a layer ends at 1.38x
  the mean with 67 replicas above half of it);
- `counts_for_target` (packing-aware): the fewest replicas that keep every replica at or
  under a target load T; if more replicas than GPUs stay above T/2, the experts that cost
  the fewest extra slots per such replica are split below T/2; the slots left over go to
  `spare`:
    "lightest": a second replica of the lightest experts, so that GPUs holding one large
                replica get near-empty companions for their other slots;
    "halves":   water-filling among experts whose replicas are already at or under T/2,
                so that no replica crosses above T/2.
The greedy packs each candidate and keeps the best (solvers/expert_greedy.py).
Cost: O(S log E) each.
"""
from __future__ import annotations

import heapq

import numpy as np

SPARE_POLICIES = ("lightest", "halves")


def replica_counts(w: np.ndarray, slots: int, max_per_expert: int) -> np.ndarray:
    """Replicas per expert: one each, then the heaviest load per replica gets the next
    slot (ties: lower expert id), capped at `max_per_expert`. O(S log E)."""
    counts = np.ones(len(w), dtype=np.int64)
    _water_fill(w, counts, slots - len(w), np.ones(len(w), dtype=bool), max_per_expert)
    return counts


def _water_fill(w, counts, extra, eligible, max_per_expert) -> bool:
    """Give `extra` replicas, one at a time, to the eligible expert with the heaviest load
    per replica (ties: lower id); False if the eligible experts run out of room."""
    heap = [(-float(w[e]) / counts[e], e) for e in np.flatnonzero(eligible & (counts < max_per_expert)).tolist()]
    heapq.heapify(heap)
    for _ in range(extra):
        if not heap:
            return False
        _, e = heapq.heappop(heap)
        counts[e] += 1
        if counts[e] < max_per_expert:
            heapq.heappush(heap, (-float(w[e]) / counts[e], e))
    return True


def counts_for_target(w: np.ndarray, target: float, gpus: int, slots: int,
                      spare: str) -> np.ndarray | None:
    """Replica counts aimed at max replica load `target` on `gpus` GPUs, at most one
    replica of an expert per GPU (docstring above); None when the target needs more slots
    than there are."""
    if spare not in SPARE_POLICIES:
        raise ValueError(f"unknown spare policy {spare!r}; choose from {SPARE_POLICIES}")
    counts = np.maximum(1, np.ceil(w / target - 1e-12)).astype(np.int64)
    if counts.max() > gpus or counts.sum() > slots:
        return None
    half = target / 2
    large = np.flatnonzero(w / counts > half)
    excess = int(counts[large].sum()) - gpus  # two on one GPU would exceed the target
    if excess > 0:
        split = np.ceil(w[large] / half - 1e-12).astype(np.int64)
        cost = (split - counts[large]) / counts[large]  # extra slots per large replica removed
        for i in np.lexsort((large, cost)).tolist():
            e = int(large[i])
            if excess <= 0:
                break
            if split[i] <= gpus and counts.sum() + split[i] - counts[e] <= slots:
                excess -= int(counts[e])
                counts[e] = split[i]
        if excess > 0:
            return None
    extra = slots - int(counts.sum())
    if spare == "halves":
        return counts if _water_fill(w, counts, extra, w / counts <= half, gpus) else None
    singles = np.flatnonzero(counts == 1)
    if len(singles) < extra or gpus < 2:
        return None
    counts[singles[np.lexsort((singles, w[singles]))[:extra]]] += 1
    return counts
