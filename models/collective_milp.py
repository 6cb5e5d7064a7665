"""Time-expanded MILP for collectives on small topologies (in the spirit of TACCL / TE-CCL).

Time is cut into epochs of length tau (one chunk over the fastest GPU-to-GPU connection,
latency included). A binary x[c, e, t] sends chunk c over connection e = (u, v) — a direct
route between two GPUs, through switches but no other GPU — starting in epoch t; it
arrives d_e epochs later. Constraints:
- a GPU sends a chunk only once it holds it (it is the chunk's source, or it arrived);
- every GPU that needs a chunk receives it exactly once, so each chunk travels along a
  tree, which lets the same model, run on the reversed links and read backwards, give
  reduce-scatter and reduce (each node combines its subtree once);
- on every physical link, in every epoch, the sends in flight (each at rate chunk/(d tau))
  stay within capacity (scaled to integers so CP-SAT can take it);
- the makespan T is at least every chunk's arrival epoch; minimise T.
Allreduce is the reversed allgather followed by the allgather. The model is an
approximation of the simulator's (rates averaged over a send's epochs); its solution is
always re-timed by the simulator, and its status and gap refer to the model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from planner.collectives import Collective
from planner.errors import InputError
from planner.schedule import Chunk, Schedule, Transfer
from solvers import Model, SolveOptions, SolveResult, quicksum
from solvers import solve as solve_model
from topologies.routing import Router
from topologies.types import Topology

CAPACITY_SCALE = 1000  # link capacity in integer parts for the capacity rows


@dataclass(frozen=True)
class Connection:
    src: int
    dst: int
    links: tuple[int, ...]
    epochs: int  # d_e
    rate: float  # bytes/us while in flight (chunk / (d_e tau))


@dataclass(frozen=True)
class MilpOutcome:
    schedule: Schedule | None
    result: SolveResult
    epochs: int
    tau_us: float
    variables: int
    constraints: int


def _connections(topo: Topology, router: Router, chunk_bytes: float, reverse: bool) -> tuple[list[Connection], float]:
    """Direct GPU-to-GPU routes (no GPU forwards them) and the epoch length tau."""
    gpus = topo.gpus
    gpu_set = set(gpus)
    index = {(l.src, l.dst): k for k, l in enumerate(topo.links)}
    raw = []
    for a in range(len(gpus)):
        for b in range(len(gpus)):
            if a == b:
                continue
            src, dst = (b, a) if reverse else (a, b)  # reversed model: data flows dst -> src
            path = router.route(gpus[src], gpus[dst])
            if any(p in gpu_set for p in path[1:-1]):
                continue
            links = tuple(index[(u, v)] for u, v in zip(path, path[1:]))
            width, latency = router.figures(gpus[src], gpus[dst])
            raw.append((a, b, links, chunk_bytes / (width * 1e3) + latency))
    tau = min(t for *_, t in raw)
    conns = []
    for a, b, links, t in raw:
        d = max(1, math.ceil(t / tau - 1e-9))
        conns.append(Connection(a, b, links, d, chunk_bytes / (d * tau)))
    return conns, tau


def _earliest(n: int, conns: list[Connection], source: int) -> list[int]:
    """Earliest arrival epoch of a chunk at each GPU (shortest path in epochs)."""
    best = [math.inf] * n
    best[source] = 0
    for _ in range(n):
        for c in conns:
            if best[c.src] + c.epochs < best[c.dst]:
                best[c.dst] = best[c.src] + c.epochs
    return best


MAX_VARIABLES = 400_000  # beyond this the model is refused rather than built for minutes
MIN_SOLVE_S = 0.05  # the solver always gets at least this, even when building used the whole limit


def solve_copy(topo: Topology, router: Router, sources: list[int], receivers: list[list[int]], chunk_bytes: float,
               horizon_us: float, reverse: bool, solver: str | None, deadline: float,
               max_variables: int = MAX_VARIABLES
               ) -> tuple[list[tuple[int, int, int, int, int]] | None, SolveResult, int, float, int, int]:
    """Chunk c starts at GPU sources[c] and must reach every GPU in receivers[c].

    Returns the sends (chunk, src, dst, epoch, epochs in flight) of the best solution found (or None), the
    solver result, the horizon in epochs, tau, and the model size.
    """
    n = topo.num_gpus
    conns, tau = _connections(topo, router, chunk_bytes, reverse)
    earliest = {src: _earliest(n, conns, src) for src in set(sources)}
    reach = max(max(earliest[s][v] for v in receivers[c]) for c, s in enumerate(sources) if receivers[c])
    if reach == math.inf:
        raise InputError("some GPU cannot be reached without another GPU forwarding", field="method")
    # the cap from the caller, but never below what the fastest delivery needs (epochs round up)
    horizon = max(1, math.ceil(horizon_us / tau - 1e-9), int(reach))
    estimate = sum(max(0, horizon - conn.epochs + 1 - int(earliest[src][conn.src]))
                   for src in sources for conn in conns if earliest[src][conn.src] != math.inf)
    if estimate > max_variables:
        raise InputError(f"the time-expanded model would have about {estimate} variables "
                         f"(limit {max_variables})", field="method")
    model = Model("collective-time-expanded")
    x: dict[tuple[int, int, int], object] = {}
    into: dict[tuple[int, int], list[tuple[int, int, object]]] = {}  # (chunk, gpu) -> (epoch, d, var)
    for c, src in enumerate(sources):
        early = earliest[src]
        for e, conn in enumerate(conns):
            if conn.dst == src or early[conn.src] == math.inf:
                continue
            for t in range(int(early[conn.src]), horizon - conn.epochs + 1):
                var = model.add_binary(f"x{c}_{e}_{t}")
                x[(c, e, t)] = var
                into.setdefault((c, conn.dst), []).append((t, conn.epochs, var))
    if not x:
        raise InputError("the time-expanded model has no room for any send", field="method")
    makespan = model.add_var("T", 0, horizon, integer=True)
    for c, src in enumerate(sources):
        for v in receivers[c]:
            arrivals = into.get((c, v), [])
            if not arrivals:
                raise InputError(f"GPU {v} cannot receive within the horizon", field="method")
            model.add(quicksum(var for _, _, var in arrivals) == 1)
            model.add(makespan - quicksum((t + d) * var for t, d, var in arrivals) >= 0)
    held: dict[tuple[int, int], list[object]] = {}  # (chunk, gpu) -> holds-it-by-epoch t (running total)
    for (c, u), arrivals in into.items():
        by_epoch: dict[int, list[object]] = {}
        for t, d, var in arrivals:
            by_epoch.setdefault(t + d, []).append(var)
        running, last = [], None
        for t in range(horizon + 1):
            h = model.add_var(f"h{c}_{u}_{t}", 0, 1, integer=True)
            model.add(h - (last if last is not None else 0) - quicksum(by_epoch.get(t, [])) == 0)
            running.append(h)
            last = h
        held[(c, u)] = running
    for (c, e, t), var in x.items():  # send only what is held
        u = conns[e].src
        if u == sources[c]:
            continue
        if (c, u) in held:
            model.add(var - held[(c, u)][t] <= 0)
        else:
            model.add(var <= 0)
    load: dict[tuple[int, int], list[tuple[int, object]]] = {}
    for (c, e, t), var in x.items():
        conn = conns[e]
        for k in conn.links:
            cap = topo.links[k].bandwidth * 1e3
            weight = max(1, math.ceil(CAPACITY_SCALE * conn.rate / cap - 1e-12))
            for busy in range(t, t + conn.epochs):
                load.setdefault((k, busy), []).append((weight, var))
    for terms in load.values():
        if sum(w for w, _ in terms) > CAPACITY_SCALE:
            model.add(quicksum(w * v for w, v in terms) <= CAPACITY_SCALE)
    model.minimize(makespan)
    # the time limit covers building the model too: the solver gets what is left
    result = solve_model(model, solver, SolveOptions(time_limit_s=max(MIN_SOLVE_S, deadline - time.perf_counter())))
    sends = None
    if result.has_solution:
        sends = sorted((c, conns[e].src, conns[e].dst, t, conns[e].epochs)
                       for (c, e, t), var in x.items() if result.value(var) > 0.5)
    return sends, result, horizon, tau, model.num_vars, model.num_constraints


def milp_schedule(coll: Collective, topo: Topology, router: Router, horizon_us: float, parts: int = 1,
                  solver: str | None = None, time_limit_s: float = 60.0,
                  max_variables: int = MAX_VARIABLES) -> MilpOutcome:
    """Solve the time-expanded model for `coll` and decode it into a Schedule.

    `horizon_us` caps the makespan considered (e.g. the best baseline's simulated time);
    `parts` cuts every block into that many chunks.
    """
    if coll.kind not in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"):
        raise InputError(f"the milp method does not do {coll.kind}", field="method")
    n = coll.ranks
    if n < 2:
        raise InputError("one GPU moves nothing", field="method")
    blocks = len(coll.blocks)
    chunks = tuple(Chunk(b, p / parts, (p + 1) / parts) for b in range(blocks) for p in range(parts))
    chunk_bytes = coll.blocks[0].size / parts
    if coll.kind in ("broadcast", "reduce"):
        sources = [coll.root] * len(chunks)
    else:
        sources = [c // parts for c in range(len(chunks))]
    receivers = [[v for v in range(n) if v != s] for s in sources]
    reverse = coll.kind in ("reduce-scatter", "reduce")
    started = time.perf_counter()
    halves = 2 if coll.kind == "allreduce" else 1
    horizon_us = horizon_us / halves  # each half of an allreduce must fit in half the baseline's time
    transfers: list[Transfer] = []
    outcome = None
    passes = [True, False] if coll.kind == "allreduce" else [reverse]
    first_step = 0
    for i, backwards in enumerate(passes):
        deadline = started + time_limit_s * (i + 1) / halves
        sends, result, horizon, tau, nvars, ncons = solve_copy(topo, router, sources, receivers, chunk_bytes,
                                                                horizon_us, backwards, solver, deadline,
                                                                max_variables // halves)
        outcome = (result, horizon, tau, nvars, ncons, outcome)
        if sends is None:
            return MilpOutcome(None, result, horizon, tau, nvars, ncons)
        if backwards:
            end = max(t + d for c, a, b, t, d in sends)
            for c, a, b, t, d in sends:
                transfers.append(Transfer(c, b, a, first_step + end - t - d, reduce=True, channel=c))
            first_step += end
        else:
            transfers += [Transfer(c, a, b, first_step + t, channel=c) for c, a, b, t, d in sends]
    result, horizon, tau, nvars, ncons, earlier = outcome
    if earlier is not None:  # allreduce: report the weaker of the two solves
        result = _combine(earlier[0], result)
        nvars, ncons = nvars + earlier[3], ncons + earlier[4]
    schedule = Schedule(coll, chunks, tuple(transfers), algorithm="milp",
                        params=(("parts", parts), ("epoch_us", tau), ("horizon_epochs", horizon)))
    return MilpOutcome(schedule, result, horizon, tau, nvars, ncons)


def _combine(a: SolveResult, b: SolveResult) -> SolveResult:
    """Two solves (the halves of an allreduce) as one: times add, the larger gap. Never
    `optimal`: each half may be, but splitting an allreduce at a barrier is itself a choice
    the model did not optimise, so the best it can claim is `feasible`."""
    from dataclasses import replace

    from solvers import Termination

    order = ["optimal", "feasible", "no_solution", "infeasible", "error"]
    worst = max(a.termination, b.termination, key=lambda t: order.index(t.value) if t.value in order else len(order))
    if worst == Termination.optimal:
        worst = Termination.feasible
    gaps = [g for g in (a.gap, b.gap) if g is not None]
    return replace(b, termination=worst, seconds=a.seconds + b.seconds, limit_hit=a.limit_hit or b.limit_hit,
                   message="reduce-scatter and allgather halves solved separately (each to its own status)",
                   gap=max(gaps) if gaps else None,
                   objective=(a.objective or 0) + (b.objective or 0) if a.objective is not None and b.objective is not None else None,
                   dual_bound=(a.dual_bound or 0) + (b.dual_bound or 0) if a.dual_bound is not None and b.dual_bound is not None else None)
