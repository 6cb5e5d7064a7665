import numpy as np
import pytest

from solvers.eplb import eplb_rebalance

# The example in github.com/deepseek-ai/EPLB's README: 2 layers of 12 experts in 4 groups,
# 16 replicas on 2 nodes of 4 GPUs, and the physical-to-logical map it prints.
README_WEIGHTS = np.array([
    [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
])
README_PHY2LOG = np.array([
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
])


def test_reproduces_the_published_example():
    phy2log, count = eplb_rebalance(README_WEIGHTS, num_replicas=16, num_groups=4,
                                    num_nodes=2, num_gpus=8)
    assert phy2log.dtype == np.int64 and count.dtype == np.int64
    np.testing.assert_array_equal(phy2log, README_PHY2LOG)
    np.testing.assert_array_equal(
        count, np.stack([np.bincount(row, minlength=12) for row in README_PHY2LOG]))


CONFIGS = [
    # (layers, experts, replicas, groups, nodes, gpus)
    (3, 12, 16, 4, 2, 8),
    (4, 64, 80, 8, 2, 16),
    (2, 32, 48, 8, 4, 8),
    (2, 16, 16, 4, 4, 16),
    (3, 24, 32, 3, 2, 8),
    (2, 20, 24, 5, 1, 4),
    (2, 10, 10, 5, 2, 10),
    (1, 256, 288, 8, 4, 32),
]


@pytest.mark.parametrize("integral", [False, True])
@pytest.mark.parametrize("config", CONFIGS)
def test_plan_is_consistent(config, integral):
    layers, experts, replicas, groups, nodes, gpus = config
    rng = np.random.default_rng(sum(config) + integral)
    if integral:
        weights = rng.integers(0, 4, size=(layers, experts)).astype(float)
    else:
        weights = rng.gamma(0.7, 100.0, size=(layers, experts))
    phy2log, count = eplb_rebalance(weights, replicas, groups, nodes, gpus)

    assert phy2log.shape == (layers, replicas) and count.shape == (layers, experts)
    assert phy2log.min() >= 0 and phy2log.max() < experts
    for layer in range(layers):
        np.testing.assert_array_equal(count[layer], np.bincount(phy2log[layer], minlength=experts))
    assert count.min() >= 1 and count.sum(axis=1).tolist() == [replicas] * layers
    # Slots are GPU-major: each GPU holds a contiguous run of replicas / gpus slots, and
    # splitting each expert's load evenly over its replicas conserves the layer's load.
    assert replicas % gpus == 0
    slot_load = np.take_along_axis(weights / count, phy2log, axis=1)
    gpu_load = slot_load.reshape(layers, gpus, replicas // gpus).sum(axis=2)
    np.testing.assert_allclose(gpu_load.sum(axis=1), weights.sum(axis=1))

    if groups % nodes == 0:
        group_size = experts // groups
        node_of_slot = np.arange(replicas) // (replicas // nodes)
        for layer in range(layers):
            group_of_slot = phy2log[layer] // group_size
            nodes_of_group = [set(node_of_slot[group_of_slot == g]) for g in range(groups)]
            assert all(len(s) == 1 for s in nodes_of_group)
            groups_on_node = np.bincount([next(iter(s)) for s in nodes_of_group], minlength=nodes)
            assert groups_on_node.tolist() == [groups // nodes] * nodes


def test_extra_replicas_go_to_the_heaviest_expert():
    weights = np.array([[1.0, 1.0, 10.0, 1.0]])
    phy2log, count = eplb_rebalance(weights, num_replicas=8, num_groups=3, num_nodes=2,
                                    num_gpus=4)
    assert count.tolist() == [[1, 1, 5, 1]]
    assert sorted(phy2log[0].tolist()) == [0, 1, 2, 2, 2, 2, 2, 3]


@pytest.mark.parametrize("args, message", [
    ((12, 4, 2, 8), "multiple of num_gpus"),
    ((18, 4, 2, 9), "multiple of num_nodes"),
    ((8, 4, 2, 8), "below the number of experts"),
    ((16, 8, 2, 8), "multiple of num_groups"),
    ((16, 0, 2, 8), "num_groups must be positive"),
])
def test_rejects_bad_divisibility(args, message):
    with pytest.raises(ValueError, match=message):
        eplb_rebalance(README_WEIGHTS, *args)


def test_rejects_bad_weights():
    with pytest.raises(ValueError, match="layers, experts"):
        eplb_rebalance(np.ones(12), 16, 4, 2, 8)
    with pytest.raises(ValueError, match="non-negative"):
        eplb_rebalance(-README_WEIGHTS, 16, 4, 2, 8)
