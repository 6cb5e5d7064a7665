"""Shared builders for the simulator, bounds and property tests."""
from __future__ import annotations

from planner.core.collectives import Collective
from planner.core.schedule import Chunk, Schedule, Transfer
from solvers import baselines
from topologies.routing import Router
from topologies.types import Link, Node, Topology, build_topology

def _cases() -> tuple[tuple[str, str, str, int], ...]:
    """(label, method, collective kind, root) of every heuristic method in the collective
    registry, for every collective it handles (rooted ones at roots 0 and 3); read from
    the registry, so a method added there is in every test that takes these cases."""
    from planner.kinds.collective import COLLECTIVE, collective_problem

    pair = explicit("pair", ["a", "b"], [("a", "b", 10.0, 0.0)])
    out = []
    for m in COLLECTIVE.methods:
        if not m.heuristic:
            continue
        for kind in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce", "alltoall"):
            if not m.handles(collective_problem(Collective(kind, 2, 1 << 10), pair)):
                continue
            for root in ((0, 3) if kind in ("broadcast", "reduce") else (0,)):
                out.append((f"{m.name} {kind}" + (f" root {root}" if kind in ("broadcast", "reduce") else ""),
                            m.name, kind, root))
    return tuple(out)


def first_case(kind: str) -> tuple:
    """The plainest baseline case of a collective kind: ring, chain or direct."""
    plain = {"broadcast": "chain", "reduce": "chain", "alltoall": "direct"}.get(kind, "ring")
    return next(c for c in BASELINE_CASES if c[1] == plain and c[2] == kind)


def build_baseline(case: tuple, topo: Topology, size: int, root: int | None = None,
                   router: Router | None = None) -> Schedule | None:
    """The case's schedule on `topo` (root: the case's, or the one given, clamped to the GPU
    count); None when the method does not apply to this topology."""
    from planner.core.declined import Declined
    from planner.kinds.collective import COLLECTIVE, CollectiveProblem
    from planner.search import run_method

    _, method, kind, case_root = case
    n = topo.num_gpus
    coll = Collective(kind, n, size, root=(case_root if root is None else root) % n)
    problem = CollectiveProblem(coll, topo, topo.name)
    if router is not None:
        problem.__dict__["router"] = router
    m = COLLECTIVE.method(method)
    if m.applies(problem):
        return None
    out = run_method(COLLECTIVE, method, problem)
    return None if isinstance(out, Declined) else out.solution


def assert_baselines_respect_the_bound(topo: Topology, size: int, root: int | None = None,
                                      context: object = None) -> None:
    """Every baseline (at `root`, or each case's own) verifies, simulates no faster than the
    lower bound, and keeps every link within capacity."""
    from planner.bounds import lower_bound
    from planner.simulator import simulate, verify

    router = Router(topo)
    for case in BASELINE_CASES:
        sched = build_baseline(case, topo, size, root, router)
        if sched is None:
            continue
        verify(sched)
        res = simulate(sched, topo, router)
        bound = lower_bound(sched.collective, topo)
        assert 0 < bound.time_us < float("inf"), (context, case[0])
        assert res.time_us >= bound.time_us * (1 - 1e-9), (context, case[0], res.time_us, bound.time_us,
                                                           bound.derivation)
        assert res.max_link_utilization <= 1 + 1e-9, (context, case[0])


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


BASELINE_CASES = _cases()
