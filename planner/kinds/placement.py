"""The placement plan kind (`planner place`): a job's ranks on free GPUs of a cluster so its
communication groups stay inside NVLink, leaf and spine domains.

Methods (docs/placement.md): `greedy` (planner/placement/methods.py), a candidate; `milp`
(models/placement_milp.py), exact over blocks to the finest domains, or its hierarchical
decomposition (spine domains, then leaves, then NVLink domains) above FLAT_MAX_BINARIES,
warm-started from the best candidate; `best-fit` (Slurm topology/tree), `random` and
`linear` (hostname order), baselines. Scored by planner/placement/score.py (weighted spread,
and the priced time of each kind's farthest-reaching group); a plan is checked by
re-deriving it: every rank on a free GPU once, TP groups inside an NVLink domain, whole
nodes when asked, the rank order the job's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from models.placement_milp import PlacementInputs, model_size, solve_hierarchical, solve_placement
from planner.core.declined import Declined
from planner.core.errors import ExportMismatch, InputError, PlannerError
from planner.core.placement import Job
from planner.exports.placement import parse_rankfile, placement_text
from planner.kind import Attempt, Candidate, Context, Method, PlanKind
from planner.placement import methods
from planner.placement.bound import kept_bound, least_spreads
from planner.placement.cluster import Cluster
from planner.placement.score import TIER_WEIGHT, Scorer, weights
from planner.placement.timing import TIME_POINTS, group_seconds, priced_ranks
from topologies.types import Topology

FLAT_MAX_BINARIES = 5_000  # a larger flat model is decomposed (spine domains first); docs/placement.md measures both
AUTO_MAX_BINARIES = 60_000  # a larger model (the largest of the decomposition's) is left to greedy under auto
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
                "free_nodes": sum(1 for f in c.free_gpus if len(f) == c.gpus_per_node),
                "free_gpus": sum(len(f) for f in c.free_gpus), "gpus_per_node": c.gpus_per_node,
                "block_gpus": c.block_size, "free_slots": len(c.free), "tiers": list(c.tiers)}


def placement_problem(job: Job, topo: Topology, topology_name: str | None = None) -> PlacementProblem:
    p = PlacementProblem(job, topo, topology_name or topo.name)
    p.cluster.blocks  # bad input and infeasibility (exit 2 / 3) before any method runs
    return p


@dataclass(frozen=True)
class Placement:
    slot_of_block: tuple[int, ...]  # indices into Cluster.slots


def _heuristic(fn):
    def run(p: PlacementProblem, context: Context) -> Attempt:
        return Attempt(Placement(fn(p.cluster)))
    return run


def _finest(c: Cluster) -> tuple[list[str], dict[str, list[int]]]:
    """The finest tier's domains with free slots, grouped by their coarser domains, and
    their free slots."""
    free = c.free_in(c.tiers[0])
    names = sorted(free, key=lambda d: (tuple(reversed(c.domains[free[d][0]])), d))
    return names, free


def _milp_size(p: PlacementProblem) -> tuple[int, bool]:
    """(about the binaries of the largest model solved, whether it is the decomposition)."""
    c = p.cluster
    names, free = _finest(c)
    per_tier = [len({c.domains[free[d][0]][t] for d in names}) for t in range(len(c.tiers))]
    flat = model_size(c.blocks, per_tier, len(c.groups))
    if flat <= FLAT_MAX_BINARIES or len(c.tiers) == 1:
        return flat, False
    widest = 0  # the most finest domains under one domain of a coarser tier
    for t in range(1, len(c.tiers)):
        under: dict[str, int] = {}
        for d in names:
            key = c.domains[free[d][0]][t]
            under[key] = under.get(key, 0) + 1
        widest = max(widest, max(under.values()))
    return model_size(c.blocks, [max(per_tier[-1], widest), *per_tier[1:]], len(c.groups)), True


def _milp_applies(p: PlacementProblem) -> str | None:
    size, _ = _milp_size(p)
    return f"the model would have {size} binaries, more than {MAX_BINARIES}" if size > MAX_BINARIES else None


def _milp(p: PlacementProblem, context: Context) -> Attempt | Declined:
    c = p.cluster
    names, free = _finest(c)
    size, decomposed = _milp_size(p)
    if context.requested == "auto" and size > AUTO_MAX_BINARIES:
        return Declined(f"{size} binaries, more than auto's {AUTO_MAX_BINARIES}")
    w = weights(c)
    hint = None
    if context.incumbent is not None:
        index = {d: i for i, d in enumerate(names)}
        hint = tuple(index[c.domains[x][0]] for x in context.incumbent.solution.slot_of_block)
    inputs = PlacementInputs(c.blocks, tuple((c.domains[free[d][0]], len(free[d])) for d in names),
                             tuple((g.kind, g.blocks) for g in c.groups),
                             tuple((k, tuple(v * TIER_WEIGHT[t] for t in c.tiers)) for k, v in w.items()),
                             _reach_costs(c), hint)
    work = min(context.options.time_limit_s, max(1.0, size * WORK_PER_BINARY_S))
    solution = (solve_hierarchical if decomposed else solve_placement)(inputs, work, context.options.solver)
    model = {"binaries": size, "variables": solution.variables, "constraints": solution.constraints,
             "decomposed": decomposed}
    proof = solution.bound
    if solution.domain_of_block is None:
        return Attempt(None, solution.result, model, why=f"the placement MILP ended {solution.result.termination.value}",
                       proof=proof)
    taken = {d: iter(free[d]) for d in names}
    slot_of = tuple(next(taken[names[d]]) for d in solution.domain_of_block)
    if hint is not None:
        # the warm start is a point of the model: keep it where the model's rounded
        # coefficients let the solver end on a placement that scores worse
        if context.incumbent.score < Scorer(c, slot_of).total() - 1e-9:
            slot_of, model = context.incumbent.solution.slot_of_block, {**model, "kept_warm_start": True}
    return Attempt(Placement(slot_of), solution.result, model, proof=proof)


def _reach_costs(c: Cluster) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """kind -> the score's time points for reaching past one domain of each tier."""
    seconds = c.tier_seconds
    base = sum(t[0] for t in seconds.values())
    if base <= 0:
        return ()
    return tuple((k, tuple(TIME_POINTS * (t[i + 1] - t[i]) / base for i in range(len(c.tiers))))
                 for k, t in seconds.items())


METHODS: tuple[Method, ...] = (
    Method("greedy", "candidate", _heuristic(methods.greedy),
           "the lowest subtree that fits, leaves fullest first, groups of one kind kept together"),
    Method("milp", "exact", _milp, "blocks to domains minimising the weighted spread (CP-SAT; decomposed "
           "top tiers first when large)",
           applies=_milp_applies, heuristic=False),
    Method("best-fit", "baseline", _heuristic(methods.best_fit), "Slurm topology/tree: lowest switch that fits"),
    Method("random", "baseline", _heuristic(methods.random), "free slots in a seeded random order"),
    Method("linear", "baseline", _heuristic(methods.linear), "free slots in hostname order"),
)


# ---------------------------------------------------------------- the kind
def ranks_of(p: PlacementProblem, solution: Placement) -> list[tuple[str, int]]:
    c = p.cluster
    b = c.block_size
    places = (c.slots[solution.slot_of_block[r // b]].gpus[r % b] for r in range(p.job.world))
    return [(c.names[node], x) for node, x in places]


def _evaluate(p: PlacementProblem, solution: Placement):
    c, job = p.cluster, p.job
    slots = solution.slot_of_block
    if len(slots) != c.blocks:
        raise PlannerError(f"the placement has {len(slots)} blocks of ranks, the job has {c.blocks}")
    ranks = ranks_of(p, solution)
    if len(set(ranks)) != job.world:
        raise PlannerError("two ranks on one GPU")
    index = {n: i for i, n in enumerate(c.names)}
    bad = [f"{host} GPU {x}" for host, x in ranks if x not in c.free_gpus[index[host]]]
    if bad:
        raise PlannerError(f"{bad[0]} is not free")
    if job.whole_nodes:
        per_host: dict[str, int] = {}
        for host, _ in ranks:
            per_host[host] = per_host.get(host, 0) + 1
        part = [h for h, n in per_host.items() if n != c.gpus_per_node]
        if part:
            raise PlannerError(f"node {part[0]} is shared, the job takes whole nodes")
    if job.tp_in_node:
        k = c.nodes_per_server
        for group in job.groups("tp"):
            if len({index[ranks[r][0]] // k for r in group}) != 1:
                raise PlannerError("a TP group spans NVLink domains")
    scorer = Scorer(c, slots)
    parts = scorer.parts()
    return (scorer.spreads(), parts), sum(parts)


@dataclass(frozen=True)
class PlacementBound:
    score: float
    per_kind: dict

    def to_json(self) -> dict:
        return {"score": self.score, "max_spread": self.per_kind,
                "derivation": "per tier, the kinds kept inside one domain (kept at a tier, kept at every coarser "
                              "one): their groups join blocks into components that must pack into the domains' "
                              "free slots; every other kind has max spread >= 1 and each of its groups touches "
                              "at least the fewest domains that hold the components it meets; on a grid of "
                              "blocks, a domain of s blocks touches groups whose counts multiply to at least "
                              "s^(K-1) (Loomis-Whitney), which bounds the mean spreads; max >= mean per kind; "
                              "time points by the tiers a kind is not kept at; the least over every chain "
                              "(planner/placement/bound.py); the placement MILP's dual bound where it ran, less "
                              "what its integer coefficients can move (decomposed: the top tiers' model's, the "
                              "tiers below folded into it)"}


def _bound(p: PlacementProblem, candidates: list[Candidate]) -> PlacementBound:
    c = p.cluster
    total = kept_bound(c)
    proofs = [c.attempt.proof for c in candidates if c.attempt.proof is not None]
    return PlacementBound(max([total, *proofs]), least_spreads(c))


def _metrics(p: PlacementProblem, cand: Candidate, bound: PlacementBound) -> dict:
    c = p.cluster
    spreads, (spread_points, time_points) = cand.evidence
    out = {"score": cand.score, "spread_points": spread_points, "time_points": time_points,
           "lower_bound_score": bound.score,
           "ratio_to_bound": (cand.score + 1) / (bound.score + 1),  # + 1: defined when the bound is 0
           "spread": {k: {t: {"max": v[0], "mean": v[1]} for t, v in tiers.items()} for k, tiers in spreads.items()},
           }
    taken: dict[int, set[int]] = {}
    for slot in cand.solution.slot_of_block:
        for node, x in c.slots[slot].gpus:
            taken.setdefault(node, set()).add(x)
    whole = c.gpus_per_node
    after = [len(f - taken.get(n, set())) for n, f in enumerate(c.free_gpus)]
    left: dict[str, int] = {}
    for n, f in enumerate(c.free_gpus):
        if len(f) == whole:
            leaf = c.node_domains[n][0]
            left[leaf] = left.get(leaf, 0) + (after[n] == whole)
    out.update({"nodes_used": len(taken), "free_nodes_left": sum(1 for a in after if a == whole),
                "free_gpus_left": sum(after),
                "free_gpus_fragmented": sum(a for a in after if 0 < a < whole),  # on nodes partly in use
                "free_nodes_left_per_leaf": dict(sorted(left.items()))})
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
    on representative slots (planner/placement/timing.py)."""
    c, job = p.cluster, p.job
    per_step = dict(job.bytes_per_step)
    b = c.block_size
    out = {}
    for kind in c.kinds:
        size = per_step.get(kind, 0.0)
        if size <= 0:
            continue
        groups = job.groups(kind)

        def touched(ranks: tuple[int, ...]) -> tuple:
            slots = {solution.slot_of_block[r // b] for r in ranks}
            nodes = {n for x in slots for n in c.slots[x].nodes}
            return tuple(len({c.domains[x][t] for x in slots}) for t in reversed(range(len(c.tiers)))) + (len(nodes),)

        worst = max(groups, key=lambda ranks: (touched(ranks), -ranks[0]))
        out[kind] = group_seconds(c, kind, priced_ranks(kind, worst), solution.slot_of_block, size)
    return out


def _body(p: PlacementProblem, cand: Candidate) -> dict:
    return {"ranks": [list(r) for r in ranks_of(p, cand.solution)], "order": "-".join(p.job.order)}


def _exporter(fmt: str):
    def export(p: PlacementProblem, cand: Candidate) -> str:
        ranks = ranks_of(p, cand.solution)
        text = placement_text(ranks, fmt)
        back = parse_rankfile(text, fmt)
        def said(table: list[tuple[str, int]]) -> list:
            return [host for host, _ in table] if fmt == "hostfile" else table  # a hostfile names hosts only

        if said(back) != said(ranks):
            raise ExportMismatch(f"the {fmt} reads back as another rank table")
        return text
    return export


def _read_back(fmt: str):
    """The placement a file says: each block's slot from its first rank's GPU; a hostfile's
    j-th rank on a host on the j-th GPU of the host's free slots (srun picks the GPUs)."""
    def read(p: PlacementProblem, text: str) -> Placement:
        c = p.cluster
        ranks = parse_rankfile(text, fmt)
        index = {n: i for i, n in enumerate(c.names)}
        unknown = [h for h, _ in ranks if h not in index]
        if unknown:
            raise InputError(f"unknown host {unknown[0]!r}", field=fmt)
        slot_at = {gpu: i for i, slot in enumerate(c.slots) for gpu in slot.gpus}
        if fmt == "hostfile":
            free_of: dict[int, list[tuple[int, int]]] = {}
            for i in c.free:
                for gpu in c.slots[i].gpus:
                    free_of.setdefault(gpu[0], []).append(gpu)
            places = [free_of.get(index[h], [])[j:j + 1] for h, j in ranks]
            if any(not v for v in places):
                raise InputError("more ranks on a host than its free GPUs", field=fmt)
            gpus = [v[0] for v in places]
        else:
            gpus = [(index[h], x) for h, x in ranks]
        b = c.block_size
        if len(gpus) != c.blocks * b:
            raise InputError(f"{len(gpus)} ranks, the job has {c.blocks * b}", field=fmt)
        slots = []
        for k in range(c.blocks):
            slot = slot_at.get(gpus[k * b])
            if slot is None or tuple(gpus[k * b:(k + 1) * b]) != c.slots[slot].gpus:
                raise InputError(f"ranks {k * b}-{(k + 1) * b - 1} are not one slot of {b} GPUs in order", field=fmt)
            slots.append(slot)
        return Placement(tuple(slots))
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
    verified_by="planner.kinds.placement (free GPUs once, TP in an NVLink domain, whole nodes, rank order)",
)
