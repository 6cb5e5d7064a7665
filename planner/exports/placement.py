"""A placement's rank table as the launchers read it, and back.

- `rankfile` (Open MPI `--rankfile`): `rank N=host slot=G`, G the GPU (local rank) on host;
- `hostfile` (`SLURM_HOSTFILE` for `srun --distribution=arbitrary`): one host per task, in
  rank order; a rank's GPU is its place among the host's ranks;
- `cuda-visible-devices`: `host CUDA_VISIBLE_DEVICES=g0,g1,... RANKS=r0,r1,...` per host,
  in the order of the host's first rank, its GPUs in local-rank order and the global rank
  of each (a job sharing nodes has a host's ranks apart); without RANKS, hosts in order.
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
        hosts: dict[str, list[tuple[int, int]]] = {}
        for r, (host, gpu) in enumerate(ranks):
            hosts.setdefault(host, []).append((gpu, r))
        return "".join(f"{h} CUDA_VISIBLE_DEVICES={','.join(str(g) for g, _ in v)} RANKS={','.join(str(r) for _, r in v)}\n"
                       for h, v in hosts.items())
    raise InputError(f"unknown format {fmt!r}", field="--export")


def parse_rankfile(text: str, fmt: str) -> list[tuple[str, int]]:
    """The rank table a file gives (rank order); a hostfile's GPU is the rank's place among
    its host's ranks (its local rank)."""
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
    out: list[tuple[int, tuple[str, int]]] = []
    for i, line in enumerate(lines, 1):
        host, _, rest = line.partition(" CUDA_VISIBLE_DEVICES=")
        devices, _, ranks_text = rest.partition(" RANKS=")
        try:
            gpus = [int(g) for g in devices.split(",")]
            numbers = [int(r) for r in ranks_text.split(",")] if ranks_text else range(len(out), len(out) + len(gpus))
        except ValueError:
            raise InputError("expected `host CUDA_VISIBLE_DEVICES=g,... [RANKS=r,...]`", field=f"line {i}") from None
        if not host or len(numbers) != len(gpus):
            raise InputError("expected `host CUDA_VISIBLE_DEVICES=g,... [RANKS=r,...]`, one rank per GPU",
                             field=f"line {i}")
        out += [(r, (host, g)) for r, g in zip(numbers, gpus)]
    if sorted(r for r, _ in out) != list(range(len(out))):
        raise InputError("ranks are not 0..N-1 once each", field="cuda-visible-devices")
    return [x for _, x in sorted(out)]
