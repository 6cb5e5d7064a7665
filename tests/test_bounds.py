"""Lower bounds against closed forms worked out by hand, and against every baseline.

Units: GB/s on links; 1 GB/s = 1e3 bytes/us, so M bytes at x GB/s take M / (x * 1e3) us.
"""
from __future__ import annotations

import pytest

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.simulator import simulate
from helpers import BASELINE_CASES, build_baseline, explicit
from topologies import fabrics
from topologies.io import load_topology, parse_topology, validate_topology
from topologies.presets import NVLINK4_GBPS, PCIE5_X16_GBPS
from topologies.routing import Router

M = 1 << 30


def rel(x: float, tol: float = 1e-12):
    return pytest.approx(x, rel=tol)


def us(nbytes: float, gbps: float) -> float:
    return nbytes / (gbps * 1e3)


def detail(bound) -> dict:
    return dict(bound.detail)


# ---------------------------------------------------------------- allgather / reduce-scatter


@pytest.mark.parametrize("n", [3, 4, 5, 8])
@pytest.mark.parametrize("b", [25.0, 12.5])
def test_allgather_on_a_bidirectional_ring(n, b):
    # The tightest cut isolates one GPU: it takes in 2b and needs the other n-1 blocks,
    # so per-GPU throughput 2b/(n-1); an arc of k GPUs sends 2b for k blocks (k <= n-1).
    bound = lower_bound(Collective("allgather", n, M), fabrics.ring(n, b))
    d = detail(bound)
    assert d["optimal_throughput_GBps_per_gpu"] == rel(2 * b / (n - 1))
    assert d["optimal_algbw_GBps"] == rel(n * 2 * b / (n - 1))
    assert d["cut_gpus"] == n - 1
    assert bound.bandwidth_us == rel(us(M / n, 2 * b / (n - 1)))
    assert bound.time_us == bound.bandwidth_us


def test_allgather_on_a_ring_of_two_has_one_link_each_way():
    d = detail(lower_bound(Collective("allgather", 2, M), fabrics.ring(2, 25.0)))
    assert d["optimal_throughput_GBps_per_gpu"] == rel(25.0)
    assert d["optimal_algbw_GBps"] == rel(50.0)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_allgather_on_fully_connected(n):
    b = 40.0
    bound = lower_bound(Collective("allgather", n, M), fabrics.fully_connected(n, b))
    d = detail(bound)
    assert d["optimal_throughput_GBps_per_gpu"] == rel(b)  # (n-1) b in, n-1 blocks
    assert d["optimal_algbw_GBps"] == rel(n / (n - 1) * (n - 1) * b)
    assert bound.bandwidth_us == rel(us(M / n, b))


def test_allgather_on_a_3x3_torus():
    # each GPU has 4 links in; the complement of one GPU is the tightest set: 4b / 8 GPUs
    d = detail(lower_bound(Collective("allgather", 9, M), fabrics.torus([3, 3], 10.0)))
    assert d["optimal_throughput_GBps_per_gpu"] == rel(4 * 10.0 / 8)


def test_allgather_on_hgx_h100x2_by_hand():
    topo = load_topology("hgx-h100x2")
    n = 16
    # A GPU takes in 18 NVLinks from the NVSwitch plus its PCIe link (the NIC side of the
    # data plane) and needs 15 blocks. A server takes in 8 NICs x 400 Gb/s = 400 GB/s and
    # needs 8 blocks for its 8 GPUs (each block enters once and is shared over NVLink).
    gpu_in = 18 * NVLINK4_GBPS + PCIE5_X16_GBPS
    per_gpu_cut = gpu_in / (n - 1)          # 513 / 15 = 34.2
    server_cut = 8 * 50.0 / 8               # 400 / 8 = 50
    assert (per_gpu_cut, server_cut) == (pytest.approx(34.2), 50.0)
    bound = lower_bound(Collective("allgather", n, M), topo)
    d = detail(bound)
    assert d["cut_throughput_GBps_per_gpu"] == rel(min(per_gpu_cut, server_cut))
    assert d["cut_gpus"] == 15  # the single-GPU in-cut binds, not the server cut
    # But the PCIe switch cannot copy: what it passes to the GPU must come in from the
    # NIC (400 Gb/s = 50 GB/s), not the 63 GB/s of the PCIe link. The throughput LP sees it.
    expected = (18 * NVLINK4_GBPS + 50.0) / (n - 1)  # 500 / 15 = 33.3
    assert d["optimal_throughput_GBps_per_gpu"] == pytest.approx(expected, rel=1e-5)
    assert d["optimal_algbw_GBps"] == pytest.approx(n * expected, rel=1e-5)
    assert bound.bandwidth_us == pytest.approx(us(M / n, expected), rel=1e-5)


def test_allgather_binds_at_the_server_when_the_network_is_oversubscribed():
    # one leaf per server, uplinks 400 GB/s / 4 = 100 GB/s: a server's cut is 100 / 8 GPUs
    topo = fabrics.cluster("hgx-h100", 2, fabric="fat-tree", leaf_size=1, oversubscription=4)
    d = detail(lower_bound(Collective("allgather", 16, M), topo))
    assert d["optimal_throughput_GBps_per_gpu"] == rel(100.0 / 8)
    assert d["optimal_algbw_GBps"] == rel(16 * 100.0 / 8)
    assert d["cut_gpus"] == 8


SYMMETRIC = {
    "ring5": lambda: fabrics.ring(5, 20.0, 0.5),
    "full4": lambda: fabrics.fully_connected(4, 25.0, 0.3),
    "torus2x3": lambda: fabrics.torus([2, 3], 50.0, 0.5),
    "mesh2x2": lambda: fabrics.mesh([2, 2], 50.0, 0.5),
    "dgx-a100": lambda: load_topology("dgx-a100"),
    "dgx1": lambda: load_topology("dgx1"),
    "hgx-h100x2": lambda: load_topology("hgx-h100x2"),
}


@pytest.mark.parametrize("name", sorted(SYMMETRIC))
def test_reduce_scatter_equals_allgather_on_symmetric_topologies(name):
    topo = SYMMETRIC[name]()
    n = topo.num_gpus
    ag = lower_bound(Collective("allgather", n, M), topo)
    rs = lower_bound(Collective("reduce-scatter", n, M), topo)
    assert rs.time_us == rel(ag.time_us)
    assert rs.bandwidth_us == rel(ag.bandwidth_us)
    assert detail(rs)["optimal_throughput_GBps_per_gpu"] == rel(detail(ag)["optimal_throughput_GBps_per_gpu"])


def test_reduce_scatter_uses_the_reversed_graph():
    # g0 -> g1 20, g1 -> g0 10, g1 <-> g2 10, g2 -> g0 30 (one way).
    # allgather: min over S of cap(out of S)/|S|: S = {g0, g1} sends only g1 -> g2: 10 / 2 = 5.
    # reduce-scatter: min over S of cap(into S)/|S|: the best is 10 (S = {g2}, {g0,g2} or {g1,g2}).
    topo = explicit("asym", ["g0", "g1", "g2"],
                    [("g0", "g1", 20.0, 0.0, False), ("g1", "g0", 10.0, 0.0, False),
                     ("g1", "g2", 10.0, 0.0), ("g2", "g0", 30.0, 0.0, False)])
    ag = detail(lower_bound(Collective("allgather", 3, M), topo))
    rs = detail(lower_bound(Collective("reduce-scatter", 3, M), topo))
    assert ag["optimal_throughput_GBps_per_gpu"] == rel(5.0)
    assert rs["optimal_throughput_GBps_per_gpu"] == rel(10.0)


# ---------------------------------------------------------------- broadcast / reduce


@pytest.mark.parametrize("topo_fn, flow", [
    (lambda: fabrics.ring(6, 20.0), 40.0),                 # two ways round
    (lambda: fabrics.fully_connected(5, 10.0), 40.0),      # direct + through each of the other 3
    (lambda: fabrics.mesh([2, 3], 10.0), 20.0),            # a corner has two links
    (lambda: load_topology("dgx-a100"), 300.0),            # the NVSwitch link; no PCIe path GPU to GPU
    (lambda: load_topology("hgx-h100x2"), 400.0),          # to the other server: 8 NICs x 50 GB/s
])
@pytest.mark.parametrize("kind", ["broadcast", "reduce"])
@pytest.mark.parametrize("root", [0, 3])
def test_broadcast_and_reduce_bound_is_size_over_min_max_flow(topo_fn, flow, kind, root):
    topo = topo_fn()
    bound = lower_bound(Collective(kind, topo.num_gpus, M, root=root), topo)
    assert detail(bound)["min_root_flow_GBps"] == rel(flow)
    assert bound.bandwidth_us == rel(us(M, flow))


def test_reduce_uses_the_reversed_graph():
    # g0 <-> g1 at 10; g1 -> g2 at 4, g2 -> g1 at 8: broadcast from g0 reaches g2 at 4,
    # reduce to g0 gathers from g2 at 8.
    topo = explicit("line", ["g0", "g1", "g2"],
                    [("g0", "g1", 10.0, 0.0), ("g1", "g2", 4.0, 0.0, False), ("g2", "g1", 8.0, 0.0, False)])
    assert detail(lower_bound(Collective("broadcast", 3, M), topo))["min_root_flow_GBps"] == rel(4.0)
    assert detail(lower_bound(Collective("reduce", 3, M), topo))["min_root_flow_GBps"] == rel(8.0)


# ---------------------------------------------------------------- allreduce


@pytest.mark.parametrize("n", [3, 4, 6])
def test_allreduce_on_fully_connected(n):
    b = 25.0
    bound = lower_bound(Collective("allreduce", n, M), fabrics.fully_connected(n, b))
    d = detail(bound)
    # 2(N-1) M over the total GPU egress n (n-1) b; every GPU-splitting cut carries (n-1) b
    assert d["gossip_term_us"] == rel(us(2 * (n - 1) * M, n * (n - 1) * b))
    assert d["cut_term_us"] == rel(us(M, (n - 1) * b))
    assert bound.bandwidth_us == rel(max(d["gossip_term_us"], d["cut_term_us"]))


def test_allreduce_on_a_ring():
    n, b = 6, 10.0
    d = detail(lower_bound(Collective("allreduce", n, M), fabrics.ring(n, b)))
    assert d["gossip_term_us"] == rel(us(2 * (n - 1) * M, n * 2 * b))
    assert d["cut_term_us"] == rel(us(M, 2 * b))


def test_allreduce_cut_term_binds_on_an_oversubscribed_network():
    # two DGX A100 on one leaf each, uplinks 8 x 25 GB/s / 4 = 50 GB/s between the servers
    topo = fabrics.cluster("dgx-a100", 2, fabric="fat-tree", leaf_size=1, oversubscription=4)
    bound = lower_bound(Collective("allreduce", 16, M), topo)
    d = detail(bound)
    assert d["cut_term_us"] == rel(us(M, 50.0))
    assert bound.bandwidth_us == d["cut_term_us"] > d["gossip_term_us"]


def test_allreduce_counts_the_gossip_among_servers():
    # 4 DGX A100 on a non-blocking network: each element crosses between servers at least
    # 2(S-1) = 6 times, over 4 servers' egress of 8 NICs x 25 GB/s: 1.5 M / 200 GB/s, the
    # time of reduce-scatter plus allgather there (and above the GPU-level gossip term)
    topo = load_topology("dgx-a100x4")
    d = detail(lower_bound(Collective("allreduce", 32, M), topo))
    assert d["server_gossip_term_us"] == rel(us(2 * 3 * M, 4 * 8 * 25.0))
    assert d["server_gossip_term_us"] > d["gossip_term_us"]


# ---------------------------------------------------------------- alltoall


def test_alltoall_on_hgx_h100x2_binds_at_server_egress():
    topo = load_topology("hgx-h100x2")
    bound = lower_bound(Collective("alltoall", 16, M), topo)
    # each of 8 GPUs sends M/16 to each of the 8 GPUs of the other server over 8 x 50 GB/s
    assert detail(bound)["binding"] == "server 0 egress"
    assert bound.bandwidth_us == rel(us(8 * 8 * M / 16, 400.0))
    # the per-GPU term is smaller: 15 M/16 over 450 GB/s NVLink + 63 GB/s PCIe
    assert us(15 * M / 16, 18 * NVLINK4_GBPS + PCIE5_X16_GBPS) < bound.bandwidth_us


def test_alltoall_on_one_server_binds_at_gpu_egress():
    bound = lower_bound(Collective("alltoall", 8, M), load_topology("dgx-a100"))
    assert detail(bound)["binding"] == "GPU 0 egress"
    assert bound.bandwidth_us == rel(us(7 * M / 8, 300.0))


def test_alltoallv_binds_where_the_traffic_is():
    # everyone sends 3000 bytes to GPU 2 and 1000 elsewhere: GPU 2's ingress (3 x 10 GB/s) binds
    n = 4
    traffic = tuple(tuple(0 if i == j else (3000 if j == 2 else 1000) for j in range(n)) for i in range(n))
    coll = Collective("alltoallv", n, 0, traffic=traffic)
    bound = lower_bound(coll, fabrics.fully_connected(n, 10.0))
    assert detail(bound)["binding"] == "GPU 2 ingress"
    assert bound.bandwidth_us == rel(us(3 * 3000, 30.0))


# ---------------------------------------------------------------- latency term and structure


def test_latency_term_is_the_farthest_shortest_path():
    n, lat = 7, 1.5
    ring = fabrics.ring(n, 100.0, lat)
    for kind in ("allgather", "reduce-scatter", "allreduce", "alltoall"):
        bound = lower_bound(Collective(kind, n, 64), ring)
        assert bound.latency_us == rel(3 * lat)  # 3 hops to the opposite side
        assert bound.time_us == bound.latency_us > bound.bandwidth_us
    line = explicit("line", ["g0", "g1", "g2"], [("g0", "g1", 10.0, 0.5), ("g1", "g2", 10.0, 0.25)])
    assert lower_bound(Collective("broadcast", 3, 8, root=0), line).latency_us == rel(0.75)
    assert lower_bound(Collective("reduce", 3, 8, root=1), line).latency_us == rel(0.5)
    only = Collective("alltoallv", 3, 0, traffic=((0, 8, 0), (0, 0, 0), (0, 0, 0)))
    assert lower_bound(only, line).latency_us == rel(0.5)  # only g0 -> g1 has data


def test_bound_combines_the_terms_and_one_gpu_moves_nothing():
    topo = load_topology("dgx1")
    for size in (64, M):
        b = lower_bound(Collective("allreduce", 8, size), topo)
        shortest = dict(b.detail)["min_path_latency_us"]
        assert shortest == rel(0.7)  # one NVLink hop
        assert b.time_us == max(b.bandwidth_us + shortest, b.latency_us)
        j = b.to_json()
        assert j["lower_bound_us"] == b.time_us and "derivation" in j and "gossip_term_us" in j
    single = fabrics.ring(1, 10.0)
    assert lower_bound(Collective("allgather", 1, M), single).time_us == 0.0


# ---------------------------------------------------------------- bounds hold for every baseline

EXTRA = {
    "torus2x3": lambda: fabrics.torus([2, 3], 50.0, 0.5),
    "mesh2x2": lambda: fabrics.mesh([2, 2], 50.0, 0.5),
    "dgx-a100x2-fat-tree-os4": lambda: fabrics.cluster("dgx-a100", 2, fabric="fat-tree", leaf_size=1,
                                                       oversubscription=4),
    "ring5": lambda: fabrics.ring(5, 20.0, 1.0),
    "full4": lambda: fabrics.fully_connected(4, 25.0, 0.3),
    "hgx-h100x2-fat-tree-os4": lambda: fabrics.cluster("hgx-h100", 2, fabric="fat-tree", leaf_size=1,
                                                       oversubscription=4),
}


@pytest.mark.parametrize("name", sorted(EXTRA))
@pytest.mark.parametrize("size", [4096, 1 << 24])
@pytest.mark.slow
def test_bound_never_exceeds_a_baseline(name, size):
    topo = EXTRA[name]()
    router = Router(topo)
    for case in BASELINE_CASES:
        label = case[0]
        sched = build_baseline(case, topo, size, router=router)
        if sched is None:
            continue
        t = simulate(sched, topo, router).time_us
        bound = lower_bound(sched.collective, topo)
        assert 0 < bound.time_us <= t * (1 + 1e-9), (name, label, t, bound.time_us)


@pytest.mark.parametrize("bw", [1.0004, 2.0004, 7.0000009, 499.9996])
def test_bound_holds_for_bandwidths_below_a_whole_mb_per_s(bw):
    """Regression: capacities were rounded to the nearest MB/s, so a 1.0004 GB/s link counted
    as 1.000 GB/s and the bound came out above what a single direct transfer achieves."""
    for topo in (fabrics.ring(2, bw), fabrics.ring(3, bw), fabrics.fully_connected(3, bw)):
        for case in BASELINE_CASES:
            label = case[0]
            sched = build_baseline(case, topo, 1 << 20)
            if sched is None:
                continue
            t = simulate(sched, topo).time_us
            assert lower_bound(sched.collective, topo).time_us <= t * (1 + 1e-9), (topo.name, label, bw)


def test_single_server_whose_switch_has_no_server_index():
    """Regression: on a one-server topology the data plane dropped every node outside the
    server, including the switch joining the GPUs when the file gave it no server: the
    bound crashed (networkx NodeNotFound) and the router found no route."""
    topo = parse_topology({
        "nodes": [{"id": f"g{i}", "type": "gpu", "server": 0} for i in range(3)] + [{"id": "sw", "type": "switch"}],
        "links": [{"src": f"g{i}", "dst": "sw", "bandwidth": 10, "latency": 0.5} for i in range(3)]})
    validate_topology(topo)
    bound = lower_bound(Collective("allgather", 3, 3000), topo)
    assert detail(bound)["optimal_throughput_GBps_per_gpu"] == rel(10.0 / 2)
    assert bound.latency_us == rel(1.0)
    for case in BASELINE_CASES:
        label = case[0]
        sched = build_baseline(case, topo, 3000)
        if sched is None:
            continue
        assert lower_bound(sched.collective, topo).time_us <= simulate(sched, topo).time_us * (1 + 1e-9), label
