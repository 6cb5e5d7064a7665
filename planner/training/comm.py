"""Communication of a training configuration, priced by the collective planner on the GPUs
each group gets.

Ranks follow Megatron-LM's default order tp-cp-ep-dp-pp (first fastest; ep splits the data-
parallel dimension). A group is priced on `topologies.groups.group_topology` (its GPUs,
its share of what concurrent groups share) by the collective kind's fast methods (ring and
hierarchical; direct and flash for all-to-all; chain for a point-to-point copy),
each schedule timed by the project's simulator, and the fastest taken. A method's time is
affine in the size for a fixed schedule shape, so each (group, collective, method) is
planned at two sizes and the line through them prices every other size. Groups of the
same shape (the same local GPUs on servers of the same kind under the same leaves) are
planned once. A group larger than PLAN_MAX_GPUS is planned on its first servers holding
PLAN_MAX_GPUS GPUs and scaled: the fixed part with the number of GPUs (one more ring
step each), the per-byte part by (n-1)/n of ring algorithms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from planner.core.collectives import Collective
from planner.core.errors import PlannerError
from planner.core.gpus import GPU_PRESETS, NETWORK_EFFICIENCY
from planner.core.declined import Declined
from planner.search import run_method
from planner.simulator import simulate
from topologies.dataplane import data_plane_gap
from topologies.groups import group_topology
from topologies.types import Link, Topology, build_topology

ORDER = ("tp", "cp", "ep", "edp", "pp")  # Megatron's tp-cp-ep-dp-pp, dp split as ep x edp
GROUP_DIMS = {"tp": ("tp",), "cp": ("cp",), "ep": ("ep",), "dp": ("cp", "ep", "edp"), "edp": ("cp", "edp")}
PRICING_METHODS = {  # NCCL's own algorithms for the sizes training moves (MBs to GBs), and FLASH's all-to-all
    "allgather": ("ring", "hierarchical"),
    "reduce-scatter": ("ring", "hierarchical"),
    "alltoall": ("direct", "flash"),
    "broadcast": ("chain",),
}
PROBE_BYTES = (4 << 20, 256 << 20)
PLAN_MAX_GPUS = 64


@dataclass(frozen=True)
class Line:
    """seconds = fixed + per_byte x bytes (one method on one group shape)."""

    fixed: float
    per_byte: float
    method: str

    def seconds(self, size: float) -> float:
        return self.fixed + self.per_byte * size


def rank_of(coords: dict[str, int], sizes: dict[str, int]) -> int:
    rank, stride = 0, 1
    for dim in ORDER:
        rank += coords.get(dim, 0) * stride
        stride *= sizes[dim]
    return rank


def group_ranks(sizes: dict[str, int], kind: str, stage: int = 0) -> tuple[int, ...]:
    return _group_ranks(tuple(sizes[d] for d in ORDER), kind, stage)


@lru_cache(maxsize=65536)
def _group_ranks(shape: tuple[int, ...], kind: str, stage: int) -> tuple[int, ...]:
    """The ranks of the `kind` group holding the first rank of pipeline stage `stage`;
    `kind` is tp, cp, ep, dp (every rank of a data-parallel replica set, cp and ep
    included: the dense gradients' group), edp (the experts' gradients) or pp (stage and
    stage + 1)."""
    sizes = dict(zip(ORDER, shape))
    if kind == "pp":
        return (rank_of({"pp": stage}, sizes), rank_of({"pp": stage + 1}, sizes))
    dims = GROUP_DIMS[kind]
    out = [{}]
    for dim in dims:
        out = [{**c, dim: i} for i in range(sizes[dim]) for c in out]
    return tuple(sorted(rank_of({**c, "pp": stage}, sizes) for c in out))


SCALEUP_KINDS = ("nvlink", "xgmi")


def achieved(topo: Topology) -> Topology:
    """`topo` with each link at what NCCL-family runtimes reach on it: NVLink and xGMI at
    the GPU's measured ring bus bandwidth / nominal, NIC and fabric links at the measured
    multi-node fraction (planner/core/gpus.py). The simulator prices links at their
    bandwidth; a runtime's protocol and kernels reach this share of it."""
    def factor(l: Link) -> float:
        a, b = topo.node_by_id[l.src], topo.node_by_id[l.dst]
        if l.kind in SCALEUP_KINDS:
            models = [n.model for n in (a, b) if n.type == "gpu" and n.model in GPU_PRESETS]
            return min((GPU_PRESETS[m].scaleup_efficiency for m in models), default=1.0)
        if l.kind == "net" or "nic" in (a.type, b.type):
            return NETWORK_EFFICIENCY
        return 1.0
    links = [Link(l.src, l.dst, l.bandwidth * factor(l), l.latency, l.kind, l.count) for l in topo.links]
    return build_topology(topo.name, list(topo.nodes), links, dict(topo.meta))


@dataclass
class CommPricer:
    """Prices collectives on groups of `topology`'s GPUs (at the bandwidth runtimes achieve,
    `achieved`); keeps every line it fitted."""

    topology: Topology
    lines: dict[tuple, tuple[Line, ...]] = field(default_factory=dict)
    planned: int = 0
    _shapes: dict[tuple[int, ...], tuple] = field(default_factory=dict)
    _server_leaves: dict[int, tuple[str, ...]] = field(default_factory=dict)
    _achieved: Topology | None = None

    def seconds(self, collective: str, ranks: tuple[int, ...], size_bytes: float) -> float:
        """An all-reduce is priced as the reduce-scatter and the all-gather it is made of
        (NCCL's ring all-reduce, and the hierarchical one, are exactly that)."""
        if len(ranks) < 2 or size_bytes <= 0:
            return 0.0
        if collective == "allreduce":
            return self.seconds("reduce-scatter", ranks, size_bytes) + self.seconds("allgather", ranks, size_bytes)
        lines = self._lines(collective, ranks)
        return min(line.seconds(size_bytes) for line in lines)

    def _lines(self, collective: str, ranks: tuple[int, ...]) -> tuple[Line, ...]:
        planned = ranks if len(ranks) <= PLAN_MAX_GPUS else self._truncated(ranks)
        key = (collective, self.shape_key(planned))
        if key not in self.lines:
            self.lines[key] = self._plan_lines(collective, planned)
        lines = self.lines[key]
        if planned is ranks:
            return lines
        n, n0 = len(ranks), len(planned)
        ring = ((n - 1) / n) / ((n0 - 1) / n0)
        return tuple(Line(l.fixed * n / n0, l.per_byte * ring, l.method) for l in lines)

    def _truncated(self, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """The group's ranks on its first servers, at most PLAN_MAX_GPUS of them."""
        topo = self.topology
        by_server: dict[int, list[int]] = {}
        for r in ranks:
            by_server.setdefault(topo.server_of_gpu[topo.gpus[r]], []).append(r)
        out: list[int] = []
        for members in by_server.values():
            if len(out) + len(members) > PLAN_MAX_GPUS:
                break
            out += members
        return tuple(out) if len(out) >= 2 else ranks[:PLAN_MAX_GPUS]

    def shape_key(self, ranks: tuple[int, ...]) -> tuple:
        """What the price depends on: each GPU's server (in order of appearance), local
        name and model, and the leaves its server's NICs hang from."""
        key = self._shapes.get(ranks)
        if key is None:
            key = self._shapes[ranks] = self._shape(ranks)
        return key

    def _shape(self, ranks: tuple[int, ...]) -> tuple:
        topo = self.topology
        servers: dict[int, int] = {}
        leaves: dict[tuple, int] = {}
        out = []
        for r in ranks:
            gpu = topo.gpus[r]
            node = topo.node_by_id[gpu]
            server = topo.server_of_gpu[gpu]
            servers.setdefault(server, len(servers))
            leaf = self._leaves(server)
            leaves.setdefault(leaf, len(leaves))
            out.append((servers[server], gpu.split("/", 1)[-1], node.model, leaves[leaf]))
        return tuple(out)

    def _leaves(self, server: int) -> tuple[str, ...]:
        if not self._server_leaves:
            topo = self.topology
            found: dict[int, set[str]] = {}
            for n in topo.nodes:
                if n.type == "nic":
                    found.setdefault(n.server, set()).update(
                        l.dst for l in topo.out_links[n.id] if topo.node_by_id[l.dst].server is None)
            self._server_leaves.update({s: tuple(sorted(v)) for s, v in found.items()})
        return self._server_leaves.get(server, ())

    def _plan_lines(self, collective: str, ranks: tuple[int, ...]) -> tuple[Line, ...]:
        # here, not at the top: planner.kinds (the registry) imports the parallelism kind, which imports this
        from planner.kinds.collective import COLLECTIVE, collective_problem

        topo = self.topology
        if self._achieved is None:
            self._achieved = achieved(topo)
        gpus = tuple(topo.gpus[r] for r in ranks)
        sub = group_topology(self._achieved, gpus)
        if data_plane_gap(sub) is not None:  # its own NICs do not join it: share all of them
            sub = group_topology(self._achieved, gpus, whole_nics=False)
        n = len(ranks)
        sizes = [max(n, size // n * n) for size in PROBE_BYTES]
        first = collective_problem(Collective(collective, n, sizes[0]), sub)
        problems = [first] + [collective_problem(Collective(collective, n, size), sub, router=first.router)
                              for size in sizes[1:]]
        lines = []
        for method in PRICING_METHODS[collective]:
            times = []
            for problem in problems:
                if COLLECTIVE.method(method).applies(problem) is not None:
                    break
                attempt = run_method(COLLECTIVE, method, problem)
                if isinstance(attempt, Declined) or attempt.solution is None:
                    break
                self.planned += 1
                times.append(simulate(attempt.solution, sub, problem.router).time_us * 1e-6)
            if len(times) == 2:
                per_byte = (times[1] - times[0]) / (sizes[1] - sizes[0])
                lines.append(Line(max(0.0, times[0] - per_byte * sizes[0]), per_byte, method))
        if not lines:
            raise PlannerError(f"no {collective} method prices a group of {n} GPUs on {topo.name}")
        return tuple(lines)
