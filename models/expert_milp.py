"""Expert replication and placement of one layer as an integer program (`--method milp`).

Variables, on the G GPUs with K slots each (loads in integer units of the warm start's
max load / 10^6, rounded down so the model never overstates a load):
- the *modelled* experts M (the heaviest, at most MODEL_BINARIES / G of them, always
  including every expert the warm start replicates; all experts when they fit):
  z[e, r] = 1 if expert e gets r replicas, for r from ceil(w_e / U) (U: the warm start's
  max load; a better solution needs no more load per replica) to that plus the spare slots,
  at most G; x[e, g] = 1 if GPU g holds a replica of e (one per GPU); q[e, g] >= the load
  of that replica (w_e / r when x[e, g] = 1, by a big-M on the largest share);
- the other experts keep one replica each and enter as a *fluid* per GPU: f[g] >= 0 with
  sum f = their load, and f[g] at least the sum of the c_g lightest of them, where c_g =
  K - (modelled replicas on g) is the number of slots left for them (tangents of the
  convex prefix-sum curve);
- T >= sum_e q[e, g] + f[g] on every GPU and T >= total / G; minimise T.
Slots: sum_g x[e, g] = sum_r r z[e, r]; sum of modelled replicas = slots - |others|.
Symmetry breaking: GPUs are interchangeable, so their modelled loads are non-increasing.
The warm start (the greedy map, GPUs reordered to that order) is given as a full hint.

Decoding puts the modelled replicas where x says, packs the other experts (decreasing
load, least loaded GPU with a free slot) and runs the greedy's swap search; the better of
that and the warm start is kept. With every expert modelled the model is the exact
problem; otherwise it is exact for the heavy experts and a relaxation-guided packing for
the rest, and only the lower bound of planner/expert_bounds.py proves anything; with every
expert modelled the solver's own bound is a lower bound too.

Layers are independent: solved in parallel threads (CP-SAT releases the GIL), each with a
deterministic work limit so the same input gives the same map.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from planner.core.experts import gpu_loads
from solvers import Limit, LinearModel, SolveOptions, honours_work_limit, quicksum, solve
from solvers.expert_greedy import flatten_slots, improve_by_swaps, place_in_order

MODEL_BINARIES = 2400  # x variables per model: what CP-SAT improves within about a second
UNITS = 1_000_000  # load units per warm-start max load
# The wall-clock guard stops a runaway only: WALL_GUARD times the wall time the work limit
# takes, so a machine loaded by other jobs does not cut a search short and change the map.
WALL_GUARD = 4.0
# CP-SAT's deterministic time on the layer model runs at about a quarter of wall time
# (a 4-layer, 32-expert, 8-GPU model: 1.0 units in 3.2-4.0 s on 2 cores); the guard is set
# from it. The work budget itself keeps its calibration (per unit of --time-limit), so the
# milp takes longer than --time-limit on such models (docs/experts.md).
LAYER_WORK_PER_SECOND = 0.25
# Cores the work budget is set for (this project's reference machine, where the figures of
# docs/experts.md were measured): the budget never reads the machine's own core count.
WORK_CORES = 2


@dataclass(frozen=True)
class LayerSolve:
    phys: np.ndarray  # the returned map of the layer (or node)
    status: str  # the model's termination
    seconds: float
    limit: Limit | None  # the limit that stopped the solve (the work limit, unless the wall guard)
    modelled: int  # experts with replica and placement variables
    variables: int
    improved: bool  # the model's map beat the warm start
    message: str = ""
    dual_bound: float | None = None  # a lower bound on the max load, when every expert is modelled


def solve_layer(w: np.ndarray, gpus: int, slots_per_gpu: int, warm: np.ndarray, work_s: float,
                solver: str | None = None) -> LayerSolve:
    """Improve the warm-start map `warm` of one layer (docstring above)."""
    w = np.asarray(w, dtype=np.float64)
    experts, slots = len(w), gpus * slots_per_gpu
    warm_loads = gpu_loads(w, warm, slots_per_gpu)
    best = float(warm_loads.max())
    if best <= 0 or w.sum() / gpus >= best * (1 - 1e-12):  # already at the average: nothing to gain
        return LayerSolve(warm, "optimal", 0.0, None, 0, 0, False, "the warm start carries the mean load",
                          dual_bound=best)
    counts = np.bincount(warm, minlength=experts)
    scale = UNITS / best
    units = np.floor(w * scale).astype(np.int64)
    modelled = _modelled_experts(w, counts, gpus)
    others = np.setdiff1d(np.arange(experts), modelled)
    model, x, hint = _build(units, modelled, others, counts, warm, gpus, slots_per_gpu, slots)
    model.set_hint(hint)
    # The work limit decides; the wall-clock guard only stops a runaway, and is wide so
    # that a busy machine does not cut a search short and change the map. A backend with
    # no work limit (HiGHS, SCIP, CBC) stops on the guard, at WALL_GUARD x the work.
    per_second = LAYER_WORK_PER_SECOND if honours_work_limit(model, solver) else 1.0
    wall_guard = WALL_GUARD * work_s / per_second + 1.0
    result = solve(model, solver, SolveOptions(time_limit_s=wall_guard, work_limit=work_s, threads=1))
    if not result.has_solution:
        return LayerSolve(warm, result.termination.value, result.seconds, result.limit, len(modelled),
                          model.num_vars, False, result.message)
    phys = _decode(w, result, x, modelled, others, gpus, slots_per_gpu)
    found = float(gpu_loads(w, phys, slots_per_gpu).max())
    improved = found < best * (1 - 1e-12)
    # Loads were rounded down, so the model's bound never exceeds the true optimum.
    dual = result.dual_bound / scale if not len(others) and result.dual_bound is not None else None
    return LayerSolve(phys if improved else warm, result.termination.value, result.seconds, result.limit,
                      len(modelled), model.num_vars, improved, result.message, dual)


def _modelled_experts(w, counts, gpus):
    order = np.lexsort((np.arange(len(w)), -w))
    replicated = np.flatnonzero(counts > 1)
    room = max(MODEL_BINARIES // gpus, len(replicated))
    chosen = list(replicated)
    for e in order.tolist():
        if len(chosen) >= room:
            break
        if counts[e] == 1:
            chosen.append(e)
    return np.array(sorted(chosen), dtype=np.int64)


def _build(units, modelled, others, counts, warm, gpus, k, slots):
    m = LinearModel("expert-layer")
    upper = UNITS + 1
    spare = slots - len(others) - sum(max(1, -(-int(units[e]) // upper)) for e in modelled)
    gpu_of_slot = np.arange(slots) // k
    held = np.zeros((len(units), gpus), dtype=bool)
    held[warm, gpu_of_slot] = True
    # GPUs in the warm start reordered by modelled load, to satisfy the symmetry breaking
    modelled_load = np.zeros(gpus, dtype=np.int64)
    for e in modelled.tolist():
        modelled_load += held[e] * (units[e] // counts[e])
    order = np.argsort(-modelled_load, kind="stable")
    held = held[:, order]

    hint = {}
    x, q_sum, replicas = {}, [[] for _ in range(gpus)], []
    for e in modelled.tolist():
        lo = max(1, -(-int(units[e]) // upper))
        hi = min(gpus, lo + max(spare, 0))
        z = {r: m.add_binary(f"z{e}_{r}") for r in range(lo, hi + 1)}
        m.add(quicksum(z.values()) == 1)
        count = quicksum(r * v for r, v in z.items())
        share = quicksum((int(units[e]) // r) * v for r, v in z.items())
        big = int(units[e]) // lo
        xs = [m.add_binary(f"x{e}_{g}") for g in range(gpus)]
        m.add(quicksum(xs) == count)
        replicas.append(count)
        for r, v in z.items():
            hint[v] = 1.0 if r == counts[e] else 0.0
        for g, xv in enumerate(xs):
            q = m.add_var(f"q{e}_{g}", 0, big, integer=True)
            m.add(q - share + big * (1 - xv) >= 0)
            q_sum[g].append(q)
            hint[xv] = float(held[e, g])
            hint[q] = float(units[e] // counts[e]) if held[e, g] else 0.0
        x[e] = xs
    m.add(quicksum(replicas) == slots - len(others))

    light = np.sort(units[others])
    prefix = np.concatenate([[0], np.cumsum(light)])
    fluid_total = int(prefix[-1])
    total_units = int(units.sum())
    t = m.add_var("T", -(-total_units // gpus), upper * k, integer=True)
    loads = []
    fluids = []
    for g in range(gpus):
        f = m.add_var(f"f{g}", 0, fluid_total, integer=True)
        fluids.append(f)
        left = k - quicksum(x[e][g] for e in modelled.tolist())
        m.add(left >= 0)
        for c in range(min(k, len(light))):
            m.add(f - int(prefix[c]) - int(light[c]) * (left - c) >= 0)
        load = quicksum(q_sum[g]) if q_sum[g] else None
        loads.append(load)
        m.add(t - f - (load if load is not None else 0) >= 0)
    m.add(quicksum(fluids) == fluid_total)
    for g in range(gpus - 1):
        if loads[g] is not None:
            m.add(loads[g] - loads[g + 1] >= 0)
    m.minimize(t)

    others_set = set(others.tolist())
    gpu_fluid = np.zeros(gpus, dtype=np.int64)
    gpu_modelled = np.zeros(gpus, dtype=np.int64)
    for e in range(len(units)):
        on = np.flatnonzero(held[e])
        if e in others_set:
            gpu_fluid[on] += units[e]
        else:
            gpu_modelled[on] += units[e] // counts[e]
    for g, f in enumerate(fluids):
        hint[f] = float(gpu_fluid[g])
    hint[t] = float(max(int((gpu_fluid + gpu_modelled).max()), -(-total_units // gpus)))
    return m, x, hint


def _decode(w, result, x, modelled, others, gpus, k):
    slots = [[] for _ in range(gpus)]
    counts = np.ones(len(w), dtype=np.int64)
    for e in modelled.tolist():
        on = [g for g in range(gpus) if result.value(x[e][g]) > 0.5]
        counts[e] = len(on)
        for g in on:
            slots[g].append(e)
    share = w / counts
    load = np.array([sum(share[e] for e in gpu) for gpu in slots], dtype=np.float64)
    place_in_order(others[np.lexsort((others, -w[others]))].tolist(), share, slots, load, k)
    return improve_by_swaps(w, flatten_slots(slots), k)


def solve_layers(jobs: list[tuple[np.ndarray, int, int, np.ndarray]], time_limit_s: float,
                 solver: str | None = None) -> list[LayerSolve]:
    """Solve (w, gpus, K, warm) jobs in parallel threads within about `time_limit_s` in all."""
    return run_in_parallel(solve_layer, jobs, time_limit_s, solver)


def run_in_parallel(solve_one, jobs: list[tuple], time_limit_s: float, solver: str | None,
                    work_per_second: float = 1.0, workers: int | None = None) -> list:
    """solve_one(*job, work_s, solver) for every job in threads, one per core, with a
    deterministic work limit per job that keeps the whole run within about `time_limit_s`
    on a machine of WORK_CORES cores: half of each job's share (solvers overrun their work
    limits and decoding takes time), times the model's `work_per_second` (CP-SAT's
    deterministic time per wall second). The limit does not depend on this machine's
    cores, so the same input gives the same maps anywhere; more cores finish sooner, one
    core takes up to WORK_CORES times as long. `workers`: threads (default: the cores)."""
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    work = work_limit(time_limit_s, len(jobs), work_per_second)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(solve_one, *job, work, solver) for job in jobs]
        return [f.result() for f in futures]


def work_limit(time_limit_s: float, jobs: int, work_per_second: float = 1.0) -> float:
    """Deterministic work per model: `run_in_parallel`'s budget, from the time limit and the
    number of models only (the threads a WORK_CORES machine would run them on)."""
    return max(0.05, time_limit_s * min(max(1, jobs), WORK_CORES) / max(1, jobs) / 2 * work_per_second)


def solve_seconds(solves: list[LayerSolve]) -> float:
    return math.fsum(s.seconds for s in solves)


def summarize(solves: list[LayerSolve]) -> dict:
    statuses = [s.status for s in solves]
    return {"layers_solved": len(solves), "improved_layers": sum(s.improved for s in solves),
            "statuses": {name: statuses.count(name) for name in sorted(set(statuses))},
            "limit_hit": any(s.limit is not None for s in solves),
            "modelled_experts_max": max((s.modelled for s in solves), default=0),
            "variables_max": max((s.variables for s in solves), default=0)}
