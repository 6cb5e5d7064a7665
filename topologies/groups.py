"""A communication group's view of a topology: its GPUs, with what it shares.

A training job runs many groups of one kind at once (8 DP groups per server with TP 8, say),
each a collective over its own GPUs. `group_topology` keeps one group's GPUs and every
non-GPU node of their servers and of the fabric, and gives the group its share of what
the concurrent groups share: a NIC link carries (the group's GPUs on that server / the
server's GPUs) of its bandwidth, a link between fabric switches (the group's GPUs below it /
all GPUs below it), "below" being the side away from the top of the tree: a leaf's uplink is
shared by its own servers' GPUs (on a rail-optimized fabric every leaf holds every server,
so that is all GPUs); a link outside the tree, by all GPUs.
Links private to a GPU (its NVLink, its PCIe lane) and the switches are kept whole; the
servers' other GPUs stay as relays (a route may pass through a peer GPU to its NIC, as
NCCL's PXN does), not as ranks.
The NIC share is given as whole NICs where it can be (k of a server's G GPUs keep
k x NICs / G of its NICs, those on the group's PCIe switches first), so routes over
them stay as parallel as the server's; a fractional share scales the kept NICs' links.
O(nodes + links).
"""
from __future__ import annotations

import json

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
    node_at, link_at = _by_server(topo)
    kept: list[Node] = []
    for i in sorted(i for s in (None, *servers) for i in node_at.get(s, ())):  # the topology's order
        n = topo.nodes[i]
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
    below, lower_of = _gpus_below(topo)
    counted = _group_below(topo, below, gpus)
    fabric_share = len(gpus) / max(1, topo.num_gpus)
    links: list[Link] = []
    for i in sorted(i for s in (None, *servers) for i in link_at.get(s, ())):
        l = topo.links[i]
        if l.src not in kept_ids or l.dst not in kept_ids:
            continue
        a, b = topo.node_by_id[l.src], topo.node_by_id[l.dst]
        share = 1.0
        if "nic" in (a.type, b.type):
            share = nic_scale[a.id if a.type == "nic" else b.id]
        elif a.server is None and b.server is None:
            lower = lower_of.get((a.id, b.id)) or lower_of.get((b.id, a.id))
            if lower is None:  # not a link of the tree (between switches of one level): all GPUs share it
                share = fabric_share
            else:
                under = sum(len(topo.servers.get(x, ())) for x in below.get(lower, ()))
                share = counted.get(lower, 0) / max(1, under)
        links.append(Link(l.src, l.dst, l.bandwidth * share, l.latency, l.kind, l.count))
    return build_topology(name or f"{topo.name}[{len(gpus)} GPUs]", kept, links)


def _by_server(topo: Topology) -> tuple[dict, dict]:
    """(server -> positions of its nodes, server -> positions of the links touching it), the
    fabric's under None (a link between two servers is listed under its source's). Cached
    on the topology: a group's view then costs its servers' size, not the cluster's."""
    cached = topo.__dict__.get("_by_server")
    if cached is not None:
        return cached
    nodes: dict = {}
    for i, n in enumerate(topo.nodes):
        nodes.setdefault(n.server, []).append(i)
    links: dict = {}
    for i, l in enumerate(topo.links):
        a, b = topo.node_by_id[l.src].server, topo.node_by_id[l.dst].server
        links.setdefault(a if a is not None else b, []).append(i)
    out = (nodes, links)
    object.__setattr__(topo, "_by_server", out)
    return out


def _gpus_below(topo: Topology) -> tuple[dict[str, frozenset[int]], dict[str, str]]:
    """(fabric switch -> the servers below it, switch -> the switch above it). A leaf's
    servers are those its NICs belong to; a switch holds its children's. The tree is the
    topology's Slurm parents when it has them (topologies/slurm.py), else the levels of a
    breadth-first walk up from the NIC layer (a link from level L to L + 1 goes up; the
    generated fabrics are such trees). Cached on the topology (it is immutable)."""
    cached = topo.__dict__.get("_servers_below")  # a Topology keeps its derived views in its __dict__
    if cached is not None:
        return cached
    fabric = {n.id for n in topo.nodes if n.server is None and n.type == "switch"}
    below: dict[str, set[int]] = {}
    for n in topo.nodes:
        if n.type == "nic":
            for l in topo.out_links[n.id]:
                if l.dst in fabric:
                    below.setdefault(l.dst, set()).add(n.server)
    meta = dict(topo.meta)
    if "slurm_parents" in meta:
        parents = {k: v for k, v in json.loads(meta["slurm_parents"]).items() if v is not None}
        depth = {}
        for sw in parents:
            d, cur = 0, sw
            while cur in parents:
                d, cur = d + 1, parents[cur]
            depth[sw] = d
        up = {sw: [parents[sw]] for sw in sorted(parents, key=lambda x: (-depth[x], x))}
    else:
        level = {sw: 0 for sw in below}
        frontier = sorted(level)
        while frontier:
            nxt = set()
            for sw in frontier:
                for l in topo.out_links[sw]:
                    if l.dst in fabric and l.dst not in level:
                        level[l.dst] = level[sw] + 1
                        nxt.add(l.dst)
            frontier = sorted(nxt)
        up = {sw: sorted(l.dst for l in topo.out_links[sw] if level.get(l.dst, -1) == level[sw] + 1)
              for sw in sorted(level, key=lambda x: (level[x], x))}
    for sw, parents_of_sw in up.items():  # children before their parents
        for p in parents_of_sw:
            below.setdefault(p, set()).update(below.get(sw, ()))
    lower_of = {(child, p): child for child, ps in up.items() for p in ps}
    out = ({sw: frozenset(v) for sw, v in below.items()}, lower_of)
    object.__setattr__(topo, "_servers_below", out)
    return out


def _group_below(topo: Topology, below: dict[str, frozenset[int]], gpus: tuple[str, ...]) -> dict[str, int]:
    """Fabric switch -> GPUs of the group below it, and (as `below` counts servers) the
    GPUs below it are its servers' GPUs."""
    per_server: dict[int, int] = {}
    for g in gpus:
        s = topo.node_by_id[g].server
        per_server[s] = per_server.get(s, 0) + 1
    return {sw: sum(per_server.get(s, 0) for s in servers) for sw, servers in below.items()}


def _nic_shares(topo: Topology, chosen: set[str], servers: set, per_server: dict, server_size: dict,
                whole_nics: bool) -> dict[str, float]:
    """NIC id -> the factor its links keep, for the NICs the group keeps: those attached to
    the group's GPUs first, then those on the group's PCIe switches."""
    near = {l.dst for g in chosen for l in topo.out_links[g]}  # what the group's GPUs link to
    node_at, _ = _by_server(topo)
    out: dict[str, float] = {}
    for s in sorted(servers):
        nics = [topo.nodes[i].id for i in node_at.get(s, ()) if topo.nodes[i].type == "nic"]
        if not nics:
            continue
        exact = len(nics) * per_server[s] / server_size[s]
        keep = max(1, min(len(nics), int(exact))) if whole_nics else len(nics)
        ranked = sorted(nics, key=lambda nic: (nic not in near,
                                               not any(l.dst in near for l in topo.out_links[nic])))
        for nic in ranked[:keep]:
            out[nic] = exact / keep
    return out
