"""Shared builders for the simulator, bounds and property tests."""
from __future__ import annotations

from planner.core.collectives import Collective
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers import baselines
from topologies.routing import Router
from topologies.types import Link, Node, Topology, build_topology

# (label, collective kind, root) of every baseline the planner ships.
BASELINE_CASES = (
    ("ring allgather", "allgather", 0),
    ("ring reduce-scatter", "reduce-scatter", 0),
    ("ring allreduce", "allreduce", 0),
    ("chain broadcast root 0", "broadcast", 0),
    ("chain broadcast root 3", "broadcast", 3),
    ("chain reduce root 0", "reduce", 0),
    ("chain reduce root 3", "reduce", 3),
    ("direct alltoall", "alltoall", 0),
)


def build_baseline(kind: str, topo: Topology, size: int, root: int = 0,
                   router: Router | None = None) -> Schedule:
    """The baseline schedule for `kind` on `topo` (root clamped to the GPU count)."""
    n = topo.num_gpus
    coll = Collective(kind, n, size, root=root % n)
    if kind in ("allgather", "reduce-scatter", "allreduce"):
        return baselines.ring(coll, topo, router=router)
    if kind in ("broadcast", "reduce"):
        return baselines.chain(coll, topo, router=router)
    return baselines.direct_alltoall(coll, topo)


def assert_baselines_respect_the_bound(topo: Topology, size: int, root: int | None = None,
                                      context: object = None) -> None:
    """Every baseline (at `root`, or each case's own) verifies, simulates no faster than the
    lower bound, and keeps every link within capacity."""
    from planner.bounds import lower_bound
    from planner.simulator import simulate, verify

    router = Router(topo)
    for label, kind, case_root in BASELINE_CASES:
        sched = build_baseline(kind, topo, size, case_root if root is None else root, router)
        verify(sched)
        res = simulate(sched, topo, router)
        bound = lower_bound(sched.collective, topo)
        assert 0 < bound.time_us < float("inf"), (context, label)
        assert res.time_us >= bound.time_us * (1 - 1e-9), (context, label, res.time_us, bound.time_us,
                                                           bound.derivation)
        assert res.max_link_utilization <= 1 + 1e-9, (context, label)


def explicit(name: str, gpus: list[str], links: list[tuple], switches: list[str] = ()) -> Topology:
    """A topology from GPU ids, switch ids and (src, dst, GB/s, us[, both_ways]) links."""
    nodes = [Node(g, "gpu") for g in gpus] + [Node(s, "switch") for s in switches]
    out = []
    for link in links:
        src, dst, bw, lat = link[:4]
        both = link[4] if len(link) > 4 else True
        out.append(Link(src, dst, bw, lat))
        if both:
            out.append(Link(dst, src, bw, lat))
    return build_topology(name, nodes, out)


def alltoallv(n: int, sends: dict[tuple[int, int], int]) -> Collective:
    """An alltoallv collective on n ranks moving sends[(i, j)] bytes from i to j."""
    return Collective("alltoallv", n, 0,
                      traffic=tuple(tuple(sends.get((i, j), 0) for j in range(n)) for i in range(n)))


def whole(coll: Collective) -> tuple[Chunk, ...]:
    return tuple(Chunk(b, 0.0, 1.0) for b in range(len(coll.blocks)))


def schedule(coll: Collective, transfers: list[Transfer], chunks: tuple[Chunk, ...] | None = None) -> Schedule:
    return Schedule(coll, chunks if chunks is not None else whole(coll), tuple(transfers))
