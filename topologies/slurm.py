"""Slurm's view of a cluster as a topology: `topology.conf` (tree or block), hostlists, node state.

- Hostlist expressions (Slurm's `scontrol show hostnames`): comma-separated items, each a
  name with bracket groups of numbers, ranges and lists (`dev[0-5]`, `node[01-10,12]`,
  `rack[1-2]-gpu[01-04]`: several groups expand as a product, the last group fastest;
  a range keeps the zero padding of its first number).
- `topology/tree` lines `SwitchName=s0 Nodes=dev[0-5]` (a leaf) and `SwitchName=s3
  Switches=s[0-2]` (above leaves); `topology/block` lines `BlockName=b1 Nodes=node[1-32]`
  and `BlockSizes=4,16`. `#` starts a comment; other keys (LinkSpeed=...) are kept out.
- Node state: lines `NAME STATE` as `sinfo -N -h -o '%N %t'` prints them; a node is free
  only when its state is exactly `idle` (the contract); a node listed twice keeps its
  last state. Extension: a `mix` node may give a third column, its free GPUs' indices
  (`0-3,6`: Slurm's GPU `IDX` syntax, the GPUs not in `GresUsed`), which a job sharing
  nodes (`whole_nodes: false`) may take.
`slurm_topology` builds the same Topology type every planner uses: each node a server of
`--server PRESET` (server index = the order nodes first appear), its NICs on its leaf
switch (`sw/<leaf>`, or `block/<name>`), each switch linked to its parent with the sum of
its downlinks (non-blocking), several top switches (and the blocks) joined by `sw/(core)`.
A preset whose NVLink domain spans several Slurm nodes (`gb200-nvl72`: 18 compute trays of
4 GPUs, `ServerPreset.node_gpus`) is one server per run of that many consecutive nodes of
a block or leaf, each node its share of the GPUs in order. The tiers, the node names,
states and free GPUs, and the nodes per server are kept in the topology's meta.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from planner.core.errors import InputError
from topologies.presets import SERVER_PRESETS, ServerBuilder
from topologies.types import Link, Node, Topology, build_topology

SWITCH_LATENCY_US = 0.5
NIC_LATENCY_US = 1.0
CORE = "(core)"
MAX_HOSTS = 65_536
_GROUP = re.compile(r"\[([^\[\]]*)\]")


def expand_hostlist(expr: str, source: str | None = None, field_name: str = "hostlist") -> list[str]:
    """Every host name of a Slurm hostlist expression, in Slurm's order."""
    def bad(why: str) -> InputError:
        return InputError(f"hostlist {expr!r}: {why}", source=source, field=field_name)

    out: list[str] = []
    for item in _split_top(expr, bad):
        names = [""]
        pos = 0
        for m in _GROUP.finditer(item):
            prefix = item[pos:m.start()]
            if "[" in prefix or "]" in prefix:
                raise bad("unbalanced brackets")
            numbers = _numbers(m.group(1), bad)
            names = [n + prefix + x for n in names for x in numbers]
            pos = m.end()
        tail = item[pos:]
        if "[" in tail or "]" in tail:
            raise bad("unbalanced brackets")
        names = [n + tail for n in names]
        if len(out) + len(names) > MAX_HOSTS:
            raise bad(f"more than {MAX_HOSTS} hosts")
        out += names
    if not out:
        raise bad("no host names")
    return out


def _split_top(expr: str, bad) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in expr.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise bad("unbalanced brackets")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise bad("unbalanced brackets")
    items.append(cur)
    if any(not i or i.isspace() for i in items):
        raise bad("an empty name")
    return items


def _numbers(body: str, bad) -> list[str]:
    out: list[str] = []
    for part in body.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise bad(f"{part!r} is not a number or a range of numbers")
        if not sep:
            out.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a:
            raise bad(f"the range {part!r} runs backwards")
        if b - a >= MAX_HOSTS:
            raise bad(f"more than {MAX_HOSTS} hosts")
        width = len(lo) if lo.startswith("0") else 0
        out += [str(i).zfill(width) for i in range(a, b + 1)]
    return out


@dataclass
class SlurmTree:
    """A topology.conf: `parent` of every switch (None at the top), `leaf` of every node (its
    switch or block), the nodes in first-seen order, and the block sizes (topology/block)."""

    kind: str
    parent: dict[str, str | None] = field(default_factory=dict)
    leaf: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    block_sizes: tuple[int, ...] = ()


def parse_topology_conf(text: str, source: str | None = None) -> SlurmTree:
    switches: dict[str, tuple[list[str], list[str]]] = {}
    blocks: dict[str, list[str]] = {}
    block_sizes: tuple[int, ...] = ()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        pairs = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if not sep:
                raise InputError(f"{word!r} is not KEY=VALUE", source=source, field=where)
            pairs[key.lower()] = value
        if "switchname" in pairs:
            name = pairs["switchname"]
            if name in switches:
                raise InputError(f"switch {name!r} is defined twice", source=source, field=where)
            nodes = expand_hostlist(pairs["nodes"], source, where) if pairs.get("nodes") else []
            below = expand_hostlist(pairs["switches"], source, where) if pairs.get("switches") else []
            if not nodes and not below:
                raise InputError(f"switch {name!r} has neither Nodes= nor Switches=", source=source, field=where)
            switches[name] = (nodes, below)
        elif "blockname" in pairs:
            name = pairs["blockname"]
            if name in blocks or not pairs.get("nodes"):
                raise InputError(f"block {name!r} is defined twice or has no Nodes=", source=source, field=where)
            blocks[name] = expand_hostlist(pairs["nodes"], source, where)
        elif "blocksizes" in pairs:
            try:
                block_sizes = tuple(int(x) for x in pairs["blocksizes"].split(","))
            except ValueError:
                raise InputError("BlockSizes= takes whole numbers", source=source, field=where) from None
        else:
            raise InputError("expected SwitchName=, BlockName= or BlockSizes=", source=source, field=where)
    if switches and blocks:
        raise InputError("a topology.conf is either a tree (SwitchName=) or blocks (BlockName=), not both",
                         source=source, field="topology")
    tree = SlurmTree("block" if blocks else "tree", block_sizes=block_sizes)
    members = blocks if blocks else {name: nodes for name, (nodes, _) in switches.items()}
    for name, nodes in members.items():
        for n in nodes:
            if n in tree.leaf:
                raise InputError(f"node {n!r} is under both {tree.leaf[n]!r} and {name!r}", source=source,
                                 field="Nodes")
            tree.leaf[n] = name
            tree.nodes.append(n)
    if not tree.nodes:
        raise InputError("no nodes", source=source, field="topology")
    if blocks:
        tree.parent = {name: None for name in blocks}
        return tree
    tree.parent = {name: None for name in switches}
    for name, (_, below) in switches.items():
        for child in below:
            if child not in switches:
                raise InputError(f"switch {name!r} lists an unknown switch {child!r}", source=source,
                                 field="Switches")
            if tree.parent[child] is not None:
                raise InputError(f"switch {child!r} is under both {tree.parent[child]!r} and {name!r}",
                                 source=source, field="Switches")
            tree.parent[child] = name
    for name in switches:  # no cycles
        seen, cur = set(), name
        while cur is not None:
            if cur in seen:
                raise InputError(f"switch {name!r} is in a cycle of switches", source=source, field="Switches")
            seen.add(cur)
            cur = tree.parent[cur]
    return tree


def parse_node_state(text: str, nodes: list[str], source: str | None = None,
                     gpus_per_node: int | None = None) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(state of each listed node, free GPU indices of the `mix` nodes that list them)."""
    known = set(nodes)
    states: dict[str, str] = {}
    free: dict[str, tuple[int, ...]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        where = f"line {number}"
        if len(words) not in (2, 3):
            raise InputError("expected NAME STATE [FREE_GPUS] (sinfo -N -h -o '%N %t')", source=source, field=where)
        name, state = words[:2]
        if name not in known:
            raise InputError(f"unknown node {name!r} (not in the topology)", source=source, field=where)
        states[name] = state
        free.pop(name, None)
        if len(words) == 3:
            if state != "mix":
                raise InputError(f"free GPUs are listed for a mix node only, not {state!r}", source=source, field=where)
            free[name] = _gpu_indices(words[2], gpus_per_node, source, where)
    return states, free


def _gpu_indices(text: str, gpus_per_node: int | None, source: str | None, where: str) -> tuple[int, ...]:
    def bad(why: str) -> InputError:
        return InputError(f"free GPUs {text!r}: {why}", source=source, field=where)

    out = sorted({int(x) for x in _numbers(text, bad)})
    if gpus_per_node is not None and out and out[-1] >= gpus_per_node:
        raise bad(f"a node has GPUs 0-{gpus_per_node - 1}")
    return tuple(out)


def slurm_topology(conf_path: str, server: str, state_path: str | None = None,
                   oversubscription: float = 1.0) -> Topology:
    """The cluster of a topology.conf, every node a `server` preset, with the node state."""
    if server not in SERVER_PRESETS:
        raise InputError(f"unknown preset {server!r} (known: {', '.join(SERVER_PRESETS)})", field="--server")
    tree = parse_topology_conf(_read(conf_path, "--topology"), conf_path)
    preset = SERVER_PRESETS[server]
    node_gpus = preset.node_gpus or preset.gpus
    states, free = (parse_node_state(_read(state_path, "--node-state"), tree.nodes, state_path, node_gpus)
                    if state_path else ({}, {}))
    per_server = preset.gpus // node_gpus
    servers = _servers(tree, per_server, conf_path)
    if len(tree.nodes) * node_gpus > MAX_HOSTS:
        raise InputError(f"{len(tree.nodes)} nodes of {server} are more than {MAX_HOSTS} GPUs", source=conf_path,
                         field="Nodes")
    nodes: list[Node] = []
    links: list[Link] = []
    prefix = "block/" if tree.kind == "block" else "sw/"
    downlink: dict[str, float] = {}
    for s, hosts in enumerate(servers):
        b = ServerBuilder(s, preset.gpu)
        preset.build(b)
        nodes += b.nodes
        links += b.links
        leaf = prefix + tree.leaf[hosts[0]]
        for nic, gbps in b.nics:
            links += [Link(nic, leaf, gbps, NIC_LATENCY_US, "net"), Link(leaf, nic, gbps, NIC_LATENCY_US, "net")]
            downlink[leaf] = downlink.get(leaf, 0.0) + gbps
    parents = {prefix + k: (prefix + v if v else None) for k, v in tree.parent.items()}
    tops = [k for k, v in parents.items() if v is None]
    if len(tops) > 1:
        core = "sw/" + CORE
        parents.update({t: core for t in tops})
        parents[core] = None
    for sw in _bottom_up(parents):  # a switch's uplink carries what its subtree brings in
        up = parents[sw]
        if up is not None:
            gbps = downlink.get(sw, 0.0) / oversubscription
            links += [Link(sw, up, gbps, SWITCH_LATENCY_US, "net"), Link(up, sw, gbps, SWITCH_LATENCY_US, "net")]
            downlink[up] = downlink.get(up, 0.0) + downlink.get(sw, 0.0)
    nodes += [Node(sw, "switch", None, "leaf" if sw in set(prefix + x for x in tree.leaf.values()) else "spine")
              for sw in sorted(parents)]
    meta = {"preset": server, "servers": str(len(servers)), "fabric": f"slurm-{tree.kind}",
            "server_names": ",".join(tree.nodes if per_server == 1 else (h[0] for h in servers)),
            "node_names": ",".join(h for hosts in servers for h in hosts), "nodes_per_server": str(per_server),
            "free_gpus": json.dumps({h: list(v) for h, v in sorted(free.items())}),
            "slurm_parents": json.dumps(parents, sort_keys=True),
            "slurm_leaf": json.dumps({h: prefix + tree.leaf[h] for h in tree.nodes}),
            "node_state": json.dumps({h: states.get(h, "idle") for h in tree.nodes}),
            "block_sizes": ",".join(str(x) for x in tree.block_sizes)}
    return build_topology(Path(conf_path).name, nodes, links, meta)


def _servers(tree: SlurmTree, per_server: int, source: str) -> list[list[str]]:
    """The nodes of each server: each node alone, or runs of `per_server` consecutive nodes
    of one block or leaf."""
    if per_server == 1:
        return [[h] for h in tree.nodes]
    by_leaf: dict[str, list[str]] = {}
    for h in tree.nodes:
        by_leaf.setdefault(tree.leaf[h], []).append(h)
    out = []
    for leaf, hosts in by_leaf.items():
        if len(hosts) % per_server:
            raise InputError(f"{leaf!r} has {len(hosts)} nodes; an NVLink domain of this preset takes {per_server} "
                             "nodes, so a block or leaf holds a multiple of that", source=source, field="Nodes")
        out += [hosts[i:i + per_server] for i in range(0, len(hosts), per_server)]
    return out


def _bottom_up(parents: dict[str, str | None]) -> list[str]:
    depth = {}
    for sw in parents:
        d, cur = 0, parents[sw]
        while cur is not None:
            d, cur = d + 1, parents[cur]
        depth[sw] = d
    return sorted(parents, key=lambda s: (-depth[s], s))


def _read(path: str, field_name: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror}", source=path, field=field_name) from None
