"""The evaluator of collective schedules: correctness first, then time.

Correctness (`verify`): run the schedule step by step on contribution bitmasks. A GPU may
only send what it holds; a reduction must not combine a contribution twice; two copies
into one place in one step must agree; at the end every GPU holds exactly what the
collective requires. Chunks of a block must partition it.

Time (`simulate`): the alpha-beta model with shared links. A transfer is ready when its
dependencies are done (derived from the step semantics: read-after-write,
write-after-write, write-after-read; plus explicit `deps`) and the previous transfer on
its connection (src, dst, channel) has streamed its bytes out: a connection sends in
order, like a runtime's thread block, with several sends in flight (as NCCL's FIFO slots
allow), so it does not wait for each to arrive. It then streams its bytes along
its path; concurrent transfers share every link max-min fairly (progressive filling,
recomputed at each event), so a link never carries more than its bandwidth. It completes
when its last byte has crossed, plus the path latency (the alpha term: sum of link
latencies), plus `overhead_us` per transfer. We evaluate this fluid model event by event
rather than a steady-state bottleneck formula because it is exact for what is exported:
pipelining, chunk counts and startup phases all show in the result, and the same code
serves every schedule shape.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from planner.core import limits
from planner.core.errors import ScheduleError, ScheduleTooLarge
from planner.core.schedule import Schedule
from topologies.dataplane import physical_id
from topologies.routing import Router
from topologies.types import Topology

_EPS = 1e-9
LOOP_UNROLL_TRANSFERS = 300_000  # a loop body's runs simulated one by one up to this many transfers
LOOP_FIRST_RUNS = 16
LOOP_PERIOD_TRANSFERS = 2_000_000  # transfers simulated in all to find a loop body's period
LOOP_FILL = 4  # the runs a period is measured on outlast one run's own time this many times
PERIOD_TOLERANCE = 1e-3
MEMO_VALUES = 10_000_000  # fair-share solutions kept per simulation, counted in path entries (~160 MB)


@dataclass(frozen=True)
class SimOptions:
    overhead_us: float = 0.0


@dataclass(frozen=True)
class SimResult:
    time_us: float
    transfers: int
    steps: int
    bytes_moved: float
    max_link_utilization: float  # peak bytes/us over capacity on any link (<= 1 by construction)
    busiest_link: tuple[str, str] | None
    # per transfer (of the first run of a loop body; empty when the runs were extrapolated),
    # when its bytes began to flow and when it was complete
    start_us: tuple[float, ...] = ()
    finish_us: tuple[float, ...] = ()
    # a loop body: runs of it simulated (all of them, or the last of the unrolled runs the
    # period was measured on), and that period (0: every run simulated)
    runs_simulated: int = 1
    period_us: float = 0.0
    period_spread: float = 0.0  # how far from periodic the last measured runs were (relative)


def _mask_names(mask: int) -> str:
    ranks = [str(i) for i in range(mask.bit_length()) if mask >> i & 1]
    return "{" + ",".join(ranks[:8]) + (",..." if len(ranks) > 8 else "") + "}"


def _check_chunks(schedule: Schedule) -> None:
    blocks = schedule.collective.blocks
    by_block: dict[int, list[tuple[float, float, int]]] = {}
    for i, c in enumerate(schedule.chunks):
        if not 0 <= c.block < len(blocks):
            raise ScheduleError(f"chunk {i} names block {c.block}, which does not exist")
        if not (0.0 <= c.lo < c.hi <= 1.0 + _EPS):
            raise ScheduleError(f"chunk {i} has an empty or out-of-range interval [{c.lo}, {c.hi})")
        by_block.setdefault(c.block, []).append((c.lo, c.hi, i))
    for b, parts in by_block.items():
        parts.sort()
        pos = 0.0
        for lo, hi, i in parts:
            if abs(lo - pos) > 1e-9:
                what = "overlaps" if lo < pos else "leaves a gap before"
                raise ScheduleError(f"chunk {i} {what} another chunk of block {blocks[b].name}")
            pos = hi
        if abs(pos - 1.0) > 1e-9:
            raise ScheduleError(f"the chunks of block {blocks[b].name} cover only [0, {pos})")


def _check_loop(schedule: Schedule) -> None:
    if not isinstance(schedule.loops, int) or isinstance(schedule.loops, bool) or schedule.loops < 1:
        raise ScheduleError(f"loops = {schedule.loops!r}: a loop body runs a whole number of times, at least once")
    used = {(t.src, t.dst, t.channel) for t in schedule.transfers}
    seen = set()
    for src, dst, ch, w in schedule.widths:
        if (src, dst, ch) in seen or (src, dst, ch) not in used or w < 1:
            what = ("is given twice" if (src, dst, ch) in seen else
                    "carries no transfer" if (src, dst, ch) not in used else f"has {w} streams")
            raise ScheduleError(f"connection ({src}, {dst}, channel {ch}) {what}")
        seen.add((src, dst, ch))


def verify(schedule: Schedule) -> list[tuple[int, ...]]:
    """Check the schedule's data movement; return each transfer's data dependencies
    (the transfers it starts after). O(transfers + chunks x ranks). Raises ScheduleError
    naming the first fault."""
    return _analyse(schedule)[0]


def _analyse(schedule: Schedule) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[int]]:
    """verify's work; also each transfer's same-step readers (whose reads must have
    streamed out before the transfer's write is complete) and the transfer before it on
    its connection (-1 if none), whose bytes must have left before it starts."""
    coll = schedule.collective
    n = coll.ranks
    if len(schedule.transfers) > limits.MAX_TRANSFERS:
        raise ScheduleTooLarge(f"the schedule has {len(schedule.transfers)} transfers; the simulator checks at most "
                               f"{limits.MAX_TRANSFERS} (use fewer channels or larger chunks)")
    _check_chunks(schedule)
    _check_loop(schedule)
    blocks = coll.blocks
    state: dict[tuple[int, int], int] = {}  # (rank, chunk) -> contribution mask
    for ci, c in enumerate(schedule.chunks):
        for rank, mask in blocks[c.block].initial:
            state[(rank, ci)] = mask
    last_writers: dict[tuple[int, int], list[int]] = {}
    readers: dict[tuple[int, int], list[int]] = {}
    deps: list[list[int]] = [list(t.deps) for t in schedule.transfers]
    done_after: list[list[int]] = [[] for _ in schedule.transfers]
    queued_after: list[int] = [-1] * len(schedule.transfers)
    by_step: dict[int, list[int]] = {}
    for i, t in enumerate(schedule.transfers):
        if not (0 <= t.src < n and 0 <= t.dst < n) or t.src == t.dst:
            raise ScheduleError(f"transfer {i} goes from rank {t.src} to rank {t.dst}")
        if not 0 <= t.chunk < len(schedule.chunks):
            raise ScheduleError(f"transfer {i} moves chunk {t.chunk}, which does not exist")
        if t.step < 0:
            raise ScheduleError(f"transfer {i} has a negative step")
        for d in t.deps:
            if not 0 <= d < len(schedule.transfers) or schedule.transfers[d].step >= t.step:
                raise ScheduleError(f"transfer {i} depends on transfer {d}, which is not in an earlier step")
        by_step.setdefault(t.step, []).append(i)
    last_on_connection: dict[tuple[int, int, int], int] = {}
    for step in sorted(by_step):
        ids = by_step[step]
        values = {}
        for i in ids:
            t = schedule.transfers[i]
            conn = (t.src, t.dst, t.channel)
            if conn in last_on_connection:
                queued_after[i] = last_on_connection[conn]
            last_on_connection[conn] = i
        for i in ids:
            t = schedule.transfers[i]
            loc = (t.src, t.chunk)
            value = state.get(loc, 0)
            if value == 0:
                raise ScheduleError(f"transfer {i} (step {step}): rank {t.src} sends chunk {t.chunk} "
                                    f"before it holds any of it")
            values[i] = value
            deps[i].extend(last_writers.get(loc, ()))
            readers.setdefault(loc, []).append(i)
        incoming: dict[tuple[int, int], list[int]] = {}
        for i in ids:
            t = schedule.transfers[i]
            incoming.setdefault((t.dst, t.chunk), []).append(i)
        for loc, writers in incoming.items():
            copies = [i for i in writers if not schedule.transfers[i].reduce]
            reduces = [i for i in writers if schedule.transfers[i].reduce]
            if copies and reduces:
                raise ScheduleError(f"transfers {copies[0]} and {reduces[0]} (step {step}) copy and reduce "
                                    f"into rank {loc[0]} chunk {loc[1]} in the same step")
            if copies:
                if len({values[i] for i in copies}) > 1:
                    raise ScheduleError(f"transfers {copies[0]} and {copies[1]} (step {step}) write different "
                                        f"values into rank {loc[0]} chunk {loc[1]}")
                new = values[copies[0]]
            else:
                new = state.get(loc, 0)
                for i in reduces:
                    if new & values[i]:
                        raise ScheduleError(f"transfer {i} (step {step}) reduces into rank {loc[0]} chunk "
                                            f"{loc[1]} contributions it already has: "
                                            f"{_mask_names(new & values[i])} would be counted twice")
                    new |= values[i]
            # Write-after-read: writers start after the readers of earlier steps. A reader of
            # this step reads the value from before the step, so the writer may stream at
            # the same time (a same-step exchange A<->B must not wait in a circle) but is
            # only complete — its data in place — once that read has streamed out.
            same_step = [r for r in readers.get(loc, ()) if schedule.transfers[r].step == step]
            for i in writers:
                deps[i].extend(last_writers.get(loc, ()))
                deps[i].extend(r for r in readers.get(loc, ()) if schedule.transfers[r].step != step)
                done_after[i].extend(r for r in same_step if r != i)
            state[loc] = new
            last_writers[loc] = writers
            readers[loc] = same_step
    for ci, c in enumerate(schedule.chunks):
        for rank, need in blocks[c.block].required:
            have = state.get((rank, ci), 0)
            if have != need:
                block = blocks[c.block]
                if coll.is_reduction and have and have & need == have:
                    raise ScheduleError(f"rank {rank} ends with chunk {ci} (block {block.name} "
                                        f"[{c.lo:g},{c.hi:g})) missing contributions {_mask_names(need & ~have)}")
                raise ScheduleError(f"rank {rank} does not end with chunk {ci} (block {block.name} "
                                    f"[{c.lo:g},{c.hi:g})): has {_mask_names(have)}, needs {_mask_names(need)}")
    blocks_with_chunks = {c.block for c in schedule.chunks}
    for b, block in enumerate(blocks):
        if b not in blocks_with_chunks and any(rank_mask not in block.initial for rank_mask in block.required):
            raise ScheduleError(f"block {block.name} must move but the schedule has no chunk of it")
    return ([tuple(sorted(set(d))) for d in deps], [tuple(sorted(set(d))) for d in done_after], queued_after)


def _paths(schedule: Schedule, topo: Topology, router: Router) -> list[tuple[int, ...]]:
    """Each transfer's path as link indices; checks the links exist, the ends are right and
    the path is one the data plane allows (the rules the router and the bounds apply)."""
    link_index = {(l.src, l.dst): k for k, l in enumerate(topo.links)}
    plane = router.topo
    plane_links = set(plane.link_by_pair)
    copies: dict[str, list[str]] = {}
    for node in plane.nodes:
        copies.setdefault(physical_id(node.id), []).append(node.id)
    gpus = topo.gpus
    if len(gpus) != schedule.collective.ranks:
        raise ScheduleError(f"the schedule is for {schedule.collective.ranks} GPUs, the topology has {len(gpus)}")
    memo: dict[tuple[str, ...], tuple[int, ...]] = {}
    out = []
    for i, t in enumerate(schedule.transfers):
        nodes = t.path if t.path is not None else router.route(gpus[t.src], gpus[t.dst])
        if nodes not in memo:
            if nodes[0] != gpus[t.src] or nodes[-1] != gpus[t.dst]:
                raise ScheduleError(f"transfer {i}: path {nodes[0]}->{nodes[-1]} does not join rank {t.src} "
                                    f"({gpus[t.src]}) to rank {t.dst} ({gpus[t.dst]})")
            ks = []
            for a, b in zip(nodes, nodes[1:]):
                k = link_index.get((a, b))
                if k is None:
                    raise ScheduleError(f"transfer {i}: no link {a} -> {b} in topology {topo.name}")
                ks.append(k)
            here = set(copies.get(nodes[0], ()))
            for b in nodes[1:]:
                here = {v for v in copies.get(b, ()) if any((u, v) in plane_links for u in here)}
            if not here:
                raise ScheduleError(f"transfer {i}: path {' -> '.join(nodes)} is not allowed on the data plane "
                                    f"of {topo.name} (GPU-to-GPU traffic over PCIe/CPU where a scale-up "
                                    f"fabric joins the GPUs, or the network inside a lone server)")
            memo[nodes] = tuple(ks)
        out.append(memo[nodes])
    return out


def _max_min_rates(group_of_entry: np.ndarray, link_of_entry: np.ndarray, weight: np.ndarray,
                   capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-min fair rates (bytes/us) by progressive filling, vectorised.

    Flows with the same path get the same max-min rate, so they are filled as one group
    of `weight` flows. Entries pair a group with a link of its path. Each round fixes the
    groups of the links with the smallest fair share. O(rounds x entries); rounds =
    distinct rate levels. Returns (rate per flow of each group, the links used, their load).
    """
    ngroups = len(weight)
    links, local = np.unique(link_of_entry, return_inverse=True)
    remaining = capacity[links].astype(float)
    entry_weight = weight[group_of_entry].astype(float)
    count = np.bincount(local, weights=entry_weight, minlength=len(links))
    rate = np.zeros(ngroups)
    frozen = np.zeros(ngroups, dtype=bool)
    while not frozen.all():
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(count > 0.5, remaining / count, np.inf)
        level = share.min()
        tight = share <= level * (1 + 1e-12)
        hit = np.zeros(ngroups, dtype=bool)
        hit[group_of_entry[tight[local]]] = True
        hit &= ~frozen
        rate[hit] = level
        frozen |= hit
        fixed = hit[group_of_entry]
        taken = np.bincount(local[fixed], weights=entry_weight[fixed], minlength=len(links))
        remaining -= taken * level
        count -= taken
    load = np.bincount(local, weights=rate[group_of_entry] * entry_weight, minlength=len(links))
    return rate, links, load


class _FairShares:
    """The max-min rates of the flows in flight, by path. Flows on one path share a rate,
    so the rates depend only on how many streams each path has in flight (kept as a
    count vector, updated as transfers start and stop); pipelined schedules return to the
    same counts again and again, and each distinct count vector is solved once."""

    def __init__(self, paths: list[tuple[int, ...]], widths: np.ndarray, capacity: np.ndarray, memo: dict):
        index: dict[tuple[int, ...], int] = {}
        self.path_of = np.array([index.setdefault(p, len(index)) for p in paths], dtype=np.int64)
        self.widths = widths
        self.links = [np.array(p, dtype=np.int64) for p in index]
        self.capacity = capacity
        self.count = np.zeros(len(index), dtype=np.int64)
        self.memo = memo  # count vector -> (rate per path, busiest link, its utilisation)

    def add(self, flows: np.ndarray, sign: int) -> None:
        np.add.at(self.count, self.path_of[flows], sign * self.widths[flows])

    def rates(self, active: np.ndarray) -> tuple[np.ndarray, int, float]:
        """Rate per active transfer (its streams' rate times their number), and the
        busiest link with its utilisation."""
        key = self.count.tobytes()
        found = self.memo.get(key)
        if found is None:
            ps = np.flatnonzero(self.count)
            lengths = np.array([len(self.links[p]) for p in ps], dtype=np.int64)
            group_of_entry = np.repeat(np.arange(len(ps)), lengths)
            link_of_entry = np.concatenate([self.links[p] for p in ps])
            rate, links, load = _max_min_rates(group_of_entry, link_of_entry, self.count[ps], self.capacity)
            util = load / self.capacity[links]
            k = int(util.argmax())
            per_path = np.zeros(len(self.count))
            per_path[ps] = rate
            found = (per_path, int(links[k]), float(util[k]))
            if len(self.memo) * len(self.count) < MEMO_VALUES:
                self.memo[key] = found
        per_path, link, util = found
        return per_path[self.path_of[active]] * self.widths[active], link, util


@dataclass(frozen=True)
class _Runs:
    """A schedule's transfers unrolled over `runs` runs of its loop body: transfer j of
    run r is r * n + j; its data dependencies stay inside the run, and the first transfer
    of each connection in a run queues behind the last of the run before."""

    deps: list[tuple[int, ...]]
    done_after: list[tuple[int, ...]]
    queued_after: list[int]
    paths: list[tuple[int, ...]]
    size: np.ndarray
    widths: np.ndarray


def _unrolled(deps, done_after, queued_after, paths, size, widths, runs: int) -> _Runs:
    n = len(deps)
    if runs == 1:
        return _Runs(deps, done_after, queued_after, paths, size, widths)
    next_on = [-1] * n
    for j, q in enumerate(queued_after):
        if q >= 0:
            next_on[q] = j
    last_of_first = [-1] * n  # first transfer of a connection -> its last
    for j in range(n):
        if queued_after[j] < 0:
            k = j
            while next_on[k] >= 0:
                k = next_on[k]
            last_of_first[j] = k
    all_deps, all_done, all_queue = [], [], []
    for r in range(runs):
        o = r * n
        all_deps.extend(tuple(d + o for d in ds) for ds in deps)
        all_done.extend(tuple(d + o for d in ds) for ds in done_after)
        all_queue.extend(q + o if q >= 0 else (last_of_first[j] + o - n if r else -1) for j, q in enumerate(queued_after))
    return _Runs(all_deps, all_done, all_queue, paths * runs, np.tile(size, runs), np.tile(widths, runs))


def simulate(schedule: Schedule, topo: Topology, router: Router | None = None,
             options: SimOptions = SimOptions()) -> SimResult:
    """Verify the schedule and compute its completion time (us) on `topo`.

    Event-driven; each event recomputes the fair rates of the flows in flight (vectorised,
    one solve per distinct set of flows). A loop body (`schedule.loops` > 1) is run as
    many times: see `_loop_time`.
    """
    deps, done_after, queued_after = _analyse(schedule)
    router = router or Router(topo)
    paths = _paths(schedule, topo, router)
    width_of = schedule.width()
    widths = np.array([width_of.get((t.src, t.dst, t.channel), 1) for t in schedule.transfers], dtype=np.int64)
    size = np.array([schedule.chunk_bytes(t.chunk) for t in schedule.transfers], dtype=float)
    return _loop_time(schedule, topo, options, (deps, done_after, queued_after, paths, size, widths))


def _loop_time(schedule: Schedule, topo: Topology, options: SimOptions, body: tuple) -> SimResult:
    """Time of `schedule.loops` runs of the body. Every run is simulated when they fit in
    LOOP_UNROLL_TRANSFERS or are no more than the 6m the period needs (m: LOOP_FIRST_RUNS,
    fewer on a large body); otherwise the time of m, 2m and 3m runs is simulated (each run
    moving 1/loops of the data): once the two differences agree (to PERIOD_TOLERANCE of
    the period) the pipeline is in its periodic regime and the time of L runs is the
    time of 3m runs plus (L - 3m) periods. Accepted only when that period is at least the
    busiest link's bytes per run and the m runs outlast LOOP_FILL times one run's own
    time (before the pipeline fills, runs follow each other faster than links allow
    later). m doubles until then; when the next round would pass LOOP_PERIOD_TRANSFERS
    or half the runs, every run is simulated. `period_spread` is the two differences'
    relative distance. tests/test_simulator.py checks the extrapolation against every
    run simulated."""
    n = len(body[0])
    loops = schedule.loops
    size = body[4]
    known: dict[int, tuple] = {}
    memo: dict = {}  # the unrolled runs have the body's paths: their fair shares are the same

    def timed(runs: int) -> tuple:
        if runs not in known:
            known[runs] = _run(_unrolled(*body, runs), topo, options, memo)
        return known[runs]

    def result(time_us: float, runs: int, period: float, spread: float = 0.0) -> SimResult:
        _, util, busiest, start, finish = known[runs]
        first = (tuple(start[:n]), tuple(finish[:n])) if runs == loops else ((), ())
        return SimResult(time_us=time_us, transfers=n * loops, steps=schedule.num_steps,
                         bytes_moved=float(size.sum()) * loops, max_link_utilization=util, busiest_link=busiest,
                         start_us=first[0], finish_us=first[1], runs_simulated=runs, period_us=period,
                         period_spread=spread)

    first = max(1, min(LOOP_FIRST_RUNS, LOOP_PERIOD_TRANSFERS // max(1, 6 * n)))
    if loops * n <= LOOP_UNROLL_TRANSFERS or loops <= 6 * first:
        if loops * n > limits.MAX_TRANSFERS:
            raise ScheduleTooLarge(f"{loops} runs of a {n}-transfer loop body are {loops * n} transfers; the simulator "
                                   f"checks at most {limits.MAX_TRANSFERS} (use fewer runs or a smaller body)")
        return result(timed(loops)[0], loops, 0.0)
    # the period can be no shorter than the busiest link's bytes per run; and the runs
    # measured must outlast the pipeline's fill (a run's own latency, T(1)) LOOP_FILL
    # times over, or their slope is still the start-up's, before links contend
    load = np.zeros(len(topo.links))
    for path, nbytes in zip(body[3], size):
        for k in path:
            load[k] += nbytes
    least = float((load / np.array([l.bandwidth * 1e3 for l in topo.links])).max())
    fill = timed(1)[0]
    m = first
    while True:
        t1, t2, t3 = timed(m)[0], timed(2 * m)[0], timed(3 * m)[0]
        p1, p2 = (t2 - t1) / m, (t3 - t2) / m
        spread = abs(p2 - p1) / p2
        if spread <= PERIOD_TOLERANCE and p2 >= least * (1 - 1e-9) and m * p2 >= LOOP_FILL * fill:
            return result(t3 + (loops - 3 * m) * p2, 3 * m, p2, spread)
        if 12 * m >= loops or 12 * m * n > LOOP_PERIOD_TRANSFERS:  # no periodic regime in reach: every run
            if loops * n > limits.MAX_TRANSFERS:
                raise ScheduleTooLarge(f"{loops} runs of a {n}-transfer loop body did not settle into a period "
                                       f"within {6 * m} runs, and all of them are more than the "
                                       f"{limits.MAX_TRANSFERS} transfers the simulator checks")
            return result(timed(loops)[0], loops, 0.0)
        m *= 2


def _run(runs: _Runs, topo: Topology, options: SimOptions, memo: dict) -> tuple[float, float, tuple | None, list, list]:
    """The event loop over unrolled transfers: (end, peak utilisation, busiest link,
    start and finish of every transfer)."""
    deps, done_after, queued_after, paths, size = runs.deps, runs.done_after, runs.queued_after, runs.paths, runs.size
    capacity = np.array([l.bandwidth * 1e3 for l in topo.links])  # GB/s -> bytes/us
    latency = [l.latency for l in topo.links]
    nt = len(deps)
    shares = _FairShares(paths, runs.widths, capacity, memo)
    alpha = [sum(latency[k] for k in paths[i]) + options.overhead_us for i in range(nt)]
    dependents: list[list[int]] = [[] for _ in range(nt)]
    next_on_connection: list[int] = [-1] * nt
    waiting = [len(d) + (queued_after[i] >= 0) for i, d in enumerate(deps)]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)
        if queued_after[i] >= 0:
            next_on_connection[queued_after[i]] = i
    ready_at = [0.0] * nt
    start = [0.0] * nt
    finish = [0.0] * nt
    ready_heap = [(0.0, i) for i in range(nt) if waiting[i] == 0]
    heapq.heapify(ready_heap)
    finish_heap: list[tuple[float, int]] = []  # (time the transfer is done incl. latency, id)
    streamed = [-1.0] * nt  # when each transfer's bytes finished flowing (-1: not yet)
    held: dict[int, list[int]] = {}  # reader -> writers whose completion waits for it

    def release(g: int, t: float) -> None:
        waiting[g] -= 1
        ready_at[g] = max(ready_at[g], t)
        if waiting[g] == 0:
            heapq.heappush(ready_heap, (ready_at[g], g))

    def streamed_out(f: int, t: float) -> None:
        """f's bytes are through at t: the next transfer on its connection may start; f
        completes after its latency once the same-step reads of the place it writes
        have streamed out too."""
        streamed[f] = t
        if next_on_connection[f] >= 0:
            release(next_on_connection[f], t)
        waits = [r for r in done_after[f] if streamed[r] < 0]
        if waits:
            for r in waits:
                held.setdefault(r, []).append(f)
        else:
            heapq.heappush(finish_heap, (max([t + alpha[f]] + [streamed[r] for r in done_after[f]]), f))
        for w in held.pop(f, ()):
            if all(streamed[r] >= 0 for r in done_after[w]):
                heapq.heappush(finish_heap, (max([streamed[w] + alpha[w]] + [streamed[r] for r in done_after[w]]), w))

    left = size.copy()
    active = np.zeros(0, dtype=np.int64)  # transfers whose bytes are flowing
    rate = np.zeros(0)
    now = end = 0.0
    done = 0
    peak_util, busiest = 0.0, None
    inf = float("inf")
    while done < nt:
        to_go = left[active] / rate if len(active) else None
        t_flow = now + float(to_go.min()) if len(active) else inf
        t_ready = ready_heap[0][0] if ready_heap else inf
        t_finish = finish_heap[0][0] if finish_heap else inf
        t_next = min(t_flow, t_ready, t_finish)
        if t_next == inf:
            raise ScheduleError("the schedule deadlocks: some transfers never become ready")
        changed = False
        if len(active):
            step = t_next - now
            left[active] -= rate * step
            # Flows due by this event end now, whatever float rounding of `now` left over;
            # otherwise a few bytes could remain with a step too small to advance time.
            over = (to_go <= step * (1 + 1e-9)) | (left[active] <= _EPS * np.maximum(1.0, size[active]))
            if t_next == t_flow:
                over[int(to_go.argmin())] = True
            if over.any():
                for f in active[over].tolist():
                    streamed_out(f, t_next)
                shares.add(active[over], -1)
                active, rate = active[~over], rate[~over]
                changed = True
        now = t_next
        while finish_heap and finish_heap[0][0] <= now:
            _, f = heapq.heappop(finish_heap)
            finish[f] = now
            done += 1
            end = max(end, now)
            for g in dependents[f]:
                release(g, now)
        started = []
        while ready_heap and ready_heap[0][0] <= now:
            _, f = heapq.heappop(ready_heap)
            start[f] = now
            if size[f] <= 0 or not paths[f]:
                streamed_out(f, now)
            else:
                started.append(f)
        if started:
            new = np.array(started, dtype=np.int64)
            shares.add(new, 1)
            active = np.concatenate([active, new])
            changed = True
        if changed and len(active):
            rate, link, util = shares.rates(active)
            if util > peak_util:
                peak_util, busiest = util, (topo.links[link].src, topo.links[link].dst)
    return end, peak_util, busiest, start, finish
