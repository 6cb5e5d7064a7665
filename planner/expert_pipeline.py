"""The expert-placement pipeline: problem -> maps (method) -> check -> bounds -> plan.

Methods: `greedy` (solvers/expert_greedy.py), `milp` (models/expert_milp.py, warm-started
from greedy, per layer in parallel), `eplb` (DeepSeek's heuristic as published, a
baseline), `auto` (= milp under the time limit; greedy alone when the models would be too
many for it). With expert groups every method keeps each group on one node: greedy packs
groups on nodes first; milp solves each node on its own GPUs for every group-to-node split
when there are at most MAX_SPLIT_MODELS node models (and keeps the best split), else for
greedy's split.
With co-activation data, milp has a second objective (models/expert_traffic_milp.py: GPUs'
contents placed on nodes for fewer cross-node tokens, the max load unchanged), and greedy
and milp finish with the swap search of solvers/expert_traffic.py (fewer cross-node
tokens at the same max load).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from planner import __version__
from planner.errors import InputError, PlannerError
from planner.expert_bounds import count_equal_partitions, equal_partitions, expert_bounds
from planner.experts import ExpertProblem, check_expert_maps, expert_metrics, gpu_loads
from planner.plan import Plan
from solvers.eplb import eplb_rebalance
from solvers.expert_greedy import greedy_assign, greedy_layer
from solvers.expert_traffic import reduce_crossing

EXPERT_METHODS = ("auto", "milp", "greedy", "eplb")
AUTO_MAX_MODELS = 4096  # layer (or layer x node) models auto solves; beyond, greedy alone
MIN_SECONDS_PER_MODEL = 0.05
# The models round loads down to 1e-6 of the warm start's max, so a proof holds to K x 1e-6.
PROOF_TOLERANCE = 1e-4
MAX_SPLIT_MODELS = 256  # node models when the milp tries every group-to-node split
FIRST_OBJECTIVE_SHARE = 0.75  # of the milp's time for the max load when a traffic model follows


@dataclass(frozen=True)
class ExpertResult:
    plan: Plan
    maps: np.ndarray
    exported: str | None = None


def plan_experts(problem: ExpertProblem, method: str = "auto", time_limit_s: float = 60.0,
                 solver: str | None = None, export: str | None = None) -> ExpertResult:
    if method not in EXPERT_METHODS:
        raise InputError(f"unknown method {method!r} (experts: {', '.join(EXPERT_METHODS)})", field="--method")
    started = time.perf_counter()
    solver_json, fallback, model_info, duals = None, None, None, None
    if method == "eplb":
        maps, _ = eplb_rebalance(problem.weights, problem.slots, problem.groups or 1,
                                 problem.nodes if problem.groups else 1, problem.gpus)
    else:
        maps = greedy_assign(problem.weights, problem.gpus, problem.slots_per_gpu, problem.nodes, problem.groups)
        jobs, every_split = _jobs(problem, maps)
        if method == "auto" and len(jobs) > AUTO_MAX_MODELS:
            fallback = f"{len(jobs)} layer models exceed auto's {AUTO_MAX_MODELS}: greedy alone"
        elif method == "auto" and time_limit_s / max(1, len(jobs)) < MIN_SECONDS_PER_MODEL:
            fallback = f"--time-limit {time_limit_s:g} s leaves under {MIN_SECONDS_PER_MODEL} s per layer model"
        elif method in ("auto", "milp"):
            maps, solver_json, model_info, duals = _milp(problem, maps, jobs, every_split, time_limit_s, solver)
        maps = _reduce_traffic(problem, maps)
    seconds = time.perf_counter() - started
    return _finish(problem, method, maps, seconds, solver_json, fallback, model_info, duals, export)


def _jobs(problem: ExpertProblem, maps: np.ndarray) -> tuple[list[tuple], bool]:
    """(layer, split, node or None, experts, GPUs, warm map in local ids) of every model,
    and whether the splits are every group-to-node split. Without groups, one model per
    layer. With groups, one per node of greedy's split, or of every split when there are
    at most MAX_SPLIT_MODELS node models in all (greedy's packing inside each node as warm
    start): then the milp chooses the split too."""
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


def _milp(problem, maps, jobs, every_split, time_limit_s, solver):
    from models.expert_milp import solve_layers, solve_seconds, summarize

    second_stage = _traffic_model_applies(problem)
    first_share = FIRST_OBJECTIVE_SHARE if second_stage else 1.0
    solves = solve_layers([(problem.weights[layer][experts], gpus, problem.slots_per_gpu, warm)
                           for layer, _, _, experts, gpus, warm in jobs], time_limit_s * first_share, solver)
    maps = maps.copy()
    per_node = problem.slots // problem.nodes
    by_split: dict[tuple[int, int], list] = {}
    for (layer, split, node, experts, _, _), s in zip(jobs, solves):
        by_split.setdefault((layer, split), []).append((node, experts, s))
    # A split's max load is its worst node's; its bound is the worst node's exact-model
    # bound. The layer keeps its best split, and min over all splits of their bounds is a
    # lower bound on the layer when the splits are all of them and every model is exact.
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
    info = summarize(solves)
    seconds = solve_seconds(solves)
    if second_stage:
        maps, info["traffic_model"] = _traffic_model(problem, maps, time_limit_s * (1 - first_share), solver)
        seconds += info["traffic_model"]["seconds"]
    solver_json = {"name": solver or "cpsat", "status": None, "seconds": seconds, "gap": None,
                   "limit_hit": info["limit_hit"] or info.get("traffic_model", {}).get("limit_hit", False)}
    return maps, solver_json, info, duals


def _traffic_model_applies(problem: ExpertProblem) -> bool:
    return problem.coactivation is not None and not problem.groups and problem.nodes > 1


def _traffic_model(problem, maps, time_limit_s, solver):
    """The second objective: GPUs' contents placed on nodes for fewer crossing tokens."""
    from models.expert_traffic_milp import place_layers_on_nodes, summarize_nodes

    c = problem.coactivation
    solves = place_layers_on_nodes([(phys, problem.experts, problem.slots_per_gpu, problem.gpus_per_node,
                                     c.first[layer], c.second[layer], c.tokens[layer])
                                    for layer, phys in enumerate(maps)], time_limit_s, solver)
    return np.stack([s.phys for s in solves]), summarize_nodes(solves)


def _reduce_traffic(problem: ExpertProblem, maps: np.ndarray) -> np.ndarray:
    if not _traffic_model_applies(problem):
        return maps
    c = problem.coactivation
    return np.stack([reduce_crossing(problem.weights[layer], phys, problem.slots_per_gpu, problem.gpus_per_node,
                                     c.first[layer], c.second[layer], c.tokens[layer])
                     for layer, phys in enumerate(maps)])


def _finish(problem, method, maps, seconds, solver_json, fallback, model_info, duals, export) -> ExpertResult:
    try:
        check_expert_maps(problem, maps, shared_gpus=(method == "eplb"))
    except ValueError as exc:
        raise PlannerError(f"{method} produced an invalid expert map: {exc}") from None
    bounds = expert_bounds(problem)
    for b, dual in zip(bounds, duals if duals is not None else ()):
        if dual > 0:
            b["milp_dual_bound"] = float(dual)
            b["value"] = max(b["value"], float(dual))
    metrics = expert_metrics(problem, maps)
    means = problem.weights.sum(axis=1) / problem.gpus
    bound_ratio = np.array([b["value"] / m if m > 0 else 1.0 for b, m in zip(bounds, means)])
    to_bound = np.array(metrics["max_over_mean_per_layer"]) / bound_ratio
    metrics.update({"synthesis_seconds": seconds, "lower_bound_max_over_mean": float(bound_ratio.mean()),
                    "ratio_to_bound": float(to_bound.mean()), "worst_layer_ratio_to_bound": float(to_bound.max())})
    if model_info is not None:
        metrics["milp_model"] = model_info
        gap = float(((to_bound - 1) / to_bound).max())
        proved = bool((to_bound <= 1 + PROOF_TOLERANCE).all())
        solver_json = {**solver_json, "status": "optimal" if proved else "feasible", "gap": 0.0 if proved else gap}
    counts = np.stack([np.bincount(row, minlength=problem.experts) for row in maps])
    body = {"physical_to_logical_map": maps.tolist(), "logical_count": _plain(problem.weights),
            "logical_replica_count": counts.tolist(), "slots_per_gpu": problem.slots_per_gpu,
            "gpus": problem.gpus, "nodes": problem.nodes}
    bound = {"per_layer_max_over_mean": [float(v) for v in bound_ratio],
             "derivation": "per layer: max(total/GPUs, heaviest replica under the replica budget, LP relaxation of "
                           "the replica counts, with groups the best group-to-node split / GPUs per node, the milp's "
                           "dual bound when its model is exact (with groups: over every split)) (docs/experts.md)",
             "per_layer": bounds}
    plan = Plan(kind="experts", problem=problem.describe(), method=method, metrics=metrics, bound=bound, plan=body,
                solver=solver_json, fallback=fallback, provenance={"planner": __version__})
    exported = None
    if export:
        from planner.exports.expert_maps import round_trip_expert_maps

        exported = round_trip_expert_maps(maps, problem.slots_per_gpu, problem.experts, export)
    return ExpertResult(plan, maps, exported)


def _plain(weights: np.ndarray) -> list:
    """Loads as written: integers stay integers."""
    if np.all(weights == np.round(weights)) and np.abs(weights).max(initial=0) < 2**53:
        return weights.astype(np.int64).tolist()
    return weights.tolist()

