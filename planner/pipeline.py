"""The collective pipeline: description -> schedule (method) -> simulate -> bound -> plan.

Methods are a name -> builder dispatch; `auto` runs every method that applies and keeps
the fastest simulated schedule, recording why. Every returned plan has been verified
and timed by the simulator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from planner import __version__
from planner.bounds import lower_bound
from planner.collectives import Collective
from planner.errors import InputError
from planner.plan import Plan
from planner.schedule import Chunk, Schedule, Transfer
from planner.simulator import SimResult, simulate
from models.alltoall_flow import time_expanded_schedule
from models.collective_milp import MAX_VARIABLES, milp_schedule
from solvers import SolveResult, SolverError, baselines, trees
from solvers.flash import flash_alltoall
from solvers.hierarchical import hierarchical
from solvers.tree_schedules import lp_solver_json, tree_schedule
from topologies.routing import Router
from topologies.types import Topology

Builder = Callable[[Collective, Topology, Router], Schedule]

METHODS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "ring": (("allgather", "reduce-scatter", "allreduce"), lambda c, t, r: baselines.ring(c, t, router=r)),
    "tree": (("allreduce",), lambda c, t, r: trees.double_binary_tree(c, t, router=r)),
    "hierarchical": (("allgather", "reduce-scatter", "allreduce", "alltoall", "alltoallv"),
                     lambda c, t, r: hierarchical(c, t, router=r)),
    "chain": (("broadcast", "reduce"), lambda c, t, r: baselines.chain(c, t, router=r)),
    "direct": (("alltoall", "alltoallv"), lambda c, t, r: baselines.direct_alltoall(c, t)),
    "spreadout": (("alltoall", "alltoallv"), lambda c, t, r: baselines.spreadout_alltoall(c, t)),
    "flash": (("alltoall", "alltoallv"), lambda c, t, r: flash_alltoall(c, t)),
    "trees": (("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"),
              lambda c, t, r: tree_schedule(c, t)),
}
HEURISTIC_METHODS = {"ring", "tree", "hierarchical", "chain", "direct", "spreadout", "flash"}


@dataclass(frozen=True)
class CollectiveResult:
    plan: Plan
    schedule: Schedule
    sim: SimResult
    exported: str | None = None  # the schedule in the asked export format, round-tripped


# auto packs trees on one server of up to 16 GPUs, where a small schedule reaches the bound;
# on several servers the packing has hundreds of trees that need a large schedule (minutes
# to simulate) to beat the hierarchical baseline: `--method trees` asks for it.
TREES_AUTO_MAX_GPUS = 16
TREES_AUTO_BUDGET = 12_000


def methods_for(kind: str) -> list[str]:
    return [name for name, (kinds, _) in METHODS.items() if kind in kinds]


EXACT_KINDS = ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce")
FLOW_KINDS = ("alltoall", "alltoallv")  # milp and lp: the time-expanded flow model (models/alltoall_flow.py)
SEARCHING = ("auto", "milp", "lp")  # methods that run every applicable heuristic and return the fastest
AUTO_MILP_MAX_GPUS = 16
AUTO_MILP_MAX_BLOCK_BYTES = 256 << 10  # beyond this the message is bandwidth-bound: trees/rings do
AUTO_MILP_MAX_VARIABLES = 60_000  # auto tries only models that solve in seconds; `milp` takes larger
MILP_VARIABLES_PER_SECOND = 20_000  # model size allowed per second of --time-limit (building costs ~1/3 of it)


def plan_collective(coll: Collective, topo: Topology, method: str = "auto", topology_name: str | None = None,
                    time_limit_s: float | None = None, solver: str | None = None,
                    export: str | None = None) -> CollectiveResult:
    """Build, verify, time and bound a schedule for `coll` on `topo`.

    Heuristic methods run as asked. `milp` (and `auto` on small, latency-bound instances)
    first runs the applicable baselines, then solves the time-expanded model with the best
    baseline's time as its horizon; the fastest simulated schedule is returned, and when
    the model's schedule is not it, `fallback` says why. With `export` (a format of
    planner/exports), the plan returned is the fastest whose export round-trips; under
    `auto` the others are listed in `skipped` with the reason.
    """
    heuristics = methods_for(coll.kind)
    if method not in SEARCHING and method not in METHODS:
        raise InputError(f"unknown method {method!r} (known: auto, milp, lp, {', '.join(METHODS)})", field="method")
    if method == "milp" and coll.kind not in EXACT_KINDS + FLOW_KINDS:
        raise InputError(f"method 'milp' does not do {coll.kind} (use {', '.join(heuristics)})", field="method")
    if method == "lp" and coll.kind not in FLOW_KINDS:
        raise InputError(f"method 'lp' does only {' and '.join(FLOW_KINDS)} (for {coll.kind}: milp, "
                         f"{', '.join(heuristics)})", field="method")
    exact = method if method in ("milp", "lp") else "milp"
    if method in METHODS and method not in heuristics:
        raise InputError(f"method {method!r} does not do {coll.kind} (use {', '.join(heuristics) or 'none'})",
                         field="method")
    skipped = {}
    candidates = heuristics if method in SEARCHING else [method]
    if method in SEARCHING and "trees" in candidates and (coll.ranks > TREES_AUTO_MAX_GPUS
                                                                 or len(topo.servers) > 1):
        candidates = [c for c in candidates if c != "trees"]
        skipped["trees"] = (f"auto packs trees on one server of up to {TREES_AUTO_MAX_GPUS} GPUs "
                            f"(ask for --method trees)")
    router = Router(topo)
    search_started = time.perf_counter()
    tried = []
    for name in candidates:
        t0 = time.perf_counter()
        try:
            if name == "trees" and method in SEARCHING:
                schedule = tree_schedule(coll, topo, budget=TREES_AUTO_BUDGET)
            else:
                schedule = METHODS[name][1](coll, topo, router)
        except InputError as exc:
            if method not in SEARCHING or exc.field != "method":
                raise
            skipped[name] = exc.message  # does not apply to this topology; move on
            continue
        synthesis = time.perf_counter() - t0
        sim = simulate(schedule, topo, router)
        tried.append((sim.time_us, name, schedule, sim, synthesis))
    milp_result, milp_model, fallback = None, None, None
    wants_milp = method in ("milp", "lp") or (method == "auto" and coll.kind in EXACT_KINDS
                                      and 2 <= coll.ranks <= AUTO_MILP_MAX_GPUS
                                      and coll.blocks[0].size <= AUTO_MILP_MAX_BLOCK_BYTES)
    if not tried:
        raise InputError(f"no method applies to {coll.kind} here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                         field="method")
    if wants_milp:
        best_heuristic = min(tried, key=lambda x: (x[0], x[1]))
        t0 = time.perf_counter()
        try:
            # a model is only worth building if it can be built and searched within the limit
            limit = min(AUTO_MILP_MAX_VARIABLES if method == "auto" else MAX_VARIABLES,
                        int(MILP_VARIABLES_PER_SECOND * (time_limit_s or 60.0)))
            if coll.kind in FLOW_KINDS:
                outcome = time_expanded_schedule(coll, topo, router, integral=exact == "milp", solver=solver,
                                                 time_limit_s=time_limit_s or 60.0, max_variables=limit)
            else:
                outcome = milp_schedule(coll, topo, router, horizon_us=best_heuristic[0], parts=_milp_parts(coll),
                                        solver=solver, time_limit_s=time_limit_s or 60.0, max_variables=limit)
        except InputError as exc:
            if exc.field != "method":
                raise
            fallback = f"{exact}: not applicable here ({exc.message})"
        except SolverError as exc:  # e.g. an LP-only --solver for this integer model
            raise InputError(f"{solver or 'the default solver'} cannot solve the collective model: {exc}",
                             field="--solver") from None
        else:
            milp_result = outcome.result
            milp_model = {"variables": outcome.variables, "constraints": outcome.constraints,
                          "horizon_epochs": outcome.epochs, "epoch_us": outcome.tau_us,
                          "model_objective_epochs": outcome.result.objective,
                          "symmetry": outcome.symmetry}
            if outcome.schedule is None:
                if outcome.result.limit_hit:
                    why = "the time limit was hit before any solution"
                elif outcome.result.termination.value == "infeasible":
                    why = "no schedule fits the model's horizon (the best baseline's time, or the fastest delivery)"
                else:
                    why = f"the solver ended with {outcome.result.termination.value}" + (
                        f" ({outcome.result.message})" if outcome.result.message else "")
                fallback = f"{exact}: {why}; returned {best_heuristic[1]}"
            else:
                sim = simulate(outcome.schedule, topo, router)
                tried.append((sim.time_us, exact, outcome.schedule, sim, time.perf_counter() - t0))
    tried.sort(key=lambda x: (x[0], x[1]))
    exported = None
    if export:
        tried, exported = _exportable(tried, export, topo, skipped)
    time_us, name, schedule, sim, synthesis = tried[0]
    if method in SEARCHING:
        synthesis = time.perf_counter() - search_started  # the whole search: baselines, model, solve
    if wants_milp and name != exact and fallback is None:
        milp_time = next(t for t, n, *_ in tried if n == exact)
        fallback = f"{exact}: its schedule simulates at {milp_time:.3f} us, {name} at {time_us:.3f} us"
    bound = lower_bound(coll, topo)
    metrics = {
        **quality_metrics(coll, time_us, bound.time_us),
        "synthesis_seconds": synthesis,
        "transfers": sim.transfers,
        "steps": sim.steps,
        "max_link_utilization": sim.max_link_utilization,
    }
    if method in SEARCHING:
        metrics["candidates"] = {n: t for t, n, *_ in tried}
        if skipped:
            metrics["skipped"] = skipped
    if milp_model:
        metrics["milp_model"] = milp_model
        if name != exact:  # `solver` describes the returned method's solve; the attempt is kept here
            metrics["milp_model"]["solver"] = solver_json(milp_result)
    problem = {**coll.describe(), "topology": topology_name or topo.name, "gpus": topo.num_gpus,
               "servers": len(topo.servers), "method_requested": method, "time_limit_s": time_limit_s,
               "solver_requested": solver}
    if coll.kind == "alltoallv":
        problem["traffic"] = [list(row) for row in coll.traffic]
    plan = Plan(kind="collective", problem=problem, method=name, metrics=metrics, bound=bound.to_json(),
                plan=schedule_to_json(schedule), solver=(solver_json(milp_result) if name == exact
                        else lp_solver_json(coll, topo, schedule) if name == "trees" else None),
                fallback=fallback,
                provenance={"planner_version": __version__, "heuristic": name in HEURISTIC_METHODS,
                            "verified_by": "planner.simulator", "auto_choice":
                                (f"fastest simulated of {', '.join(n for _, n, *_ in tried)}"
                                 if method in SEARCHING else "requested")})
    return CollectiveResult(plan, schedule, sim, exported)


def _exportable(tried: list, fmt: str, topo: Topology, skipped: dict) -> tuple[list, str]:
    """The candidates from the first whose export round-trips, and that export."""
    from planner.exports import round_trip
    from planner.exports.roundtrip import ExportMismatch

    for i, (time_us, name, schedule, _, _) in enumerate(tried):
        try:
            if any(t.path is not None for t in schedule.transfers):
                raise InputError("it routes transfers over chosen paths (NVLink, PCIe, NICs), which the "
                                 "format cannot say: the runtime would pick its own routes")
            text, _, _ = round_trip(schedule, fmt, topo, time_us)
        except (InputError, ExportMismatch) as exc:
            if i == len(tried) - 1:
                if isinstance(exc, ExportMismatch):
                    raise
                raise InputError(exc.message, source=exc.source, field=f"--export {fmt}") from None
            skipped[name] = f"its schedule does not export as {fmt}: {getattr(exc, 'message', str(exc))}"
            continue
        return tried[i:], text
    raise AssertionError("unreachable")


def _milp_parts(coll: Collective) -> int:
    """Chunks per block in the model: one block moves whole in allgather-like collectives,
    and in a latency-bound broadcast or reduce; a larger one-buffer collective is cut so
    it can pipeline."""
    if coll.kind in ("allgather", "reduce-scatter", "allreduce") or coll.size <= 64 << 10:
        return 1
    return min(8, max(2, coll.ranks // 2))


def solver_json(result: SolveResult) -> dict:
    """The plan's `solver` entry; `unbounded` is not a plan status, so it reads `error`."""
    doc = result.to_json()
    if doc["status"] not in ("optimal", "feasible", "infeasible", "no_solution", "error"):
        doc["status"] = "error"
    return doc


def quality_metrics(coll: Collective, time_us: float, bound_us: float) -> dict:
    """The contract's time figures: time, algbw (SIZE / time), bound, ratio to bound."""
    return {"time_us": time_us, "algbw_GBps": coll.size / time_us / 1e3 if time_us > 0 else 0.0,
            "lower_bound_us": bound_us, "ratio_to_bound": time_us / bound_us if bound_us > 0 else 1.0}


def schedule_to_json(schedule: Schedule) -> dict:
    transfers = []
    for t in schedule.transfers:
        row: list = [t.chunk, t.src, t.dst, t.step, int(t.reduce), t.channel]
        if t.deps or t.path is not None:
            row.append(list(t.deps))
        if t.path is not None:
            row.append(list(t.path))
        transfers.append(row)
    return {"algorithm": schedule.algorithm, "params": dict(schedule.params),
            "transfer_fields": ["chunk", "src", "dst", "step", "reduce", "channel", "deps", "path"],
            "chunks": [[c.block, c.lo, c.hi] for c in schedule.chunks], "transfers": transfers}


def schedule_from_json(body: dict, coll: Collective, source: str | None = None) -> Schedule:
    """The inverse of schedule_to_json; malformed bodies raise InputError naming the field."""
    try:
        chunks = tuple(Chunk(int(b), float(lo), float(hi)) for b, lo, hi in body["chunks"])
        transfers = []
        for i, row in enumerate(body["transfers"]):
            chunk, src, dst, step, red, chan = (int(x) for x in row[:6])
            deps = tuple(int(d) for d in row[6]) if len(row) > 6 else ()
            path = tuple(str(p) for p in row[7]) if len(row) > 7 else None
            if path is not None and len(path) < 2:
                raise ValueError(f"transfer {i} has a path of {len(path)} node(s)")
            transfers.append(Transfer(chunk, src, dst, step, bool(red), chan, path, deps))
        params = tuple(sorted(dict(body.get("params", {})).items()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"malformed schedule ({exc.__class__.__name__}: {exc})", source=source, field="plan") from None
    return Schedule(coll, chunks, tuple(transfers), str(body.get("algorithm", "")), params)
