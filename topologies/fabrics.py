"""Fabric generators: servers of a preset on a network, and GPU-only direct topologies.

- `cluster`: N servers of a preset; their NICs on a rail-optimized or two-tier fat-tree
  network. Leaves hold `leaf_size` servers; leaf uplinks to one aggregate spine carry
  (leaf downlink bandwidth / oversubscription). The spine stands for a non-blocking
  spine layer, so one node gives the same cuts as many.
- `ring`, `torus`, `mesh`, `fully_connected`: GPUs linked directly, no switches.
"""
from __future__ import annotations

import itertools
import math

from planner.core.errors import InputError
from topologies.presets import SERVER_PRESETS, ServerBuilder
from topologies.types import Link, Node, Topology, build_topology

NIC_LATENCY_US = 1.0     # NIC + first switch hop
SPINE_LATENCY_US = 0.5   # leaf <-> spine hop
FABRICS = ("rail-optimized", "fat-tree")
MAX_GPUS = 65_536  # larger clusters are refused up front rather than built for minutes


def cluster(preset: str, servers: int, fabric: str = "rail-optimized", leaf_size: int | None = None,
            oversubscription: float = 1.0, name: str | None = None) -> Topology:
    """`servers` servers of `preset` on `fabric`. O(servers x nodes per server)."""
    return mixed_cluster(((preset, servers),), fabric, leaf_size, oversubscription,
                         name or (preset if servers == 1 else f"{preset}x{servers}"))


def mixed_cluster(groups: tuple[tuple[str, int], ...], fabric: str = "rail-optimized", leaf_size: int | None = None,
                  oversubscription: float = 1.0, name: str | None = None) -> Topology:
    """Servers of one or several presets, `(preset, count)` in server order, on one `fabric`
    (e.g. H100 and A100 servers in one cluster). Rail r of every server joins leaf r, so the
    presets must have the same number of NICs on a rail-optimized fabric."""
    if not groups:
        raise InputError("a cluster needs at least one group of servers", field="servers")
    presets: list[str] = []
    for preset, servers in groups:
        if preset not in SERVER_PRESETS:
            raise InputError(f"unknown preset {preset!r} (known: {', '.join(SERVER_PRESETS)})", field="preset")
        if not isinstance(servers, int) or isinstance(servers, bool) or servers < 1:
            raise InputError(f"servers must be a positive integer, got {servers!r}", field="servers")
        presets += [preset] * servers
    gpus = sum(SERVER_PRESETS[p].gpus for p in presets)
    if gpus > MAX_GPUS:
        raise InputError(f"{len(presets)} servers are {gpus} GPUs; the limit is {MAX_GPUS}", field="servers")
    if fabric not in FABRICS:
        raise InputError(f"unknown fabric {fabric!r} (known: {', '.join(FABRICS)})", field="fabric")
    if not (isinstance(oversubscription, (int, float)) and oversubscription >= 1):
        raise InputError(f"oversubscription must be a number >= 1, got {oversubscription!r}",
                         field="oversubscription")
    servers = len(presets)
    nodes: list[Node] = []
    links: list[Link] = []
    nics_by_server: list[list[tuple[str, float]]] = []
    for s, preset in enumerate(presets):
        b = ServerBuilder(s, SERVER_PRESETS[preset].gpu)
        SERVER_PRESETS[preset].build(b)
        nodes += b.nodes
        links += b.links
        nics_by_server.append(b.nics)
    if fabric == "rail-optimized" and len({len(n) for n in nics_by_server}) > 1:
        raise InputError("a rail-optimized fabric needs the same number of NICs in every server "
                         f"({', '.join(sorted({f'{p}: {len(n)}' for p, n in zip(presets, nics_by_server)}))})",
                         field="servers")
    rails = len(nics_by_server[0])
    if leaf_size is None:
        leaf_size = servers if fabric == "rail-optimized" else max(1, 32 // max(1, rails))
    if not isinstance(leaf_size, int) or isinstance(leaf_size, bool) or leaf_size < 1:
        raise InputError(f"leaf_size must be a positive integer, got {leaf_size!r}", field="leaf_size")
    groups = (servers + leaf_size - 1) // leaf_size
    downlink: dict[str, float] = {}

    def attach(nic: str, leaf: str, gbps: float) -> None:
        if leaf not in downlink:
            nodes.append(Node(leaf, "switch", None, "leaf"))
            downlink[leaf] = 0.0
        downlink[leaf] += gbps
        links.append(Link(nic, leaf, gbps, NIC_LATENCY_US, "net"))
        links.append(Link(leaf, nic, gbps, NIC_LATENCY_US, "net"))

    for s, nics in enumerate(nics_by_server):
        for r, (nic, gbps) in enumerate(nics):
            if fabric == "rail-optimized":
                leaf = f"rail{r}" if groups == 1 else f"rail{r}/leaf{s // leaf_size}"
            else:
                leaf = f"leaf{s // leaf_size}"
            attach(nic, leaf, gbps)
    if len(downlink) > 1:
        nodes.append(Node("spine", "switch", None, "spine"))
        for leaf, gbps in downlink.items():
            up = gbps / oversubscription
            links.append(Link(leaf, "spine", up, SPINE_LATENCY_US, "net"))
            links.append(Link("spine", leaf, up, SPINE_LATENCY_US, "net"))
    meta = {"preset": "+".join(dict.fromkeys(presets)), "servers": str(servers), "fabric": fabric,
            "leaf_size": str(leaf_size), "oversubscription": f"{oversubscription:g}"}
    return build_topology(name or "+".join(f"{p}x{n}" for p, n in groups), nodes, links, meta)


def _direct(name: str, n: int, pairs: set[tuple[int, int]], bandwidth: float, latency: float) -> Topology:
    nodes = [Node(f"gpu{i}", "gpu") for i in range(n)]
    links = []
    for i, j in sorted(pairs):
        links.append(Link(f"gpu{i}", f"gpu{j}", bandwidth, latency, "direct"))
    return build_topology(name, nodes, links)


def _check_dims(dims: list[int]) -> list[int]:
    if not dims or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims):
        raise InputError(f"dims must be a list of positive integers, got {dims!r}", field="dims")
    return dims


def _grid(dims: list[int], wrap: bool) -> tuple[int, set[tuple[int, int]]]:
    dims = _check_dims(dims)
    if math.prod(dims) > MAX_GPUS:
        raise InputError(f"{math.prod(dims)} GPUs is over the limit of {MAX_GPUS}", field="dims")
    coords = list(itertools.product(*[range(d) for d in dims]))
    index = {c: i for i, c in enumerate(coords)}
    pairs: set[tuple[int, int]] = set()
    for c in coords:
        for axis, d in enumerate(dims):
            for step in (1, -1):
                k = c[axis] + step
                if wrap:
                    k %= d
                elif not 0 <= k < d:
                    continue
                other = c[:axis] + (k,) + c[axis + 1:]
                if other != c:
                    pairs.add((index[c], index[other]))
    return len(coords), pairs


def ring(gpus: int, bandwidth: float, latency: float = 0.0, name: str | None = None) -> Topology:
    """A bidirectional ring of `gpus` GPUs."""
    n, pairs = _grid([gpus], wrap=True)
    return _direct(name or f"ring{gpus}", n, pairs, bandwidth, latency)


def torus(dims: list[int], bandwidth: float, latency: float = 0.0, name: str | None = None) -> Topology:
    """A 2D/3D (any-D) torus with wrap-around links."""
    n, pairs = _grid(dims, wrap=True)
    return _direct(name or "torus" + "x".join(map(str, dims)), n, pairs, bandwidth, latency)


def mesh(dims: list[int], bandwidth: float, latency: float = 0.0, name: str | None = None) -> Topology:
    """A grid without wrap-around."""
    n, pairs = _grid(dims, wrap=False)
    return _direct(name or "mesh" + "x".join(map(str, dims)), n, pairs, bandwidth, latency)


def fully_connected(gpus: int, bandwidth: float, latency: float = 0.0, name: str | None = None) -> Topology:
    """Every GPU linked to every other by its own link."""
    if not isinstance(gpus, int) or gpus < 1:
        raise InputError(f"gpus must be a positive integer, got {gpus!r}", field="gpus")
    if gpus > 4096:
        raise InputError(f"{gpus} fully connected GPUs is over the limit of 4096", field="gpus")
    pairs = {(i, j) for i in range(gpus) for j in range(gpus) if i != j}
    return _direct(name or f"full{gpus}", gpus, pairs, bandwidth, latency)


GENERATORS = {"ring": ring, "torus": torus, "mesh": mesh, "fully-connected": fully_connected}
