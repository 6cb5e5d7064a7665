"""MoE expert replication and placement by a fast heuristic (`--method greedy`).

One layer at a time, on the expert loads w (tokens routed to each logical expert):
1. replica counts by water-filling: every expert gets one replica, then each redundant
   slot goes to the expert with the heaviest load per replica (w / count), at most one
   replica per GPU (solvers/expert_counts.py);
2. packing: replicas in decreasing load go to the least-loaded GPU that has a free slot
   and does not hold that expert yet (longest-processing-time with slot capacities);
3. local search: the most loaded GPU swaps one replica with a replica of another GPU
   when that lowers the larger of the two loads, until no swap helps;
4. if the result is above the simple bound T = max(total / GPUs, heaviest replica) by
   more than TARGET_TOLERANCE, steps 2-3 are repeated on packing-aware counts aimed at T
   (both spare-slot policies of solvers/expert_counts.py) and the best map is kept;
5. replica moves: a replica of the lightest-per-slot donor moves to the heaviest replica
   on the most loaded GPU, re-packed, kept when the maximum drops.
A replica carries its expert's load / replica count (uniform dispatch over replicas, as
SGLang and vLLM dispatch). A heuristic: planner/expert_bounds.py measures it.

The hierarchical variant (expert groups, node-limited routing) first packs whole groups
onto nodes (equal group counts per node, heaviest group first to the lightest node), then
runs the above inside every node, so a token's experts span only its groups' nodes.

Cost per layer: O(S log S + rounds x K x S) for S slots of K per GPU, times at most 3 + 
REPLICA_MOVES packings; 61 layers x 256 experts on 64 GPUs take about a tenth of a second.
"""
from __future__ import annotations

import heapq

import numpy as np

from planner.core.experts import gpu_loads
from solvers.expert_counts import SPARE_POLICIES, counts_for_target, replica_counts

SWAP_ROUNDS_PER_SLOT = 4  # local-search swaps per slot at most (each strictly improves)
REPLICA_MOVES = 6  # replica moves tried per layer after the first packing
TARGET_TOLERANCE = 1e-3  # packing-aware counts are tried when the first packing is further off
_EPS = 1e-9


def pack_replicas(w: np.ndarray, counts: np.ndarray, gpus: int, slots_per_gpu: int) -> np.ndarray:
    """Physical-to-logical map of one layer: replicas by decreasing load onto the least
    loaded GPU with a free slot that lacks the expert. O(S log G + S x G) worst case."""
    share = w / counts
    experts = np.repeat(np.arange(len(w)), counts)
    order = np.lexsort((experts, -share[experts]))
    slots: list[list[int]] = [[] for _ in range(gpus)]
    place_in_order(experts[order].tolist(), share, slots, np.zeros(gpus), slots_per_gpu)
    return flatten_slots(slots)


def place_in_order(items: list[int], share: np.ndarray, slots: list[list[int]], load: np.ndarray,
                   slots_per_gpu: int) -> None:
    """Put each expert of `items`, in order, on the least loaded GPU (ties: lower id) that
    has a free slot and lacks it; `slots[g]` (the GPU's experts so far) and `load` (their
    loads) are updated in place. O(items x log G), more when GPUs must be skipped."""
    heap = [(float(load[g]), g) for g in range(len(slots)) if len(slots[g]) < slots_per_gpu]
    heapq.heapify(heap)
    held = [set(s) for s in slots]
    for e in items:
        skipped = []
        while heap:
            gpu_load, g = heapq.heappop(heap)
            if e not in held[g]:
                break
            skipped.append((gpu_load, g))
        else:  # every GPU with room holds e already: a full GPU makes room
            _, roomy = skipped.pop(0)
            g = _make_room_for(e, roomy, slots, held, load, share)
            if len(slots[roomy]) < slots_per_gpu:
                skipped.append((float(load[roomy]), roomy))
            gpu_load = float(load[g])
        held[g].add(e)
        slots[g].append(e)
        load[g] = gpu_load + float(share[e])
        if len(slots[g]) < slots_per_gpu:
            heapq.heappush(heap, (load[g], g))
        for item in skipped:
            heapq.heappush(heap, item)


def _make_room_for(e: int, roomy: int, slots, held, load, share) -> int:
    """GPU `roomy` has a free slot but holds e: move an expert f that `roomy` lacks from a
    GPU h that lacks e into it (the move that keeps the larger of the two loads least)
    and return h, whose freed slot takes e. Raises ValueError if no such move exists."""
    best = None
    for h, experts in enumerate(slots):
        if e in held[h] or h == roomy:
            continue
        for f in experts:
            if f not in held[roomy]:
                worse = max(load[roomy] + share[f], load[h] - share[f] + share[e])
                if best is None or worse < best[0]:
                    best = (worse, h, f)
    if best is None:
        raise ValueError(f"no GPU can take another replica of expert {e}")
    _, h, f = best
    slots[h].remove(f)
    held[h].discard(f)
    slots[roomy].append(f)
    held[roomy].add(f)
    load[h] -= share[f]
    load[roomy] += share[f]
    return h


def flatten_slots(slots: list[list[int]]) -> np.ndarray:
    """The physical-to-logical map of per-GPU expert lists, each GPU's slots in id order."""
    return np.array([e for gpu in slots for e in sorted(gpu)], dtype=np.int64)


def sorted_within_gpus(phys: np.ndarray, slots_per_gpu: int) -> np.ndarray:
    return np.sort(phys.reshape(-1, slots_per_gpu), axis=1).reshape(-1)


def layer_state(w: np.ndarray, phys: np.ndarray, slots_per_gpu: int):
    """(share per expert, GPU of every slot, holds[g, e], load per GPU) of a layer's map."""
    gpus = len(phys) // slots_per_gpu
    counts = np.bincount(phys, minlength=len(w))
    share = w / np.maximum(counts, 1)
    gpu_of = np.arange(len(phys)) // slots_per_gpu
    holds = np.zeros((gpus, len(w)), dtype=bool)
    holds[gpu_of, phys] = True
    return share, gpu_of, holds, np.bincount(gpu_of, weights=share[phys], minlength=gpus)


def improve_by_swaps(w: np.ndarray, phys: np.ndarray, slots_per_gpu: int) -> np.ndarray:
    """Swap a replica of the most loaded GPU with one elsewhere while that lowers the
    larger of the two GPUs' loads (and keeps one replica of an expert per GPU).
    O(rounds x K x S) with numpy."""
    phys = phys.copy()
    share, gpu_of, holds, load = layer_state(w, phys, slots_per_gpu)
    for _ in range(SWAP_ROUNDS_PER_SLOT * len(phys)):
        h = int(np.argmax(load))
        mine = np.arange(h * slots_per_gpu, (h + 1) * slots_per_gpu)
        delta = share[phys[mine]][:, None] - share[phys][None, :]
        other = gpu_of[None, :]
        new_max = np.maximum(load[h] - delta, load[other] + delta)
        ok = (other != h) & (delta > _EPS)
        ok &= ~holds[gpu_of[None, :], phys[mine][:, None]]  # the other GPU lacks my expert
        ok &= ~holds[h][phys][None, :]  # and I lack its expert
        new_max = np.where(ok, new_max, np.inf)
        a, b = np.unravel_index(int(np.argmin(new_max)), new_max.shape)
        if not new_max[a, b] < load[h] - _EPS * max(1.0, load[h]):
            break
        sa, sb, g = int(mine[a]), int(b), int(gpu_of[b])
        ea, eb = int(phys[sa]), int(phys[sb])
        holds[h, ea], holds[g, eb], holds[h, eb], holds[g, ea] = False, False, True, True
        phys[sa], phys[sb] = eb, ea
        load[h] -= delta[a, b]
        load[g] += delta[a, b]
    return sorted_within_gpus(phys, slots_per_gpu)


def _pack_and_swap(w, counts, gpus, slots_per_gpu):
    phys = improve_by_swaps(w, pack_replicas(w, counts, gpus, slots_per_gpu), slots_per_gpu)
    return phys, float(gpu_loads(w, phys, slots_per_gpu).max())


def greedy_layer(w: np.ndarray, gpus: int, slots_per_gpu: int) -> np.ndarray:
    """Physical-to-logical map [gpus * slots_per_gpu] of one layer (steps 1-4 above)."""
    w = np.asarray(w, dtype=np.float64)
    slots = gpus * slots_per_gpu
    counts = replica_counts(w, slots, gpus)
    best = (*_pack_and_swap(w, counts, gpus, slots_per_gpu), counts)
    target = max(float(w.sum()) / gpus, float((w / counts).max()))  # a lower bound
    if best[1] > target * (1 + TARGET_TOLERANCE):
        for spare in SPARE_POLICIES:
            aimed = counts_for_target(w, target, gpus, slots, spare)
            if aimed is not None:
                phys, worst = _pack_and_swap(w, aimed, gpus, slots_per_gpu)
                if worst < best[1] - _EPS * max(1.0, best[1]):
                    best = (phys, worst, aimed)
    phys, worst, counts = best
    for _ in range(REPLICA_MOVES):
        moved = _replica_move(w, counts, phys, slots_per_gpu, gpus)
        if moved is None:
            break
        trial, trial_worst = _pack_and_swap(w, moved, gpus, slots_per_gpu)
        if not trial_worst < worst - _EPS * max(1.0, worst):
            break
        counts, phys, worst = moved, trial, trial_worst
    return phys


def _replica_move(w, counts, phys, slots_per_gpu, gpus):
    """Counts with one replica moved from the donor whose per-replica load grows least to
    the heaviest-per-replica expert on the most loaded GPU; None if there is no such move."""
    load = gpu_loads(w, phys, slots_per_gpu)
    h = int(np.argmax(load))
    on_h = phys[h * slots_per_gpu:(h + 1) * slots_per_gpu]
    share = w / counts
    takers = [e for e in on_h[np.argsort(-share[on_h], kind="stable")].tolist() if counts[e] < gpus]
    donors = np.flatnonzero(counts > 1)
    if not takers or not donors.size:
        return None
    taker = takers[0]
    donors = donors[donors != taker]
    if not donors.size:
        return None
    grown = w[donors] / (counts[donors] - 1)
    donor = int(donors[np.argmin(grown)])
    if grown.min() >= share[taker]:
        return None
    moved = counts.copy()
    moved[taker] += 1
    moved[donor] -= 1
    return moved


def pack_groups_on_nodes(group_loads: np.ndarray, nodes: int) -> np.ndarray:
    """Node of every expert group: equal group counts per node, heaviest group first to
    the lightest node with room (ties: lower ids). O(NG log NG + NG x N)."""
    per_node = len(group_loads) // nodes
    node_load = np.zeros(nodes)
    room = np.full(nodes, per_node)
    node_of = np.empty(len(group_loads), dtype=np.int64)
    for grp in np.lexsort((np.arange(len(group_loads)), -group_loads)).tolist():
        n = int(np.argmin(np.where(room > 0, node_load, np.inf)))
        node_of[grp] = n
        node_load[n] += group_loads[grp]
        room[n] -= 1
    return node_of


def greedy_hierarchical_layer(w: np.ndarray, gpus: int, slots_per_gpu: int, nodes: int,
                              groups: int) -> np.ndarray:
    """Groups packed onto nodes, then `greedy_layer` inside each node's GPUs and slots."""
    w = np.asarray(w, dtype=np.float64)
    group_of = np.arange(len(w)) // (len(w) // groups)
    node_of_expert = pack_groups_on_nodes(np.bincount(group_of, weights=w, minlength=groups), nodes)[group_of]
    parts = []
    for n in range(nodes):  # node n owns GPUs n*G/N .. (n+1)*G/N - 1
        experts = np.flatnonzero(node_of_expert == n)
        parts.append(experts[greedy_layer(w[experts], gpus // nodes, slots_per_gpu)])
    return np.concatenate(parts)


def greedy_assign(weights: np.ndarray, gpus: int, slots_per_gpu: int, nodes: int = 1,
                  groups: int | None = None) -> np.ndarray:
    """Physical-to-logical maps [layers, gpus * slots_per_gpu]; with `groups`, the
    hierarchical variant (groups stay on nodes)."""
    if groups:
        return np.stack([greedy_hierarchical_layer(w, gpus, slots_per_gpu, nodes, groups) for w in weights])
    return np.stack([greedy_layer(w, gpus, slots_per_gpu) for w in weights])
