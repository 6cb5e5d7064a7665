"""One serving replica's iteration time, memory and KV-cache capacity, from the same kernel
model as training (planner/training/efficiency.py) and the collective planner's prices.

An engine iteration (vLLM / SGLang continuous batching) runs every running request's next
token and, under chunked prefill, pieces of waiting prompts, as one forward pass over
`tokens` = decode requests + prefill tokens. Per decoder layer on one GPU:
- weight matmuls (the layer's linear maps sharded by TP, planner/training/layer.py's
  `layer_linears`) at the GEMM model's time: compute-bound for prefill, weight reads at
  the achieved HBM bandwidth for small decode batches;
- MoE layers: the routed experts the batch touches, E (1 - (1 - k/E)^tokens) of them, are
  read once each; their FLOPs are top_k x tokens x one expert;
- attention core: a prefill chunk of c tokens after p cached ones does c (p + c/2) causal
  query-key pairs at the matmul rate (FlashAttention); a decode request reads its whole
  KV cache at the achieved HBM bandwidth (MLA: the compressed latent, with the absorbed
  score FLOPs when they exceed the read);
- norms, residual adds and the activation at the copy bandwidth;
- TP: two all-reduces of the tokens' hidden states (one with EP, whose dispatch and
  combine are all-to-alls over the replica), priced on the replica's own GPUs.
Plus, once per iteration, the output layer for the sequences that sample a token. Pipeline
parallelism splits the layers; an iteration then takes every stage in turn (plus the
activation hand-offs), and the replica keeps `pp` batches in flight (vLLM's virtual engines).

Memory (vLLM's accounting): memory_utilization x the GPU's memory holds the weights, the
forward pass's peak activations at the iteration token budget and RESERVE_GB; the rest is
KV cache, in tokens of every layer on the stage.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import cached_property

from planner.core.gpus import GpuSpec
from planner.core.serving import ReplicaConfig, ServeWorkload
from planner.core.training import DTYPE_BYTES
from planner.core.transformer import TransformerSpec
from planner.serving.profile import MeasuredTimes
from planner.training.comm import CommPricer
from planner.training.cost import RESERVE_GB
from planner.training.efficiency import gemm_seconds, matmul_rate, memory_seconds, tile_utilisation
from planner.training.layer import layer_linears

ACT = 2  # bytes of a 16-bit activation
# A kernel's fixed time, however little it moves: the median of Vidur's one-token RMSNorm kernel
# (microsoft/vidur data/profiling/compute/{a100,h100}/meta-llama/Llama-2-7b-hf/mlp.csv: 5 us A100, 4 us H100)
KERNEL_FIXED_S = 4.5e-6
# kernels of a layer besides its weight matmuls: two fused add+norms, rotary, attention, the KV-cache
# write, the activation (vLLM's Llama layer); a MoE layer adds top-k, permute, unpermute and the
# second grouped GEMM
OTHER_KERNELS = 6
MOE_KERNELS = 4
TABLE_TOKENS = tuple(2 ** i for i in range(17))  # 1 .. 65536 tokens per iteration


@dataclass(frozen=True)
class Chunk:
    """A prefill piece: `tokens` new tokens after `cached` tokens already in the KV cache."""

    tokens: int
    cached: int


@dataclass
class ReplicaCost:
    spec: TransformerSpec
    workload: ServeWorkload
    config: ReplicaConfig
    gpu: GpuSpec
    pricer: CommPricer
    tp_ranks: tuple[int, ...]
    pp_ranks: tuple[int, ...] = ()  # the first GPU of each stage: activation hand-offs between stages
    measured: MeasuredTimes | None = None  # the workload's profile rows of this shape, which replace the model
    _linear: dict[tuple[int, int], float] = field(default_factory=dict)
    _layer: dict[int, float] = field(default_factory=dict)

    # ------------------------------------------------------------ memory
    @property
    def weight_bytes(self) -> float:
        return DTYPE_BYTES[self.workload.dtype] * self.spec.params

    @property
    def weight_bytes_per_gpu(self) -> float:
        return self.weight_bytes / self.config.gpus

    @property
    def layers_per_stage(self) -> float:
        return self.spec.layers / self.config.pp

    @cached_property
    def kv_bytes_per_token_layer(self) -> float:
        """KV-cache bytes one token costs in one layer on one GPU (MLA's latent is kept whole
        on every TP rank; K/V heads fewer than the TP size are replicated, as vLLM does)."""
        b = DTYPE_BYTES[self.workload.kv_dtype]
        s = self.spec
        if s.mla:
            return (s.kv_lora_rank + s.qk_rope_head_dim) * b
        return 2 * math.ceil(s.kv_heads / self.config.tp) * s.head_dim * b

    @cached_property
    def kv_bytes_per_token(self) -> float:
        """On one GPU: every layer of its stage."""
        return self.kv_bytes_per_token_layer * self.layers_per_stage

    @cached_property
    def activation_bytes(self) -> float:
        """The forward pass's peak working set at the iteration budget: the hidden states,
        the QKV and MLP intermediates of one layer, the sampled rows' logits in fp32."""
        s, t = self.spec, self.config.tp
        tokens = self.token_budget
        ffn = max(s.ffn_hidden, (s.top_k + s.shared_experts) * s.expert_ffn_hidden if s.is_moe else 0)
        per_token = ACT * (4 * s.hidden + (s.heads + 2 * s.kv_heads) * s.head_dim / t + 2 * ffn / t)
        return tokens * per_token + 4 * self.workload.max_batch * s.vocab / t

    @property
    def token_budget(self) -> int:
        """Tokens one iteration may carry: the chunk size, or a whole prompt without chunking."""
        w = self.workload
        return w.chunk_tokens or int(max(w.prompt_tokens, 1)) + w.max_batch

    @cached_property
    def memory_for_kv_bytes(self) -> float:
        usable = self.workload.memory_utilization * self.gpu.memory_GB * 1e9
        return usable - self.weight_bytes_per_gpu - self.activation_bytes - RESERVE_GB * 1e9

    @cached_property
    def kv_capacity_tokens(self) -> int:
        """Tokens the replica's KV cache holds (each of its pp stages holds its layers of them)."""
        return max(0, int(self.memory_for_kv_bytes // self.kv_bytes_per_token))

    def memory_breakdown_GB(self) -> dict:
        return {"weights": self.weight_bytes_per_gpu / 1e9, "activations": self.activation_bytes / 1e9,
                "reserve": RESERVE_GB, "kv_cache": max(0.0, self.memory_for_kv_bytes) / 1e9,
                "total": self.workload.memory_utilization * self.gpu.memory_GB}

    # ------------------------------------------------------------ time
    def iteration_s(self, chunks: tuple[Chunk, ...] = (), decode: int = 0, decode_context: float = 0.0) -> float:
        """One iteration: `chunks` of prefill, `decode` running requests whose contexts add up
        to `decode_context` tokens. The latency of one batch through every stage."""
        tokens = decode + sum(c.tokens for c in chunks)
        if tokens == 0:
            return 0.0
        m = self.measured
        if m is not None and (m.has_prefill or m.has_decode):
            prefill = 0.0
            if chunks:
                prefill = (sum(m.chunk_s(c.tokens, c.cached) for c in chunks) if m.has_prefill
                           else self._model_iteration_s(chunks, 0, 0.0))
            a, b = self.decode_terms(decode) if decode else (0.0, 0.0)
            return prefill + a + b * decode_context
        return self._model_iteration_s(chunks, decode, decode_context)

    def _model_iteration_s(self, chunks: tuple[Chunk, ...], decode: int, decode_context: float) -> float:
        tokens = decode + sum(c.tokens for c in chunks)
        if tokens == 0:
            return 0.0
        base = self._fixed_s(tokens, decode + len(chunks))
        if chunks:
            base += self.spec.layers * sum(self._chunk_attention_s(c) for c in chunks)
        return base + self.per_context_s * decode_context

    def decode_terms(self, decode: int) -> tuple[float, float]:
        """A decode-only iteration of `decode` requests takes a + b x (their contexts' sum)."""
        if self.measured is not None and self.measured.has_decode:
            return self.measured.decode_terms(decode)
        return self._fixed_s(decode, decode), self.per_context_s

    def _fixed_s(self, tokens: int, sampled: int) -> float:
        """What an iteration of `tokens` costs apart from attention: every layer's weight
        matmuls, memory-bound ops and collectives, the stages' hand-offs and the output
        layer for the `sampled` sequences."""
        key = (tokens, sampled)
        value = self._linear.get(key)
        if value is None:
            value = self.spec.layers * self._linear_layer_s(tokens) + self._logits_s(sampled)
            if self.config.pp > 1 and len(self.pp_ranks) > 1:
                hand = self.pricer.seconds("broadcast", self.pp_ranks[:2], tokens * self.spec.hidden * ACT)
                value += (self.config.pp - 1) * hand
            self._linear[key] = value
        return value

    @cached_property
    def per_context_s(self) -> float:
        """Decode attention per token of context over every layer: the KV read at the achieved
        HBM bandwidth (MLA: or the absorbed score and value FLOPs, when they take longer)."""
        s, gpu = self.spec, self.gpu
        per_token = memory_seconds(gpu, self.kv_bytes_per_token_layer)
        if s.mla:
            heads = max(1, s.heads // self.config.tp)
            flops = 2.0 * heads * (2 * s.kv_lora_rank + s.qk_rope_head_dim)
            per_token = max(per_token, flops / matmul_rate(gpu, self._attention_dtype))
        return per_token * s.layers

    @property
    def _attention_dtype(self) -> str:
        return "bf16" if self.workload.dtype == "fp8" else self.workload.dtype

    def _chunk_attention_s(self, ch: Chunk) -> float:
        """One layer's causal attention of a prefill chunk, and its KV written and read back."""
        s, gpu = self.spec, self.gpu
        heads = max(1, s.heads // self.config.tp)
        keys = ch.cached + ch.tokens
        flops = 2.0 * heads * (s.qk_dim + s.value_dim) * ch.tokens * (ch.cached + ch.tokens / 2)
        rate = matmul_rate(gpu, self._attention_dtype) * tile_utilisation(gpu, ch.tokens, keys, heads)
        return flops / rate + memory_seconds(gpu, self.kv_bytes_per_token_layer * keys)

    def prefill_s(self, prompt: int, cached: int = 0) -> float:
        """A lone request's prompt, in chunks of the token budget, through every stage; the
        first `cached` tokens are in the prefix cache already."""
        budget = self.workload.chunk_tokens or prompt
        done, total = cached, 0.0
        while done < prompt:
            n = min(budget, prompt - done)
            total += self.iteration_s((Chunk(n, done),))
            done += n
        return total

    def _linear_layer_s(self, tokens: int) -> float:
        """Everything per layer that depends on the token count only, interpolated between
        powers of two (computed once each)."""
        i = bisect.bisect_left(TABLE_TOKENS, tokens)
        if i < len(TABLE_TOKENS) and TABLE_TOKENS[i] == tokens:
            return self._linear_at(tokens)
        if i >= len(TABLE_TOKENS):
            return self._linear_at(tokens)
        lo, hi = TABLE_TOKENS[i - 1], TABLE_TOKENS[i]
        a, b = self._linear_at(lo), self._linear_at(hi)
        return a + (b - a) * (tokens - lo) / (hi - lo)

    def _linear_at(self, tokens: int) -> float:
        value = self._layer.get(tokens)
        if value is None:
            moe_share = self.spec.moe_layers / self.spec.layers
            value = (1 - moe_share) * self._layer_linear_s(tokens, False)
            if moe_share:
                value += moe_share * self._layer_linear_s(tokens, True)
            self._layer[tokens] = value
        return value

    def weight_matmuls_s(self, tokens: int, moe: bool = False) -> list[float]:
        """Each weight matmul of a layer (planner/training/layer.py's `layer_linears` order:
        QKV, output projection, MLP up, MLP down for a dense GQA layer) on `tokens` rows,
        its kernel's fixed time included."""
        dt = self.workload.dtype
        return [gemm_seconds(self.gpu, dt, tokens, n, k, element_bytes=DTYPE_BYTES[dt]) + KERNEL_FIXED_S
                for k, n in layer_linears(self.spec, self.config.tp, moe)]

    def _layer_linear_s(self, tokens: int, moe: bool) -> float:
        s, c, gpu, dt = self.spec, self.config, self.gpu, self.workload.dtype
        wb = DTYPE_BYTES[dt]
        t = c.tp
        total = sum(self.weight_matmuls_s(tokens, moe))
        ew = tokens * s.hidden * ACT * (2 * 2 + 2 * 3)  # two norms (read, write), two residual adds
        if moe:
            e = s.experts
            touched = e * (1 - (1 - s.top_k / e) ** tokens)
            expert_bytes = touched * s.expert_params() * wb / t
            flops = 2.0 * tokens * s.top_k * s.expert_params() / t
            per_expert = max(1, math.ceil(tokens * s.top_k / e))
            rate = matmul_rate(gpu, dt) * tile_utilisation(gpu, per_expert, s.expert_ffn_hidden // t, e)
            total += max(flops / rate, memory_seconds(gpu, expert_bytes))
            routed = tokens * s.top_k
            ew += routed * s.expert_ffn_hidden / t * (6 if s.mlp == "swiglu" else 4) + 2 * 2 * routed * s.hidden * ACT
        else:
            ew += tokens * s.ffn_hidden / t * (6 if s.mlp == "swiglu" else 4)
        total += memory_seconds(gpu, ew)
        total += (OTHER_KERNELS + (MOE_KERNELS if moe else 0)) * KERNEL_FIXED_S
        if t > 1:
            size = tokens * s.hidden * ACT
            if moe and c.ep:
                total += self.pricer.seconds("allreduce", self.tp_ranks, size)
                total += 2 * self.pricer.seconds("alltoall", self.tp_ranks, tokens * s.top_k * s.hidden * ACT / t)
            else:
                total += 2 * self.pricer.seconds("allreduce", self.tp_ranks, size)
        return total

    def _logits_s(self, sampled: int) -> float:
        s = self.spec
        return gemm_seconds(self.gpu, self.workload.dtype, sampled, s.vocab // self.config.tp, s.hidden,
                            element_bytes=DTYPE_BYTES[self.workload.dtype])
