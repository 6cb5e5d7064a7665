"""Repeated exact max-flow queries on a topology's data plane.

Capacities are whole MB/s (rounded up: rounding down would understate a link and let a
bound exceed what a schedule achieves), divided by their common divisor into small
integers, so scipy's Dinic solver (C, int32) answers each query in about a millisecond on
a thousand GPUs. Queries whose scaled capacities would not fit in int32 run on networkx
with Python integers instead: same answer, slower.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import reduce
from typing import Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, dijkstra, maximum_flow

from topologies.dataplane import data_plane
from topologies.types import Topology

MBPS_PER_GBPS = 1000
_INT32_MAX = 2**31 - 1


def _whole_mbps_up(gbps: float) -> int:
    """Whole MB/s at or above `gbps` (at least 1); float noise below 1e-12 relative is
    not rounded up a whole unit (15.75 GB/s is 15750 MB/s, not 15751)."""
    return max(1, math.ceil(gbps * MBPS_PER_GBPS * (1 - 1e-12)))


def dinic(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, source: int, sink: int,
          keep: int | None = None) -> tuple[int, np.ndarray]:
    """Max flow value from `source` to `sink` on the digraph given by arc arrays (parallel arcs
    add up), and the source side of a min cut over the first `keep` nodes (all by default).
    scipy's Dinic in int32 when the capacities fit, networkx with Python integers otherwise."""
    keep = size if keep is None else keep
    if not _fits_int32(tails, heads, caps, source, sink):
        return _max_flow_exact(tails, heads, caps, source, sink, keep)
    a = _capacity_matrix(size, tails, heads, caps)
    result = maximum_flow(a, source, sink, method="dinic")
    residual = (a - result.flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    side = np.zeros(size, dtype=bool)
    side[reached] = True
    return int(result.flow_value), side[:keep]


def flow_value(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, source: int, sink: int) -> int:
    """Just the max-flow value of `dinic` (no cut): about 3x cheaper on small graphs."""
    if not _fits_int32(tails, heads, caps, source, sink):
        return _max_flow_exact(tails, heads, caps, source, sink, size)[0]
    return int(maximum_flow(_capacity_matrix(size, tails, heads, caps), source, sink, method="dinic").flow_value)


def _fits_int32(tails, heads, caps, source, sink) -> bool:
    """Whether scipy's int32 solver can take the problem: no flow exceeds what leaves the
    source or enters the sink, and residuals stay within twice that."""
    bound = min(int(caps[tails == source].sum()), int(caps[heads == sink].sum()))
    return bound * 2 <= _INT32_MAX and int(caps.max(initial=0)) <= _INT32_MAX


def _capacity_matrix(size: int, tails, heads, caps) -> sp.csr_array:
    """The arcs as a CSR capacity matrix, parallel arcs summed (built directly: scipy's COO
    conversion costs more than the flow on small graphs)."""
    order = np.lexsort((heads, tails))
    t, h, c = tails[order], heads[order], caps[order]
    first = np.ones(len(t), dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
    starts = np.flatnonzero(first)
    c = np.add.reduceat(c, starts) if len(c) else c
    t, h = t[starts], h[starts]
    indptr = np.zeros(size + 1, dtype=np.int32)
    np.cumsum(np.bincount(t, minlength=size), out=indptr[1:])
    return sp.csr_array((c.astype(np.int32), h.astype(np.int32), indptr), shape=(size, size))


def _max_flow_exact(tails, heads, caps, source, sink, keep) -> tuple[int, np.ndarray]:
    g = nx.DiGraph()
    for u, v, c in zip(tails.tolist(), heads.tolist(), caps.tolist()):
        if g.has_edge(u, v):
            g[u][v]["capacity"] += c
        else:
            g.add_edge(u, v, capacity=c)
    if source not in g or sink not in g:
        return 0, np.isin(np.arange(keep), [source])
    value, (reach, _) = nx.minimum_cut(g, source, sink)
    side = np.zeros(keep, dtype=bool)
    side[[u for u in reach if u < keep]] = True
    return int(value), side


def min_gather_ratio(size: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray,
                     gpus: list[int]) -> tuple[Fraction, np.ndarray]:
    """min over node sets S missing a GPU of cap(out of S) / |S ∩ gpus|, and a minimising S.

    Dinkelbach's iteration from the best single-GPU cut; each round runs one max-flow per
    GPU v (a super-source feeding x to every other GPU, sink v: a cut below (N-1)x names a
    better S). Exact rational arithmetic on integer capacities. O(rounds x N x max-flow).
    """
    n = len(gpus)
    is_gpu = np.zeros(size, dtype=bool)
    is_gpu[gpus] = True
    into = np.bincount(heads, weights=caps, minlength=size)
    worst = min(gpus, key=lambda g: (into[g], g))
    side = np.ones(size, dtype=bool)
    side[worst] = False
    x = Fraction(int(caps[side[tails] & ~side[heads]].sum()), n - 1)
    gpu_arr = np.array(gpus, dtype=np.int64)
    while True:
        p, q = x.numerator, x.denominator
        improved = None
        for v in gpus:
            others = gpu_arr[gpu_arr != v]
            value, cut = dinic(size + 1, np.concatenate([tails, np.full(n - 1, size)]),
                               np.concatenate([heads, others]),
                               np.concatenate([caps * q, np.full(n - 1, p)]), size, v, keep=size)
            if value < p * (n - 1):
                ratio = Fraction(int(caps[cut[tails] & ~cut[heads]].sum()), int(is_gpu[cut].sum()))
                if improved is None or ratio < improved[0]:
                    improved = (ratio, cut)
        if improved is None or improved[0] >= x:
            return x, side
        x, side = improved


class FlowNetwork:
    """The data plane of `topo` (reversed if asked) as integer arrays."""

    def __init__(self, topo: Topology, reverse: bool = False):
        plane = data_plane(topo)
        self.node_ids = [n.id for n in plane.nodes]
        self.index = {nid: i for i, nid in enumerate(self.node_ids)}
        mbps = [_whole_mbps_up(l.bandwidth) for l in plane.links]
        self.unit_mbps = reduce(math.gcd, mbps, 0) or 1
        tails = [self.index[l.src] for l in plane.links]
        heads = [self.index[l.dst] for l in plane.links]
        if reverse:
            tails, heads = heads, tails
        self.tail = np.array(tails, dtype=np.int64)
        self.head = np.array(heads, dtype=np.int64)
        self.cap = np.array([c // self.unit_mbps for c in mbps], dtype=np.int64)
        self.latency = np.array([l.latency for l in plane.links], dtype=float)
        self.gpus = [self.index[g] for g in topo.gpus]

    @property
    def size(self) -> int:
        return len(self.node_ids)

    def in_capacity(self, node: int) -> int:
        return int(self.cap[self.head == node].sum())

    def cut_capacity(self, side: np.ndarray) -> int:
        """Capacity (units) of the edges leaving the node set `side` (a boolean mask)."""
        crossing = side[self.tail] & ~side[self.head]
        return int(self.cap[crossing].sum())

    def max_flow(self, sources: Sequence[tuple[int, int | None]], sinks: Sequence[int], scale: int = 1,
                 blocked: Sequence[int] = ()) -> tuple[int, np.ndarray]:
        """Max flow from a super-source (edges to `sources`, capacity given or unbounded)
        into the `sinks`, every edge capacity times `scale`; nodes in `blocked` do not
        forward. Returns the value (units x scale) and the source side of a min cut."""
        n = self.size
        keep = np.ones(len(self.tail), dtype=bool)
        if len(blocked):
            stop = np.zeros(n, dtype=bool)
            stop[list(blocked)] = True
            stop[[s for s, _ in sources]] = False
            keep = ~stop[self.tail]
        tail, head, cap = self.tail[keep], self.head[keep], self.cap[keep] * scale
        finite = sum(c for _, c in sources if c is not None)
        big = int(cap.sum()) + finite + 1
        s_node, t_node = n, n + 1
        tails = np.concatenate([tail, np.full(len(sources), s_node), np.array(sinks, dtype=np.int64)])
        heads = np.concatenate([head, np.array([s for s, _ in sources], dtype=np.int64), np.full(len(sinks), t_node)])
        caps = np.concatenate([cap, np.array([big if c is None else c for _, c in sources], dtype=np.int64),
                               np.full(len(sinks), big, dtype=np.int64)])
        return dinic(n + 2, tails, heads, caps, s_node, t_node, n)

    def latency_from(self, sources: Sequence[int]) -> np.ndarray:
        """Least path latency (us) from each source to every node; rows follow `sources`.
        (Zero-latency links stay edges: the sparse solver keeps explicit zeros.)"""
        n = self.size
        a = sp.csr_array((self.latency, (self.tail, self.head)), shape=(n, n))
        return dijkstra(a, directed=True, indices=list(sources))
