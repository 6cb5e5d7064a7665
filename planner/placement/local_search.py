"""Local search after a placement: pull a group's blocks off a domain where it has few of
them onto a domain it already uses, all of them in one move, while the score drops; at the
leaf tier, then at the NVLink tier where there is one (each tier below the top).

A move (group g, domain A where g has blocks, domain B where g has more): g's blocks on A go to
B, onto B's unused free slots first, then in exchange with blocks on B outside g, those
whose own groups have the most blocks on A first (they move towards their group; for a
single exchange, each block on B in turn). A single
block's move rarely lowers a spread (the group still touches A until its last block
leaves), so the move takes them all. Groups are visited most spread first, A from the domain
holding fewest of g's blocks, B from the one holding most; the first move that lowers the
score is kept, and passes repeat until none does or MAX_EVALUATIONS moves (per tier) have
been scored. Deterministic (fixed orders, ties kept). A move costs O(blocks moved x their
groups x the largest spread).
"""
from __future__ import annotations

from collections import Counter

from planner.placement.cluster import Cluster
from planner.placement.score import Scorer

MAX_EVALUATIONS = 3_000
MAX_PASSES = 10
EPS = 1e-9


def improve(c: Cluster, slot_of: tuple[int, ...]) -> tuple[int, ...]:
    s = Scorer(c, slot_of)
    best = s.total()
    for t in reversed(range(len(c.tiers) - 1)):
        best = _improve_at(s, t, best)
    return tuple(s.slot_of)


def _improve_at(s: Scorer, t: int, best: float) -> float:
    c = s.c
    domain_of = [d[t] for d in c.domains]
    on_domain: dict[str, set[int]] = {}  # domain -> blocks on it
    for b, slot in enumerate(s.slot_of):
        on_domain.setdefault(domain_of[slot], set()).add(b)
    used = set(s.slot_of)
    unused: dict[str, list[int]] = {}
    for slot in c.free:
        if slot not in used:
            unused.setdefault(domain_of[slot], []).append(slot)
    evaluations = [0]
    for _ in range(MAX_PASSES):
        improved = False
        order = sorted(range(len(c.groups)), key=lambda i: ([-v for v in reversed(s.spread[i])], i))
        for i in order:
            if s.spread[i][t] == 0:
                continue
            held = Counter(domain_of[s.slot_of[b]] for b in c.groups[i].blocks)
            domains = sorted(held, key=lambda d: (held[d], d))
            for a in domains[:-1]:
                for b in reversed(domains):
                    if held[b] < held[a] or b == a:
                        continue
                    total = _pull(s, t, i, a, b, on_domain, unused, best, evaluations)
                    if total is not None:
                        best, improved = total, True
                        break
                if evaluations[0] >= MAX_EVALUATIONS or improved:
                    break
            if evaluations[0] >= MAX_EVALUATIONS:
                return best
        if not improved:
            break
    return best


def _pull(s: Scorer, t: int, i: int, a: str, b: str, on_domain: dict[str, set[int]],
          unused: dict[str, list[int]], best: float, evaluations: list[int]) -> float | None:
    """Move group i's blocks on domain a (of tier t) to domain b; keep it (return the new
    score) when the score drops, else undo it (None). Exchanging one block, every partner
    on b is tried; `evaluations` counts the scored moves."""
    c = s.c
    members = set(c.groups[i].blocks)
    moving = sorted(x for x in on_domain[a] if x in members)
    slots = list(unused.get(b, ()))[:len(moving)]
    need = len(moving) - len(slots)
    choices: list[list[int]] = [[]]
    if need:
        def pull_towards_a(x: int) -> tuple:
            gain = sum(s.count[h][t][a] - s.count[h][t][b] for h in s.groups_of[x])
            return (-gain, x)
        candidates = sorted((x for x in on_domain[b] if x not in members), key=pull_towards_a)
        if len(candidates) < need:
            return None
        choices = [[x] for x in candidates] if need == 1 else [candidates[:need]]
    for partners in choices:
        if evaluations[0] >= MAX_EVALUATIONS:
            return None
        evaluations[0] += 1
        before = {x: s.slot_of[x] for x in moving + partners}
        freed = [before[x] for x in moving]
        for x, slot in zip(moving, slots + [before[x] for x in partners]):
            s.move(x, slot)
        for x, slot in zip(partners, freed[len(slots):]):
            s.move(x, slot)
        total = s.total()
        if total < best - EPS:
            for x in moving:
                on_domain[a].discard(x)
                on_domain[b].add(x)
            for x in partners:
                on_domain[b].discard(x)
                on_domain[a].add(x)
            if slots:
                unused[b] = unused[b][len(slots):]
                unused.setdefault(a, []).extend(freed[:len(slots)])
                unused[a].sort()
            return total
        for x, slot in before.items():
            s.move(x, slot)
    return None
