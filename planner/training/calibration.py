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
from planner.core.transformer import MODEL_PRESETS, TransformerSpec
from planner.training import efficiency
from planner.training.cost import TrainingSetup, sizes_of, stage_layer_cost
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
    metric: str  # narayanan_tflops | step_time_s | tflops_per_gpu (model FLOPs)
    value: float
    vocab: int | None = None
    spec: TransformerSpec | None = None  # a model that is not a preset
    as_run: dict | None = None  # settings the paper leaves out but its published scripts give

    def model_spec(self) -> TransformerSpec:
        spec = self.spec or MODEL_PRESETS[self.model]
        return spec if self.vocab is None else replace(spec, vocab=self.vocab)


def table4_layers() -> list[tuple[float, float, float, float, float]]:
    """Per setting: (model forward ms, model backward ms, their communication ms (fwd, bwd),
    ...) with SUSTAINED as stored: (fwd, bwd, fwd_comm, bwd_comm, measured fwd + bwd)."""
    spec = MODEL_PRESETS["megatron-22b"]
    setup = TrainingSetup(spec, TrainWorkload(4, 2048, **MEGATRON_2022), cluster("dgx-a100", 1))
    gpu = setup.gpu_of_rank[0]
    out = []
    for recompute, sp, fwd_ms, bwd_ms in TABLE4:
        c = ParallelConfig(tp=8, micro_batch=4, recompute=recompute, sequence_parallel=sp)
        cost = stage_layer_cost(setup, c, gpu, sizes_of(c), 0, moe=False)
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


NARAYANAN_ROWS = (  # model, TP, PP, DP, global batch, TFLOP/s per GPU (Table 1); micro-batch, interleave of
    # Megatron-LM's examples/sc21/run_table_1.sh (its --num-layers-per-virtual-pipeline-stage as chunks per GPU)
    ("megatron-1.7b", 1, 1, 32, 512, 137, 16, 1), ("megatron-3.6b", 2, 1, 32, 512, 138, 16, 1),
    ("megatron-7.5b", 4, 1, 32, 512, 142, 16, 1), ("megatron-18b", 8, 1, 32, 1024, 135, 8, 1),
    ("megatron-39b", 8, 2, 32, 1536, 138, 4, 1), ("megatron-76b", 8, 4, 32, 1792, 140, 2, 3),
    ("megatron-145b", 8, 8, 24, 2304, 148, 2, 2), ("megatron-310b", 8, 16, 15, 2160, 155, 1, 2),
    ("megatron-530b", 8, 35, 9, 2520, 163, 1, 3), ("megatron-1t", 8, 64, 6, 3072, 163, 1, 1))
KORTHIKANTI_ROWS = (  # model, TP, PP, global batch, micro-batch, interleave, full s, selective+SP s (Tables 3, 5)
    ("megatron-22b", 8, 1, 4, 4, 1, 1.42, 1.10), ("gpt3-175b", 8, 8, 64, 1, 3, 18.13, 13.75),
    ("megatron-530b", 8, 35, 280, 1, 3, 49.05, 37.83), ("megatron-1t", 8, 64, 512, 1, 1, 94.42, 71.49))


MEGATRON_H100_ROWS = (  # name, heads, hidden, layers, TP, PP, DP, global batch, TFLOP/s per GPU (README table)
    ("1.7b", 16, 2048, 24, 1, 1, 48, 192, 408.8), ("7.1b", 32, 4096, 30, 2, 1, 48, 192, 465.9),
    ("16b", 48, 6144, 32, 4, 1, 48, 192, 489.1), ("32b", 56, 7168, 48, 8, 1, 48, 192, 459.6),
    ("70b", 64, 8192, 84, 8, 2, 48, 384, 419.7), ("119b", 80, 10240, 92, 8, 4, 48, 768, 420.5),
    ("177b", 96, 12288, 96, 8, 6, 48, 1152, 432.8), ("314b", 128, 16384, 96, 8, 8, 48, 1536, 474.4),
    ("462b", 144, 18432, 112, 8, 16, 48, 3072, 459.9))
MEGATRON_CORE = dict(dtype="bf16", attention="flash", overlap_grad_reduce=True, tp_comm_overlap=True)
LLAMA3_ROWS = (  # GPUs, TP, CP, PP, DP, seq, sequences per batch, TFLOP/s per GPU (Llama 3, Table 4)
    (8192, 8, 1, 16, 64, 8192, 2048, 430), (16384, 8, 1, 16, 128, 8192, 2048, 400),
    (16384, 8, 16, 16, 8, 131072, 128, 380))


def published_runs() -> list[Published]:
    runs = []
    for model, tp, pp, dp, batch, tflops, micro_batch, interleave in NARAYANAN_ROWS:
        gpus = tp * pp * dp
        runs.append(Published("Narayanan et al. 2021, Table 1", model, f"dgx-a100x{gpus // 8}",
                              {"tp": tp, "pp": pp, "dp": dp, "cp": 1, "recompute": "full",
                               "sequence_parallel": False, "distributed_optimizer": False},
                              TrainWorkload(batch, 2048, **MEGATRON_2021), "narayanan_tflops", tflops,
                              as_run={"micro_batch": micro_batch, "interleave": interleave}))
    for model, tp, pp, batch, mb, v, full_s, selective_s in KORTHIKANTI_ROWS:
        topo = "dgx-a100" if tp * pp == 8 else f"dgx-a100x{tp * pp // 8}"
        for recompute, sp, seconds in (("full", False, full_s), ("selective", True, selective_s)):
            runs.append(Published("Korthikanti et al. 2022, Table 5", model, topo,
                                  {"tp": tp, "pp": pp, "dp": 1, "cp": 1, "micro_batch": mb, "interleave": v,
                                   "recompute": recompute, "sequence_parallel": sp, "distributed_optimizer": False},
                                  TrainWorkload(batch, 2048, **MEGATRON_2022), "step_time_s", seconds, vocab=51200))
    for name, heads, hidden, layers, tp, pp, dp, batch, tflops in MEGATRON_H100_ROWS:
        spec = TransformerSpec(f"megatron-readme-{name}", layers, hidden, 4 * hidden, heads, vocab=131072,
                               source="NVIDIA/Megatron-LM README, H100 weak-scaling table")
        gpus = tp * pp * dp
        runs.append(Published("Megatron-LM README (H100, 2024)", spec.name, f"hgx-h100x{gpus // 8}",
                              {"tp": tp, "pp": pp, "dp": dp, "cp": 1}, TrainWorkload(batch, 4096, **MEGATRON_CORE),
                              "tflops_per_gpu", tflops, spec=spec))
    for gpus, tp, cp, pp, dp, seq, batch, tflops in LLAMA3_ROWS:
        runs.append(Published("Llama 3 (arXiv 2407.21783), Table 4", "llama3-405b", f"hgx-h100x{gpus // 8}",
                              {"tp": tp, "cp": cp, "pp": pp, "dp": dp},
                              TrainWorkload(batch, seq, dtype="bf16"), "tflops_per_gpu", tflops))
    return runs


def narayanan_flops(spec: TransformerSpec, batch: int, seq: int) -> float:
    """Narayanan et al.'s FLOPs of a step with full recompute: 96 B s l h^2 (1 + s/6h + V/16lh)."""
    h, l, v = spec.hidden, spec.layers, spec.vocab
    return 96.0 * batch * seq * l * h * h * (1 + seq / (6 * h) + v / (16 * l * h))


def predicted(run: Published, e) -> float:
    """The run's published metric, from an evaluation."""
    gpus = e.config.gpus
    if run.metric == "narayanan_tflops":
        return narayanan_flops(run.model_spec(), run.workload.global_batch, run.workload.seq_len) / e.step_time_s / gpus / 1e12
    if run.metric == "tflops_per_gpu":  # the whole attention square, as Megatron-LM and Llama 3 count
        w = run.workload
        return run.model_spec().model_flops(w.tokens, w.seq_len) / e.step_time_s / gpus / 1e12
    return e.step_time_s
