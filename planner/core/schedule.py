"""Schedules: chunks of blocks moved between GPUs in steps, along paths.

A schedule splits each block it moves into chunks (fraction intervals of the block that
partition it) and lists transfers. Semantics are by step: every transfer of step s reads
its source's value as it was after step s-1, and writes at the end of step s — `reduce`
transfers combine into the destination's value, the others replace it. The simulator
derives true data dependencies from this (read-after-write, write-after-write,
write-after-read), so a schedule runs as a dataflow graph, not in lock-step.

A schedule may be a loop body (`loops` > 1): the runtime runs it once per slice of the
buffer, each run moving 1/loops of every chunk, and every connection works through its
transfers of one run before those of the next (MSCCL's loop over the buffer). Runs are
independent in data, so correctness is that of one run; the runs pipeline. A connection
may be a bundle of `width` parallel streams (thread blocks) that split each of its
transfers evenly (`widths`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from planner.core.collectives import Collective
from planner.core.errors import InputError
from planner.core.loader import expect_list, expect_type, positive_int


@dataclass(frozen=True)
class Chunk:
    """Fraction [lo, hi) of block `block` (an index into `Collective.blocks`)."""

    block: int
    lo: float
    hi: float


@dataclass(frozen=True)
class Transfer:
    """`chunk` from rank `src` to rank `dst` in `step`. `path`: node ids, None = default route.

    Transfers on one connection (src, dst, channel) run in order, one at a time, as a
    runtime's thread block works through its steps; different channels run concurrently.
    """

    chunk: int
    src: int
    dst: int
    step: int
    reduce: bool = False
    channel: int = 0
    path: tuple[str, ...] | None = None
    deps: tuple[int, ...] = ()


@dataclass(frozen=True)
class Schedule:
    collective: Collective
    chunks: tuple[Chunk, ...]
    transfers: tuple[Transfer, ...]
    algorithm: str = ""
    params: tuple[tuple[str, object], ...] = field(default=())
    loops: int = 1
    widths: tuple[tuple[int, int, int, int], ...] = ()  # (src, dst, channel, streams) where streams > 1

    def chunk_bytes(self, chunk: int) -> float:
        """Bytes of the chunk in one run of the loop body."""
        c = self.chunks[chunk]
        return self.collective.blocks[c.block].size * (c.hi - c.lo) / self.loops

    def width(self) -> dict[tuple[int, int, int], int]:
        """Streams per connection (src, dst, channel) bundling more than one."""
        return {(s, d, c): w for s, d, c, w in self.widths}

    @property
    def num_steps(self) -> int:
        return 1 + max((t.step for t in self.transfers), default=-1)


def whole_block_chunks(collective: Collective, parts: int = 1) -> tuple[Chunk, ...]:
    """Every block cut into `parts` equal chunks; chunk id = block * parts + part."""
    return tuple(Chunk(b, p / parts, (p + 1) / parts) for b in range(len(collective.blocks)) for p in range(parts))


def schedule_to_json(schedule: Schedule) -> dict:
    transfers = []
    for t in schedule.transfers:
        row: list = [t.chunk, t.src, t.dst, t.step, int(t.reduce), t.channel]
        if t.deps or t.path is not None:
            row.append(list(t.deps))
        if t.path is not None:
            row.append(list(t.path))
        transfers.append(row)
    body = {"algorithm": schedule.algorithm, "params": dict(schedule.params),
            "transfer_fields": ["chunk", "src", "dst", "step", "reduce", "channel", "deps", "path"],
            "chunks": [[c.block, c.lo, c.hi] for c in schedule.chunks], "transfers": transfers}
    if schedule.loops != 1:
        body["loops"] = schedule.loops
    if schedule.widths:
        body["connection_widths"] = [list(w) for w in schedule.widths]
    return body


def schedule_from_json(body: dict, coll: Collective, source: str | None = None) -> Schedule:
    """The inverse of schedule_to_json; malformed bodies raise InputError naming the field."""
    try:
        chunks = tuple(Chunk(int(b), float(lo), float(hi)) for b, lo, hi in body["chunks"])
        transfers = []
        for i, row in enumerate(body["transfers"]):
            chunk, src, dst, step, red, chan = (int(x) for x in row[:6])
            deps = tuple(int(d) for d in row[6]) if len(row) > 6 else ()
            path = tuple(str(p) for p in row[7]) if len(row) > 7 else None
            if path is not None and len(path) < 2:
                raise ValueError(f"transfer {i} has a path of {len(path)} node(s)")
            transfers.append(Transfer(chunk, src, dst, step, bool(red), chan, path, deps))
        params = tuple(sorted(dict(body.get("params", {})).items()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"malformed schedule ({exc.__class__.__name__}: {exc})", source=source, field="plan") from None
    loops = positive_int(body.get("loops", 1), source=source, field="plan.loops", what="a whole number of runs")
    widths = []
    for i, row in enumerate(expect_list(body.get("connection_widths", []), source=source,
                                        field="plan.connection_widths", nonempty=False)):
        where = f"plan.connection_widths[{i}]"
        if not isinstance(row, list) or len(row) != 4:
            raise InputError(f"expected [src, dst, channel, streams], got {row!r}", source=source, field=where)
        *ends, streams = [expect_type(x, int, source=source, field=where, what="an integer") for x in row]
        widths.append((*ends, positive_int(streams, source=source, field=where, what="a number of streams")))
    return Schedule(coll, chunks, tuple(transfers), str(body.get("algorithm", "")), params, loops, tuple(widths))
