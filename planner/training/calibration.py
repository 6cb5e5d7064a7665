"""The calibration data of the cost model, and the published runs it is checked against.

Calibration (the one fitted constant, efficiency.SUSTAINED): Korthikanti et al. 2022
(arXiv 2205.05198), Table 4: one layer of their 22B GPT (hidden 6144, 64 heads, seq 2048,
micro-batch 4, TP 8 on a DGX A100 80 GB, fp16), forward and backward milliseconds under five
settings. SUSTAINED is the factor on every kernel time (not on communication, which has
its own measured efficiency) that makes the model's ten numbers add up to theirs.

Checks (never fitted): Narayanan et al. 2021, Table 1 (weak scaling, full recompute,
TFLOP/s per GPU by their formula); Korthikanti et al. 2022, Table 5 (iteration seconds,
full recompute and selective + sequence parallel); the Megatron-LM README's H100 table
(MFU); Llama 3 (arXiv 2407.21783) Table 4 (405B on H100s, TFLOP/s per GPU).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planner.core.training import ParallelConfig, TrainWorkload
from planner.core.transformer import MODEL_PRESETS
from planner.training import efficiency
from planner.training.cost import TrainingSetup, sizes_of
from planner.training.layer import LayerContext, layer_cost
from planner.training.comm import group_ranks
from topologies.fabrics import cluster

COMM_PARTS = ("tp_comm", "ep_comm", "cp_comm")

# (recompute, sequence_parallel, forward ms, backward ms), Korthikanti et al. 2022, Table 4
TABLE4 = (("none", False, 7.7, 11.9), ("none", True, 7.2, 11.8), ("full", False, 7.7, 19.5),
          ("selective", False, 7.7, 13.2), ("selective", True, 7.2, 13.1))
MEGATRON_2021 = dict(dtype="fp16", attention="unfused", overlap_grad_reduce=False, gradient_accumulation_fusion=False)
MEGATRON_2022 = dict(dtype="fp16", attention="unfused", overlap_grad_reduce=False)


@dataclass(frozen=True)
class Published:
    """One published run: model preset, cluster, the configuration as published (the
    fields not published are searched), the workload, and the measured figure."""

    source: str
    model: str
    topology: str
    fix: dict
    workload: TrainWorkload
    metric: str  # narayanan_tflops | step_time_s | mfu | tflops_per_gpu
    value: float
    vocab: int | None = None


def table4_layers() -> list[tuple[float, float, float, float, float]]:
    """Per setting: (model forward ms, model backward ms, their communication ms (fwd, bwd),
    ...) with SUSTAINED as stored: (fwd, bwd, fwd_comm, bwd_comm, measured fwd + bwd)."""
    spec = MODEL_PRESETS["megatron-22b"]
    setup = TrainingSetup(spec, TrainWorkload(4, 2048, **MEGATRON_2022), cluster("dgx-a100", 1))
    gpu = setup.gpu_of_rank[0]
    out = []
    for recompute, sp, fwd_ms, bwd_ms in TABLE4:
        c = ParallelConfig(tp=8, micro_batch=4, recompute=recompute, sequence_parallel=sp)
        ranks = {k: group_ranks(sizes_of(c), k) for k in ("tp", "cp", "ep")}
        cost = layer_cost(LayerContext(spec, setup.workload, c, gpu, setup.pricer, ranks["tp"], ranks["cp"],
                                       ranks["ep"]), moe=False)
        comm_f = sum(cost.forward[k] for k in COMM_PARTS)
        comm_b = sum(cost.backward[k] for k in COMM_PARTS) + (comm_f if recompute == "full" else 0.0)
        out.append((cost.forward_s * 1e3, cost.backward_s * 1e3, comm_f * 1e3, comm_b * 1e3, fwd_ms + bwd_ms))
    return out


def sustained_fraction() -> float:
    """The SUSTAINED that makes the model's Table 4 sum equal the measured one."""
    rows = table4_layers()
    measured = sum(r[4] for r in rows)
    comm = sum(r[2] + r[3] for r in rows)
    compute_at_one = sum(r[0] + r[1] - r[2] - r[3] for r in rows) * efficiency.SUSTAINED
    return compute_at_one / (measured - comm)


NARAYANAN_ROWS = (  # model, TP, PP, DP, global batch, TFLOP/s per GPU (Table 1)
    ("megatron-1.7b", 1, 1, 32, 512, 137), ("megatron-3.6b", 2, 1, 32, 512, 138), ("megatron-7.5b", 4, 1, 32, 512, 142),
    ("megatron-18b", 8, 1, 32, 1024, 135), ("megatron-39b", 8, 2, 32, 1536, 138), ("megatron-76b", 8, 4, 32, 1792, 140),
    ("megatron-145b", 8, 8, 24, 2304, 148), ("megatron-310b", 8, 16, 15, 2160, 155),
    ("megatron-530b", 8, 35, 9, 2520, 163), ("megatron-1t", 8, 64, 6, 3072, 163))
KORTHIKANTI_ROWS = (  # model, TP, PP, global batch, micro-batch, interleave, full s, selective+SP s (Tables 3, 5)
    ("megatron-22b", 8, 1, 4, 4, 1, 1.42, 1.10), ("gpt3-175b", 8, 8, 64, 1, 3, 18.13, 13.75),
    ("megatron-530b", 8, 35, 280, 1, 3, 49.05, 37.83), ("megatron-1t", 8, 64, 512, 1, 1, 94.42, 71.49))


def published_runs() -> list[Published]:
    runs = []
    for model, tp, pp, dp, batch, tflops in NARAYANAN_ROWS:
        gpus = tp * pp * dp
        runs.append(Published("Narayanan et al. 2021, Table 1", model, f"dgx-a100x{gpus // 8}",
                              {"tp": tp, "pp": pp, "dp": dp, "cp": 1, "recompute": "full",
                               "sequence_parallel": False, "distributed_optimizer": False},
                              TrainWorkload(batch, 2048, **MEGATRON_2021), "narayanan_tflops", tflops))
    for model, tp, pp, batch, mb, v, full_s, selective_s in KORTHIKANTI_ROWS:
        topo = "dgx-a100" if tp * pp == 8 else f"dgx-a100x{tp * pp // 8}"
        for recompute, sp, seconds in (("full", False, full_s), ("selective", True, selective_s)):
            runs.append(Published("Korthikanti et al. 2022, Table 5", model, topo,
                                  {"tp": tp, "pp": pp, "dp": 1, "cp": 1, "micro_batch": mb, "interleave": v,
                                   "recompute": recompute, "sequence_parallel": sp, "distributed_optimizer": False},
                                  TrainWorkload(batch, 2048, **MEGATRON_2022), "step_time_s", seconds, vocab=51200))
    return runs


def with_vocab(spec, vocab: int | None):
    return spec if vocab is None else replace(spec, vocab=vocab)
