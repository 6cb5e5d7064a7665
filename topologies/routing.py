"""Routes between GPUs: least latency, then fewest hops, then widest bottleneck, then
rail affinity (NIC/rail with an end GPU's local index, as NCCL pairs GPU i with NIC i),
then node order.

Routes are found on the data plane (dataplane.py: no network inside a lone server, no
GPU-to-GPU traffic over PCIe/CPU where a scale-up fabric joins the GPUs) and returned as
physical node sequences. Intermediate nodes are switches and NICs; a route forwards
through a GPU only when no other route exists (direct topologies such as rings and tori,
or GPUs of a cube-mesh without a direct link).
"""
from __future__ import annotations

import heapq
import re

from planner.core.errors import InputError
from topologies.dataplane import data_plane, physical_id
from topologies.types import Topology

_TRAILING_INT = re.compile(r"([0-9]+)$")


def _trailing_int(node_id: str) -> int:
    m = _TRAILING_INT.search(node_id)
    return int(m.group(1)) if m else -1


class Router:
    """Routes with per-source search memoised: O(E log V) per source, O(path) per route."""

    def __init__(self, topo: Topology):
        self.physical = topo
        self.topo = data_plane(topo)
        self._order = {n.id: i for i, n in enumerate(self.topo.nodes)}
        self._is_gpu = {n.id: n.type == "gpu" for n in self.topo.nodes}
        self._index = {n.id: _trailing_int(physical_id(n.id)) for n in self.topo.nodes if n.type != "gpu"}
        self._memo: dict[tuple[str, bool, int | None], tuple[dict, dict]] = {}
        self._members: dict[int, set[str]] = {}
        self._routes: dict[tuple[str, str], tuple[str, ...]] = {}

    def route(self, src: str, dst: str) -> tuple[str, ...]:
        """Physical node sequence from `src` to `dst` (both included). Memoised per pair."""
        key = (src, dst)
        if key not in self._routes:
            self._routes[key] = self._route(src, dst)
        return self._routes[key]

    def figures(self, src: str, dst: str) -> tuple[float, float]:
        """(bottleneck bandwidth GB/s, total latency us) of the route from `src` to `dst`."""
        path = self.route(src, dst)
        links = [self.physical.link(u, v) for u, v in zip(path, path[1:])]
        return min(l.bandwidth for l in links), sum(l.latency for l in links)

    def _route(self, src: str, dst: str) -> tuple[str, ...]:
        server = self.physical.server_of_gpu.get(src)
        attempts = [(False, None), (True, None)]
        if len(self.physical.servers) > 1 and server == self.physical.server_of_gpu.get(dst):
            # Two GPUs of one server talk inside it, forwarded by GPUs if need be, before
            # their traffic may leave through a NIC and come back.
            attempts = [(False, server), (True, server)] + attempts
        for through_gpus, confine in attempts:
            key = (src, through_gpus, confine)
            if key not in self._memo:
                self._memo[key] = self._widest_shortest(src, through_gpus, confine)
            width, parents = self._memo[key]
            if dst in width:
                return tuple(physical_id(v) for v in self._walk_back(src, dst, width, parents))
        raise InputError(f"no route from {src!r} to {dst!r}", source=self.topo.name, field="links")

    def _inside(self, server: int) -> set[str]:
        if server not in self._members:
            gpus = set(self.physical.servers[server])
            self._members[server] = gpus | {n.id for n in self.topo.nodes
                                            if n.type == "switch" and n.server == server}
        return self._members[server]

    def _walk_back(self, src: str, dst: str, width: dict, parents: dict) -> list[str]:
        """From `dst` back to `src` on tight edges keeping the widest bottleneck; at each
        choice prefer a NIC or rail switch with the local index of either end GPU (NCCL pairs
        GPU i with NIC i, on rail i), then node order."""
        need = width[dst]
        ends = {_trailing_int(src), _trailing_int(dst)}
        path = [dst]
        while path[-1] != src:
            options = [(self._index.get(u, -1) in ends, -self._order[u], u)
                       for u, bw in parents[path[-1]] if min(width[u], bw) >= need]
            path.append(max(options)[2])
        return path[::-1]

    def _widest_shortest(self, src: str, through_gpus: bool, confine: int | None = None) -> tuple[dict, dict]:
        """Dijkstra on (latency, hops), then the widest bottleneck on the tight-edge DAG;
        with `confine`, only through the GPUs and switches of that server.

        Returns (width to each reached node, its tight in-edges). O(E log V).
        """
        out = self.topo.out_links
        allowed = self._inside(confine) if confine is not None else None
        dist: dict[str, tuple[float, int]] = {src: (0.0, 0)}
        settled: list[str] = []
        heap = [((0.0, 0), self._order[src], src)]
        done: set[str] = set()
        while heap:
            d, _, u = heapq.heappop(heap)
            if u in done:
                continue
            done.add(u)
            settled.append(u)
            if u != src and self._is_gpu[u] and not through_gpus:
                continue  # a GPU ends a route; it does not forward
            for link in out[u]:
                if allowed is not None and link.dst not in allowed:
                    continue
                nd = (d[0] + link.latency, d[1] + 1)
                if link.dst not in dist or nd < dist[link.dst]:
                    dist[link.dst] = nd
                    heapq.heappush(heap, (nd, self._order[link.dst], link.dst))
        width = {src: float("inf")}
        parents: dict[str, list[tuple[str, float]]] = {}
        for v in settled[1:]:
            tight = []
            for link in self.topo.in_links[v]:
                u = link.src
                if u not in width or (u != src and self._is_gpu[u] and not through_gpus):
                    continue
                du = dist[u]
                if abs(du[0] + link.latency - dist[v][0]) <= 1e-9 and du[1] + 1 == dist[v][1]:
                    tight.append((u, link.bandwidth))
            parents[v] = tight
            width[v] = max(min(width[u], bw) for u, bw in tight)
        return width, parents
