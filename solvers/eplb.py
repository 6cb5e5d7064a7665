"""DeepSeek's expert-parallel load balancer (EPLB), reimplemented in numpy as a baseline.

This is an independent reimplementation, written from the public description of the
heuristic (github.com/deepseek-ai/EPLB: README and eplb.py), so the planner's own expert
placement can be measured against it. It follows that algorithm step by step, including
its tie-breaking, so that it reproduces the published example exactly.

Given the load of each logical expert per MoE layer, it chooses how many physical
replicas each expert gets and on which GPU each replica sits:

- hierarchical policy (the number of nodes divides the number of expert groups):
  1. pack the expert groups onto nodes by balanced packing of the group loads;
  2. within each node, start from one replica per expert and hand out the node's
     remaining slots one at a time to the expert with the largest load per replica;
  3. pack each node's physical experts, weighted by load / replica count, onto the
     node's GPUs by balanced packing.
- global policy (otherwise): the same steps with one node and one group.

Balanced packing: items in order of decreasing weight, each to the pack of least load
that still has room, every pack taking exactly items / packs items.

Cost per layer, with E experts, R replicas, G groups and P GPUs: O(G log G + G * nodes)
for step 1, O((R - E) * E) for step 2 and O(R log R + R * P) for step 3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Packing:
    """`pack[l, i]` = pack of item i in layer l; `rank[l, i]` = its position in that pack."""

    pack: np.ndarray
    rank: np.ndarray


@dataclass(frozen=True)
class Replication:
    """Per row: `phy_to_log[r, p]` = expert of physical slot p, `replica[r, p]` = which copy
    of that expert it is (0-based), `count[r, e]` = copies of expert e."""

    phy_to_log: np.ndarray
    replica: np.ndarray
    count: np.ndarray


def balanced_packing(weights: np.ndarray, num_packs: int) -> Packing:
    """Split each row's items into `num_packs` packs of equal size with balanced loads."""
    rows, items = weights.shape
    per_pack = items // num_packs
    if per_pack == 1:
        # The reference keeps the input order when every pack holds a single item.
        identity = np.broadcast_to(np.arange(items, dtype=np.int64), (rows, items)).copy()
        return Packing(pack=identity, rank=np.zeros((rows, items), dtype=np.int64))
    pack = np.full((rows, items), -1, dtype=np.int64)
    rank = np.full((rows, items), -1, dtype=np.int64)
    for row in range(rows):
        # Equal weights keep index order, and equal loads go to the lowest pack,
        # as in the reference; the published example depends on both.
        order = np.argsort(-weights[row], kind="stable")
        load = np.zeros(num_packs, dtype=weights.dtype)
        size = np.zeros(num_packs, dtype=np.int64)
        for item in order:
            open_packs = np.flatnonzero(size < per_pack)
            target = open_packs[np.argmin(load[open_packs])]
            pack[row, item] = target
            rank[row, item] = size[target]
            load[target] += weights[row, item]
            size[target] += 1
    return Packing(pack=pack, rank=rank)


def replicate_experts(weights: np.ndarray, num_physical: int) -> Replication:
    """Give each row's experts `num_physical` slots in all, greedily by load per replica."""
    rows, num_logical = weights.shape
    rows_index = np.arange(rows)
    phy_to_log = np.broadcast_to(np.arange(num_physical, dtype=np.int64),
                                 (rows, num_physical)).copy()
    replica = np.zeros((rows, num_physical), dtype=np.int64)
    count = np.ones((rows, num_logical), dtype=np.int64)
    for slot in range(num_logical, num_physical):
        busiest = np.argmax(weights / count.astype(weights.dtype), axis=1)
        phy_to_log[:, slot] = busiest
        replica[:, slot] = count[rows_index, busiest]
        count[rows_index, busiest] += 1
    return Replication(phy_to_log=phy_to_log, replica=replica, count=count)


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.arange(perm.shape[1], dtype=perm.dtype)[None, :], axis=1)
    return inv


def _rebalance_hierarchical(weights: np.ndarray, num_physical: int, num_groups: int,
                            num_nodes: int, num_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    layers, num_logical = weights.shape
    group_size = num_logical // num_groups
    groups_per_node = num_groups // num_nodes
    logical_per_node = num_logical // num_nodes
    slots_per_gpu = num_physical // num_gpus

    # Step 1: groups to nodes. Experts are renumbered node-major ("node-local ids") so
    # that each node's experts form a contiguous block.
    group_load = weights.reshape(layers, num_groups, group_size).sum(axis=2)
    groups = balanced_packing(group_load, num_nodes)
    group_start = (groups.pack * groups_per_node + groups.rank) * group_size
    log_to_local = (group_start[:, :, None] + np.arange(group_size)).reshape(layers, num_logical)
    local_to_log = _inverse(log_to_local)

    # Step 2: replicas within each node; one row per (layer, node).
    local_load = np.take_along_axis(weights, local_to_log, axis=1).reshape(-1, logical_per_node)
    rep = replicate_experts(local_load, num_physical // num_nodes)

    # Step 3: each node's physical experts onto its GPUs.
    slot_load = np.take_along_axis(local_load / rep.count.astype(local_load.dtype),
                                   rep.phy_to_log, axis=1)
    gpus = balanced_packing(slot_load, num_gpus // num_nodes)
    placed_to_slot = _inverse(gpus.pack * slots_per_gpu + gpus.rank)

    placed_local = np.take_along_axis(rep.phy_to_log, placed_to_slot, axis=1)
    node_offset = (np.arange(num_nodes, dtype=np.int64) * logical_per_node)[None, :, None]
    placed_local = (placed_local.reshape(layers, num_nodes, -1) + node_offset).reshape(layers, -1)
    physical_to_logical = np.take_along_axis(local_to_log, placed_local, axis=1)
    logical_count = np.take_along_axis(rep.count.reshape(layers, -1), log_to_local, axis=1)
    return physical_to_logical, logical_count


def eplb_rebalance(weights: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int,
                   num_gpus: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate and place experts as DeepSeek's EPLB does.

    `weights` [layers, experts]: load of each logical expert. Returns
    `physical_to_logical` [layers, num_replicas] (slot s sits on GPU s // (num_replicas /
    num_gpus), on node s // (num_replicas / num_nodes)) and `logical_count`
    [layers, experts] (replicas of each expert), both int64.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] == 0:
        raise ValueError(f"weights must be a [layers, experts] array, got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    for name, value in (("num_replicas", num_replicas), ("num_groups", num_groups),
                        ("num_nodes", num_nodes), ("num_gpus", num_gpus)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    num_logical = weights.shape[1]
    if num_gpus % num_nodes:
        raise ValueError(f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes})")
    if num_replicas % num_gpus:
        raise ValueError(f"num_replicas ({num_replicas}) must be a multiple of num_gpus "
                         f"({num_gpus})")
    if num_replicas < num_logical:
        raise ValueError(f"num_replicas ({num_replicas}) is below the number of experts "
                         f"({num_logical}); every expert needs a replica")
    if num_groups % num_nodes == 0:
        if num_logical % num_groups:
            raise ValueError(f"the number of experts ({num_logical}) must be a multiple of "
                             f"num_groups ({num_groups})")
    else:
        num_groups, num_nodes = 1, 1
    # The reference computes in float32; keeping it makes near-ties break the same way.
    loads = weights.astype(np.float32)
    return _rebalance_hierarchical(loads, num_replicas, num_groups, num_nodes, num_gpus)
