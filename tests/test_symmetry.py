"""Server symmetries (topologies/symmetry.py) and the models they reduce: the throughput
LP over orbits and column generation over one root per orbit must give the full
problems' optimum, and the images of the trees must be a valid forest at that rate."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from models.gather_lp import throughput_lp, topology_lp
from models.forest import gather_forest
from solvers.tree_columns import column_forest
from topologies.flows import FlowNetwork
from topologies.io import load_topology
from topologies.symmetry import network_symmetry, server_symmetry
from topologies.types import Topology

FAT_TREE = str(Path(__file__).parents[1] / "bench" / "data" / "fat-tree-64.yaml")


def _link_map(topo: Topology) -> dict:
    return {(l.src, l.dst): (l.bandwidth, l.latency, l.kind, l.count) for l in topo.links}


@pytest.mark.parametrize("name,order", [("hgx-h100x4", 4), ("dgx-a100x2", 2), ("mi250x2", 2), (FAT_TREE, 8),
                                        ("dgx-a100", 1), ("dgx1", 1)])
def test_every_element_is_an_automorphism_and_the_group_is_transitive_on_servers(name, order):
    topo = load_topology(name)
    group = server_symmetry(topo)
    assert group.order == order
    ids = [n.id for n in topo.nodes]
    links = _link_map(topo)
    servers_of_zero = set()
    for perm in group.perms:
        assert sorted(perm.tolist()) == list(range(len(ids)))
        image = {(ids[perm[ids.index(a)]], ids[perm[ids.index(b)]]): attrs for (a, b), attrs in links.items()}
        assert image == links
        first_gpu = topo.gpus[0]
        servers_of_zero.add(topo.node_by_id[ids[perm[ids.index(first_gpu)]]].server)
    assert len(servers_of_zero) == order  # server 0 goes everywhere: one orbit of servers


def test_servers_that_differ_break_the_symmetry():
    topo = load_topology("hgx-h100x2")
    links = list(topo.links)
    k = next(i for i, l in enumerate(links) if l.src.startswith("1/") and l.kind == "nvlink")
    links[k] = dataclasses.replace(links[k], bandwidth=links[k].bandwidth / 2)
    odd = Topology("odd", topo.nodes, tuple(links))
    assert server_symmetry(odd).order == 1
    assert network_symmetry(odd, FlowNetwork(odd)) is None


@pytest.mark.parametrize("name", ["mi250x2", "hgx-h100x4", FAT_TREE])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.slow
def test_the_lp_over_orbits_has_the_full_lps_optimum(name, reverse):
    topo = load_topology(name)
    net = FlowNetwork(topo, reverse)
    symmetry = network_symmetry(topo, net)
    assert symmetry is not None and len(symmetry.rank_reps) < topo.num_gpus
    reduced = throughput_lp(net.size, net.tail, net.head, net.cap, net.gpus, symmetry=symmetry)
    full = throughput_lp(net.size, net.tail, net.head, net.cap, net.gpus)
    assert reduced.converged and full.converged
    assert reduced.x == pytest.approx(full.x, rel=1e-7)
    # the loads are symmetric and balance at every non-GPU node
    for g in range(symmetry.order):
        assert np.allclose(reduced.loads[symmetry.arcs[g]], reduced.loads)
    balance = np.bincount(net.head, reduced.loads, net.size) - np.bincount(net.tail, reduced.loads, net.size)
    others = np.ones(net.size, dtype=bool)
    others[net.gpus] = False
    assert np.abs(balance[others]).max() <= 1e-6 * reduced.loads.max()


@pytest.mark.parametrize("name", ["dgx-a100x2", "hgx-h100x4"])
@pytest.mark.slow
def test_columns_under_symmetry_reach_the_same_rate(name):
    topo = load_topology(name)
    net, lp = topology_lp(topo)
    symmetry = network_symmetry(topo, net)
    reduced = column_forest(net, upper=lp.x, symmetry=symmetry)
    full = column_forest(net, upper=lp.x)
    assert reduced.converged and full.converged
    assert float(reduced.rate) == pytest.approx(float(full.rate), rel=2e-4)
    assert {c.root for c in reduced.columns} == set(symmetry.rank_reps)
    per_root: dict[int, Fraction] = {}
    for ranks in symmetry.ranks.tolist():  # each column's image under every element, same weight
        for col, w in zip(reduced.columns, reduced.weights):
            per_root[ranks[col.root]] = per_root.get(ranks[col.root], Fraction(0)) + w
    assert per_root == {r: Fraction(1) for r in range(topo.num_gpus)}


@pytest.mark.parametrize("name", ["hgx-h100x4", FAT_TREE])
@pytest.mark.slow
def test_the_expanded_forest_carries_its_rate_on_the_physical_links(name):
    """Recount every physical link's load from the expanded trees' paths: the images must
    be routed trees whose loads fit the links at exactly the forest's rate."""
    topo = load_topology(name)
    forest = gather_forest(topo)
    assert forest.images and len(forest.trees) == len(forest.base_trees) * (len(forest.images) + 1)
    load: dict[tuple[str, str], Fraction] = {}
    for tree in forest.trees:
        assert tree.parent[tree.root] == -1
        for v, path in enumerate(tree.paths):
            if path is None:
                continue
            assert (path[0], path[-1]) == (topo.gpus[tree.parent[v]], topo.gpus[v])
            for a, b in zip(path, path[1:]):
                load[a, b] = load.get((a, b), Fraction(0)) + tree.weight
    links = topo.link_by_pair
    rate = min(Fraction(round(links[k].bandwidth * 1000)) / l for k, l in load.items())
    assert rate == forest.rate_mbps


def test_the_bound_uses_the_lp_beyond_128_gpus_when_symmetry_leaves_few_orbits():
    from planner.bounds import _switch_lp

    topo = load_topology("hgx-h100x32")
    assert topo.num_gpus == 256
    assert _switch_lp(topo, False, None) is not None
    assert _switch_lp(topo, False, 0) is None  # one root: no rotation fixes it, the LP stays off
