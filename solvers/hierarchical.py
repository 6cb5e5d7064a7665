"""Hierarchical collectives on servers of equal size (the NCCL "2D" baseline).

allreduce = intra-server reduce-scatter of slices, inter-server allreduce of each slice
among the GPUs with the same local index (one rail each), intra-server allgather.
allgather = inter-server allgather among same-index GPUs, then intra-server allgather of
what each gathered; reduce-scatter is the mirror image. Every pass is a ring.
alltoall(v) = intra-server gather of each GPU's blocks onto the GPU that owns the NIC of
the destination's rail (local index of the destination), then the exchange over that
rail, which lands on the destination itself (the scatter step is empty on a
rail-optimized cluster); traffic inside a server goes directly.
"""
from __future__ import annotations

from planner.core.collectives import Collective
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers.baselines import _best_cycle, _hop_widths, ring_phase
from topologies.routing import Router
from topologies.types import Topology


def hierarchical_applies(topo: Topology) -> str | None:
    """None, or why the hierarchical schedules cannot run on `topo`."""
    sizes = {len(g) for g in topo.servers.values()}
    if len(topo.servers) < 2 or len(sizes) != 1:
        return "the hierarchical method needs two or more servers with equal GPU counts"
    return None


def hierarchical(collective: Collective, topo: Topology, router: Router | None = None) -> Schedule:
    """Three ring passes (two for allgather / reduce-scatter). O(N^2 / k + N x k) transfers."""
    if collective.kind in ("alltoall", "alltoallv"):
        return hierarchical_alltoall(collective, topo)
    if collective.kind not in ("allgather", "reduce-scatter", "allreduce"):
        raise ValueError(f"the hierarchical method does not do {collective.kind}")
    reason = hierarchical_applies(topo)
    if reason:
        raise ValueError(reason)
    servers = list(topo.servers.values())
    sizes = {len(g) for g in servers}
    router = router or Router(topo)
    k, n_servers = sizes.pop(), len(servers)
    rank = topo.rank_of
    local = _best_cycle(_hop_widths(topo, router, servers[0]))  # intra-server ring order by local index
    intra = [[rank[gpus[j]] for j in local] for gpus in servers]  # per server, ranks in ring order
    inter = [[rank[gpus[j]] for gpus in servers] for j in range(k)]  # per local index, across servers
    n = collective.ranks
    chunks = tuple(Chunk(b, 0.0, 1.0) for b in range(n))
    transfers = []
    step = 0
    if collective.kind == "allreduce":
        # slice j = blocks j*S .. j*S+S-1; block j*S+s is owned by server s in the inter pass
        slices = [list(range(j * n_servers, (j + 1) * n_servers)) for j in range(k)]
        for s, order in enumerate(intra):
            transfers += ring_phase(order, [slices[j] for j in local], step, reduce=True, channel=0)
        step += k - 1
        for j in range(k):
            units = [[slices[j][s]] for s in range(n_servers)]
            transfers += ring_phase(inter[j], units, step, reduce=True, channel=1)
            transfers += ring_phase(inter[j], units, step + n_servers - 1, reduce=False, channel=1)
        step += 2 * (n_servers - 1)
        for s, order in enumerate(intra):
            transfers += ring_phase(order, [slices[j] for j in local], step, reduce=False, channel=0)
    else:
        # bundle j = the blocks of the GPUs with local index j (their inter-server ring)
        bundles = [[rank[gpus[j]] for gpus in servers] for j in range(k)]
        # rings of different servers (or local indices) never share a connection: 2 channels do
        inter_pass = [(inter[j], [[b] for b in bundles[j]], 1) for j in range(k)]
        intra_pass = [(order, [bundles[j] for j in local], 0) for order in intra]
        passes = ([(inter_pass, n_servers), (intra_pass, k)] if collective.kind == "allgather"
                  else [(intra_pass, k), (inter_pass, n_servers)])
        for group, length in passes:
            for order, units, channel in group:
                transfers += ring_phase(order, units, step, reduce=collective.kind == "reduce-scatter",
                                        channel=channel)
            step += length - 1
    return Schedule(collective, chunks, tuple(transfers), algorithm="hierarchical",
                    params=(("servers", n_servers), ("gpus_per_server", k)))


def hierarchical_alltoall(collective: Collective, topo: Topology) -> Schedule:
    """Gather by destination rail over NVLink / xGMI (step 0), exchange over the rails
    (step 1); whole blocks. O(N^2) transfers."""
    reason = hierarchical_applies(topo)
    if reason:
        raise ValueError(reason)
    servers = list(topo.servers.values())
    rank = topo.rank_of
    members = [[rank[g] for g in gpus] for gpus in servers]
    where = {r: (s, l) for s, rs in enumerate(members) for l, r in enumerate(rs)}
    index = collective.block_index
    n = collective.ranks
    chunks, transfers = [], []
    for i in range(n):
        for j in range(n):
            b = index.get(f"b{i}-{j}")
            if b is None:
                continue
            chunks.append(Chunk(b, 0.0, 1.0))
            c = len(chunks) - 1
            (si, _), (sj, lj) = where[i], where[j]
            relay = members[si][lj]  # the GPU of i's server on j's rail
            if si == sj:
                transfers.append(Transfer(c, i, j, 0))
                continue
            if relay != i:
                transfers.append(Transfer(c, i, relay, 0))
            transfers.append(Transfer(c, relay, j, 1))
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="hierarchical",
                    params=(("servers", len(servers)), ("gpus_per_server", len(servers[0]))))
