"""Packing out-arborescences (spanning out-trees) into a capacitated digraph.

Given integer arc capacities on nodes 0..n-1 and a demand k_r of trees for each root r,
`pack` returns trees with multiplicities (r, m, parent map) such that every root has
trees of total multiplicity k_r, every tree spans all nodes, and no arc carries more
multiplicity than its capacity. By Edmonds' branching theorem such a packing exists iff
every nonempty node set X has at least sum{k_r : r not in X} capacity entering it; the
construction is Lovasz's proof of it, with multiplicities (the capacitated form):

    grow one tree at a time from its root set; to add arc (x, y) with x in the tree and
    y outside, take the largest amount mu <= min(m, cap(x, y)) that keeps the condition
    for the other (partial) trees, found by one max-flow from x to y in which x feeds,
    for every other tree j, a node s_j of capacity m_j that reaches all of tree j.
    If mu < m the tree splits: the copy of multiplicity m - mu is grown later.

Each successful step spans one more node of one tree, so there are at most
(number of trees) x (n - 1) successes; the number of distinct trees grows only on splits.
Cost O(tests x max-flow on n + trees nodes). Deterministic: nodes and arcs are visited in
index order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topologies.flows import flow_value


class PackingError(RuntimeError):
    """The cut condition does not hold: no packing of the demanded trees exists."""


@dataclass(frozen=True)
class PackedTree:
    root: int
    multiplicity: int
    parent: tuple[int, ...]  # parent[v] for every node; -1 at the root

    def depth(self) -> tuple[int, ...]:
        """Hops from the root per node; -1 for a node on a cycle (not a tree)."""
        n = len(self.parent)
        out: list[int | None] = [None] * n
        for v in range(n):
            chain, u = [], v
            while out[u] is None and self.parent[u] >= 0 and len(chain) <= n:
                chain.append(u)
                u = self.parent[u]
            if out[u] is None:
                out[u] = 0 if self.parent[u] < 0 else -1
            base = out[u]
            for w in reversed(chain):
                base = base + 1 if base >= 0 else -1
                out[w] = base
        return tuple(out)


def pack(n: int, arcs: dict[tuple[int, int], int], demand: dict[int, int]) -> list[PackedTree]:
    """Trees meeting `demand` (root -> total multiplicity) within `arcs` capacities."""
    keys = sorted(k for k, c in arcs.items() if c > 0 and k[0] != k[1])
    tails = np.array([a for a, _ in keys], dtype=np.int64)
    heads = np.array([b for _, b in keys], dtype=np.int64)
    cap = np.array([arcs[k] for k in keys], dtype=np.int64)
    position = {k: i for i, k in enumerate(keys)}
    succ: list[list[int]] = [[] for _ in range(n)]
    for a, b in keys:
        succ[a].append(b)

    roots: list[int] = []
    mult: list[int] = []
    member: list[np.ndarray] = []
    parent: list[list[int]] = []
    for r in sorted(demand):
        if demand[r] > 0:
            roots.append(r)
            mult.append(demand[r])
            m = np.zeros(n, dtype=bool)
            m[r] = True
            member.append(m)
            parent.append([-1] * n)
    active = list(range(len(roots)))  # trees not yet spanning

    def headroom(i: int, x: int, y: int) -> int:
        others = [j for j in active if j != i]
        c_sum = sum(mult[j] for j in others)
        if not others:
            return mult[i]
        mem = np.array([member[j] for j in others])
        which, nodes = np.nonzero(mem)
        live = cap > 0
        big = int(cap[live & (tails == x)].sum()) + c_sum + 1  # no flow can exceed what leaves x
        t = np.concatenate([tails[live], np.full(len(others), x), n + which])
        h = np.concatenate([heads[live], n + np.arange(len(others)), nodes])
        c = np.concatenate([cap[live], np.array([mult[j] for j in others], dtype=np.int64),
                            np.full(len(nodes), big, dtype=np.int64)])
        return flow_value(n + len(others), t, h, c, x, y) - c_sum

    # Round robin, one node per tree per turn, candidates shallowest parent first: trees
    # share the short arcs instead of the first ones taking them all and the last growing
    # deep (depth is what a pipelined schedule pays for in start-up time).
    depth: list[list[int]] = [[0 if v == r else -1 for v in range(n)] for r in roots]
    # Arcs that gave a tree nothing are skipped on its later turns; only when nothing else
    # is left are they tried again (other trees have grown since, which may free room).
    failed: list[set[tuple[int, int]]] = [set() for _ in roots]
    while active:
        for i in list(active):
            grew = False
            for _ in range(2):
                members = sorted(np.flatnonzero(member[i]).tolist(), key=lambda v: (depth[i][v], v))
                for x in members:
                    for y in succ[x]:
                        k = position[x, y]
                        if member[i][y] or cap[k] <= 0 or (x, y) in failed[i]:
                            continue
                        mu = min(mult[i], int(cap[k]), headroom(i, x, y))
                        if mu <= 0:
                            failed[i].add((x, y))
                            continue
                        if mu < mult[i]:
                            j = len(roots)
                            roots.append(roots[i])
                            mult.append(mult[i] - mu)
                            member.append(member[i].copy())
                            parent.append(list(parent[i]))
                            depth.append(list(depth[i]))
                            failed.append(set(failed[i]))
                            active.append(j)
                            mult[i] = mu
                        member[i][y] = True
                        parent[i][y] = x
                        depth[i][y] = depth[i][x] + 1
                        cap[k] -= mu
                        grew = True
                        break
                    if grew:
                        break
                if grew or not failed[i]:
                    break
                failed[i].clear()
            if not grew:
                raise PackingError(f"tree rooted at {roots[i]} cannot span node(s) "
                                   f"{np.flatnonzero(~member[i]).tolist()[:5]}: the cut condition fails")
            if member[i].all():
                active.remove(i)
    return [PackedTree(roots[i], mult[i], tuple(parent[i])) for i in range(len(roots))]


def check_packing(n: int, arcs: dict[tuple[int, int], int], demand: dict[int, int],
                  trees: list[PackedTree]) -> None:
    """Raise PackingError unless `trees` is a packing meeting `demand` within `arcs`."""
    load: dict[tuple[int, int], int] = {}
    total: dict[int, int] = {}
    for t in trees:
        total[t.root] = total.get(t.root, 0) + t.multiplicity
        depth = t.depth()
        if t.parent[t.root] != -1 or any(p < 0 for v, p in enumerate(t.parent) if v != t.root) or min(depth) < 0:
            raise PackingError(f"a tree rooted at {t.root} does not span every node from its root")
        for v, p in enumerate(t.parent):
            if v != t.root:
                load[p, v] = load.get((p, v), 0) + t.multiplicity
    if total != {r: m for r, m in demand.items() if m > 0}:
        raise PackingError("tree multiplicities per root differ from the demand")
    for arc, used in load.items():
        if used > arcs.get(arc, 0):
            raise PackingError(f"arc {arc} carries {used} > capacity {arcs.get(arc, 0)}")
