"""What every expert map passes before it is written (`check_expert_maps`) and the
figures a plan reports of it (max/mean per layer, cross-node co-activated tokens).
"""
from __future__ import annotations

import numpy as np

from planner.core.experts import ExpertProblem, crossing_tokens, gpu_loads, holds_by_node


def max_over_mean_per_layer(problem: ExpertProblem, maps: np.ndarray) -> np.ndarray:
    """Max GPU load / mean GPU load of every layer (1.0 for a layer without load)."""
    out = np.ones(problem.layers)
    for layer, (w, phys) in enumerate(zip(problem.weights, maps)):
        mean = w.sum() / problem.gpus
        if mean > 0:
            out[layer] = gpu_loads(w, phys, problem.slots_per_gpu).max() / mean
    return out


def node_holds(problem: ExpertProblem, phys: np.ndarray) -> np.ndarray:
    """[nodes, experts] True where a node holds a replica of the expert."""
    return holds_by_node(phys, problem.slots_per_gpu * problem.gpus_per_node, problem.experts)


def cross_node_tokens(problem: ExpertProblem, maps: np.ndarray) -> tuple[float, float]:
    """(co-activated token pairs whose two experts share no node, all co-activated pairs),
    summed over layers: the pairs a token must reach over the scale-out network."""
    crossing = total = 0.0
    for layer, phys in enumerate(maps):
        first, second = problem.coactivation.first[layer], problem.coactivation.second[layer]
        tokens = problem.coactivation.tokens[layer]
        crossing += crossing_tokens(node_holds(problem, phys), first, second, tokens)
        total += float(tokens.sum())
    return crossing, total


def expert_metrics(problem: ExpertProblem, maps: np.ndarray) -> dict:
    per_layer = max_over_mean_per_layer(problem, maps)
    metrics = {"max_over_mean": float(per_layer.mean()), "worst_layer_max_over_mean": float(per_layer.max()),
               "max_over_mean_per_layer": [float(v) for v in per_layer]}
    if problem.coactivation is not None:
        crossing, total = cross_node_tokens(problem, maps)
        metrics["cross_node_coactivated_tokens"] = crossing
        metrics["cross_node_fraction"] = crossing / total if total else 0.0
    return metrics


def check_expert_maps(problem: ExpertProblem, maps: np.ndarray, shared_gpus: bool = False) -> None:
    """Raise ValueError unless `maps` is a valid placement of every layer: shape [layers,
    G*K], ids in range, every expert in at least one slot, one replica of an expert per
    GPU (unless `shared_gpus`: EPLB may put two on one GPU), and with groups every
    group's replicas on one node."""
    expected = (problem.layers, problem.slots)
    if maps.shape != expected:
        raise ValueError(f"expert map has shape {maps.shape}, expected {expected}")
    if maps.min() < 0 or maps.max() >= problem.experts:
        raise ValueError("expert map names an expert that does not exist")
    for layer, phys in enumerate(maps):
        counts = np.bincount(phys, minlength=problem.experts)
        if (counts == 0).any():
            raise ValueError(f"layer {layer}: expert {int(np.argmin(counts))} has no slot")
        per_gpu = np.sort(phys.reshape(problem.gpus, problem.slots_per_gpu), axis=1)
        if not shared_gpus and (per_gpu[:, 1:] == per_gpu[:, :-1]).any():
            raise ValueError(f"layer {layer}: a GPU holds two replicas of one expert")
        if problem.groups:
            group_of = np.arange(problem.experts) // (problem.experts // problem.groups)
            holds = node_holds(problem, phys)
            nodes_per_group = np.array([holds[:, group_of == grp].any(axis=1).sum() for grp in range(problem.groups)])
            if (nodes_per_group != 1).any():
                raise ValueError(f"layer {layer}: expert group {int(np.argmax(nodes_per_group != 1))} spans "
                                 f"{int(nodes_per_group.max())} nodes")

