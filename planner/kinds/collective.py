"""The collective plan kind: schedules, checked and timed by the simulator.

Its methods, in search order, are the registry `METHODS` (docs/collectives.md has the
table). Candidates are scored by simulated time; the bound is planner/bounds.py's; the
body is the schedule (planner.core.schedule's codec); the exports are MSCCL XML (both
dialects) and MSCCL++ JSON, each parsed back and re-simulated before it is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from models.alltoall_flow import time_expanded_schedule
from models.collective_milp import MAX_VARIABLES, MilpOutcome, milp_schedule
from models.tree_packing import forest_solve, tree_schedule, trees_applies
from planner.bounds import lower_bound, quality_metrics
from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.errors import InfeasibleError, InputError
from planner.core.schedule import Schedule, schedule_to_json
from planner.exports.roundtrip import FORMATS, import_text, round_trip
from planner.kind import Attempt, Candidate, Context, Method, Options, PlanKind
from planner.search import PlanResult, plan
from planner.simulator import simulate
from solvers import baselines
from solvers.double_binary_tree import double_binary_tree
from solvers.flash import flash_alltoall, flash_applies
from solvers.hierarchical import hierarchical, hierarchical_applies
from topologies.dataplane import data_plane_gap
from topologies.routing import Router
from topologies.types import Topology

COPY = ("allgather", "reduce-scatter", "allreduce")
ROOTED = ("broadcast", "reduce")
ALLTOALL = ("alltoall", "alltoallv")  # milp and lp: the time-expanded flow model (models/alltoall_flow.py)
TREE_KINDS = COPY + ROOTED  # trees and the milp's time-expanded model (models/collective_milp.py)

# A search packs trees on up to this many GPUs, with no more runs of the loop body than
# keep all of them within TREES_AUTO_RUN_BUDGET transfers (simulated in seconds; fewer
# runs, more start-up); `--method trees` runs the full loop, timed by its period
TREES_AUTO_MAX_GPUS = 64
TREES_AUTO_RUN_BUDGET = 100_000
AUTO_MILP_MAX_GPUS = 16
AUTO_MILP_MAX_BLOCK_BYTES = 256 << 10  # beyond this the message is bandwidth-bound: trees/rings do
AUTO_MILP_MAX_VARIABLES = 60_000  # auto tries only models that solve in seconds; `milp` takes larger
MILP_VARIABLES_PER_SECOND = 20_000  # model size allowed per second of --time-limit (building costs ~1/3 of it)


@dataclass(frozen=True)
class CollectiveProblem:
    collective: Collective
    topology: Topology
    topology_name: str

    @cached_property
    def router(self) -> Router:
        """One router for every method and the simulator (routes are cached on it)."""
        return Router(self.topology)


def collective_problem(coll: Collective, topo: Topology, topology_name: str | None = None,
                       router: Router | None = None) -> CollectiveProblem:
    """The problem; InfeasibleError (exit 3) when some GPU cannot reach another over the
    paths collectives may use (topologies/dataplane.py). `router`: one already built for
    `topo` (its routes cached), for several problems on one topology."""
    if coll.ranks != topo.num_gpus:
        raise InputError(f"the collective is over {coll.ranks} ranks, the topology has {topo.num_gpus} GPUs",
                         field="--topology")
    gap = data_plane_gap(topo)
    if gap is not None:
        raise InfeasibleError(f"no {coll.kind} on {topology_name or topo.name}: {gap}")
    problem = CollectiveProblem(coll, topo, topology_name or topo.name)
    if router is not None:
        problem.__dict__["router"] = router  # what the cached property would have built
    return problem


# ---------------------------------------------------------------- methods
def _for(*kinds: str):
    return lambda p: p.collective.kind in kinds


def _schedule(build):
    """A method whose run builds a schedule (or declines)."""
    def run(p: CollectiveProblem, context: Context) -> Attempt | Declined:
        out = build(p)
        return out if isinstance(out, Declined) else Attempt(out)
    return run


def _trees(p: CollectiveProblem, context: Context) -> Attempt | Declined:
    out = tree_schedule(p.collective, p.topology, run_budget=TREES_AUTO_RUN_BUDGET if context.searching else None)
    return out if isinstance(out, Declined) else Attempt(out, forest_solve(p.collective, p.topology, out))


def _trees_searched(p: CollectiveProblem, context: Context) -> str | None:
    if p.collective.ranks > TREES_AUTO_MAX_GPUS:
        return f"auto packs trees on up to {TREES_AUTO_MAX_GPUS} GPUs (ask for --method trees)"
    return None


def _model_size_limit(context: Context) -> int:
    """A model is only worth building if it can be built and searched within the limit."""
    cap = AUTO_MILP_MAX_VARIABLES if context.requested == "auto" else MAX_VARIABLES
    return min(cap, int(MILP_VARIABLES_PER_SECOND * context.options.time_limit_s))


def _flow_model(integral: bool):
    """The all-to-all flow model in whole units (milp) or as an LP."""
    def run(p: CollectiveProblem, context: Context) -> Attempt | Declined:
        options = context.options
        return _model_attempt(time_expanded_schedule(p.collective, p.topology, p.router, integral=integral,
                                                     solver=options.solver, time_limit_s=options.time_limit_s,
                                                     max_variables=_model_size_limit(context)))
    return run


def _milp(p: CollectiveProblem, context: Context) -> Attempt | Declined:
    coll, options = p.collective, context.options
    if coll.kind in ALLTOALL:
        return _flow_model(integral=True)(p, context)
    if context.incumbent is None:
        return Declined("no candidate's simulated time to take as the model's horizon")
    return _model_attempt(milp_schedule(coll, p.topology, p.router, horizon_us=context.incumbent.score,
                                        parts=_milp_parts(coll), solver=options.solver,
                                        time_limit_s=options.time_limit_s, max_variables=_model_size_limit(context)))


NO_AUTO_FLOW_MODEL = "auto does not solve the all-to-all flow model (ask for --method milp or lp)"


def _milp_searched(p: CollectiveProblem, context: Context) -> str | None:
    coll = p.collective
    if coll.kind in ALLTOALL:
        return NO_AUTO_FLOW_MODEL
    if not 2 <= coll.ranks <= AUTO_MILP_MAX_GPUS or coll.blocks[0].size > AUTO_MILP_MAX_BLOCK_BYTES:
        return (f"auto solves the time-expanded model on 2 to {AUTO_MILP_MAX_GPUS} GPUs with blocks up to "
                f"{AUTO_MILP_MAX_BLOCK_BYTES >> 10} KiB, where latency matters (ask for --method milp)")
    return None


def _model_attempt(outcome: MilpOutcome | Declined) -> Attempt | Declined:
    if isinstance(outcome, Declined):
        return outcome
    result = outcome.result
    model = {"variables": outcome.variables, "constraints": outcome.constraints, "horizon_epochs": outcome.epochs,
             "epoch_us": outcome.tau_us, "model_objective_epochs": result.objective, "symmetry": outcome.symmetry}
    if outcome.schedule is not None:
        return Attempt(outcome.schedule, result, model)
    if result.limit_hit:
        why = f"the {result.limit} limit was hit before any solution"
    elif result.termination.value == "infeasible":
        why = "no schedule fits the model's horizon (the best baseline's time, or the fastest delivery)"
    else:
        why = f"the solver ended with {result.termination.value}" + (f" ({result.message})" if result.message else "")
    return Attempt(None, result, model, why=why)


def _milp_parts(coll: Collective) -> int:
    """Chunks per block in the model: one block moves whole in allgather-like collectives,
    and in a latency-bound broadcast or reduce; a larger one-buffer collective is cut so
    it can pipeline."""
    if coll.kind in COPY or coll.size <= 64 << 10:
        return 1
    return min(8, max(2, coll.ranks // 2))


METHODS: tuple[Method, ...] = (
    Method("ring", "candidate", _schedule(lambda p: baselines.ring(p.collective, p.topology, router=p.router)),
           "rings over the best GPU cycle, one per channel (NCCL's ring)", handles=_for(*COPY)),
    Method("tree", "candidate", _schedule(lambda p: double_binary_tree(p.collective, p.topology, router=p.router)),
           "NCCL's double binary tree", handles=_for("allreduce")),
    Method("hierarchical", "candidate",
           _schedule(lambda p: hierarchical(p.collective, p.topology, router=p.router)),
           "rings inside servers and across them (rail-aligned all-to-all)", handles=_for(*COPY, *ALLTOALL),
           applies=lambda p: hierarchical_applies(p.topology)),
    Method("chain", "candidate", _schedule(lambda p: baselines.chain(p.collective, p.topology, router=p.router)),
           "a pipelined chain from the root", handles=_for(*ROOTED)),
    Method("direct", "candidate", _schedule(lambda p: baselines.direct_alltoall(p.collective, p.topology)),
           "every block straight to its destination at once", handles=_for(*ALLTOALL)),
    Method("spreadout", "candidate", _schedule(lambda p: baselines.spreadout_alltoall(p.collective, p.topology)),
           "N-1 shifted rounds (SpreadOut)", handles=_for(*ALLTOALL)),
    Method("flash", "candidate", _schedule(lambda p: flash_alltoall(p.collective, p.topology)),
           "FLASH-style server stages balanced over the rails", handles=_for(*ALLTOALL),
           applies=lambda p: flash_applies(p.topology)),
    Method("trees", "candidate", _trees, "weighted spanning trees at the throughput LP's optimum, pipelined",
           handles=_for(*TREE_KINDS), applies=lambda p: trees_applies(p.collective), searched=_trees_searched,
           heuristic=False),
    Method("milp", "exact", _milp, "time-expanded MILP (all-to-all: the flow model in whole chunks)",
           handles=_for(*TREE_KINDS, *ALLTOALL), searched=_milp_searched, heuristic=False),
    Method("lp", "exact", _flow_model(integral=False), "the all-to-all flow model as an LP (pieces of any size)",
           handles=_for(*ALLTOALL), searched=lambda p, context: NO_AUTO_FLOW_MODEL, heuristic=False),
)


# ---------------------------------------------------------------- the kind
def _describe(p: CollectiveProblem) -> dict:
    coll, topo = p.collective, p.topology
    out = {**coll.describe(), "topology": p.topology_name, "gpus": topo.num_gpus, "servers": len(topo.servers)}
    if coll.kind == "alltoallv":
        out["traffic"] = [list(row) for row in coll.traffic]
    return out


def _evaluate(p: CollectiveProblem, schedule: Schedule):
    sim = simulate(schedule, p.topology, p.router)
    return sim, sim.time_us


def _metrics(p: CollectiveProblem, c: Candidate, bound) -> dict:
    sim = c.evidence
    out = {**quality_metrics(p.collective, sim.time_us, bound.time_us), "transfers": sim.transfers,
           "steps": sim.steps, "max_link_utilization": sim.max_link_utilization}
    if c.solution.loops > 1:  # a loop body: how its time was found (planner/simulator.py _loop_time)
        out["loop"] = {"runs": c.solution.loops, "runs_simulated": sim.runs_simulated,
                       "period_us": sim.period_us, "period_spread": sim.period_spread}
    return out


def _export(fmt: str):
    def export(p: CollectiveProblem, c: Candidate) -> str:
        if any(t.path is not None for t in c.solution.transfers):
            raise InputError("it routes transfers over chosen paths (NVLink, PCIe, NICs), which the "
                             "format cannot say: the runtime would pick its own routes")
        text, _, _ = round_trip(c.solution, fmt, p.topology, c.score)
        return text
    return export


COLLECTIVE = PlanKind(
    name="collective",
    methods=METHODS,
    describe=_describe,
    evaluate=_evaluate,
    bound=lambda p, candidates: lower_bound(p.collective, p.topology),
    metrics=_metrics,
    body=lambda p, c: schedule_to_json(c.solution),
    exports={fmt: _export(fmt) for fmt in FORMATS},
    read_back={fmt: (lambda p, text, fmt=fmt: import_text(text, fmt, f"<{fmt}>", size=p.collective.size,
                                                          root=p.collective.root)) for fmt in FORMATS},
    lost=lambda exact, t, name, best: f"{exact}: its schedule simulates at {t:.3f} us, {name} at {best:.3f} us",
    subject=lambda p: p.collective.kind,
    noun="schedule",
    export_check="parsed back and re-simulated: same data movement, same time",
    best_of="fastest simulated",
    verified_by="planner.simulator",
)


def plan_collective(coll: Collective, topo: Topology, method: str = "auto", topology_name: str | None = None,
                    time_limit_s: float = 60.0, solver: str | None = None, export: str | None = None) -> PlanResult:
    """Plan `coll` on `topo`: the collective kind through the one search."""
    return plan(COLLECTIVE, collective_problem(coll, topo, topology_name), method, Options(time_limit_s, solver, export))
