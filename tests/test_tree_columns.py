"""Column generation over routed trees (solvers/tree_columns.py): the arborescence
pricing against networkx's Edmonds, the shallow variants, and forests that reach the
throughput LP's optimum with exact weights."""
from __future__ import annotations

from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.gather_lp import topology_lp
from models.forest import gather_forest, rooted_forest
from solvers.arborescence import PackedTree
from solvers.tree_columns import _find_cycles, column_forest, flatten, min_arborescence, shortest_path_tree, tree_paths
from topologies.io import load_topology


def _random_costs(n: int, data) -> np.ndarray:
    cost = np.full((n, n), np.inf)
    for u in range(n):
        for v in range(n):
            if u != v and data.draw(st.booleans(), label=f"arc {u}->{v}"):
                cost[u, v] = data.draw(st.integers(1, 9), label=f"cost {u}->{v}")
    for v in range(1, n):  # a path from 0 through every node keeps every node reachable
        if not np.isfinite(cost[v - 1, v]):
            cost[v - 1, v] = 9
    return cost


def _is_arborescence(parent: np.ndarray, root: int) -> bool:
    return parent[root] == -1 and (np.delete(parent, root) >= 0).all() and not _find_cycles(parent, root)


def _cost(cost: np.ndarray, parent: np.ndarray) -> float:
    return float(sum(cost[u, v] for v, u in enumerate(parent.tolist()) if u >= 0))


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 7), st.data())
def test_min_arborescence_matches_networkx_edmonds(n, data):
    cost = _random_costs(n, data)
    root = data.draw(st.integers(0, n - 1), label="root")
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from((u, v, cost[u, v]) for u in range(n) for v in range(n)
                              if np.isfinite(cost[u, v]) and v != root)
    try:
        reference = nx.minimum_spanning_arborescence(g)
    except nx.NetworkXException:
        return  # the root does not reach every node (the chain starts at 0)
    parent = min_arborescence(cost, root)
    assert _is_arborescence(parent, root)
    assert _cost(cost, parent) == pytest.approx(reference.size(weight="weight"))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 7), st.data())
def test_shallow_variants_are_arborescences_no_deeper_and_near_the_cost(n, data):
    cost = _random_costs(n, data)
    exact = min_arborescence(cost, 0)
    spt = shortest_path_tree(cost, 0)
    assert _is_arborescence(spt, 0)
    tie = 1.0
    flat = flatten(cost, exact, 0, tie)
    assert _is_arborescence(flat, 0)
    height = lambda parent: max(PackedTree(0, 1, tuple(parent.tolist())).depth())  # noqa: E731
    assert height(flat) <= height(exact)
    assert _cost(cost, flat) <= _cost(cost, exact) + tie * (n - 1) + 1e-9


@pytest.mark.parametrize("name", ["dgx-a100", "mi250", "dgx-a100x2", "hgx-h100x2"])
@pytest.mark.slow
def test_column_forest_reaches_the_throughput_lp(name):
    topo = load_topology(name)
    net, lp = topology_lp(topo)
    found = column_forest(net, upper=lp.x)
    assert found.converged
    assert float(found.rate) >= lp.x * (1 - 2e-4)   # the second phase may give up 1e-4
    assert float(found.rate) <= lp.x * (1 + 1e-9)   # and the LP is an upper bound
    n = topo.num_gpus
    per_root: dict[int, Fraction] = {}
    for col, w in zip(found.columns, found.weights):
        assert w > 0 and isinstance(w, Fraction)
        per_root[col.root] = per_root.get(col.root, Fraction(0)) + w
        assert _is_arborescence(np.array(col.parent), col.root)
        for v, path in enumerate(tree_paths(net, col, reverse=False)):
            if col.parent[v] >= 0:
                assert (path[0], path[-1]) == (topo.gpus[col.parent[v]], topo.gpus[v])
    assert per_root == {r: Fraction(1) for r in range(n)}


def test_column_forests_for_reductions_and_one_root():
    topo = load_topology("dgx-a100x2")
    up = gather_forest(topo, reverse=True, method="columns")
    assert float(up.rate_mbps) >= up.lp_rate_mbps * (1 - 2e-4)
    tree = up.trees[0]
    v = next(v for v, u in enumerate(tree.parent) if u >= 0)
    # reversed: data goes from the child up to the parent
    assert (tree.paths[v][0], tree.paths[v][-1]) == (topo.gpus[v], topo.gpus[tree.parent[v]])
    rooted = rooted_forest(topo, 5, method="columns")
    assert {t.root for t in rooted.trees} == {5}
    assert sum(t.weight for t in rooted.trees) == 1
    assert float(rooted.rate_mbps) >= rooted.lp_rate_mbps * (1 - 1e-6)


def test_column_forest_is_deterministic():
    topo = load_topology("mi250")
    net, lp = topology_lp(topo)
    a, b = column_forest(net, upper=lp.x), column_forest(net, upper=lp.x)
    assert a.columns == b.columns and a.weights == b.weights
