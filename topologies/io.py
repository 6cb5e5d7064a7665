"""Loading and writing topologies: presets, `<preset>x<N>`, explicit and compact files.

The explicit form is the contract's (nodes + links); the compact form is a `generator`
mapping (servers of a preset on a fabric, or a GPU-only ring/torus/mesh/fully-connected),
optionally followed by extra `nodes` and `links`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


from planner.core.errors import InputError
from planner.core.gpus import GPU_PRESETS
from planner.core.loader import expect_list, expect_mapping, expect_type, read_document
from planner.core.units import parse_bandwidth, parse_nonnegative
from topologies import fabrics
from topologies.dataplane import unreachable_gpu
from topologies.presets import SERVER_PRESETS
from topologies.types import NODE_TYPES, Link, Node, Topology, build_topology

_TOP_FIELDS = ("name", "nodes", "links", "generator", "description", "summary")  # summary: show's, ignored
RESERVED_SUFFIXES = ("^up", "^down")  # the data plane's names for split nodes
_NODE_FIELDS = ("id", "type", "server", "kind", "model")
_LINK_FIELDS = ("src", "dst", "bandwidth", "latency", "bidirectional", "kind", "count")
_CLUSTER_FIELDS = ("preset", "servers", "fabric", "leaf_size", "oversubscription")
_DIRECT_FIELDS = ("type", "gpus", "dims", "bandwidth", "latency")
_PRESET_RE = re.compile(r"^(?P<preset>.+)x(?P<n>[0-9]+)$")


def preset_names() -> list[str]:
    return list(SERVER_PRESETS)


def load_topology(arg: str) -> Topology:
    """A topology from a preset name, `<preset>x<N>`, or a YAML/JSON description file."""
    if Path(arg).is_file() or arg.endswith((".yaml", ".yml", ".json")):
        return load_topology_file(arg)
    if arg in SERVER_PRESETS:
        return fabrics.cluster(arg, 1)
    m = _PRESET_RE.match(arg)
    if m and m.group("preset") in SERVER_PRESETS:
        n = int(m.group("n"))
        if n < 1:
            raise InputError("server count must be at least 1", source=arg, field="topology")
        return fabrics.cluster(m.group("preset"), n)
    raise InputError(f"unknown topology {arg!r}: not a file, not a preset "
                     f"(presets: {', '.join(SERVER_PRESETS)}, or <preset>x<N>)", field="topology")


def load_topology_file(path: str) -> Topology:
    data = read_document(path)
    topo = parse_topology(data, source=path)
    validate_topology(topo, source=path)
    return topo


def parse_topology(data: Any, source: str | None = None) -> Topology:
    """Build a Topology from the explicit and/or compact form. Raises InputError."""
    expect_mapping(data, source=source, field=None, allowed=_TOP_FIELDS)
    if "nodes" not in data and "generator" not in data:
        raise InputError("missing required field (or a 'generator')", source=source, field="nodes")
    name = data.get("name", Path(source).stem if source else "topology")
    expect_type(name, str, source=source, field="name", what="a string")
    nodes: list[Node] = []
    links: list[Link] = []
    if "generator" in data:
        base = _generate(data["generator"], source, name)
        nodes += base.nodes
        links += base.links
    if "nodes" in data:
        nodes += [_parse_node(n, source, f"nodes[{i}]")
                  for i, n in enumerate(expect_list(data["nodes"], source=source, field="nodes"))]
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        if n.id in seen:
            raise InputError(f"duplicate node id {n.id!r}", source=source, field=f"nodes[{i}].id")
        seen.add(n.id)
    if "links" in data:
        for i, raw in enumerate(expect_list(data["links"], source=source, field="links", nonempty=False)):
            links += _parse_link(raw, source, f"links[{i}]", seen)
    return build_topology(name, nodes, links)


def _parse_node(raw: Any, source: str | None, where: str) -> Node:
    expect_mapping(raw, source=source, field=where, allowed=_NODE_FIELDS, required=("id", "type"))
    node_id = raw["id"]
    if isinstance(node_id, int) and not isinstance(node_id, bool):
        node_id = str(node_id)
    expect_type(node_id, str, source=source, field=f"{where}.id", what="a string id")
    if not node_id:
        raise InputError("node id must not be empty", source=source, field=f"{where}.id")
    if node_id.endswith(RESERVED_SUFFIXES):
        raise InputError(f"node id {node_id!r} ends in a reserved suffix ({', '.join(RESERVED_SUFFIXES)})",
                         source=source, field=f"{where}.id")
    if raw["type"] not in NODE_TYPES:
        raise InputError(f"unknown node type {raw['type']!r} (use {' | '.join(NODE_TYPES)})",
                         source=source, field=f"{where}.type")
    server = raw.get("server")
    if server is not None:
        expect_type(server, int, source=source, field=f"{where}.server", what="an integer server index")
        if server < 0:
            raise InputError("server index must be >= 0", source=source, field=f"{where}.server")
    kind = raw.get("kind", "")
    expect_type(kind, str, source=source, field=f"{where}.kind", what="a string")
    model = raw.get("model", "")
    expect_type(model, str, source=source, field=f"{where}.model", what="a GPU preset name")
    if model and raw["type"] != "gpu":
        raise InputError("only a GPU node has a model", source=source, field=f"{where}.model")
    if model and model not in GPU_PRESETS:
        raise InputError(f"unknown GPU {model!r} (known: {', '.join(GPU_PRESETS)})", source=source,
                         field=f"{where}.model")
    return Node(node_id, raw["type"], server, kind, model)


def _parse_link(raw: Any, source: str | None, where: str, node_ids: set[str]) -> list[Link]:
    expect_mapping(raw, source=source, field=where, allowed=_LINK_FIELDS, required=("src", "dst", "bandwidth"))
    ends = []
    for end in ("src", "dst"):
        v = raw[end]
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        expect_type(v, str, source=source, field=f"{where}.{end}", what="a node id")
        if v not in node_ids:
            raise InputError(f"link to unknown node {v!r}", source=source, field=f"{where}.{end}")
        ends.append(v)
    src, dst = ends
    if src == dst:
        raise InputError(f"link from {src!r} to itself", source=source, field=f"{where}.dst")
    count = raw.get("count", 1)
    expect_type(count, int, source=source, field=f"{where}.count", what="a positive integer")
    if count < 1:
        raise InputError("count must be >= 1", source=source, field=f"{where}.count")
    bw = parse_bandwidth(raw["bandwidth"], source=source, field=f"{where}.bandwidth") * count
    lat = parse_nonnegative(raw.get("latency", 0.0), source=source, field=f"{where}.latency")
    bidir = raw.get("bidirectional", True)
    expect_type(bidir, bool, source=source, field=f"{where}.bidirectional", what="true or false")
    kind = raw.get("kind", "")
    expect_type(kind, str, source=source, field=f"{where}.kind", what="a string")
    out = [Link(src, dst, bw, lat, kind, count)]
    if bidir:
        out.append(Link(dst, src, bw, lat, kind, count))
    return out


def _generate(raw: Any, source: str | None, name: str) -> Topology:
    if not isinstance(raw, dict):
        raise InputError("expected a mapping", source=source, field="generator")
    if "preset" in raw or isinstance(raw.get("servers"), list):
        expect_mapping(raw, source=source, field="generator", allowed=_CLUSTER_FIELDS,
                       required=() if isinstance(raw.get("servers"), list) else ("preset",))
        groups = _server_groups(raw, source)
        try:
            return fabrics.mixed_cluster(groups, raw.get("fabric", "rail-optimized"), raw.get("leaf_size"),
                                         raw.get("oversubscription", 1.0), name=name)
        except InputError as exc:
            raise exc.within(source, "generator") from None
    expect_mapping(raw, source=source, field="generator", allowed=_DIRECT_FIELDS, required=("type", "bandwidth"))
    kind = raw["type"]
    if kind not in fabrics.GENERATORS:
        raise InputError(f"unknown generator {kind!r} (use a 'preset', or type: {', '.join(fabrics.GENERATORS)})",
                         source=source, field="generator.type")
    bw = parse_bandwidth(raw["bandwidth"], source=source, field="generator.bandwidth")
    lat = parse_nonnegative(raw.get("latency", 0.0), source=source, field="generator.latency")
    size_field = "dims" if kind in ("torus", "mesh") else "gpus"
    if size_field not in raw:
        raise InputError("missing required field", source=source, field=f"generator.{size_field}")
    try:
        return fabrics.GENERATORS[kind](raw[size_field], bw, lat, name=name)
    except InputError as exc:
        raise exc.within(source, "generator") from None
    except TypeError:
        raise InputError(f"expected {'a list of integers' if size_field == 'dims' else 'an integer'}",
                         source=source, field=f"generator.{size_field}") from None


def _server_groups(raw: dict, source: str | None) -> tuple[tuple[str, int], ...]:
    """`preset` + `servers: N`, or `servers: [{preset: P, count: N}, ...]` (a mixed cluster)."""
    servers = raw.get("servers", 1)
    if not isinstance(servers, list):
        return ((raw["preset"], servers),)
    if "preset" in raw:
        raise InputError("give either a preset or a list of servers, not both", source=source,
                         field="generator.preset")
    groups = []
    for i, item in enumerate(servers):
        where = f"generator.servers[{i}]"
        expect_mapping(item, source=source, field=where, allowed=("preset", "count"), required=("preset",))
        groups.append((item["preset"], item.get("count", 1)))
    return tuple(groups)


def validate_topology(topo: Topology, source: str | None = None) -> None:
    """At least one GPU; every GPU reaches every other through some nodes. (Whether they
    also reach each other on the data plane, the paths collectives may use, is the
    collective's question: a plan there is infeasible, not the description wrong.)"""
    if not topo.gpus:
        raise InputError("the topology has no GPU (no node of type gpu)", source=source, field="nodes")
    for i, l in enumerate(topo.links):
        if not (math.isfinite(l.bandwidth) and l.bandwidth > 0):
            raise InputError(f"link {l.src} -> {l.dst} has bandwidth {l.bandwidth!r}", source=source,
                             field=f"links[{i}].bandwidth")
        if not (math.isfinite(l.latency) and l.latency >= 0):
            raise InputError(f"link {l.src} -> {l.dst} has latency {l.latency!r}", source=source,
                             field=f"links[{i}].latency")
    if len(topo.gpus) == 1:
        return
    gpu = unreachable_gpu(topo, topo.gpus)
    if gpu is not None:
        i = next(i for i, n in enumerate(topo.nodes) if n.id == gpu)
        raise InputError(f"GPU {gpu!r} cannot reach or be reached by GPU {topo.gpus[0]!r}", source=source,
                         field=f"nodes[{i}]")


def topology_to_dict(topo: Topology) -> dict:
    """The explicit form. A link and its reverse with equal figures become one bidirectional link."""
    nodes = []
    for n in topo.nodes:
        d: dict[str, Any] = {"id": n.id, "type": n.type}
        if n.server is not None:
            d["server"] = n.server
        if n.kind:
            d["kind"] = n.kind
        if n.model:
            d["model"] = n.model
        nodes.append(d)
    links = []
    emitted: set[tuple[str, str]] = set()
    for l in topo.links:
        if (l.src, l.dst) in emitted:
            continue
        per_link = l.bandwidth / l.count
        exact = per_link * l.count == l.bandwidth  # else write the total: the bandwidth must survive
        d = {"src": l.src, "dst": l.dst, "bandwidth": per_link if exact else l.bandwidth, "latency": l.latency}
        if l.count != 1 and exact:
            d["count"] = l.count
        if l.kind:
            d["kind"] = l.kind
        rev = topo.link(l.dst, l.src)
        if rev is not None and (rev.bandwidth, rev.latency, rev.kind, rev.count) == (l.bandwidth, l.latency, l.kind, l.count):
            emitted.add((l.dst, l.src))
        else:
            d["bidirectional"] = False
        emitted.add((l.src, l.dst))
        links.append(d)
    return {"name": topo.name, "nodes": nodes, "links": links}
