"""A placement's rank table as the launchers read it, and back.

- `rankfile` (Open MPI `--rankfile`): `rank N=host slot=G`, G the GPU (local rank) on host;
- `hostfile` (`SLURM_HOSTFILE` for `srun --distribution=arbitrary`): one host per task, in
  rank order; a rank's GPU is its place among the host's ranks;
- `cuda-visible-devices`: `host CUDA_VISIBLE_DEVICES=g0,g1,...` per host, in the order of
  the host's first rank, its GPUs in local-rank order.
"""
from __future__ import annotations

import re

from planner.core.errors import InputError

_RANK = re.compile(r"^rank\s+(\d+)=(\S+)\s+slot=(\d+)$")


def placement_text(ranks: list[tuple[str, int]], fmt: str) -> str:
    if fmt == "rankfile":
        return "".join(f"rank {r}={host} slot={gpu}\n" for r, (host, gpu) in enumerate(ranks))
    if fmt == "hostfile":
        return "".join(f"{host}\n" for host, _ in ranks)
    if fmt == "cuda-visible-devices":
        hosts: dict[str, list[int]] = {}
        for host, gpu in ranks:
            hosts.setdefault(host, []).append(gpu)
        return "".join(f"{h} CUDA_VISIBLE_DEVICES={','.join(map(str, g))}\n" for h, g in hosts.items())
    raise InputError(f"unknown format {fmt!r}", field="--export")


def parse_rankfile(text: str, fmt: str, gpus_per_node: int) -> list[tuple[str, int]]:
    """The rank table a file gives (rank order)."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]
    if fmt == "rankfile":
        table: dict[int, tuple[str, int]] = {}
        for i, line in enumerate(lines, 1):
            m = _RANK.match(line)
            if not m:
                raise InputError("expected `rank N=host slot=G`", field=f"line {i}")
            table[int(m.group(1))] = (m.group(2), int(m.group(3)))
        if sorted(table) != list(range(len(table))):
            raise InputError("ranks are not 0..N-1 once each", field="rankfile")
        return [table[r] for r in range(len(table))]
    if fmt == "hostfile":
        seen: dict[str, int] = {}
        out = []
        for host in lines:
            out.append((host, seen.get(host, 0)))
            seen[host] = seen.get(host, 0) + 1
        return out
    out = []
    for i, line in enumerate(lines, 1):
        host, _, devices = line.partition(" CUDA_VISIBLE_DEVICES=")
        if not devices:
            raise InputError("expected `host CUDA_VISIBLE_DEVICES=...`", field=f"line {i}")
        out += [(host, int(g)) for g in devices.split(",")]
    return out
