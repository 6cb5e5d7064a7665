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


def column_forest(net: FlowNetwork, root: int | None = None, upper: float | None = None,
                  time_limit: float = 60.0) -> ColumnForest:
    """Optimal weighted routed trees for allgather on `net` (every GPU a root), or for
    broadcast from rank `root`. `upper` is a known upper bound on the rate (the throughput
    LP): generation stops once the master reaches it. Each round costs one master LP, one
    multi-source Dijkstra over the data plane and one arborescence per root: O(N^2) per
    level of contraction, in numpy."""
    n = len(net.gpus)
    if n < 2:
        raise ColumnGenerationError("trees need at least two GPUs")
    links = _physical_links(net)
    roots = list(range(n)) if root is None else [root]
    paths = _PathFinder(net, links)
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
        groups = links.group[np.fromiter((e for path in col.arcs for e in path), dtype=np.int64)]
        g, c = np.unique(groups, return_counts=True)
        usage.append(dict(zip(g.tolist(), c.tolist())))
        master.add(np.concatenate([[root_row[col.root]], len(roots) + g]), np.concatenate([[-1.0], c.astype(float)]))
        return True

    started = time.perf_counter()
    master = _Master(links, len(roots))
    cost, pred = paths.costs(np.zeros(links.count))
    for r in roots:
        add(paths.tree(r, shortest_path_tree(cost, r), pred))
    lp_seconds = pricing_seconds = 0.0
    rounds, converged, full = 0, False, False
    best_bound, center = math.inf if upper is None else upper, None
    while True:
        rounds += 1
        t0 = time.perf_counter()
        x, w, y, pi = master.solve()
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
            cost, pred = paths.costs(prices)
            tie = TIE * float(prices.max())
            least = np.zeros(len(roots))
            for k in chosen:
                r = roots[k]
                limit = pi[k] - TOLERANCE * max(float(pi.max()), 1e-30)
                exact = min_arborescence(cost, r)
                least[k] = _tree_cost(cost, exact)
                # the cheapest tree (the steepest column) enters if it improves; two shallower
                # ones of about its cost enter anyway, for every root: only the roots that
                # bind x have a price, the others would wait their turn
                for parent, always in ((exact, False), (flatten(cost, exact, r, tie), True),
                                       (shortest_path_tree(cost + tie, r), True)):
                    col = paths.tree(r, parent, pred)
                    improving = paths.price(col, y) < limit
                    if (improving or always) and add(col):
                        added += improving
            least -= paths.tie_break_total  # what the tie-break may have added to a tree's cost
            if stride == 1 and least.min() > 0:  # Farley's bound: these prices, scaled so every root's tree costs 1
                bound = float(links.cap @ prices) / float(least.sum())
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
    rate = _exact_rate(weights, [usage[i] for i in keep], links)
    return ColumnForest(tuple(columns), tuple(weights), rate, x, rounds, converged, lp_seconds, pricing_seconds,
                        master.solver_name)


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


class _PathFinder:
    """Cheapest GPU-to-GPU paths through non-GPU nodes under link prices. Each GPU gets an
    extra in-copy that takes its incoming arcs, so no path runs through a GPU."""

    def __init__(self, net: FlowNetwork, links: _Links):
        self.links = links
        size, n = net.size, len(net.gpus)
        pos = np.full(size, -1, dtype=np.int64)
        pos[net.gpus] = np.arange(n)
        heads = np.where(pos[net.head] >= 0, size + pos[net.head], net.head)
        self.tails, self.heads = net.tail, heads
        self.size = size + n
        self.sources = np.array(net.gpus, dtype=np.int64)
        self.targets = size + np.arange(n)
        # a small tie-break per link (time per unit): cheaper paths are shorter and faster
        self.epsilon = EPSILON * float(net.cap.min()) / net.cap.astype(float)
        self.tie_break_total = 0.0
        self.arc_of: dict[tuple[int, int], int] = {}

    def costs(self, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N x N cost of each GPU-to-GPU arc, Dijkstra predecessors from each GPU)."""
        top = float(prices.max()) or 1.0  # prices scaled to at most 1: csgraph drops tiny weights
        weight = prices[self.links.group] / top + self.epsilon
        # a tree has n - 1 arcs, each a path of at most `size` links
        self.tie_break_total = top * EPSILON * (len(self.sources) - 1) * self.size
        # keep the cheapest arc of parallel ones: the graph takes one entry per pair
        order = np.lexsort((weight, self.heads, self.tails))
        t, h, wt = self.tails[order], self.heads[order], weight[order]
        first = np.ones(len(t), dtype=bool)
        first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
        self.arc_of = dict(zip(zip(t[first].tolist(), h[first].tolist()), order[first].tolist()))
        graph = sp.csr_array((wt[first], (t[first], h[first])), shape=(self.size, self.size))
        dist, pred = dijkstra(graph, directed=True, indices=self.sources, return_predecessors=True)
        return dist[:, self.targets] * top, pred

    def price(self, col: TreeColumn, prices: np.ndarray) -> float:
        return float(sum(prices[self.links.group[list(path)]].sum() for path in col.arcs if path))

    def tree(self, root: int, parent: np.ndarray, pred: np.ndarray) -> TreeColumn:
        arcs: list[tuple[int, ...]] = []
        for v, u in enumerate(parent.tolist()):
            if u < 0:
                arcs.append(())
                continue
            node, path = int(self.targets[v]), []
            src = int(self.sources[u])
            while node != src:
                p = int(pred[u, node])
                path.append(self.arc_of[p, node])
                node = p
            arcs.append(tuple(reversed(path)))
        return TreeColumn(root, tuple(int(p) for p in parent.tolist()), tuple(arcs))


class _Master:
    """The master LP over the columns so far: max x, every root's weights summing to at
    least x (a row per root), every link within capacity (a row per link, divided by its
    capacity so coefficients stay near 1). Kept between rounds, so GLOP re-solves from its
    last basis as columns arrive; if GLOP fails numerically, HiGHS solves it afresh."""

    def __init__(self, links: _Links, k: int):
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        inf = self.solver.infinity()
        self.k, self.cap = k, links.cap.astype(float)
        self.rows = [self.solver.Constraint(-inf, 0.0) for _ in range(k)]
        self.rows += [self.solver.Constraint(-inf, 1.0) for _ in range(links.count)]
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
        vals = np.where(rows >= self.k, vals / self.cap[np.maximum(rows - self.k, 0)], vals)
        var = self.solver.NumVar(0.0, self.solver.infinity(), "")
        for r, v in zip(rows.tolist(), vals.tolist()):
            self.rows[r].SetCoefficient(var, v)
        self.columns.append(var)
        self.entries.append((rows, vals))

    def solve(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(x, weights, link prices per unit of capacity, root prices), prices >= 0."""
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
    (Chu-Liu/Edmonds: cheapest in-arcs, cycles contracted, recursively). `cost` is dense,
    inf where there is no arc. O(N^2) per contraction level, at most N levels."""
    n = len(cost)
    c = cost.astype(float).copy()
    np.fill_diagonal(c, np.inf)
    c[:, root] = np.inf
    parent = c.argmin(axis=0)
    best = c[parent, np.arange(n)]
    others = np.arange(n) != root
    if not np.isfinite(best[others]).all():
        raise ColumnGenerationError(f"rank {root} does not reach every GPU")
    parent[root] = -1
    cycle = _find_cycle(parent, root)
    if cycle is None:
        return parent
    in_cycle = np.zeros(n, dtype=bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)
    label = np.empty(n, dtype=np.int64)
    label[rest] = np.arange(len(rest))
    label[cycle] = len(rest)
    m = len(rest) + 1
    small = np.full((m, m), np.inf)
    small[: m - 1, : m - 1] = c[np.ix_(rest, rest)]
    into = c[np.ix_(rest, cycle)] - best[cycle][None, :]  # entering the cycle at v replaces v's arc
    entry = into.argmin(axis=1)
    small[: m - 1, m - 1] = into[np.arange(len(rest)), entry]
    leave = c[np.ix_(cycle, rest)]
    exit_from = leave.argmin(axis=0)
    small[m - 1, : m - 1] = leave[exit_from, np.arange(len(rest))]
    sub = min_arborescence(small, int(label[root]))
    out = parent.copy()
    for i, v in enumerate(rest.tolist()):
        p = int(sub[i])
        if p == m - 1:
            out[v] = cycle[int(exit_from[i])]
        elif p >= 0:
            out[v] = rest[p]
    u = int(sub[m - 1])  # the arc that enters the cycle breaks it at its head
    out[cycle[int(entry[u])]] = rest[u]
    return out


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


def _find_cycle(parent: np.ndarray, root: int) -> list[int] | None:
    n = len(parent)
    state = np.zeros(n, dtype=np.int8)  # 0 new, 1 on the current walk, 2 done
    state[root] = 2
    for start in range(n):
        walk, v = [], start
        while state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = int(parent[v])
        if state[v] == 1:
            return walk[walk.index(v):]
        for u in walk:
            state[u] = 2
    return None


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


def _exact_rate(weights, usage, links: _Links) -> Fraction:
    """The rate the weighted trees reach: min over links of capacity / load per unit rate."""
    load: dict[int, Fraction] = {}
    for w, use in zip(weights, usage):
        for g, c in use.items():
            load[g] = load.get(g, Fraction(0)) + w * c
    return min(Fraction(int(links.cap[g])) / l for g, l in load.items() if l > 0)


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
