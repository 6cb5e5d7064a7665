"""Schedules from packed trees (`--method trees`): pipelined broadcast down each tree,
reduction up each reversed tree, and allreduce as the two in sequence.

A tree carrying weight w of its root's block moves that share of the block, cut into
`parts` pieces that follow each other down (or up) the tree: piece p crosses the arc
into a node of depth d in step p + d - 1 (going up, a node of depth d sends to its parent
in step p + height - d, after its children). The simulator derives the true dependencies
from the steps, so pieces of different trees overlap wherever links allow. The number
of pieces per block trades start-up time (a deep tree idles its lower links until the
first piece arrives) against schedule size: about 1/200 of the transfer time per tree
level, within a transfer budget. Connections are kept apart where one FIFO would stall
another: per route (NVLink and the network between the same two GPUs) and per tree level
(a piece in transit upstream must not hold up the sender's own data), and split in
proportion to their bytes (see _spread_channels).
"""
from __future__ import annotations

import math
from fractions import Fraction

from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.schedule import Chunk, Schedule, Transfer
from models.gather_lp import topology_lp
from solvers import Limit, SolveResult, Termination
from solvers.arborescence import PackingError
from solvers.tree_columns import MAX_ROUNDS as COLUMN_ROUNDS
from solvers.baselines import TRANSFER_BUDGET
from models.forest import Forest, ForestError, RoutedTree, gather_forest, known_forest, rooted_forest
from topologies.routing import Router
from topologies.types import Topology

# Beyond this a schedule (trees x GPUs x pieces transfers) has too few pieces per tree to
# pipeline within the transfer budget, and packing (broadcast, reduce) takes minutes; the
# forests themselves are found for 1024 GPUs in about 36 s (bench/trees.py --scaling)
TREES_MAX_GPUS = 64
PIPELINE_TARGET = 200  # pieces per tree level: start-up about 1/200 of the transfer time
MIN_PIECE_BYTES = 4096
SPREAD_CHANNELS = 8
SCHEDULE_BUDGET = 200_000  # transfers: verified and timed in about a minute


def trees_applies(collective: Collective) -> str | None:
    """None, or why the trees method cannot run for `collective`."""
    if collective.ranks > TREES_MAX_GPUS:
        return (f"trees: {collective.ranks} GPUs is more than the {TREES_MAX_GPUS} the trees method is allowed "
                f"(its schedule would be too large to pipeline and check); use hierarchical or ring")
    if collective.ranks < 2:
        return "trees: a single GPU has nothing to move"
    return None


def tree_schedule(collective: Collective, topo: Topology, pieces: int | None = None,
                  budget: int | None = None, forest: str | None = None) -> Schedule | Declined:
    """Bandwidth-optimal schedule for allgather, reduce-scatter, allreduce, broadcast and
    reduce from weighted trees at the throughput LP's optimum, found by column generation
    (`forest="columns"`, solvers/tree_columns.py) or edge splitting and packing
    ("packing", solvers/forest.py). By default: columns when every GPU is a root on
    several servers (far fewer trees than packing gives there: 1.25 vs 2.28 of the bound
    on hgx-h100x4), packing on one server (1.03 vs 1.08 on mi250, bench/trees.py) and for
    one root (equal, shallow trees: the symmetric depth-2 broadcast on a switch).
    Declined when a forest fails its check. O(forest) + O(transfers)."""
    kind = collective.kind
    if kind not in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"):
        raise ValueError(f"the trees method does not do {kind}")
    reason = trees_applies(collective)
    if reason:
        raise ValueError(reason)
    forest = forest or ("packing" if kind in ("broadcast", "reduce") or len(topo.servers) == 1 else "columns")
    try:
        phases = [(gather_forest(topo, reverse, forest) if root is None else rooted_forest(topo, root, reverse, forest),
                   reverse) for reverse, root in _phases(collective)]
    except (ForestError, PackingError) as exc:  # a failed check: say so, let auto move on
        return Declined(f"trees: {exc}")
    return forest_schedule(collective, phases, pieces, budget, Router(topo))


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


def forest_schedule(collective: Collective, phases: list[tuple[Forest, bool]], pieces: int | None = None,
                    budget: int | None = None, router: Router | None = None) -> Schedule:
    """Transfers for `phases` in order, each a forest used downwards (False) or upwards.
    A path the router would take anyway is left implicit (None), so runtimes that route
    by themselves (MSCCL) can run the schedule."""
    rooted = collective.kind in ("broadcast", "reduce")
    block_of = (lambda tree: 0) if rooted else (lambda tree: tree.root)
    nblocks = len(collective.blocks)
    per_block: list[list[list[tuple[Fraction, Fraction, RoutedTree, int]]]] = [[[] for _ in phases] for _ in range(nblocks)]
    per_level = _per_level(collective, phases, budget or SCHEDULE_BUDGET) if pieces is None else float(pieces)
    heights = []
    counts = {}
    for forest, _ in phases:
        for tree in forest.trees:
            # as many pieces per tree level for every tree: pieces are then in proportion
            # to the tree's weight, and so is its share of a link, so a hop takes the
            # same time in every tree and start-up is 1/per_level of the transfer time
            block = collective.blocks[block_of(tree)].size
            k = int(per_level * max(1, max(tree.depth()) - 1))
            counts[id(tree)] = max(1, min(k, int(block * tree.weight // MIN_PIECE_BYTES)))
    slots = max(counts.values())
    for ph, (forest, _) in enumerate(phases):
        heights.append({})
        position = [Fraction(0)] * nblocks
        for tree in forest.trees:
            b = block_of(tree)
            depth = tree.depth()
            heights[ph][id(tree)] = (depth, max(depth))
            k = counts[id(tree)]
            lo = position[b]
            for part in range(k):
                a, z = lo + tree.weight * part / k, lo + tree.weight * (part + 1) / k
                # the piece's slot in the block's pipeline: heavy trees send more pieces per
                # slot, so on a shared link trees advance in proportion to their weight
                per_block[b][ph].append((a, z, tree, part * slots // k))
            position[b] = lo + tree.weight
        if any(p != 1 for p in position):
            raise ForestError(f"phase {ph}: tree weights of a block sum to {[float(p) for p in position]}, not 1")
    chunks: list[Chunk] = []
    transfers: list[Transfer] = []
    base = 0
    phase_steps = [0] * len(phases)
    chunk_rows: list[tuple[int, list[tuple[RoutedTree, int]]]] = []
    for b in range(nblocks):
        rows = [sorted(ph, key=lambda r: r[0]) for ph in per_block[b]]
        cuts = sorted({c for ph in rows for a, z, _, _ in ph for c in (a, z)})
        at = [0] * len(rows)
        for lo, hi in zip(cuts, cuts[1:]):
            owners = []
            for i, ph in enumerate(rows):
                while ph[at[i]][1] <= lo:  # sweep: each phase's pieces tile [0, 1) in order
                    at[i] += 1
                owners.append((ph[at[i]][2], ph[at[i]][3]))
            chunks.append(Chunk(b, float(lo), float(hi)))
            chunk_rows.append((len(chunks) - 1, owners))
    routes: dict[tuple[int, int], dict] = {}

    def channel(src: int, dst: int, path, level: int) -> int:
        # one connection per route and tree level: a slow route (the network) must not hold
        # up a fast one (NVLink) between the same two GPUs, nor a piece still in transit
        # upstream hold up the sender's own data, as one FIFO connection would
        known = routes.setdefault((src, dst), {})
        return known.setdefault((path, level), len(known))

    gpus = router.physical.gpus if router is not None else None
    implicit: dict[tuple, bool] = {}

    def route(src: int, dst: int, path):
        key = (src, dst, path)
        if key not in implicit:
            implicit[key] = gpus is not None and path == router.route(gpus[src], gpus[dst])
        return None if implicit[key] else path

    for ph, (forest, upward) in enumerate(phases):
        last = base
        for c, owners in chunk_rows:
            tree, part = owners[ph]
            depth, height = heights[ph][id(tree)]
            for v, u in enumerate(tree.parent):
                if u < 0:
                    continue
                if upward:
                    step = base + part + height - depth[v]
                    transfers.append(Transfer(c, v, u, step, reduce=True,
                                              channel=channel(v, u, tree.paths[v], height - depth[v]),
                                              path=route(v, u, tree.paths[v])))
                else:
                    step = base + part + depth[u]
                    transfers.append(Transfer(c, u, v, step, channel=channel(u, v, tree.paths[v], depth[u]),
                                              path=route(u, v, tree.paths[v])))
                last = max(last, step)
        phase_steps[ph] = last - base + 1
        base = last + 1
    transfers = _spread_channels(collective, chunks, transfers)
    trees = sum(len(f.trees) for f, _ in phases)
    params = [("pieces_per_tree_level", round(per_level, 2)), ("trees", trees),
              ("max_depth", max(f.stats["max_depth"] for f, _ in phases))]
    for f, upward in phases:
        tag = _tag(upward, len(phases))
        params += [(tag + "forest", f.stats.get("method", "packing")),
                   (tag + "rate_GBps_per_gpu", float(f.rate_mbps) / 1000),
                   (tag + "lp_rate_GBps_per_gpu", f.lp_rate_mbps / 1000),
                   (tag + "cut_rate_GBps_per_gpu", float(f.cut_rate_mbps) / 1000),
                   (tag + "synthesis", {k: v for k, v in sorted(f.stats.items()) if not k.endswith("seconds")})]
    params = tuple(params)
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="spanning-tree-packing", params=params)


def _spread_channels(collective: Collective, chunks: list[Chunk], transfers: list[Transfer]) -> list[Transfer]:
    """Split each connection into channels in proportion to the bytes it carries.

    Links are shared fairly among the connections crossing them, but a tree packing needs
    each connection to run at its own rate (its share of the trees). Giving a connection
    channels in proportion to its load, its pieces dealt round-robin over them, makes a
    fair share a proportional one: every channel of a link carries about the same bytes
    and they all finish together."""
    load: dict[tuple[int, int, int], float] = {}
    sizes = [collective.blocks[c.block].size * (c.hi - c.lo) for c in chunks]
    for t in transfers:
        key = (t.src, t.dst, t.channel)
        load[key] = load.get(key, 0.0) + sizes[t.chunk]
    quantum = max(max(load.values()) / SPREAD_CHANNELS, min(load.values()))  # equal loads: one each
    routes_of: dict[tuple[int, int], int] = {}
    for src, dst, ch in load:
        routes_of[src, dst] = max(routes_of.get((src, dst), 0), ch + 1)
    counts = {k: max(1, min(SPREAD_CHANNELS, math.ceil(v / quantum - 1e-9))) for k, v in load.items()}
    offset: dict[tuple[int, int, int], int] = {}
    for (src, dst), routes in routes_of.items():
        base = 0
        for ch in range(routes):
            offset[src, dst, ch] = base
            base += counts.get((src, dst, ch), 1)
    dealt: dict[tuple[int, int, int], int] = {}
    out = []
    for t in transfers:
        key = (t.src, t.dst, t.channel)
        i = dealt.get(key, 0)
        dealt[key] = i + 1
        out.append(Transfer(t.chunk, t.src, t.dst, t.step, t.reduce, offset[key] + i % counts[key], t.path, t.deps))
    return out


def _per_level(collective: Collective, phases: list[tuple[Forest, bool]], budget: int) -> float:
    """Pieces per tree level: PIPELINE_TARGET, fewer if the schedule would pass the budget."""
    n = collective.ranks
    levels = sum(max(1, max(t.depth()) - 1) for f, _ in phases for t in f.trees)
    budget = min(budget, TRANSFER_BUDGET) / max(1, n - 1)
    return max(1.0, min(float(PIPELINE_TARGET), budget / max(1, levels)))
