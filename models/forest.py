"""Bandwidth-optimal broadcast trees by spanning-tree packing (the idea of ForestColl).

`gather_forest` finds, for allgather (reduce-scatter: on the reversed graph), weighted
out-trees rooted at every GPU whose union moves every GPU's data to every other GPU at
the highest rate the data plane allows when switches cannot copy data:

1. the throughput LP (models/gather_lp.py): optimal rate x and arc loads that balance at
   every non-GPU node — the tight bound, at most the plain cut bound;
2. the loads as whole units (a power-of-two scale keeps flows in int32), topped up with a
   maximum GPU-to-GPU flow in what the links have left; the rate they carry is recomputed
   exactly (Dinkelbach over max-flows, rational arithmetic);
3. every non-GPU node removed by edge splitting (solvers/splitting.py), each split checked
   to keep the packing condition, so the GPU-only graph carries the same rate exactly;
4. out-trees packed into it (solvers/arborescence.py), multiplicity p per GPU where the
   rate is p/q units: Edmonds' theorem says they exist, Lovasz's proof builds them;
5. each tree arc mapped back to the data-plane paths it stands for; a tree whose arc spans
   several paths is cut into sub-trees, one path per arc.

`rooted_forest` does the same for broadcast (reduce: reversed) from one root.
Both take `method=`: "packing" (the steps above) or "columns" (the default: the same LP
over routed trees solved by column generation, solvers/tree_columns.py; fewer trees, and
faster on most fabrics — bench/trees.py compares them; tree_schedule picks per case).
Every step is checked, and either method's trees once more as routed trees (`_check_trees`);
the result's rate is exact, and the caller compares it with the LP optimum and the cut
bound.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from fractions import Fraction

import numpy as np

from models.gather_lp import arc_classes, fill_loads, integral_loads, symmetrize, topology_lp
from solvers.arborescence import PackedTree, check_packing, pack
from solvers.hierarchical import hierarchical_applies
from solvers.splitting import remove_switches
from solvers.tree_columns import ColumnGenerationError, column_forest, tree_paths
from topologies.dataplane import data_plane, physical_id
from topologies.flows import FlowNetwork, dinic, min_gather_ratio
from topologies.routing import Router
from topologies.symmetry import network_symmetry, server_symmetry
from topologies.types import Topology

_INT_BUDGET = 1 << 29


class ForestError(RuntimeError):
    """A step of the construction failed its check (a bug, or an input it cannot handle)."""


@dataclass(frozen=True)
class RoutedTree:
    """An out-tree over ranks carrying `weight` of its root's data; `paths[v]` is the
    physical node path from parent[v] to v (None at the root)."""

    root: int
    weight: Fraction
    parent: tuple[int, ...]
    paths: tuple[tuple[str, ...] | None, ...]

    def depth(self) -> tuple[int, ...]:
        return PackedTree(self.root, 1, self.parent).depth()


@dataclass(frozen=True)
class Forest:
    base_trees: tuple[RoutedTree, ...]  # the trees; under symmetry, those of one root per orbit
    rate_mbps: Fraction         # data rate each root reaches every GPU with
    lp_rate_mbps: float         # the throughput LP's optimum (switches do not copy)
    cut_rate_mbps: Fraction     # the plain cut bound (switches may count fully)
    reverse: bool
    stats: dict = field(default_factory=dict)
    # automorphisms (rank map, node-id map) besides the identity that carry base_trees onto
    # the rest of the forest, each image with the same weight
    images: tuple[tuple[tuple[int, ...], dict], ...] = ()

    @cached_property
    def trees(self) -> tuple[RoutedTree, ...]:
        """Every tree of the forest (base trees, then their images), built on first use:
        on a thousand GPUs that is a few hundred thousand trees."""
        out = list(self.base_trees)
        for ranks, nodes in self.images:
            out.extend(_image(t, ranks, nodes) for t in self.base_trees)
        return tuple(out)


def _image(tree: RoutedTree, ranks: tuple[int, ...], nodes: dict) -> RoutedTree:
    parent, paths = [-1] * len(tree.parent), [None] * len(tree.parent)
    for v, u in enumerate(tree.parent):
        parent[ranks[v]] = -1 if u < 0 else ranks[u]
        paths[ranks[v]] = None if tree.paths[v] is None else tuple(nodes[x] for x in tree.paths[v])
    return RoutedTree(ranks[tree.root], tree.weight, tuple(parent), tuple(paths))


def gather_forest(topo: Topology, reverse: bool = False, method: str = "columns") -> Forest:
    """Trees for allgather (reduce-scatter when `reverse`). See the module doc;
    method "columns" solves the same LP by column generation (solvers/tree_columns.py)."""
    return _build(method, topo, reverse, None)


def rooted_forest(topo: Topology, root: int, reverse: bool = False, method: str = "columns") -> Forest:
    """Trees for broadcast from rank `root` (reduce into it when `reverse`)."""
    return _build(method, topo, reverse, root)


def _build(method: str, topo: Topology, reverse: bool, root: int | None) -> Forest:
    """The forest, found once per topology (it is deterministic) and kept on it, as the
    LP is: a plan's schedule and its solver entry both ask for it."""
    if method not in FOREST_METHODS:
        raise ValueError(f"unknown forest method {method!r}; one of {sorted(FOREST_METHODS)}")
    if topo.num_gpus < 2:
        raise ForestError("a forest needs at least two GPUs")
    memo = topo.__dict__.setdefault("_forests", {})
    if (method, reverse, root) not in memo:
        forest = FOREST_METHODS[method](topo, reverse, root)
        _check_trees(forest, topo, reverse, root)
        memo[method, reverse, root] = forest
    return memo[method, reverse, root]


def known_forest(topo: Topology, method: str, reverse: bool, root: int | None) -> Forest | None:
    """The forest already found on `topo` for these arguments, if any."""
    return topo.__dict__.get("_forests", {}).get((method, reverse, root))


def _column_forest(topo: Topology, reverse: bool, root: int | None) -> Forest:
    started = time.perf_counter()
    net, lp = topology_lp(topo, reverse, root)
    symmetry = network_symmetry(topo, net) if root is None else None
    t_lp = time.perf_counter()
    try:
        found = column_forest(net, root, upper=lp.x, symmetry=symmetry)
    except ColumnGenerationError as exc:
        raise ForestError(str(exc)) from None
    trees = tuple(RoutedTree(c.root, w, c.parent, tree_paths(net, c, reverse))
                  for c, w in zip(found.columns, found.weights))
    images: tuple = ()
    if symmetry is not None:
        perms = server_symmetry(topo).perms
        ids = [n.id for n in topo.nodes]
        images = tuple((tuple(symmetry.ranks[g].tolist()), dict(zip(ids, (ids[i] for i in perms[g].tolist()))))
                       for g in range(1, symmetry.order))
    stats = dict(method="columns", lp_rounds=lp.rounds, lp_cuts=lp.cuts, lp_status=lp.status,
                 columns_rounds=found.rounds, columns_converged=found.converged, master_solver=found.solver,
                 trees=len(trees) * (len(images) + 1), symmetry=symmetry.order if symmetry is not None else 1,
                 lp_seconds=t_lp - started, master_seconds=found.lp_seconds, pricing_seconds=found.pricing_seconds,
                 seconds=time.perf_counter() - started, max_depth=max(max(t.depth()) for t in trees))
    return Forest(trees, found.rate * net.unit_mbps, lp.x * net.unit_mbps, _cut_rate(net, None if root is None else net.gpus[root]),
                  reverse, stats, images)


def _forest(topo: Topology, reverse: bool, root: int | None) -> Forest:
    started = time.perf_counter()
    stats: dict[str, object] = {}
    net, lp = topology_lp(topo, reverse, root)
    plane = data_plane(topo)
    gpus = net.gpus
    n = len(gpus)
    root_node = gpus[root] if root is not None else None
    cut_rate = _cut_rate(net, root_node)
    stats.update(method="packing", lp_rounds=lp.rounds, lp_cuts=lp.cuts, lp_status=lp.status)
    if lp.x <= 0:
        raise ForestError("the throughput LP found no positive rate")
    t_lp = time.perf_counter()
    into = np.bincount(net.head, weights=net.cap, minlength=net.size)
    scale = 1 << max(0, int(math.floor(math.log2(_INT_BUDGET / max(1.0, float(into.max()) * n * n)))))
    is_gpu = np.zeros(net.size, dtype=bool)
    is_gpu[gpus] = True
    caps_scaled = net.cap * scale
    best = None
    classes = arc_classes(net.size, net.tail, net.head, net.cap, [(nd.type, nd.kind) for nd in plane.nodes])
    for loads in (symmetrize(lp.loads, classes), lp.loads):
        whole = integral_loads(net.size, net.tail, net.head, loads, net.cap, is_gpu, scale)
        whole = fill_loads(net.size, net.tail, net.head, whole, caps_scaled, gpus)
        rate = _rate(net.size, net.tail, net.head, whole, gpus, root_node)
        if best is None or rate > best[0]:
            best = (rate, whole)
        if rate * (1 + 1e-6) >= Fraction(lp.x) * scale:
            break
    rate, loads = best
    t_loads = time.perf_counter()
    p, q = rate.numerator, rate.denominator
    demand = {g: p for g in gpus} if root_node is None else {root_node: p}
    server_of = [nd.server for nd in plane.nodes]
    graph, split_stats = remove_switches(net.size, net.tail, net.head, loads * q, gpus, server_of, demand)
    stats.update({f"split_{k}": v for k, v in split_stats.items()})
    t_split = time.perf_counter()
    g = math.gcd(*graph.arcs.values()) if graph.arcs else 1
    arcs = {k: c // g for k, c in graph.arcs.items()}
    keys = sorted(arcs)
    tails = np.array([a for a, _ in keys], dtype=np.int64)
    heads = np.array([b for _, b in keys], dtype=np.int64)
    caps = np.array([arcs[k] for k in keys], dtype=np.int64)
    split_rate = _rate(n, tails, heads, caps, list(range(n)), root)
    if split_rate * g != p:
        raise ForestError(f"edge splitting lost rate: {float(split_rate * g)} of {p} units")
    unit, caps, coarse_rate = _coarsen(n, tails, heads, caps, split_rate, root)
    arcs = {k: int(c) for k, c in zip(keys, caps.tolist()) if c > 0}
    sp, sq = coarse_rate.numerator, coarse_rate.denominator
    demand_ranks = {r: sp for r in range(n)} if root is None else {root: sp}
    packing_arcs = {k: c * sq for k, c in arcs.items()}
    trees = pack(n, packing_arcs, demand_ranks)
    check_packing(n, packing_arcs, demand_ranks, trees)
    t_pack = time.perf_counter()
    unit_mbps = Fraction(net.unit_mbps, scale)  # MB/s per unit of `loads`
    routed = _routed(trees, graph, g * unit, sq, sp, net.node_ids, reverse)
    final_rate = coarse_rate * unit * g / q  # in units of `loads`
    stats.update(trees=len(routed), packed_trees=len(trees), coarsening=unit, lp_seconds=t_lp - started,
                 loads_seconds=t_loads - t_lp, split_seconds=t_split - t_loads, pack_seconds=t_pack - t_split,
                 seconds=time.perf_counter() - started, max_depth=max(max(t.depth()) for t in routed))
    return Forest(tuple(routed), final_rate * unit_mbps, lp.x * net.unit_mbps, cut_rate, reverse, stats)


def _check_trees(forest: Forest, topo: Topology, reverse: bool, root: int | None) -> None:
    """Every tree spans the ranks from its root, each arc's path joins the right GPUs,
    and every root's weights sum to exactly 1. Images of base trees under automorphisms
    (checked when the group was found) are routed trees too: only their weights are summed."""
    n, gpus = topo.num_gpus, topo.gpus
    total: dict[int, Fraction] = {}
    for ranks, _ in forest.images:
        for t in forest.base_trees:
            total[ranks[t.root]] = total.get(ranks[t.root], Fraction(0)) + t.weight
    for t in forest.base_trees:
        depth = t.depth()
        if t.parent[t.root] != -1 or min(depth) < 0 or len(t.parent) != n:
            raise ForestError(f"a tree of root {t.root} does not span the GPUs")
        for v, u in enumerate(t.parent):
            if u >= 0:
                ends = (gpus[v], gpus[u]) if reverse else (gpus[u], gpus[v])
                if (t.paths[v][0], t.paths[v][-1]) != ends:
                    raise ForestError(f"a tree of root {t.root}: the path into rank {v} does not join its GPUs")
        total[t.root] = total.get(t.root, Fraction(0)) + t.weight
    expected = set(range(n)) if root is None else {root}
    if set(total) != expected or any(w != 1 for w in total.values()):
        raise ForestError("the trees' weights do not sum to 1 for every root")


def _rail_forest(topo: Topology, reverse: bool, root: int | None) -> Forest:
    """One depth-2 tree per GPU on two or more equal servers: the root feeds the GPUs of its
    server and the GPU of its local index (its rail) on every other server, which feeds
    its own server; each arc on the router's route. The rate is what these trees give
    (the least link capacity over the trees crossing it), at most the LP's; where the
    network is the bottleneck it is the LP's or close (dgx-a100x2: 0.989 of it), and the
    shallow trees start up in two hops. O(N^2) arcs."""
    if root is not None or hierarchical_applies(topo) is not None:
        raise ForestError("rail trees need two or more servers with equal GPU counts and every GPU a root")
    started = time.perf_counter()
    net, lp = topology_lp(topo, reverse, None)
    router = Router(topo)
    rank = topo.rank_of
    servers = [[rank[g] for g in gs] for _, gs in sorted(topo.servers.items())]
    where = {r: (s, j) for s, rs in enumerate(servers) for j, r in enumerate(rs)}
    gpus = topo.gpus
    n = topo.num_gpus
    trees = []
    for g in range(n):
        s, j = where[g]
        parent = [-1] * n
        for t, rs in enumerate(servers):
            head = g if t == s else rs[j]
            if t != s:
                parent[head] = g
            for v in rs:
                if v != head:
                    parent[v] = head
        paths = []
        for v, u in enumerate(parent):
            if u < 0:
                paths.append(None)
                continue
            paths.append(router.route(gpus[v], gpus[u]) if reverse else router.route(gpus[u], gpus[v]))
        trees.append(RoutedTree(g, Fraction(1), tuple(parent), tuple(paths)))
    crossings = link_crossings(trees, topo)[0]
    rate = min(Fraction(round(topo.links[k].bandwidth * 1000)) / c for k, c in crossings.items())
    stats = dict(method="rails", lp_rounds=lp.rounds, lp_cuts=lp.cuts, lp_status=lp.status, trees=n, symmetry=1,
                 lp_seconds=0.0, seconds=time.perf_counter() - started, max_depth=2 if len(servers[0]) > 1 else 1)
    return Forest(tuple(trees), min(rate, Fraction(lp.x * net.unit_mbps)), lp.x * net.unit_mbps,
                  _cut_rate(net, None), reverse, stats)


def link_crossings(trees, topo: Topology, rows: int = 1) -> list[dict[int, int]]:
    """Per row (tree i counts in row i % rows): link index -> how many arcs of its trees
    cross the link. With rows = the base trees, each base tree's images join its row."""
    index = {(l.src, l.dst): k for k, l in enumerate(topo.links)}
    out: list[dict[int, int]] = [{} for _ in range(rows)]
    for i, tree in enumerate(trees):
        row = out[i % rows]
        for path in tree.paths:
            if path is not None:
                for a, b in zip(path, path[1:]):
                    k = index[(a, b)]
                    row[k] = row.get(k, 0) + 1
    return out


FOREST_METHODS = {"packing": _forest, "columns": _column_forest, "rails": _rail_forest}

COARSE_LOSS = Fraction(1, 2000)  # rate the packing may give up for fewer, coarser trees
COARSE_MIN_TREES = 16  # units of demand per root kept at least


def _coarsen(n: int, tails, heads, caps, rate: Fraction, root: int | None):
    """Capacities in whole multiples of the largest power-of-two unit that keeps the rate
    within COARSE_LOSS: trees then come in multiples of that unit, so far fewer distinct
    trees split off during packing. Returns (unit, coarse capacities, coarse rate)."""
    unit = 1 << max(0, int(math.floor(math.log2(max(1.0, float(rate) / COARSE_MIN_TREES)))))
    while unit > 1:
        coarse = caps // unit
        coarse_rate = _rate(n, tails, heads, coarse, list(range(n)), root)
        if coarse_rate * unit >= rate * (1 - COARSE_LOSS):
            return unit, coarse, coarse_rate
        unit //= 2
    return 1, caps, rate


def _cut_rate(net: FlowNetwork, root_node: int | None) -> Fraction:
    if root_node is None:
        x, _ = min_gather_ratio(net.size, net.tail, net.head, net.cap, net.gpus)
        return x * net.unit_mbps
    return Fraction(min(net.max_flow([(root_node, None)], [v])[0] for v in net.gpus if v != root_node) * net.unit_mbps)


def _rate(size: int, tails, heads, caps, gpus: list[int], root: int | None) -> Fraction:
    """Exact packing rate of a graph: the gather ratio, or the root's min max-flow."""
    if len(tails) == 0:
        return Fraction(0)
    if root is None:
        return min_gather_ratio(size, tails, heads, caps, gpus)[0]
    return Fraction(min(dinic(size, tails, heads, caps, root, v)[0] for v in gpus if v != root))


def _routed(trees: list[PackedTree], graph, g: int, sq: int, sp: int, node_ids: list[str],
            reverse: bool) -> list[RoutedTree]:
    """Trees with a physical path per arc. A packing unit on arc (a, b) is g / sq units of
    the split graph's capacity, which `graph.routes[(a, b)]` spreads over paths; trees take
    their share of each arc's paths in turn, and a tree whose share spans several paths is
    cut where any of its arcs changes path."""
    pools = {arc: [[path, Fraction(c)] for path, c in pieces] for arc, pieces in graph.routes.items()}
    out: list[RoutedTree] = []
    for tree in trees:
        need = Fraction(tree.multiplicity * g, sq)
        cuts = {Fraction(0), Fraction(1)}
        taken: dict[int, list[tuple[Fraction, Fraction, tuple[int, ...]]]] = {}
        for v, u in enumerate(tree.parent):
            if u < 0:
                continue
            pool = pools[(u, v)]
            left, pos = need, Fraction(0)
            pieces = []
            while left > 0:
                path, avail = pool[0]
                use = min(avail, left)
                pieces.append((pos / need, (pos + use) / need, path))
                pos += use
                left -= use
                if use == avail:
                    pool.pop(0)
                else:
                    pool[0][1] = avail - use
            taken[v] = pieces
            cuts.update(lo for lo, _, _ in pieces)
        bounds = sorted(cuts)
        for lo, hi in zip(bounds, bounds[1:]):
            paths: list[tuple[str, ...] | None] = [None] * len(tree.parent)
            for v, pieces in taken.items():
                path = next(p for a, b, p in pieces if a <= lo < b)
                nodes = tuple(physical_id(node_ids[i]) for i in path)
                paths[v] = tuple(reversed(nodes)) if reverse else nodes
            out.append(RoutedTree(tree.root, Fraction(tree.multiplicity, sp) * (hi - lo), tree.parent, tuple(paths)))
    return out
