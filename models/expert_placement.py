"""The whole expert-placement MILP (`--method milp`): which layer models to solve, and
the maps, solve and bounds they give.

Without expert groups: one model per layer (models/expert_milp.py), warm-started from
the given map. With groups every group stays on one node: when there are at most
MAX_SPLIT_MODELS node models in all, one model per node for every group-to-node split
(greedy's packing inside each node as its warm start), and each layer keeps its best
split; else one per node of the warm start's split. With co-activation data on several
nodes and no groups, a second, lexicographic objective follows
(models/expert_traffic_milp.py: GPUs' contents placed on nodes for fewer cross-node
tokens, the max load unchanged) with SECOND_OBJECTIVE_SHARE of the time.

A split's max load is its worst node's; its bound is the worst node's exact-model bound.
The least of those over all splits is a lower bound on the layer when the splits are all
of them and every model is exact (the `duals` returned, 0 where there is none).
"""
from __future__ import annotations

import numpy as np

from models.expert_milp import solve_layers, solve_seconds, summarize
from models.expert_traffic_milp import place_layers_on_nodes, summarize_nodes
from planner.core.experts import ExpertProblem, count_equal_partitions, equal_partitions, gpu_loads
from solvers import SolveResult, Termination, combined_limit
from solvers.expert_greedy import greedy_layer

MAX_SPLIT_MODELS = 256  # node models when the milp tries every group-to-node split
FIRST_OBJECTIVE_SHARE = 0.75  # of the milp's time for the max load when a traffic model follows


def model_count(problem: ExpertProblem) -> int:
    """How many layer (or layer x node) models `milp_expert_maps` solves."""
    if not problem.groups:
        return problem.layers
    every_split = problem.layers * count_equal_partitions(problem.groups, problem.nodes) * problem.nodes
    return every_split if every_split <= MAX_SPLIT_MODELS else problem.layers * problem.nodes


def milp_expert_maps(problem: ExpertProblem, warm: np.ndarray, time_limit_s: float, solver: str | None = None
                     ) -> tuple[np.ndarray, SolveResult, dict, np.ndarray]:
    """(maps, the solves as one result, the model's figures, per-layer dual bounds).

    The result's status is the solver's own (`feasible` unless told otherwise): whether a
    map is optimal is decided against the bound (planner/kinds/experts.py)."""
    jobs, every_split = _jobs(problem, warm)
    second_stage = problem.has_node_traffic
    first_share = FIRST_OBJECTIVE_SHARE if second_stage else 1.0
    solves = solve_layers([(problem.weights[layer][experts], gpus, problem.slots_per_gpu, start)
                           for layer, _, _, experts, gpus, start in jobs], time_limit_s * first_share, solver)
    maps, duals = _best_splits(problem, warm, jobs, solves, every_split)
    info = summarize(solves)
    seconds = solve_seconds(solves)
    limits = [s.limit for s in solves]
    if second_stage:
        maps, info["traffic_model"], node_limits = _traffic_model(problem, maps, time_limit_s * (1 - first_share),
                                                                 solver)
        seconds += info["traffic_model"]["seconds"]
        limits += node_limits
    result = SolveResult(solver or "cpsat", Termination.feasible, None, None, None, seconds, combined_limit(limits),
                         None, f"{len(solves)} layer models")
    return maps, result, info, duals


def _jobs(problem: ExpertProblem, maps: np.ndarray) -> tuple[list[tuple], bool]:
    """(layer, split, node or None, experts, GPUs, warm map in local ids) of every model,
    and whether the splits are every group-to-node split (module docstring)."""
    if not problem.groups:
        return [(layer, 0, None, np.arange(problem.experts), problem.gpus, phys)
                for layer, phys in enumerate(maps)], True
    group_of = np.arange(problem.experts) // (problem.experts // problem.groups)
    splits = count_equal_partitions(problem.groups, problem.nodes)
    jobs = []
    if problem.layers * splits * problem.nodes <= MAX_SPLIT_MODELS:
        for layer, w in enumerate(problem.weights):
            for index, split in enumerate(equal_partitions(problem.groups, problem.nodes)):
                node_of = np.asarray(split)[group_of]
                for n in range(problem.nodes):
                    experts = np.flatnonzero(node_of == n)
                    warm = greedy_layer(w[experts], problem.gpus_per_node, problem.slots_per_gpu)
                    jobs.append((layer, index, n, experts, problem.gpus_per_node, warm))
        return jobs, True
    per_node = problem.slots // problem.nodes
    for layer, phys in enumerate(maps):
        for n in range(problem.nodes):
            part = phys[n * per_node:(n + 1) * per_node]
            experts = np.unique(part)
            jobs.append((layer, 0, n, experts, problem.gpus_per_node, np.searchsorted(experts, part)))
    return jobs, splits == 1


def _best_splits(problem: ExpertProblem, warm: np.ndarray, jobs: list[tuple], solves: list, every_split: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each layer's best split's maps, and the per-layer dual bounds (module docstring)."""
    maps = warm.copy()
    per_node = problem.slots // problem.nodes
    by_split: dict[tuple[int, int], list] = {}
    for (layer, split, node, experts, _, _), s in zip(jobs, solves):
        by_split.setdefault((layer, split), []).append((node, experts, s))
    found = np.full(problem.layers, np.inf)
    duals = np.full(problem.layers, np.inf)
    for (layer, _), parts in sorted(by_split.items()):
        loads = [gpu_loads(problem.weights[layer][experts], s.phys, problem.slots_per_gpu).max()
                 for _, experts, s in parts]
        bounds = [s.dual_bound for _, _, s in parts]
        duals[layer] = min(duals[layer], max(bounds) if None not in bounds and every_split else 0.0)
        if max(loads) < found[layer] * (1 - 1e-12):
            found[layer] = max(loads)
            for node, experts, s in parts:
                if node is None:
                    maps[layer] = experts[s.phys]
                else:
                    maps[layer, node * per_node:(node + 1) * per_node] = experts[s.phys]
    return maps, duals


def _traffic_model(problem: ExpertProblem, maps: np.ndarray, time_limit_s: float, solver: str | None):
    """The second objective: GPUs' contents placed on nodes for fewer crossing tokens."""
    c = problem.coactivation
    solves = place_layers_on_nodes([(phys, problem.experts, problem.slots_per_gpu, problem.gpus_per_node,
                                     c.first[layer], c.second[layer], c.tokens[layer])
                                    for layer, phys in enumerate(maps)], time_limit_s, solver)
    return np.stack([s.phys for s in solves]), summarize_nodes(solves), [s.limit for s in solves]
