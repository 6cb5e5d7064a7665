"""What the exporters share: MSCCL buffer slots for a schedule's chunks and the ordering a
runtime has to enforce between the steps of one GPU.

MSCCL and MSCCL++ address data as whole chunks of per-GPU buffers: `i` (input), `o`
(output), `s` (scratch), each cut into chunks of one size, `nchunksperloop` (K) of them
per logical buffer. A schedule exports when its chunks are all that size and aligned to
that grid. Which slot holds which piece of which block is fixed per collective
(`BufferMap`); `analyse` then follows the schedule step by step and says, for every
transfer, which slot the sender reads, which slot the value ends in at the receiver,
whether it combines (and with which slot), and which earlier transfers it must wait for
on which GPU (`Dep`): a runtime can only order the steps of one GPU; cross-GPU order comes
from a receive waiting for its send.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.core.collectives import Collective
from planner.core.errors import InputError
from planner.core.schedule import Schedule
from planner.simulator import verify

EXPORTABLE = ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce", "alltoall")
SEND, RECV = "send", "recv"  # the side of a transfer: its sender's step, its receiver's step
Slot = tuple[str, int]  # (buffer "i" | "o" | "s", chunk index)
Unit = tuple[int, int]  # (block, piece k of the block's C pieces)


@dataclass(frozen=True)
class BufferMap:
    """Where each piece of each block lives in a GPU's i and o buffers.

    allgather: i = the rank's own block, o = all blocks in block order; reduce-scatter:
    i = all blocks, o = the rank's own block; allreduce: i and o = all N blocks;
    broadcast / reduce: the one block (held by the root, resp. required at the root);
    alltoall: i = the blocks to each peer in peer order, o = the blocks from each peer
    (a rank's slot for itself is a local copy outside the planner's blocks).
    """

    kind: str
    ranks: int
    per_block: int  # C: chunks per block
    root: int = 0
    block_index: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def of(coll: Collective, per_block: int) -> "BufferMap":
        return BufferMap(coll.kind, coll.ranks, per_block, coll.root, tuple(coll.block_index.items()))

    @property
    def nchunks(self) -> int:
        """K = nchunksperloop: chunks of the logical buffer (SIZE)."""
        return self.per_block * (1 if self.kind in ("broadcast", "reduce") else self.ranks)

    def input_chunks(self) -> int:
        return self.per_block if self.kind == "allgather" else self.nchunks

    def output_chunks(self) -> int:
        return self.per_block if self.kind == "reduce-scatter" else self.nchunks

    def _a2a(self, src: int, dst: int) -> int | None:
        return None if src == dst else dict(self.block_index)[f"b{src}-{dst}"]

    def initial(self, rank: int) -> list[tuple[int, Unit | None]]:
        """(input index, unit) the rank holds at the start; None: alltoall's own block."""
        c, n = self.per_block, self.ranks
        if self.kind == "allgather":
            return [(k, (rank, k)) for k in range(c)]
        if self.kind in ("reduce-scatter", "allreduce"):
            return [(b * c + k, (b, k)) for b in range(n) for k in range(c)]
        if self.kind == "broadcast":
            return [(k, (0, k)) for k in range(c)] if rank == self.root else []
        if self.kind == "reduce":
            return [(k, (0, k)) for k in range(c)]
        out = []
        for j in range(n):
            b = self._a2a(rank, j)
            out += [(j * c + k, None if b is None else (b, k)) for k in range(c)]
        return out

    def required(self, rank: int) -> list[tuple[int, Unit | None]]:
        """(output index, unit) the rank must hold at the end; None: alltoall's own block."""
        c, n = self.per_block, self.ranks
        if self.kind in ("allgather", "allreduce"):
            return [(b * c + k, (b, k)) for b in range(n) for k in range(c)]
        if self.kind == "reduce-scatter":
            return [(k, (rank, k)) for k in range(c)]
        if self.kind == "broadcast":
            return [(k, (0, k)) for k in range(c)]
        if self.kind == "reduce":
            return [(k, (0, k)) for k in range(c)] if rank == self.root else []
        out = []
        for j in range(n):
            b = self._a2a(j, rank)
            out += [(j * c + k, None if b is None else (b, k)) for k in range(c)]
        return out


def chunk_grid(schedule: Schedule) -> tuple[int, tuple[Unit, ...]]:
    """C (chunks per block) and each schedule chunk's unit; InputError when the chunks are
    not all one size or not aligned to a grid of K = SIZE / chunk-size chunks."""
    coll = schedule.collective
    if coll.kind not in EXPORTABLE:
        raise InputError(f"{coll.kind} has no MSCCL/MSCCL++ chunk layout (exportable: {', '.join(EXPORTABLE)})",
                         field="collective")
    if coll.ranks < 2:
        raise InputError("an export needs at least 2 GPUs", field="collective")
    if not schedule.chunks:
        raise InputError("the schedule has no chunks", field="chunks")
    if schedule.widths:
        raise InputError("its connections bundle parallel streams (each tree's whole units: models/tree_units.py), "
                         "which the formats cannot say: each stream would need its own thread block and chunk",
                         field="connection_widths")
    sizes = [coll.blocks[c.block].size * (c.hi - c.lo) for c in schedule.chunks]  # the loop body's whole chunks
    small, big = min(sizes), max(sizes)
    if big - small > 1e-9 * big:
        i, j = sizes.index(small), sizes.index(big)
        raise InputError(f"chunks are not all the same size (chunk {i}: {small:g} bytes, chunk {j}: {big:g} bytes); "
                         "MSCCL buffers count equal chunks", field="chunks")
    k_float = coll.size / small
    nchunks = round(k_float)
    if nchunks < 1 or abs(k_float - nchunks) > 1e-6 * k_float:
        raise InputError(f"the chunk size {small:g} bytes is not a whole fraction 1/nchunksperloop of the "
                         f"{coll.size}-byte buffer (SIZE / chunk = {k_float:g})", field="chunks")
    per_block = nchunks if coll.kind in ("broadcast", "reduce") else nchunks // coll.ranks
    if per_block * (1 if coll.kind in ("broadcast", "reduce") else coll.ranks) != nchunks:
        raise InputError(f"{nchunks} chunks of {small:g} bytes do not split evenly over the {coll.ranks} blocks",
                         field="chunks")
    units = []
    for i, c in enumerate(schedule.chunks):
        k = c.lo * per_block
        if abs(k - round(k)) > 1e-6 or not 0 <= round(k) < per_block:
            raise InputError(f"chunk {i} [{c.lo:g}, {c.hi:g}) of block {c.block} is not on the grid of "
                             f"{per_block} chunks per block", field="chunks")
        units.append((c.block, int(round(k))))
    if len(set(units)) != len(units):
        raise InputError("two chunks cover the same part of a block", field="chunks")
    return per_block, tuple(units)


@dataclass(frozen=True)
class Move:
    """One transfer as a runtime runs it: the sender reads `read`, the value ends in the
    receiver's `write` slot; `combine` is the receiver's slot it is reduced with."""

    index: int
    src: int
    dst: int
    channel: int
    read: Slot
    write: Slot
    combine: Slot | None
    fresh: bool  # nothing was or is at the receiver's place: a direct remote write is safe
    side: Slot | None = None  # lands here first, then a local reduce puts it into `write` ...
    after: int | None = None  # ... once this transfer, reducing into the same place in the same step, has


@dataclass(frozen=True)
class Dep:
    """Transfer `consumer`'s step on `side` waits for transfer `producer`'s step on
    `producer_side`; both steps are on the same GPU."""

    consumer: int
    side: str
    producer: int
    producer_side: str


@dataclass(frozen=True)
class ExportPlan:
    buffers: BufferMap
    moves: tuple[Move, ...]
    deps: tuple[Dep, ...]
    connections: tuple[tuple[tuple[int, int, int], tuple[int, ...]], ...]  # (src, dst, channel) -> transfers in order
    local_copies: tuple[tuple[int, Slot, Slot], ...]  # (rank, from, to): values a rank already holds, into o
    scratch: tuple[int, ...]  # scratch chunks per rank


def analyse(schedule: Schedule) -> ExportPlan:
    """Slots and same-GPU dependencies of every transfer (see the module docstring)."""
    per_block, units = chunk_grid(schedule)
    data_deps = verify(schedule)  # a wrong schedule stops here, before any slot is assigned
    coll = schedule.collective
    buffers = BufferMap.of(coll, per_block)
    n = coll.ranks
    in_slot = {(r, u): i for r in range(n) for i, u in buffers.initial(r) if u is not None}
    out_slot = {(r, u): i for r in range(n) for i, u in buffers.required(r) if u is not None}
    chunk_of = {u: ci for ci, u in enumerate(units)}
    where: dict[tuple[int, int], Slot] = {}  # (rank, chunk) -> slot holding its current value
    for (r, u), i in in_slot.items():
        if u in chunk_of:
            where[(r, chunk_of[u])] = ("i", i)
    touched: set[tuple[int, int]] = set()
    write_slot: dict[tuple[int, int], Slot] = {}
    scratch = [0] * n
    ts = schedule.transfers
    by_step: dict[int, list[int]] = {}
    for i, t in enumerate(ts):
        by_step.setdefault(t.step, []).append(i)
    moves: list[Move | None] = [None] * len(ts)
    extra: list[tuple[int, int]] = []  # (producer, consumer) orderings the step semantics leave implicit
    for step in sorted(by_step):
        ids = by_step[step]
        writers: dict[tuple[int, int], list[int]] = {}
        for i in ids:
            writers.setdefault((ts[i].dst, ts[i].chunk), []).append(i)
        for i in ids:
            t = ts[i]
            loc = (t.dst, t.chunk)
            if loc not in write_slot:
                u = units[t.chunk]
                if (t.dst, u) in out_slot:
                    write_slot[loc] = ("o", out_slot[(t.dst, u)])
                else:
                    write_slot[loc] = ("s", scratch[t.dst])
                    scratch[t.dst] += 1
            held = where.get(loc)
            ws = writers[loc]
            combine = held if t.reduce and held is not None else None
            side = after = None
            if len(ws) > 1 and all(ts[w].reduce for w in ws) and ws.index(i) > 0:
                # several reductions into one place in one step: each lands in a scratch chunk of its
                # own and is reduced into the place after the one before it (they run concurrently)
                side, after, combine = ("s", scratch[t.dst]), ws[ws.index(i) - 1], write_slot[loc]
                scratch[t.dst] += 1
            fresh = held is None and loc not in touched and len(ws) == 1
            moves[i] = Move(i, t.src, t.dst, t.channel, where[(t.src, t.chunk)], write_slot[loc], combine, fresh,
                            side, after)
        for loc, ws in writers.items():
            if not all(ts[w].reduce for w in ws):
                extra += list(zip(ws, ws[1:]))  # copies into one place in one step: one after the other
            for r in ids:  # same-step readers of the place finish reading before it is overwritten
                if (ts[r].src, ts[r].chunk) == loc:
                    extra += [(r, w) for w in ws if w != r]
        for i in ids:
            touched.add((ts[i].src, ts[i].chunk))
        for loc in writers:
            where[loc] = write_slot[loc]
            touched.add(loc)
    local = []
    for r in range(n):
        for oi, u in buffers.required(r):
            if u is None:  # alltoall: a rank's block for itself
                local.append((r, ("i", oi), ("o", oi)))
            elif where.get((r, chunk_of.get(u, -1)), ("o", -1))[0] == "i":
                local.append((r, where[(r, chunk_of[u])], ("o", oi)))
    deps = []
    pairs = {(d, i) for i, ds in enumerate(data_deps) for d in ds} | set(extra)
    for d, i in sorted(pairs):
        dep = _classify(ts, d, i)
        if dep is not None:
            deps.append(dep)
    conns: dict[tuple[int, int, int], list[int]] = {}
    for i in sorted(range(len(ts)), key=lambda i: (ts[i].step, i)):
        conns.setdefault((ts[i].src, ts[i].dst, ts[i].channel), []).append(i)
    return ExportPlan(buffers, tuple(moves), tuple(deps), tuple((k, tuple(v)) for k, v in sorted(conns.items())),
                      tuple(local), tuple(scratch))


def _classify(ts, d: int, i: int) -> Dep | None:
    """Where transfer i waits for transfer d: at i's sender after d arrived there (d wrote
    what i reads), at i's receiver after d's step there (d wrote, or read, the place i
    writes). None when the thread block order of one connection already implies it.
    An explicit dependency of one send on another from the same GPU to elsewhere (SpreadOut's
    stages) waits for that send to arrive; a runtime can only order it after the earlier
    send has left, which re-simulates faster than the plan: refused (InputError)."""
    a, b = ts[d], ts[i]
    if (a.src, a.dst, a.channel) == (b.src, b.dst, b.channel):
        return None
    if a.dst == b.src:
        return Dep(i, SEND, d, RECV)
    if a.dst == b.dst:
        return Dep(i, RECV, d, RECV)
    if a.src == b.dst:
        return Dep(i, RECV, d, SEND)
    if a.src == b.src:
        raise InputError(f"transfer {i} ({b.src}->{b.dst}) waits for transfer {d} ({a.src}->{a.dst}) to arrive; "
                         "MSCCL runtimes order a send only after an earlier send has left its GPU, not arrived",
                         field="deps")
    raise InputError(f"transfer {i} ({b.src}->{b.dst}) depends on transfer {d} ({a.src}->{a.dst}), which shares no "
                     "GPU with it; MSCCL runtimes order only the steps of one GPU", field="deps")
