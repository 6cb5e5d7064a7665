"""The cost model of one training configuration: step time with its breakdown, memory per
GPU with its breakdown, MFU.

Per pipeline device d (stage d, or its v interleaved chunks): the forward and backward of
one micro-batch through its layers (planner/training/layer.py), the embedding on the first
and the output layer + cross-entropy on the last, and the point-to-point sends between
stages. With m micro-batches, 1F1B (v = 1) takes sum_d D_d + (m - 1) max_d D_d, where D_d is
a device's time per micro-batch; the interleaved schedule divides the fill and drain by v:
m max_d D_d + (sum_d D_d - max_d D_d) / v. Then the data-parallel gradient reduce (all-reduce,
or reduce-scatter + all-gather of the parameters with the distributed optimizer), exposed
in full, or beyond the last micro-batch's backward when overlapped, and the optimizer step
(memory-bound Adam). Memory: 16-bit weights, gradients in the reduce dtype, fp32 master
weights and Adam moments (sharded over the data-parallel ranks with the distributed
optimizer), and the activations of the micro-batches in flight on the device.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

from planner.core.gpus import GpuSpec, gpu_spec
from planner.core.training import DTYPE_BYTES, ParallelConfig, TrainWorkload
from planner.core.transformer import TransformerSpec
from planner.training.comm import CommPricer, group_ranks
from planner.training.efficiency import gemm_seconds, memory_seconds
from planner.training.layer import ACT, LayerContext, LayerCost, activation_footprint, layer_cost
from topologies.types import Topology

RESERVE_GB = 2.0  # CUDA context, NCCL buffers, allocator slack: not available to the model
# Bytes per parameter of Megatron's optimizer step (fused multi-tensor kernels): gradient norm (read 4),
# clip/unscale (read and write 8), Adam (read master, m, v, gradient; write master, m, v: 28), the 16-bit
# copy (read 4, write 2); zeroing the gradient buffer is counted on every local parameter (gradient bytes).
OPTIMIZER_PASS_BYTES = 4 + 8 + 28 + 6
OPTIMIZER_STATE_BYTES = 12  # fp32 master weights, Adam m and v
PARTS = ("gemm", "attention", "memory_bound", "tp_comm", "ep_comm", "cp_comm", "recompute")


@dataclass(frozen=True)
class DeviceCost:
    """One pipeline device (its GPUs all alike), per micro-batch and per step."""

    index: int
    gpu: str
    layers: int
    forward_s: float
    backward_s: float
    parts: dict[str, float]  # per micro-batch, PARTS + embedding_logits + p2p
    dp_exposed_s: float
    optimizer_s: float
    memory: dict[str, float]  # GB

    @property
    def per_microbatch_s(self) -> float:
        return sum(self.parts.values())

    @property
    def memory_GB(self) -> float:
        return sum(self.memory.values())


@dataclass(frozen=True)
class Evaluation:
    config: ParallelConfig
    step_time_s: float
    breakdown_s: dict[str, float]
    devices: tuple[DeviceCost, ...]
    microbatches: int
    model_flops: float  # attention counted as computed: half the square with fused (causal) attention
    peak_flops: float  # sum over GPUs, dense, the workload's dtype
    capacity_GB: tuple[float, ...]

    @property
    def worst(self) -> DeviceCost:
        return max(self.devices, key=lambda d: (d.memory_GB - self.capacity_GB[d.index], -d.index))

    @property
    def memory_per_gpu_GB(self) -> float:
        return max(d.memory_GB for d in self.devices)

    @property
    def overflow(self) -> str | None:
        """None when every device fits, else what overflows by how much."""
        d = self.worst
        cap = self.capacity_GB[d.index]
        if d.memory_GB <= cap:
            return None
        parts = ", ".join(f"{k} {v:.1f}" for k, v in d.memory.items())
        return (f"pipeline stage {d.index} needs {d.memory_GB:.1f} GB per GPU, {d.memory_GB - cap:.1f} GB more than "
                f"the {d.gpu}'s {cap:g} GB ({parts})")

    @property
    def mfu(self) -> float:
        return self.model_flops / (self.step_time_s * self.peak_flops)

    def to_json(self, tokens: int, gpus: int) -> dict:
        return {"config": self.config.to_json(), "step_time_s": self.step_time_s,
                "tokens_per_s": tokens / self.step_time_s,
                "tflops_per_gpu": self.model_flops / self.step_time_s / gpus / 1e12, "mfu": self.mfu,
                "memory_per_gpu_GB": self.memory_per_gpu_GB, "microbatches": self.microbatches,
                "breakdown_s": self.breakdown_s,
                "memory_breakdown_GB": self.worst.memory,
                "stages": [{"gpu": d.gpu, "layers": d.layers, "per_microbatch_s": d.per_microbatch_s,
                            "memory_GB": d.memory_GB} for d in self.devices]}


@dataclass
class TrainingSetup:
    """What every configuration of one problem shares: model, workload, cluster, the
    collective prices and the layer costs computed so far."""

    spec: TransformerSpec
    workload: TrainWorkload
    topology: Topology
    pricer: CommPricer = field(init=False)
    layer_cache: dict = field(default_factory=dict, init=False)
    _stage_gpus: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.pricer = CommPricer(self.topology)

    @cached_property
    def gpu_of_rank(self) -> tuple[GpuSpec, ...]:
        topo = self.topology
        return tuple(gpu_spec(topo.node_by_id[g].model, field="--topology") for g in topo.gpus)

    @cached_property
    def gpus_per_server(self) -> int:
        return min(len(g) for g in self.topology.servers.values())

    def stage_gpu(self, sizes: dict[str, int], stage: int) -> GpuSpec:
        """The GPU a stage runs as: its own type, or for a stage of several types the least
        of each figure (its ranks run in lock step and hold the same shards)."""
        key = (sizes["pp"], stage)
        gpu = self._stage_gpus.get(key)
        if gpu is None:
            per_stage = self.topology.num_gpus // sizes["pp"]
            gpu = self._stage_gpus[key] = weakest(set(self.gpu_of_rank[stage * per_stage:(stage + 1) * per_stage]))
        return gpu


def weakest(gpus: set[GpuSpec]) -> GpuSpec:
    if len(gpus) == 1:
        return next(iter(gpus))
    ordered = sorted(gpus, key=lambda g: g.name)

    def least(field: str):
        values = [getattr(g, field) for g in ordered]
        return None if any(v is None for v in values) else min(values)

    achieved = min(g.hbm_GBps * g.hbm_efficiency for g in ordered)
    rates = {g.name: g.matmul_efficiency * g.bf16_tflops if g.bf16_tflops else 0.0 for g in ordered}
    slowest = min(ordered, key=lambda g: (rates[g.name], g.name))
    return replace(slowest, name="+".join(g.name for g in ordered), summary="the least of " + ", ".join(
        g.name for g in ordered), bf16_tflops=least("bf16_tflops"), fp16_tflops=least("fp16_tflops"),
        fp8_tflops=least("fp8_tflops"), memory_GB=least("memory_GB"), hbm_GBps=achieved, hbm_efficiency=1.0,
        sms=least("sms"), matmul_efficiency=min(g.matmul_efficiency for g in ordered),
        scaleup_efficiency=min(g.scaleup_efficiency for g in ordered))


def sizes_of(c: ParallelConfig) -> dict[str, int]:
    return {"tp": c.tp, "cp": c.cp, "ep": c.ep, "edp": c.dp // c.ep, "pp": c.pp}


def layers_of_devices(spec: TransformerSpec, c: ParallelConfig) -> list[list[int]]:
    """The decoder layer indices on each pipeline device."""
    if c.layers_per_stage is not None:
        out, first = [], 0
        for n in c.layers_per_stage:
            out.append(list(range(first, first + n)))
            first += n
        return out
    if spec.layers % (c.pp * c.interleave):
        raise ValueError(f"{spec.layers} layers do not split evenly over {c.pp} x {c.interleave}: give layers_per_stage")
    chunk = spec.layers // (c.pp * c.interleave)
    return [[layer for j in range(c.interleave) for layer in range((j * c.pp + d) * chunk, (j * c.pp + d + 1) * chunk)]
            for d in range(c.pp)]


def evaluate(setup: TrainingSetup, c: ParallelConfig) -> Evaluation:
    spec, w = setup.spec, setup.workload
    sizes = sizes_of(c)
    m = w.global_batch // (c.dp * c.micro_batch)
    devices = [device_cost(setup, c, sizes, d, layers, m) for d, layers in enumerate(layers_of_devices(spec, c))]
    per_mb = [d.per_microbatch_s for d in devices]
    slowest = max(range(len(devices)), key=lambda i: per_mb[i])
    bubble = (sum(per_mb) - per_mb[slowest]) / c.interleave
    tail = max(devices, key=lambda d: d.dp_exposed_s + d.optimizer_s)
    breakdown = {k: v * m for k, v in devices[slowest].parts.items()}
    breakdown["pipeline_bubble"] = bubble
    breakdown["dp_comm"] = tail.dp_exposed_s
    breakdown["optimizer"] = tail.optimizer_s
    step = sum(breakdown.values())
    peak = sum(g.peak_tflops(w.dtype) for g in setup.gpu_of_rank) * 1e12
    capacity = tuple(setup.stage_gpu(sizes, d.index).memory_GB for d in devices)
    flops = spec.model_flops(w.tokens, w.seq_len, causal=w.attention == "flash")
    return Evaluation(c, step, breakdown, tuple(devices), m, flops, peak, capacity)


def stage_layer_cost(setup: TrainingSetup, c: ParallelConfig, gpu: GpuSpec, sizes: dict, stage: int,
                     moe: bool) -> LayerCost:
    """One layer of pipeline stage `stage` on `gpu`, with the stage's groups (cached by shape)."""
    ranks = {k: group_ranks(sizes, k, stage) for k in ("tp", "cp", "ep")}
    pricer = setup.pricer
    key = (gpu.name, c.tp, c.cp, c.ep, c.micro_batch, c.recompute, c.sequence_parallel, moe,
           *(pricer.shape_key(r) for r in ranks.values()))
    cost = setup.layer_cache.get(key)
    if cost is None:
        ctx = LayerContext(setup.spec, setup.workload, c, gpu, pricer, ranks["tp"], ranks["cp"], ranks["ep"])
        cost = setup.layer_cache[key] = layer_cost(ctx, moe)
    return cost


def device_cost(setup: TrainingSetup, c: ParallelConfig, sizes: dict, d: int, layers: list[int], m: int) -> DeviceCost:
    spec, w = setup.spec, setup.workload
    gpu = setup.stage_gpu(sizes, d)
    t = c.tp
    sp = c.sequence_parallel and t > 1
    tokens = c.micro_batch * w.seq_len // c.cp
    first, last = d == 0, d == c.pp - 1
    moe_layers = _moe_count(spec, layers)
    dense_layers = len(layers) - moe_layers
    parts = dict.fromkeys(PARTS, 0.0)
    forward = backward = 0.0
    for count, moe in ((dense_layers, False), (moe_layers, True)):
        if not count:
            continue
        cost = stage_layer_cost(setup, c, gpu, sizes, d, moe)
        for k, v in cost.forward.items():
            parts[k] += count * v
        for k, v in cost.backward.items():
            parts[k] += count * v
        forward += count * cost.forward_s
        backward += count * cost.backward_s

    # embedding (a gather and its scatter-add) and the output layer with cross-entropy
    ends = 0.0
    vocab = spec.vocab // t
    if first:
        ends += memory_seconds(gpu, 2 * tokens * spec.hidden * ACT / (t if sp else 1)) * 3
    if last:
        ends += gemm_seconds(gpu, w.dtype, tokens, vocab, spec.hidden)
        ends += gemm_seconds(gpu, w.dtype, tokens, spec.hidden, vocab) + gemm_seconds(gpu, w.dtype, spec.hidden,
                                                                                     vocab, tokens)
        ends += memory_seconds(gpu, tokens * vocab * (10 + 6))
    parts["embedding_logits"] = ends

    p2p = 0.0
    if c.pp > 1:
        pair = group_ranks(sizes, "pp", min(d, c.pp - 2))
        p2p = 2 * c.interleave * setup.pricer.seconds("broadcast", pair, tokens * spec.hidden * ACT / t)
    parts["p2p"] = p2p

    dense_params, expert_params = _params(spec, c, layers, first, last)
    gb = DTYPE_BYTES[w.grad_reduce_dtype]
    if not w.gradient_accumulation_fusion:  # buffer += the 16-bit weight gradient: read 2 + gb, write gb
        parts["grad_accumulation"] = memory_seconds(gpu, (dense_params + expert_params) * (ACT + 2 * gb))
    dp_ranks, edp_ranks = group_ranks(sizes, "dp", d), group_ranks(sizes, "edp", d)
    price = setup.pricer.seconds
    if c.distributed_optimizer:
        reduce = price("reduce-scatter", dp_ranks, dense_params * gb) + price("reduce-scatter", edp_ranks,
                                                                             expert_params * gb)
        gather = price("allgather", dp_ranks, dense_params * ACT) + price("allgather", edp_ranks, expert_params * ACT)
    else:
        reduce = price("allreduce", dp_ranks, dense_params * gb) + price("allreduce", edp_ranks, expert_params * gb)
        gather = 0.0
    if w.overlap_grad_reduce:
        dp_exposed = max(0.0, reduce - backward) + max(0.0, gather - forward)
    else:
        dp_exposed = reduce + gather
    updated = _updated_params(c, dense_params, expert_params)
    optimizer_s = memory_seconds(gpu, updated * OPTIMIZER_PASS_BYTES + (dense_params + expert_params) * gb)

    memory = device_memory(setup, c, d, layers, m)
    return DeviceCost(d, gpu.name, len(layers), forward + ends / 2, backward + ends / 2, parts, dp_exposed,
                      optimizer_s, memory)


def _updated_params(c: ParallelConfig, dense: float, expert: float) -> float:
    """Parameters whose optimizer state a GPU keeps and updates: its shard with the
    distributed optimizer (over the data-parallel ranks, cp included; experts over theirs)."""
    if not c.distributed_optimizer:
        return dense + expert
    return dense / (c.dp * c.cp) + expert / (c.dp // c.ep * c.cp)


def device_memory(setup: TrainingSetup, c: ParallelConfig, d: int, layers: list[int], m: int) -> dict[str, float]:
    """GB per GPU of pipeline device d, by part. No collective is priced: a search checks
    this before it times a configuration."""
    spec, w = setup.spec, setup.workload
    first, last = d == 0, d == c.pp - 1
    dense, expert = _params(spec, c, layers, first, last)
    gb = DTYPE_BYTES[w.grad_reduce_dtype]
    kept = working = 0.0
    moe_layers = _moe_count(spec, layers)
    for count, moe in ((len(layers) - moe_layers, False), (moe_layers, True)):
        if count:
            k, full = _footprint(spec, w, c, moe)
            kept += count * k
            working = max(working, full if c.recompute == "full" else 0.0)
    chunk_layers = len(layers) / c.interleave
    activations = _inflight(c, d, m) * (kept / max(1, len(layers))) * chunk_layers + working
    if last:
        tokens = c.micro_batch * w.seq_len // c.cp
        activations += tokens * (spec.vocab // c.tp) * (ACT + 4)  # the logits and their fp32 softmax
    return {**_model_state_GB(c, dense, expert, gb), "activations": activations / 1e9, "reserve": RESERVE_GB}


def _model_state_GB(c: ParallelConfig, dense: float, expert: float, gb: int) -> dict[str, float]:
    """16-bit weights, gradients in the reduce dtype, fp32 optimizer state of the GPU's shard."""
    params = dense + expert
    return {"weights": params * ACT / 1e9, "gradients": params * gb / 1e9,
            "optimizer": OPTIMIZER_STATE_BYTES * _updated_params(c, dense, expert) / 1e9}


@lru_cache(maxsize=65536)
def _footprint(spec: TransformerSpec, w: TrainWorkload, c: ParallelConfig, moe: bool) -> tuple[float, float]:
    return activation_footprint(spec, w, replace(c, layers_per_stage=None, pp=1, dp=1, interleave=1), moe)


def memory_excess_GB(setup: TrainingSetup, c: ParallelConfig) -> float:
    """GB the fullest device needs beyond its GPU's memory (<= 0 when every device fits)."""
    sizes = sizes_of(c)
    m = setup.workload.global_batch // (c.dp * c.micro_batch)
    return max(sum(device_memory(setup, c, d, layers, m).values()) - setup.stage_gpu(sizes, d).memory_GB
               for d, layers in enumerate(layers_of_devices(setup.spec, c)))


def fits_statically(setup: TrainingSetup, c: ParallelConfig) -> bool:
    """Whether every device holds its weights, gradients, optimizer states and the reserve:
    a configuration failing this cannot fit with any activations."""
    spec, w = setup.spec, setup.workload
    sizes = sizes_of(c)
    gb = DTYPE_BYTES[w.grad_reduce_dtype]
    for d, layers in enumerate(layers_of_devices(spec, c)):
        dense, expert = _params(spec, c, layers, d == 0, d == c.pp - 1)
        need = sum(_model_state_GB(c, dense, expert, gb).values())
        if need + RESERVE_GB > setup.stage_gpu(sizes, d).memory_GB:
            return False
    return True


def _moe_count(spec: TransformerSpec, layers: list[int]) -> int:
    """MoE layers among `layers` (ascending): those past the dense ones."""
    return len(layers) - bisect_left(layers, spec.dense_layers) if spec.is_moe else 0


def _inflight(c: ParallelConfig, d: int, m: int) -> int:
    """Micro-batch chunks whose activations device d holds at its peak (Megatron's warm-up
    counts: 1F1B p - d; interleaved 2(p - d - 1) + (v - 1)p + 1, at most all of them)."""
    if c.interleave == 1:
        return min(m, c.pp - d)
    return min(m * c.interleave, 2 * (c.pp - d - 1) + (c.interleave - 1) * c.pp + 1)


def _params(spec: TransformerSpec, c: ParallelConfig, layers: list[int], first: bool, last: bool) -> tuple[float, float]:
    """Parameters on one GPU of the device: (dense, expert)."""
    dense_layer, moe_dense, moe_expert = _layer_params(spec, c.tp, c.ep)
    moe = _moe_count(spec, layers)
    dense = (len(layers) - moe) * dense_layer + moe * moe_dense
    expert = moe * moe_expert
    if first:
        dense += spec.embedding_params() / c.tp
    if last and (not first or not spec.tied_embeddings):
        dense += spec.embedding_params() / c.tp + spec.hidden
    return dense, expert


@lru_cache(maxsize=4096)
def _layer_params(spec: TransformerSpec, t: int, ep: int) -> tuple[float, float, float]:
    """Per GPU: a dense layer's parameters, a MoE layer's non-expert and expert ones."""
    h = spec.hidden
    replicated_attention = (h * spec.q_lora_rank + h * (spec.kv_lora_rank + spec.qk_rope_head_dim)) if spec.mla else 0
    attention = replicated_attention + (spec.attention_params() - replicated_attention) / t
    dense = attention + spec.mlp_params(spec.ffn_hidden) / t + 2 * h
    moe_dense = attention + h * spec.experts + spec.shared_experts * spec.expert_params() / t + 2 * h
    moe_expert = spec.experts / ep * spec.expert_params() / t
    return dense, moe_dense, moe_expert
