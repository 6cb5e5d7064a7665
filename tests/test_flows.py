import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import planner.simulator as simulator
from planner.core import limits
import solvers.baselines as baselines
from planner.core.collectives import Collective
from planner.core.errors import ScheduleTooLarge
from topologies.flows import FlowNetwork
from topologies import fabrics
from topologies.io import load_topology
from topologies.types import Link, Node, build_topology


@st.composite
def random_graphs(draw):
    n = draw(st.integers(3, 8))
    nodes = [Node(f"g{i}", "gpu") for i in range(n)]
    links = []
    for i in range(n):
        for j in range(n):
            if i != j and draw(st.booleans()):
                links.append(Link(f"g{i}", f"g{j}", draw(st.sampled_from([0.5, 1.0, 12.5, 25.0, 31.5, 450.0]))))
    return build_topology("random", nodes, links)


def _networkx_flow(topo, src, dst):
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in topo.nodes)
    for l in topo.links:
        g.add_edge(l.src, l.dst, capacity=round(l.bandwidth * 1000))
    return nx.maximum_flow_value(g, src, dst)


@settings(max_examples=60, deadline=None)
@given(random_graphs(), st.data())
def test_max_flow_and_cut_agree_with_networkx(topo, data):
    net = FlowNetwork(topo)
    a, b = data.draw(st.sampled_from([(i, j) for i in range(topo.num_gpus) for j in range(topo.num_gpus) if i != j]))
    value, side = net.max_flow([(net.gpus[a], None)], [net.gpus[b]])
    assert value * net.unit_mbps == _networkx_flow(topo, topo.gpus[a], topo.gpus[b])
    if value:  # the returned side is a minimum cut: source in, sink out, capacity = flow
        assert side[net.gpus[a]] and not side[net.gpus[b]]
        assert net.cut_capacity(side) == value


def test_overflowing_capacities_fall_back_to_exact_integers():
    topo = load_topology("dgx-a100")
    net = FlowNetwork(topo)
    fast, fast_side = net.max_flow([(net.gpus[0], None)], [net.gpus[1]], scale=3)
    slow, slow_side = net.max_flow([(net.gpus[0], None)], [net.gpus[1]], scale=3 * 10**6)  # > int32
    assert slow == fast * 10**6
    assert net.cut_capacity(slow_side) * 3 == fast


def test_latency_keeps_zero_latency_links():
    topo = fabrics.ring(4, 10.0, latency=0.0)
    dist = FlowNetwork(topo).latency_from([0])
    assert np.all(dist == 0.0)


def test_baselines_stay_within_the_transfer_budget(monkeypatch):
    topo = load_topology("hgx-h100x2")
    monkeypatch.setattr(baselines, "TRANSFER_BUDGET", 500)
    sched = baselines.ring(Collective("allgather", 16, 1 << 20), topo)
    params = dict(sched.params)
    assert params["channels"] == 2 and params["channels_reduced_from"] == 8 and len(sched.transfers) <= 500
    chain = baselines.chain(Collective("broadcast", 16, 1 << 30), topo)
    assert len(chain.transfers) <= 500


def test_simulator_refuses_huge_schedules(monkeypatch, run_cli):
    monkeypatch.setattr(limits, "MAX_TRANSFERS", 10)
    topo = load_topology("dgx-a100")
    with pytest.raises(ScheduleTooLarge):
        simulator.simulate(baselines.ring(Collective("allgather", 8, 1 << 20), topo), topo)
    result = run_cli("collective", "allgather", "--topology", "dgx-a100", "--size", "1MiB")
    assert result.exit_code == 2 and "transfers" in result.stderr
