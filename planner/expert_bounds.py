"""Lower bounds on the max GPU load of one layer's expert placement.

- `mean`: total load / GPUs (some GPU carries at least the average);
- `heaviest_replica`: the smallest possible heaviest replica, w_e / r_e, over replica counts
  with sum r_e = slots and 1 <= r_e <= GPUs (one replica per GPU). Found exactly by giving
  each redundant slot to the heaviest load per replica (the greedy is optimal for this
  min-max since w / r decreases in r): the GPU holding that replica carries at least it;
- `lp_relaxation`: the linear relaxation of the replica-count model (choose r_e by 0/1
  variables z_e,r, load per replica sum_r w_e / r z_e,r, sum of replicas = slots). Its
  optimum mixes the two integer counts around a common per-replica load T on the convex
  envelope of w / r, so it is found by bisection on T instead of an LP solve. It never
  exceeds `heaviest_replica` and is reported so the relaxation's weakness is visible.
The bound is the largest. With groups kept on nodes, an expert's replicas share its node's
G/N GPUs (r_e <= G/N in both bounds above), and a group's whole load lands on one node:
`groups_on_nodes` = the least, over the ways to put NG/N groups on each node, of the
heaviest node's load / (G/N) is a bound too (enumerated while there are at most
MAX_GROUP_PARTITIONS ways, else the heaviest group's load / (G/N)).
Cost: O(S log E) per layer plus 60 bisection steps of O(E).
"""
from __future__ import annotations

import math

import numpy as np

from planner.core.experts import count_equal_partitions, equal_partitions
from solvers.expert_counts import replica_counts


MAX_GROUP_PARTITIONS = 20_000


def groups_on_nodes_bound(group_loads: np.ndarray, nodes: int, gpus_per_node: int) -> float:
    if count_equal_partitions(len(group_loads), nodes) > MAX_GROUP_PARTITIONS:
        return float(group_loads.max()) / gpus_per_node
    best = math.inf
    for assign in equal_partitions(len(group_loads), nodes):
        best = min(best, float(np.bincount(assign, weights=group_loads, minlength=nodes).max()))
    return best / gpus_per_node


def layer_bounds(w: np.ndarray, gpus: int, slots: int, max_replicas: int | None = None) -> dict:
    max_replicas = gpus if max_replicas is None else max_replicas
    mean = float(w.sum()) / gpus
    counts = replica_counts(w, slots, max_replicas)
    heaviest = float((w / counts).max()) if len(w) else 0.0
    lp = _lp_relaxation(w, max_replicas, slots)
    return {"mean": mean, "heaviest_replica": heaviest, "lp_relaxation": max(lp, mean),
            "value": max(mean, heaviest, lp)}


def _lp_relaxation(w: np.ndarray, gpus: int, slots: int) -> float:
    """Smallest T whose fractional replica need, sum_e r_e(T), fits in the slots; r_e(T) is
    where the piecewise-linear interpolation of w_e / r through r = 1..gpus meets T."""
    budget = slots - len(w)
    w = w[w > 0]
    if not len(w):
        return 0.0

    def need(t: float) -> float:
        if t <= 0:
            return np.inf
        k = np.clip(np.floor(w / t), 1, gpus)  # w/(k+1) < t <= w/k
        high = w / k
        low = w / np.minimum(k + 1, gpus)
        frac = np.where(high > low, (high - np.minimum(t, high)) / np.where(high > low, high - low, 1.0), 0.0)
        r = np.where(w / gpus >= t, gpus, k + frac)
        return float((r - 1).sum())

    lo, hi = 0.0, float(w.max())
    for _ in range(60):
        mid = (lo + hi) / 2
        if need(mid) <= budget + 1e-9:
            hi = mid
        else:
            lo = mid
    return hi


def expert_bounds(problem) -> list[dict]:
    """Bounds of every layer (docstring above); `value` is the one ratios are taken to."""
    out = []
    for w in problem.weights:
        if not problem.groups:
            out.append(layer_bounds(w, problem.gpus, problem.slots))
            continue
        per_node = problem.gpus_per_node
        b = layer_bounds(w, problem.gpus, problem.slots, per_node)
        group_loads = w.reshape(problem.groups, -1).sum(axis=1)
        b["groups_on_nodes"] = groups_on_nodes_bound(group_loads, problem.nodes, per_node)
        b["value"] = max(b["value"], b["groups_on_nodes"])
        out.append(b)
    return out
