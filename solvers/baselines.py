"""Baseline collective schedules: NCCL-style rings and direct all-to-all.

These are the yardsticks the optimized methods are measured against. They are built as
ordinary `Schedule`s, so the simulator checks and times them like any other.
"""
from __future__ import annotations

from planner.core.collectives import Collective
from planner.core.schedule import Chunk, Schedule, Transfer
from topologies.dataplane import HOST_KINDS, data_plane
from topologies.routing import Router
from topologies.types import Topology

_EXACT_RING_SEARCH_LIMIT = 16  # GPUs per server up to which the best cycle is searched exactly
# Transfers a baseline may emit: beyond this, channels / pipeline parts are reduced so the
# schedule stays small enough to verify and simulate in well under a minute.
TRANSFER_BUDGET = 2_500_000


def _hop_widths(topo: Topology, router: Router, gpus: tuple[str, ...]) -> list[list[float]]:
    """Bottleneck bandwidth of the route between each pair; 0 when another GPU forwards it."""
    gpu_set = set(topo.gpus)
    k = len(gpus)
    w = [[0.0] * k for _ in range(k)]
    for i, a in enumerate(gpus):
        for j, b in enumerate(gpus):
            if i != j:
                if not any(p in gpu_set for p in router.route(a, b)[1:-1]):
                    w[i][j] = router.figures(a, b)[0]
    return w


def _best_cycle(w: list[list[float]], start: int = 0, avoid_last: frozenset[int] = frozenset()) -> list[int]:
    """A Hamiltonian cycle from `start` maximising its narrowest hop, whose last node
    (the hop back to `start` is the cycle's closing hop) is not in `avoid_last` if possible.

    Depth-first search with pruning per candidate threshold (widest first), under a node
    budget; rank order from `start` when the search gives up or k exceeds the limit.
    """
    k = len(w)
    fallback = [(start + i) % k for i in range(k)]
    if k <= 2 or k > _EXACT_RING_SEARCH_LIMIT:
        return fallback
    thresholds = sorted({w[i][j] for i in range(k) for j in range(k) if i != j and w[i][j] > 0}, reverse=True)
    for avoid in ((avoid_last, frozenset()) if avoid_last else (frozenset(),)):
        for threshold in thresholds:
            order, used, budget = [start], {start}, [20_000]

            def dfs() -> bool:
                budget[0] -= 1
                if budget[0] < 0:
                    return False
                if len(order) == k:
                    return w[order[-1]][start] >= threshold and order[-1] not in avoid
                for j in range(k):
                    if j not in used and w[order[-1]][j] >= threshold:
                        used.add(j)
                        order.append(j)
                        if dfs():
                            return True
                        order.pop()
                        used.discard(j)
                return False

            if dfs():
                return order
    return fallback


def ring_orders(topo: Topology, channels: int, router: Router | None = None) -> list[list[int]]:
    """One ring (list of ranks) per channel.

    Inside each server, channel c runs a widest-bottleneck Hamiltonian path from local
    GPU c, with the hops earlier channels took discounted (width / (1 + times used)) so
    channels spread over distinct links of direct topologies (cube-mesh, xGMI). On several
    servers the path must end on a GPU no earlier channel leaves from, so every channel
    leaves a server through a different GPU (and NIC) and enters the next at local GPU c.
    """
    router = router or Router(topo)
    servers = list(topo.servers.values())
    multi = len(servers) > 1
    widths = [_hop_widths(topo, router, gpus) for gpus in servers]
    uses: list[dict[tuple[int, int], int]] = [{} for _ in servers]
    exits: list[set[int]] = [set() for _ in servers]
    rank = topo.rank_of
    rings = []
    for c in range(channels):
        order = []
        for s, gpus in enumerate(servers):
            k = len(gpus)
            w, used = widths[s], uses[s]
            eff = [[w[i][j] / (1 + used.get((i, j), 0)) for j in range(k)] for i in range(k)]
            local = _best_cycle(eff, c % k, frozenset(exits[s]) if multi else frozenset())
            hops = list(zip(local, local[1:])) + ([] if multi else [(local[-1], local[0])])
            for hop in hops:
                used[hop] = used.get(hop, 0) + 1
            exits[s].add(local[-1])
            order += [rank[gpus[i]] for i in local]
        rings.append(order)
    return rings


def default_channels(topo: Topology) -> int:
    """Multi-server: one channel per NIC of a server, so every rail is busy. One server:
    one per distinct scale-up neighbour of a GPU (1 behind an NVSwitch, 7 on MI300X's
    full xGMI mesh), so direct topologies use all their links."""
    if len(topo.servers) > 1:
        per_server = [sum(1 for n in topo.nodes if n.type == "nic" and n.server == s) for s in topo.servers]
        return max(1, min(per_server))
    plane = data_plane(topo)
    degree = [len({l.dst for l in plane.out_links[g] if plane.node_by_id[l.dst].kind not in HOST_KINDS})
              for g in plane.gpus]
    return max(1, max(degree, default=1))


def ring(collective: Collective, topo: Topology, channels: int | None = None,
         router: Router | None = None) -> Schedule:
    """Ring allgather / reduce-scatter / allreduce over `channels` rotated rings.

    Every block is cut into one chunk per channel; channel c moves part c of every block.
    Allreduce is reduce-scatter followed by allgather on the same rings. O(C x N^2) transfers.
    """
    if collective.kind not in ("allgather", "reduce-scatter", "allreduce"):
        raise ValueError(f"the ring method does not do {collective.kind}")
    n = collective.ranks
    requested = channels or default_channels(topo)
    if requested < 1:
        raise ValueError("channels must be >= 1")
    phases = 2 if collective.kind == "allreduce" else 1
    channels = max(1, min(requested, TRANSFER_BUDGET // max(1, phases * n * (n - 1))))
    rings = ring_orders(topo, channels, router)
    chunks = tuple(Chunk(b, c / channels, (c + 1) / channels) for b in range(n) for c in range(channels))
    transfers: list[Transfer] = []
    do_rs = collective.kind in ("reduce-scatter", "allreduce")
    do_ag = collective.kind in ("allgather", "allreduce")
    for c, order in enumerate(rings):
        # position i's unit: part c of the block of the rank at position i
        units = [[order[i] * channels + c] for i in range(n)]
        if do_rs:
            transfers += ring_phase(order, units, 0, reduce=True, channel=c)
        if do_ag:
            transfers += ring_phase(order, units, n - 1 if do_rs else 0, reduce=False, channel=c)
    params = (("channels", channels),) + ((("channels_reduced_from", requested),) if channels < requested else ())
    return Schedule(collective, chunks, tuple(transfers), algorithm="ring", params=params)


def ring_phase(order: list[int], units: list[list[int]], first_step: int, reduce: bool,
               channel: int = 0) -> list[Transfer]:
    """One ring pass over the ranks in `order` (k-1 steps from `first_step`).

    `units[q]` are the chunks that belong to ring position q. Reduce-scatter (`reduce`):
    position q's unit ends at position q combined over the ring; allgather: position q's
    unit starts at q and ends everywhere. O(k^2 x unit size) transfers.
    """
    k = len(order)
    out = []
    for t in range(k - 1):
        for i in range(k):
            for chunk in units[(i - t - (1 if reduce else 0)) % k]:
                out.append(Transfer(chunk, order[i], order[(i + 1) % k], first_step + t, reduce=reduce,
                                    channel=channel))
    return out


def direct_alltoall(collective: Collective, topo: Topology) -> Schedule:
    """Every GPU sends each peer its block at once, on the default route. O(N^2) transfers."""
    if collective.kind not in ("alltoall", "alltoallv"):
        raise ValueError(f"the direct method does not do {collective.kind}")
    chunks = tuple(Chunk(b, 0.0, 1.0) for b in range(len(collective.blocks)))
    transfers = []
    for b, block in enumerate(collective.blocks):
        (src, _), = block.initial
        (dst, _), = block.required
        transfers.append(Transfer(b, src, dst, 0))
    return Schedule(collective, chunks, tuple(transfers), algorithm="direct")


def spreadout_alltoall(collective: Collective, topo: Topology) -> Schedule:
    """SpreadOut: N - 1 shifted permutations; in stage k rank i sends to rank i + k, after
    its stage k - 1 send is done (explicit deps), so every GPU sends to one peer and
    receives from one at a time. O(N^2) transfers."""
    if collective.kind not in ("alltoall", "alltoallv"):
        raise ValueError(f"the spreadout method does not do {collective.kind}")
    n = collective.ranks
    index = collective.block_index
    chunks, transfers, last = [], [], [None] * n
    for k in range(1, n):
        for i in range(n):
            b = index.get(f"b{i}-{(i + k) % n}")
            if b is None:  # alltoallv: nothing for that peer
                continue
            chunks.append(Chunk(b, 0.0, 1.0))
            deps = () if last[i] is None else (last[i],)
            last[i] = len(transfers)
            transfers.append(Transfer(len(chunks) - 1, i, (i + k) % n, k - 1, deps=deps))
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="spreadout")


def chain(collective: Collective, topo: Topology, channels: int | None = None, parts: int | None = None,
          router: Router | None = None) -> Schedule:
    """Pipelined chain broadcast / reduce along each channel's ring, rotated to the root.

    Each channel carries 1/C of the buffer in `parts` pipelined chunks; chunk p crosses
    hop h in step p + h (broadcast: root first; reduce: towards the root, combining).
    `parts` defaults to the alpha-beta optimum sqrt((N-2) x chunk time / hop latency),
    clamped to [1, 64]. O(C x parts x N) transfers.
    """
    if collective.kind not in ("broadcast", "reduce"):
        raise ValueError(f"the chain method does not do {collective.kind}")
    n = collective.ranks
    router = router or Router(topo)
    channels = channels or default_channels(topo)
    rings = ring_orders(topo, channels, router)
    chains = []
    for order in rings:
        k = order.index(collective.root)
        chains.append(order[k:] + order[:k])
    if parts is None:
        parts = _pipeline_parts(collective.size / channels, n, chains[0], topo, router)
        parts = max(1, min(parts, TRANSFER_BUDGET // max(1, channels * (n - 1))))
    total = channels * parts
    chunks = tuple(Chunk(0, i / total, (i + 1) / total) for i in range(total))
    transfers = []
    for c, line in enumerate(chains):
        for p in range(parts):
            for h in range(n - 1):
                if collective.kind == "broadcast":
                    src, dst = line[h], line[h + 1]
                else:
                    src, dst = line[n - 1 - h], line[n - 2 - h]
                transfers.append(Transfer(c * parts + p, src, dst, p + h, reduce=collective.kind == "reduce",
                                          channel=c))
    return Schedule(collective, chunks, tuple(transfers), algorithm="chain",
                    params=(("channels", channels), ("parts", parts)))


def _pipeline_parts(channel_bytes: float, n: int, line: list[int], topo: Topology, router: Router) -> int:
    if n <= 2:
        return 1
    gpus = topo.gpus
    widths, latencies = zip(*(router.figures(gpus[a], gpus[b]) for a, b in zip(line, line[1:])))
    alpha = max(0.1, sum(latencies) / len(latencies))
    whole_us = channel_bytes / (min(widths) * 1e3)
    return max(1, min(64, round(((n - 2) * whole_us / alpha) ** 0.5)))
