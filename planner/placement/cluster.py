"""A cluster as placement sees it: nodes (Slurm nodes, servers) with names and free GPUs,
slots a block of the job's ranks can take, the domains (NVLink, leaf, spine) each slot sits
in; a job's ranks cut into blocks and its groups as sets of blocks.

Block size b: with whole nodes, a node (G GPUs), or a TP group when TP is larger than a node
and stays inside an NVLink domain of several nodes (GB200 NVL72 trays); sharing nodes
(`whole_nodes: false`), a TP group (tp_in_node) or one GPU. Rank r is in block r // b. A
slot is b GPUs: b // G consecutive nodes of one NVLink domain, aligned (the domain's nodes
cut in runs of b // G from its first; a free pair across a cut is not used), or b GPUs of one node in
index order (aligned: GPUs b*i .. b*i+b-1); it is free when every one of its GPUs is.

Domains per tier, finest first: `nvlink` (the NVLink domain: the node on 8-GPU servers, the
rack of an NVL72), kept only when it holds several slots and is not the leaf; `leaf` (the
switch the node's NICs hang from, the set of them on rail-optimized fabrics); `spine` (the
leaf's parent when the tree has three or more levels, Slurm's `slurm_parents`,
topologies/slurm.py; else the whole cluster). A group's spread at a tier is the number of
distinct domains of its blocks' slots minus one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from planner.core.errors import InfeasibleError, InputError
from planner.core.placement import Job
from planner.placement.timing import tier_seconds
from topologies.types import Topology

NETWORK_TIERS = ("leaf", "spine")
ALL = "(all)"


@dataclass(frozen=True)
class Slot:
    nodes: tuple[int, ...]  # one node, or several of one NVLink domain
    gpus: tuple[tuple[int, int], ...]  # (node, GPU index on it) for each rank of a block, in order


@dataclass(frozen=True)
class BlockGroup:
    kind: str  # the job dimension: dp, pp, cp, ep (tp when its groups span blocks)
    blocks: tuple[int, ...]


@dataclass
class Cluster:
    topology: Topology
    job: Job

    @cached_property
    def meta(self) -> dict:
        return dict(self.topology.meta)

    @cached_property
    def names(self) -> tuple[str, ...]:
        given = self.meta.get("node_names") or self.meta.get("server_names")
        if given:
            return tuple(given.split(","))
        return tuple(f"node{s}" for s in sorted(self.topology.servers))

    @cached_property
    def nodes_per_server(self) -> int:
        """Nodes of one NVLink domain (a topology server): 1, or 18 trays of an NVL72."""
        return int(self.meta.get("nodes_per_server", 1))

    @cached_property
    def gpus_of(self) -> tuple[tuple[str, ...], ...]:
        """Each node's GPUs (topology ids), in index order."""
        k = self.nodes_per_server
        out = []
        for s in sorted(self.topology.servers):
            gpus = self.topology.servers[s]
            share = len(gpus) // k
            out += [gpus[i * share:(i + 1) * share] for i in range(k)]
        return tuple(out)

    @cached_property
    def gpus_per_node(self) -> int:
        sizes = {len(g) for g in self.gpus_of}
        if len(sizes) != 1:
            raise InputError(f"placement needs nodes of one size; this cluster has {sorted(sizes)} GPUs per node",
                             field="--topology")
        return sizes.pop()

    @cached_property
    def free_gpus(self) -> tuple[frozenset[int], ...]:
        """Each node's GPUs the job may take: all of an idle node (every node when no state is
        given), the listed ones of a `mix` node when the job shares nodes, none of an
        avoided node or any other."""
        state = json.loads(self.meta.get("node_state", "{}"))
        listed = json.loads(self.meta.get("free_gpus", "{}"))
        avoid = set(self.job.avoid)
        unknown = sorted(avoid - set(self.names))
        if unknown:
            raise InputError(f"unknown node {unknown[0]!r} (not in the cluster)", field="constraints.avoid")
        every = frozenset(range(self.gpus_per_node))
        out = []
        for n in self.names:
            s = state.get(n, "idle")
            if n in avoid:
                out.append(frozenset())
            elif s == "idle":
                out.append(every)
            elif s == "mix" and not self.job.whole_nodes:
                out.append(frozenset(listed.get(n, ())))
            else:
                out.append(frozenset())
        return tuple(out)

    @cached_property
    def block_size(self) -> int:
        job, g = self.job, self.gpus_per_node
        tp = job.size.get("tp", 1)
        faster = [d for d in job.order[:job.order.index("tp")] if job.size[d] > 1] if "tp" in job.order else []
        if job.tp_in_node and tp > 1 and faster:
            raise InputError(f"tp comes after {faster[0]} (faster); TP groups stay inside a node only when tp is "
                             "the fastest dimension (constraints.tp_in_node)", field="order")
        domain = g * self.nodes_per_server
        if job.tp_in_node and (tp > domain or (tp <= g and g % tp) or (tp > g and tp % g)):
            where = f"a node of {g} GPUs" if domain == g else f"an NVLink domain of {domain} GPUs ({g} per node)"
            raise InfeasibleError(f"tp {tp} does not fit inside {where} in whole nodes (constraints.tp_in_node)")
        if job.whole_nodes:
            size = tp if job.tp_in_node and tp > g else g
            if job.world % size:
                raise InfeasibleError(f"the job's {job.world} GPUs are not whole nodes of {g} GPUs")
            return size
        return tp if job.tp_in_node else 1

    @cached_property
    def slots(self) -> tuple[Slot, ...]:
        """Every slot of the cluster, free or not, in node order."""
        b, g, k = self.block_size, self.gpus_per_node, self.nodes_per_server
        out = []
        if b >= g:
            per = b // g
            for first in range(0, len(self.names), k):
                for i in range(first, first + k - per + 1, per):
                    nodes = tuple(range(i, i + per))
                    out.append(Slot(nodes, tuple((n, x) for n in nodes for x in range(g))))
        else:
            for n in range(len(self.names)):
                out += [Slot((n,), tuple((n, y) for y in range(x, x + b))) for x in range(0, g, b)]
        return tuple(out)

    @cached_property
    def free(self) -> tuple[int, ...]:
        """The slots the job may take."""
        free = self.free_gpus
        return tuple(i for i, slot in enumerate(self.slots) if all(x in free[n] for n, x in slot.gpus))

    @cached_property
    def node_domains(self) -> tuple[tuple[str, str], ...]:
        """(leaf, spine) of every node."""
        meta = self.meta
        if "slurm_leaf" in meta:
            leaf_of = json.loads(meta["slurm_leaf"])
            parents = json.loads(meta["slurm_parents"])
            out = []
            for n in self.names:
                leaf = leaf_of[n]
                chain = [leaf]
                while parents.get(chain[-1]):
                    chain.append(parents[chain[-1]])
                out.append((leaf, chain[1] if len(chain) >= 3 else ALL))
            return tuple(out)
        topo = self.topology
        out = []
        for s in sorted(topo.servers):
            leaves = sorted({l.dst for n in topo.nodes if n.type == "nic" and n.server == s
                             for l in topo.out_links[n.id] if topo.node_by_id[l.dst].server is None})
            out += [("+".join(leaves) or f"node{s}", ALL)] * self.nodes_per_server
        return tuple(out)

    @cached_property
    def tiers(self) -> tuple[str, ...]:
        """The tiers spreads are counted at, finest first (module doc)."""
        nvlink = [self._nvlink_name(slot) for slot in self.slots]
        leaf = [self.node_domains[slot.nodes[0]][0] for slot in self.slots]
        several = len(set(nvlink)) < len(nvlink)
        same_as_leaf = len(set(zip(nvlink, leaf))) == len(set(nvlink)) == len(set(leaf))
        return (("nvlink",) if several and not same_as_leaf else ()) + NETWORK_TIERS

    def _nvlink_name(self, slot: Slot) -> str:
        first = slot.nodes[0] - slot.nodes[0] % self.nodes_per_server
        return "nvl/" + self.names[first]

    @cached_property
    def domains(self) -> tuple[tuple[str, ...], ...]:
        """Every slot's domain at each tier (`tiers`)."""
        nvlink = self.tiers[0] == "nvlink"
        return tuple(((self._nvlink_name(slot),) if nvlink else ()) + self.node_domains[slot.nodes[0]]
                     for slot in self.slots)

    def tier(self, name: str) -> int:
        return self.tiers.index(name)

    # ------------------------------------------------------------ the job's blocks
    @cached_property
    def blocks(self) -> int:
        b, g = self.block_size, self.gpus_per_node
        need = self.job.world // b
        if need > len(self.free):
            if b == g:
                what = f"{need} nodes of {g} GPUs ({self.job.world} GPUs); {len(self.free)} are free"
            else:
                free_gpus = sum(len(v) for v in self.free_gpus)
                what = (f"{need} slots of {b} GPUs ({self.job.world} GPUs); {len(self.free)} are free "
                        f"({free_gpus} free GPUs)")
            raise InfeasibleError(f"the job needs {what}")
        return need

    @cached_property
    def groups(self) -> tuple[BlockGroup, ...]:
        """Every group of every dimension, as the blocks it touches (groups inside one block,
        TP's whenever it is kept inside one, are left out: they never spread)."""
        g = self.block_size
        out: list[BlockGroup] = []
        for dim in self.job.order:  # TP too: its groups span blocks only when not kept inside a node
            seen = set()
            for ranks in self.job.groups(dim):
                blocks = tuple(sorted({r // g for r in ranks}))
                if len(blocks) > 1 and blocks not in seen:
                    seen.add(blocks)
                    out.append(BlockGroup(dim, blocks))
        return tuple(out)

    @cached_property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.kind for g in self.groups))

    @cached_property
    def pricer(self):
        from planner.training.comm import CommPricer  # here: planner.kinds imports this module's users

        return CommPricer(self.topology)

    @cached_property
    def tier_seconds(self) -> dict[str, tuple[float, ...]]:
        """kind -> per-step seconds of a group at each reach (planner/placement/timing.py);
        the kinds with bytes_per_step only."""
        return tier_seconds(self)

    def free_in(self, tier: str) -> dict[str, list[int]]:
        """Free slots of each domain of a tier, in slot order."""
        t = self.tier(tier)
        out: dict[str, list[int]] = {}
        for i in self.free:
            out.setdefault(self.domains[i][t], []).append(i)
        return out
