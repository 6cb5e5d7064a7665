"""Switch removal by edge splitting: the data plane as a GPU-only graph of routed edges.

A spanning tree can branch only where data is stored, at GPUs; switches, NICs and host
bridges forward. Splitting off a pair of arcs (u, w), (w, t) at a non-GPU node w by an
amount f moves f units of capacity onto a new arc (u, t) that stands for the path
u -> w -> t. Repeating at every non-GPU node leaves a digraph on the GPUs whose every arc
is a bundle of data-plane paths, none sharing capacity with another (Lovasz, Mader; for
allgather, Bang-Jensen, Frank and Jackson show some complete splitting keeps the cut
condition, the fact ForestColl builds on).

Which pairs to split, and by how much, is chosen per node:
- a node with one in-neighbour (out-neighbour) whose other side carries no more than that
  arc passes its traffic straight through: every cut keeps its capacity (no check needed);
- otherwise the node's inflow is spread over its outflow in proportion (iterative
  proportional fitting, arcs to and from GPUs first, never back to the node it came
  from), made integral by a bipartite max-flow. With a demand (the packing's), such
  splits are checked in doubling batches to keep the packing condition; a batch that
  breaks it is replayed node by node, and a node whose plan breaks it is split pair by
  pair, each pair by the largest amount that keeps the condition (exact: a split lowers
  every cut it touches by its amount, so one round of flows at the full amount tells).
Cost: O(sum over nodes of in-degree x out-degree) for the plans, plus one max-flow per
GPU per check (batches) and per pair (pairwise nodes); callers re-check the GPU graph's
rate exactly (solvers/forest.py).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from topologies.flows import flow_value


Path = tuple[int, ...]


@dataclass(frozen=True)
class GpuGraph:
    """Arcs between GPUs (data-plane indices `gpus[r]` for rank r), each a bundle of paths.

    `arcs[(a, b)]` (ranks) = capacity in units; `routes[(a, b)]` = ((path of data-plane
    node indices, units), ...) summing to that capacity.
    """

    gpus: tuple[int, ...]
    arcs: dict[tuple[int, int], int]
    routes: dict[tuple[int, int], tuple[tuple[Path, int], ...]]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = sorted(self.arcs)
        tails = np.array([a for a, _ in keys], dtype=np.int64)
        heads = np.array([b for _, b in keys], dtype=np.int64)
        caps = np.array([self.arcs[k] for k in keys], dtype=np.int64)
        return tails, heads, caps


def remove_switches(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray,
                    gpus: list[int], server_of: list[int | None],
                    demand: dict[int, int] | None = None) -> tuple[GpuGraph, dict[str, int]]:
    """Split off every non-GPU node of the digraph (arc arrays over `size` nodes).

    With `demand` (node -> trees rooted there), every node's split is checked to keep the
    packing condition (a super-source feeding demand[g] into each g reaches every GPU with
    the total: one max-flow per GPU); a split that breaks it is undone and the node is
    split pair by pair instead, each pair by the largest amount that keeps it (binary
    search over that check). Returns the graph and counts (nodes, checked, pairwise, flows).
    """
    out: list[dict[int, int]] = [dict() for _ in range(size)]
    inn: list[dict[int, int]] = [dict() for _ in range(size)]
    pool: dict[tuple[int, int], list[list]] = {}
    for u, v, c in zip(tails.tolist(), heads.tolist(), caps.tolist()):
        if u == v or c <= 0:
            continue
        out[u][v] = out[u].get(v, 0) + c
        inn[v][u] = inn[v].get(u, 0) + c
        pool.setdefault((u, v), []).append([(u, v), c])
    is_gpu = np.zeros(size, dtype=bool)
    is_gpu[gpus] = True
    stats = {"nodes": 0, "checked": 0, "pairwise": 0, "flows": 0}
    check = _Condition(size, gpus, demand, stats) if demand else None
    heap = [(len(inn[w]) * len(out[w]), w) for w in range(size) if not is_gpu[w]]
    heapq.heapify(heap)
    done = np.zeros(size, dtype=bool)
    # Splits are applied in batches and the condition checked once per batch (a check
    # is one max-flow per GPU); a batch that breaks it is undone and replayed node by
    # node. The batch doubles after a success and restarts at one after a failure.
    batch, pending, careful = 1, 0, 0
    saved = None
    while True:
        w = _next_node(heap, done, inn, out)
        if w is None or (check is not None and pending >= batch):
            if check is not None and pending:
                if check.holds(out):
                    batch = min(batch * 2, 64)
                else:
                    out, inn, pool, heap, done = saved
                    heapq.heapify(heap)
                    careful, batch = pending, 1
                pending, saved = 0, None
                if w is not None:
                    heapq.heappush(heap, (len(inn[w]) * len(out[w]), w))
                continue
            if w is None:
                break
        done[w] = True
        touched = set(inn[w]) | set(out[w])
        plan, forced = _transport(w, inn[w], out[w], server_of, is_gpu)
        if check is None or forced:
            _apply(w, plan, out, inn, pool)
        elif careful:
            careful -= 1
            stats["checked"] += 1
            local = _snapshot(w, out, inn, pool)
            _apply(w, plan, out, inn, pool)
            if not check.holds(out):
                _restore(local, out, inn, pool)
                stats["pairwise"] += 1
                _split_pairwise(w, out, inn, pool, server_of, check)
        else:
            if saved is None:
                done[w] = False
                saved = ([d.copy() for d in out], [d.copy() for d in inn],
                         {k: [list(p) for p in v] for k, v in pool.items()}, list(heap) + [(0, w)], done.copy())
                done[w] = True
            pending += 1
            stats["checked"] += 1
            _apply(w, plan, out, inn, pool)
        stats["nodes"] += 1
        for v in touched:
            if not is_gpu[v] and not done[v]:
                heapq.heappush(heap, (len(inn[v]) * len(out[v]), v))
    rank = {g: r for r, g in enumerate(gpus)}
    arcs, routes = {}, {}
    for (u, v), pieces in sorted(pool.items()):
        if pieces and is_gpu[u] and is_gpu[v]:
            arcs[rank[u], rank[v]] = sum(c for _, c in pieces)
            routes[rank[u], rank[v]] = tuple((tuple(p), c) for p, c in pieces)
    return GpuGraph(tuple(gpus), arcs, routes), stats


def _next_node(heap, done, inn, out) -> int | None:
    """The unsplit node with the fewest in x out pairs (lazy deletion from the heap)."""
    while heap:
        key, w = heapq.heappop(heap)
        if done[w]:
            continue
        if key != len(inn[w]) * len(out[w]):
            heapq.heappush(heap, (len(inn[w]) * len(out[w]), w))
            continue
        return w
    return None


class _Condition:
    """Whether a super-source feeding demand[g] into every node g can push the total into
    every GPU: one max-flow per GPU, the GPU that failed last tried first."""

    def __init__(self, size: int, gpus: list[int], demand: dict[int, int], stats: dict[str, int]):
        self.size = size
        self.gpus = list(gpus)
        self.sources = np.array(sorted(g for g, k in demand.items() if k > 0), dtype=np.int64)
        self.feed = np.array([demand[g] for g in self.sources.tolist()], dtype=np.int64)
        self.total = int(self.feed.sum())
        self.stats = stats

    def holds(self, out: list[dict[int, int]]) -> bool:
        return self._run(out, stop_early=True) == 0

    def deficit(self, out: list[dict[int, int]]) -> int:
        """Largest shortfall below the total over all GPUs (0: the condition holds)."""
        return self._run(out, stop_early=False)

    def _run(self, out: list[dict[int, int]], stop_early: bool) -> int:
        tails, heads, caps = [], [], []
        for u, nbrs in enumerate(out):
            for v, c in nbrs.items():
                tails.append(u)
                heads.append(v)
                caps.append(c)
        s0 = self.size
        t = np.concatenate([np.array(tails, dtype=np.int64), np.full(len(self.sources), s0)])
        h = np.concatenate([np.array(heads, dtype=np.int64), self.sources])
        c = np.concatenate([np.array(caps, dtype=np.int64), self.feed])
        worst = 0
        for i, v in enumerate(self.gpus):
            self.stats["flows"] += 1
            value = flow_value(self.size + 1, t, h, c, s0, v)
            if value < self.total:
                if not worst:
                    self.gpus.insert(0, self.gpus.pop(i))
                worst = max(worst, self.total - value)
                if stop_early:
                    break
        return worst


def _apply(w: int, plan, out, inn, pool) -> None:
    for (u, t), f in plan:
        _split(u, w, t, f, out, inn, pool)
    for u in list(inn[w]):
        _drop(u, w, out, inn, pool)
    for t in list(out[w]):
        _drop(w, t, out, inn, pool)


def _snapshot(w: int, out, inn, pool):
    """What splitting at w can change: the arcs at w, and the arcs between its neighbours."""
    nbrs = set(inn[w]) | set(out[w]) | {w}
    arcs = {(u, t): c for u in nbrs for t, c in out[u].items() if t in nbrs}
    return nbrs, arcs, {k: [list(p) for p in pool[k]] for k in arcs}


def _restore(saved, out, inn, pool) -> None:
    nbrs, arcs, pieces = saved
    for u in nbrs:
        for t in [t for t in out[u] if t in nbrs]:
            del out[u][t], inn[t][u]
            pool.pop((u, t), None)
    for (u, t), c in arcs.items():
        out[u][t] = c
        inn[t][u] = c
        pool[u, t] = pieces[u, t]


def _split_pairwise(w: int, out, inn, pool, server_of, check: _Condition) -> None:
    """Greedy admissible splitting at w: each allowed pair by the largest amount that keeps
    the condition. Splitting (u,w),(w,t) by mu lowers every cut it touches by exactly mu, so
    one round of flows at the full amount gives the answer: mu = full - largest deficit."""
    for u in sorted(inn[w]):
        for t in sorted(out[w]):
            if u not in inn[w]:
                break
            if t not in out[w] or u == t:
                continue
            full = min(inn[w][u], out[w][t])
            saved = _snapshot(w, out, inn, pool)
            _split(u, w, t, full, out, inn, pool)
            deficit = check.deficit(out)
            if deficit:
                _restore(saved, out, inn, pool)
                if full > deficit:
                    _split(u, w, t, full - deficit, out, inn, pool)
    for u in list(inn[w]):
        _drop(u, w, out, inn, pool)
    for t in list(out[w]):
        _drop(w, t, out, inn, pool)


def _transport(w: int, ins: dict[int, int], outs: dict[int, int],
               server_of: list[int | None], is_gpu: np.ndarray) -> list[tuple[tuple[int, int], int]]:
    """Integer amounts to split off at w, as ((u, t), f), by the rules in the module doc."""
    us, ts = sorted(ins), sorted(outs)
    if not us or not ts:
        return [], True
    def allowed(u: int, t: int) -> bool:
        return u != t

    if len(us) == 1 and all(allowed(us[0], t) for t in ts) and sum(outs.values()) <= ins[us[0]]:
        return [((us[0], t), outs[t]) for t in ts if allowed(us[0], t)], True
    if len(ts) == 1 and all(allowed(u, ts[0]) for u in us) and sum(ins.values()) <= outs[ts[0]]:
        return [((u, ts[0]), ins[u]) for u in us if allowed(u, ts[0])], True
    a = np.array([ins[u] for u in us], dtype=float)
    b = np.array([outs[t] for t in ts], dtype=float)
    mask = np.array([[allowed(u, t) for t in ts] for u in us], dtype=float)
    # GPUs first: arcs into and out of GPUs are where the binding cuts usually are (a GPU's
    # ingress, its egress), so their capacity is carried over whole before the rest spreads.
    prio = mask * np.logical_or.outer(is_gpu[us], is_gpu[ts])
    f = _proportional(a, b, prio)
    f += _proportional(a - f.sum(axis=1), b - f.sum(axis=0), mask)
    return _round(us, ts, f, a, b, mask), False


def _proportional(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spread supplies `a` over demands `b` on the allowed pairs in proportion (iterative
    proportional fitting), never exceeding either side."""
    rows_live = (mask.sum(axis=1) > 0) & (a > 1e-12)
    cols_live = (mask.sum(axis=0) > 0) & (b > 1e-12)
    supply, demand = a.sum(where=rows_live), b.sum(where=cols_live)
    total = min(supply, demand)
    if total <= 1e-12:
        return np.zeros_like(mask)
    a_target = np.where(rows_live, a * (total / supply), 0.0)
    b_target = np.where(cols_live, b * (total / demand), 0.0)
    f = mask * np.outer(a_target, b_target)
    for _ in range(300):
        rows = f.sum(axis=1)
        f *= np.divide(a_target, rows, out=np.zeros_like(rows), where=rows > 0)[:, None]
        cols = f.sum(axis=0)
        f *= np.divide(b_target, cols, out=np.zeros_like(cols), where=cols > 0)[None, :]
        if np.abs(f.sum(axis=1) - a_target).max() <= 1e-12 * total:
            break
    rows = f.sum(axis=1)
    f *= np.where(rows > a, a / np.maximum(rows, 1e-300), 1.0)[:, None]
    cols = f.sum(axis=0)
    f *= np.where(cols > b, b / np.maximum(cols, 1e-300), 1.0)[None, :]
    return f


def _round(us: list[int], ts: list[int], f: np.ndarray, a: np.ndarray, b: np.ndarray,
           mask: np.ndarray) -> list[tuple[tuple[int, int], int]]:
    """Whole units: the floors, then the units the floors leave on each row and column
    routed by a bipartite max-flow, first over the pairs with a fractional part (the
    rounding a transport polytope's integrality promises), then over any allowed pair."""
    whole = np.floor(f + 1e-9).astype(np.int64)
    rows, cols = len(us), len(ts)
    row_room = np.maximum(np.round(f.sum(axis=1)).astype(np.int64) - whole.sum(axis=1), 0)
    col_room = np.maximum(np.round(f.sum(axis=0)).astype(np.int64) - whole.sum(axis=0), 0)
    row_room = np.minimum(row_room, a.astype(np.int64) - whole.sum(axis=1))
    col_room = np.minimum(col_room, b.astype(np.int64) - whole.sum(axis=0))
    for pairs in ((mask > 0) & (f - whole > 1e-9), mask > 0):
        if row_room.sum() == 0 or col_room.sum() == 0:
            break
        ii, jj = np.nonzero(pairs)
        if len(ii) == 0:
            continue
        src, snk = rows + cols, rows + cols + 1
        big = int(row_room.sum()) + 1
        t = np.concatenate([np.full(rows, src), ii, rows + np.arange(cols)])
        h = np.concatenate([np.arange(rows), rows + jj, np.full(cols, snk)])
        c = np.concatenate([row_room, np.full(len(ii), big), col_room])
        import scipy.sparse as sp
        from scipy.sparse.csgraph import maximum_flow
        m = sp.csr_array((c.astype(np.int32), (t, h)), shape=(snk + 1, snk + 1))
        flow = maximum_flow(m, src, snk, method="dinic").flow.tocsr()
        moved = np.asarray(flow[ii, rows + jj]).ravel().astype(np.int64)
        np.add.at(whole, (ii, jj), np.maximum(moved, 0))
        row_room -= np.bincount(ii, weights=np.maximum(moved, 0), minlength=rows).astype(np.int64)
        col_room -= np.bincount(jj, weights=np.maximum(moved, 0), minlength=cols).astype(np.int64)
    return [((us[i], ts[j]), int(whole[i, j])) for i in range(rows) for j in range(cols) if whole[i, j] > 0]


def _take(pieces: list[list], amount: int) -> list[tuple[tuple[int, ...], int]]:
    taken = []
    while amount > 0:
        path, c = pieces[0]
        use = min(c, amount)
        taken.append((path, use))
        amount -= use
        if use == c:
            pieces.pop(0)
        else:
            pieces[0][1] = c - use
    return taken


def _split(u: int, w: int, t: int, f: int, out, inn, pool) -> None:
    first = _take(pool[u, w], f)
    second = _take(pool[w, t], f)
    joined = pool.setdefault((u, t), [])
    i = j = 0
    while i < len(first):
        p1, c1 = first[i]
        p2, c2 = second[j]
        use = min(c1, c2)
        joined.append([p1 + p2[1:], use])
        first[i] = (p1, c1 - use)
        second[j] = (p2, c2 - use)
        i += first[i][1] == 0
        j += second[j][1] == 0
    for a, b in ((u, w), (w, t)):
        out[a][b] -= f
        inn[b][a] -= f
        if out[a][b] == 0:
            del out[a][b], inn[b][a]
            del pool[a, b]
    out[u][t] = out[u].get(t, 0) + f
    inn[t][u] = inn[t].get(u, 0) + f


def _drop(a: int, b: int, out, inn, pool) -> None:
    del out[a][b], inn[b][a]
    pool.pop((a, b), None)
