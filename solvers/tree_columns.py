"""Broadcast trees by column generation: the tree-packing LP solved over routed trees.

The LP behind `--method trees` (ForestColl's problem, switches that cannot copy) is

    max x   over weights w_t >= 0 of routed out-trees t
    s.t.    sum of w_t over the trees rooted at r  >= x      for every root r
            sum of w_t * uses_t(link)              <= cap    for every physical link

where a routed tree spans the GPUs and each of its arcs is a data-plane path from a GPU to
a GPU through non-GPU nodes. It has a column per tree, far too many to write down, so
columns are generated: the master LP over the trees found so far gives link prices y and
root prices pi; a tree rooted at r improves it iff its price sum(y * uses) < pi_r. With
every GPU-to-GPU arc priced at its cheapest path (Dijkstra), the cheapest tree of a root
is a minimum-cost arborescence (Chu-Liu/Edmonds), so pricing is exact and polynomial, and
generation stops at the LP optimum. Each round also offers, per root, a shortest-path
tree and the cheapest tree made shallower (`flatten`) under the same prices, and enters
them even for roots whose price is zero: only the roots that bind x carry a price, and
the others would otherwise wait a round each. Prices are smoothed towards those of the
best Farley bound (Wentges), falling back to the current ones when that finds nothing.

The master is kept in GLOP between rounds (warm start; HiGHS afresh if GLOP fails). A
vertex of the LP has at most (links + roots) trees of positive weight: 45-180 trees on
the issue's fabrics where edge splitting and packing (solvers/forest.py) give 300-900.

The throughput LP (models/gather_lp.py) is a relaxation of this one (its rows are data-
plane arcs, these physical links), so its optimum is an upper bound on x: generation stops
once the master is within REACHED of it, or when no tree improves (then the LP optimum
is proved over all trees); otherwise, at the time limit, `converged` is False and the
caller reports the gap. The final weights are made rational and the rate recomputed
exactly from the trees' link loads.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.sparse as sp
from ortools.linear_solver import pywraplp
from scipy.optimize import linprog
from scipy.sparse.csgraph import dijkstra

from solvers.arborescence import PackedTree
from topologies.dataplane import physical_id
from topologies.flows import FlowNetwork
from topologies.symmetry import NetworkSymmetry

MAX_ROUNDS = 400
TOLERANCE = 1e-9       # relative: a column must improve the master's price by more
REACHED = 1e-5         # relative distance to the upper bound that counts as reaching it
EPSILON = 1e-9         # tie-break per link, relative to the top link price: shorter, faster paths
PRICE_WINDOW = 32      # roots priced per round beyond those binding x (all of them up to this many)
SMOOTHING = 0.5        # Wentges: weight of the best-bound prices in the prices a round prices at
TIE = 1e-5             # arc costs this close (relative to the top link price) are a tie: shallower wins
WEIGHT_DIGITS = 10**7  # rational weights: denominators up to this per root


class ColumnGenerationError(RuntimeError):
    """The master LP failed (a solver failure, or a topology with no spanning tree)."""


@dataclass(frozen=True)
class TreeColumn:
    """An out-tree over ranks with, per non-root rank v, the data-plane arcs of the path
    from parent[v] to v."""

    root: int
    parent: tuple[int, ...]
    arcs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ColumnForest:
    columns: tuple[TreeColumn, ...]
    weights: tuple[Fraction, ...]   # share of its root's data each column carries (sum 1 per root)
    rate: Fraction                  # units of net capacity: what every root reaches every GPU with
    lp_rate: float                  # the master LP's optimum (floats)
    rounds: int
    converged: bool                 # no improving tree was left (or the relaxation's optimum was met)
    lp_seconds: float
    pricing_seconds: float
    solver: str = "glop"
    # with symmetry: `columns` hold one root per orbit, and every automorphism's image of
    # a column carries the same weight (solvers/forest.py builds the images)
    symmetry: NetworkSymmetry | None = None


def column_forest(net: FlowNetwork, root: int | None = None, upper: float | None = None,
                  time_limit: float = 60.0, symmetry: NetworkSymmetry | None = None) -> ColumnForest:
    """Optimal weighted routed trees for allgather on `net` (every GPU a root), or for
    broadcast from rank `root`. `upper` is a known upper bound on the rate (the throughput
    LP): generation stops once the master reaches it. Each round costs one master LP, one
    multi-source Dijkstra over the data plane and one arborescence per root: O(N^2) per
    level of contraction, in numpy.

    With `symmetry` (automorphisms of `net`; allgather only) the master keeps a row per
    orbit of links and a root per orbit of GPUs, and only those roots are priced: each
    tree stands for its images under the whole group with the same weight (an optimal
    solution can be averaged over the group, so the optimum is the same), a link row
    counts a tree's uses of the orbit's links times |G| / |orbit|, and a root row its
    stabiliser. Prices are the same on a link orbit, so one Dijkstra per orbit of sources
    gives every arc cost."""
    n = len(net.gpus)
    if n < 2:
        raise ColumnGenerationError("trees need at least two GPUs")
    links = _physical_links(net)
    if root is not None:
        symmetry = None
    orbits = _LinkOrbits(links, symmetry)
    roots = list(range(n)) if root is None else [root]
    stabiliser = np.ones(n)
    orbit_size = np.ones(n)
    if symmetry is not None:
        roots = list(symmetry.rank_reps)
        stabiliser = np.array([symmetry.stabiliser(r) for r in range(n)], dtype=float)
        orbit_size = symmetry.order / stabiliser
    paths = _PathFinder(net, links, symmetry)
    columns: list[TreeColumn] = []
    usage: list[dict[int, int]] = []
    seen: set[tuple] = set()
    root_row = {r: k for k, r in enumerate(roots)}

    def add(col: TreeColumn) -> bool:
        key = (col.root, col.parent, col.arcs)
        if key in seen:
            return False
        seen.add(key)
        columns.append(col)
        groups = orbits.of_link[links.group[np.fromiter((e for path in col.arcs for e in path), dtype=np.int64)]]
        g, c = np.unique(groups, return_counts=True)
        usage.append(dict(zip(g.tolist(), c.tolist())))
        master.add(np.concatenate([[root_row[col.root]], len(roots) + g]),
                   np.concatenate([[-stabiliser[col.root]], c * orbits.multiplicity[g]]))
        return True

    started = time.perf_counter()
    master = _Master(orbits.cap, len(roots))
    cost = paths.costs(np.zeros(links.count))
    for r in roots:
        add(paths.tree(r, shortest_path_tree(cost, r)))
    lp_seconds = pricing_seconds = 0.0
    rounds, converged, full = 0, False, False
    best_bound, center = math.inf if upper is None else upper, None
    while True:
        rounds += 1
        t0 = time.perf_counter()
        x, w, y_orbit, pi = master.solve()
        y = orbits.link_prices(y_orbit)
        lp_seconds += time.perf_counter() - t0
        if x >= best_bound * (1 - REACHED):
            converged = True
            break
        if rounds > MAX_ROUNDS or time.perf_counter() - started > time_limit:
            break
        t0 = time.perf_counter()
        # partial pricing on many GPUs: the roots that bind x, and a rotating share of the
        # others; a round that finds nothing is followed by a full one before stopping
        stride = 1 if full else max(1, -(-len(roots) // PRICE_WINDOW))
        chosen = [k for k in range(len(roots)) if pi[k] > 0 or (k + rounds) % stride == 0]
        added = 0
        # Wentges smoothing: price at a point between the current prices and those that gave
        # the best bound (fewer rounds); if that finds nothing, price at the current ones
        for alpha in ((SMOOTHING, 0.0) if center is not None else (0.0,)):
            prices = y if alpha == 0 else alpha * center + (1 - alpha) * y
            cost = paths.costs(prices)
            tie = TIE * float(prices.max())
            least = np.zeros(len(roots))
            for k in chosen:
                r = roots[k]
                limit = stabiliser[r] * pi[k] - TOLERANCE * max(float(pi.max()), 1e-30)
                exact = min_arborescence(cost, r)
                least[k] = _tree_cost(cost, exact)
                # the cheapest tree (the steepest column) enters if it improves; two shallower
                # ones of about its cost enter anyway, for every root: only the roots that
                # bind x have a price, the others would wait their turn
                for parent, always in ((exact, False), (flatten(cost, exact, r, tie), True),
                                       (shortest_path_tree(cost + tie, r), True)):
                    col = paths.tree(r, parent)
                    improving = paths.price(col, y) < limit
                    if (improving or always) and add(col):
                        added += improving
            least -= paths.tie_break_total  # what the tie-break may have added to a tree's cost
            if stride == 1 and least.min() > 0:  # Farley's bound: these prices, scaled so every root's tree costs 1
                bound = float(links.cap @ prices) / float(least @ orbit_size[roots])
                if bound < best_bound or center is None:
                    best_bound, center = min(bound, best_bound), prices
            if added:
                break
        pricing_seconds += time.perf_counter() - t0
        if not added and stride == 1:
            converged = True
            break
        full = not added
    keep = [i for i in range(len(w)) if w[i] > 1e-12]  # w may predate the last columns added
    columns = [columns[i] for i in keep]
    weights = _rational_weights([c.root for c in columns], [float(w[i]) for i in keep])
    weights = [wt / int(stabiliser[c.root]) for c, wt in zip(columns, weights)]  # each image carries it
    rate = _exact_rate(weights, [usage[i] for i in keep], orbits)
    return ColumnForest(tuple(columns), tuple(weights), rate, x, rounds, converged, lp_seconds, pricing_seconds,
                        master.solver_name, symmetry)


@dataclass(frozen=True)
class _Links:
    group: np.ndarray   # data-plane arc -> physical link index
    cap: np.ndarray     # per physical link, units
    count: int


def _physical_links(net: FlowNetwork) -> _Links:
    """Data-plane arcs grouped by the physical link they cross (split host and NIC copies
    share one), each group with its capacity: the master's rows are physical links, so
    what it finds the simulator can run."""
    keys: dict[tuple[str, str], int] = {}
    group = np.empty(len(net.tail), dtype=np.int64)
    caps: list[int] = []
    for e, (a, b) in enumerate(zip(net.tail.tolist(), net.head.tolist())):
        key = (physical_id(net.node_ids[a]), physical_id(net.node_ids[b]))
        if key not in keys:
            keys[key] = len(caps)
            caps.append(int(net.cap[e]))
        group[e] = keys[key]
    return _Links(group, np.array(caps, dtype=np.int64), len(caps))


class _LinkOrbits:
    """The master's link rows: one per physical link, or under symmetry one per orbit of
    links, with the orbit's capacity and |G| / |orbit| (how many times a tree and its
    images cross each link of the orbit per use of the orbit by the tree)."""

    def __init__(self, links: _Links, symmetry: NetworkSymmetry | None):
        if symmetry is None:
            self.of_link = np.arange(links.count)
            self.cap = links.cap
            self.multiplicity = np.ones(links.count)
            self.exact_multiplicity = [1] * links.count
            return
        first_arc = np.full(links.count, -1, dtype=np.int64)
        first_arc[links.group[::-1]] = np.arange(len(links.group))[::-1]
        image = links.group[symmetry.arcs[:, first_arc]]   # (|G|, links): where each element takes a link
        reps, self.of_link, size = np.unique(image.min(axis=0), return_inverse=True, return_counts=True)
        self.cap = links.cap[reps]
        self.exact_multiplicity = [symmetry.order // int(c) for c in size.tolist()]
        self.multiplicity = np.array(self.exact_multiplicity, dtype=float)

    def link_prices(self, row_prices: np.ndarray) -> np.ndarray:
        return (row_prices * self.multiplicity)[self.of_link]


class _PathFinder:
    """Cheapest GPU-to-GPU paths through non-GPU nodes under link prices. Each GPU gets an
    extra in-copy that takes its incoming arcs, so no path runs through a GPU. Under
    symmetry (prices the same on every link orbit) paths are searched from one GPU per
    orbit and carried to the others by the automorphisms."""

    def __init__(self, net: FlowNetwork, links: _Links, symmetry: NetworkSymmetry | None = None):
        self.links = links
        size, n = net.size, len(net.gpus)
        pos = np.full(size, -1, dtype=np.int64)
        pos[net.gpus] = np.arange(n)
        heads = np.where(pos[net.head] >= 0, size + pos[net.head], net.head)
        self.tails, self.heads = net.tail, heads
        self.size = size + n
        self.n = n
        self.symmetry = symmetry
        self.sources = np.array(net.gpus, dtype=np.int64)
        self.targets = size + np.arange(n)
        if symmetry is None:
            self.searched = np.arange(n)
            self.via = [(0, u) for u in range(n)]  # source rank -> (group element, searched row)
        else:
            self.searched = np.array(symmetry.rank_reps, dtype=np.int64)
            row_of = {int(r): k for k, r in enumerate(self.searched.tolist())}
            self.via = [None] * n
            for g in range(symmetry.order):
                for r, k in row_of.items():
                    u = int(symmetry.ranks[g, r])
                    if self.via[u] is None:
                        self.via[u] = (g, k)
            self.inverse = np.argsort(symmetry.ranks, axis=1)
        # a small tie-break per link (time per unit): cheaper paths are shorter and faster
        self.epsilon = EPSILON * float(net.cap.min()) / net.cap.astype(float)
        self.tie_break_total = 0.0
        self.arc_of: dict[tuple[int, int], int] = {}
        self.pred = np.zeros((0, 0), dtype=np.int64)

    def costs(self, prices: np.ndarray) -> np.ndarray:
        """N x N cost of each GPU-to-GPU arc (paths kept for `tree`)."""
        top = float(prices.max()) or 1.0  # prices scaled to at most 1: csgraph drops tiny weights
        weight = prices[self.links.group] / top + self.epsilon
        # a tree has n - 1 arcs, each a path of at most `size` links
        self.tie_break_total = top * EPSILON * (self.n - 1) * self.size
        # keep the cheapest arc of parallel ones: the graph takes one entry per pair
        order = np.lexsort((weight, self.heads, self.tails))
        t, h, wt = self.tails[order], self.heads[order], weight[order]
        first = np.ones(len(t), dtype=bool)
        first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
        self.arc_of = dict(zip(zip(t[first].tolist(), h[first].tolist()), order[first].tolist()))
        graph = sp.csr_array((wt[first], (t[first], h[first])), shape=(self.size, self.size))
        dist, self.pred = dijkstra(graph, directed=True, indices=self.sources[self.searched], return_predecessors=True)
        found = dist[:, self.targets] * top
        if self.symmetry is None:
            return found
        cost = np.empty((self.n, self.n))
        ranks = self.symmetry.ranks
        for k, r in enumerate(self.searched.tolist()):
            cost[ranks[:, r][:, None], ranks] = found[k][None, :]
        return cost

    def price(self, col: TreeColumn, prices: np.ndarray) -> float:
        return float(sum(prices[self.links.group[list(path)]].sum() for path in col.arcs if path))

    def path(self, u: int, v: int) -> tuple[int, ...]:
        """Arcs of the cheapest path from rank u to rank v found by the last `costs`."""
        g, k = self.via[u]
        target = v if self.symmetry is None else int(self.inverse[g, v])
        node, out = int(self.targets[target]), []
        src = int(self.sources[self.searched[k]])
        while node != src:
            p = int(self.pred[k, node])
            out.append(self.arc_of[p, node])
            node = p
        out.reverse()
        if self.symmetry is not None:
            out = self.symmetry.arcs[g, out].tolist()
        return tuple(out)

    def tree(self, root: int, parent: np.ndarray) -> TreeColumn:
        arcs = tuple(() if u < 0 else self.path(u, v) for v, u in enumerate(parent.tolist()))
        return TreeColumn(root, tuple(int(p) for p in parent.tolist()), arcs)


class _Master:
    """The master LP over the columns so far: max x, every root's weights summing to at
    least x (a row per root), every link within capacity (a row per link, divided by its
    capacity so coefficients stay near 1). Kept between rounds, so GLOP re-solves from its
    last basis as columns arrive; if GLOP fails numerically, HiGHS solves it afresh."""

    def __init__(self, cap: np.ndarray, k: int):
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        inf = self.solver.infinity()
        self.k, self.cap = k, cap.astype(float)
        self.rows = [self.solver.Constraint(-inf, 0.0) for _ in range(k)]
        self.rows += [self.solver.Constraint(-inf, 1.0) for _ in range(len(cap))]
        self.x = self.solver.NumVar(0.0, inf, "x")
        for row in self.rows[:k]:
            row.SetCoefficient(self.x, 1.0)
        self.objective = self.solver.Objective()
        self.objective.SetCoefficient(self.x, 1.0)
        self.objective.SetMaximization()
        self.columns: list = []
        self.entries: list[tuple[np.ndarray, np.ndarray]] = []
        self.solver_name = "glop"

    def add(self, rows: np.ndarray, vals: np.ndarray) -> None:
        vals = np.where(rows >= self.k, vals / self.cap[np.maximum(rows - self.k, 0)], vals).astype(float)
        var = self.solver.NumVar(0.0, self.solver.infinity(), "")
        for r, v in zip(rows.tolist(), vals.tolist()):
            self.rows[r].SetCoefficient(var, v)
        self.columns.append(var)
        self.entries.append((rows, vals))

    def solve(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(x, weights, row prices per unit of capacity, root prices), prices >= 0."""
        if self.solver.Solve() == pywraplp.Solver.OPTIMAL:
            x = self.x.solution_value()
            w = np.array([v.solution_value() for v in self.columns])
            dual = np.array([row.dual_value() for row in self.rows])
        else:
            x, w, dual = self._highs()
            self.solver_name = "glop+highs"
        dual = np.maximum(dual, 0.0)
        return x, w, dual[self.k:] / self.cap, dual[:self.k]

    def _highs(self):
        m, k = len(self.entries), self.k
        rows = np.concatenate([r for r, _ in self.entries] + [np.arange(k)])
        vals = np.concatenate([v for _, v in self.entries] + [np.ones(k)])
        cols = np.concatenate([np.full(len(r), j) for j, (r, _) in enumerate(self.entries)] + [np.full(k, m)])
        a = sp.csr_array((vals, (rows, cols)), shape=(len(self.rows), m + 1))
        b = np.concatenate([np.zeros(k), np.ones(len(self.rows) - k)])
        c = np.zeros(m + 1)
        c[m] = -1.0
        res = linprog(c, A_ub=a, b_ub=b, bounds=(0, None), method="highs")
        if res.status != 0:
            raise ColumnGenerationError(f"master LP: GLOP failed, then HiGHS: {res.message}")
        return float(res.x[m]), res.x[:m], -np.asarray(res.ineqlin.marginals)


def _tree_cost(cost: np.ndarray, parent: np.ndarray) -> float:
    v = np.flatnonzero(parent >= 0)
    return float(cost[parent[v], v].sum())


def shortest_path_tree(cost: np.ndarray, root: int) -> np.ndarray:
    """Parent of every node in a shortest-path tree from `root` over the dense arc costs
    (inf: no arc)."""
    n = len(cost)
    arcs = np.isfinite(cost)
    np.fill_diagonal(arcs, False)
    u, v = np.nonzero(arcs)
    graph = sp.csr_array((cost[u, v], (u, v)), shape=(n, n))  # sparse: csgraph keeps tiny weights
    _, pred = dijkstra(graph, directed=True, indices=root, return_predecessors=True)
    parent = np.asarray(pred, dtype=np.int64)
    parent[root] = -1
    if (parent[np.arange(n) != root] < 0).any():
        raise ColumnGenerationError(f"rank {root} does not reach every GPU")
    return parent


def min_arborescence(cost: np.ndarray, root: int) -> np.ndarray:
    """Parent of every node in a minimum-cost spanning arborescence rooted at `root`
    (Chu-Liu/Edmonds in Tarjan's dense O(N^2) form). `cost` is dense, inf where there is
    no arc.

    Nodes take their cheapest in-arc one after another along a path; when the path closes
    a cycle, the cycle is contracted into one of its nodes on the spot (arcs into it
    charged what they save over the arc they would replace, arcs out of it the cheapest
    of its members'), and the walk goes on from the contracted node. A path that reaches
    the root or a finished node is finished. Each contraction costs O(N x cycle), each
    choice O(N), so O(N^2) in all (contracting whole levels at once took N levels on
    fabrics with many equal costs: one pair absorbed per level). The arborescence is
    then unrolled: a cycle keeps its own arcs except into the member the arc entering
    the cycle reaches."""
    n = len(cost)
    into = cost.T.astype(float).copy()  # into[v, u]: the arc u -> v, so a node's in-arcs are a row
    np.fill_diagonal(into, np.inf)
    into[root, :] = np.inf
    arc_tail = np.tile(np.arange(n), (n, 1))       # the original arc each entry stands for
    arc_head = np.repeat(np.arange(n), n).reshape(n, n)
    node = list(range(n))          # index -> supernode id now stored there
    chosen: dict[int, tuple[int, int]] = {}      # supernode -> original arc it takes
    members: dict[int, list[int]] = {}           # contracted supernode -> its members
    above = list(range(n))         # supernode -> supernode it was contracted into (itself if none)
    saving = np.zeros(n)           # index -> cost of its chosen in-arc
    state = np.zeros(n, dtype=np.int8)           # 0 new, 1 on the path, 2 finished
    state[root] = 2
    for start in range(n):
        if state[start]:
            continue
        path, v = [start], start
        state[start] = 1
        while True:
            u = int(into[v].argmin())
            if not np.isfinite(into[v, u]):
                raise ColumnGenerationError(f"rank {root} does not reach every GPU")
            chosen[node[v]] = (int(arc_tail[v, u]), int(arc_head[v, u]))
            saving[v] = into[v, u]
            if state[u] == 2:
                for w in path:
                    state[w] = 2
                break
            if state[u] == 0:
                state[u] = 1
                path.append(u)
                v = u
                continue
            cycle = path[path.index(u):]          # closed: contract it into u's index
            del path[path.index(u):]
            rows = np.array(cycle)
            adjusted = into[rows] - saving[rows][:, None]
            pick = adjusted.argmin(axis=0)
            into[u] = adjusted[pick, np.arange(n)]
            arc_tail[u], arc_head[u] = arc_tail[rows[pick], np.arange(n)], arc_head[rows[pick], np.arange(n)]
            pick = into[:, rows].argmin(axis=1)
            into[:, u] = into[np.arange(n), rows[pick]]
            arc_tail[:, u], arc_head[:, u] = arc_tail[np.arange(n), rows[pick]], arc_head[np.arange(n), rows[pick]]
            gone = rows[rows != u]
            into[gone, :] = np.inf
            into[:, gone] = np.inf
            into[u, u] = np.inf
            new = len(above)
            members[new] = [node[w] for w in cycle]
            above.append(new)
            for m in members[new]:
                above[m] = new
            node[u] = new
            path.append(u)
            v = u
    # unroll: the arc entering a contracted node goes to the member holding its head
    enter = {node[i]: chosen[node[i]] for i in range(n) if i != root and above[node[i]] == node[i]}
    for big in sorted(members, reverse=True):  # newest first: containers before what they hold
        inner = enter[big][1]
        while above[inner] != big:
            inner = above[inner]
        for m in members[big]:
            enter[m] = enter[big] if m == inner else chosen[m]
        del enter[big]
    parent = np.full(n, -1, dtype=np.int64)
    for v in range(n):
        if v != root:
            parent[v] = enter[v][0]
    return parent


def flatten(cost: np.ndarray, parent: np.ndarray, root: int, tie: float) -> np.ndarray:
    """The tree made shallower without making it dearer by more than `tie` per arc: each
    node, in order of depth, moves to the shallowest parent whose arc costs no more than
    its own (plus `tie`). Moving v up never puts it under its own subtree (every node
    there is deeper than v). O(N^2) per pass, passes until nothing moves."""
    parent = parent.copy()
    while True:
        depth = np.array(PackedTree(root, 1, tuple(parent.tolist())).depth())
        moved = False
        for v in np.argsort(depth, kind="stable").tolist():
            if v == root:
                continue
            ok = np.flatnonzero((cost[:, v] <= cost[parent[v], v] + tie) & (depth < depth[v] - 1))
            if len(ok):
                u = int(ok[np.lexsort((cost[ok, v], depth[ok]))[0]])
                parent[v] = u
                depth[v] = depth[u] + 1  # its subtree is refreshed on the next pass
                moved = True
        if not moved:
            return parent


def _find_cycles(parent: np.ndarray, root: int) -> list[list[int]]:
    """Every cycle of the functional graph v -> parent[v] (the root points nowhere)."""
    n = len(parent)
    state = np.zeros(n, dtype=np.int8)  # 0 new, 1 on the current walk, 2 done
    state[root] = 2
    out = []
    for start in range(n):
        walk, v = [], start
        while state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = int(parent[v])
        if state[v] == 1:
            out.append(walk[walk.index(v):])
        for u in walk:
            state[u] = 2
    return out


def _rational_weights(roots: list[int], weights: list[float]) -> list[Fraction]:
    """Per root, the columns' shares of its data as fractions that sum to exactly 1."""
    total: dict[int, float] = {}
    for r, w in zip(roots, weights):
        total[r] = total.get(r, 0.0) + w
    out = [Fraction(w / total[r]).limit_denominator(WEIGHT_DIGITS) for r, w in zip(roots, weights)]
    for r in total:
        idx = [i for i, rr in enumerate(roots) if rr == r]
        heaviest = max(idx, key=lambda i: out[i])
        out[heaviest] += 1 - sum(out[i] for i in idx)
    return out


def _exact_rate(weights, usage, orbits: "_LinkOrbits") -> Fraction:
    """The rate the weighted trees (and their images) reach: min over links of capacity /
    load per unit rate; a link's load is its orbit's uses times |G| / |orbit|."""
    load: dict[int, Fraction] = {}
    for w, use in zip(weights, usage):
        for g, c in use.items():
            load[g] = load.get(g, Fraction(0)) + w * c * orbits.exact_multiplicity[g]
    return min(Fraction(int(orbits.cap[g])) / l for g, l in load.items() if l > 0)


def tree_paths(net: FlowNetwork, col: TreeColumn, reverse: bool) -> tuple[tuple[str, ...] | None, ...]:
    """Physical node paths of a column's arcs, in the direction data moves."""
    out: list[tuple[str, ...] | None] = []
    for v, arcs in enumerate(col.arcs):
        if not arcs:
            out.append(None)
            continue
        nodes = [net.node_ids[int(net.tail[arcs[0]])]] + [net.node_ids[int(net.head[e])] for e in arcs]
        phys = tuple(physical_id(x) for x in nodes)
        out.append(tuple(reversed(phys)) if reverse else phys)
    return tuple(out)
