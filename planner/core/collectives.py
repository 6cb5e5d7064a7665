"""Collectives as data: which blocks of data exist, where they start, where they must end.

A *block* is a piece of logical data. Its value at a GPU is the set of ranks whose
contributions it combines, kept as a bitmask. Copy collectives have one contributor per
block; reductions start with every rank holding its own contribution and require the
full set (each contribution exactly once) where the result must be.

SIZE conventions (nccl-tests'): allgather output, reduce-scatter input and allreduce
buffer are the full N-block buffer M per GPU, each block M/N; broadcast/reduce move one
M-byte buffer; alltoall's SIZE is the send buffer per GPU, M/N to each peer; alltoallv
takes a G x G byte matrix, and its SIZE is the largest row sum (the biggest send buffer),
so its algbw compares with alltoall's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from planner.core.errors import InputError

COLLECTIVES = ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce", "alltoall", "alltoallv")
REDUCTIONS = ("reduce-scatter", "allreduce", "reduce")
BLOCKED = ("allgather", "reduce-scatter", "allreduce", "alltoall")  # SIZE splits into N blocks


@dataclass(frozen=True)
class Block:
    """`size` bytes; `initial[rank]` and `required[rank]` are contribution bitmasks."""

    name: str
    size: float
    initial: tuple[tuple[int, int], ...]
    required: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Collective:
    kind: str
    ranks: int
    size: int
    root: int = 0
    traffic: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in COLLECTIVES:
            raise InputError(f"unknown collective {self.kind!r} (use {' | '.join(COLLECTIVES)})", field="collective")
        if self.ranks < 1:
            raise InputError("a collective needs at least one GPU", field="topology")
        if not 0 <= self.root < self.ranks:
            raise InputError(f"root {self.root} is not a rank (0..{self.ranks - 1})", field="root")
        if self.kind == "alltoallv" and self.traffic is not None:
            object.__setattr__(self, "size", max(sum(r) - r[i] for i, r in enumerate(self.traffic)))
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise InputError(f"size must be a positive whole number of bytes, got {self.size!r}", field="size")
        if self.kind == "alltoallv":
            if self.traffic is None or len(self.traffic) != self.ranks or any(len(r) != self.ranks for r in self.traffic):
                raise InputError(f"alltoallv needs a {self.ranks}x{self.ranks} traffic matrix", field="traffic")

    def require_whole_blocks(self) -> "Collective":
        """Input check: SIZE must split into N equal whole blocks where the collective cuts
        it so (the simulator itself would take fractional bytes)."""
        if self.kind in BLOCKED and self.size % self.ranks:
            raise InputError(f"{self.size} bytes do not divide into {self.ranks} equal blocks", field="size")
        return self

    @property
    def is_reduction(self) -> bool:
        return self.kind in REDUCTIONS

    @property
    def full_mask(self) -> int:
        return (1 << self.ranks) - 1

    @cached_property
    def matrix(self) -> np.ndarray:
        """Bytes each rank must deliver to each other rank (alltoall / alltoallv): a
        read-only G x G float array, diagonal zero."""
        n = self.ranks
        if self.kind == "alltoallv":
            m = np.array(self.traffic, dtype=float)
        else:
            m = np.full((n, n), self.size / n)
        np.fill_diagonal(m, 0.0)
        m.setflags(write=False)
        return m

    @cached_property
    def block_ids(self) -> np.ndarray:
        """alltoall(v): index in `blocks` of the block from rank i to rank j, -1 where none."""
        positive = self.matrix > 0
        ids = np.full(positive.shape, -1, dtype=np.int64)
        ids[positive] = np.arange(int(positive.sum()))
        ids.setflags(write=False)
        return ids

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        n, m, full = self.ranks, self.size, self.full_mask
        everyone_own = tuple((r, 1 << r) for r in range(n))
        if self.kind == "allgather":
            return tuple(Block(f"b{b}", m / n, ((b, 1 << b),), tuple((r, 1 << b) for r in range(n)))
                         for b in range(n))
        if self.kind == "reduce-scatter":
            return tuple(Block(f"b{b}", m / n, everyone_own, ((b, full),)) for b in range(n))
        if self.kind == "allreduce":
            return tuple(Block(f"b{b}", m / n, everyone_own, tuple((r, full) for r in range(n)))
                         for b in range(n))
        if self.kind == "broadcast":
            bit = 1 << self.root
            return (Block("b0", m, ((self.root, bit),), tuple((r, bit) for r in range(n))),)
        if self.kind == "reduce":
            return (Block("b0", m, everyone_own, ((self.root, full),)),)
        out = []
        mat = self.matrix.tolist()
        for i in range(n):
            for j in range(n):
                if i != j and mat[i][j] > 0:
                    out.append(Block(f"b{i}-{j}", mat[i][j], ((i, 1 << i),), ((j, 1 << i),)))
        return tuple(out)

    @cached_property
    def block_index(self) -> dict[str, int]:
        return {b.name: i for i, b in enumerate(self.blocks)}

    def describe(self) -> dict:
        d = {"collective": self.kind, "ranks": self.ranks, "size_bytes": self.size}
        if self.kind in ("broadcast", "reduce"):
            d["root"] = self.root
        return d
