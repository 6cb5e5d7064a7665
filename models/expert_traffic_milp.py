"""Cross-node token traffic as the milp's second objective: which node each GPU sits on.

Lexicographic. The first model (models/expert_milp.py) fixes what every GPU holds, so
it fixes the max GPU load. This model then moves whole GPUs' contents between nodes,
G/N per node. A GPU's load does not change when its contents move, so the first
objective stays exactly as solved. The objective is to serve as many co-activated tokens
as possible inside a node. A pair (e, f, tokens) is served when some node holds both.

Variables, on G GPUs and N nodes:
- a[g, n] = 1 if GPU g's contents go to node n;
- h[e, n] <= sum of a[g, n] over the GPUs g holding e, for a replicated expert e (for an
  unreplicated expert, its GPU's a[., n] itself);
- y[p, n] <= both experts' h (or a), with sum_n y[p, n] <= 1.

The objective is to maximise sum_p tokens_p sum_n y[p, n]. Pairs of two unreplicated
experts depend only on their two GPUs, so they are added up per GPU pair. A pair on a
single GPU is always served and is left out. The MAX_PAIR_ITEMS heaviest items are
modelled (more make CP-SAT slower to improve: on 64 GPUs, 400 items cut a layer's crossing
tokens by 18% within half a unit of work, 1,500 items by nothing).

Symmetry breaking: nodes are interchangeable, so GPU g may only go to nodes 0..g. The
current placement is given as a full hint. The result is kept only if it lowers the
crossing tokens over all pairs, not just the modelled ones. Like the first model, each
layer runs under a deterministic work limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.expert_milp import WALL_GUARD, run_in_parallel
from planner.core.experts import crossing_tokens, holds_by_node
from solvers import Limit, LinearModel, SolveOptions, quicksum, solve

MAX_PAIR_ITEMS = 400  # GPU pairs and replicated-expert pairs with y variables
# CP-SAT's deterministic time on this model runs about 3x slower than wall time (64 GPUs,
# 8 nodes, measured); the work limit is set from it so that it, not the wall clock, stops
# the search and the same input gives the same map.
WORK_PER_SECOND = 1 / 3
TOKEN_UNITS = 1_000_000  # integer objective units for the layer's co-activated tokens


@dataclass(frozen=True)
class NodeSolve:
    phys: np.ndarray  # the layer's map, GPUs' contents permuted between nodes
    status: str
    seconds: float
    limit: Limit | None
    variables: int
    crossing_before: float
    crossing_after: float


def place_gpus_on_nodes(phys: np.ndarray, experts: int, slots_per_gpu: int, gpus_per_node: int,
                        first: np.ndarray, second: np.ndarray, tokens: np.ndarray, work_s: float,
                        solver: str | None = None) -> NodeSolve:
    """The layer map with GPUs' contents reassigned to nodes (docstring above)."""
    slots_per_node = slots_per_gpu * gpus_per_node
    holds = holds_by_node(phys, slots_per_node, experts)
    before = crossing_tokens(holds, first, second, tokens)
    gpus = len(phys) // slots_per_gpu
    nodes = gpus // gpus_per_node
    if nodes < 2 or before <= 0:
        return NodeSolve(phys, "optimal", 0.0, None, 0, before, before)
    model, a, hint = _build(phys, holds, slots_per_gpu, gpus, nodes, gpus_per_node, first, second, tokens)
    model.set_hint(hint)
    wall_guard = WALL_GUARD * work_s / WORK_PER_SECOND + 1.0
    result = solve(model, solver, SolveOptions(time_limit_s=wall_guard, work_limit=work_s, threads=1))
    if not result.has_solution:
        return NodeSolve(phys, result.termination.value, result.seconds, result.limit, model.num_vars,
                         before, before)
    node_of = np.array([next(n for n in range(nodes) if result.value(a[g][n]) > 0.5) for g in range(gpus)])
    order = np.lexsort((np.arange(gpus), node_of))  # node 0's GPUs first, each node's in old order
    moved = phys.reshape(gpus, slots_per_gpu)[order].reshape(-1)
    after = crossing_tokens(holds_by_node(moved, slots_per_node, experts), first, second, tokens)
    better = after < before * (1 - 1e-12)
    return NodeSolve(moved if better else phys, result.termination.value, result.seconds, result.limit,
                     model.num_vars, before, after if better else before)


def place_layers_on_nodes(jobs: list[tuple], time_limit_s: float, solver: str | None = None) -> list[NodeSolve]:
    """`place_gpus_on_nodes` for every (phys, experts, K, GPUs per node, first, second,
    tokens) job, in parallel within about `time_limit_s`."""
    return run_in_parallel(place_gpus_on_nodes, jobs, time_limit_s, solver, WORK_PER_SECOND)


def summarize_nodes(solves: list[NodeSolve]) -> dict:
    return {"layers_solved": len(solves),
            "improved_layers": sum(s.crossing_after < s.crossing_before for s in solves),
            "crossing_tokens_before": math.fsum(s.crossing_before for s in solves),
            "crossing_tokens_after": math.fsum(s.crossing_after for s in solves),
            "limit_hit": any(s.limit is not None for s in solves),
            "variables_max": max((s.variables for s in solves), default=0),
            "seconds": math.fsum(s.seconds for s in solves)}


def _pair_items(phys, experts, slots_per_gpu, first, second, tokens):
    """(weight, kind, i, j): kind 'gpus' for two unreplicated experts on GPUs i < j,
    'experts' for a pair with a replicated expert e = i, f = j."""
    gpu_of_slot = np.arange(len(phys)) // slots_per_gpu
    counts = np.bincount(phys, minlength=experts)
    home = np.full(experts, -1)
    single = counts[phys] == 1
    home[phys[single]] = gpu_of_slot[single]
    by_gpus: dict[tuple[int, int], float] = {}
    items = []
    for e, f, t in zip(first.tolist(), second.tolist(), tokens.tolist()):
        if counts[e] == 1 and counts[f] == 1:
            ge, gf = sorted((int(home[e]), int(home[f])))
            if ge != gf:
                by_gpus[(ge, gf)] = by_gpus.get((ge, gf), 0.0) + t
        elif t > 0:
            items.append((t, "experts", e, f))
    items += [(t, "gpus", i, j) for (i, j), t in by_gpus.items()]
    items.sort(key=lambda item: (-item[0], item[1], item[2], item[3]))
    return items[:MAX_PAIR_ITEMS], counts


def _build(phys, holds, slots_per_gpu, gpus, nodes, gpus_per_node, first, second, tokens):
    """The model, a[g][n] (None where symmetry breaking rules it out) and the hint of the
    current placement, whose node holdings are `holds`."""
    m = LinearModel("experts-gpus-to-nodes")
    experts = holds.shape[1]
    items, counts = _pair_items(phys, experts, slots_per_gpu, first, second, tokens)
    scale = TOKEN_UNITS / max(float(tokens.sum()), 1e-300)
    held_on = [[] for _ in range(experts)]
    for slot, e in enumerate(phys.tolist()):
        held_on[e].append(slot // slots_per_gpu)
    node_now = np.arange(gpus) // gpus_per_node
    a = [[m.add_binary(f"a{g}_{n}") if n <= g else None for n in range(nodes)] for g in range(gpus)]
    hint = {}
    for g in range(gpus):
        m.add(quicksum(v for v in a[g] if v is not None) == 1)
        for n, v in enumerate(a[g]):
            if v is not None:
                hint[v] = float(node_now[g] == n)
    for n in range(nodes):
        m.add(quicksum(a[g][n] for g in range(n, gpus)) == gpus_per_node)

    h: dict[tuple[int, int], object] = {}

    def holder(e, n):
        """An expression that is 1 only if node n holds expert e."""
        if counts[e] == 1:
            return a[held_on[e][0]][n]
        if (e, n) not in h:
            v = h[(e, n)] = m.add_binary(f"h{e}_{n}")
            on = [a[g][n] for g in held_on[e] if a[g][n] is not None]
            if on:
                m.add(v - quicksum(on) <= 0)
            else:
                m.add(v == 0)
            hint[v] = float(holds[n, e])
        return h[(e, n)]

    served = []
    for i, (t, kind, p, q) in enumerate(items):
        weight = int(t * scale)
        if weight <= 0:
            continue
        ys, hinted = [], False
        for n in range(nodes):
            if kind == "gpus":
                left, right = a[p][n], a[q][n]
                now = node_now[p] == n and node_now[q] == n
            else:
                left, right = holder(p, n), holder(q, n)
                now = holds[n, p] and holds[n, q]
            if left is None or right is None:
                continue
            y = m.add_binary(f"y{i}_{n}")
            m.add(y - left <= 0)
            m.add(y - right <= 0)
            hint[y] = float(now and not hinted)
            hinted = hinted or bool(now)
            ys.append(y)
        if ys:
            m.add(quicksum(ys) <= 1)
            served.append(weight * quicksum(ys))
    m.maximize(quicksum(served))
    return m, a, hint
