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

Symmetry: when the full model is over the size limit and the servers can be rotated onto
each other (topologies/symmetry.py), the model is written for the chunks of one GPU per
orbit, and every other chunk moves as the image of one of them (x[g(c), g(e), t] is
x[c, e, t]): |G| times fewer binaries and rows, capacity rows written for every link
(duplicates dropped). Its schedules are those that look the same on every server, a
restriction, so its optimum is not claimed for the full model: the status says
`feasible`, no gap, and the message why (the plan's ratio to bound still measures it).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers import LinearModel, SolveOptions, SolveResult, combined_limit, quicksum
from solvers import solve as solve_model
from topologies.routing import Router
from topologies.symmetry import rank_symmetry
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
    symmetry: int = 1  # order of the group the model was reduced by (1: the full model)


def direct_routes(topo: Topology, router: Router, reverse: bool = False
                  ) -> list[tuple[int, int, tuple[int, ...], float, float]]:
    """(a, b, link indices, bandwidth GB/s, latency us) of every GPU pair whose route
    no other GPU forwards; with `reverse`, the route from b to a."""
    gpus = topo.gpus
    gpu_set = set(gpus)
    index = {(l.src, l.dst): k for k, l in enumerate(topo.links)}
    out = []
    for a in range(len(gpus)):
        for b in range(len(gpus)):
            if a == b:
                continue
            src, dst = (b, a) if reverse else (a, b)  # reversed model: data flows dst -> src
            path = router.route(gpus[src], gpus[dst])
            if any(p in gpu_set for p in path[1:-1]):
                continue
            width, latency = router.figures(gpus[src], gpus[dst])
            out.append((a, b, tuple(index[(u, v)] for u, v in zip(path, path[1:])), width, latency))
    return out


def _connections(topo: Topology, router: Router, chunk_bytes: float, reverse: bool) -> tuple[list[Connection], float]:
    """Direct GPU-to-GPU routes (no GPU forwards them) and the epoch length tau."""
    raw = [(a, b, links, chunk_bytes / (width * 1e3) + latency)
           for a, b, links, width, latency in direct_routes(topo, router, reverse)]
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


@dataclass(frozen=True)
class CopyModel:
    """The time-expanded model of one copy pass, and what decoding its solution needs."""

    model: LinearModel
    x: dict[tuple[int, int, int], object]  # (chunk, connection, epoch) -> binary send
    conns: list[Connection]
    horizon: int
    tau: float
    order: int  # of the group the model was reduced by (1: none)
    conn_image: list[list[int]] | None
    images: list[tuple[int, int]] | None


def build_copy(topo: Topology, router: Router, sources: list[int], receivers: list[list[int]], chunk_bytes: float,
               horizon_us: float, reverse: bool, max_variables: int = MAX_VARIABLES,
               images: list[tuple[int, int]] | None = None, ranks: np.ndarray | None = None) -> CopyModel | Declined:
    """Chunk c starts at GPU sources[c] and must reach every GPU in receivers[c].

    `images` (with `ranks`, rank permutations): per chunk, (g, c0) such that the chunk is
    the image of chunk c0 under element g, for use when the full model is too large.
    Declined when some GPU cannot be reached or the model would be over `max_variables`.
    """
    n = topo.num_gpus
    conns, tau = _connections(topo, router, chunk_bytes, reverse)
    earliest = {src: _earliest(n, conns, src) for src in set(sources)}
    reach = max(max(earliest[s][v] for v in receivers[c]) for c, s in enumerate(sources) if receivers[c])
    if reach == math.inf:
        return Declined("some GPU cannot be reached without another GPU forwarding")
    # the cap from the caller, but never below what the fastest delivery needs (epochs round up)
    horizon = max(1, math.ceil(horizon_us / tau - 1e-9), int(reach))
    estimate = sum(max(0, horizon - conn.epochs + 1 - int(earliest[src][conn.src]))
                   for src in sources for conn in conns if earliest[src][conn.src] != math.inf)
    conn_image = _connection_images(conns, ranks) if estimate > max_variables and images is not None else None
    order = 1 if conn_image is None else len(ranks)
    if estimate // order > max_variables:
        return Declined(f"the time-expanded model would have about {estimate // order} variables "
                        f"(limit {max_variables}{'; reduced by server symmetry' if order > 1 else ''})")
    own = [c for c in range(len(sources)) if order == 1 or images[c][0] == 0]  # chunks with variables
    model = LinearModel("collective-time-expanded")
    x: dict[tuple[int, int, int], object] = {}
    into: dict[tuple[int, int], list[tuple[int, int, object]]] = {}  # (chunk, gpu) -> (epoch, d, var)
    for c in own:
        src = sources[c]
        early = earliest[src]
        for e, conn in enumerate(conns):
            if conn.dst == src or early[conn.src] == math.inf:
                continue
            for t in range(int(early[conn.src]), horizon - conn.epochs + 1):
                var = model.add_binary(f"x{c}_{e}_{t}")
                x[(c, e, t)] = var
                into.setdefault((c, conn.dst), []).append((t, conn.epochs, var))
    if not x:
        return Declined("the time-expanded model has no room for any send")
    makespan = model.add_var("T", 0, horizon, integer=True)
    for c in own:
        for v in receivers[c]:
            arrivals = into.get((c, v), [])
            if not arrivals:
                return Declined(f"GPU {v} cannot receive within the horizon")
            model.add(quicksum(var for _, _, var in arrivals) == 1)
            model.add(makespan - quicksum((t + d) * var for t, d, var in arrivals) >= 0)
    _holding_rows(model, x, into, conns, sources, horizon)
    _capacity_rows(model, x, conns, topo, order, conn_image)
    model.minimize(makespan)
    return CopyModel(model, x, conns, horizon, tau, order, conn_image, images)


def _holding_rows(model: LinearModel, x: dict, into: dict, conns: list[Connection], sources: list[int],
                  horizon: int) -> None:
    """A GPU sends a chunk only from the epoch it holds it: h[c, u, t] counts its arrivals."""
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


def _capacity_rows(model: LinearModel, x: dict, conns: list[Connection], topo: Topology, order: int,
                   conn_image: list[list[int]] | None) -> None:
    """Per physical link and epoch, the sends in flight (and, under symmetry, their images)
    within capacity, in integer parts of it."""
    load: dict[tuple[int, int], list[tuple[int, object]]] = {}
    for (c, e0, t), var in x.items():
        for g in range(order):  # the send and, under symmetry, its images
            conn = conns[e0 if conn_image is None else conn_image[g][e0]]
            for k in conn.links:
                cap = topo.links[k].bandwidth * 1e3
                weight = max(1, math.ceil(CAPACITY_SCALE * conn.rate / cap - 1e-12))
                for busy in range(t, t + conn.epochs):
                    load.setdefault((k, busy), []).append((weight, var))
    written: set[tuple] = set()
    for terms in load.values():
        if sum(w for w, _ in terms) <= CAPACITY_SCALE:
            continue
        if order > 1:  # under symmetry a link's row is often its image's: write it once
            key = tuple(sorted((v.index, w) for w, v in terms))
            if key in written:
                continue
            written.add(key)
        model.add(quicksum(w * v for w, v in terms) <= CAPACITY_SCALE)


def decode_copy(built: CopyModel, result: SolveResult) -> list[tuple[int, int, int, int, int]] | None:
    """The sends (chunk, src, dst, epoch, epochs in flight) of the solution, images
    included; None without a solution."""
    if not result.has_solution:
        return None
    conns, conn_image = built.conns, built.conn_image
    chosen = [(c, e, t) for (c, e, t), var in built.x.items() if result.value(var) > 0.5]
    if conn_image is None:
        return sorted((c, conns[e].src, conns[e].dst, t, conns[e].epochs) for c, e, t in chosen)
    owner = {(g, c0): c for c, (g, c0) in enumerate(built.images)}
    return sorted((owner[g, c], conns[conn_image[g][e]].src, conns[conn_image[g][e]].dst, t, conns[e].epochs)
                  for c, e, t in chosen for g in range(built.order))


def solve_copy(topo: Topology, router: Router, sources: list[int], receivers: list[list[int]], chunk_bytes: float,
               horizon_us: float, reverse: bool, solver: str | None, deadline: float,
               max_variables: int = MAX_VARIABLES, images: list[tuple[int, int]] | None = None,
               ranks: np.ndarray | None = None) -> tuple[list | None, SolveResult, CopyModel] | Declined:
    """build -> solve (the time limit covers building too: the solver gets what is left
    before `deadline`) -> decode: the sends (or None), the solver's result (a restricted
    model's, under symmetry, never optimal) and the model."""
    built = build_copy(topo, router, sources, receivers, chunk_bytes, horizon_us, reverse, max_variables, images,
                       ranks)
    if isinstance(built, Declined):
        return built
    result = solve_model(built.model, solver,
                         SolveOptions(time_limit_s=max(MIN_SOLVE_S, deadline - time.perf_counter())))
    sends = decode_copy(built, result)
    if sends is not None and built.order > 1:
        result = _restricted(result, built.order)
    return sends, result, built


def _connection_images(conns: list[Connection], ranks: np.ndarray | None) -> list[list[int]] | None:
    """Per group element, the connection each connection maps to; None unless every
    image exists and takes as many epochs (the rows of an image chunk are then those of
    its original, moved)."""
    if ranks is None:
        return None
    index = {(c.src, c.dst): e for e, c in enumerate(conns)}
    out = []
    for perm in ranks.tolist():
        row = []
        for conn in conns:
            e = index.get((perm[conn.src], perm[conn.dst]))
            if e is None or conns[e].epochs != conn.epochs:
                return None
            row.append(e)
        out.append(row)
    return out


def _restricted(result: SolveResult, order: int) -> SolveResult:
    """A solve of the symmetric model: optimal there is only feasible for the full model,
    and its dual bound is no bound on it."""
    from dataclasses import replace

    from solvers import Termination

    done = result.termination == Termination.optimal
    return replace(result, termination=Termination.feasible if done else result.termination, gap=None,
                   dual_bound=None,
                   message=(f"{'optimal' if done else 'best found'} among schedules symmetric under the "
                            f"{order} server rotations (a model {order}x smaller); not a bound on the full model"))


def milp_schedule(coll: Collective, topo: Topology, router: Router, horizon_us: float, parts: int = 1,
                  solver: str | None = None, time_limit_s: float = 60.0,
                  max_variables: int = MAX_VARIABLES) -> MilpOutcome | Declined:
    """Solve the time-expanded model for `coll` and decode it into a Schedule (Declined
    when the model cannot be written: a GPU out of reach, over `max_variables`).

    `horizon_us` caps the makespan considered (e.g. the best baseline's simulated time);
    `parts` cuts every block into that many chunks.
    """
    if coll.kind not in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"):
        raise ValueError(f"the milp method does not do {coll.kind}")
    n = coll.ranks
    if n < 2:
        return Declined("one GPU moves nothing")
    blocks = len(coll.blocks)
    chunks = tuple(Chunk(b, p / parts, (p + 1) / parts) for b in range(blocks) for p in range(parts))
    chunk_bytes = coll.blocks[0].size / parts
    if coll.kind in ("broadcast", "reduce"):
        sources = [coll.root] * len(chunks)
    else:
        sources = [c // parts for c in range(len(chunks))]
    receivers = [[v for v in range(n) if v != s] for s in sources]
    reverse = coll.kind in ("reduce-scatter", "reduce")
    ranks = rank_symmetry(topo) if coll.kind not in ("broadcast", "reduce") else None
    images = None
    if ranks is not None:  # chunk (block b, part p) of a rep b's image under g is (g(b), p)
        reps = [b for b in range(n) if ranks[:, b].min() == b]
        images = [None] * len(chunks)
        for g in range(len(ranks)):
            for b in reps:
                for p in range(parts):
                    images[int(ranks[g, b]) * parts + p] = (g, b * parts + p)
    started = time.perf_counter()
    halves = 2 if coll.kind == "allreduce" else 1
    horizon_us = horizon_us / halves  # each half of an allreduce must fit in half the baseline's time
    transfers: list[Transfer] = []
    outcome = None
    passes = [True, False] if coll.kind == "allreduce" else [reverse]
    first_step = 0
    for i, backwards in enumerate(passes):
        deadline = started + time_limit_s * (i + 1) / halves
        solved = solve_copy(topo, router, sources, receivers, chunk_bytes, horizon_us, backwards, solver, deadline,
                            max_variables // halves, images, ranks)
        if isinstance(solved, Declined):
            return solved
        sends, result, built = solved
        horizon, tau, order = built.horizon, built.tau, built.order
        nvars, ncons = built.model.num_vars, built.model.num_constraints
        outcome = (result, horizon, tau, nvars, ncons, outcome)
        if sends is None:
            return MilpOutcome(None, result, horizon, tau, nvars, ncons, order)
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
                        params=(("parts", parts), ("epoch_us", tau), ("horizon_epochs", horizon))
                        + ((("symmetry", order),) if order > 1 else ()))
    return MilpOutcome(schedule, result, horizon, tau, nvars, ncons, order)


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
    return replace(b, termination=worst, seconds=a.seconds + b.seconds, limit=combined_limit((a.limit, b.limit)),
                   message="reduce-scatter and allgather halves solved separately (each to its own status)",
                   gap=max(gaps) if gaps else None,
                   objective=(a.objective or 0) + (b.objective or 0) if a.objective is not None and b.objective is not None else None,
                   dual_bound=(a.dual_bound or 0) + (b.dual_bound or 0) if a.dual_bound is not None and b.dual_bound is not None else None)
