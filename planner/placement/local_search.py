"""Local search after a placement: pull a group's blocks off a leaf where it has few of
them onto a leaf it already uses, all of them in one move, while the score drops.

A move (group g, leaf A where g has blocks, leaf B where g has more): g's blocks on A go to
B, onto B's unused free nodes first, then in exchange with blocks on B outside g, those
whose own groups have the most blocks on A first (they move towards their group; for a
single exchange, each block on B in turn). A single
block's move rarely lowers a spread (the group still touches A until its last block
leaves), so the move takes them all. Groups are visited most spread first, A from the leaf
holding fewest of g's blocks, B from the one holding most; the first move that lowers the
score is kept, and passes repeat until none does or MAX_EVALUATIONS moves have been
scored. Deterministic (fixed orders, ties kept). A move costs O(blocks moved x their
groups x the largest spread).
"""
from __future__ import annotations

from collections import Counter

from planner.placement.cluster import Cluster
from planner.placement.score import Scorer

MAX_EVALUATIONS = 3_000
MAX_PASSES = 10
EPS = 1e-9


def improve(c: Cluster, node_of: tuple[int, ...]) -> tuple[int, ...]:
    s = Scorer(c, node_of)
    best = s.total()
    leaf_of = [d[0] for d in c.domains]
    on_leaf: dict[str, set[int]] = {}  # leaf -> blocks on it
    for b, n in enumerate(s.node_of):
        on_leaf.setdefault(leaf_of[n], set()).add(b)
    used = set(s.node_of)
    unused: dict[str, list[int]] = {}
    for n in c.free:
        if n not in used:
            unused.setdefault(leaf_of[n], []).append(n)
    evaluations = [0]
    for _ in range(MAX_PASSES):
        improved = False
        order = sorted(range(len(c.groups)), key=lambda i: (-s.spread[i][1], -s.spread[i][0], i))
        for i in order:
            if s.spread[i][0] == 0:
                continue
            blocks = c.groups[i].blocks
            held = Counter(leaf_of[s.node_of[b]] for b in blocks)
            leaves = sorted(held, key=lambda l: (held[l], l))
            for a in leaves[:-1]:
                for b in reversed(leaves):
                    if held[b] < held[a] or b == a:
                        continue
                    total = _pull(s, i, a, b, on_leaf, unused, best, evaluations)
                    if total is not None:
                        best, improved = total, True
                        break
                if evaluations[0] >= MAX_EVALUATIONS or improved:
                    break
            if evaluations[0] >= MAX_EVALUATIONS:
                return tuple(s.node_of)
        if not improved:
            break
    return tuple(s.node_of)


def _pull(s: Scorer, i: int, a: str, b: str, on_leaf: dict[str, set[int]], unused: dict[str, list[int]],
          best: float, evaluations: list[int]) -> float | None:
    """Move group i's blocks on leaf a to leaf b; keep it (return the new score) when the
    score drops, else undo it (None). Exchanging one block, every partner on b is tried;
    `evaluations` counts the scored moves."""
    c = s.c
    members = set(c.groups[i].blocks)
    moving = sorted(x for x in on_leaf[a] if x in members)
    slots = list(unused.get(b, ()))[:len(moving)]
    need = len(moving) - len(slots)
    choices: list[list[int]] = [[]]
    if need:
        def pull_towards_a(x: int) -> tuple:
            gain = sum(s.count[h][0][a] - s.count[h][0][b] for h in s.groups_of[x])
            return (-gain, x)
        candidates = sorted((x for x in on_leaf[b] if x not in members), key=pull_towards_a)
        if len(candidates) < need:
            return None
        choices = [[x] for x in candidates] if need == 1 else [candidates[:need]]
    for partners in choices:
        if evaluations[0] >= MAX_EVALUATIONS:
            return None
        evaluations[0] += 1
        before = {x: s.node_of[x] for x in moving + partners}
        freed = [before[x] for x in moving]
        for x, node in zip(moving, slots + [before[x] for x in partners]):
            s.move(x, node)
        for x, node in zip(partners, freed[len(slots):]):
            s.move(x, node)
        total = s.total()
        if total < best - EPS:
            for x in moving:
                on_leaf[a].discard(x)
                on_leaf[b].add(x)
            for x in partners:
                on_leaf[b].discard(x)
                on_leaf[a].add(x)
            if slots:
                unused[b] = unused[b][len(slots):]
                unused.setdefault(a, []).extend(freed[:len(slots)])
                unused[a].sort()
            return total
        for x, node in before.items():
            s.move(x, node)
    return None
