"""Topology types: nodes, directed capacitated links with latency, servers and ranks.

Units: bandwidth in GB/s (1e9 bytes/s) per direction, latency in microseconds.
A `Topology` is immutable; derived views (ranks, adjacency, servers) are computed once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

NODE_TYPES = ("gpu", "switch", "nic")


@dataclass(frozen=True)
class Node:
    """An endpoint of links. `kind` refines the type (nvswitch, pcie, cpu, leaf, spine, ...);
    `model` names a GPU node's GPU preset (planner.core.gpus), "" when not given."""

    id: str
    type: str
    server: int | None = None
    kind: str = ""
    model: str = ""


@dataclass(frozen=True)
class Link:
    """A directed link. `count` physical links of the same kind are merged into one."""

    src: str
    dst: str
    bandwidth: float
    latency: float = 0.0
    kind: str = ""
    count: int = 1


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    meta: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @cached_property
    def node_by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @cached_property
    def gpus(self) -> tuple[str, ...]:
        """GPU ids in rank order (file order)."""
        return tuple(n.id for n in self.nodes if n.type == "gpu")

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @cached_property
    def rank_of(self) -> dict[str, int]:
        return {g: r for r, g in enumerate(self.gpus)}

    @cached_property
    def link_by_pair(self) -> dict[tuple[str, str], Link]:
        return {(l.src, l.dst): l for l in self.links}

    @cached_property
    def out_links(self) -> dict[str, tuple[Link, ...]]:
        out: dict[str, list[Link]] = {n.id: [] for n in self.nodes}
        for l in self.links:
            out[l.src].append(l)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def in_links(self) -> dict[str, tuple[Link, ...]]:
        inn: dict[str, list[Link]] = {n.id: [] for n in self.nodes}
        for l in self.links:
            inn[l.dst].append(l)
        return {k: tuple(v) for k, v in inn.items()}

    @cached_property
    def servers(self) -> dict[int, tuple[str, ...]]:
        """Server index -> its GPUs in rank order. GPUs without a server form their own."""
        out: dict[int, list[str]] = {}
        next_free = 1 + max((n.server for n in self.nodes if n.server is not None), default=-1)
        for g in self.gpus:
            s = self.node_by_id[g].server
            if s is None:
                s = next_free
                next_free += 1
            out.setdefault(s, []).append(g)
        return {s: tuple(v) for s, v in sorted(out.items())}

    @cached_property
    def server_of_gpu(self) -> dict[str, int]:
        return {g: s for s, gs in self.servers.items() for g in gs}

    def link(self, src: str, dst: str) -> Link | None:
        return self.link_by_pair.get((src, dst))


def merge_parallel_links(links: list[Link]) -> tuple[Link, ...]:
    """Parallel links between the same ordered pair add up; kept in first-seen order.

    The merged latency is the largest of the merged ones (conservative); kinds must agree
    or the merged link gets the kind of the first.
    """
    merged: dict[tuple[str, str], Link] = {}
    for l in links:
        key = (l.src, l.dst)
        old = merged.get(key)
        if old is None:
            merged[key] = l
        else:
            merged[key] = Link(l.src, l.dst, old.bandwidth + l.bandwidth, max(old.latency, l.latency),
                               old.kind or l.kind, old.count + l.count)
    return tuple(merged.values())


def build_topology(name: str, nodes: list[Node], links: list[Link], meta: dict[str, str] | None = None) -> Topology:
    return Topology(name, tuple(nodes), merge_parallel_links(links), tuple(sorted((meta or {}).items())))
