"""Summary figures of a topology: per-GPU bandwidths and bisection bandwidth."""
from __future__ import annotations

import networkx as nx

from topologies.flows import MBPS_PER_GBPS, FlowNetwork
from topologies.types import Topology


def server_members(topo: Topology, server: int) -> set[str]:
    """Node ids inside `server`: its GPUs and the switches/NICs tagged with it."""
    members = set(topo.servers[server])
    members.update(n.id for n in topo.nodes if n.type != "gpu" and n.server == server)
    return members


def gpu_bandwidths(topo: Topology) -> list[dict]:
    """Per GPU: out-bandwidth by link kind, total injection, and network egress (GB/s).

    `network_GBps`: max flow from the GPU alone to everything outside its server, other
    GPUs not forwarding (so a NIC slower than its PCIe link is what counts).
    `network_share_GBps`: the server's whole egress (max flow from all its GPUs) divided by
    its GPU count — the figure for collectives where every GPU sends at once.
    Everything outside is contracted into the sink (a flow only needs its first exit), so
    each max flow runs on one server's graph.
    """
    rows = []
    graphs: dict[int, nx.DiGraph] = {}
    share: dict[int, float] = {}
    for gpu in topo.gpus:
        server = topo.server_of_gpu[gpu]
        if server not in graphs:
            inside = server_members(topo, server)
            g = nx.DiGraph()
            g.add_nodes_from(inside)
            g.add_node("__outside__")
            for node in inside:
                for l in topo.out_links[node]:
                    dst = l.dst if l.dst in inside else "__outside__"
                    cap = g.edges[node, dst]["capacity"] + l.bandwidth if g.has_edge(node, dst) else l.bandwidth
                    g.add_edge(node, dst, capacity=cap)
            graphs[server] = g
        g = graphs[server]
        if g.in_degree("__outside__"):
            alone = g.copy()
            alone.remove_nodes_from([o for o in topo.servers[server] if o != gpu])
            network = float(nx.maximum_flow_value(alone, gpu, "__outside__"))
            if server not in share:
                whole = g.copy()
                for o in topo.servers[server]:
                    whole.add_edge("__inside__", o)
                share[server] = float(nx.maximum_flow_value(whole, "__inside__", "__outside__")) / len(topo.servers[server])
        else:
            network = 0.0
            share[server] = 0.0
        by_kind: dict[str, float] = {}
        for l in topo.out_links[gpu]:
            k = l.kind or "link"
            by_kind[k] = by_kind.get(k, 0.0) + l.bandwidth
        rows.append({"gpu": gpu, "rank": topo.rank_of[gpu], "server": server,
                     "injection_GBps": round(sum(by_kind.values()), 6),
                     "by_kind_GBps": {k: round(v, 6) for k, v in sorted(by_kind.items())},
                     "network_GBps": round(network, 6),
                     "network_share_GBps": round(share[server], 6)})
    return rows


def bisection_bandwidth(topo: Topology) -> dict:
    """Min over standard splits of the GPU set into halves of the max flow across (GB/s),
    on the data plane (the paths collectives may use, as the bounds see them).

    Splits tried: servers in halves (first/second), and ranks in halves. The true
    bisection (min over all balanced splits) is NP-hard in general; this is an upper
    estimate of it and exact on the symmetric presets.
    """
    gpus = list(topo.gpus)
    if len(gpus) < 2:
        return {"GBps": 0.0, "split": "none"}
    net = FlowNetwork(topo)
    index = dict(zip(topo.gpus, net.gpus))
    splits = []
    servers = list(topo.servers.values())
    if len(servers) >= 2:
        half = len(servers) // 2
        splits.append(("servers", [g for s in servers[:half] for g in s], [g for s in servers[half:] for g in s]))
    half = len(gpus) // 2
    splits.append(("ranks", gpus[:half], gpus[half:]))
    best = None
    for name, a, b in splits:
        one_way = [net.max_flow([(index[g], None) for g in x], [index[g] for g in y])[0] for x, y in ((a, b), (b, a))]
        value = min(one_way) * net.unit_mbps / MBPS_PER_GBPS
        if best is None or value < best[0]:
            best = (value, name)
    return {"GBps": round(best[0], 6), "split": best[1]}
