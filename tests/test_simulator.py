"""The schedule evaluator: the correctness checker (verify) and the alpha-beta simulation.

Fault tests build the smallest schedule showing each fault and check the ScheduleError
names it. Timing tests use hand-built topologies whose answer is worked out by hand:
bandwidth 10 GB/s = 1e4 bytes/us, so B bytes take B / 1e4 us plus the path latency.
"""
from __future__ import annotations

import json

import pytest

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.core.errors import ScheduleError
from planner.core.schedule import schedule_from_json, schedule_to_json
from planner.core.schedule import Chunk, Schedule, Transfer
from planner.simulator import simulate, verify
from solvers import baselines
from helpers import alltoallv, assert_baselines_respect_the_bound, build_baseline, explicit, first_case, schedule, whole
from topologies.io import load_topology, parse_topology
from topologies.routing import Router

B = 50_000  # bytes: 5 us on a 10 GB/s link


def pair(bw: float = 10.0, lat: float = 1.0):
    """Two GPUs joined by one link each way."""
    return explicit("pair", ["g0", "g1"], [("g0", "g1", bw, lat)])


def line3(bw01: float = 10.0, bw12: float = 10.0, lat: float = 1.0):
    """g0 - g1 - g2, no g0-g2 link."""
    return explicit("line3", ["g0", "g1", "g2"], [("g0", "g1", bw01, lat), ("g1", "g2", bw12, lat)])


def triangle(bw: float = 10.0, lat: float = 1.0):
    return explicit("tri", ["g0", "g1", "g2"],
                    [("g0", "g1", bw, lat), ("g1", "g2", bw, lat), ("g0", "g2", bw, lat)])


def approx(x: float):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def ring_allgather(n: int) -> Schedule:
    """Ring allgather on ranks 0..n-1 in order, one chunk per block."""
    coll = Collective("allgather", n, 1000 * n)
    transfers = [Transfer((i - s) % n, i, (i + 1) % n, s) for s in range(n - 1) for i in range(n)]
    return schedule(coll, transfers)


# ---------------------------------------------------------------- correctness checker


def test_correct_ring_allgather_verifies():
    deps = verify(ring_allgather(4))
    assert len(deps) == 12
    # step s+1 of rank i+1 forwards what rank i sent it in step s: a read-after-write dependency
    assert 0 in deps[4 + 1]


def test_rank_ending_without_a_required_chunk():
    coll = Collective("allgather", 2, 2000)
    sched = schedule(coll, [Transfer(0, 0, 1, 0)])  # block 1 never reaches rank 0
    with pytest.raises(ScheduleError, match=r"rank 0 does not end with chunk 1 .*needs \{1\}"):
        verify(sched)


def test_rank_ending_with_a_partial_reduction():
    coll = Collective("reduce", 3, 3000, root=0)
    sched = schedule(coll, [Transfer(0, 1, 0, 0, reduce=True)])  # rank 2's contribution never arrives
    with pytest.raises(ScheduleError, match=r"rank 0 ends with chunk 0 \(block b0 \[0,1\)\) missing contributions \{2\}"):
        verify(sched)


def test_reduction_counting_a_contribution_twice():
    coll = Collective("reduce", 3, 3000, root=0)
    ts = [Transfer(0, 1, 2, 0, reduce=True),   # rank 2 now holds {1,2}
          Transfer(0, 1, 0, 1, reduce=True),   # root holds {0,1}
          Transfer(0, 2, 0, 2, reduce=True)]   # {1,2} into {0,1}: 1 twice
    with pytest.raises(ScheduleError, match=r"transfer 2 .*\{1\} would be counted twice"):
        verify(schedule(coll, ts))
    # two reduces into one place in one step may not overlap either
    ts_same_step = [Transfer(0, 1, 2, 0, reduce=True), Transfer(0, 1, 0, 1, reduce=True),
                    Transfer(0, 2, 0, 1, reduce=True)]
    with pytest.raises(ScheduleError, match=r"counted twice"):
        verify(schedule(coll, ts_same_step))


def test_sending_a_chunk_not_held_yet():
    coll = Collective("allgather", 3, 3000)
    with pytest.raises(ScheduleError, match=r"transfer 0 \(step 0\): rank 1 sends chunk 0 before it holds"):
        verify(schedule(coll, [Transfer(0, 1, 2, 0)]))
    # a relay in the same step reads the value before the step: rank 1 has nothing yet
    relay = [Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 0)]
    with pytest.raises(ScheduleError, match=r"transfer 1 \(step 0\): rank 1 sends chunk 0 before it holds"):
        verify(schedule(coll, relay))


def test_two_copies_of_different_values_into_one_place():
    coll = Collective("allreduce", 3, 3000)
    ts = [Transfer(0, 0, 2, 0), Transfer(0, 1, 2, 0)]  # {0} and {1} both copied into rank 2
    with pytest.raises(ScheduleError, match=r"transfers 0 and 1 \(step 0\) write different values into rank 2 chunk 0"):
        verify(schedule(coll, ts))


def test_two_copies_of_the_same_value_are_allowed():
    coll = Collective("broadcast", 3, 3000, root=0)
    ts = [Transfer(0, 0, 1, 0), Transfer(0, 0, 2, 1), Transfer(0, 1, 2, 1)]  # both bring {0} to rank 2
    assert len(verify(schedule(coll, ts))) == 3


def test_a_copy_and_a_reduce_into_one_place():
    coll = Collective("allreduce", 3, 3000)
    ts = [Transfer(0, 0, 2, 0), Transfer(0, 1, 2, 0, reduce=True)]
    with pytest.raises(ScheduleError, match=r"transfers 0 and 1 \(step 0\) copy and reduce into rank 2 chunk 0"):
        verify(schedule(coll, ts))


@pytest.mark.parametrize("chunks, message", [
    ((Chunk(0, 0.0, 0.6), Chunk(0, 0.5, 1.0)), r"chunk 1 overlaps another chunk of block b0"),
    ((Chunk(0, 0.0, 1.0), Chunk(0, 0.0, 1.0)), r"overlaps another chunk of block b0"),
    ((Chunk(0, 0.0, 0.4), Chunk(0, 0.5, 1.0)), r"chunk 1 leaves a gap before another chunk of block b0"),
    ((Chunk(0, 0.1, 1.0),), r"chunk 0 leaves a gap"),
    ((Chunk(0, 0.0, 0.5),), r"chunks of block b0 cover only \[0, 0.5\)"),
    ((Chunk(0, 0.5, 0.5),), r"chunk 0 has an empty or out-of-range interval"),
    ((Chunk(0, 0.0, 1.5),), r"out-of-range interval"),
    ((Chunk(7, 0.0, 1.0),), r"chunk 0 names block 7, which does not exist"),
])
def test_chunks_must_partition_their_block(chunks, message):
    coll = Collective("broadcast", 2, 1000)
    ts = [Transfer(i, 0, 1, 0, channel=i) for i in range(len(chunks))]
    with pytest.raises(ScheduleError, match=message):
        verify(Schedule(coll, chunks, tuple(ts)))


def test_a_block_that_must_move_needs_a_chunk():
    coll = Collective("allgather", 2, 2000)
    sched = Schedule(coll, (Chunk(0, 0.0, 1.0),), (Transfer(0, 0, 1, 0),))
    with pytest.raises(ScheduleError, match=r"block b1 must move but the schedule has no chunk of it"):
        verify(sched)


def test_transfer_to_itself_or_outside_the_ranks():
    coll = Collective("allgather", 2, 2000)
    with pytest.raises(ScheduleError, match=r"transfer 1 goes from rank 1 to rank 1"):
        verify(schedule(coll, [Transfer(0, 0, 1, 0), Transfer(1, 1, 1, 0), Transfer(1, 1, 0, 0)]))
    with pytest.raises(ScheduleError, match=r"transfer 0 goes from rank 0 to rank 2"):
        verify(schedule(coll, [Transfer(0, 0, 2, 0)]))
    with pytest.raises(ScheduleError, match=r"transfer 0 moves chunk 5, which does not exist"):
        verify(schedule(coll, [Transfer(5, 0, 1, 0)]))
    with pytest.raises(ScheduleError, match=r"transfer 0 has a negative step"):
        verify(schedule(coll, [Transfer(0, 0, 1, -1)]))


@pytest.mark.parametrize("transfers, message", [
    ([Transfer(0, 0, 1, 0, deps=(1,)), Transfer(1, 1, 0, 1)],
     r"transfer 0 depends on transfer 1, which is not in an earlier step"),       # a later step
    ([Transfer(0, 0, 1, 0), Transfer(1, 1, 0, 0, deps=(0,))],
     r"transfer 1 depends on transfer 0, which is not in an earlier step"),       # the same step
    ([Transfer(0, 0, 1, 0), Transfer(1, 1, 0, 1, deps=(1,))], r"transfer 1 depends on transfer 1"),  # itself
    ([Transfer(0, 0, 1, 0), Transfer(1, 1, 0, 1, deps=(9,))], r"transfer 1 depends on transfer 9"),  # none such
])
def test_dependency_must_be_on_an_earlier_step(transfers, message):
    coll = Collective("allgather", 2, 2000)
    with pytest.raises(ScheduleError, match=message):
        verify(schedule(coll, transfers))


def test_path_must_join_src_to_dst():
    topo = line3()
    coll = alltoallv(3, {(0, 2): 1000})
    with pytest.raises(ScheduleError, match=r"transfer 0: path g1->g2 does not join rank 0 \(g0\) to rank 2 \(g2\)"):
        simulate(schedule(coll, [Transfer(0, 0, 2, 0, path=("g1", "g2"))]), topo)
    with pytest.raises(ScheduleError, match=r"does not join"):
        simulate(schedule(coll, [Transfer(0, 0, 2, 0, path=("g0", "g1"))]), topo)


def test_path_must_use_existing_links():
    topo = line3()
    coll = alltoallv(3, {(0, 2): 1000})
    with pytest.raises(ScheduleError, match=r"transfer 0: no link g0 -> g2 in topology line3"):
        simulate(schedule(coll, [Transfer(0, 0, 2, 0, path=("g0", "g2"))]), topo)
    with pytest.raises(ScheduleError, match=r"no link g1 -> nowhere"):
        simulate(schedule(coll, [Transfer(0, 0, 2, 0, path=("g0", "g1", "nowhere", "g2"))]), topo)
    # one-way links: the reverse direction does not exist
    one_way = explicit("oneway", ["g0", "g1", "g2"],
                       [("g0", "g1", 10.0, 0.0, False), ("g1", "g2", 10.0, 0.0, False), ("g2", "g0", 10.0, 0.0, False)])
    back = alltoallv(3, {(1, 0): 1000})
    with pytest.raises(ScheduleError, match=r"no link g1 -> g0"):
        simulate(schedule(back, [Transfer(0, 1, 0, 0, path=("g1", "g0"))]), one_way)
    # the default route relays through g2: bytes cross both links at once (latencies are 0)
    assert simulate(schedule(back, [Transfer(0, 1, 0, 0)]), one_way).time_us == approx(1000 / 1e4)


def test_schedule_for_another_gpu_count_is_refused():
    with pytest.raises(ScheduleError, match=r"the schedule is for 4 GPUs, the topology has 3"):
        simulate(ring_allgather(4), triangle())


def _pcie_path(a: int, b: int) -> tuple[str, ...]:
    """The PCIe/CPU route between two GPUs of a DGX A100 (GPU pairs share a switch)."""
    sa, sb = a // 2, b // 2
    path = [f"0/gpu{a}", f"0/pcie{sa}"]
    if sa != sb:
        path.append(f"0/cpu{sa // 2}")
        if sa // 2 != sb // 2:
            path.append(f"0/cpu{sb // 2}")
        path.append(f"0/pcie{sb}")
    return tuple(path + [f"0/gpu{b}"])


def test_explicit_path_must_respect_the_data_plane():
    """GPU-to-GPU traffic over PCIe/CPU inside an NVSwitch server is not a data-plane path.

    Regression: the simulator used to accept any chain of physical links, so this ring
    over the NVSwitch plus a second ring over PCIe ran 8% faster than lower_bound, which
    is computed on the data plane. Such paths are now refused."""
    topo = load_topology("dgx-a100")
    n = 8
    coll = Collective("allgather", n, 1 << 30)
    f = 300 / 331.5
    chunks = tuple(c for b in range(n) for c in (Chunk(b, 0.0, f), Chunk(b, f, 1.0)))
    ts = [Transfer(2 * ((i - s) % n) + ch, i, (i + 1) % n, s, channel=ch,
                   path=None if ch == 0 else _pcie_path(i, (i + 1) % n))
          for ch in (0, 1) for s in range(n - 1) for i in range(n)]
    sched = Schedule(coll, chunks, tuple(ts))
    verify(sched)  # the data movement itself is right
    with pytest.raises(ScheduleError, match=r"path 0/gpu0 -> 0/pcie0 -> 0/gpu1 is not allowed on the data plane"):
        simulate(sched, topo)


def test_explicit_path_through_the_network_of_a_lone_server_is_refused():
    # two GPUs of one server joined by a CPU (no scale-up fabric), each with a NIC on one leaf
    topo = parse_topology({
        "nodes": [{"id": "g0", "type": "gpu", "server": 0}, {"id": "g1", "type": "gpu", "server": 0},
                  {"id": "cpu", "type": "switch", "server": 0, "kind": "cpu"},
                  {"id": "n0", "type": "nic", "server": 0}, {"id": "n1", "type": "nic", "server": 0},
                  {"id": "leaf", "type": "switch", "kind": "leaf"}],
        "links": [{"src": "g0", "dst": "cpu", "bandwidth": 10}, {"src": "g1", "dst": "cpu", "bandwidth": 10},
                  {"src": "g0", "dst": "n0", "bandwidth": 10}, {"src": "g1", "dst": "n1", "bandwidth": 10},
                  {"src": "n0", "dst": "leaf", "bandwidth": 10}, {"src": "n1", "dst": "leaf", "bandwidth": 10}]})
    coll = alltoallv(2, {(0, 1): B})
    assert simulate(schedule(coll, [Transfer(0, 0, 1, 0, path=("g0", "cpu", "g1"))]), topo).time_us == approx(B / 1e4)
    with pytest.raises(ScheduleError, match=r"path g0 -> n0 -> leaf -> n1 -> g1 is not allowed on the data plane"):
        simulate(schedule(coll, [Transfer(0, 0, 1, 0, path=("g0", "n0", "leaf", "n1", "g1"))]), topo)


def test_explicit_path_equal_to_the_route_gives_the_same_time():
    topo = load_topology("hgx-h100x2")
    router = Router(topo)
    sched = build_baseline(first_case("alltoall"), topo, 1 << 24, router=router)
    gpus = topo.gpus
    routed = Schedule(sched.collective, sched.chunks,
                      tuple(Transfer(t.chunk, t.src, t.dst, t.step, t.reduce, t.channel,
                                     router.route(gpus[t.src], gpus[t.dst])) for t in sched.transfers))
    assert simulate(routed, topo, router).time_us == simulate(sched, topo, router).time_us


# ---------------------------------------------------------------- exact timing


def test_one_transfer_takes_bytes_over_bandwidth_plus_latency():
    res = simulate(schedule(alltoallv(2, {(0, 1): B}), [Transfer(0, 0, 1, 0)]), pair())
    assert res.time_us == approx(B / 1e4 + 1.0)
    assert res.start_us == (0.0,) and res.finish_us == (approx(6.0),)
    assert res.bytes_moved == B and res.transfers == 1 and res.steps == 1
    assert res.max_link_utilization == approx(1.0) and res.busiest_link == ("g0", "g1")


def test_latency_adds_up_along_the_path_and_overhead_per_transfer():
    from planner.simulator import SimOptions

    topo = explicit("star", ["g0", "g1"], [("g0", "sw", 10.0, 0.25), ("sw", "g1", 10.0, 0.5)], ["sw"])
    sched = schedule(alltoallv(2, {(0, 1): B, (1, 0): B}), [Transfer(0, 0, 1, 0), Transfer(1, 1, 0, 0)])
    assert simulate(sched, topo).time_us == approx(B / 1e4 + 0.75)
    assert simulate(sched, topo, options=SimOptions(overhead_us=2.0)).time_us == approx(B / 1e4 + 2.75)


def _split(coll: Collective, parts: int) -> tuple[Chunk, ...]:
    return tuple(Chunk(b, p / parts, (p + 1) / parts) for b in range(len(coll.blocks)) for p in range(parts))


def test_two_concurrent_transfers_share_a_link_equally():
    coll = alltoallv(2, {(0, 1): 2 * B})
    ts = [Transfer(0, 0, 1, 0, channel=0), Transfer(1, 0, 1, 0, channel=1)]
    res = simulate(schedule(coll, ts, _split(coll, 2)), pair())
    assert res.start_us == (0.0, 0.0)
    assert res.finish_us == (approx(2 * B / 1e4 + 1.0), approx(2 * B / 1e4 + 1.0))
    assert res.max_link_utilization == approx(1.0)


def test_transfers_on_one_connection_run_one_after_the_other():
    coll = alltoallv(2, {(0, 1): 2 * B})
    one = B / 1e4 + 1.0
    for steps in ((0, 0), (0, 1)):
        ts = [Transfer(0, 0, 1, steps[0]), Transfer(1, 0, 1, steps[1])]
        res = simulate(schedule(coll, ts, _split(coll, 2)), pair())
        assert res.finish_us[0] == approx(one)
        # waits for the first one's bytes to leave, not for them to arrive
        assert res.start_us[1] == approx(B / 1e4)
        assert res.time_us == approx(2 * B / 1e4 + 1.0)
    # another channel is another connection: no ordering between them
    ts = [Transfer(0, 0, 1, 0, channel=0), Transfer(1, 0, 1, 1, channel=1)]
    assert simulate(schedule(coll, ts, _split(coll, 2)), pair()).start_us == (0.0, 0.0)


def test_explicit_dependency_delays_the_start():
    coll = alltoallv(3, {(0, 1): B, (2, 1): B})
    one = B / 1e4 + 1.0
    free = simulate(schedule(coll, [Transfer(0, 0, 1, 0), Transfer(1, 2, 1, 1)]), triangle())
    assert free.start_us == (0.0, 0.0)  # a dataflow graph, not lock-step: step 1 need not wait
    assert free.time_us == approx(one)
    dep = simulate(schedule(coll, [Transfer(0, 0, 1, 0), Transfer(1, 2, 1, 1, deps=(0,))]), triangle())
    assert dep.start_us == (0.0, approx(one))
    assert dep.time_us == approx(2 * one)


def test_max_min_fairness_gives_the_leftover_to_the_unconstrained_flow():
    # g0 -> sw at 2 GB/s, g1 -> sw at 10 GB/s, both into g2 over sw -> g2 at 10 GB/s.
    # g0's flow is held to 2e3 B/us by its own link; g1's gets the other 8e3 B/us, then all 1e4.
    topo = explicit("star", ["g0", "g1", "g2"],
                    [("g0", "sw", 2.0, 0.5, False), ("g1", "sw", 10.0, 0.5, False), ("sw", "g2", 10.0, 0.5, False)],
                    ["sw"])
    coll = alltoallv(3, {(0, 2): 4000, (1, 2): 16000 + 10000})
    res = simulate(schedule(coll, [Transfer(0, 0, 2, 0), Transfer(1, 1, 2, 0)]), topo)
    assert res.finish_us == (approx(2.0 + 1.0), approx(3.0 + 1.0))
    assert res.max_link_utilization == approx(1.0)  # g0 -> sw and sw -> g2 are both full
    assert res.busiest_link in (("g0", "sw"), ("sw", "g2"))


def test_max_min_fairness_on_a_line_through_a_gpu():
    # g0 -> g1 at 4 GB/s, g1 -> g2 at 10 GB/s; g0 -> g2 is relayed through g1 (no other route)
    topo = line3(bw01=4.0, bw12=10.0, lat=0.0)
    coll = alltoallv(3, {(0, 2): 8000, (1, 2): 12000 + 10000})
    res = simulate(schedule(coll, [Transfer(0, 0, 2, 0), Transfer(1, 1, 2, 0)]), topo)
    assert res.finish_us == (approx(2.0), approx(3.0))


def test_max_min_fairness_parking_lot():
    # L1 = g0 -> g1 at 10 GB/s, L2 = g1 -> g2 at 4 GB/s. A crosses both, B only L1, C only L2.
    # L2 is the bottleneck: A and C get 2e3 B/us each, B the 8e3 left on L1. When A ends,
    # C has L2 to itself.
    topo = line3(bw01=10.0, bw12=4.0, lat=0.0)
    coll = alltoallv(3, {(0, 2): 4000, (0, 1): 8000, (1, 2): 8000})
    order = {b.name: i for i, b in enumerate(coll.blocks)}
    ts = [Transfer(order["b0-2"], 0, 2, 0), Transfer(order["b0-1"], 0, 1, 0), Transfer(order["b1-2"], 1, 2, 0)]
    res = simulate(schedule(coll, ts), topo)
    assert res.finish_us == (approx(2.0), approx(1.0), approx(3.0))


def test_three_flows_progressive_filling():
    # A fair share changes as flows finish: three equal flows on one 10 GB/s link, sizes 1:2:3.
    coll = alltoallv(2, {(0, 1): 60000})
    chunks = (Chunk(0, 0.0, 1 / 6), Chunk(0, 1 / 6, 0.5), Chunk(0, 0.5, 1.0))  # 10k, 20k, 30k bytes
    ts = [Transfer(i, 0, 1, 0, channel=i) for i in range(3)]
    res = simulate(Schedule(coll, chunks, tuple(ts)), pair(lat=0.0))
    # 3 flows at 1e4/3: the 10k one ends at 3 us; 2 flows at 5e3: the 20k one ends at 5 us; then 30k at 6 us
    assert res.finish_us == (approx(3.0), approx(5.0), approx(6.0))


def test_relay_starts_after_the_first_hop_has_finished():
    topo = line3()
    coll = Collective("broadcast", 3, B, root=0)
    res = simulate(schedule(coll, [Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 1)]), topo)
    one = B / 1e4 + 1.0
    assert res.start_us == (0.0, approx(one))
    assert res.time_us == approx(2 * one)
    # one transfer routed through g1 streams across both links: latency twice, bandwidth once
    direct = simulate(schedule(coll, [Transfer(0, 0, 1, 0), Transfer(0, 0, 2, 0)]), topo)
    assert direct.finish_us == (approx(2 * B / 1e4 + 1.0), approx(2 * B / 1e4 + 2.0))


def test_pipelined_relay():
    topo = line3()
    coll = Collective("broadcast", 3, B, root=0)
    sched = baselines.chain(coll, topo, channels=1, parts=2)
    res = simulate(sched, topo)
    stream, lat = B / 2 / 1e4, 1.0
    # chunk 1 follows chunk 0 on each connection as soon as chunk 0's bytes have left;
    # chunk 0 crosses hop 2 while chunk 1 crosses hop 1
    assert res.time_us == approx(stream + 2 * (stream + lat))


def test_same_step_exchange_does_not_deadlock():
    """Regression: every transfer of a step reads the value from before the step, so two
    ranks may swap (reduce into each other) one chunk in one step. verify accepted this
    but simulate waited on each write-after-read in a circle and reported a deadlock."""
    coll = Collective("allreduce", 2, 2000)
    ts = [Transfer(c, a, b, 0, reduce=True, channel=c) for c in (0, 1) for a, b in ((0, 1), (1, 0))]
    res = simulate(schedule(coll, ts), pair())
    assert res.time_us == approx(2 * 1000 / 1e4 + 1.0)  # two chunks share each direction
    # a rotation of one value among three ranks in one step
    bc = Collective("broadcast", 3, B, root=0)
    rot = [Transfer(0, 0, 1, 0), Transfer(0, 0, 2, 0), Transfer(0, 0, 1, 1), Transfer(0, 1, 2, 1), Transfer(0, 2, 0, 1)]
    res = simulate(schedule(bc, rot), triangle())
    one = B / 1e4 + 1.0
    assert res.start_us[2:] == (approx(one),) * 3
    assert res.time_us == approx(2 * one)


def test_write_waits_for_earlier_readers():
    # rank 1 forwards its {0} to rank 2 in step 1 and is overwritten by a reduce result in step 2:
    # the overwrite must not finish before the forward has read it.
    coll = Collective("broadcast", 3, B, root=0)
    ts = [Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 1), Transfer(0, 0, 1, 2, channel=1)]
    deps = verify(schedule(coll, ts))
    assert 1 in deps[2]
    res = simulate(schedule(coll, ts), triangle())
    assert res.start_us[2] == approx(res.finish_us[1])


# ---------------------------------------------------------------- baselines on presets

PRESETS = ("dgx-a100", "dgx1", "hgx-h100x2", "mi250")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("size", [1 << 18, 1 << 24])
@pytest.mark.slow
def test_every_baseline_verifies_and_is_not_faster_than_the_bound(name, size):
    assert_baselines_respect_the_bound(load_topology(name), size, context=name)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_ring_and_chain_times_in_closed_form(n):
    b, lat, size = 20.0, 0.75, 1 << 22
    topo = explicit(f"ring{n}", [f"g{i}" for i in range(n)], [(f"g{i}", f"g{(i + 1) % n}", b, lat) for i in range(n)])
    hop = size / n / (b * 1e3) + lat  # one block over one link
    ag = simulate(baselines.ring(Collective("allgather", n, size), topo, channels=1), topo)
    assert ag.time_us == approx((n - 1) * hop)
    ar = simulate(baselines.ring(Collective("allreduce", n, size), topo, channels=1), topo)
    assert ar.time_us == approx(2 * (n - 1) * hop)
    parts = 4
    bc = simulate(baselines.chain(Collective("broadcast", n, size), topo, channels=1, parts=parts), topo)
    stream = size / parts / (b * 1e3)
    assert bc.time_us == approx((parts - 1) * stream + (n - 1) * (stream + lat))


def test_ring_allgather_is_optimal_on_dgx_a100():
    topo = load_topology("dgx-a100")
    size = 1 << 30
    coll = Collective("allgather", 8, size)
    sched = baselines.ring(coll, topo)
    res = simulate(sched, topo)
    algbw = size / res.time_us / 1e3  # GB/s
    assert algbw == pytest.approx(8 / 7 * 300, rel=0.01)
    bound = lower_bound(coll, topo)
    assert res.time_us / bound.time_us <= 1.01
    assert res.time_us >= bound.time_us


# ---------------------------------------------------------------- JSON round trip


def _roundtrip(sched: Schedule) -> Schedule:
    body = json.loads(json.dumps(schedule_to_json(sched)))
    return schedule_from_json(body, sched.collective)


@pytest.mark.parametrize("name, kind, root", [
    ("dgx1", "allreduce", 0), ("hgx-h100x2", "broadcast", 3), ("mi250", "reduce", 3), ("dgx-a100", "alltoall", 0),
])
def test_json_round_trip_of_baselines(name, kind, root):
    topo = load_topology(name)
    sched = build_baseline(first_case(kind), topo, 1 << 22, root)
    back = _roundtrip(sched)
    assert back == sched
    assert simulate(back, topo).time_us == simulate(sched, topo).time_us


def test_json_round_trip_with_paths_deps_and_odd_chunks():
    topo = line3()
    coll = Collective("allreduce", 3, 3 * 7777)
    chunks = (Chunk(0, 0.0, 1 / 3), Chunk(0, 1 / 3, 1.0), Chunk(1, 0.0, 1.0), Chunk(2, 0.0, 1.0))
    ts = []
    for c in range(4):
        ts += [Transfer(c, 0, 1, 0, reduce=True), Transfer(c, 1, 2, 1, reduce=True, channel=2),
               Transfer(c, 2, 1, 2, path=("g2", "g1")), Transfer(c, 1, 0, 3, deps=(len(ts),) if c else ())]
    ts.append(Transfer(0, 2, 0, 4, path=("g2", "g1", "g0")))
    sched = Schedule(coll, chunks, tuple(ts), algorithm="hand", params=(("a", 1), ("b", "x")))
    res = simulate(sched, topo)
    back = _roundtrip(sched)
    assert back == sched
    assert simulate(back, topo) == res


def test_one_step_allgather_meets_the_latency_aware_bound():
    # Every GPU sends its block to every other in one step: on an NVSwitch server this is
    # exactly bandwidth term + one path latency, which the bound now claims.
    topo = load_topology("dgx-a100")
    coll = Collective("allgather", 8, 1 << 20)
    chunks = tuple(Chunk(b, 0.0, 1.0) for b in range(8))
    transfers = tuple(Transfer(b, b, r, 0) for b in range(8) for r in range(8) if r != b)
    sim = simulate(Schedule(coll, chunks, transfers), topo)
    bound = lower_bound(coll, topo)
    assert sim.time_us == approx(bound.time_us)
    assert bound.time_us == approx(bound.bandwidth_us + 1.4)


def test_late_small_transfer_does_not_stall_the_clock():
    # A small chunk that starts after ~1 s of simulated time: the float rounding of the
    # clock must not leave a few bytes that can never finish (this used to hang).
    topo = parse_topology({"nodes": [{"id": "a", "type": "gpu"}, {"id": "b", "type": "gpu"}],
                           "links": [{"src": "a", "dst": "b", "bandwidth": 450}]})
    coll = Collective("alltoallv", 2, 1, traffic=((0, 450_000_001_024), (0, 0)))
    big = Chunk(0, 0.0, 1 - 1024 / 450_000_001_024)
    small = Chunk(0, big.hi, 1.0)
    sched = Schedule(coll, (big, small), (Transfer(0, 0, 1, 0), Transfer(1, 0, 1, 1)))
    assert simulate(sched, topo).time_us == approx(450_000_001_024 / 450e3)


def test_a_write_completes_after_the_same_step_read_of_its_place():
    # Step 1: rank 1 forwards its chunk to rank 2 (a slow path) while rank 0 copies a new
    # value into rank 1 (a fast path). The copy streams at once but is complete only when
    # the forward has read the old value out.
    topo = parse_topology({"nodes": [{"id": f"g{i}", "type": "gpu"} for i in range(3)],
                           "links": [{"src": "g0", "dst": "g1", "bandwidth": 100.0},
                                     {"src": "g1", "dst": "g2", "bandwidth": 10.0},
                                     {"src": "g0", "dst": "g2", "bandwidth": 10.0}]})
    coll = Collective("broadcast", 3, 1000, root=0)
    sched = Schedule(coll, (Chunk(0, 0.0, 1.0),), (Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 1),
                                                   Transfer(0, 0, 1, 1, channel=1)))
    res = simulate(sched, topo)
    first = 1000 / 1e5
    assert res.start_us[2] == approx(first) and res.start_us[1] == approx(first)
    assert res.finish_us[1] == approx(first + 1000 / 1e4)
    assert res.finish_us[2] == approx(res.finish_us[1])  # held until the read streamed out


# ---------------------------------------------------------------- loop bodies and bundled streams


def star3():
    """g0, g1, g2 on one switch, 10 GB/s each way, 1 us per link."""
    return explicit("star3", ["g0", "g1", "g2"], [(g, "sw", 10.0, 1.0) for g in ("g0", "g1", "g2")], switches=["sw"])


def test_a_bundled_connection_shares_like_as_many_channels():
    # g0 -> g2 over 3 streams and g1 -> g2 over 1 share the switch's link into g2 3:1,
    # exactly as four separate channels would
    coll = alltoallv(3, {(0, 2): 4 * B, (1, 2): 4 * B})
    a02, a12 = coll.block_index["b0-2"], coll.block_index["b1-2"]
    bundled = Schedule(coll, (Chunk(a02, 0.0, 1.0), Chunk(a12, 0.0, 1.0)), (Transfer(0, 0, 2, 0), Transfer(1, 1, 2, 0)),
                       widths=((0, 2, 0, 3),))
    parts = tuple(Chunk(a02, k / 3, (k + 1) / 3) for k in range(3)) + (Chunk(a12, 0.0, 1.0),)
    split = Schedule(coll, parts, tuple(Transfer(k, 0, 2, 0, channel=k) for k in range(3)) + (Transfer(3, 1, 2, 0),))
    a, b = simulate(bundled, star3()), simulate(split, star3())
    assert a.finish_us == (approx(b.finish_us[0]), approx(b.finish_us[3]))
    # 4B bytes each; g0's at 3/4 of 1e4 bytes/us until it ends, then g1's alone at full rate
    assert a.finish_us[0] == approx(4 * B / 7500 + 2.0)


def test_a_loop_body_runs_like_its_runs_written_out():
    # a two-hop chain g0 -> g1 -> g2 of g0's block, run 4 times on quarter slices, equals
    # the schedule with the four slices as chunks and each connection working in order
    coll = Collective("broadcast", 3, 4 * B, root=0)
    body = Schedule(coll, (Chunk(0, 0.0, 1.0),), (Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 1)), loops=4)
    quarters = tuple(Chunk(0, k / 4, (k + 1) / 4) for k in range(4))
    out = Schedule(coll, quarters, tuple(t for k in range(4) for t in (Transfer(k, 0, 1, 2 * k), Transfer(k, 1, 2, 2 * k + 1))))
    a, b = simulate(body, line3()), simulate(out, line3())
    assert a.time_us == approx(b.time_us) and a.transfers == 8 and a.period_us == 0.0
    assert a.time_us == approx(5 * B / 1e4 + 2.0)  # four slices of B pipelined over two hops


def test_a_loop_body_json_round_trip_keeps_loops_and_widths():
    coll = Collective("allgather", 3, 3 * B)
    s = Schedule(coll, whole(coll), (Transfer(0, 0, 2, 0),) + tuple(Transfer(b, b, (b + 1) % 3, 0) for b in (1, 2))
                 + (Transfer(0, 0, 1, 0, channel=1), Transfer(1, 1, 0, 1), Transfer(2, 2, 1, 1)), loops=8,
                 widths=((0, 2, 0, 2),))
    back = schedule_from_json(json.loads(json.dumps(schedule_to_json(s))), coll)
    assert back == s


@pytest.mark.slow
def test_the_periodic_regime_extrapolates_the_runs_not_simulated(monkeypatch):
    # a multi-server tree schedule: every run simulated against the period measured on
    # a few of them and extrapolated (planner/simulator.py _loop_time)
    from planner import simulator
    from models.tree_packing import tree_schedule

    topo = load_topology("dgx-a100x2")
    sched = tree_schedule(Collective("allgather", 16, 256 << 20), topo, loops=128, per_block=8)
    full = simulate(sched, topo)
    assert full.runs_simulated == 128 and full.period_us == 0.0
    monkeypatch.setattr(simulator, "LOOP_UNROLL_TRANSFERS", 60 * len(sched.transfers))
    short = simulate(sched, topo)
    assert short.runs_simulated < 128 and short.period_us > 0
    assert short.time_us == pytest.approx(full.time_us, rel=simulator.PERIOD_TOLERANCE)


@pytest.mark.parametrize("loops,widths,message", [(0, (), "at least once"), (2, ((0, 1, 5, 2),), "carries no transfer"),
                                                  (2, ((0, 1, 0, 2), (0, 1, 0, 3)), "given twice"),
                                                  (2, ((0, 1, 0, 0),), "has 0 streams")])
def test_loops_and_widths_are_checked(loops, widths, message):
    coll = Collective("broadcast", 2, B, root=0)
    s = Schedule(coll, (Chunk(0, 0.0, 1.0),), (Transfer(0, 0, 1, 0),), loops=loops, widths=widths)
    with pytest.raises(ScheduleError, match=message):
        verify(s)


def test_a_loop_body_past_the_transfer_limit_is_refused(monkeypatch):
    from planner import simulator
    from planner.core import limits
    from planner.core.errors import ScheduleTooLarge

    monkeypatch.setattr(limits, "MAX_TRANSFERS", 100)
    coll = Collective("broadcast", 3, 4 * B, root=0)
    body = Schedule(coll, (Chunk(0, 0.0, 1.0),), (Transfer(0, 0, 1, 0), Transfer(0, 1, 2, 1)), loops=64)
    assert simulator.LOOP_UNROLL_TRANSFERS > 128
    with pytest.raises(ScheduleTooLarge, match="64 runs"):
        simulate(body, line3())
