"""Throughput LP for allgather / broadcast when switches cannot copy data.

The cut bound (planner/bounds.py) lets every node of the data plane count its full
capacity in every cut. A switch, NIC or PCIe bridge cannot replicate data, though: what
leaves it must have entered it. This LP adds that, so its optimum is a tighter bound, and
one that tree packing can reach (on loads that balance at every non-GPU node, complete
edge splitting exists; see solvers/splitting.py):

    max x   over arc loads 0 <= l_e <= c_e
    s.t.    sum of l into w = sum of l out of w        for every non-GPU node w
            l(out of Z) >= x |Z ∩ GPUs|                for every node set Z missing a GPU
                                                       (broadcast: Z holds the root, x)

The cut family is exponential, so cuts are generated: first each GPU's ingress and egress,
then, per round, one most violated cut per GPU v from a max-flow on the current loads
(a super-source feeding x to every other GPU, or to the root, sink v). Every schedule's
time-averaged link loads satisfy all of these constraints, so T >= (M/N) / x (broadcast
M / x) is a valid lower bound.

`rounds`, `cuts` and the solver's status are returned; the loads come back as floats and
`integral_loads` turns them into whole units that still balance at every non-GPU node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import maximum_flow

from solvers import registry
from solvers.linear_model import LinearModel, quicksum
from solvers.result import SolveOptions
from topologies.flows import FlowNetwork, dinic
from topologies.symmetry import NetworkSymmetry, network_symmetry
from topologies.types import Topology

MAX_ROUNDS = 200
_SEPARATION_UNITS = 1 << 28  # what the super-source feeds in a separation flow, scaled (int32 room to spare)
_SEPARATION_CLIP = 1 << 30   # scaled arc loads above this cannot bind a flow of _SEPARATION_UNITS


@dataclass(frozen=True)
class ThroughputLP:
    x: float                 # optimal throughput (units of the capacities)
    loads: np.ndarray        # l_e per arc
    rounds: int
    cuts: int
    status: str              # the last LP solve's termination
    solver: str = "highs"
    seconds: float = 0.0     # all LP solves (wall clock)
    converged: bool = True   # False: the rounds ran out with violated cuts left


def topology_lp(topo: Topology, reverse: bool = False, root: int | None = None) -> tuple[FlowNetwork, ThroughputLP]:
    """The LP for `topo`'s data plane (reversed for reductions; `root` a rank for broadcast
    / reduce), solved once per topology: the bound and the tree packing both ask for it.
    Kept on the (immutable) topology, as the data plane is. Without a root, the server
    rotations that are automorphisms of the topology reduce it (see `throughput_lp`)."""
    memo = topo.__dict__.setdefault("_throughput_lp", {})
    if (reverse, root) not in memo:
        net = FlowNetwork(topo, reverse)
        symmetry = network_symmetry(topo, net) if root is None else None
        memo[reverse, root] = (net, throughput_lp(net.size, net.tail, net.head, net.cap, net.gpus,
                                                  root=None if root is None else net.gpus[root],
                                                  symmetry=symmetry))
    return memo[reverse, root]


def throughput_lp(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, gpus: list[int],
                  root: int | None = None, solver: str = "highs", tolerance: float = 1e-7,
                  symmetry: NetworkSymmetry | None = None) -> ThroughputLP:
    """Solve the LP above by cut generation. `root` (a node index) asks for broadcast.

    With `symmetry` (automorphisms of the network, none moving a root) the LP keeps one
    load per orbit of arcs, one balance row per orbit of nodes, and separates cuts for one
    GPU per orbit: averaging any solution over the group gives a symmetric one of the same
    x, and a symmetric solution violates a cut of v iff it violates the image cut of g(v),
    so the optimum is the full LP's (128x fewer flows and variables on 128 servers)."""
    n = len(gpus)
    is_gpu = np.zeros(size, dtype=bool)
    is_gpu[gpus] = True
    model = LinearModel("gather-throughput")
    orbit = symmetry.arc_orbit if symmetry is not None else np.arange(len(tails))
    node_reps = (symmetry.node_orbit == np.arange(size)) if symmetry is not None else np.ones(size, dtype=bool)
    separated = [gpus[r] for r in symmetry.rank_reps] if symmetry is not None else list(gpus)
    variable = {int(e): model.add_var(f"l{e}", 0.0, float(caps[e])) for e in np.unique(orbit).tolist()}
    x = model.add_var("x", 0.0, float(caps.sum()))

    def total(arcs) -> object:
        counts: dict[int, int] = {}
        for e in arcs:
            counts[int(orbit[e])] = counts.get(int(orbit[e]), 0) + 1
        return quicksum(c * variable[o] for o, c in counts.items())

    into, out_of = _incidence(size, tails, heads)
    for w in range(size):
        if not is_gpu[w] and node_reps[w] and (into[w] or out_of[w]):
            model.add_constraint(total(into[w]) - total(out_of[w]), "==", 0)
    seen: set[bytes] = set()

    def add_cut(side: np.ndarray) -> bool:
        key = np.packbits(side).tobytes()
        if key in seen:
            return False
        seen.add(key)
        crossing = np.flatnonzero(side[tails] & ~side[heads])
        weight = 1 if root is not None else int(is_gpu[side].sum())
        model.add_constraint(total(crossing.tolist()) - weight * x, ">=", 0)
        return True

    for v in separated:
        if root is None or v != root:
            side = np.ones(size, dtype=bool)
            side[v] = False
            add_cut(side)
        if root is None or v == root:
            side = np.zeros(size, dtype=bool)
            side[v] = True
            add_cut(side)
    model.maximize(x)
    rounds, seconds, converged = 0, 0.0, True
    while True:
        rounds += 1
        result = registry.solve(model, solver, SolveOptions())
        seconds += result.seconds
        if result.values is None:
            raise RuntimeError(f"throughput LP: solver returned {result.termination}")
        values = np.array(result.values)
        ell, xv = values[[variable[int(o)].index for o in orbit]], float(values[x.index])
        if rounds > MAX_ROUNDS or xv <= 0:
            converged = xv <= 0
            break
        added = 0
        # scaled so the flow asked for is _SEPARATION_UNITS: the flooring below then loses
        # a negligible share of it however many GPUs there are (scaling by the total load
        # left 27 units per GPU at 1024 GPUs, and no cut was found)
        scale = _SEPARATION_UNITS / max(1e-300, xv * (1 if root is not None else n - 1))
        ell_int = np.minimum(np.floor(ell * scale), _SEPARATION_CLIP).astype(np.int64)
        feed = int(np.ceil(xv * scale))
        for v in separated:
            if root is not None and v == root:
                continue
            sources = [root] if root is not None else [g for g in gpus if g != v]
            need = feed * len(sources)
            value, side = dinic(size + 1, np.concatenate([tails, np.full(len(sources), size)]),
                                np.concatenate([heads, np.array(sources, dtype=np.int64)]),
                                np.concatenate([ell_int, np.full(len(sources), feed)]), size, v, keep=size)
            slack = len(tails) + len(sources)  # flooring loses under one unit per arc
            if value < need - slack - tolerance * need:
                added += add_cut(side)
                # the other extreme min cut: everything that cannot reach v in the residual
                added += add_cut(_sink_side_cut(size, tails, heads, ell_int, sources, feed, v))
        if not added:
            break
    return ThroughputLP(xv, ell, rounds, len(seen), str(result.termination), solver, seconds, converged)


def _sink_side_cut(size, tails, heads, caps, sources, feed, v) -> np.ndarray:
    """The largest source side of a min cut: the complement of what reaches v in the
    residual graph, found as the source side of the reversed problem (v feeds back to the
    super-source `size` through the sources' arcs)."""
    n_src = len(sources)
    _, reach = dinic(size + 1, np.concatenate([heads, np.array(sources, dtype=np.int64)]),
                     np.concatenate([tails, np.full(n_src, size)]),
                     np.concatenate([caps, np.full(n_src, feed)]), v, size, keep=size)
    return ~reach


def _incidence(size: int, tails: np.ndarray, heads: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Arc indices into and out of every node."""
    into: list[list[int]] = [[] for _ in range(size)]
    out_of: list[list[int]] = [[] for _ in range(size)]
    for e, (a, b) in enumerate(zip(tails.tolist(), heads.tolist())):
        out_of[a].append(e)
        into[b].append(e)
    return into, out_of


def integral_loads(size: int, tails: np.ndarray, heads: np.ndarray, loads: np.ndarray, caps: np.ndarray,
                   is_gpu: np.ndarray, scale: float) -> np.ndarray:
    """Whole-unit loads, at most `loads x scale` (and the scaled capacity), balanced at every
    non-GPU node: floors, then any excess into a node is taken off its inflowing arcs, which
    may unbalance the nodes those arcs come from; GPUs absorb any imbalance."""
    whole = np.minimum(np.floor(loads * scale + 1e-6), np.floor(caps * scale)).astype(np.int64)
    whole = np.maximum(whole, 0)
    into, out_of = _incidence(size, tails, heads)
    work = [w for w in range(size) if not is_gpu[w]]
    while work:
        w = work.pop()
        surplus = int(whole[into[w]].sum()) - int(whole[out_of[w]].sum())
        arcs, ends = (into[w], tails) if surplus > 0 else (out_of[w], heads)
        for e in sorted(arcs, key=lambda e: -whole[e]):
            if surplus == 0:
                break
            cut = min(abs(surplus), int(whole[e]))
            whole[e] -= cut
            surplus -= cut if surplus > 0 else -cut
            if cut and not is_gpu[ends[e]]:
                work.append(int(ends[e]))
    return whole


def fill_loads(size: int, tails: np.ndarray, heads: np.ndarray, loads: np.ndarray, caps: np.ndarray,
               gpus: list[int]) -> np.ndarray:
    """`loads` plus a maximum GPU-to-GPU flow in the capacity they leave: still balanced at
    every non-GPU node, and with as much slack as the links allow (more capacity never
    hurts a cut condition, and slack lets the splitting keep it)."""
    rank = {g: r for r, g in enumerate(gpus)}
    src, snk = size + len(gpus), size + len(gpus) + 1
    t = tails
    h = np.array([size + rank[b] if b in rank else b for b in heads.tolist()], dtype=np.int64)
    room = np.maximum(caps - loads, 0)
    big = int(room.sum()) + 1
    gpu_arr = np.array(gpus, dtype=np.int64)
    tt = np.concatenate([t, np.full(len(gpus), src), size + np.arange(len(gpus))])
    hh = np.concatenate([h, gpu_arr, np.full(len(gpus), snk)])
    cc = np.concatenate([room, np.full(len(gpus), big), np.full(len(gpus), big)])
    if big * 2 >= 2**31:
        return loads
    a = sp.csr_array((cc.astype(np.int32), (tt, hh)), shape=(snk + 1, snk + 1))
    flow = maximum_flow(a, src, snk, method="dinic").flow.tocsr()
    extra = np.asarray(flow[t, h]).ravel().astype(np.int64)
    return loads + np.maximum(extra, 0)


def arc_classes(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, labels: list) -> np.ndarray:
    """Arcs grouped by colour refinement (1-dimensional Weisfeiler-Leman) of the nodes:
    nodes start coloured by `labels`, then by the multiset of (capacity, neighbour colour)
    over their in- and out-arcs, until stable. On the symmetric fabrics (identical servers,
    rails, leaf groups) the classes are the orbits of the symmetry group."""
    palette: dict = {}
    color = np.array([palette.setdefault(l, len(palette)) for l in labels], dtype=np.int64)
    t_list, h_list, c_list = tails.tolist(), heads.tolist(), caps.tolist()
    for _ in range(size):
        sig_in: list[list] = [[] for _ in range(size)]
        sig_out: list[list] = [[] for _ in range(size)]
        for a, b, c in zip(t_list, h_list, c_list):
            sig_out[a].append((c, int(color[b])))
            sig_in[b].append((c, int(color[a])))
        palette = {}
        new = np.array([palette.setdefault((int(color[v]), tuple(sorted(sig_in[v])), tuple(sorted(sig_out[v]))),
                                           len(palette)) for v in range(size)], dtype=np.int64)
        if len(palette) == len(set(color.tolist())):
            break
        color = new
    keys: dict = {}
    return np.array([keys.setdefault((int(color[a]), int(color[b]), c), len(keys))
                     for a, b, c in zip(t_list, h_list, c_list)], dtype=np.int64)


def symmetrize(loads: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Loads averaged over each arc class (a convex combination of symmetric images of a
    solution when the classes are orbits; callers re-check the result)."""
    sums = np.bincount(classes, weights=loads)
    counts = np.bincount(classes)
    return (sums / counts)[classes]
