"""The data plane: which paths collective traffic may take, as a derived topology.

Two rules, both what NCCL-family runtimes do:
1. A topology with a single server has no use for its network: NICs and everything
   outside the server are dropped.
2. In a server whose GPUs are connected to each other without the host fabric (NVLink,
   NVSwitch, xGMI), GPU-to-GPU traffic does not cross PCIe switches or CPUs. Each host
   node (kind `pcie` or `cpu`) is split into an `^up` copy (GPU -> NIC direction) and a
   `^down` copy (NIC -> GPU direction), so a host path can join a GPU to a NIC but never a
   GPU to a GPU.
3. A NIC moves data between its server and the network, never from the host back to the
   host: every NIC is split the same way.
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
    # Directed: with one-way links, GPUs joined one way only still need the host fabric back.
    g = nx.DiGraph()
    g.add_nodes_from(gpus)
    for l in topo.links:
        a, b = topo.node_by_id[l.src], topo.node_by_id[l.dst]
        if any(n.type == "nic" or n.kind in HOST_KINDS or (n.type != "gpu" and n.server != server) for n in (a, b)):
            continue
        g.add_edge(l.src, l.dst)
    first = next(iter(gpus))
    comp = next(c for c in nx.strongly_connected_components(g) if first in c)
    return gpus <= comp


def data_plane(topo: Topology) -> Topology:
    """The derived topology of allowed paths (see module doc). O(V + E) once per topology:
    the result is kept on the (immutable) topology, as functools.cached_property would."""
    memo = topo.__dict__.get("_data_plane")
    if memo is None:
        memo = topo.__dict__["_data_plane"] = _derive(topo)
    return memo


def _derive(topo: Topology) -> Topology:
    nodes = list(topo.nodes)
    links = list(topo.links)
    if len(topo.servers) == 1:
        (server,) = topo.servers
        keep = {g for g in topo.gpus} | {n.id for n in nodes if n.type == "switch" and n.server == server}
        # Also whatever the GPUs reach without a NIC: an explicit file may leave the switch
        # that joins its GPUs without a server index, and dropping it would cut them apart.
        node_type = {n.id: n.type for n in nodes}
        neighbours: dict[str, list[str]] = {}
        for l in links:
            neighbours.setdefault(l.src, []).append(l.dst)
            neighbours.setdefault(l.dst, []).append(l.src)
        stack = list(keep)
        while stack:
            for v in neighbours.get(stack.pop(), ()):
                if v not in keep and node_type[v] != "nic":
                    keep.add(v)
                    stack.append(v)
        nodes = [n for n in nodes if n.id in keep]
        links = [l for l in links if l.src in keep and l.dst in keep]
    split_servers = {s for s in topo.servers if _scale_up_connected(topo, s)}
    host = {n.id for n in nodes if n.kind in HOST_KINDS and n.server in split_servers}
    nics = {n.id for n in nodes if n.type == "nic"}
    if not host and not nics:
        if len(nodes) == len(topo.nodes):
            return topo
        return build_topology(topo.name, nodes, links)
    by_id = {n.id: n for n in nodes}
    new_nodes: list[Node] = []
    for n in nodes:
        if n.id in host or n.id in nics:
            new_nodes += [Node(n.id + UP, n.type, n.server, n.kind), Node(n.id + DOWN, n.type, n.server, n.kind)]
        else:
            new_nodes.append(n)
    new_links: list[Link] = []
    for l in links:
        for a, b in _link_copies(by_id[l.src], by_id[l.dst], host, nics):
            new_links.append(Link(a, b, l.bandwidth, l.latency, l.kind, l.count))
    return build_topology(topo.name, new_nodes, new_links)


def _link_copies(a: Node, b: Node, host: set[str], nics: set[str]) -> list[tuple[str, str]]:
    """The data-plane copies of the physical link a -> b.

    `^up` copies carry traffic from GPUs towards the network, `^down` copies the way back.
    Host-to-host links carry both; a host-to-NIC link only goes up and a NIC-to-host link
    only down, so a NIC never turns host traffic around (no hairpin through a NIC).
    """
    a_host, b_host, a_nic, b_nic = a.id in host, b.id in host, a.id in nics, b.id in nics
    if a_host and b_host:
        return [(a.id + UP, b.id + UP), (a.id + DOWN, b.id + DOWN)]
    if a_nic and b_nic:
        return [(a.id + UP, b.id + DOWN)]
    if b_host or b_nic:
        inside = a.type == "gpu" or a_host or (b_nic and a.server is not None and a.server == b.server)
        source = a.id + UP if a_host else a.id + DOWN if a_nic else a.id
        return [(source, b.id + (UP if inside else DOWN))]
    if a_host or a_nic:
        inside = b.type == "gpu" or (a_nic and b.server is not None and b.server == a.server)
        return [(a.id + (DOWN if inside else UP), b.id)]
    return [(a.id, b.id)]


def unreachable_gpu(graph: Topology, gpus: list[str]) -> str | None:
    """The first of `gpus` that cannot reach, or be reached by, the first over `graph`'s
    links (the topology itself, or its data plane); None when they all can. O(V + E)."""
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in graph.nodes)
    g.add_edges_from((l.src, l.dst) for l in graph.links)
    comp = next(c for c in nx.strongly_connected_components(g) if gpus[0] in c)
    return next((gpu for gpu in gpus if gpu not in comp), None)


def data_plane_gap(topo: Topology) -> str | None:
    """None when every GPU reaches every other over the paths collectives may use, else
    which GPU does not, in a sentence. Kept on the (immutable) topology, as data_plane is."""
    if "_data_plane_gap" not in topo.__dict__:
        topo.__dict__["_data_plane_gap"] = _gap(topo)
    return topo.__dict__["_data_plane_gap"]


def _gap(topo: Topology) -> str | None:
    gpu = unreachable_gpu(data_plane(topo), topo.gpus) if topo.num_gpus > 1 else None
    if gpu is None:
        return None
    return (f"GPU {gpu!r} cannot reach or be reached by GPU {topo.gpus[0]!r} over paths collectives may use (no "
            "GPU-to-GPU traffic through PCIe/CPU, through a NIC and back, or over the network of a single server)")
