"""Lower bounds on collective completion time, from cuts and flows.

Bandwidth terms (exact integer max-flow arithmetic; capacities in MB/s, rounded up):
- allgather: every GPU outside a node set S needs the data of the GPUs inside, so at
  least |S ∩ GPUs| * M/N bytes leave S: T >= (M/N) / x* with x* = min over S (missing
  some GPU) of cap(out of S) / |S ∩ GPUs|. x* is found exactly by Dinkelbach's method
  over max-flow tests: for each GPU v, a super-source feeding x to every other GPU
  must push (N-1)x into v.
- reduce-scatter: the same on the reversed graph.
- broadcast / reduce: M over the min root-to-GPU (GPU-to-root) max flow.
- allreduce, combining data at GPUs only: each element needs at least 2(N-1)
  GPU-to-GPU transmissions (directed gossip), so T >= 2(N-1)M / sum of GPU egress (and
  ingress); also every element crosses every cut that splits the GPUs, both ways.
- alltoall(v): bytes each GPU and each server must send / receive over its max-flow
  egress / ingress to the other GPUs.
Latency term: the longest shortest-latency path any required data must travel.
All flows are computed on the data plane (topologies/dataplane.py), a relaxation of the
physical links under the routing rules the simulator applies, so the bounds hold for
every schedule the simulator accepts.
The bound is max(bandwidth term, latency term).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx

from planner.collectives import Collective
from topologies.dataplane import data_plane
from topologies.types import Topology

SCALE = 1000  # capacities in MB/s, integers


@dataclass(frozen=True)
class Bound:
    time_us: float
    bandwidth_us: float
    latency_us: float
    derivation: str
    detail: tuple[tuple[str, object], ...] = ()

    def to_json(self) -> dict:
        out = {"lower_bound_us": self.time_us, "bandwidth_term_us": self.bandwidth_us,
               "latency_term_us": self.latency_us, "derivation": self.derivation}
        out.update(dict(self.detail))
        return out


def _graph(topo: Topology, reverse: bool = False) -> nx.DiGraph:
    topo = data_plane(topo)
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in topo.nodes)
    for l in topo.links:
        # Rounded up to whole MB/s (after dropping float noise): rounding down would
        # understate a link and let the bound exceed what a schedule achieves.
        cap = math.ceil(round(l.bandwidth * SCALE, 6))
        a, b = (l.dst, l.src) if reverse else (l.src, l.dst)
        g.add_edge(a, b, capacity=cap)
    return g


def _cut_capacity(g: nx.DiGraph, s_side: set[str]) -> int:
    return sum(d["capacity"] for u, v, d in g.edges(data=True) if u in s_side and v not in s_side)


def gather_throughput(topo: Topology, reverse: bool = False) -> tuple[Fraction, frozenset[str]]:
    """x* (MB/s per GPU) = min over S missing a GPU of cap(out of S)/|S ∩ GPUs|, and the S.

    Dinkelbach iteration; each round runs one max-flow per GPU. Exact (rational).
    """
    g = _graph(topo, reverse)
    gpus = list(topo.gpus)
    n = len(gpus)
    if n < 2:
        return Fraction(0), frozenset()
    all_nodes = set(g.nodes)
    best_v = min(gpus, key=lambda v: sum(d["capacity"] for _, _, d in g.in_edges(v, data=True)))
    best_set = frozenset(all_nodes - {best_v})
    x = Fraction(_cut_capacity(g, set(best_set)), n - 1)
    while True:
        p, q = x.numerator, x.denominator
        h = nx.DiGraph()
        h.add_nodes_from(g.nodes)
        h.add_edges_from((u, v, {"capacity": d["capacity"] * q}) for u, v, d in g.edges(data=True))
        improved = None
        for v in gpus:
            hv = h.copy()
            for u in gpus:
                if u != v:
                    hv.add_edge("__src__", u, capacity=p)
            value, (side, _) = nx.minimum_cut(hv, "__src__", v)
            if value < p * (n - 1):
                s_side = set(side) - {"__src__"}
                k = sum(1 for u in gpus if u in s_side)
                ratio = Fraction(_cut_capacity(g, s_side), k)
                if improved is None or ratio < improved[0]:
                    improved = (ratio, frozenset(s_side))
        if improved is None or improved[0] >= x:
            return x, best_set
        x, best_set = improved


def _max_flow(g: nx.DiGraph, sources: list[str], sinks: list[str], blocked: set[str] = frozenset()) -> int:
    """Max flow from a node set to another; nodes in `blocked` do not forward."""
    h = g.copy()
    h.remove_edges_from([(u, v) for u, v in g.edges() if u in blocked and u not in sources])
    for s in sources:
        h.add_edge("__src__", s)
    for t in sinks:
        h.add_edge(t, "__dst__")
    return int(nx.maximum_flow_value(h, "__src__", "__dst__"))


def _latency_term(topo: Topology, pairs: list[tuple[int, int]]) -> float:
    if not pairs:
        return 0.0
    g = nx.DiGraph()
    for l in data_plane(topo).links:
        g.add_edge(l.src, l.dst, latency=l.latency)
    gpus = topo.gpus
    worst = 0.0
    by_src: dict[int, list[int]] = {}
    for a, b in pairs:
        by_src.setdefault(a, []).append(b)
    for a, targets in by_src.items():
        dist = nx.single_source_dijkstra_path_length(g, gpus[a], weight="latency")
        worst = max(worst, max(dist[gpus[b]] for b in targets))
    return worst


def _us(nbytes: float, mbps: float) -> float:
    """Bytes over MB/s, in microseconds (1 MB/s = 1 byte/us)."""
    return float(nbytes) / float(mbps) if mbps > 0 else float("inf")


def lower_bound(coll: Collective, topo: Topology) -> Bound:
    """The best lower bound this module can prove for `coll` on `topo`."""
    n = coll.ranks
    m = coll.size
    all_pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    detail: list[tuple[str, object]] = []
    if n < 2:
        return Bound(0.0, 0.0, 0.0, "a single GPU moves nothing")
    if coll.kind in ("allgather", "reduce-scatter"):
        x, cut = gather_throughput(topo, reverse=coll.kind == "reduce-scatter")
        bw = _us(m / n, x)
        k = sum(1 for g in topo.gpus if g in cut)
        derivation = ("min-cut: (M/N) / min_S cap(out of S)/|S∩GPUs|" if coll.kind == "allgather"
                      else "min-cut on the reversed graph: (M/N) / min_S cap(into S)/|S∩GPUs|")
        detail += [("optimal_throughput_GBps_per_gpu", float(x) / SCALE),
                   ("optimal_algbw_GBps", float(x) * n / SCALE), ("cut_gpus", k)]
        pairs = all_pairs
    elif coll.kind in ("broadcast", "reduce"):
        g = _graph(topo, reverse=coll.kind == "reduce")
        root = topo.gpus[coll.root]
        flow = min(_max_flow(g, [root], [v]) for v in topo.gpus if v != root)
        bw = _us(m, flow)
        derivation = "M / min over GPUs v of maxflow(root -> v)" + (" on the reversed graph" if coll.kind == "reduce" else "")
        detail.append(("min_root_flow_GBps", flow / SCALE))
        pairs = ([(coll.root, b) for b in range(n) if b != coll.root] if coll.kind == "broadcast"
                 else [(a, coll.root) for a in range(n) if a != coll.root])
    elif coll.kind == "allreduce":
        g = _graph(topo)
        gr = _graph(topo, reverse=True)
        gpus = list(topo.gpus)
        others = {v: [u for u in gpus if u != v] for v in gpus}
        egress = sum(_max_flow(g, [v], others[v], set(gpus)) for v in gpus)
        ingress = sum(_max_flow(gr, [v], others[v], set(gpus)) for v in gpus)
        gossip = _us(2 * (n - 1) * m, min(egress, ingress))
        g0 = gpus[0]
        cut = min(min(_max_flow(g, [g0], [v]), _max_flow(g, [v], [g0])) for v in gpus[1:])
        cut_us = _us(m, cut)
        bw = max(gossip, cut_us)
        derivation = ("max(2(N-1)M / total GPU egress (directed gossip, reductions at GPUs), "
                      "M / min cut splitting the GPUs)")
        detail += [("gossip_term_us", gossip), ("cut_term_us", cut_us)]
        pairs = all_pairs
    else:
        mat = coll.matrix()
        g = _graph(topo)
        gr = _graph(topo, reverse=True)
        gpus = list(topo.gpus)
        blocked = set(gpus)
        worst = (0.0, "")
        for i, v in enumerate(gpus):
            others = [u for u in gpus if u != v]
            out_bytes = sum(mat[i])
            in_bytes = sum(mat[j][i] for j in range(n))
            for nbytes, graph, what in ((out_bytes, g, "egress"), (in_bytes, gr, "ingress")):
                if nbytes > 0:
                    t = _us(nbytes, _max_flow(graph, [v], others, blocked))
                    if t > worst[0]:
                        worst = (t, f"GPU {i} {what}")
        servers = list(topo.servers.values())
        if len(servers) > 1:
            rank = topo.rank_of
            for s, members in enumerate(servers):
                inside = {rank[u] for u in members}
                outside_gpus = [u for u in gpus if rank[u] not in inside]
                out_bytes = sum(mat[i][j] for i in inside for j in range(n) if j not in inside)
                in_bytes = sum(mat[j][i] for i in inside for j in range(n) if j not in inside)
                for nbytes, graph, what in ((out_bytes, g, "egress"), (in_bytes, gr, "ingress")):
                    if nbytes > 0:
                        t = _us(nbytes, _max_flow(graph, list(members), outside_gpus, blocked))
                        if t > worst[0]:
                            worst = (t, f"server {s} {what}")
        bw = worst[0]
        derivation = "max over GPUs and servers of bytes to send (receive) / max-flow egress (ingress)"
        detail.append(("binding", worst[1]))
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and mat[i][j] > 0]
    lat = _latency_term(topo, pairs)
    return Bound(max(bw, lat), bw, lat, derivation, tuple(detail))
