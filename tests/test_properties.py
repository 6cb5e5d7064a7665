"""Property tests on random explicit topologies.

A random topology has 2-8 GPUs and 0-3 switches joined by a backbone that keeps the GPUs
strongly connected (a bidirectional spanning tree, or a one-way cycle through every node),
plus random extra links, some one-way. Bandwidths are 1-500 GB/s, latencies 0-2 us. GPUs
all lack a server (each its own), or all share server 0 (one server: the data plane drops
nothing but NICs), or are spread over two servers.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.core.errors import ScheduleError
from planner.core.schedule import Schedule
from planner.simulator import simulate, verify
from solvers import baselines
from helpers import BASELINE_CASES, assert_baselines_respect_the_bound, build_baseline
from topologies import fabrics
from topologies.io import parse_topology, topology_to_dict, validate_topology
from topologies.routing import Router

BANDWIDTH = st.floats(1.0, 500.0, allow_nan=False, allow_infinity=False)
LATENCY = st.floats(0.0, 2.0, allow_nan=False, allow_infinity=False)


@st.composite
def topology_docs(draw, max_gpus: int = 8) -> dict:
    """The explicit (file) form of a random topology whose GPUs are strongly connected."""
    n = draw(st.integers(2, max_gpus))
    s = draw(st.integers(0, 3))
    gpus = [f"gpu{i}" for i in range(n)]
    switches = [f"sw{i}" for i in range(s)]
    servers = draw(st.sampled_from(["none", "one", "two"]))
    nodes = []
    for i, g in enumerate(gpus):
        node = {"id": g, "type": "gpu"}
        if servers == "one":
            node["server"] = 0
        elif servers == "two":
            node["server"] = draw(st.integers(0, 1))
        nodes.append(node)
    for sw in switches:
        node = {"id": sw, "type": "switch"}
        if draw(st.booleans()):
            node["kind"] = draw(st.sampled_from(["nvswitch", "leaf", "custom"]))
        nodes.append(node)
    order = draw(st.permutations(gpus + switches))
    links: list[dict] = []
    taken: set[tuple[str, str]] = set()  # directed pairs already linked: no parallel links here

    def add(a: str, b: str, both: bool) -> None:
        pairs = {(a, b), (b, a)} if both else {(a, b)}
        if a == b or pairs & taken:
            return
        taken.update(pairs)
        link = {"src": a, "dst": b, "bandwidth": draw(BANDWIDTH), "latency": draw(LATENCY)}
        if not both:
            link["bidirectional"] = False
        if draw(st.integers(0, 4)) == 0:
            link["count"] = draw(st.integers(2, 4))
        links.append(link)

    if draw(st.booleans()):  # a bidirectional spanning tree
        for i in range(1, len(order)):
            add(order[draw(st.integers(0, i - 1))], order[i], True)
    else:  # a one-way cycle through every node
        for i in range(len(order)):
            add(order[i], order[(i + 1) % len(order)], False)
    everyone = gpus + switches
    for a, b, both in draw(st.lists(st.tuples(st.sampled_from(everyone), st.sampled_from(everyone), st.booleans()),
                                    max_size=6)):
        add(a, b, both)
    return {"name": "random", "nodes": nodes, "links": links}


def build(doc: dict):
    topo = parse_topology(doc)
    validate_topology(topo)
    return topo


def link_set(topo) -> set:
    return set(topo.links)


# ---------------------------------------------------------------- (a) file round trip


@settings(max_examples=150, deadline=None)
@given(topology_docs())
def test_topology_dict_round_trip(doc):
    topo = build(doc)
    d = topology_to_dict(topo)
    back = parse_topology(json.loads(json.dumps(d)))
    assert back.name == topo.name
    assert back.nodes == topo.nodes
    assert len(back.links) == len(topo.links)
    assert link_set(back) == link_set(topo)
    assert topology_to_dict(back) == d


def test_merged_parallel_links_round_trip():
    # 10 + 2 x 228.275 = 466.55 over 3 links: 466.55 / 3 * 3 is not 466.55 in floating point,
    # so the writer keeps the total (and drops the count) rather than drift the bandwidth.
    doc = {"nodes": [{"id": "a", "type": "gpu"}, {"id": "b", "type": "gpu"}],
           "links": [{"src": "a", "dst": "b", "bandwidth": 10.0},
                     {"src": "a", "dst": "b", "bandwidth": 228.275, "count": 2}]}
    topo = build(doc)
    assert topo.links[0].count == 3
    back = parse_topology(topology_to_dict(topo))
    assert [(l.src, l.dst, l.bandwidth, l.latency) for l in back.links] == \
        [(l.src, l.dst, l.bandwidth, l.latency) for l in topo.links]
    exact = build({**doc, "links": [{"src": "a", "dst": "b", "bandwidth": 25.0, "count": 12}]})
    assert link_set(parse_topology(topology_to_dict(exact))) == link_set(exact)


# ---------------------------------------------------------------- (b) baselines vs bounds

SIZES = st.sampled_from([64, 4096, 1 << 20, 3 << 24])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topology_docs(), SIZES, st.integers(0, 7))
@pytest.mark.slow
def test_every_baseline_verifies_and_respects_the_bound(doc, size, root):
    assert_baselines_respect_the_bound(build(doc), size, root)


def test_gpus_joined_one_way_keep_the_host_fabric_for_the_way_back():
    """Regression: the data plane split a server's PCIe/CPU nodes (no GPU-to-GPU traffic over
    them) when its GPUs were joined by scale-up links in the undirected sense; with a one-way
    link gpu0 -> gpu1 and the way back only over PCIe, gpu1 then had no route to gpu0."""
    topo = build({
        "nodes": [{"id": "gpu0", "type": "gpu", "server": 0}, {"id": "gpu1", "type": "gpu", "server": 0},
                  {"id": "pcie", "type": "switch", "server": 0, "kind": "pcie"}],
        "links": [{"src": "gpu0", "dst": "gpu1", "bandwidth": 20, "bidirectional": False},
                  {"src": "gpu1", "dst": "pcie", "bandwidth": 10, "bidirectional": False},
                  {"src": "pcie", "dst": "gpu0", "bandwidth": 10, "bidirectional": False}]})
    assert Router(topo).route("gpu1", "gpu0") == ("gpu1", "pcie", "gpu0")
    for case in BASELINE_CASES:
        label = case[0]
        sched = build_baseline(case, topo, 1 << 20)
        if sched is None:
            continue
        assert lower_bound(sched.collective, topo).time_us <= simulate(sched, topo).time_us * (1 + 1e-9), label


# ---------------------------------------------------------------- (c) broken schedules fail


def _drop(sched: Schedule, k: int) -> Schedule:
    """The schedule without transfer k; explicit deps renumbered (a dependency on k is
    dropped with it)."""
    keep = tuple(dataclasses.replace(t, deps=tuple(d - (d > k) for d in t.deps if d != k))
                 for t in sched.transfers[:k] + sched.transfers[k + 1:])
    return Schedule(sched.collective, sched.chunks, keep, sched.algorithm, sched.params)


@settings(max_examples=100, deadline=None)
@given(topology_docs(max_gpus=6), st.sampled_from(BASELINE_CASES), st.data())
def test_dropping_any_transfer_breaks_a_correct_schedule(doc, case, data):
    topo = build(doc)
    sched = build_baseline(case, topo, 1 << 16)
    assume(sched is not None and sched.transfers)
    verify(sched)
    k = data.draw(st.integers(0, len(sched.transfers) - 1), label="dropped transfer")
    with pytest.raises(ScheduleError):
        verify(_drop(sched, k))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.sampled_from(["allgather", "reduce-scatter", "allreduce"]),
       st.data())
def test_dropping_any_transfer_of_a_multichannel_ring_fails(n, channels, kind, data):
    topo = fabrics.fully_connected(n, 10.0)
    sched = baselines.ring(Collective(kind, n, 1 << 16), topo, channels=channels)
    verify(sched)
    k = data.draw(st.integers(0, len(sched.transfers) - 1), label="dropped transfer")
    with pytest.raises(ScheduleError):
        verify(_drop(sched, k))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.sampled_from(["reduce-scatter", "allreduce"]), st.data())
def test_repeating_a_reduce_counts_a_contribution_twice(n, kind, data):
    topo = fabrics.ring(n, 10.0)
    sched = baselines.ring(Collective(kind, n, 1 << 16), topo)
    reduces = [i for i, t in enumerate(sched.transfers) if t.reduce]
    k = data.draw(st.sampled_from(reduces), label="repeated reduce")
    again = Schedule(sched.collective, sched.chunks, sched.transfers + (sched.transfers[k],))
    with pytest.raises(ScheduleError, match="counted twice"):
        verify(again)


# ---------------------------------------------------------------- (d) determinism


@settings(max_examples=50, deadline=None)
@given(topology_docs(), st.sampled_from(BASELINE_CASES), SIZES)
def test_simulate_is_deterministic(doc, case, size):
    topo = build(doc)
    sched = build_baseline(case, topo, size)
    assume(sched is not None)
    assert build_baseline(case, topo, size) == sched
    first = simulate(sched, topo)
    assert simulate(sched, topo) == first
    assert simulate(sched, build(doc), Router(build(doc))) == first
    assert len(first.finish_us) == len(sched.transfers)
    assert max(first.finish_us) == first.time_us
    assert all(s <= f for s, f in zip(first.start_us, first.finish_us))
