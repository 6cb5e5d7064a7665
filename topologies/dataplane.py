"""The data plane: which paths collective traffic may take, as a derived topology.

Two rules, both what NCCL-family runtimes do:
1. A topology with a single server has no use for its network: NICs and everything
   outside the server are dropped.
2. In a server whose GPUs are connected to each other without the host fabric (NVLink,
   NVSwitch, xGMI), GPU-to-GPU traffic does not cross PCIe switches or CPUs. Each host
   node (kind `pcie` or `cpu`) is split into an `^up` copy (GPU -> NIC direction) and a
   `^down` copy (NIC -> GPU direction), so a host path can join a GPU to a NIC but never a
   GPU to a GPU.
Split copies keep the capacity of the physical link each, so flows on the data plane
are a relaxation of the physical ones: bounds computed on it stay valid. The router
maps data-plane paths back to physical nodes; the simulator charges physical links.
"""
from __future__ import annotations

import networkx as nx

from topologies.types import Link, Node, Topology, build_topology

HOST_KINDS = ("pcie", "cpu")
UP, DOWN = "^up", "^down"


def physical_id(node_id: str) -> str:
    for suffix in (UP, DOWN):
        if node_id.endswith(suffix):
            return node_id[: -len(suffix)]
    return node_id


def _scale_up_connected(topo: Topology, server: int) -> bool:
    gpus = set(topo.servers[server])
    if len(gpus) < 2:
        return False
    g = nx.Graph()
    g.add_nodes_from(gpus)
    for l in topo.links:
        a, b = topo.node_by_id[l.src], topo.node_by_id[l.dst]
        if any(n.type == "nic" or n.kind in HOST_KINDS or (n.type != "gpu" and n.server != server) for n in (a, b)):
            continue
        g.add_edge(l.src, l.dst)
    comp = nx.node_connected_component(g, next(iter(gpus)))
    return gpus <= comp


def data_plane(topo: Topology) -> Topology:
    """The derived topology of allowed paths (see module doc). O(V + E)."""
    nodes = list(topo.nodes)
    links = list(topo.links)
    if len(topo.servers) == 1:
        (server,) = topo.servers
        keep = {g for g in topo.gpus} | {n.id for n in nodes if n.type == "switch" and n.server == server}
        nodes = [n for n in nodes if n.id in keep]
        links = [l for l in links if l.src in keep and l.dst in keep]
    split_servers = {s for s in topo.servers if _scale_up_connected(topo, s)}
    host = {n.id for n in nodes if n.kind in HOST_KINDS and n.server in split_servers}
    if not host:
        if len(nodes) == len(topo.nodes):
            return topo
        return build_topology(topo.name, nodes, links)
    node_type = {n.id: n.type for n in nodes}
    new_nodes: list[Node] = []
    for n in nodes:
        if n.id in host:
            new_nodes += [Node(n.id + UP, n.type, n.server, n.kind), Node(n.id + DOWN, n.type, n.server, n.kind)]
        else:
            new_nodes.append(n)
    new_links: list[Link] = []
    for l in links:
        a_host, b_host = l.src in host, l.dst in host
        if a_host and b_host:
            for suffix in (UP, DOWN):
                new_links.append(Link(l.src + suffix, l.dst + suffix, l.bandwidth, l.latency, l.kind, l.count))
        elif b_host:  # into the host fabric: from a GPU goes up, from a NIC goes down
            suffix = UP if node_type[l.src] == "gpu" else DOWN
            new_links.append(Link(l.src, l.dst + suffix, l.bandwidth, l.latency, l.kind, l.count))
        elif a_host:  # out of the host fabric: to a NIC from up, to a GPU from down
            suffix = UP if node_type[l.dst] != "gpu" else DOWN
            new_links.append(Link(l.src + suffix, l.dst, l.bandwidth, l.latency, l.kind, l.count))
        else:
            new_links.append(l)
    return build_topology(topo.name, new_nodes, new_links)
