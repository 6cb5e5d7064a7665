import pytest

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.core.errors import InputError
from planner.kinds.collective import plan_collective
from planner.simulator import simulate, verify
from solvers.baselines import ring
from solvers.hierarchical import hierarchical, hierarchical_applies
from solvers.double_binary_tree import double_binary_tree, midpoint_tree
from topologies import fabrics
from topologies.io import load_topology
from topologies.routing import Router


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 16, 33])
def test_midpoint_tree_is_a_balanced_binary_tree(n):
    order = list(range(n))[::-1]
    tree = midpoint_tree(order)
    assert set(tree.parent) == set(order) - {tree.root}
    assert all(len(kids) <= 2 for kids in tree.children.values())
    assert all(tree.parent[c] == v for v, kids in tree.children.items() for c in kids)
    assert tree.height[tree.root] == max(tree.depth.values()) <= n.bit_length()


def test_the_two_trees_share_few_inner_nodes():
    order = list(range(16))
    a, b = midpoint_tree(order), midpoint_tree(order[1:] + order[:1])
    inner_a = {v for v, kids in a.children.items() if kids}
    inner_b = {v for v, kids in b.children.items() if kids}
    assert len(inner_a & inner_b) <= 2


TOPOLOGIES = ["dgx-a100", "dgx1", "hgx-h100x2", "dgx1x2", "mi300xx2"]


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("size", [8 << 10, 64 << 20])
@pytest.mark.slow
def test_tree_allreduce_verifies_and_respects_the_bound(name, size):
    topo = load_topology(name)
    coll = Collective("allreduce", topo.num_gpus, size)
    sched = double_binary_tree(coll, topo)
    verify(sched)
    assert simulate(sched, topo).time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)


@pytest.mark.parametrize("name", ["hgx-h100x2", "dgx1x2", "mi300xx2"])
@pytest.mark.parametrize("kind", ["allgather", "reduce-scatter", "allreduce"])
def test_hierarchical_verifies_and_respects_the_bound(name, kind):
    topo = load_topology(name)
    coll = Collective(kind, topo.num_gpus, topo.num_gpus * 4096)
    sched = hierarchical(coll, topo)
    verify(sched)
    assert simulate(sched, topo).time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)


def test_hierarchical_needs_equal_servers():
    assert "two or more servers" in hierarchical_applies(load_topology("dgx-a100"))
    assert hierarchical_applies(load_topology("dgx-a100x2")) is None
    with pytest.raises(ValueError, match="two or more servers"):
        hierarchical(Collective("allreduce", 8, 8 << 10), load_topology("dgx-a100"))
    with pytest.raises(ValueError, match="does not do"):
        double_binary_tree(Collective("allgather", 8, 8 << 10), load_topology("dgx-a100"))


def test_tree_beats_ring_on_latency_bound_allreduce():
    # 16 GPUs on two servers, 1 KiB per GPU: the ring pays 2(N-1) hop latencies, the tree ~4 log N
    topo = load_topology("hgx-h100x2")
    coll = Collective("allreduce", 16, 16 << 10)
    router = Router(topo)
    assert simulate(double_binary_tree(coll, topo, router=router), topo, router).time_us < \
        simulate(ring(coll, topo, router=router), topo, router).time_us


@pytest.mark.parametrize("name,size", [("dgx1", 8 << 10), ("dgx-a100x2", 16 << 10), ("dgx-a100x2", 1 << 30),
                                       ("hgx-h100x2", 16 << 20)])
@pytest.mark.slow
def test_auto_is_the_best_baseline(name, size):
    topo = load_topology(name)
    coll = Collective("allreduce", topo.num_gpus, size)
    result = plan_collective(coll, topo, "auto")
    times = result.plan.metrics["candidates"]
    assert result.plan.method == min(times, key=times.get)
    assert result.plan.metrics["time_us"] == min(times.values())
    if len(topo.servers) == 1:
        assert "hierarchical" in result.plan.metrics["skipped"]


def test_hierarchical_on_a_fat_tree():
    topo = fabrics.cluster("dgx-a100", 4, fabric="fat-tree", leaf_size=2, oversubscription=2)
    coll = Collective("allreduce", 32, 32 << 16)
    sched = hierarchical(coll, topo)
    assert simulate(sched, topo).time_us >= lower_bound(coll, topo).time_us
