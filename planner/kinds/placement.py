"""The placement plan kind (`planner place`): a job's ranks on free GPUs of a cluster so its
communication groups stay inside leaf and spine domains.

Methods (docs/placement.md): `greedy` (planner/placement/methods.py), a candidate; `milp`
(models/placement_milp.py), exact over blocks to leaves, warm-started from the best
candidate; `best-fit` (Slurm topology/tree), `random` and `linear` (hostname order),
baselines. Scored by planner/placement/score.py (weighted spread, and the priced time of
each kind's farthest-reaching group); a plan is checked by re-deriving it: every rank on a
free GPU once, TP groups inside a node, the rank order the job's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from models.placement_milp import PlacementInputs, model_size, solve_placement
from planner.core.declined import Declined
from planner.core.errors import ExportMismatch, PlannerError
from planner.core.placement import Job
from planner.exports.placement import parse_rankfile, placement_text
from planner.kind import Attempt, Candidate, Context, Method, PlanKind
from planner.placement import methods
from planner.placement.bound import least_spreads, most_free, spread_bound
from planner.placement.cluster import Cluster
from planner.placement.score import TIER_WEIGHT, Scorer, weights
from planner.placement.timing import TIME_POINTS, group_seconds, priced_ranks
from topologies.types import Topology

AUTO_MAX_BINARIES = 60_000  # a larger model is left to greedy under auto
MAX_BINARIES = 400_000  # a larger one is not built at all (minutes of model building): greedy's plan stands
WORK_PER_BINARY_S = 1e-3


@dataclass(frozen=True)
class PlacementProblem:
    job: Job
    topology: Topology
    topology_name: str

    @cached_property
    def cluster(self) -> Cluster:
        return Cluster(self.topology, self.job)

    def describe(self) -> dict:
        c = self.cluster
        return {"job": self.job.describe(), "topology": self.topology_name, "nodes": len(c.names),
                "free_nodes": len(c.free), "gpus_per_node": c.gpus_per_node}


def placement_problem(job: Job, topo: Topology, topology_name: str | None = None) -> PlacementProblem:
    p = PlacementProblem(job, topo, topology_name or topo.name)
    p.cluster.blocks  # bad input and infeasibility (exit 2 / 3) before any method runs
    return p


@dataclass(frozen=True)
class Placement:
    node_of_block: tuple[int, ...]


def _heuristic(fn):
    def run(p: PlacementProblem, context: Context) -> Attempt:
        return Attempt(Placement(fn(p.cluster)))
    return run


def _milp_size(p: PlacementProblem) -> int:
    c = p.cluster
    leaves = c.leaves_free()
    spines = {c.domains[nodes[0]][1] for nodes in leaves.values()}
    return model_size(c.blocks, len(leaves), len(c.groups), len(spines))


def _milp_applies(p: PlacementProblem) -> str | None:
    size = _milp_size(p)
    return f"the model would have {size} binaries, more than {MAX_BINARIES}" if size > MAX_BINARIES else None


def _milp(p: PlacementProblem, context: Context) -> Attempt | Declined:
    c = p.cluster
    leaves = c.leaves_free()
    names = sorted(leaves, key=lambda l: (c.domains[leaves[l][0]][1], l))
    size = _milp_size(p)
    if context.requested == "auto" and size > AUTO_MAX_BINARIES:
        return Declined(f"{size} binaries, more than auto's {AUTO_MAX_BINARIES}")
    w = weights(c)
    hint = None
    if context.incumbent is not None:
        index = {l: i for i, l in enumerate(names)}
        hint = tuple(index[c.domains[n][0]] for n in context.incumbent.solution.node_of_block)
    inputs = PlacementInputs(c.blocks, tuple((l, c.domains[leaves[l][0]][1], len(leaves[l])) for l in names),
                             tuple((g.kind, g.blocks) for g in c.groups), tuple(w.items()),
                             tuple((k, v * TIER_WEIGHT["spine"]) for k, v in w.items()), _reach_costs(c), hint)
    work = min(context.options.time_limit_s, max(1.0, size * WORK_PER_BINARY_S))
    solution = solve_placement(inputs, work, context.options.solver)
    model = {"binaries": size, "variables": solution.variables, "constraints": solution.constraints}
    if solution.leaf_of_block is None:
        return Attempt(None, solution.result, model, why=f"the placement MILP ended {solution.result.termination.value}",
                       proof=solution.bound)
    taken = {l: iter(leaves[l]) for l in names}
    node_of = tuple(next(taken[names[l]]) for l in solution.leaf_of_block)
    return Attempt(Placement(node_of), solution.result, model, proof=solution.bound)


def _reach_costs(c: Cluster) -> tuple[tuple[str, float, float], ...]:
    """kind -> the score's time points for reaching past one leaf, past one spine domain."""
    seconds = c.tier_seconds
    base = sum(t[0] for t in seconds.values())
    if base <= 0:
        return ()
    return tuple((k, TIME_POINTS * (t[1] - t[0]) / base, TIME_POINTS * (t[2] - t[1]) / base)
                 for k, t in seconds.items())


METHODS: tuple[Method, ...] = (
    Method("greedy", "candidate", _heuristic(methods.greedy),
           "the lowest subtree that fits, leaves fullest first, groups of one kind kept together"),
    Method("milp", "exact", _milp, "blocks to leaves minimising the weighted spread (CP-SAT)",
           applies=_milp_applies, heuristic=False),
    Method("best-fit", "baseline", _heuristic(methods.best_fit), "Slurm topology/tree: lowest switch that fits"),
    Method("random", "baseline", _heuristic(methods.random), "free nodes in a seeded random order"),
    Method("linear", "baseline", _heuristic(methods.linear), "free nodes in hostname order"),
)


# ---------------------------------------------------------------- the kind
def ranks_of(p: PlacementProblem, solution: Placement) -> list[tuple[str, int]]:
    c = p.cluster
    g = c.gpus_per_node
    return [(c.names[solution.node_of_block[r // g]], r % g) for r in range(p.job.world)]


def _evaluate(p: PlacementProblem, solution: Placement):
    c = p.cluster
    nodes = solution.node_of_block
    if len(nodes) != c.blocks:
        raise PlannerError(f"the placement has {len(nodes)} nodes, the job needs {c.blocks}")
    if len(set(nodes)) != len(nodes):
        raise PlannerError("a node is given to two blocks of ranks")
    free = set(c.free)
    bad = [c.names[n] for n in nodes if n not in free]
    if bad:
        raise PlannerError(f"node {bad[0]} is not free")
    ranks = ranks_of(p, solution)
    if len(set(ranks)) != p.job.world:
        raise PlannerError("two ranks on one GPU")
    if p.job.tp_in_node:
        for group in p.job.groups("tp"):
            if len({ranks[r][0] for r in group}) != 1:
                raise PlannerError("a TP group spans nodes")
    scorer = Scorer(c, nodes)
    parts = scorer.parts()
    return (scorer.spreads(), parts), sum(parts)


@dataclass(frozen=True)
class PlacementBound:
    score: float
    per_kind: dict

    def to_json(self) -> dict:
        return {"score": self.score, "max_spread": self.per_kind,
                "derivation": "per tier: a group touches at least ceil(blocks / the most free nodes of one domain) "
                              "domains; on a grid of blocks, a domain of s blocks touches groups whose counts "
                              "multiply to at least s^(K-1) (Loomis-Whitney), which bounds the mean spreads; "
                              "max >= mean per kind (planner/placement/bound.py); a group larger than every "
                              "domain reaches past it; the placement MILP's dual bound where it ran, less what "
                              "its integer coefficients can move"}


def _bound(p: PlacementProblem, candidates: list[Candidate]) -> PlacementBound:
    c = p.cluster
    most = most_free(c)
    total = spread_bound(c)
    for kind, past_leaf, past_spine in _reach_costs(c):  # a group too big for one domain reaches past it
        sizes = [len(g.blocks) for g in c.groups if g.kind == kind]
        total += (past_leaf if max(sizes) > most["leaf"] else 0.0) + (past_spine if max(sizes) > most["spine"] else 0.0)
    proofs = [c.attempt.proof for c in candidates if c.attempt.proof is not None]
    return PlacementBound(max([total, *proofs]), least_spreads(c))


def _metrics(p: PlacementProblem, cand: Candidate, bound: PlacementBound) -> dict:
    c = p.cluster
    spreads, (spread_points, time_points) = cand.evidence
    out = {"score": cand.score, "spread_points": spread_points, "time_points": time_points,
           "lower_bound_score": bound.score,
           "ratio_to_bound": (cand.score + 1) / (bound.score + 1),  # + 1: defined when the bound is 0
           "spread": {k: {t: {"max": v[0], "mean": v[1]} for t, v in tiers.items()} for k, tiers in spreads.items()},
           "nodes_used": c.blocks, "free_nodes_left": len(c.free) - c.blocks}
    used = set(cand.solution.node_of_block)
    left: dict[str, int] = {}
    for leaf, nodes in c.leaves_free().items():
        left[leaf] = sum(1 for n in nodes if n not in used)
    out["free_nodes_left_per_leaf"] = dict(sorted(left.items()))
    times = _comm_times(p, cand.solution)
    if times:
        out["comm_time_s"] = times
        out["comm_time_per_step_s"] = sum(times.values())
    return out


def _comm_times(p: PlacementProblem, solution: Placement) -> dict[str, float]:
    """Per group kind with bytes_per_step: the per-step time of its most spread group, priced
    by the collective planner on the GPUs that group gets (planner/training/comm.py: the
    NCCL-measured link efficiencies, a group's share of what concurrent groups share); PP as
    one stage-to-stage copy of the bytes. The score prices the same groups by their reach
on representative nodes (planner/placement/timing.py)."""
    c, job = p.cluster, p.job
    per_step = dict(job.bytes_per_step)
    g = c.gpus_per_node
    out = {}
    for kind in c.kinds:
        size = per_step.get(kind, 0.0)
        if size <= 0:
            continue
        groups = job.groups(kind)

        def touched(ranks: tuple[int, ...]) -> tuple:
            nodes = {solution.node_of_block[r // g] for r in ranks}
            return (len({c.domains[n][1] for n in nodes}), len({c.domains[n][0] for n in nodes}), len(nodes))

        worst = max(groups, key=lambda ranks: (touched(ranks), -ranks[0]))
        out[kind] = group_seconds(c, kind, priced_ranks(kind, worst), solution.node_of_block, size)
    return out


def _body(p: PlacementProblem, cand: Candidate) -> dict:
    return {"ranks": [list(r) for r in ranks_of(p, cand.solution)], "order": "-".join(p.job.order)}


def _exporter(fmt: str):
    def export(p: PlacementProblem, cand: Candidate) -> str:
        text = placement_text(ranks_of(p, cand.solution), fmt)
        back = parse_rankfile(text, fmt, p.cluster.gpus_per_node)
        if back != ranks_of(p, cand.solution):
            raise ExportMismatch(f"the {fmt} reads back as another rank table")
        return text
    return export


def _read_back(fmt: str):
    def read(p: PlacementProblem, text: str) -> Placement:
        ranks = parse_rankfile(text, fmt, p.cluster.gpus_per_node)
        index = {n: i for i, n in enumerate(p.cluster.names)}
        g = p.cluster.gpus_per_node
        return Placement(tuple(index[ranks[b * g][0]] for b in range(p.cluster.blocks)))
    return read


FORMATS = ("rankfile", "hostfile", "cuda-visible-devices")
PLACEMENT = PlanKind(
    name="placement",
    methods=METHODS,
    describe=lambda p: p.describe(),
    evaluate=_evaluate,
    bound=_bound,
    metrics=_metrics,
    body=_body,
    exports={f: _exporter(f) for f in FORMATS},
    read_back={f: _read_back(f) for f in FORMATS},
    lost=lambda exact, a, name, b: f"{exact}: its placement scores {a:.4g}, {name}'s {b:.4g}",
    subject=lambda p: "placement",
    noun="placement",
    export_check="parsed back: same rank table",
    best_of="least weighted spread",
    verified_by="planner.kinds.placement (free GPUs once, TP in a node, rank order)",
)
