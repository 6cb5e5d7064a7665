"""Double binary tree allreduce (the NCCL baseline for latency-bound allreduce).

Two binary trees over the ranks; each carries half of the chunks. Chunks flow up a tree
combining (reduce) and back down (broadcast), pipelined: chunk slot p leaves a node of
height h in step p + h, and the root's result reaches depth d in step p + H + d.
Because the second tree is the first shifted by one rank, most ranks that are leaves in
one tree are inner nodes of the other, so both halves keep every GPU busy.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.core.collectives import Collective
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers.baselines import TRANSFER_BUDGET, ring_orders
from topologies.routing import Router
from topologies.types import Topology


@dataclass(frozen=True)
class BinaryTree:
    root: int
    parent: dict[int, int]
    children: dict[int, tuple[int, ...]]
    height: dict[int, int]  # leaves 0
    depth: dict[int, int]  # root 0


def midpoint_tree(order: list[int]) -> BinaryTree:
    """The balanced binary tree whose in-order walk is `order`. O(n)."""
    parent: dict[int, int] = {}
    children: dict[int, tuple[int, ...]] = {}
    height: dict[int, int] = {}
    depth: dict[int, int] = {}

    def build(lo: int, hi: int, d: int) -> int | None:
        if lo >= hi:
            return None
        mid = (lo + hi) // 2
        node = order[mid]
        depth[node] = d
        kids = tuple(c for c in (build(lo, mid, d + 1), build(mid + 1, hi, d + 1)) if c is not None)
        for c in kids:
            parent[c] = node
        children[node] = kids
        height[node] = 1 + max((height[c] for c in kids), default=-1)
        return node

    root = build(0, len(order), 0)
    return BinaryTree(root, parent, children, height, depth)


def double_binary_tree(collective: Collective, topo: Topology, parts_per_block: int | None = None,
                       router: Router | None = None) -> Schedule:
    """Allreduce over two complementary binary trees, pipelined. O(N x parts x n) transfers."""
    if collective.kind != "allreduce":
        raise ValueError(f"the tree method does not do {collective.kind}")
    n = collective.ranks
    router = router or Router(topo)
    order = ring_orders(topo, 1, router)[0]
    trees = [midpoint_tree(order), midpoint_tree(order[1:] + order[:1])]
    if parts_per_block is None:
        parts_per_block = _parts_per_block(collective, topo, trees, router)
    q = max(1, min(parts_per_block, TRANSFER_BUDGET // max(1, 2 * n * max(1, n - 1))))
    chunks = tuple(Chunk(b, p / q, (p + 1) / q) for b in range(n) for p in range(q))
    transfers = []
    for k in range(len(chunks)):
        t, slot = k % 2, k // 2
        tree = trees[t]
        top = tree.height[tree.root]
        for v, up in tree.parent.items():
            transfers.append(Transfer(k, v, up, slot + tree.height[v], reduce=True, channel=t))
        for v, kids in tree.children.items():
            for c in kids:
                transfers.append(Transfer(k, v, c, slot + top + tree.depth[v] + 1, channel=t))
    return Schedule(collective, chunks, tuple(transfers), algorithm="double-binary-tree",
                    params=(("parts_per_block", q), ("tree_height", max(tr.height[tr.root] for tr in trees))))


def _parts_per_block(collective: Collective, topo: Topology, trees: list[BinaryTree], router: Router) -> int:
    """Chunks per block that minimise the alpha-beta time of a pipelined tree:
    (slots + 2H) x (chunk / bandwidth + alpha) is least at slots = sqrt(2H x half / (B alpha))."""
    gpus = topo.gpus
    if not trees[0].parent:
        return 1
    widths, alphas = zip(*(router.figures(gpus[v], gpus[up]) for v, up in trees[0].parent.items()))
    height = trees[0].height[trees[0].root]
    alpha = max(0.1, sum(alphas) / len(alphas))
    half_us = collective.size / 2 / (min(widths) * 1e3 / 2)  # inner nodes send to two children
    slots = max(1.0, (2 * height * half_us / alpha) ** 0.5)
    return max(1, min(64, round(2 * slots / collective.ranks)))
