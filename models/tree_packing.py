"""Schedules from packed trees (`--method trees`): broadcast down each tree, reduction up
each reversed tree, and allreduce as the two in one loop body.

Each root's block is cut into Q equal units and each tree carries whole units
(models/tree_units.py), over one connection per tree arc that bundles as many parallel
streams, so that max-min fair link sharing gives every tree the share the forest's LP
gives it. The schedule is a loop body: one transfer per arc and phase, a node sending in
the step after it received (going up: after its children), run once per slice of the
buffer (`Schedule.loops`), so the runs pipeline and start-up costs about depth / loops.
Forests: column generation or packing (models/forest.py), and depth-2 rail trees on equal
servers; `tree_schedule` keeps the one its time estimate prefers. docs/collectives.md
has the measurements.
"""
from __future__ import annotations

import math

from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.schedule import Chunk, Schedule, Transfer
from models.gather_lp import topology_lp
from solvers import Limit, SolveResult, Termination
from solvers.arborescence import PackingError
from solvers.tree_columns import MAX_ROUNDS as COLUMN_ROUNDS
from models.forest import Forest, ForestError, RoutedTree, gather_forest, known_forest, rooted_forest
from models.tree_units import Units, unit_counts
from solvers.hierarchical import hierarchical_applies
from topologies.routing import Router
from topologies.types import Topology

TREES_MAX_GPUS = 64
MAX_LOOPS = 1024          # slices of the buffer the loop body runs on: start-up ~ depth / loops
MIN_STREAM_BYTES = 4096   # the least a stream moves per run
UNIT_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)


def trees_applies(collective: Collective) -> str | None:
    """None, or why the trees method cannot run for `collective`."""
    if collective.ranks > TREES_MAX_GPUS:
        return (f"trees: {collective.ranks} GPUs is more than the {TREES_MAX_GPUS} the trees method is allowed "
                f"(its schedule would be too large to pipeline and check); use hierarchical or ring")
    if collective.ranks < 2:
        return "trees: a single GPU has nothing to move"
    return None


def tree_schedule(collective: Collective, topo: Topology, loops: int | None = None,
                  forest: str | None = None, per_block: int | None = None,
                  run_budget: int | None = None) -> Schedule | Declined:
    """Bandwidth-optimal schedule for allgather, reduce-scatter, allreduce, broadcast and
    reduce from weighted trees at the throughput LP's optimum, found by column generation
    (`forest="columns"`, solvers/tree_columns.py) or edge splitting and packing
    ("packing", solvers/forest.py), or depth-2 trees along the rails ("rails"). By
    default: on several servers columns (far fewer trees than packing gives there) and,
    on equal servers, rails too, keeping the schedule `_time` estimates faster (rails:
    shallow, a little below the LP's rate where the network binds, so they win at small
    sizes); packing on one server and for one root (equal, shallow trees: the symmetric
    depth-2 broadcast on a switch). Declined when every forest fails its check.
    O(forest) + O(transfers)."""
    kind = collective.kind
    if kind not in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"):
        raise ValueError(f"the trees method does not do {kind}")
    reason = trees_applies(collective)
    if reason:
        raise ValueError(reason)
    if forest is not None:
        methods = [forest]
    elif kind in ("broadcast", "reduce") or len(topo.servers) == 1:
        methods = ["packing"]
    else:
        methods = ["columns"] + (["rails"] if hierarchical_applies(topo) is None else [])
    router = Router(topo)
    found, failures = [], []
    for method in methods:
        try:
            found.append([(gather_forest(topo, reverse, method) if root is None else
                           rooted_forest(topo, root, reverse, method), reverse) for reverse, root in _phases(collective)])
        except (ForestError, PackingError) as exc:  # a failed check: say so, let auto move on
            failures.append(f"{method}: {exc}")
    if not found:
        return Declined("trees: " + "; ".join(failures))
    # schedules in order of the best each forest could do (its own rate, the most loops);
    # one whose best is no better than a schedule already built is not built
    block = min(b.size for b in collective.blocks)
    reach = [sum(_latency_depth(f, topo) for f, _ in ph) for ph in found]
    optimistic = sorted(((_time(block, [float(f.rate_mbps) / 1e3 for f, _ in ph], max(f.stats["max_depth"] for f, _ in ph),
                                MAX_LOOPS, reach[i]), i) for i, ph in enumerate(found)))
    best = None
    for bound, i in optimistic:
        if best is not None and bound >= best[0]:
            break
        try:
            sched = forest_schedule(collective, found[i], topo, loops, router, per_block, run_budget)
        except ForestError as exc:
            failures.append(f"{found[i][0][0].stats.get('method')}: {exc}")
            continue
        p = dict(sched.params)
        estimate = _time(block, [p[k] for k in p if k.endswith("units_rate_GBps_per_gpu")], p["max_depth"],
                         sched.loops, reach[i])
        if best is None or estimate < best[0]:
            best = (estimate, sched)
    if best is None:
        return Declined("trees: " + "; ".join(failures))
    return best[1]


def _time(block: float, rates_gbps: list[float], depth: int, loops: int, latency_us: float) -> float:
    """Microseconds a forest schedule should take, to choose between forests before
    simulating: each phase's block at its rate, stretched by the loop's start-up (depth - 1
    slices), plus the latency from the roots to the deepest leaves. The plan's time is
    always the simulator's; this only picks which forest to build the plan from."""
    bandwidth = sum(block / (r * 1e3) for r in rates_gbps)
    return bandwidth * (1 + max(0, depth - 1) / loops) + latency_us


def _latency_depth(forest: Forest, topo: Topology) -> float:
    """The longest sum of path latencies from a root down its tree (over the base trees)."""
    latency = {(l.src, l.dst): l.latency for l in topo.links}
    worst = 0.0
    for tree in forest.base_trees:
        depth = tree.depth()
        reach = [0.0] * len(tree.parent)
        for v in sorted(range(len(depth)), key=depth.__getitem__):
            u = tree.parent[v]
            if u >= 0:
                path = tree.paths[v]
                reach[v] = reach[u] + sum(latency[(a, b)] for a, b in zip(path, path[1:]))
        worst = max(worst, max(reach))
    return worst


def _phases(collective: Collective) -> list[tuple[bool, int | None]]:
    """The forests a collective runs on, in order: (reversed, root rank or None for all).
    Reductions use the reversed graph; allreduce reduces, then gathers."""
    root = collective.root
    return {"allgather": [(False, None)], "reduce-scatter": [(True, None)],
            "allreduce": [(True, None), (False, None)], "broadcast": [(False, root)],
            "reduce": [(True, root)]}[collective.kind]


def _tag(upward: bool, phases: int) -> str:
    """Prefix of a phase's entries in a schedule's params: the upward (reduce) phase of an
    allreduce is `up_`."""
    return "up_" if upward and phases > 1 else ""


def forest_solve(collective: Collective, topo: Topology, schedule: Schedule | None = None) -> SolveResult:
    """The solve behind a trees plan: the throughput LP(s) its forests were built from
    (kept on the topology, so nothing is solved again) and, for column-generated forests,
    the master LP (its seconds too, when the forest is known on the topology). `optimal`
    only when every LP solve was optimal, cut generation found no violated cut and column
    generation converged; otherwise `feasible`, with the limit that stopped it (the rounds,
    a work limit; or column generation's time limit)."""
    lps = [topology_lp(topo, reverse, root)[1] for reverse, root in _phases(collective)]
    params = dict(schedule.params) if schedule is not None else {}
    masters = 0.0
    phases = _phases(collective)
    for reverse, root in phases:
        found = known_forest(topo, params.get(_tag(reverse, len(phases)) + "forest", ""), reverse, root)
        masters += found.stats.get("master_seconds", 0.0) if found is not None else 0.0
    synthesis = [v for k, v in params.items() if k.endswith("synthesis")]
    columns = [s for s in synthesis if s.get("method") == "columns"]
    converged = all(lp.converged for lp in lps) and all(s["columns_converged"] for s in columns)
    proved = converged and all(lp.status == "optimal" for lp in lps)
    name = lps[0].solver + ("+" + columns[0]["master_solver"] if columns else "")
    out_of_rounds = not all(lp.converged for lp in lps) or any(s["columns_rounds"] > COLUMN_ROUNDS for s in columns)
    limit = None if converged else Limit.work if out_of_rounds else Limit.time
    return SolveResult(name, Termination.optimal if proved else Termination.feasible, None, None,
                       0.0 if proved else None, sum(lp.seconds for lp in lps) + masters, limit, None)


def forest_schedule(collective: Collective, phases: list[tuple[Forest, bool]], topo: Topology,
                    loops: int | None = None, router: Router | None = None,
                    per_block: int | None = None, run_budget: int | None = None) -> Schedule:
    """A loop body for `phases` in order, each a forest used downwards (False) or upwards:
    every tree carries its whole units (models/tree_units.py) as one transfer per arc over
    a connection of as many streams, a node's arcs in the step after it received (going
    up: after its children); the body runs `loops` times, once per slice of the buffer
    (by default as many as units of MIN_STREAM_BYTES per stream allow, up to MAX_LOOPS;
    with `run_budget`, no more than keep loops x body transfers within it, so that every
    run is simulated).
    A path the router would take anyway is left implicit (None), so runtimes that route
    by themselves (MSCCL) can run the schedule."""
    router = router or Router(topo)
    rooted = collective.kind in ("broadcast", "reduce")
    block_of = (lambda tree: 0) if rooted else (lambda tree: tree.root)
    nblocks = len(collective.blocks)
    block_bytes = min(b.size for b in collective.blocks)
    most = MAX_LOOPS
    if run_budget is not None:  # at most one transfer per tree arc and phase (more where allreduce's phases cut chunks)
        arcs = sum(len(f.trees) for f, _ in phases) * (collective.ranks - 1)
        most = max(1, min(MAX_LOOPS, run_budget // arcs))
    units = [_units(forest, topo, per_block, block_bytes, most) for forest, _ in phases]
    if len({u.per_block for u in units}) > 1:  # the phases of an allreduce share one grid
        units = [_units(forest, topo, max(u.per_block for u in units), block_bytes, most) for forest, _ in phases]
    q = units[0].per_block
    # each phase's trees tile every block in whole units; a chunk is a piece of the
    # common refinement, owned by one tree per phase
    owners_of: list[list[list[tuple[int, int, RoutedTree]]]] = [[[] for _ in phases] for _ in range(nblocks)]
    for ph, ((forest, _), u) in enumerate(zip(phases, units)):
        position = [0] * nblocks
        for tree, n in zip(forest.trees, u.counts):
            if n:
                b = block_of(tree)
                owners_of[b][ph].append((position[b], position[b] + n, tree))
                position[b] += n
        if any(p != q for p in position):
            raise ForestError(f"phase {ph}: tree units of a block sum to {sorted(set(position))}, not {q}")
    chunks: list[Chunk] = []
    chunk_owners: list[list[RoutedTree]] = []
    for b in range(nblocks):
        cuts = sorted({c for ph in owners_of[b] for lo, hi, _ in ph for c in (lo, hi)})
        for lo, hi in zip(cuts, cuts[1:]):
            chunks.append(Chunk(b, lo / q, hi / q))
            chunk_owners.append([next(t for a, z, t in ph if a <= lo < z) for ph in owners_of[b]])
    streams = {id(t): n for (forest, _), u in zip(phases, units) for t, n in zip(forest.trees, u.counts)}
    connections: dict[tuple[int, int], dict] = {}
    widths: dict[tuple[int, int, int], int] = {}

    def channel(src: int, dst: int, ph: int, tree: RoutedTree, v: int) -> int:
        # one connection per tree arc, as many streams as the tree has units
        known = connections.setdefault((src, dst), {})
        ch = known.setdefault((ph, id(tree), v), len(known))
        if streams[id(tree)] > 1:
            widths[(src, dst, ch)] = streams[id(tree)]
        return ch

    gpus = router.physical.gpus
    implicit: dict[tuple, bool] = {}

    def route(src: int, dst: int, path):
        key = (src, dst, path)
        if key not in implicit:
            implicit[key] = path == router.route(gpus[src], gpus[dst])
        return None if implicit[key] else path

    transfers: list[Transfer] = []
    base = 0
    for ph, (forest, upward) in enumerate(phases):
        last = base
        for c, owners in enumerate(chunk_owners):
            tree = owners[ph]
            depth = tree.depth()
            height = max(depth)
            for v, u in enumerate(tree.parent):
                if u < 0:
                    continue
                if upward:
                    step = base + height - depth[v]
                    transfers.append(Transfer(c, v, u, step, reduce=True, channel=channel(v, u, ph, tree, v),
                                              path=route(v, u, tree.paths[v])))
                else:
                    step = base + depth[u]
                    transfers.append(Transfer(c, u, v, step, channel=channel(u, v, ph, tree, v),
                                              path=route(u, v, tree.paths[v])))
                last = max(last, step)
        base = last + 1
    depth = max(f.stats["max_depth"] for f, _ in phases)
    loops = loops or _loops(block_bytes / q, most)
    if run_budget is not None:
        loops = max(1, min(loops, run_budget // max(1, len(transfers))))
    trees = sum(len(f.trees) for f, _ in phases)
    params = [("loops", loops), ("units_per_block", q), ("trees", trees), ("max_depth", depth),
              ("trees_with_units", sum(1 for u in units for n in u.counts if n))]
    for (f, upward), u in zip(phases, units):
        tag = _tag(upward, len(phases))
        params += [(tag + "forest", f.stats.get("method", "packing")),
                   (tag + "rate_GBps_per_gpu", float(f.rate_mbps) / 1000),
                   (tag + "units_rate_GBps_per_gpu", float(f.rate_mbps) / 1000 / u.ratio),
                   (tag + "lp_rate_GBps_per_gpu", f.lp_rate_mbps / 1000),
                   (tag + "cut_rate_GBps_per_gpu", float(f.cut_rate_mbps) / 1000),
                   (tag + "units_solve", {"solver": u.solve.solver, "status": str(u.solve.termination)}),
                   (tag + "synthesis", {k: v for k, v in sorted(f.stats.items()) if not k.endswith("seconds")})]
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="spanning-tree-packing",
                    params=tuple(params), loops=loops, widths=tuple(sorted((s, d, c, w) for (s, d, c), w in widths.items())))


def _units(forest: Forest, topo: Topology, per_block: int | None, block_bytes: float, most: int) -> Units:
    """Whole units per tree: the given Q, or the one of UNIT_CHOICES that minimises the
    rounding loss times the pipeline's start-up, (1 + (depth - 1) / loops) with the loops
    units of that size allow. A choice whose start-up alone costs more than the best found
    is not solved (branch and bound over Q, smallest start-up first)."""
    if per_block is not None:
        return unit_counts(forest, topo, per_block)
    depth = forest.stats["max_depth"]
    startup = {q: 1 + max(0, depth - 1) / _loops(block_bytes / q, most) for q in UNIT_CHOICES}
    best, best_cost = None, math.inf
    for q in sorted(UNIT_CHOICES, key=lambda q: (startup[q], q)):
        if startup[q] >= best_cost:
            break
        u = unit_counts(forest, topo, q)
        cost = u.ratio * startup[q]
        if cost < best_cost - 1e-12:
            best, best_cost = u, cost
    return best


def _loops(unit_bytes: float, most: int = MAX_LOOPS) -> int:
    return max(1, min(most, int(unit_bytes // MIN_STREAM_BYTES)))
