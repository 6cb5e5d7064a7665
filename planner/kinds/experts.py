"""The experts plan kind: MoE expert replication and placement maps, checked before written.

Methods (the registry `METHODS`, docs/experts.md): `greedy` (solvers/expert_greedy.py), a
candidate; `milp` (models/expert_placement.py), exact, warm-started from the best
candidate; `eplb` (DeepSeek's heuristic as published), a baseline run only when asked for.
With expert groups every method keeps each group on one node. Candidates are scored by
max/mean (the mean over layers of max GPU load / mean GPU load). With co-activation data
the returned greedy or milp map then takes the traffic swap search (solvers/
expert_traffic.py: fewer cross-node tokens at the same max load). A map is `optimal`
only when every layer meets its bound (planner/expert_bounds.py, with the milp's dual
bounds where its model is exact).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.expert_placement import milp_expert_maps, model_count
from planner.core.errors import PlannerError
from planner.core.experts import ExpertProblem
from planner.expert_bounds import expert_bounds
from planner.expert_checks import check_expert_maps, expert_metrics, max_over_mean_per_layer
from planner.exports.expert_maps import EXPERT_FORMATS, import_expert_maps, round_trip_expert_maps
from planner.kind import Attempt, Candidate, Context, Method, Options, PlanKind
from planner.search import PlanResult, plan
from solvers import SolveResult, Termination
from solvers.eplb import eplb_rebalance
from solvers.expert_greedy import greedy_assign
from solvers.expert_traffic import reduce_crossing

AUTO_MAX_MODELS = 4096  # layer (or layer x node) models auto solves; beyond, greedy alone
MIN_SECONDS_PER_MODEL = 0.05
# The models round loads down to 1e-6 of the warm start's max, so a proof holds to K x 1e-6.
PROOF_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExpertMaps:
    maps: np.ndarray  # [layers, slots]: the logical expert in every physical slot
    shares_gpus: bool = False  # EPLB may put two replicas of one expert on one GPU


@dataclass(frozen=True)
class ExpertBound:
    per_layer: list[dict]  # every bound of every layer, `value` the one ratios are taken to
    max_over_mean: np.ndarray  # per layer: the bound / the mean GPU load

    def to_json(self) -> dict:
        return {"per_layer_max_over_mean": [float(v) for v in self.max_over_mean],
                "derivation": "per layer: max(total/GPUs, heaviest replica under the replica budget, LP relaxation "
                              "of the replica counts, with groups the best group-to-node split / GPUs per node, the "
                              "milp's dual bound when its model is exact (with groups: over every split)) "
                              "(docs/experts.md)",
                "per_layer": self.per_layer}


# ---------------------------------------------------------------- methods
def _greedy(problem: ExpertProblem, context: Context) -> Attempt:
    return Attempt(ExpertMaps(greedy_assign(problem.weights, problem.gpus, problem.slots_per_gpu, problem.nodes,
                                            problem.groups)))


def _milp(problem: ExpertProblem, context: Context) -> Attempt:
    if context.incumbent is not None:
        warm = context.incumbent.solution.maps
    else:
        warm = _greedy(problem, context).solution.maps
    options = context.options
    maps, solve, model, duals = milp_expert_maps(problem, warm, options.time_limit_s, options.solver)
    return Attempt(ExpertMaps(maps), solve, model, proof=duals)


def _milp_searched(problem: ExpertProblem, context: Context) -> str | None:
    models = model_count(problem)
    if models > AUTO_MAX_MODELS:
        return f"{models} layer models exceed auto's {AUTO_MAX_MODELS}: greedy alone"
    if context.options.time_limit_s / max(1, models) < MIN_SECONDS_PER_MODEL:
        return (f"--time-limit {context.options.time_limit_s:g} s leaves under {MIN_SECONDS_PER_MODEL} s per "
                f"layer model")
    return None


def _eplb(problem: ExpertProblem, context: Context) -> Attempt:
    maps, _ = eplb_rebalance(problem.weights, problem.slots, problem.groups or 1,
                             problem.nodes if problem.groups else 1, problem.gpus)
    return Attempt(ExpertMaps(maps, shares_gpus=True))


METHODS: tuple[Method, ...] = (
    Method("greedy", "candidate", _greedy, "water-filled replica counts, slot-capacity LPT packing, swap search"),
    Method("milp", "exact", _milp, "a CP-SAT model per layer (or node), warm-started from greedy",
           searched=_milp_searched, heuristic=False),
    Method("eplb", "baseline", _eplb, "DeepSeek's EPLB as published (a baseline)"),
)


# ---------------------------------------------------------------- the kind
def _evaluate(problem: ExpertProblem, solution: ExpertMaps):
    try:
        check_expert_maps(problem, solution.maps, shared_gpus=solution.shares_gpus)
    except ValueError as exc:
        raise PlannerError(f"the expert map is invalid: {exc}") from None
    per_layer = max_over_mean_per_layer(problem, solution.maps)
    return per_layer, float(per_layer.mean())


def _bound(problem: ExpertProblem, candidates: list[Candidate]) -> ExpertBound:
    bounds = expert_bounds(problem)
    for c in candidates:
        for b, dual in zip(bounds, c.attempt.proof if c.attempt.proof is not None else ()):
            if dual > 0:
                b["milp_dual_bound"] = float(dual)
                b["value"] = max(b["value"], float(dual))
    means = problem.weights.sum(axis=1) / problem.gpus
    return ExpertBound(bounds, np.array([b["value"] / m if m > 0 else 1.0 for b, m in zip(bounds, means)]))


def _to_bound(c: Candidate, bound: ExpertBound) -> np.ndarray:
    return c.evidence / bound.max_over_mean


def _metrics(problem: ExpertProblem, c: Candidate, bound: ExpertBound) -> dict:
    to_bound = _to_bound(c, bound)
    return {**expert_metrics(problem, c.solution.maps), "lower_bound_max_over_mean": float(bound.max_over_mean.mean()),
            "ratio_to_bound": float(to_bound.mean()), "worst_layer_ratio_to_bound": float(to_bound.max())}


def _solve_entry(problem: ExpertProblem, c: Candidate, bound: ExpertBound) -> SolveResult | None:
    """The milp's solves, `optimal` only when every layer meets its bound."""
    solve = c.attempt.solve
    if solve is None:
        return None
    to_bound = _to_bound(c, bound)
    proved = bool((to_bound <= 1 + PROOF_TOLERANCE).all())
    return replace(solve, termination=Termination.optimal if proved else Termination.feasible,
                   gap=0.0 if proved else float(((to_bound - 1) / to_bound).max()))


def _finish(problem: ExpertProblem, c: Candidate) -> ExpertMaps | None:
    """The traffic swap search on a greedy or milp map (a baseline is returned as published)."""
    if not problem.has_node_traffic or c.method.role == "baseline":
        return None
    co = problem.coactivation
    maps = np.stack([reduce_crossing(problem.weights[layer], phys, problem.slots_per_gpu, problem.gpus_per_node,
                                     co.first[layer], co.second[layer], co.tokens[layer])
                     for layer, phys in enumerate(c.solution.maps)])
    return ExpertMaps(maps, c.solution.shares_gpus)


def _body(problem: ExpertProblem, c: Candidate) -> dict:
    maps = c.solution.maps
    counts = np.stack([np.bincount(row, minlength=problem.experts) for row in maps])
    return {"physical_to_logical_map": maps.tolist(), "logical_count": _plain(problem.weights),
            "logical_replica_count": counts.tolist(), "slots_per_gpu": problem.slots_per_gpu,
            "gpus": problem.gpus, "nodes": problem.nodes}


def _plain(weights: np.ndarray) -> list:
    """Loads as written: integers stay integers."""
    if np.all(weights == np.round(weights)) and np.abs(weights).max(initial=0) < 2**53:
        return weights.astype(np.int64).tolist()
    return weights.tolist()


def _export(fmt: str):
    def export(problem: ExpertProblem, c: Candidate) -> str:
        return round_trip_expert_maps(c.solution.maps, problem.slots_per_gpu, problem.experts, fmt)
    return export


def _read_back(fmt: str):
    def read(problem: ExpertProblem, text: str) -> ExpertMaps:
        # engines load two replicas of an expert on one GPU too (EPLB's maps do that)
        return ExpertMaps(import_expert_maps(text, fmt, problem.experts), shares_gpus=True)
    return read


EXPERTS = PlanKind(
    name="experts",
    methods=METHODS,
    describe=lambda problem: problem.describe(),
    evaluate=_evaluate,
    bound=_bound,
    metrics=_metrics,
    body=_body,
    exports={fmt: _export(fmt) for fmt in EXPERT_FORMATS},
    read_back={fmt: _read_back(fmt) for fmt in EXPERT_FORMATS},
    lost=lambda exact, a, name, b: f"{exact}: its map reaches max/mean {a:.4f}, {name} {b:.4f}",
    subject=lambda problem: "expert placement",
    noun="map",
    export_check="parsed back: same map",
    best_of="lowest max/mean",
    verified_by="planner.expert_checks",
    finish=_finish,
    solve_entry=_solve_entry,
)


def plan_experts(problem: ExpertProblem, method: str = "auto", time_limit_s: float = 60.0, solver: str | None = None,
                 export: str | None = None) -> PlanResult:
    """Place `problem`'s experts: the experts kind through the one search."""
    return plan(EXPERTS, problem, method, Options(time_limit_s, solver, export))
