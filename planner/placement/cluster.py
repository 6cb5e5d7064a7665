"""A cluster as placement sees it: nodes (servers) with names, free or not, and the domains
(leaf, spine) each sits in; a job's ranks cut into node-sized blocks and its groups as sets
of blocks.

Domains: a node's leaf is the switch its NICs hang from (the set of them, on rail-optimized
fabrics, where every node of a rail group shares them); its spine is the leaf's parent when
the tree has three or more levels (Slurm's `slurm_parents`, topologies/slurm.py), else the
whole cluster. With whole nodes and TP inside a node, rank r is on block r // G (G GPUs per
node) and a block takes one node; a group's spread at a tier is the number of distinct
domains of its blocks' nodes minus one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from planner.core.errors import InfeasibleError, InputError
from planner.core.placement import Job
from planner.placement.timing import tier_seconds
from topologies.types import Topology

TIERS = ("leaf", "spine")
ALL = "(all)"


@dataclass(frozen=True)
class BlockGroup:
    kind: str  # the job dimension: dp, pp, cp, ep
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
        given = self.meta.get("server_names")
        servers = sorted(self.topology.servers)
        if given:
            return tuple(given.split(","))
        return tuple(f"node{s}" for s in servers)

    @cached_property
    def gpus_of(self) -> tuple[tuple[str, ...], ...]:
        return tuple(self.topology.servers[s] for s in sorted(self.topology.servers))

    @cached_property
    def gpus_per_node(self) -> int:
        sizes = {len(g) for g in self.gpus_of}
        if len(sizes) != 1:
            raise InputError(f"placement needs nodes of one size; this cluster has {sorted(sizes)} GPUs per node",
                             field="--topology")
        return sizes.pop()

    @cached_property
    def free(self) -> tuple[int, ...]:
        """Nodes the job may take: idle in the node state (every node when none is given),
        not avoided."""
        state = json.loads(self.meta["node_state"]) if "node_state" in self.meta else {}
        avoid = set(self.job.avoid)
        unknown = sorted(avoid - set(self.names))
        if unknown:
            raise InputError(f"unknown node {unknown[0]!r} (not in the cluster)", field="constraints.avoid")
        return tuple(i for i, n in enumerate(self.names) if state.get(n, "idle") == "idle" and n not in avoid)

    @cached_property
    def domains(self) -> tuple[tuple[str, str], ...]:
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
            out.append(("+".join(leaves) or f"node{s}", ALL))
        return tuple(out)

    # ------------------------------------------------------------ the job's blocks
    @cached_property
    def blocks(self) -> int:
        job, g = self.job, self.gpus_per_node
        if not job.whole_nodes:
            raise InputError("whole_nodes: false is not supported yet (every node is taken whole)",
                             field="constraints.whole_nodes")
        tp = job.size.get("tp", 1)
        faster = [d for d in job.order[:job.order.index("tp")] if job.size[d] > 1] if "tp" in job.order else []
        if job.tp_in_node and tp > 1 and faster:
            raise InputError(f"tp comes after {faster[0]} (faster); TP groups stay inside a node only when tp is "
                             "the fastest dimension (constraints.tp_in_node)", field="order")
        if job.tp_in_node and (tp > g or g % tp):
            raise InfeasibleError(f"tp {tp} does not fit inside a node of {g} GPUs (constraints.tp_in_node)")
        if job.world % g:
            raise InfeasibleError(f"the job's {job.world} GPUs are not whole nodes of {g} GPUs")
        need = job.world // g
        if need > len(self.free):
            raise InfeasibleError(f"the job needs {need} nodes of {g} GPUs ({job.world} GPUs); {len(self.free)} are "
                                  "free")
        return need

    @cached_property
    def groups(self) -> tuple[BlockGroup, ...]:
        """Every group of every dimension but TP, as the blocks it touches (groups inside one
        block are left out: they never spread)."""
        g = self.gpus_per_node
        out: list[BlockGroup] = []
        for dim in self.job.order:
            if dim == "tp":
                continue
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
    def tier_seconds(self) -> dict[str, tuple[float, float, float]]:
        """kind -> per-step seconds of a group reaching one leaf, one spine domain, further
        (planner/placement/timing.py); the kinds with bytes_per_step only."""
        return tier_seconds(self)

    def leaves_free(self) -> dict[str, list[int]]:
        """Free nodes of each leaf, in node order."""
        out: dict[str, list[int]] = {}
        for i in self.free:
            out.setdefault(self.domains[i][0], []).append(i)
        return out
