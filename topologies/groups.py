"""A communication group's view of a topology: its GPUs, with what it shares.

A training job runs many groups of one kind at once (8 DP groups per server with TP 8, say),
each a collective over its own GPUs. `group_topology` keeps one group's GPUs and every
non-GPU node of their servers and of the fabric, and gives the group its share of what
the concurrent groups share: a NIC link carries (the group's GPUs on that server / the
server's GPUs) of its bandwidth, a link above the leaves (the group's GPUs / all GPUs).
Links private to a GPU (its NVLink, its PCIe lane) and the switches are kept whole; the
servers' other GPUs stay as relays (a route may pass through a peer GPU to its NIC, as
NCCL's PXN does), not as ranks.
The NIC share is given as whole NICs where it can be (k of a server's G GPUs keep
k x NICs / G of its NICs, those on the group's PCIe switches first), so routes over
them stay as parallel as the server's; a fractional share scales the kept NICs' links.
O(nodes + links).
"""
from __future__ import annotations

from topologies.types import Link, Node, Topology, build_topology


def group_topology(topo: Topology, gpus: tuple[str, ...], name: str | None = None,
                   whole_nics: bool = True) -> Topology:
    """The topology `gpus` (ids, in rank order) see as one group (see the module doc).
    `whole_nics=False` keeps every NIC of the group's servers at its fractional share (for
    a group whose whole NICs would not reach each other)."""
    chosen = set(gpus)
    servers = {topo.node_by_id[g].server for g in gpus}
    per_server = {s: sum(1 for g in gpus if topo.node_by_id[g].server == s) for s in servers}
    server_size = {s: len(topo.servers.get(s, ())) or 1 for s in servers}
    nic_scale = _nic_shares(topo, chosen, servers, per_server, server_size, whole_nics)
    kept: list[Node] = []
    for n in topo.nodes:
        if n.type == "gpu":
            if n.id in chosen:
                kept.append(n)
            elif n.server in servers:  # another group's GPU: a relay (NCCL's PXN), not a rank
                kept.append(Node(n.id, "switch", n.server, "relay"))
        elif n.type == "nic":
            if n.id in nic_scale:
                kept.append(n)
        elif n.server is None or n.server in servers:
            kept.append(n)
    kept_ids = {n.id for n in kept}
    # rank order of the group = the order given, not file order
    order = {g: i for i, g in enumerate(gpus)}
    kept.sort(key=lambda n: (0, order[n.id]) if n.type == "gpu" else (1, 0))
    fabric_share = len(gpus) / max(1, topo.num_gpus)
    links: list[Link] = []
    for l in topo.links:
        if l.src not in kept_ids or l.dst not in kept_ids:
            continue
        a, b = topo.node_by_id[l.src], topo.node_by_id[l.dst]
        share = 1.0
        if "nic" in (a.type, b.type):
            share = nic_scale[a.id if a.type == "nic" else b.id]
        elif a.server is None and b.server is None:
            share = fabric_share
        links.append(Link(l.src, l.dst, l.bandwidth * share, l.latency, l.kind, l.count))
    return build_topology(name or f"{topo.name}[{len(gpus)} GPUs]", kept, links)


def _nic_shares(topo: Topology, chosen: set[str], servers: set, per_server: dict, server_size: dict,
                whole_nics: bool) -> dict[str, float]:
    """NIC id -> the factor its links keep, for the NICs the group keeps: those attached to
    the group's GPUs first, then those on the group's PCIe switches."""
    near = {l.dst for l in topo.links if l.src in chosen}  # what the group's GPUs link to
    out: dict[str, float] = {}
    for s in servers:
        nics = [n.id for n in topo.nodes if n.type == "nic" and n.server == s]
        if not nics:
            continue
        exact = len(nics) * per_server[s] / server_size[s]
        keep = max(1, min(len(nics), int(exact))) if whole_nics else len(nics)
        ranked = sorted(nics, key=lambda nic: (nic not in near,
                                               not any(l.dst in near for l in topo.out_links[nic])))
        for nic in ranked[:keep]:
            out[nic] = exact / keep
    return out
