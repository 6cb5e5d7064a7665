"""The parallelism plan kind (training): a configuration, its step time and memory, checked.

Methods (docs/parallelism.md): `grid` (planner/training/search.py), a candidate: every
valid configuration that fits, ranked by the cost model (planner/training/cost.py), exact
over the enumerated space; `milp` (models/stage_milp.py), exact: the best configurations'
layers re-split over the pipeline stages (stages differ: embedding, output layer, GPU
types), warm-started from the grid's split; `rule` (Narayanan et al. 2021's rule of
thumb), a baseline run only when asked for. Scored by step time; a plan is checked by
re-deriving its configuration's divisibility and memory from scratch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

from models.stage_milp import solve_stages
from planner.core.declined import Declined
from planner.core.errors import ExportMismatch, InfeasibleError, InputError, PlannerError
from planner.core.training import ParallelConfig, TrainWorkload
from planner.core.transformer import TransformerSpec
from planner.exports.megatron import megatron_arguments, megatron_text, model_shape_mismatch, parse_megatron
from planner.kind import Attempt, Candidate, Context, Method, Options, PlanKind
from planner.search import PlanResult, plan
from planner.training.cost import RESERVE_GB, Evaluation, TrainingSetup, evaluate
from planner.training.efficiency import matmul_rate
from planner.training.search import grid_search, rule_of_thumb
from planner.training.space import stage_split, why_invalid
from planner.training.stages import stage_inputs
from topologies.types import Topology

MILP_CONFIGS = 4  # distinct 1F1B configurations the stage MILP re-splits
RANK_ORDER = "tp-cp-ep-dp-pp"


@dataclass(frozen=True)
class TrainingProblem:
    model: TransformerSpec
    workload: TrainWorkload
    topology: Topology
    topology_name: str
    fix: tuple[tuple[str, object], ...] = ()
    top: int = 5
    user_fixed: tuple[str, ...] = ()  # the keys --fix gave (the others come from the workload)

    @cached_property
    def setup(self) -> TrainingSetup:
        return TrainingSetup(self.model, self.workload, self.topology)

    @property
    def fixes(self) -> dict:
        return dict(self.fix)

    def describe(self) -> dict:
        return {"model": self.model.describe(), "workload": self.workload.describe(), "topology": self.topology_name,
                "gpus": self.topology.num_gpus, "servers": len(self.topology.servers),
                "gpu_models": sorted({self.topology.node_by_id[g].model for g in self.topology.gpus}),
                "fix": self.fixes, "top": self.top}


def training_problem(spec: TransformerSpec, workload: TrainWorkload, topo: Topology, fix: dict, top: int = 5,
                     topology_name: str | None = None, workload_source: str | None = None) -> TrainingProblem:
    """The problem: `fix` (--fix) over the workload's own micro_batch and recompute; bad
    input (exit 2) for a GPU without a model or without tensor cores for the dtype."""
    for g in topo.gpus:
        if not topo.node_by_id[g].model:
            raise InputError(f"GPU {g!r} has no model (a GPU preset such as a100-80g, h100): the cost model needs "
                             "it", field="--topology")
    if top < 1:
        raise InputError("must be at least 1", field="--top")
    merged = {**workload.fixed(), **fix}
    problem = TrainingProblem(spec, workload, topo, topology_name or topo.name, tuple(sorted(merged.items())), top,
                              tuple(sorted(fix)))
    for gpu in sorted(set(problem.setup.gpu_of_rank), key=lambda g: g.name):
        try:
            gpu.peak_tflops(workload.dtype)
        except InputError as exc:
            raise exc.within(workload_source) from None
    return problem


@dataclass(frozen=True)
class TrainingPlan:
    evaluation: Evaluation
    ranked: tuple[Evaluation, ...] = ()  # the search's best, fastest first (the returned one first)
    considered: int = 0
    over_memory: int = 0
    default_split: Evaluation | None = field(default=None, compare=False)  # milp: the grid's split of it
    pool: tuple[Evaluation, ...] = field(default=(), compare=False)  # grid: every fitting configuration, ranked


@dataclass(frozen=True)
class TrainingBound:
    model_floor_s: float
    peak_floor_s: float

    def to_json(self) -> dict:
        return {"step_time_s": self.model_floor_s, "peak_step_time_s": self.peak_floor_s,
                "derivation": "model FLOPs of the step / the sum over GPUs of the matmul rate the cost model gives a "
                              "full-wave GEMM (no communication, no bubble, no recompute, no memory-bound op); "
                              "peak: / the dense peaks (MFU 1)"}


# ---------------------------------------------------------------- methods
def _grid(p: TrainingProblem, context: Context) -> Attempt:
    out = grid_search(p.setup, p.fixes)
    if out.considered == 0 and p.fixes:
        raise _fix_error(p)
    if not out.ranked:
        raise InfeasibleError(_nothing_fits(p, out.considered, out.smallest_overflow))
    return Attempt(TrainingPlan(out.ranked[0], out.ranked[:p.top], out.considered, out.over_memory, pool=out.ranked),
                   model={"configurations": out.considered, "over_memory": out.over_memory,
                          "collectives_planned": p.setup.pricer.planned})


def _fix_error(p: TrainingProblem) -> InputError:
    """Why the fixed fields admit no configuration: the rule they break, named by the field
    that fixed it (--fix, or the workload's micro_batch / recompute)."""
    fix, gpus = p.fixes, p.topology.num_gpus

    def field(key: str) -> str:
        return f"--fix {key}" if key in p.user_fixed or key not in fix else f"workload {key}"

    tp, pp, cp = fix.get("tp", 1), fix.get("pp", 1), fix.get("cp", 1)
    if gpus % (tp * pp * cp) or ("dp" in fix and fix["dp"] * tp * pp * cp != gpus):
        named = [k for k in ("tp", "pp", "cp", "dp") if k in fix]
        return InputError(f"{' x '.join(f'{k} {fix[k]}' for k in named)} does not divide into the topology's "
                          f"{gpus} GPUs", field=field(named[-1]) if named else "--fix")
    c = ParallelConfig(**{**fix, "dp": fix.get("dp", gpus // (tp * pp * cp))})
    if c.interleave == 1 and p.model.layers % c.pp:
        c = replace(c, layers_per_stage=stage_split(p.model.layers, c.pp))
    why = why_invalid(p.model, p.workload, gpus, c)
    if why is None:
        return InputError(f"no configuration with {', '.join(f'{k}={v}' for k, v in fix.items())} divides "
                          f"{p.model.name} over {gpus} GPUs (docs/parallelism.md, 'What divides')", field="--fix")
    return InputError(why[1], field=field(why[0]))


def _nothing_fits(p: TrainingProblem, considered: int, nearest: Evaluation | None) -> str:
    if considered == 0:
        return (f"no configuration of {p.model.name} divides over {p.topology.num_gpus} GPUs with global batch "
                f"{p.workload.global_batch}" + (f" and --fix {p.fixes}" if p.fixes else ""))
    return (f"none of the {considered} configurations fits in memory; the nearest ({_short(nearest.config)}): "
            f"{nearest.overflow}")


def _to_resplit(pool: tuple[Evaluation, ...]) -> list[ParallelConfig]:
    """The 1F1B configurations the MILP re-splits: the grid's best, and the MILP_CONFIGS best by
    the relaxed re-split estimate (layers as a divisible fluid over the devices at their own
    speed, `_relaxed_step`), which ranks first the depths whose stages line up with the GPU
    types although their even split ranks low."""
    seen: set[ParallelConfig] = set()
    out: list[Evaluation] = []
    for e in pool:
        c = replace(e.config, layers_per_stage=None)
        if c.pp > 1 and c.interleave == 1 and c not in seen:
            seen.add(c)
            out.append(e)
    grid_best = out[:1]  # the pool is ranked: the grid's best 1F1B configuration is always re-split
    out.sort(key=lambda e: (_relaxed_step(e), e.config.key()))
    picked = grid_best + [e for e in out if e not in grid_best][:MILP_CONFIGS]
    return [e.config for e in picked]


def _relaxed_step(e: Evaluation) -> float:
    """1F1B step if layers could be split in any fraction: device d, with time c_d per layer,
    fixed time f_d and room for at most n_d layers, takes min(n_d, (T - f_d) / c_d) of them, and
    T is the least time at which the devices take all the layers (infinite if they cannot)."""
    devices = []
    for d, cap in zip(e.devices, e.capacity_GB):
        f = d.parts.get("embedding_logits", 0.0) + d.parts.get("p2p", 0.0)
        per_layer = (d.per_microbatch_s - f) / d.layers
        per_layer_GB = (d.memory_GB - RESERVE_GB) / d.layers
        devices.append((per_layer, f, (cap - RESERVE_GB) / per_layer_GB))
    layers = sum(d.layers for d in e.devices)
    if sum(n for _, _, n in devices) < layers:
        return math.inf

    def taken(t: float) -> float:
        return sum(min(n, max(0.0, (t - f) / c)) for c, f, n in devices)

    lo, hi = 0.0, max(f + c * n for c, f, n in devices)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if taken(mid) < layers else (lo, mid)
    return (e.microbatches - 1 + len(e.devices)) * hi + e.breakdown_s["dp_comm"] + e.breakdown_s["optimizer"]


def _milp(p: TrainingProblem, context: Context) -> Attempt | Declined:
    if context.incumbent is None or not context.incumbent.solution.pool:
        return Declined("no grid configuration to re-split")
    chosen = _to_resplit(context.incumbent.solution.pool)
    if not chosen:
        return Declined("the best configurations have one pipeline stage or interleave: no stages to re-split")
    best = None
    solves = []
    for c in chosen:
        inputs = stage_inputs(p.setup, c)
        solution = solve_stages(inputs, context.options.time_limit_s / len(chosen), context.options.solver)
        solves.append(solution)
        if solution.layers_per_stage is None:
            continue
        default = evaluate(p.setup, c)
        split = evaluate(p.setup, replace(c, layers_per_stage=solution.layers_per_stage))
        # the MILP's model is linearised: its split is kept only where the full model agrees it is better
        e = split if split.overflow is None and split.step_time_s < default.step_time_s else default
        if best is None or (e.step_time_s, e.config.key()) < (best[0].step_time_s, best[0].config.key()):
            best = (e, default, solution)
    model = {"configurations_split": len(chosen), "variables": max(s.variables for s in solves),
             "constraints": max(s.constraints for s in solves)}
    if best is None:
        last = solves[-1]
        return Attempt(None, last.result, model, why=f"the stage MILP ended {last.result.termination.value}")
    e, even, solution = best
    grid = context.incumbent.solution
    return Attempt(TrainingPlan(e, (e, *grid.ranked), grid.considered, grid.over_memory, default_split=even),
                   solution.result, model)


def _rule(p: TrainingProblem, context: Context) -> Attempt:
    e = rule_of_thumb(p.setup, p.fixes)
    if e is None:
        raise InfeasibleError(f"the rule of thumb finds no configuration of {p.model.name} that fits on "
                              f"{p.topology.num_gpus} GPUs")
    return Attempt(TrainingPlan(e, (e,)))


METHODS: tuple[Method, ...] = (
    Method("grid", "candidate", _grid, "every valid configuration that fits, ranked by the cost model", heuristic=False),
    Method("milp", "exact", _milp, "layers re-split over the pipeline stages of the best 1F1B configurations",
           heuristic=False),
    Method("rule", "baseline", _rule, "Megatron's rule of thumb: TP in a server, PP to fit, DP for the rest"),
)


# ---------------------------------------------------------------- the kind
def _evaluate(p: TrainingProblem, solution: TrainingPlan):
    c = solution.evaluation.config
    why = why_invalid(p.model, p.workload, p.topology.num_gpus, c)
    if why is not None:
        raise PlannerError(f"the configuration does not divide: {why[1]}")
    e = evaluate(p.setup, c)
    if e.overflow is not None:
        raise PlannerError(f"the configuration does not fit: {e.overflow}")
    return e, e.step_time_s


def _bound(p: TrainingProblem, candidates: list[Candidate]) -> TrainingBound:
    w = p.workload
    flops = p.model.model_flops(w.tokens, w.seq_len, causal=w.attention == "flash")
    rate = sum(matmul_rate(g, w.dtype) for g in p.setup.gpu_of_rank)
    peak = sum(g.peak_tflops(w.dtype) for g in p.setup.gpu_of_rank) * 1e12
    return TrainingBound(flops / rate, flops / peak)


def _summary(e: Evaluation, p: TrainingProblem) -> dict:
    return e.to_json(p.workload.tokens, p.topology.num_gpus)


def _why_best(best: Evaluation, runner: Evaluation | None) -> str | None:
    if runner is None:
        return None
    margin = runner.step_time_s - best.step_time_s
    if margin <= 1e-9 * best.step_time_s:
        return f"ties with the next ({_short(runner.config)}) and is the smaller configuration"
    parts = set(best.breakdown_s) | set(runner.breakdown_s)
    diffs = {k: runner.breakdown_s.get(k, 0.0) - best.breakdown_s.get(k, 0.0) for k in parts}
    part, gain = max(diffs.items(), key=lambda kv: (kv[1], kv[0]))
    return (f"{margin:.3f} s faster than the next ({_short(runner.config)}); most of it in {part} "
            f"({gain:.3f} s less)")


def describe_config(c: dict) -> str:
    """A configuration (its `to_json` form) in one line, as the command line shows it."""
    return (f"tp {c['tp']} pp {c['pp']} dp {c['dp']} cp {c['cp']} ep {c['ep']} mb {c['micro_batch']} "
            f"v {c['interleave']} {c['recompute']}{' sp' if c['sequence_parallel'] else ''}"
            f"{' do' if c['distributed_optimizer'] else ''}"
            + (f" stages {list(c['layers_per_stage'])}" if c['layers_per_stage'] else ""))


def _short(c: ParallelConfig) -> str:
    return describe_config(c.to_json())


def _metrics(p: TrainingProblem, c: Candidate, bound: TrainingBound) -> dict:
    e: Evaluation = c.evidence
    solution: TrainingPlan = c.solution
    out = _summary(e, p)
    out.pop("config")
    out["lower_bound_step_time_s"] = bound.model_floor_s
    out["ratio_to_bound"] = e.step_time_s / bound.model_floor_s
    if solution.considered:
        out["configurations_considered"] = solution.considered
        out["configurations_over_memory"] = solution.over_memory
    rest = [x for x in solution.ranked if x.config != e.config]
    out["top"] = [_summary(x, p) for x in rest[:p.top - 1]]
    why = _why_best(e, rest[0] if rest else None)
    if why:
        out["why_best"] = why
    if solution.default_split is not None:
        out["default_split_step_time_s"] = solution.default_split.step_time_s
        out["default_split_layers_per_stage"] = [d.layers for d in solution.default_split.devices]
    return out


def _body(p: TrainingProblem, c: Candidate) -> dict:
    e: Evaluation = c.evidence
    topo = p.topology
    return {"config": e.config.to_json(), "layers_per_stage": [d.layers for d in e.devices],
            "megatron_args": [" ".join(a) for a in megatron_arguments(p.model, p.workload, e.config)],
            "rank_order": RANK_ORDER, "ranks": [[topo.node_by_id[g].server, g] for g in topo.gpus]}


def _export(p: TrainingProblem, c: Candidate) -> str:
    config = c.evidence.config
    text = megatron_text(p.model, p.workload, config)
    back = parse_megatron(text, p.model.layers, p.topology.num_gpus)
    if back != config:
        raise ExportMismatch(f"the Megatron arguments read back as {back}, not {config}")
    wrong = model_shape_mismatch(text, p.model)
    if wrong:
        raise ExportMismatch(f"the Megatron arguments build another model: {wrong}")
    return text


def _read_back(p: TrainingProblem, text: str) -> TrainingPlan:
    config = parse_megatron(text, p.model.layers, p.topology.num_gpus)
    return TrainingPlan(evaluate(p.setup, config))


PARALLELISM = PlanKind(
    name="parallelism",
    methods=METHODS,
    describe=lambda p: p.describe(),
    evaluate=_evaluate,
    bound=_bound,
    metrics=_metrics,
    body=_body,
    exports={"megatron": _export},
    read_back={"megatron": _read_back},
    lost=lambda exact, a, name, b: f"{exact}: its step takes {a:.3f} s, {name}'s {b:.3f} s",
    subject=lambda p: "training parallelism",
    noun="configuration",
    export_check="parsed back: same configuration",
    best_of="fastest modelled step",
    verified_by="planner.training.space + planner.training.cost",
)


def plan_training(problem: TrainingProblem, method: str = "auto", time_limit_s: float = 60.0,
                  solver: str | None = None, export: str | None = None) -> PlanResult:
    return plan(PARALLELISM, problem, method, Options(time_limit_s, solver, export))
