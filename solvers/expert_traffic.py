"""Cross-node token traffic at equal balance: a swap search over a layer's expert map.

Co-activation pairs (e, f, tokens): the same tokens pick experts e and f. A pair is served
within a node when some node holds a replica of both; otherwise those tokens cross the
scale-out network. Heaviest pairs first, a pair that crosses tries swapping a replica of
f with a replica on a node that holds e (and the other way round); a swap is kept when
it lowers the crossing tokens and leaves both GPUs at or below the layer's current max
load, so balance is unchanged. A heuristic, used after greedy and after the MILP.

Cost: O(P x candidates x P) per layer for the P heaviest pairs (PAIRS_TRIED).
"""
from __future__ import annotations

import numpy as np

from planner.core.experts import crossing_tokens, holds_by_node
from solvers.expert_greedy import layer_state, sorted_within_gpus

PAIRS_TRIED = 256  # heaviest co-activation pairs a layer's search starts from
_EPS = 1e-9


def reduce_crossing(w: np.ndarray, phys: np.ndarray, slots_per_gpu: int, gpus_per_node: int,
                    first: np.ndarray, second: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The map with fewer crossing tokens at the same max GPU load (not for groups kept
    on nodes: there every cross-node swap would move a group)."""
    phys = phys.copy()
    if not len(tokens):
        return phys
    experts = len(w)
    share, gpu_of, holds_gpu, load = layer_state(w, phys, slots_per_gpu)
    node_of = gpu_of // gpus_per_node
    ceiling = load.max() * (1 + _EPS)
    holds = holds_by_node(phys, slots_per_gpu * gpus_per_node, experts)

    def refresh(*changed):
        for e in changed:
            holds[:, e] = False
            holds[node_of[phys == e], e] = True

    pairs_of = [[] for _ in range(experts)]
    for i, (a, b) in enumerate(zip(first.tolist(), second.tolist())):
        pairs_of[a].append(i)
        pairs_of[b].append(i)

    def swapped_delta(slot_a, slot_b):
        """Crossing tokens after minus before swapping the experts of two slots."""
        x, move = int(phys[slot_a]), int(phys[slot_b])
        idx = np.array(sorted(set(pairs_of[x]) | set(pairs_of[move])), dtype=np.int64)
        if not idx.size:
            return 0.0
        before = crossing_tokens(holds, first[idx], second[idx], tokens[idx])
        saved = holds[:, [x, move]].copy()
        phys[slot_a], phys[slot_b] = move, x
        refresh(x, move)
        after = crossing_tokens(holds, first[idx], second[idx], tokens[idx])
        phys[slot_a], phys[slot_b] = x, move
        holds[:, [x, move]] = saved
        return after - before
    for pair in np.argsort(-tokens, kind="stable")[:PAIRS_TRIED].tolist():
        e, f = int(first[pair]), int(second[pair])
        if (holds[:, e] & holds[:, f]).any():
            continue
        best = None
        for stay, move in ((e, f), (f, e)):
            for slot_b in np.flatnonzero(phys == move).tolist():
                g_b = gpu_of[slot_b]
                for n in np.flatnonzero(holds[:, stay]).tolist():
                    cand = np.flatnonzero((node_of == n) & (phys != stay))
                    for slot_a in cand.tolist():
                        x, g_a = int(phys[slot_a]), gpu_of[slot_a]
                        if holds_gpu[g_a, move] or holds_gpu[g_b, x]:
                            continue
                        d = share[move] - share[x]
                        if load[g_a] + d > ceiling or load[g_b] - d > ceiling:
                            continue
                        delta = swapped_delta(slot_a, slot_b)
                        if delta < -_EPS and (best is None or delta < best[0]):
                            best = (delta, slot_a, slot_b)
        if best is None:
            continue
        _, slot_a, slot_b = best
        x, move = int(phys[slot_a]), int(phys[slot_b])
        g_a, g_b = gpu_of[slot_a], gpu_of[slot_b]
        d = share[move] - share[x]
        load[g_a] += d
        load[g_b] -= d
        holds_gpu[g_a, x], holds_gpu[g_a, move], holds_gpu[g_b, move], holds_gpu[g_b, x] = False, True, False, True
        phys[slot_a], phys[slot_b] = move, x
        refresh(x, move)
    return sorted_within_gpus(phys, slots_per_gpu)
