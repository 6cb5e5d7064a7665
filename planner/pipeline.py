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
from solvers import baselines, trees
from solvers.hierarchical import hierarchical
from topologies.routing import Router
from topologies.types import Topology

Builder = Callable[[Collective, Topology, Router], Schedule]

METHODS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "ring": (("allgather", "reduce-scatter", "allreduce"), lambda c, t, r: baselines.ring(c, t, router=r)),
    "tree": (("allreduce",), lambda c, t, r: trees.double_binary_tree(c, t, router=r)),
    "hierarchical": (("allgather", "reduce-scatter", "allreduce"), lambda c, t, r: hierarchical(c, t, router=r)),
    "chain": (("broadcast", "reduce"), lambda c, t, r: baselines.chain(c, t, router=r)),
    "direct": (("alltoall", "alltoallv"), lambda c, t, r: baselines.direct_alltoall(c, t)),
}
HEURISTIC_METHODS = {"ring", "tree", "hierarchical", "chain", "direct"}


@dataclass(frozen=True)
class CollectiveResult:
    plan: Plan
    schedule: Schedule
    sim: SimResult


def methods_for(kind: str) -> list[str]:
    return [name for name, (kinds, _) in METHODS.items() if kind in kinds]


def plan_collective(coll: Collective, topo: Topology, method: str = "auto", topology_name: str | None = None,
                    time_limit_s: float | None = None, solver: str | None = None) -> CollectiveResult:
    """Build, verify, time and bound a schedule for `coll` on `topo`."""
    applicable = methods_for(coll.kind)
    if method == "auto":
        candidates = applicable
    elif method not in METHODS:
        raise InputError(f"unknown method {method!r} (known: auto, {', '.join(METHODS)})", field="method")
    elif method not in applicable:
        raise InputError(f"method {method!r} does not do {coll.kind} (use {', '.join(applicable) or 'none'})",
                         field="method")
    else:
        candidates = [method]
    router = Router(topo)
    tried = []
    skipped = {}
    for name in candidates:
        t0 = time.perf_counter()
        try:
            schedule = METHODS[name][1](coll, topo, router)
        except InputError as exc:
            if method != "auto" or exc.field != "method":
                raise
            skipped[name] = exc.message  # does not apply to this topology; auto moves on
            continue
        synthesis = time.perf_counter() - t0
        sim = simulate(schedule, topo, router)
        tried.append((sim.time_us, name, schedule, sim, synthesis))
    tried.sort(key=lambda x: (x[0], x[1]))
    time_us, name, schedule, sim, synthesis = tried[0]
    bound = lower_bound(coll, topo)
    metrics = {
        **quality_metrics(coll, time_us, bound.time_us),
        "synthesis_seconds": synthesis,
        "transfers": sim.transfers,
        "steps": sim.steps,
        "max_link_utilization": sim.max_link_utilization,
    }
    if method == "auto" and len(tried) + len(skipped) > 1:
        metrics["candidates"] = {n: t for t, n, *_ in tried}
        if skipped:
            metrics["skipped"] = skipped
    problem = {**coll.describe(), "topology": topology_name or topo.name, "gpus": topo.num_gpus,
               "servers": len(topo.servers), "method_requested": method, "time_limit_s": time_limit_s,
               "solver_requested": solver}
    if coll.kind == "alltoallv":
        problem["traffic"] = [list(row) for row in coll.traffic]
    plan = Plan(kind="collective", problem=problem, method=name, metrics=metrics, bound=bound.to_json(),
                plan=schedule_to_json(schedule), solver=None,
                fallback=None,
                provenance={"planner_version": __version__, "heuristic": name in HEURISTIC_METHODS,
                            "verified_by": "planner.simulator", "auto_choice":
                                (f"fastest simulated of {', '.join(n for _, n, *_ in tried)}"
                                 if method == "auto" else "requested")})
    return CollectiveResult(plan, schedule, sim)


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
