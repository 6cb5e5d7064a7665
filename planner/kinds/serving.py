"""The serving plan kind (`planner parallelize` with a `mode: serve` workload): replicas of
which GPU type, TP/PP/EP and role (colocated, prefill, decode), how many, and the traffic
each takes, under TTFT/TPOT SLOs at the least cost or the most goodput.

Methods (docs/serving.md): `homogeneous`, a candidate: the best plan of one GPU type and
one configuration (or one prefill and one decode configuration of one type), exhaustive;
`greedy`, a candidate: replicas by goodput per dollar, best first; `milp`
(models/serving_milp.py), exact over the configurations' simulated capacities, started
from the best candidate. Every plan is checked: its replicas fit in memory on distinct GPUs
of their type within the pool and the budget, and the whole plan is simulated at its rate
(planner/serving/simulate.py) to confirm its SLO attainment. Plans in the plan JSON have
`kind: parallelism` (the contract's kind) and `plan.mode: serve`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

from models.serving_milp import ServingInputs, ServingOption, solve_serving
from planner.core.declined import Declined
from planner.core.errors import ExportMismatch, InfeasibleError, InputError, PlannerError
from planner.core.serving import MAX_REQUESTS, ReplicaConfig, ServeWorkload
from planner.core.transformer import TransformerSpec
from planner.exports.serving import engine_script, parse_engine_script
from planner.kind import Attempt, Candidate, Context, Method, Options, PlanKind
from planner.search import PlanResult, plan
from planner.serving.setup import PlacedReplica, ServingSetup
from planner.serving.simulate import Served, at_rate, attainment, quantile, simulate_replica
from topologies.types import Topology

PENALTY = 1e9  # added to the score of a plan whose simulation misses its SLO attainment
PLAN_REQUESTS_PER_REPLICA = 200
DERATES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)  # capacity fractions a method sizes with, until its plan meets the SLO


@dataclass(frozen=True)
class ServingProblem:
    model: TransformerSpec
    workload: ServeWorkload
    topology: Topology
    topology_name: str
    fix: ReplicaConfig | None = None

    @cached_property
    def setup(self) -> ServingSetup:
        return ServingSetup(self.model, self.workload, self.topology)

    def describe(self) -> dict:
        return {"model": self.model.describe(), "workload": self.workload.describe(),
                "topology": self.topology_name, "gpus": self.topology.num_gpus,
                "pool": dict(sorted(self.setup.available.items())),
                "fix": self.fix.to_json() if self.fix else {}}


def serving_problem(spec: TransformerSpec, workload: ServeWorkload, topo: Topology, fix: dict,
                    topology_name: str | None = None) -> ServingProblem:
    """The problem; bad input (exit 2) for GPUs without a model, no price for a GPU type the
    plan may use, a --fix that names no configuration of the pool."""
    for g in topo.gpus:
        if not topo.node_by_id[g].model:
            raise InputError(f"GPU {g!r} has no model (a GPU preset such as a100-80g, h100): the cost model needs "
                             "it", field="--topology")
    problem = ServingProblem(spec, workload, topo, topology_name or topo.name)
    setup = problem.setup
    if not setup.available:
        raise InputError("no GPU of the topology is available (workload `available`)", field="available")
    for gpu in setup.available:
        setup.gpu(gpu).peak_tflops(workload.dtype)
    if fix:
        types = sorted(setup.available)
        gpu = fix.get("gpu") or (types[0] if len(types) == 1 else None)
        if gpu is None:
            raise InputError(f"the pool has several GPU types ({', '.join(types)}): name one with gpu=",
                             field="--fix")
        if gpu not in setup.available:
            raise InputError(f"gpu {gpu!r} is not in the pool ({', '.join(types)})", field="--fix")
        c = ReplicaConfig(gpu, fix.get("tp", 1), fix.get("pp", 1), fix.get("ep", False), fix.get("role", "colocated"))
        _check_fixed(problem, c)
        problem = replace(problem, fix=c)
    elif workload.objective == "cost" or workload.budget_per_hour is not None or workload.prices:
        for gpu in setup.available:  # goodput without a budget may go unpriced, but not half priced
            setup.price(gpu)
    return problem


def _check_fixed(p: ServingProblem, c: ReplicaConfig) -> None:
    s, setup = p.model, p.setup
    server = min(len(x) for x in setup.servers_by_gpu[c.gpu])
    if c.tp > server:
        raise InputError(f"tp {c.tp} is more than the {server} {c.gpu} GPUs of one server", field="--fix")
    if s.heads % c.tp:
        raise InputError(f"tp {c.tp} does not divide the {s.heads} attention heads", field="--fix")
    if c.pp > s.layers:
        raise InputError(f"pp {c.pp} is more than the {s.layers} layers", field="--fix")
    if c.ep and not s.is_moe:
        raise InputError(f"ep=1 needs a MoE model; {s.name} is dense", field="--fix")
    if setup.placement_blocks(c, {}) is None:
        raise InputError(f"{c.gpus} {c.gpu} GPUs (tp x pp) are more than the pool has", field="--fix")
    cost = setup.cost(c)
    if cost.kv_capacity_tokens < setup.longest_request:
        raise InfeasibleError(f"{c.label()} does not fit: {cost.weight_bytes_per_gpu / 1e9:.1f} GB of weights per "
                              f"GPU leave room for {cost.kv_capacity_tokens} KV tokens, less than one request "
                              f"({setup.longest_request})")


@dataclass(frozen=True)
class ServingPlan:
    replicas: tuple[PlacedReplica, ...]
    served_rps: float  # what the replicas' capacities say the plan serves
    model: dict | None = field(default=None, compare=False)
    derate: float = 1.0  # the fraction of the simulated capacities the plan was sized with


@dataclass(frozen=True)
class PlanCheck:
    rate_rps: float
    requests: int
    attainment: float
    required: float  # the attainment the plan must reach: the quantile less two standard errors
    ttft: tuple[float, float, float]  # p50, p90, p99
    tpot: tuple[float, float, float]
    cost_per_hour: float

    @property
    def meets(self) -> bool:
        return self.attainment >= self.required


# ---------------------------------------------------------------- capacities
def _options(p: ServingProblem, derate: float = 1.0) -> list[tuple[ReplicaConfig, float]]:
    """Every configuration with a capacity (x `derate`), in the configurations' order; bad
    news (exit 3) when they cannot make a plan: no colocated one and not both a prefill and
    a decode one."""
    setup, budget = p.setup, p.workload.budget_per_hour
    configs = setup.configurations()
    if configs and budget is not None and min(_price(p, c) for c in configs) > budget:
        cheapest = min(configs, key=lambda c: (_price(p, c), c.key()))
        raise InfeasibleError(f"the budget of ${budget:g}/h is below one replica: the cheapest that fits "
                              f"({cheapest.label()}) costs ${_price(p, cheapest):g}/h")
    out = []
    for c in configs:
        cap = setup.capacity(c).rate_rps * derate
        if cap > 0:
            out.append((c, cap))
    roles = {c.role for c, _ in out}
    if "colocated" not in roles and not {"prefill", "decode"} <= roles:
        raise _no_options_error(p)
    return out


def _no_options_error(p: ServingProblem) -> InfeasibleError:
    setup, w = p.setup, p.workload
    configs = [replace(c, role="colocated") for c in setup.configurations()]
    if not configs:
        return InfeasibleError(f"{p.model.name} fits on no available GPU: no configuration leaves KV-cache room for "
                               f"{4} of its longest requests ({setup.longest_request} tokens)")
    best_ttft = min(setup.capacity(c).prefill_ms for c in configs) / 1e3
    best_tpot = min(setup.capacity(c).decode_step_ms for c in configs) / 1e3
    return InfeasibleError(f"no configuration meets TTFT {w.ttft_slo_s:g} s and TPOT {w.tpot_slo_s:g} s at "
                           f"{w.slo_quantile:.0%} even for a lone request: the closest achievable is TTFT "
                           f"{best_ttft:.3f} s and TPOT {best_tpot:.4f} s")


def _plan_of(p: ServingProblem, counts: list[tuple[ReplicaConfig, int, float]]) -> ServingPlan | None:
    """Replicas placed on the pool, each with its traffic share; None if they do not fit."""
    counts = [x for x in counts if x[1] > 0]
    placed = p.setup.place(counts)
    if placed is None:
        return None
    served = sum(n * r for c, n, r in counts if c.role == "colocated")
    prefill = sum(n * r for c, n, r in counts if c.role == "prefill")
    decode = sum(n * r for c, n, r in counts if c.role == "decode")
    return ServingPlan(placed, served + min(prefill, decode))


def _affordable(p: ServingProblem, cost: float) -> bool:
    budget = p.workload.budget_per_hour
    return budget is None or cost <= budget + 1e-9


def _price(p: ServingProblem, c: ReplicaConfig) -> float:
    """$ per hour of one replica (0 for a GPU type the workload does not price: serving_problem
    has already refused that wherever a price matters)."""
    price = p.workload.price(c.gpu)
    return (price if price is not None else 0.0) * c.gpus


def _cost(p: ServingProblem, replicas: tuple[PlacedReplica, ...]) -> float:
    return sum(_price(p, r.config) for r in replicas)


# ---------------------------------------------------------------- methods
def _fixed(p: ServingProblem) -> ServingPlan:
    c = p.fix
    cap = p.setup.capacity(c).rate_rps
    plan_ = _plan_of(p, [(c, 1, cap or p.workload.rate_rps)])
    return replace(plan_, served_rps=cap)


def _sized(p: ServingProblem, context: Context, build, exhaustive: bool = False) -> Attempt | Declined:
    """`build(options)` -> Attempt or None, first with the simulated capacities; while its
    plan misses the SLO in the whole-plan simulation (a replica loaded to its capacity sits
    at the edge of its attainment, and sampling noise tips it over), again with the
    capacities derated (DERATES). The last plan is returned if none meets (it scores with
    the penalty); None from the first build is "no plan": declined in a search, infeasible
    (exit 3) when the build is `exhaustive` (the MILP: no plan of any mix exists)."""
    last = None
    for derate in DERATES:
        out = build(_options(p, derate))
        if out is None or out.solution is None:
            if last is None:  # no plan at the full capacities: nothing derated does better
                if out is None and exhaustive:  # the MILP proved there is none
                    raise InfeasibleError(_short_of(p))
                return out if out is not None else _none_fits(p, context)
            break
        out = replace(out, solution=replace(out.solution, derate=derate))
        if _check(p, out.solution).meets:
            return out
        last = out
    return last


def _homogeneous(p: ServingProblem, context: Context) -> Attempt | Declined:
    if p.fix is not None:
        return Attempt(_fixed(p))
    return _sized(p, context, lambda opts: _best_homogeneous(p, opts))


def _best_homogeneous(p: ServingProblem, opts: list[tuple[ReplicaConfig, float]]) -> Attempt | None:
    best: tuple | None = None
    groups: list[list[tuple[ReplicaConfig, float]]] = [[o] for o in opts if o[0].role == "colocated"]
    for pre in (o for o in opts if o[0].role == "prefill"):
        for dec in (o for o in opts if o[0].role == "decode" and o[0].gpu == pre[0].gpu):
            groups.append([pre, dec])
    for group in groups:
        counts = _size_group(p, group)
        if counts is None:
            continue
        plan_ = _plan_of(p, counts)
        if plan_ is None:
            continue
        cost = _cost(p, plan_.replicas)
        key = _plan_key(p, plan_, cost)
        if best is None or key < best[0]:
            best = (key, plan_)
    return Attempt(best[1]) if best is not None else None


def _none_fits(p: ServingProblem, context: Context) -> Declined:
    """A candidate with no plan: in a search the exact method may still find one (a mix of
    types); asked for alone, the problem is infeasible for it (exit 3)."""
    if context.searching:
        return Declined(_short_of(p) + " with this method")
    raise InfeasibleError(_short_of(p))


def _size_group(p: ServingProblem, group: list[tuple[ReplicaConfig, float]]):
    """How many of each (one colocated config, or a prefill and a decode config of one type)
    serve the rate (objective cost) or the most within the budget and the GPUs (goodput)."""
    w, setup = p.workload, p.setup
    gpus = setup.available[group[0][0].gpu]
    if w.objective == "cost":
        counts = [max(1, math.ceil(w.rate_rps / cap - 1e-9)) for _, cap in group]
        if sum(n * c.gpus for n, (c, _) in zip(counts, group)) > gpus:
            return None
        cost = sum(n * _price(p, c) for n, (c, _) in zip(counts, group))
        if not _affordable(p, cost):
            return None
        return [(c, n, w.rate_rps / n) for n, (c, _) in zip(counts, group)]
    # goodput: the most units within the GPUs and the budget, in the capacity ratio
    if len(group) == 1:
        (c, cap), = group
        n = gpus // c.gpus
        if w.budget_per_hour is not None and _price(p, c):
            n = min(n, int(w.budget_per_hour // _price(p, c)))
        return [(c, n, cap)] if n > 0 else None
    (pc, pcap), (dc, dcap) = group
    best = None
    for n_p in range(1, gpus // pc.gpus + 1):
        n_d = max(1, math.ceil(n_p * pcap / dcap - 1e-9))
        while n_d > 0 and n_p * pc.gpus + n_d * dc.gpus > gpus:
            n_d -= 1
        if n_d == 0:
            break
        cost = n_p * _price(p, pc) + n_d * _price(p, dc)
        if not _affordable(p, cost):
            break
        served = min(n_p * pcap, n_d * dcap)
        if best is None or served > best[0] + 1e-12:
            best = (served, n_p, n_d)
    if best is None:
        return None
    served, n_p, n_d = best
    return [(pc, n_p, served / n_p), (dc, n_d, served / n_d)]


def _plan_key(p: ServingProblem, plan_: ServingPlan, cost: float) -> tuple:
    """Smaller is better: the cost (objective cost) or minus the goodput, then the other,
    then the configurations (deterministic ties)."""
    configs = tuple(r.config.key() for r in plan_.replicas)
    if p.workload.objective == "cost":
        return (round(cost, 9), -round(plan_.served_rps, 9), configs)
    return (-round(plan_.served_rps, 9), round(cost, 9), configs)


def _short_of(p: ServingProblem) -> str:
    w = p.workload
    if w.objective == "cost":
        return (f"no plan serves {w.rate_rps:g} requests/s within the GPUs"
                + (f" and the budget of ${w.budget_per_hour:g}/h" if w.budget_per_hour else "")
                + " under the SLOs")
    return f"no replica fits the budget of ${w.budget_per_hour:g}/h" if w.budget_per_hour else "no replica fits the GPUs"


def _one_configuration(p: ServingProblem) -> str | None:
    return "--fix evaluates one configuration (homogeneous)" if p.fix is not None else None


def _greedy(p: ServingProblem, context: Context) -> Attempt | Declined:
    return _sized(p, context, lambda opts: _greedy_plan(p, opts))


def _greedy_plan(p: ServingProblem, opts: list[tuple[ReplicaConfig, float]]) -> Attempt | None:
    w = p.workload
    units: list[tuple[float, tuple, list[tuple[ReplicaConfig, int, float]]]] = []
    for c, cap in opts:
        if c.role == "colocated":
            units.append((cap / max(_price(p, c), 1e-12), c.key(), [(c, 1, cap)]))
    for pc, pcap in (o for o in opts if o[0].role == "prefill"):
        for dc, dcap in (o for o in opts if o[0].role == "decode" and o[0].gpu == pc.gpu):
            n_d = max(1, math.ceil(pcap / dcap - 1e-9))
            served = min(pcap, n_d * dcap)
            price = _price(p, pc) + n_d * _price(p, dc)
            units.append((served / max(price, 1e-12), pc.key() + dc.key(), [(pc, 1, served), (dc, n_d, served / n_d)]))
    units.sort(key=lambda u: (-u[0], u[1]))
    chosen: list[tuple[ReplicaConfig, int, float]] = []
    served = 0.0
    for _, _, unit in units:
        while w.objective != "cost" or served < w.rate_rps - 1e-9:
            trial = _plan_of(p, chosen + unit)
            if trial is None or not _affordable(p, _cost(p, trial.replicas)):
                break
            chosen += unit
            served = trial.served_rps
        if w.objective == "cost" and served >= w.rate_rps - 1e-9:
            break
    if not chosen or (w.objective == "cost" and served < w.rate_rps - 1e-9):
        return None
    return Attempt(_plan_of(p, _scaled(p, chosen)))


def _scaled(p: ServingProblem, chosen: list[tuple[ReplicaConfig, int, float]]) -> list[tuple[ReplicaConfig, int, float]]:
    """Merge repeated configurations; under objective cost the shares add up to the rate."""
    merged: dict[ReplicaConfig, list[float]] = {}
    for c, n, r in chosen:
        merged.setdefault(c, []).extend([r] * n)
    out = [(c, len(rs), sum(rs) / len(rs)) for c, rs in merged.items()]
    if p.workload.objective != "cost":
        return out
    front = sum(n * r for c, n, r in out if c.role in ("colocated", "prefill"))
    prefill = sum(n * r for c, n, r in out if c.role == "prefill")
    back = sum(n * r for c, n, r in out if c.role == "decode")
    scale = p.workload.rate_rps / front
    # decode replicas take what the prefill replicas hand on: the prefill share of the rate
    return [(c, n, r * (prefill * scale / back if c.role == "decode" else scale)) for c, n, r in out]


def _milp(p: ServingProblem, context: Context) -> Attempt | Declined:
    proofs: list[float] = []
    out = _sized(p, context, lambda opts: _milp_plan(p, context, opts, proofs), exhaustive=True)
    if isinstance(out, Attempt) and proofs:
        out = replace(out, proof=proofs[0])  # the bound of the full capacities holds for every plan
    return out


def _milp_plan(p: ServingProblem, context: Context, opts: list[tuple[ReplicaConfig, float]],
               proofs: list[float]) -> Attempt | None:
    w, setup = p.workload, p.setup
    options = tuple(ServingOption(c.gpu, c.gpus, w.price(c.gpu) or 0.0, c.role, cap,
                                  setup.available[c.gpu] // c.gpus) for c, cap in opts)
    hint = None
    if context.incumbent is not None:
        have = [r.config for r in context.incumbent.solution.replicas]
        hint = tuple(have.count(c) for c, _ in opts)
    inputs = ServingInputs(options, tuple(sorted(setup.available.items())), w.objective, w.rate_rps,
                           w.budget_per_hour, hint)
    solution = solve_serving(inputs, context.options.time_limit_s, context.options.solver)
    if solution.bound is not None:
        proofs.append(solution.bound)
    model = {"options": len(options), "variables": solution.variables, "constraints": solution.constraints,
             "bound": solution.bound}
    if solution.counts is None:
        if solution.result.termination.value == "infeasible":
            return None
        return Attempt(None, solution.result, model, why=f"the replica MILP ended {solution.result.termination.value}")
    counts = [(c, n, x / n if n else 0.0) for (c, _), n, x in zip(opts, solution.counts, solution.served)]
    plan_ = _plan_of(p, _scaled(p, [x for x in counts if x[1] > 0]))
    if plan_ is None:
        return Attempt(None, solution.result, model, why="the MILP's replicas do not fit the servers")
    return Attempt(replace(plan_, model=model), solution.result, model)


METHODS: tuple[Method, ...] = (
    Method("homogeneous", "candidate", _homogeneous,
           "the best plan of one GPU type and one configuration (or one prefill + one decode), exhaustive"),
    Method("greedy", "candidate", _greedy, "replicas by simulated goodput per dollar, best first",
           applies=_one_configuration),
    Method("milp", "exact", _milp, "replica counts, roles and traffic split over the pool (HiGHS)",
           applies=_one_configuration, heuristic=False),
)


# ---------------------------------------------------------------- the kind
def _evaluate(p: ServingProblem, solution: ServingPlan) -> tuple[PlanCheck, float]:
    _check_replicas(p, solution)
    check = _check(p, solution)
    if p.fix is not None:
        return check, 0.0
    score = check.cost_per_hour if p.workload.objective == "cost" else 1.0 / max(solution.served_rps, 1e-12)
    return check, score + (0.0 if check.meets else PENALTY)


def _check(p: ServingProblem, solution: ServingPlan) -> PlanCheck:
    """The plan simulated at its rate (objective cost and --fix: the workload's; goodput: what
    it claims to serve), kept per plan: the methods' sizing loop and the search ask twice."""
    setup, w = p.setup, p.workload
    rate = w.rate_rps if (w.objective == "cost" or p.fix is not None) else solution.served_rps
    key = (tuple((r.config, r.gpus, r.rate_rps) for r in solution.replicas), rate)
    found = setup.checks.get(key)
    if found is not None:
        return found
    front = sum(1 for r in solution.replicas if r.config.role != "decode")
    count = min(MAX_REQUESTS, max(w.requests, len(w.trace), PLAN_REQUESTS_PER_REPLICA * front))
    if p.fix is not None:
        reqs = setup.sample(rate, count) or at_rate(setup.requests, rate)
        served = simulate_replica(setup.cost(p.fix), reqs, p.fix.role)
    else:
        served = setup.simulate_plan(solution.replicas, rate, count)
    q = w.slo_quantile
    required = q - 2 * math.sqrt(q * (1 - q) / max(1, len(served)))
    check = PlanCheck(rate, len(served), attainment(served, w, ttft=p.fix is None or p.fix.role != "decode",
                                                     tpot=p.fix is None or p.fix.role != "prefill"),
                      required, _quantiles(served, "ttft_s"), _quantiles(served, "tpot_s"),
                      _cost(p, solution.replicas))
    setup.checks[key] = check
    return check


def _quantiles(served: list[Served], attr: str) -> tuple[float, float, float]:
    values = [getattr(s, attr) for s in served]
    return tuple(quantile(values, q) for q in (0.5, 0.9, 0.99))


def _check_replicas(p: ServingProblem, solution: ServingPlan) -> None:
    """Every replica on distinct GPUs of its own type, within the pool and the budget, its
    TP group in one server, with KV-cache room for the longest request."""
    setup, topo = p.setup, p.topology
    seen: set[str] = set()
    per_type: dict[str, int] = {}
    for r in solution.replicas:
        c = r.config
        if len(r.gpus) != c.gpus:
            raise PlannerError(f"replica {c.label()} has {len(r.gpus)} GPUs, not tp x pp = {c.gpus}")
        for g in r.gpus:
            node = topo.node_by_id.get(g)
            if node is None or node.type != "gpu" or node.model != c.gpu:
                raise PlannerError(f"replica {c.label()}: {g} is not a {c.gpu} GPU of the topology")
            if g in seen:
                raise PlannerError(f"GPU {g} is given to two replicas")
            seen.add(g)
        for stage in range(c.pp):
            if len({topo.server_of_gpu[g] for g in r.gpus[stage * c.tp:(stage + 1) * c.tp]}) != 1:
                raise PlannerError(f"replica {c.label()}: a TP group spans servers")
        if setup.cost(c).kv_capacity_tokens < setup.longest_request:
            raise PlannerError(f"replica {c.label()} does not fit in memory with one request's KV cache")
        per_type[c.gpu] = per_type.get(c.gpu, 0) + c.gpus
    for gpu, n in per_type.items():
        if n > setup.available.get(gpu, 0):
            raise PlannerError(f"the plan uses {n} {gpu} GPUs; {setup.available.get(gpu, 0)} are available")
    roles = {r.config.role for r in solution.replicas}
    if p.fix is None and ("prefill" in roles) != ("decode" in roles):
        raise PlannerError("a disaggregated plan needs both prefill and decode replicas")
    if p.fix is None and (p.workload.prices or p.workload.budget_per_hour) and \
            not _affordable(p, _cost(p, solution.replicas)):
        raise PlannerError(f"the plan costs more than the budget of ${p.workload.budget_per_hour:g}/h")


@dataclass(frozen=True)
class ServingBound:
    objective: str
    value: float | None
    derivation: str

    def to_json(self) -> dict:
        key = "cost_per_hour" if self.objective == "cost" else "goodput_rps"
        return {key: self.value, "derivation": self.derivation}


def _bound(p: ServingProblem, candidates: list[Candidate]) -> ServingBound:
    """Under the simulated capacities (every method sizes replicas within them): the MILP's
    own bound at the full capacities where it ran (LP relaxation and dual bound), and a
    closed form that holds for any mix: cost >= rate x the least $/h per request/s of a
    colocated configuration or of the cheapest prefill plus the cheapest decode one;
    goodput <= GPUs x the most requests/s per GPU of any configuration or prefill + decode
    pair, and <= budget / that least $/h per request/s."""
    w = p.workload
    if p.fix is not None:
        return ServingBound(w.objective, None, "--fix evaluates one configuration: no bound")
    opts = _options(p)
    proofs = [c.attempt.proof for c in candidates if c.attempt.proof is not None]
    colocated = [(c, cap) for c, cap in opts if c.role == "colocated"]
    prefill = [(c, cap) for c, cap in opts if c.role == "prefill"]
    decode = [(c, cap) for c, cap in opts if c.role == "decode"]
    per_rps = min([_price(p, c) / cap for c, cap in colocated]
                  + [min(_price(p, c) / cap for c, cap in prefill) + min(_price(p, c) / cap for c, cap in decode)]
                  if prefill and decode else [_price(p, c) / cap for c, cap in colocated])
    text = ("under the simulated capacities: the replica MILP's LP relaxation and dual bound where it ran; "
            + ("the rate x the least $/h per request/s of a colocated configuration or of a prefill plus a "
               "decode one" if w.objective == "cost" else
               "the GPUs x the most requests/s per GPU of a configuration or a prefill + decode pair, and the "
               "budget / the least $/h per request/s"))
    if w.objective == "cost":
        return ServingBound("cost", max([w.rate_rps * per_rps, *proofs]), text)
    per_gpu = [cap / c.gpus for c, cap in colocated]
    per_gpu += [1.0 / (pc.gpus / pcap + dc.gpus / dcap) for pc, pcap in prefill for dc, dcap in decode]
    limits = [sum(p.setup.available.values()) * max(per_gpu), *proofs]
    if w.budget_per_hour is not None and per_rps > 0:
        limits.append(w.budget_per_hour / per_rps)
    return ServingBound("goodput", min(limits), text)


def _metrics(p: ServingProblem, cand: Candidate, bound: ServingBound) -> dict:
    check: PlanCheck = cand.evidence
    solution: ServingPlan = cand.solution
    w, setup = p.workload, p.setup
    if p.fix is None and not check.meets:
        raise InfeasibleError(
            f"no plan found meets TTFT {w.ttft_slo_s:g} s and TPOT {w.tpot_slo_s:g} s for {w.slo_quantile:.0%} of "
            f"requests at {check.rate_rps:.4g} requests/s: the best ({cand.method.name}, ${check.cost_per_hour:.2f}/h, "
            f"sized at {solution.derate:.0%} of the simulated capacities) reaches {100 * check.attainment:.1f}%")
    cost = check.cost_per_hour
    out = {"cost_per_hour": cost, "replicas": len(solution.replicas),
           "gpus_used": _gpus_used(solution), "served_rps": solution.served_rps,
           "simulated_rate_rps": check.rate_rps, "simulated_requests": check.requests,
           "slo_attainment": check.attainment, "slo_attainment_required": check.required, "meets_slo": check.meets,
           "ttft_p50_s": check.ttft[0], "ttft_p90_s": check.ttft[1], "ttft_p99_s": check.ttft[2],
           "tpot_p50_s": check.tpot[0], "tpot_p90_s": check.tpot[1], "tpot_p99_s": check.tpot[2],
           "capacity_derate": solution.derate}
    if p.fix is not None:
        c = p.fix
        cost_model = setup.cost(c)
        cap = setup.capacity(c)
        out["prefill_ms"] = cap.prefill_ms
        if w.decode_batch:
            out["decode_step_ms"] = cost_model.iteration_s((), w.decode_batch, w.decode_batch * w.mean_context) * 1e3
        out["goodput_rps"] = cap.rate_rps
        out["kv_cache_tokens"] = cost_model.kv_capacity_tokens
        out["memory_per_gpu_GB"] = cost_model.memory_breakdown_GB()
        return out
    if cost > 0:
        out["goodput_per_dollar"] = solution.served_rps * 3600 / cost  # requests per $
        tokens_per_hour = solution.served_rps * 3600 * w.output_tokens
        out["cost_per_million_output_tokens"] = cost / (tokens_per_hour / 1e6) if tokens_per_hour else None
    if bound.value:
        out["ratio_to_bound"] = (cost / bound.value if w.objective == "cost" else bound.value / solution.served_rps
                                 if solution.served_rps else None)
    return out


def _gpus_used(solution: ServingPlan) -> dict:
    out: dict[str, int] = {}
    for r in solution.replicas:
        out[r.config.gpu] = out.get(r.config.gpu, 0) + r.config.gpus
    return dict(sorted(out.items()))


def _body(p: ServingProblem, cand: Candidate) -> dict:
    solution: ServingPlan = cand.solution
    replicas = [{**r.to_json(), "timing": "profile" if p.setup.cost(r.config).measured else "model"}
                for r in solution.replicas]
    front = [i for i, r in enumerate(solution.replicas) if r.config.role != "decode"]
    back = [i for i, r in enumerate(solution.replicas) if r.config.role == "decode"]

    def weights(idx: list[int]) -> dict:
        total = sum(solution.replicas[i].rate_rps for i in idx)
        return {str(i): solution.replicas[i].rate_rps / total for i in idx} if total else {}

    return {"mode": "serve", "replicas": replicas, "router": {"entry": weights(front), "decode": weights(back)},
            "vllm": engine_script(p.model, p.workload, solution.replicas, "vllm").splitlines(),
            "sglang": engine_script(p.model, p.workload, solution.replicas, "sglang").splitlines()}


def _exporter(engine: str):
    def export(p: ServingProblem, cand: Candidate) -> str:
        replicas = cand.solution.replicas
        text = engine_script(p.model, p.workload, replicas, engine)
        back = parse_engine_script(text, engine)
        want = [(r.config, r.gpus) for r in replicas]
        got = [(r.config, r.gpus) for r in back]
        if got != want:
            raise ExportMismatch(f"the {engine} commands read back as {len(got)} other replicas")
        return text
    return export


def _read_back(engine: str):
    def read(p: ServingProblem, text: str) -> ServingPlan:
        replicas = parse_engine_script(text, engine)
        return ServingPlan(replicas, sum(r.rate_rps for r in replicas if r.config.role != "decode"))
    return read


SERVING = PlanKind(
    name="serving",
    methods=METHODS,
    describe=lambda p: p.describe(),
    evaluate=_evaluate,
    bound=_bound,
    metrics=_metrics,
    body=_body,
    exports={"vllm": _exporter("vllm"), "sglang": _exporter("sglang")},
    read_back={"vllm": _read_back("vllm"), "sglang": _read_back("sglang")},
    lost=lambda exact, a, name, b: f"{exact}: its plan scores {a:.4g}, {name}'s {b:.4g} ($/h, or 1 / goodput)",
    subject=lambda p: "serving",
    noun="plan",
    export_check="parsed back: same replicas on the same GPUs",
    best_of="cheapest plan meeting the SLOs (or most goodput)",
    verified_by="planner.serving.setup (memory, GPUs, budget) + planner.serving.simulate (SLO attainment)",
    plan_kind="parallelism",
)


def plan_serving(problem: ServingProblem, method: str = "auto", **options) -> PlanResult:
    """The plan by `method`; options are planner.kind.Options' fields (time_limit_s, solver, export)."""
    return plan(SERVING, problem, method, Options(**options))
