"""All-to-all(v) as multicommodity flow: the throughput bound and a time-expanded schedule.

Commodities are aggregated by source: GPU i's bytes for every destination form one
commodity, which is exact for unicast traffic (a flow from one source to several sinks
splits into paths to each of them), and keeps the models G times smaller than one
commodity per pair.

Max-concurrent-flow bound (`concurrent_flow_bound`): on the data plane
(topologies/dataplane.py; GPUs, NICs and switches all forward), minimise T such that
every commodity is routed and each arc carries at most its bandwidth x T. Every schedule
the simulator accepts moves its bytes within such a flow, so T bounds the bandwidth term;
it is at least every cut bound, and above them where traffic must share links that no
single GPU's or server's cut sees (spines, cross-rail paths).

Time-expanded model (`time_expanded_schedule`, `--method lp` / `--method milp`): time in
E epochs of tau = max(flow bound, slowest route latency) / 12; a variable per (commodity, connection, epoch) — connections are GPU-to-GPU
routes that no other GPU forwards, a send in epoch t arrives for epoch t + 1 + its
latency in whole epochs; per physical link and epoch, the bytes of all sends fit in
bandwidth x tau; a GPU forwards only what has arrived (a carry variable per epoch); at
the end every destination holds its bytes. The LP lets bytes split anywhere; the MILP
moves whole units (a block, or the largest piece of it that crosses the slowest
connection in one epoch). The smallest feasible E is found by bisection from the flow
bound (no E below it can be feasible); the objective prefers few bytes moved, early.
Decoding: each source's flow over the epochs is a DAG; it is cut into paths (each path
one chunk of one block, sent hop by hop in its epochs), integral when the MILP's is; the
MILP's chunks are then its units, all one size, so its schedules export to the MSCCL
formats (the LP's pieces are of any size, which those formats cannot count).
Status: optimal when E is proved minimal at this tau (the LP at E - 1 is infeasible, or
for the MILP the LP's minimal E was reached) and the solve at E finished; otherwise
feasible with the gap (E - proven lower E) / E. The simulator re-times the decoded schedule.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from models.collective_milp import MilpOutcome, direct_routes
from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers import Limit, LinearModel, SolveOptions, SolveResult, Termination, combined_limit
from solvers import solve as solve_model
from solvers.linear_model import LinearExpr
from topologies.flows import FlowNetwork
from topologies.routing import Router
from topologies.types import Topology

FLOW_BOUND_MAX_VARIABLES = 20_000  # the bound's LP solves in under half a second up to here
EPOCHS_PER_BOUND = 12  # tau = the flow bound / this: the model's time resolution
MAX_EPOCH_FACTOR = 4  # search E up to this many times the bound's epochs
MAX_UNITS = 200_000  # the MILP's chunks: one per unit
UNITS_PER_EPOCH = 8  # the MILP's unit: at most 1/this of what the slowest connection moves in an epoch


def concurrent_flow_bound(coll: Collective, topo: Topology, solver: str = "highs",
                          max_variables: int = FLOW_BOUND_MAX_VARIABLES, time_limit_s: float = 20.0) -> float | None:
    """The max-concurrent-flow time (us) of the all-to-all's bytes on the data plane, or
    None when the LP would have more than `max_variables` variables. O(LP(G x arcs))."""
    traffic = coll.matrix
    net = FlowNetwork(topo)
    sources = [i for i in range(coll.ranks) if traffic[i].sum() > 0]
    arcs = len(net.tail)
    if not sources or len(sources) * arcs + 1 > max_variables:
        return None
    scale = traffic.max()  # bytes in units of the largest block: values near 1 for the solver
    cap = net.cap.astype(float) * net.unit_mbps  # MB/s = bytes/us
    model = LinearModel("alltoall-concurrent-flow")
    t = model.add_var("T", 0.0)
    flow = {(i, a): model.add_var(f"f{i}_{a}", 0.0) for i in sources for a in range(arcs)
            if net.head[a] != net.gpus[i]}
    out_of: dict[tuple[int, int], dict[int, float]] = {}
    for (i, a), var in flow.items():
        out_of.setdefault((i, int(net.tail[a])), {})[var.index] = -1.0
        out_of.setdefault((i, int(net.head[a])), {}).__setitem__(var.index, 1.0)
    for i in sources:
        need = {net.gpus[j]: traffic[i, j] / scale for j in range(coll.ranks)}
        need[net.gpus[i]] = -traffic[i].sum() / scale
        for v in range(net.size):
            terms = out_of.get((i, v), {})
            rhs = need.get(v, 0.0)
            if terms or rhs:
                model.add_constraint(LinearExpr(terms), "==", rhs)
    for a in range(arcs):
        terms = {flow[i, a].index: 1.0 for i in sources if (i, a) in flow}
        terms[t.index] = -cap[a] / scale
        model.add_constraint(LinearExpr(terms), "<=", 0.0)
    model.minimize(t)
    result = solve_model(model, solver, SolveOptions(time_limit_s=time_limit_s))
    if result.termination != Termination.optimal:
        return None
    return float(result.value(t)) * (1 - 1e-6)  # the solver's tolerances must not overstate it


class _DecodeError(RuntimeError):
    """The solution's flow does not cut into paths that deliver every block (solver noise)."""


@dataclass(frozen=True)
class _Conn:
    src: int
    dst: int
    links: tuple[int, ...]
    lag: int  # epochs after the send's own epoch before the bytes can move on


def time_expanded_schedule(coll: Collective, topo: Topology, router: Router, integral: bool,
                           solver: str | None = None, time_limit_s: float = 60.0,
                           max_variables: int = 400_000) -> MilpOutcome | Declined:
    """The time-expanded all-to-all schedule (LP when not `integral`); see the module doc.
    Declined when the model cannot be written within its limits or its solution does not
    decode."""
    if coll.kind not in ("alltoall", "alltoallv"):
        raise ValueError(f"the time-expanded flow model does not do {coll.kind}")
    started = time.perf_counter()
    traffic = coll.matrix
    floor_us = concurrent_flow_bound(coll, topo, max_variables=10 * FLOW_BOUND_MAX_VARIABLES)
    if floor_us is None or floor_us <= 0:
        return Declined("the flow bound could not be computed for this size")
    routes = direct_routes(topo, router)
    # an epoch long enough that the slowest route's latency takes at most as many epochs
    # as the bound's bytes: small messages would otherwise lag past every horizon
    tau = max(floor_us, max(latency for *_, latency in routes)) / EPOCHS_PER_BOUND
    conns = [_Conn(a, b, links, int(latency // tau)) for a, b, links, _, latency in routes]
    # bytes per variable unit: the MILP's indivisible chunk; for the LP only a scale (values near 1)
    unit = _unit(traffic, min(w for *_, w, _ in routes) * 1e3 * tau / UNITS_PER_EPOCH) if integral else traffic.max() / 64
    if isinstance(unit, Declined):
        return unit
    if integral and traffic.sum() / unit > MAX_UNITS:
        return Declined(f"whole units of {unit:g} bytes (the common divisor of the block sizes) would make "
                        f"{traffic.sum() / unit:.0f} chunks (limit {MAX_UNITS}); use --method lp")
    sources = [i for i in range(coll.ranks) if traffic[i].sum() > 0]
    per_epoch = len(sources) * len(conns)
    if per_epoch * EPOCHS_PER_BOUND > max_variables:
        return Declined(f"the time-expanded model would have about {per_epoch * EPOCHS_PER_BOUND} variables "
                        f"(limit {max_variables})")
    high_cap = min(MAX_EPOCH_FACTOR * EPOCHS_PER_BOUND, max_variables // per_epoch)
    solves: list[tuple[int, SolveResult]] = []

    def attempt(epochs: int, whole: bool):
        left = time_limit_s - (time.perf_counter() - started)
        if left <= 0.05:
            return None
        built = _build(traffic, sources, conns, topo, epochs, tau, unit, whole)
        res = solve_model(built[0], solver if whole else (solver or "highs"), SolveOptions(time_limit_s=left))
        if not whole and res.has_solution and res.termination != Termination.optimal:
            res = replace(res, values=None)  # an LP stopped early is no proof that E is feasible
        solves.append((epochs, res))
        return built, res

    # the LP: grow E from the flow bound until feasible, then bisect (no E tau below the
    # flow bound is feasible, so that is where the proof of minimality starts)
    best, bad, hi = None, EPOCHS_PER_BOUND - 1, EPOCHS_PER_BOUND
    while (best is None and hi <= high_cap) or (best is not None and best[0] - bad > 1):
        epochs = hi if best is None else (best[0] + bad) // 2
        got = attempt(epochs, False)
        if got is None or not (got[1].has_solution or got[1].termination == Termination.infeasible):
            break
        if got[1].has_solution:
            best = (epochs, *got)
        else:
            bad = epochs
            hi = max(epochs + 1, math.ceil(epochs * 1.25))
            if epochs < high_cap < hi:
                hi = high_cap
    lower = bad + 1  # proved: no fractional schedule in fewer epochs
    if integral and best is not None:  # whole units: from the LP's epochs up
        lp_best, best = best, None
        for epochs in range(lp_best[0], high_cap + 1):
            got = attempt(epochs, True)
            if got is None:
                break
            if got[1].has_solution:
                best = (epochs, *got)
                break
            if got[1].termination != Termination.infeasible:
                break
            lower = epochs + 1
    if best is None:
        last = solves[-1][1] if solves else None
        result = last or SolveResult(solver or "highs", Termination.no_solution, None, None, None,
                                     time.perf_counter() - started, Limit.time, None, "no time left to solve")
        if result.termination == Termination.infeasible:  # the cap on epochs, not the problem
            result = replace(result, termination=Termination.no_solution,
                             message=f"no schedule within the model's {high_cap} epochs of {tau:.3f} us")
        return MilpOutcome(None, result, hi, tau, 0, 0)
    epochs, (model, flows, carry), res = best
    try:
        schedule = _decode(coll, traffic, sources, conns, flows, carry, res, epochs, unit, tau, integral)
    except _DecodeError as exc:
        return Declined(f"its solution does not decode: {exc}")
    gap = (epochs - lower) / epochs
    # E is proved minimal when gap is 0; a solve at E that stopped at its limit leaves the
    # secondary objective (bytes moved) unproved: then `feasible`, never `optimal`
    done = gap == 0 and res.termination == Termination.optimal
    result = replace(res, termination=Termination.optimal if done else Termination.feasible,
                     objective=float(epochs), dual_bound=float(lower), gap=gap,
                     seconds=time.perf_counter() - started,
                     limit=combined_limit(r.limit for _, r in solves),
                     message=(f"smallest feasible number of epochs of {tau:.3f} us "
                              f"({'proved' if gap == 0 else f'lower bound {lower}'}; "
                              f"{len(solves)} solves: LP{' then MILP' if integral else ''}"
                              f"{'; chunks of ' + str(int(unit)) + ' bytes' if integral else ''})"))
    return MilpOutcome(schedule, result, epochs, tau, model.num_vars, model.num_constraints)


def _unit(traffic: np.ndarray, fits: float) -> float | Declined:
    """The MILP's indivisible unit: the largest divisor of every block size (their gcd) no
    larger than `fits` bytes."""
    sizes = traffic[traffic > 0]
    if not np.all(sizes == np.round(sizes)):
        return Declined("the milp method needs whole-byte blocks")
    g = math.gcd(*(int(x) for x in sizes))
    k = max(1, math.ceil(g / max(fits, 1.0)))
    while g % k:
        k += 1
    return g / k


def _build(traffic, sources, conns, topo, epochs: int, tau: float, unit: float, integral: bool):
    """The model for `epochs` epochs: (model, flow vars {(i, c, t)}, carry vars)."""
    model = LinearModel("alltoall-time-expanded")
    flows: dict[tuple[int, int, int], object] = {}
    sends: dict[tuple[int, int, int], dict[int, float]] = {}  # (i, gpu, epoch) -> terms
    load: dict[tuple[int, int], dict[int, float]] = {}
    big = traffic.sum() / unit
    for i in sources:
        for c, conn in enumerate(conns):
            if conn.dst == i:
                continue
            first = 0 if conn.src == i else 1
            for t in range(first, epochs - conn.lag):
                v = model.add_var(f"f{i}_{c}_{t}", 0.0, big, integer=integral)
                flows[i, c, t] = v
                sends.setdefault((i, conn.src, t), {})[v.index] = 1.0
                sends.setdefault((i, conn.dst, t + 1 + conn.lag), {})[v.index] = -1.0
                for k in conn.links:
                    load.setdefault((k, t), {})[v.index] = 1.0
    carry = {}
    n = len(traffic)
    for i in sources:
        out = {}
        for t in range(epochs):
            out.update(sends.get((i, i, t), {}))
        model.add_constraint(LinearExpr({k: v for k, v in out.items() if v > 0}), "==", traffic[i].sum() / unit)
        for u in range(n):
            if u == i:
                continue
            prev = None
            for t in range(epochs + 1):
                h = model.add_var(f"h{i}_{u}_{t}", 0.0, big, integer=integral)
                carry[i, u, t] = h
                terms = dict(sends.get((i, u, t), {}))  # out (+1) and arrivals (-1)
                terms[h.index] = 1.0
                if prev is not None:
                    terms[prev.index] = -1.0
                model.add_constraint(LinearExpr(terms), "==", 0.0)
                prev = h
            model.add_constraint(LinearExpr({prev.index: 1.0}), "==", traffic[i, u] / unit)
    for (k, t), terms in load.items():
        room = topo.links[k].bandwidth * 1e3 * tau / unit
        model.add_constraint(LinearExpr(terms), "<=", math.floor(room + 1e-9) if integral else room)
    # bytes moved, a little more when late (whole weights, so CP-SAT takes the MILP)
    model.minimize(LinearExpr({v.index: float(4 * epochs + t) for (i, c, t), v in flows.items()}))
    return model, flows, carry


def _decode(coll, traffic, sources, conns, flows, carry, res, epochs, unit, tau, integral) -> Schedule:
    """Each source's epoch-by-epoch flow cut into paths, one chunk per path (module doc).

    Node (u, t) of source i's DAG has the sends of epoch t and the carry to t + 1 as its
    out-arcs; (u, E) ends at u. A walk along positive arcs from a send of the source
    reaches some (u, E); its smallest arc is a path's amount."""
    tol = 0.5 if integral else 1e-7 * max(1.0, traffic.max() / unit)  # whole units / solver noise
    block_id = coll.block_ids
    paths_of: dict[tuple[int, int], list[tuple[float, list[tuple[int, int, int]]]]] = {}
    for i in sources:
        out: dict[tuple[int, int], list[list]] = {}  # (gpu, epoch) -> [[amount, conn or -1 (carry), epoch]]
        for (s, c, t), var in flows.items():
            if s == i and res.value(var) > tol:
                out.setdefault((conns[c].src, t), []).append([res.value(var), c, t])
        for (s, u, t), var in carry.items():
            if s == i and t < epochs and res.value(var) > tol:
                out.setdefault((u, t), []).append([res.value(var), -1, t])
        for arcs in out.values():
            arcs.sort(key=lambda a: (-a[0], a[1]))
        starts = sorted(t for (u, t) in out if u == i)
        for t0 in starts:
            while any(a[0] > tol for a in out[i, t0]):
                path, u, t = [], i, t0
                while t < epochs:
                    live = [a for a in out.get((u, t), []) if a[0] > tol]
                    if not live:
                        raise _DecodeError(f"time-expanded flow: source {i}'s flow stops at GPU {u} epoch {t}")
                    a = live[0]
                    path.append(a)
                    if a[1] < 0:
                        t += 1
                    else:
                        u, t = conns[a[1]].dst, t + 1 + conns[a[1]].lag
                take = min(a[0] for a in path)
                for a in path:
                    a[0] -= take
                hops = [(conns[a[1]].src, conns[a[1]].dst, a[2]) for a in path if a[1] >= 0]
                paths_of.setdefault((i, u), []).append((take, hops))
    chunks, transfers = [], []
    for (i, j), paths in sorted(paths_of.items()):
        total = sum(p for p, _ in paths)
        if abs(total - traffic[i, j] / unit) > 1e-5 * max(1.0, traffic[i, j] / unit):
            raise _DecodeError(f"time-expanded flow: {i}->{j} decodes to {total * unit:.0f} of "
                               f"{traffic[i, j]:.0f} bytes")
        if integral:  # one chunk per unit, so every chunk has the same size (exportable)
            paths = [(1.0, hops) for p, hops in paths for _ in range(int(round(p)))]
            total = float(len(paths))
        done = 0.0
        for k, (p, hops) in enumerate(paths):
            lo = done / total
            done += p
            chunks.append(Chunk(int(block_id[i, j]), lo, 1.0 if k == len(paths) - 1 else done / total))
            for a, b, t in hops:
                transfers.append(Transfer(len(chunks) - 1, a, b, t))
    missing = [(int(i), int(j)) for i, j in zip(*np.nonzero(block_id >= 0)) if (int(i), int(j)) not in paths_of]
    if missing:
        raise _DecodeError(f"time-expanded flow: block {missing[0]} has no path")
    return Schedule(coll, tuple(chunks), tuple(transfers), algorithm="milp" if integral else "lp",
                    params=(("epoch_us", tau), ("epochs", epochs), ("unit_bytes", unit)))

