"""Spanning-tree packing: arborescence packing, edge splitting, the throughput LP, and the
`trees` schedules built from them."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.gather_lp import integral_loads, throughput_lp
from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.core.errors import InputError
from planner.simulator import simulate
from solvers.arborescence import PackingError, check_packing, pack
from models.forest import gather_forest, rooted_forest
from solvers.splitting import remove_switches
from models.tree_packing import tree_schedule
from topologies.dataplane import data_plane
from topologies.flows import FlowNetwork, min_gather_ratio
from topologies.io import load_topology
from topologies.routing import Router

from helpers import explicit


# ---------------------------------------------------------------- arborescence packing

def _edmonds_holds(n: int, arcs: dict, demand: dict) -> bool:
    """Edmonds' condition by brute force: every nonempty X gets at least the demand of
    the roots outside it."""
    for size in range(1, n + 1):
        for xs in itertools.combinations(range(n), size):
            inside = set(xs)
            entering = sum(c for (a, b), c in arcs.items() if a not in inside and b in inside)
            if entering < sum(k for r, k in demand.items() if r not in inside):
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.data())
def test_pack_meets_every_demand_exactly_when_edmonds_condition_holds(n, data):
    arcs = {}
    for a in range(n):
        for b in range(n):
            if a != b and data.draw(st.booleans(), label=f"arc {a}->{b}"):
                arcs[a, b] = data.draw(st.integers(1, 6), label=f"cap {a}->{b}")
    demand = {r: data.draw(st.integers(0, 3), label=f"demand {r}") for r in range(n)}
    if _edmonds_holds(n, arcs, demand):
        trees = pack(n, arcs, demand)
        check_packing(n, arcs, demand, trees)
    elif any(demand.values()):
        with pytest.raises(PackingError):
            pack(n, arcs, demand)


def test_check_packing_catches_overload_and_missing_nodes():
    arcs = {(0, 1): 2, (1, 2): 1, (0, 2): 1}
    good = pack(3, arcs, {0: 2})
    check_packing(3, arcs, {0: 2}, good)
    with pytest.raises(PackingError, match="carries"):
        check_packing(3, {**arcs, (1, 2): 0}, {0: 2}, good)
    with pytest.raises(PackingError, match="differ"):
        check_packing(3, arcs, {0: 3}, good)


# ---------------------------------------------------------------- splitting and the LP

def _plane_arrays(topo):
    net = FlowNetwork(topo)
    plane = data_plane(topo)
    return net, [n.server for n in plane.nodes]


@pytest.mark.parametrize("name", ["dgx-a100", "hgx-h100x2", "mi250", "dgx1"])
def test_splitting_keeps_the_rate_and_routes_add_up(name):
    topo = load_topology(name)
    net, server_of = _plane_arrays(topo)
    lp = throughput_lp(net.size, net.tail, net.head, net.cap, net.gpus)
    is_gpu = np.zeros(net.size, dtype=bool)
    is_gpu[net.gpus] = True
    loads = integral_loads(net.size, net.tail, net.head, lp.loads, net.cap, is_gpu, 64)
    x, _ = min_gather_ratio(net.size, net.tail, net.head, loads, net.gpus)
    graph, stats = remove_switches(net.size, net.tail, net.head, loads * x.denominator, net.gpus, server_of,
                                   {g: x.numerator for g in net.gpus})
    tails, heads, caps = graph.arrays()
    n = len(net.gpus)
    assert min_gather_ratio(n, tails, heads, caps, list(range(n)))[0] == x.numerator
    for arc, pieces in graph.routes.items():
        assert sum(c for _, c in pieces) == graph.arcs[arc]
        for path, _ in pieces:
            assert path[0] == net.gpus[arc[0]] and path[-1] == net.gpus[arc[1]]
            assert not any(is_gpu[v] for v in path[1:-1])


def test_lp_is_tighter_than_the_cut_where_pcie_bridges_cannot_copy():
    # DGX A100 pairs: a GPU's NIC ingress over PCIe must feed both GPUs of a PCIe switch;
    # the cut bound counts the switch's arcs to each GPU in full, the LP does not.
    topo = load_topology("dgx-a100x2")
    net, _ = _plane_arrays(topo)
    cut, _ = min_gather_ratio(net.size, net.tail, net.head, net.cap, net.gpus)
    lp = throughput_lp(net.size, net.tail, net.head, net.cap, net.gpus)
    assert lp.status == "optimal"
    assert lp.x < float(cut) * 0.99
    bound = lower_bound(Collective("allgather", 16, 1 << 30), topo)
    assert "throughput LP" in bound.derivation
    assert bound.bandwidth_us > dict(bound.detail)["cut_bound_us"]


# ---------------------------------------------------------------- forests

@pytest.mark.parametrize("name", ["dgx-a100", "dgx1", "mi250", "hgx-h100", "dgx-a100x2"])
@pytest.mark.slow
def test_gather_forest_reaches_the_lp_optimum(name):
    topo = load_topology(name)
    forest = gather_forest(topo)
    assert float(forest.rate_mbps) >= forest.lp_rate_mbps * (1 - 1e-3)
    assert forest.lp_rate_mbps <= float(forest.cut_rate_mbps) * (1 + 1e-6)
    n = topo.num_gpus
    per_root = {}
    for tree in forest.trees:
        per_root[tree.root] = per_root.get(tree.root, 0) + tree.weight
        assert sorted(tree.parent).count(-1) == 1 and min(tree.depth()) >= 0
    assert per_root == {r: Fraction(1) for r in range(n)}


def test_rooted_forest_reaches_the_root_flow():
    topo = load_topology("dgx1")
    forest = rooted_forest(topo, 3)
    assert {t.root for t in forest.trees} == {3}
    assert sum(t.weight for t in forest.trees) == 1
    assert float(forest.rate_mbps) >= float(forest.cut_rate_mbps) * (1 - 1e-3)


# ---------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"])
@pytest.mark.slow
def test_tree_schedules_verify_and_reach_the_bound_on_a_switch(kind):
    topo = load_topology("dgx-a100")
    coll = Collective(kind, 8, 64 << 20, root=5)
    sched = tree_schedule(coll, topo)
    sim = simulate(sched, topo, Router(topo))  # verifies data movement first
    bound = lower_bound(coll, topo)
    assert sim.time_us >= bound.time_us * (1 - 1e-9)
    # stars reach the bound; a single root's trees are chains through the switch, whose
    # pipeline start-up shows at this size
    assert sim.time_us <= bound.time_us * (1.01 if kind not in ("broadcast", "reduce") else 1.06)


@pytest.mark.parametrize("name,kind", [("dgx1", "allgather"), ("dgx-a100x2", "reduce-scatter"),
                                       ("mi250", "broadcast")])
@pytest.mark.slow
def test_tree_schedules_on_direct_and_multi_server_fabrics(name, kind):
    topo = load_topology(name)
    coll = Collective(kind, topo.num_gpus, 1 << 30, root=1)
    sched = tree_schedule(coll, topo)
    sim = simulate(sched, topo, Router(topo))
    bound = lower_bound(coll, topo)
    # verified, never below the bound, and close to it (bench/trees.py measures the rest:
    # on several servers within 3%, as issue 18 asks)
    assert bound.time_us * (1 - 1e-9) <= sim.time_us <= bound.time_us * (1.03 if name == "dgx-a100x2" else 1.1)


def test_trees_reject_what_they_do_not_do():
    topo = load_topology("dgx-a100")
    with pytest.raises(ValueError, match="does not do alltoall"):
        tree_schedule(Collective("alltoall", 8, 1 << 20), topo)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 4), st.sampled_from([5.0, 20.0]), st.sampled_from([10.0, 40.0]),
       st.sampled_from(["allgather", "reduce-scatter", "broadcast"]))
def test_trees_through_a_switch_and_direct_links_verify(n, direct, up, kind):
    gpus = [f"g{i}" for i in range(n)]
    links = [(g, "sw", up, 0.5) for g in gpus] + [(a, b, direct, 0.7) for a, b in zip(gpus, gpus[1:])]
    topo = explicit("mixed", gpus, links, switches=["sw"])
    coll = Collective(kind, n, 1 << 20)
    sched = tree_schedule(coll, topo)
    sim = simulate(sched, topo, Router(topo))
    assert sim.time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)


@pytest.mark.parametrize("fmt", ["msccl-xml", "msccl-exec-xml", "mscclpp-json"])
@pytest.mark.slow
def test_single_server_trees_export_and_round_trip(fmt):
    from planner.exports import round_trip

    topo = load_topology("dgx-a100")
    coll = Collective("allgather", 8, 8 << 20)
    sched = tree_schedule(coll, topo)
    assert all(t.path is None for t in sched.transfers)  # every tree arc is the router's route
    sim = simulate(sched, topo, Router(topo))
    round_trip(sched, fmt, topo, sim.time_us)  # export, strict check, parse back, re-simulate


@pytest.mark.slow
def test_multi_server_trees_export_along_the_rails(run_cli, tmp_path):
    # at 16 MiB the depth-2 rail trees win; their arcs are the router's routes, one tree
    # per root (no bundles), so the loop body exports and re-simulates to the same time
    out = tmp_path / "x.xml"
    r = run_cli("collective", "allgather", "--topology", "dgx-a100x2", "--size", "16MiB", "--method", "trees",
                "--export", "msccl-xml", "--export-file", out)
    assert r.exit_code == 0 and "same time" in r.stdout and 'loops="' in out.read_text()
    assert float(r.stdout.split("ratio to bound ")[1].split()[0]) <= 1.03


def test_bundled_streams_are_not_exported():
    from planner.exports import round_trip

    from models.tree_packing import forest_solve

    topo = load_topology("dgx-a100x2")
    coll = Collective("allgather", 16, 16 << 20)
    sched = tree_schedule(coll, topo, forest="columns")
    assert sched.widths
    # the plan's solver: the throughput LP joined by the column generation's master
    assert forest_solve(coll, topo, sched).solver == "highs+glop"
    with pytest.raises(InputError, match="bundle parallel streams"):
        round_trip(sched, "msccl-xml", topo)


@pytest.mark.parametrize("kind,topo,name,forest", [("allgather", "dgx-a100x2", "highs", "rails"),
                                                   ("allreduce", "dgx-a100", "highs", "packing"),
                                                   ("broadcast", "dgx-a100", "highs", "packing")])
@pytest.mark.slow
def test_trees_plans_report_the_lp_solves_as_their_solver(run_cli, tmp_path, plan_validator, kind, topo, name, forest):
    out = tmp_path / "p.json"
    r = run_cli("collective", kind, "--topology", topo, "--size", "1MiB", "--method", "trees", "-o", out)
    assert r.exit_code == 0, r.stderr
    doc = plan_validator(out)
    assert doc["method"] == "trees"
    # the throughput LP (and the column generation's master where the forest came from it)
    assert doc["solver"]["name"] == name and doc["solver"]["status"] == "optimal"
    assert doc["solver"]["gap"] == 0.0 and doc["solver"]["limit_hit"] is False
    # column generation or rail trees on several servers, packing on one server and for one root
    assert doc["plan"]["params"]["up_forest" if kind == "allreduce" else "forest"] == forest


# ---------------------------------------------------------------- whole units


@pytest.mark.parametrize("name", ["dgx-a100x2", "hgx-h100x4"])
def test_units_tile_every_block_and_cost_no_less_than_the_forest(name):
    from models.tree_units import link_uses, unit_counts

    topo = load_topology(name)
    forest = gather_forest(topo)
    units = unit_counts(forest, topo, 16)
    for root in range(topo.num_gpus):
        assert sum(n for t, n in zip(forest.trees, units.counts) if t.root == root) == 16
    # the ratio is the units' largest link time over the fractional forest's, recomputed
    uses = link_uses(forest, topo)
    base = len(forest.base_trees)
    cap = [l.bandwidth for l in topo.links]

    def worst(weights):
        load = {}
        for row, w in zip(uses, weights):
            for k, m in row.items():
                load[k] = load.get(k, 0.0) + w * m
        return max(v / cap[k] for k, v in load.items())
    assert units.ratio == pytest.approx(worst(units.counts[:base]) / worst([float(t.weight) * 16
                                                                            for t in forest.base_trees]))
    assert 1.0 <= units.ratio < 1.05
    assert unit_counts(forest, topo, 16) is units  # kept on the forest
