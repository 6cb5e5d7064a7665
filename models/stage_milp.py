"""Layers to pipeline stages: a MILP when stages differ (GPU types, embedding, logits).

Given, for each device d of a 1F1B pipeline (v = 1) and each decoder layer l, the time
c[l][d] of layer l on d per micro-batch and the bytes mem[l][d] it costs there (weights,
gradients, optimizer states, the activations of the micro-batches d holds in flight), plus
each device's fixed time e[d] and bytes f[d] (embedding, output layer, sends, reserve) and
its capacity cap[d], choose contiguous layer ranges, one per device, to minimise the 1F1B
step time with m micro-batches plus the slowest device's gradient reduce + optimizer:

    min  (m - 1) z + sum_d T_d + w
    s.t. T_d = e[d] + sum_l c[l][d] x[l][d],   z >= T_d,
         w >= g[d] + sum_l r[l][d] x[l][d]     (gradient reduce + optimizer, affine in the layers)
         f[d] + sum_l mem[l][d] x[l][d] <= cap[d]
         sum_d x[l][d] = 1;  sum_l x[l][d] >= 1;  x[0][0] = x[L-1][p-1] = 1
         sum_{d' <= d} x[l][d'] >= sum_{d' <= d} x[l+1][d']   (ranges are contiguous, in order)

x binary, times in whole ticks, so the model is pure integer (CP-SAT by default). A layer's cost depends on its kind only (dense or MoE), so layers of one kind
are interchangeable; the model is L x p binaries and about 2 L p rows. The even split
(when it exists) is a feasible point and is given as the hint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from solvers import registry
from solvers.linear_model import LinearModel, quicksum
from solvers.result import SolveOptions, SolveResult

UNITS = 10_000  # time ticks per slowest layer
WALL_GUARD = 4.0


@dataclass(frozen=True)
class StageInputs:
    microbatches: int
    layer_seconds: tuple[tuple[float, ...], ...]  # [layer][device]
    layer_bytes: tuple[tuple[float, ...], ...]
    layer_tail_seconds: tuple[tuple[float, ...], ...]  # gradient reduce + optimizer per layer, [layer][device]
    fixed_seconds: tuple[float, ...]
    fixed_tail_seconds: tuple[float, ...]
    fixed_bytes: tuple[float, ...]
    capacity_bytes: tuple[float, ...]
    hint: tuple[int, ...] | None = None  # layers per device


@dataclass(frozen=True)
class StageSolution:
    layers_per_stage: tuple[int, ...] | None
    result: SolveResult
    variables: int
    constraints: int


def solve_stages(inputs: StageInputs, work_s: float, solver: str | None = None) -> StageSolution:
    """Solve under a deterministic work limit (CP-SAT's deterministic seconds) so the same
    input gives the same split under any load; times are whole units of 1/UNITS of the
    slowest layer, bytes whole MB rounded up (the split is re-evaluated exactly after)."""
    layers, devices = len(inputs.layer_seconds), len(inputs.fixed_seconds)
    unit = max(max(max(row) for row in inputs.layer_seconds), 1e-12) / UNITS

    def ticks(seconds: float) -> int:
        return int(round(seconds / unit))

    model = LinearModel("pipeline-stages")
    x = [[model.add_binary(f"x{l}_{d}") for d in range(devices)] for l in range(layers)]
    horizon = sum(ticks(max(row)) for row in inputs.layer_seconds) + ticks(max(inputs.fixed_seconds)) + 1
    tail_horizon = (sum(ticks(max(row)) for row in inputs.layer_tail_seconds)
                    + ticks(max(inputs.fixed_tail_seconds)) + 1)
    z = model.add_var("z", 0, horizon, integer=True)
    w = model.add_var("w", 0, tail_horizon, integer=True)
    times = []
    for d in range(devices):
        t = quicksum(ticks(inputs.layer_seconds[l][d]) * x[l][d] for l in range(layers)) + ticks(inputs.fixed_seconds[d])
        times.append(t)
        model.add_constraint(z - t, ">=", 0)
        tail = quicksum(ticks(inputs.layer_tail_seconds[l][d]) * x[l][d] for l in range(layers))
        model.add_constraint(w - tail, ">=", ticks(inputs.fixed_tail_seconds[d]))
        room_mb = math.floor((inputs.capacity_bytes[d] - inputs.fixed_bytes[d]) / 1e6)
        model.add_constraint(quicksum(math.ceil(inputs.layer_bytes[l][d] / 1e6) * x[l][d] for l in range(layers)),
                             "<=", room_mb)
        model.add_constraint(quicksum(x[l][d] for l in range(layers)), ">=", 1)
    for l in range(layers):
        model.add_constraint(quicksum(x[l]), "==", 1)
        if l + 1 < layers:
            for d in range(devices - 1):
                model.add_constraint(quicksum(x[l][:d + 1]) - quicksum(x[l + 1][:d + 1]), ">=", 0)
    model.add_constraint(x[0][0].to_expr(), "==", 1)
    model.add_constraint(x[layers - 1][devices - 1].to_expr(), "==", 1)
    model.minimize((inputs.microbatches - 1) * z + quicksum(times) + w)
    if inputs.hint is not None:
        hint, first = {}, 0
        for d, n in enumerate(inputs.hint):
            for l in range(layers):
                hint[x[l][d]] = 1.0 if first <= l < first + n else 0.0
            first += n
        model.set_hint(hint)
    guard = WALL_GUARD * work_s + 1.0  # stops a runaway only: the work limit decides
    result = registry.solve(model, solver, SolveOptions(time_limit_s=guard, work_limit=work_s, threads=1))
    split = None
    if result.values is not None:
        split = tuple(sum(1 for l in range(layers) if result.values[x[l][d].index] > 0.5) for d in range(devices))
    return StageSolution(split, result, model.num_vars, model.num_constraints)
