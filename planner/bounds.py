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
  GPU-to-GPU transmissions (one-way gossip needs 2n-2 calls: Harary and Schwenk, 1974),
  so T >= 2(N-1)M / sum of GPU egress (and ingress); on S servers the same count among
  servers (moves inside one free) gives T >= 2(S-1)M / sum of server egress (ingress),
  each server's the max flow from its GPUs to the others' without GPU relays; also
  every element crosses every cut that splits the GPUs, both ways.
- alltoall(v): bytes each GPU and each server must send / receive over its max-flow
  egress / ingress to the other GPUs; and, up to a model size, the max-concurrent-flow
  LP (models/alltoall_flow.py), which also sees links shared beyond those cuts. Both are
  reported (cut_bound_us, flow_lp_bound_us; null when too large to solve quickly).
Latency: required data from i to j takes at least the least-latency path from i to j, so
T >= the longest such path (latency term). And the transfer carrying the last byte over the
binding cut stops flowing no earlier than the bandwidth term and then pays its path
latency, at least the shortest such path: T >= bandwidth term + shortest path latency.
All flows are computed on the data plane (topologies/dataplane.py), a relaxation of the
physical links under the routing rules the simulator applies, so the bounds hold for
every schedule the simulator accepts.
The bound is max(bandwidth term + shortest path latency, latency term).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from planner.core.collectives import Collective
from topologies.dataplane import data_plane
from topologies.flows import MBPS_PER_GBPS, FlowNetwork, min_gather_ratio
from topologies.symmetry import server_symmetry
from topologies.types import Topology


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


def gather_throughput(topo: Topology, reverse: bool = False) -> tuple[Fraction, frozenset[str]]:
    """x* (MB/s per GPU) = min over S missing a GPU of cap(out of S)/|S ∩ GPUs|, and the S.

    Dinkelbach iteration from the best single-GPU cut; each round runs one max-flow per GPU
    (super-source feeding x to every other GPU, sink v; a cut below (N-1)x names a better
    S). Exact rational arithmetic on integer capacities. O(rounds x N x max-flow).
    """
    net = FlowNetwork(topo, reverse)
    if len(net.gpus) < 2:
        return Fraction(0), frozenset()
    x, side = min_gather_ratio(net.size, net.tail, net.head, net.cap, net.gpus)
    cut = frozenset(net.node_ids[i] for i in np.flatnonzero(side))
    return x * net.unit_mbps, cut


LP_BOUND_MAX_GPUS = 128  # the throughput LP's cut generation stays within seconds up to here
LP_BOUND_MAX_ORBITS = 16  # or up to this many GPU orbits under server symmetry (1024 GPUs: 2 s)


def _switch_lp(topo: Topology, reverse: bool, root: int | None) -> float | None:
    """The throughput LP's optimum in MB/s (models/gather_lp.py): arc loads balance at
    every non-GPU node, since switches, NICs and PCIe bridges cannot copy data. None when
    the data plane has no such node or the instance is too large: more than
    LP_BOUND_MAX_GPUS GPUs, unless server symmetry leaves at most LP_BOUND_MAX_ORBITS
    orbits of them (the LP then separates cuts for one GPU per orbit; not with a root,
    which no server rotation fixes)."""
    orbits = topo.num_gpus / server_symmetry(topo).order if root is None else topo.num_gpus
    if (topo.num_gpus > LP_BOUND_MAX_GPUS and orbits > LP_BOUND_MAX_ORBITS) or \
            len(data_plane(topo).nodes) == topo.num_gpus:
        return None
    from models.gather_lp import topology_lp
    net, lp = topology_lp(topo, reverse, root)
    return lp.x * (1 + 1e-6) * net.unit_mbps  # the solver's tolerances must not overstate the bound


def _flow_mbps(net: FlowNetwork, sources: list[int], sinks: list[int], blocked: list[int] = ()) -> int:
    value, _ = net.max_flow([(s, None) for s in sources], sinks, blocked=blocked)
    return value * net.unit_mbps


def _latency_terms(need: np.ndarray, net: FlowNetwork) -> tuple[float, float]:
    """(longest, shortest) least-latency path from i to j over the pairs with need[i, j]."""
    sources = np.flatnonzero(need.any(axis=1))
    if len(sources) == 0:
        return 0.0, 0.0
    dist = net.latency_from([net.gpus[i] for i in sources])[:, net.gpus]
    rows = need[sources]
    return float(np.max(np.where(rows, dist, 0.0))), float(np.min(np.where(rows, dist, np.inf)))


def _us(nbytes: float, mbps: float) -> float:
    """Bytes over MB/s, in microseconds (1 MB/s = 1 byte/us)."""
    return float(nbytes) / float(mbps) if mbps > 0 else float("inf")


def lower_bound(coll: Collective, topo: Topology) -> Bound:
    """The best lower bound this module can prove for `coll` on `topo`."""
    n = coll.ranks
    m = coll.size
    if n < 2:
        return Bound(0.0, 0.0, 0.0, "a single GPU moves nothing")
    detail: list[tuple[str, object]] = []
    net = FlowNetwork(topo)
    need = ~np.eye(n, dtype=bool)
    if coll.kind in ("allgather", "reduce-scatter"):
        x, cut = gather_throughput(topo, reverse=coll.kind == "reduce-scatter")
        bw = _us(m / n, x)
        k = sum(1 for g in topo.gpus if g in cut)
        derivation = ("min-cut: (M/N) / min_S cap(out of S)/|S∩GPUs|" if coll.kind == "allgather"
                      else "min-cut on the reversed graph: (M/N) / min_S cap(into S)/|S∩GPUs|")
        detail += [("cut_throughput_GBps_per_gpu", float(x) / MBPS_PER_GBPS), ("cut_gpus", k),
                   ("cut_bound_us", bw)]
        lp = _switch_lp(topo, coll.kind == "reduce-scatter", None)
        if lp is not None and lp < float(x) * (1 - 1e-9):
            x = lp
            bw = _us(m / n, x)
            derivation += "; tightened by the throughput LP (switches do not copy data)"
        detail += [("optimal_throughput_GBps_per_gpu", float(x) / MBPS_PER_GBPS),
                   ("optimal_algbw_GBps", float(x) * n / MBPS_PER_GBPS)]
    elif coll.kind in ("broadcast", "reduce"):
        flows = FlowNetwork(topo, reverse=coll.kind == "reduce")
        root = flows.gpus[coll.root]
        flow = min(_flow_mbps(flows, [root], [v]) for v in flows.gpus if v != root)
        bw = _us(m, flow)
        derivation = "M / min over GPUs v of maxflow(root -> v)" + (" on the reversed graph" if coll.kind == "reduce" else "")
        detail += [("min_root_flow_GBps", flow / MBPS_PER_GBPS), ("cut_bound_us", bw)]
        lp = _switch_lp(topo, coll.kind == "reduce", coll.root)
        if lp is not None and lp < flow * (1 - 1e-9):
            bw = _us(m, lp)
            derivation += "; tightened by the throughput LP (switches do not copy data)"
            detail.append(("lp_root_rate_GBps", lp / MBPS_PER_GBPS))
        need = np.zeros((n, n), dtype=bool)
        if coll.kind == "broadcast":
            need[coll.root] = True
        else:
            need[:, coll.root] = True
        need[coll.root, coll.root] = False
    elif coll.kind == "allreduce":
        back = FlowNetwork(topo, reverse=True)
        gpus = net.gpus
        egress = sum(_flow_mbps(net, [v], [u for u in gpus if u != v], gpus) for v in gpus)
        ingress = sum(_flow_mbps(back, [v], [u for u in gpus if u != v], gpus) for v in gpus)
        gossip = _us(2 * (n - 1) * m, min(egress, ingress))
        g0 = gpus[0]
        cut = min(min(_flow_mbps(net, [g0], [v]), _flow_mbps(net, [v], [g0])) for v in gpus[1:])
        cut_us = _us(m, cut)
        bw = max(gossip, cut_us)
        derivation = ("max(2(N-1)M / total GPU egress (directed gossip, reductions at GPUs), "
                      "M / min cut splitting the GPUs")
        detail += [("gossip_term_us", gossip), ("cut_term_us", cut_us)]
        if len(topo.servers) > 1:
            # the same count with each server as one node (moves inside a server free):
            # each element crosses between servers at least 2(S-1) times
            rank = topo.rank_of
            groups = [[gpus[rank[g]] for g in members] for _, members in sorted(topo.servers.items())]
            out_of = [sum(_flow_mbps(f, grp, [g for g in gpus if g not in grp], gpus) for grp in groups)
                      for f in (net, back)]
            servers_us = _us(2 * (len(groups) - 1) * m, min(out_of))
            bw = max(bw, servers_us)
            derivation += ", 2(S-1)M / total server egress (the same gossip among S servers)"
            detail.append(("server_gossip_term_us", servers_us))
        derivation += ")"
    else:
        mat = coll.matrix
        back = FlowNetwork(topo, reverse=True)
        gpus = net.gpus
        worst = (0.0, "")
        groups = [([i], f"GPU {i}") for i in range(n)]
        if len(topo.servers) > 1:
            rank = topo.rank_of
            groups += [([rank[g] for g in members], f"server {s}") for s, members in topo.servers.items()]
        for members, name in groups:
            inside = np.zeros(n, dtype=bool)
            inside[members] = True
            outside = [gpus[j] for j in np.flatnonzero(~inside)]
            for nbytes, flows, what in ((mat[inside][:, ~inside].sum(), net, "egress"),
                                        (mat[~inside][:, inside].sum(), back, "ingress")):
                if nbytes > 0:
                    t = _us(nbytes, _flow_mbps(flows, [gpus[i] for i in members], outside, gpus))
                    if t > worst[0]:
                        worst = (t, f"{name} {what}")
        bw, binding = worst
        derivation = "max over GPUs and servers of bytes to send (receive) / max-flow egress (ingress)"
        from models.alltoall_flow import concurrent_flow_bound
        flow = concurrent_flow_bound(coll, topo)
        detail += [("cut_bound_us", bw), ("flow_lp_bound_us", flow)]
        if flow is not None and flow > bw * (1 + 1e-9):
            bw, binding = flow, "max-concurrent-flow LP"
            derivation += "; tightened by the max-concurrent-flow LP (links shared beyond single cuts)"
        detail.append(("binding", binding))
        need = mat > 0
    lat, shortest = _latency_terms(need, net)
    detail.append(("min_path_latency_us", shortest))
    return Bound(max(bw + shortest, lat), bw, lat, derivation, tuple(detail))


def quality_metrics(coll: Collective, time_us: float, bound_us: float) -> dict:
    """The contract's time figures: time, algbw (SIZE / time), bound, ratio to bound."""
    return {"time_us": time_us, "algbw_GBps": coll.size / time_us / 1e3 if time_us > 0 else 0.0,
            "lower_bound_us": bound_us, "ratio_to_bound": time_us / bound_us if bound_us > 0 else 1.0}
