"""One transformer layer on one GPU for one micro-batch: its kernels' times, its
communication, and the activations it keeps for the backward pass.

Shapes per GPU: T = micro_batch x seq_len / cp tokens; tensor parallelism t splits heads,
the MLP's hidden dimension and the experts' (Megatron's column/row-parallel pairs; MLA's
down-projections and the router stay whole). The backward pass of a weight matmul is two
matmuls (input gradient, weight gradient); fused attention's backward is 2.5x its forward
(five matmuls to two, FlashAttention-2, Dao 2023); a memory-bound op's backward moves twice
its forward bytes. Activation memory generalises Korthikanti et al. 2022, Table 2 (the
per-tensor accounting behind 34sbh + 5as^2b) to GQA, SwiGLU, MoE and MLA; with standard
MHA + GELU + dropout it is exactly their formulas (tests/test_parallelism.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.core.gpus import GpuSpec
from planner.core.training import ParallelConfig, TrainWorkload
from planner.core.transformer import TransformerSpec
from planner.training.comm import CommPricer
from planner.training.efficiency import gemm_seconds, matmul_rate, memory_seconds, tile_utilisation

ACT = 2  # bytes of a 16-bit activation
OVERLAP_COMM_SMS = 16  # Transformer Engine's userbuffers default num_sm (pytorch/module/base.py, initialize_ub)


@dataclass(frozen=True)
class LayerCost:
    """Seconds of one layer's forward and backward (recomputation included) for one
    micro-batch, by part, and the bytes of activations it keeps until its backward."""

    forward: dict[str, float]
    backward: dict[str, float]
    activation_bytes: float  # kept per micro-batch in flight
    working_bytes: float  # the whole layer's activations, live while it is recomputed (full recompute)

    @property
    def forward_s(self) -> float:
        return sum(self.forward.values())

    @property
    def backward_s(self) -> float:
        return sum(self.backward.values())


@dataclass(frozen=True)
class LayerContext:
    spec: TransformerSpec
    workload: TrainWorkload
    config: ParallelConfig
    gpu: GpuSpec
    pricer: CommPricer
    tp_ranks: tuple[int, ...]
    cp_ranks: tuple[int, ...]
    ep_ranks: tuple[int, ...]


def layer_linears(spec: TransformerSpec, t: int, moe: bool) -> list[tuple[int, int]]:
    """(in, out) of every weight matmul every token of a layer goes through, on one GPU (the
    routed experts, which see top_k x the tokens, are costed apart)."""
    h, a = spec.hidden, spec.heads
    out: list[tuple[int, int]] = []
    if spec.mla:
        if spec.q_lora_rank:
            out += [(h, spec.q_lora_rank), (spec.q_lora_rank, a * spec.qk_dim // t)]
        else:
            out.append((h, a * spec.qk_dim // t))
        out += [(h, spec.kv_lora_rank + spec.qk_rope_head_dim),
                (spec.kv_lora_rank, a * (spec.head_dim + spec.v_head_dim) // t), (a * spec.v_head_dim // t, h)]
    else:
        out += [(h, (a + 2 * spec.kv_heads) * spec.head_dim // t), (a * spec.head_dim // t, h)]
    up = spec.mlp_matrices - 1
    if not moe:
        out += [(h, up * spec.ffn_hidden // t), (spec.ffn_hidden // t, h)]
        return out
    out.append((h, spec.experts))
    if spec.shared_experts:
        f = spec.shared_experts * spec.expert_ffn_hidden
        out += [(h, up * f // t), (f // t, h)]
    return out


def layer_cost(ctx: LayerContext, moe: bool) -> LayerCost:
    spec, w, c, gpu = ctx.spec, ctx.workload, ctx.config, ctx.gpu
    t, cp = c.tp, c.cp
    h, a = spec.hidden, spec.heads
    tokens = c.micro_batch * w.seq_len // cp
    sp = c.sequence_parallel and t > 1
    rep = tokens * h / (t if sp else 1)  # elements of a tensor outside the TP regions
    dt = w.dtype
    attn_dt = "bf16" if dt == "fp8" else dt  # FP8 training keeps attention in 16 bits
    fwd: dict[str, float] = {}
    bwd: dict[str, float] = {}

    # weight matmuls
    gemm_f = gemm_b = 0.0
    for k, n in layer_linears(spec, t, moe):
        gemm_f += gemm_seconds(gpu, dt, tokens, n, k)
        gemm_b += gemm_seconds(gpu, dt, tokens, k, n) + gemm_seconds(gpu, dt, k, n, tokens)
    if moe:
        local = max(1, spec.experts // c.ep)
        per_expert = -(-tokens * spec.top_k * c.ep // spec.experts)  # balanced, rounded up
        up = spec.mlp_matrices - 1
        fe = spec.expert_ffn_hidden // t
        for k, n in ((h, up * fe), (fe, h)):
            gemm_f += gemm_seconds(gpu, dt, per_expert, n, k, batch=local)
            gemm_b += gemm_seconds(gpu, dt, per_expert, k, n, batch=local) + gemm_seconds(gpu, dt, k, n, per_expert,
                                                                                          batch=local)
    fwd["gemm"], bwd["gemm"] = gemm_f, gemm_b

    # attention core
    heads = a // t
    s_q, s_k = w.seq_len // cp, w.seq_len
    batch = c.micro_batch * heads
    if w.attention == "flash":
        flops = 2.0 * s_q * s_k * (spec.qk_dim + spec.value_dim) * batch / 2  # causal: half the square
        rate = matmul_rate(gpu, attn_dt) * tile_utilisation(gpu, s_q, s_k, batch)
        attn_f = flops / rate
        attn_b = 2.5 * attn_f
        attn_mem_f = attn_mem_b = 0.0
    else:
        square = float(batch) * s_q * s_k
        attn_f = gemm_seconds(gpu, attn_dt, s_q, s_k, spec.qk_dim, batch) + gemm_seconds(gpu, attn_dt, s_q,
                                                                                      spec.value_dim, s_k, batch)
        attn_b = (gemm_seconds(gpu, attn_dt, s_q, spec.qk_dim, s_k, batch)
                  + gemm_seconds(gpu, attn_dt, spec.qk_dim, s_k, s_q, batch)
                  + gemm_seconds(gpu, attn_dt, s_q, s_k, spec.value_dim, batch)
                  + gemm_seconds(gpu, attn_dt, s_k, spec.value_dim, s_q, batch))
        # fused scale-mask-softmax (read, write) and dropout (read, write, mask); backward twice the bytes
        attn_mem_f = memory_seconds(gpu, square * (4 + (5 if spec.has_dropout else 0)))
        attn_mem_b = 2 * attn_mem_f
    fwd["attention"], bwd["attention"] = attn_f + attn_mem_f, attn_b + attn_mem_b

    # memory-bound elementwise ops
    drop = 7 if spec.has_dropout else 6  # bias-dropout-add (read 2, write, mask) or a residual add
    ew = rep * (2 * 4 + 2 * drop)  # two norms, two residual joins
    if moe:
        routed = tokens * spec.top_k
        ew += routed * spec.expert_ffn_hidden / t * (6 if spec.mlp == "swiglu" else 4)
        ew += 2 * 2 * routed * h * ACT  # permute and unpermute copies
        if spec.shared_experts:
            ew += tokens * spec.shared_experts * spec.expert_ffn_hidden / t * (6 if spec.mlp == "swiglu" else 4)
    else:
        ew += tokens * spec.ffn_hidden / t * (6 if spec.mlp == "swiglu" else 4)
    fwd["memory_bound"] = memory_seconds(gpu, ew)
    bwd["memory_bound"] = 2 * fwd["memory_bound"]

    # tensor-parallel collectives: two per layer each way (attention and MLP outputs)
    tp_f = 0.0
    if t > 1:
        size = tokens * h * ACT
        if sp:
            tp_f = 2 * (ctx.pricer.seconds("allgather", ctx.tp_ranks, size)
                        + ctx.pricer.seconds("reduce-scatter", ctx.tp_ranks, size))
        else:
            tp_f = 2 * ctx.pricer.seconds("allreduce", ctx.tp_ranks, size)
    fwd["tp_comm"] = _overlapped(tp_f, gemm_f, gpu) if w.tp_comm_overlap else tp_f
    bwd["tp_comm"] = _overlapped(tp_f, gemm_b, gpu) if w.tp_comm_overlap else tp_f

    # expert-parallel all-to-all: dispatch and combine, each way
    ep_f = 0.0
    if moe and c.ep > 1:
        ep_f = 2 * ctx.pricer.seconds("alltoall", ctx.ep_ranks, tokens * spec.top_k * h * ACT / t)
    fwd["ep_comm"], bwd["ep_comm"] = ep_f, ep_f

    # context parallelism: K and V go round the ring, overlapped with the attention it feeds
    cp_f = cp_b = 0.0
    if cp > 1:
        kv_heads = heads if spec.mla else max(1, spec.kv_heads // t)
        kv = tokens * kv_heads * (spec.qk_dim + spec.value_dim) * ACT
        ring = ctx.pricer.seconds("allgather", ctx.cp_ranks, kv * cp)
        cp_f = max(0.0, ring - attn_f)
        cp_b = max(0.0, 2 * ring - attn_b)
    fwd["cp_comm"], bwd["cp_comm"] = cp_f, cp_b

    # recomputation during the backward pass
    if c.recompute == "full":
        bwd["recompute"] = sum(fwd.values())
    elif c.recompute == "selective":
        bwd["recompute"] = fwd["attention"] + fwd["cp_comm"]
    else:
        bwd["recompute"] = 0.0

    kept, full = activation_footprint(spec, w, c, moe)
    return LayerCost(fwd, bwd, kept, full)


def _overlapped(comm: float, gemm: float, gpu: GpuSpec) -> float:
    """What a collective overlapped with GEMMs adds to them: the GEMMs run on the SMs the
    communication kernels leave (Transformer Engine's userbuffers take OVERLAP_COMM_SMS), so
    `gemm` seconds of work and `comm` seconds of communication take max(comm, gemm + comm x
    OVERLAP_COMM_SMS / SMs)."""
    return max(comm - gemm, comm * OVERLAP_COMM_SMS / gpu.sms)


def activation_footprint(spec: TransformerSpec, w: TrainWorkload, c: ParallelConfig, moe: bool) -> tuple[float, float]:
    """(bytes a layer keeps per micro-batch in flight, bytes of all its activations): under
    full recompute a layer keeps its input only, and the whole is live while it recomputes."""
    tokens = c.micro_batch * w.seq_len // c.cp
    full = _activation_bytes(spec, w, c, tokens, moe, keep_square=True)
    if c.recompute == "full":
        return tokens * spec.hidden * ACT / (c.tp if c.sequence_parallel and c.tp > 1 else 1), full
    return _activation_bytes(spec, w, c, tokens, moe, keep_square=c.recompute == "none"), full


def _activation_bytes(spec: TransformerSpec, w: TrainWorkload, c: ParallelConfig, tokens: int, moe: bool,
                      keep_square: bool) -> float:
    """Bytes a layer keeps for its backward (Korthikanti et al. 2022's accounting)."""
    t = c.tp
    sp = c.sequence_parallel and t > 1
    h, a = spec.hidden, spec.heads
    rep = tokens * h / (t if sp else 1)
    mask = rep if spec.has_dropout else 0.0  # a dropout mask, one byte per element
    kv_heads = a if spec.mla else spec.kv_heads
    attn = (ACT * rep  # the norm's output, input of the QKV projection
            + ACT * tokens * (a * spec.qk_dim + kv_heads * spec.qk_dim + kv_heads * spec.value_dim) / t  # Q, K, V
            + ACT * tokens * a * spec.value_dim / t  # the context, input of the output projection
            + mask)
    if spec.mla:
        attn += ACT * tokens * (spec.q_lora_rank + spec.kv_lora_rank + spec.qk_rope_head_dim)
    heads = a // t
    if w.attention == "unfused" and keep_square:
        attn += 5.0 * c.micro_batch * heads * (w.seq_len // c.cp) * w.seq_len  # softmax, dropout mask, dropout out
    elif w.attention == "flash":
        attn += 4.0 * tokens * heads  # the softmax statistics (fp32)
    up = spec.mlp_matrices - 1

    def mlp(tok: float, ffn: int) -> float:
        return ACT * tok * (up * ffn + ffn) / t  # the up projection's output and the activation's

    if moe:
        routed = tokens * spec.top_k
        ffn_part = ACT * routed * h + mlp(routed, spec.expert_ffn_hidden) + 4.0 * tokens * spec.experts
        if spec.shared_experts:
            ffn_part += mlp(tokens, spec.shared_experts * spec.expert_ffn_hidden)
    else:
        ffn_part = mlp(tokens, spec.ffn_hidden)
    ffn_block = ACT * rep + ffn_part + mask
    norms = 2 * ACT * rep
    return attn + ffn_block + norms

