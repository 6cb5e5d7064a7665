"""Schedules: chunks of blocks moved between GPUs in steps, along paths.

A schedule splits each block it moves into chunks (fraction intervals of the block that
partition it) and lists transfers. Semantics are by step: every transfer of step s reads
its source's value as it was after step s-1, and writes at the end of step s — `reduce`
transfers combine into the destination's value, the others replace it. The simulator
derives true data dependencies from this (read-after-write, write-after-write,
write-after-read), so a schedule runs as a dataflow graph, not in lock-step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from planner.collectives import Collective


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

    def chunk_bytes(self, chunk: int) -> float:
        c = self.chunks[chunk]
        return self.collective.blocks[c.block].size * (c.hi - c.lo)

    @property
    def num_steps(self) -> int:
        return 1 + max((t.step for t in self.transfers), default=-1)


def whole_block_chunks(collective: Collective, parts: int = 1) -> tuple[Chunk, ...]:
    """Every block cut into `parts` equal chunks; chunk id = block * parts + part."""
    return tuple(Chunk(b, p / parts, (p + 1) / parts) for b in range(len(collective.blocks)) for p in range(parts))
