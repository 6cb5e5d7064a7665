"""Reading a runtime schedule back: events and orderings -> a planner Schedule.

Both readers (MSCCL XML, MSCCL++ JSON) turn a file into *events* — a transfer from slots
of one GPU into slots of another (a copy, or combined with the receiver's slots), or a
local copy — and *orderings* between them: strong (the later event starts after the
earlier one is complete: it waited for a receive or a local copy) or weak (it started
after the earlier one's send was done: the data had left, not yet arrived). `rebuild`

1. levels the events: a strong ordering adds a level, a weak one does not; a cycle with a
   strong ordering in it is a deadlock;
2. runs them level by level on symbolic slot contents (which piece of which block, and
   which version of it), so the chunk a transfer moves is what its sender's slot holds;
   reading an empty slot, combining different pieces or ending with the wrong piece is a
   fault of the schedule (ScheduleError); a value the planner's model cannot hold (a GPU
   using an older copy of a piece than the one it holds) is an InputError;
3. checks that the accesses of every slot are ordered (a write before a later read or
   write by a strong path, a read before a later write by any path), else the runtime
   would race;
4. cuts each block into the coarsest chunks every transfer moves whole and emits
   Transfers with step = level and the strong orderings as explicit dependencies (the
   simulator derives the data dependencies and the connection order itself).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from planner.core.collectives import Collective
from planner.core.errors import InputError, ScheduleError
from planner.exports.layout import BufferMap
from planner.core.schedule import Chunk, Schedule, Transfer

Place = tuple[int, str, int]  # (rank, buffer "i" | "o" | "s" | "v", chunk index); "v": a value passed on in a fused step


@dataclass(frozen=True)
class Event:
    kind: str  # "xfer" | "copy"
    where: str  # e.g. "gpu 2 tb 3 step 5", for messages
    src: int  # sending rank (copy: the rank)
    dst: int
    channel: int
    reads: tuple[Place, ...]  # the sender's places, one per chunk moved
    writes: tuple[Place, ...]  # where the values end at the receiver
    combine: tuple[Place, ...] = ()  # the receiver's places they are reduced with (empty: a copy)

    @property
    def connection(self) -> tuple[int, int, int] | None:
        return (self.src, self.dst, self.channel) if self.kind == "xfer" else None


def _name(place: Place) -> str:
    return f"{place[1]}[{place[2]}]" if place[1] != "v" else "a value passed on"


def _levels(events: list[Event], strong: set[tuple[int, int]], weak: set[tuple[int, int]]) -> list[int]:
    """Longest-path levels (strong edges weigh 1, weak 0) over strongly connected parts."""
    n = len(events)
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for a, b in strong:
        out[a].append((b, 1))
    for a, b in weak:
        if (a, b) not in strong:
            out[a].append((b, 0))
    index, low, comp = [-1] * n, [0] * n, [-1] * n
    on_stack, stack, order = [False] * n, [], []
    counter = 0
    for root in range(n):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        calls = [(root, iter(out[root]))]
        while calls:
            v, it = calls[-1]
            for w, _ in it:
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    calls.append((w, iter(out[w])))
                    break
                if on_stack[w]:
                    low[v] = min(low[v], index[w])
            else:
                calls.pop()
                if calls:
                    u = calls[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    members = []
                    while True:
                        w = stack.pop()
                        on_stack[w] = False
                        comp[w] = len(order)
                        members.append(w)
                        if w == v:
                            break
                    order.append(members)
    level_of_comp = [0] * len(order)
    for c in reversed(range(len(order))):  # Tarjan emits components in reverse topological order
        for v in order[c]:
            for w, weight in out[v]:
                if comp[w] == c:
                    if weight:
                        raise ScheduleError(f"dependency cycle through {events[v].where} and {events[w].where}: "
                                            "the runtime would deadlock")
                else:
                    level_of_comp[comp[w]] = max(level_of_comp[comp[w]], level_of_comp[c] + weight)
    return [level_of_comp[comp[v]] for v in range(n)]


def infer_root(kind: str, events: list[Event], ranks: int) -> int:
    """Broadcast: the one rank that receives nothing; reduce: the one that sends nothing."""
    if kind not in ("broadcast", "reduce"):
        return 0
    xfers = [e for e in events if e.kind == "xfer"]
    busy = {e.dst for e in xfers} if kind == "broadcast" else {e.src for e in xfers}
    free = [r for r in range(ranks) if r not in busy]
    return free[0] if len(free) == 1 else 0


def rebuild(coll: Collective, buffers: BufferMap, events: list[Event], strong: set[tuple[int, int]],
            weak: set[tuple[int, int]], source: str, algorithm: str = "", alias=None,
            order: set[tuple[int, int]] = frozenset()) -> Schedule:
    """The planner Schedule the events describe (see the module docstring). Events of one
    connection must come in the order the connection runs them. `order`: orderings of the
    last, local part of a transfer only (a reduction into a place after another one into
    it): they order writes, like a connection's order, but do not delay the transfer."""
    canon = alias or (lambda p: p)
    queue, last = set(order), {}  # plus a connection's transfers, in the order its thread blocks run them
    for i, e in enumerate(events):
        if e.connection is not None:
            if e.connection in last:
                queue.add((last[e.connection], i))
            last[e.connection] = i
    # reductions ordered into one place ran concurrently (a planner step); keep them on one level
    ties = {(b, a) for a, b in order if {canon(p) for p in events[a].writes} & {canon(p) for p in events[b].writes}}
    try:
        level = _levels(events, strong, weak | queue | ties)
    except ScheduleError:  # something else orders them: levels without the ties (or the real deadlock)
        level = _levels(events, strong, weak | queue)
    strong_out: list[set[int]] = [set() for _ in events]
    any_out: list[set[int]] = [set() for _ in events]
    strong_in: list[list[int]] = [[] for _ in events]
    for a, b in strong:
        strong_in[b].append(a)
    for a, b in strong | queue:  # the receiving thread block finishes one before the next
        strong_out[a].add(b)
        any_out[a].add(b)
    for a, b in weak:
        any_out[a].add(b)

    content: dict[Place, tuple] = {}  # place -> (unit | None, version); None: alltoall data a rank keeps
    current: dict[tuple[int, tuple], int] = {}
    for r in range(coll.ranks):
        for idx, unit in buffers.initial(r):
            content[canon((r, "i", idx))] = (unit, 0)
            if unit is not None:
                current[(r, unit)] = 0
    accesses: dict[Place, list[tuple[int, int, int]]] = {}
    moved: dict[int, list[tuple]] = {}
    version = 0
    by_level: dict[int, list[int]] = {}
    for i, lv in enumerate(level):
        by_level.setdefault(lv, []).append(i)

    def check_current(rank: int, value: tuple, e: Event, what: str) -> None:
        if value[0] is not None and current.get((rank, value[0])) != value[1]:
            raise InputError(f"{e.where}: gpu {rank} {what} an older copy of {_unit(coll, value[0])} than the one it "
                             "holds; the planner's schedules keep one value per GPU and chunk", source=source)

    def reaches(a: int, b: int) -> bool:
        return _reaches(a, b, False, level, strong_out, any_out)

    groups: dict[tuple[Place, int], list[int]] = {}  # several reductions into one place at one level
    for lv in sorted(by_level):
        writers: dict[Place, list[int]] = {}
        for i in by_level[lv]:
            for p in dict.fromkeys(canon(p) for p in events[i].writes):
                writers.setdefault(p, []).append(i)
        chained: set[tuple[int, Place]] = set()
        for p, ws in writers.items():
            if len(ws) < 2:
                continue
            if not all(events[i].kind == "xfer" and events[i].combine for i in ws):
                a, b = ws[:2]
                raise ScheduleError(f"{events[a].where} and {events[b].where} write {_name(p)} of gpu {p[0]} at the "
                                    "same time")
            members = tuple(ws)  # (a list being sorted reads as empty)
            ws.sort(key=lambda i: sum(reaches(j, i) for j in members if j != i))
            for a, b in zip(ws, ws[1:]):
                if not reaches(a, b):
                    raise ScheduleError(f"{events[a].where} and {events[b].where} reduce into {_name(p)} of gpu "
                                        f"{p[0]} with nothing ordering one after the other: the runtime would race")
            chained |= {(i, p) for i in ws[1:]}
            groups[(p, lv)] = ws
        got: dict[int, list[tuple | None]] = {}
        for i in by_level[lv]:
            e = events[i]
            vals = []
            for p in e.reads:
                cp = canon(p)
                accesses.setdefault(cp, []).append((lv, 0, i))
                val = content.get(cp)
                if e.kind == "xfer":
                    if val is None:
                        raise ScheduleError(f"{e.where}: gpu {e.src} sends {_name(p)} before it holds data there")
                    if val[0] is None:
                        raise InputError(f"{e.where}: gpu {e.src} sends its alltoall data for itself, which is not "
                                         "part of the planner's collective", source=source)
                    check_current(e.src, val, e, "sends")
                vals.append(val)
            for j, p in enumerate(e.combine):
                cp = canon(p)
                accesses.setdefault(cp, []).append((lv, 0, i))
                if (i, cp) in chained:  # reduces into what the reduction before it left there
                    continue
                val = content.get(cp)
                if val is None:
                    raise ScheduleError(f"{e.where}: gpu {e.dst} reduces into {_name(p)}, which holds no data")
                if val[0] != vals[j][0]:
                    raise ScheduleError(f"{e.where}: gpu {e.dst} reduces {_unit(coll, vals[j][0])} with "
                                        f"{_unit(coll, val[0])} ({_name(p)})")
                check_current(e.dst, val, e, "reduces with")
            got[i] = vals
        written: dict[Place, tuple] = {}
        for i in by_level[lv]:
            e = events[i]
            for j, p in enumerate(e.writes):
                cp = canon(p)
                accesses.setdefault(cp, []).append((lv, 1, i))
                val = got[i][j]
                if cp in written:  # a chained reduction (checked above): same piece, one new value
                    if written[cp][0] != val[0]:
                        raise ScheduleError(f"{e.where} reduces {_unit(coll, val[0])} into {_name(p)} of gpu {e.dst}, "
                                            f"where another reduction puts {_unit(coll, written[cp][0])}")
                    continue
                if e.kind == "xfer":
                    version += 1
                    content[cp] = written[cp] = (val[0], version)
                    current[(e.dst, val[0])] = version
                elif val is None:
                    content.pop(cp, None)
                    written[cp] = (None, -1)
                else:
                    content[cp] = written[cp] = val
            if e.kind == "xfer":
                moved[i] = [v[0] for v in got[i]]
    for r in range(coll.ranks):
        for oi, unit in buffers.required(r):
            if unit is None:
                continue
            val = content.get(canon((r, "o", oi)))
            if val is None or val[0] != unit:
                have = "nothing" if val is None else _unit(coll, val[0])
                raise ScheduleError(f"gpu {r} ends with {have} in o[{oi}], where {_unit(coll, unit)} belongs")
            if current.get((r, unit)) != val[1]:
                raise InputError(f"gpu {r} ends with an older copy of {_unit(coll, unit)} in o[{oi}] than the one "
                                 "it holds; the planner's schedules keep one value per GPU and chunk", source=source)
    _check_races(events, level, accesses, strong_out, any_out, groups)
    return _emit(coll, buffers.per_block, events, level, moved, strong_in, algorithm)


def _unit(coll: Collective, unit) -> str:
    if unit is None:
        return "a rank's own alltoall data"
    return f"chunk {unit[1]} of block {coll.blocks[unit[0]].name}"


def _reaches(a: int, b: int, strong_first: bool, level, strong_out, any_out) -> bool:
    """Whether a path orders b after a (its first edge strong, if asked); levels prune."""
    first = strong_out[a] if strong_first else any_out[a]
    if b in first:
        return True
    seen = set()
    queue = deque(x for x in first if level[x] <= level[b])
    while queue:
        x = queue.popleft()
        if x == b:
            return True
        if x in seen:
            continue
        seen.add(x)
        queue.extend(y for y in any_out[x] if y not in seen and level[y] <= level[b])
    return False


def _check_races(events, level, accesses, strong_out, any_out, groups) -> None:
    def ordered(a: int, b: int, strong_first: bool, place, lv) -> bool:
        ws = groups.get((place, lv), ())
        if a in ws and b in ws:  # chained reductions into one place: ordered among themselves (checked)
            return True
        return _reaches(a, b, strong_first, level, strong_out, any_out)

    for place, acc in accesses.items():
        acc.sort()
        last_write, reads = None, []
        for lv, kind, e in acc:
            if last_write is not None and last_write != e and not ordered(last_write, e, True, place, lv):
                raise ScheduleError(f"{events[e].where} {'writes' if kind else 'reads'} {_name(place)} of gpu "
                                    f"{place[0]} with nothing ordering it after {events[last_write].where}, which "
                                    "writes it: the runtime would race")
            if kind == 0:
                reads.append(e)
                continue
            for r in reads:
                if r != e and not ordered(r, e, False, place, lv):
                    raise ScheduleError(f"{events[e].where} overwrites {_name(place)} of gpu {place[0]} with nothing "
                                        f"ordering it after {events[r].where}, which reads it: the runtime would race")
            last_write, reads = e, []


def _emit(coll: Collective, per_block: int, events, level, moved, strong_in, algorithm: str) -> Schedule:
    runs: dict[int, list[tuple[int, int, int]]] = {}  # event -> (block, first piece, pieces)
    bounds = {b: {0, per_block} for b in range(len(coll.blocks))}
    for i, units in moved.items():
        out: list[list[int]] = []
        for b, k in units:
            if out and out[-1][0] == b and out[-1][1] + out[-1][2] == k:
                out[-1][2] += 1
            else:
                out.append([b, k, 1])
        runs[i] = [tuple(r) for r in out]
        for b, k, m in out:
            bounds[b] |= {k, k + m}
    chunks, chunk_at = [], {}
    for b in range(len(coll.blocks)):
        edges = sorted(bounds[b])
        for x, y in zip(edges, edges[1:]):
            chunk_at[(b, x)] = len(chunks)
            chunks.append(Chunk(b, x / per_block, y / per_block))
    memo: dict[int, set[int]] = {}

    def xfer_preds(i: int) -> set[int]:
        if i not in memo:
            found: set[int] = set()
            for p in strong_in[i]:
                found |= {p} if events[p].kind == "xfer" else xfer_preds(p)
            memo[i] = found
        return memo[i]

    ids: dict[int, list[int]] = {}
    transfers: list[Transfer] = []
    for i in sorted(moved, key=lambda i: (level[i], i)):
        e = events[i]
        deps = sorted({t for p in xfer_preds(i) if events[p].connection != e.connection for t in ids[p]})
        ids[i] = []
        for b, k, m in runs[i]:
            edges = sorted(x for x in bounds[b] if k <= x < k + m)
            for x in edges:
                ids[i].append(len(transfers))
                transfers.append(Transfer(chunk_at[(b, x)], e.src, e.dst, level[i], bool(e.combine), e.channel,
                                          None, tuple(deps)))
    return Schedule(coll, tuple(chunks), tuple(transfers), algorithm=algorithm)
