"""The stage MILP's inputs from the cost model: per device, what a layer of each kind adds
(time per micro-batch, bytes, gradient reduce + optimizer) and what the device costs with
no layer (embedding, output layer, sends, reserve). Compute and weights are linear in the
layers a device holds; the rest is linearised: the gradient reduce (its overlap and its
choice of algorithm) and, under full recompute, the one layer's working set (counted with
every layer, so the memory side errs safe). The split the MILP returns is re-evaluated by
the full model, and kept only if it fits there.
"""
from __future__ import annotations

from models.stage_milp import StageInputs
from planner.core.training import ParallelConfig
from planner.training.cost import TrainingSetup, device_cost, sizes_of
from planner.training.space import stage_split


def stage_inputs(setup: TrainingSetup, c: ParallelConfig) -> StageInputs:
    """For a 1F1B configuration (interleave 1)."""
    spec, w = setup.spec, setup.workload
    sizes = sizes_of(c)
    m = w.global_batch // (c.dp * c.micro_batch)
    kinds = [spec.is_moe and layer >= spec.dense_layers for layer in range(spec.layers)]
    sample = {False: [0], True: [spec.dense_layers]}
    seconds, tails, nbytes = [], [], []
    fixed_s, fixed_tail, fixed_bytes, capacity = [], [], [], []
    for d in range(c.pp):
        empty = device_cost(setup, c, sizes, d, [], m)
        fixed_s.append(empty.per_microbatch_s)
        fixed_tail.append(empty.dp_exposed_s + empty.optimizer_s)
        fixed_bytes.append(empty.memory_GB * 1e9)
        capacity.append(setup.stage_gpu(sizes, d).memory_GB * 1e9)
        per_kind = {}
        for kind in set(kinds):
            one = device_cost(setup, c, sizes, d, sample[kind], m)
            per_kind[kind] = (one.per_microbatch_s - empty.per_microbatch_s,
                              one.dp_exposed_s + one.optimizer_s - fixed_tail[-1],
                              (one.memory_GB - empty.memory_GB) * 1e9)
        seconds.append([per_kind[k][0] for k in kinds])
        tails.append([max(0.0, per_kind[k][1]) for k in kinds])
        nbytes.append([per_kind[k][2] for k in kinds])
    def by_layer(rows):
        return tuple(tuple(rows[d][l] for d in range(c.pp)) for l in range(spec.layers))
    hint = c.layers_per_stage or stage_split(spec.layers, c.pp) or tuple([spec.layers // c.pp] * c.pp)
    return StageInputs(m, by_layer(seconds), by_layer(nbytes), by_layer(tails), tuple(fixed_s), tuple(fixed_tail),
                       tuple(fixed_bytes), tuple(capacity), hint)
