"""Transformer models as data: the MODEL file (contract) and the presets, with their
parameter counts and per-token FLOPs.

Attention is multi-head with grouped-query K/V (`kv_heads`), or DeepSeek's multi-head
latent attention when `kv_lora_rank` > 0. The MLP is GELU (two matrices) or SwiGLU
(three); a MoE layer has `experts` routed experts of `expert_ffn_hidden` (same MLP kind),
`top_k` of them per token, plus `shared_experts` always active; the first `dense_layers`
layers are dense. Each preset names its source (docs/parallelism.md, "Model presets").
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from planner.core.errors import InputError
from planner.core.loader import expect_mapping, expect_type, read_document

MLPS = ("gelu", "swiglu")


@dataclass(frozen=True)
class TransformerSpec:
    name: str
    layers: int
    hidden: int
    ffn_hidden: int
    heads: int
    kv_heads: int = 0  # 0: = heads
    head_dim: int = 0  # 0: hidden / heads
    vocab: int = 51200
    mlp: str = "gelu"
    tied_embeddings: bool = False
    experts: int = 0
    top_k: int = 0
    expert_ffn_hidden: int = 0
    shared_experts: int = 0
    dense_layers: int = 0  # with experts: the first layers are dense (ffn_hidden)
    q_lora_rank: int = 0  # MLA (kv_lora_rank > 0): query down-projection rank, 0 for none
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    dropout: bool | None = None  # None: GPT-style models (gelu) train with dropout, Llama-style ones without
    source: str = ""

    def __post_init__(self) -> None:
        if not self.kv_heads:
            object.__setattr__(self, "kv_heads", self.heads)
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden // self.heads if self.heads else 0)
        if self.kv_lora_rank and not self.v_head_dim:
            object.__setattr__(self, "v_head_dim", self.head_dim)

    # ------------------------------------------------------------ structure
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def has_dropout(self) -> bool:
        return self.dropout if self.dropout is not None else self.mlp == "gelu"

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.mlp == "swiglu" else 2

    @property
    def qk_dim(self) -> int:
        """Per-head width of a query and a key (MLA: the non-rotary part plus the rotary one)."""
        return self.head_dim + self.qk_rope_head_dim

    @property
    def value_dim(self) -> int:
        return self.v_head_dim if self.mla else self.head_dim

    def attention_projections(self) -> list[tuple[int, int]]:
        """(in, out) of every linear map of one attention block, unsharded."""
        h, a = self.hidden, self.heads
        if not self.mla:
            return [(h, a * self.head_dim), (h, 2 * self.kv_heads * self.head_dim), (a * self.head_dim, h)]
        q = ([(h, self.q_lora_rank), (self.q_lora_rank, a * self.qk_dim)] if self.q_lora_rank
             else [(h, a * self.qk_dim)])
        return q + [(h, self.kv_lora_rank + self.qk_rope_head_dim),
                    (self.kv_lora_rank, a * (self.head_dim + self.v_head_dim)), (a * self.v_head_dim, h)]

    def attention_params(self) -> int:
        return sum(i * o for i, o in self.attention_projections())

    def mlp_params(self, ffn: int) -> int:
        return self.mlp_matrices * self.hidden * ffn

    def dense_layer_params(self) -> int:
        return self.attention_params() + self.mlp_params(self.ffn_hidden) + 2 * self.hidden

    def expert_params(self) -> int:
        """One routed expert."""
        return self.mlp_params(self.expert_ffn_hidden)

    def moe_layer_params(self) -> int:
        """Attention, router, shared experts (the layer's non-expert part) and every routed expert."""
        return (self.attention_params() + self.hidden * self.experts + self.shared_experts * self.expert_params()
                + self.experts * self.expert_params() + 2 * self.hidden)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Every parameter (embedding and, untied, the output layer counted once each)."""
        dense = self.layers - self.moe_layers
        return (dense * self.dense_layer_params() + self.moe_layers * self.moe_layer_params()
                + self.embedding_params() * (1 if self.tied_embeddings else 2) + self.hidden)

    @property
    def active_params(self) -> int:
        """Parameters a token passes through (top_k routed experts of each MoE layer)."""
        if not self.is_moe:
            return self.params
        return self.params - self.moe_layers * (self.experts - self.top_k) * self.expert_params()

    # ------------------------------------------------------------ FLOPs
    def layer_matmul_flops(self, moe: bool) -> int:
        """Forward FLOPs per token of one layer's weight matmuls (2 per multiply-add)."""
        ffn = (self.top_k + self.shared_experts) * self.expert_params() + self.hidden * self.experts if moe \
            else self.mlp_params(self.ffn_hidden)
        return 2 * (self.attention_params() + ffn)

    def attention_core_flops(self, seq: int) -> int:
        """Forward FLOPs per token of scores and weighted values over `seq` keys, the
        whole square counted (Megatron's and PaLM's convention for model FLOPs)."""
        return 2 * seq * self.heads * (self.qk_dim + self.value_dim)

    def logits_flops(self) -> int:
        return 2 * self.hidden * self.vocab

    def forward_flops_per_token(self, seq: int, causal: bool = False) -> float:
        dense = self.layers - self.moe_layers
        per_layer_core = self.attention_core_flops(seq) / (2 if causal else 1)
        return (dense * self.layer_matmul_flops(False) + self.moe_layers * self.layer_matmul_flops(True)
                + self.layers * per_layer_core + self.logits_flops())

    def model_flops(self, tokens: int, seq: int, causal: bool = False) -> float:
        """Model FLOPs of a training step over `tokens` tokens: forward + backward (2x), no
        recomputation counted. `causal`: the attention square counted half, as fused
        attention computes it (else whole, Megatron's and PaLM's convention)."""
        return 3.0 * self.forward_flops_per_token(seq, causal) * tokens

    def describe(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["params"] = self.params
        out["active_params"] = self.active_params
        return out


def _m(name: str, source: str, **kw: Any) -> TransformerSpec:
    return TransformerSpec(name=name, source=source, **kw)


NARAYANAN = "Narayanan et al. 2021 (arXiv 2104.04473), Table 1"
KORTHIKANTI = "Korthikanti et al. 2022 (arXiv 2205.05198), Table 3"
LLAMA3 = "https://huggingface.co/meta-llama/Meta-Llama-3-{}/blob/main/config.json"


def _gpt(name: str, layers: int, hidden: int, heads: int, source: str, vocab: int = 51200) -> TransformerSpec:
    """GPT-3 and Megatron's GPTs: 4h GELU MLP, input and output embeddings tied."""
    return _m(name, source, layers=layers, hidden=hidden, ffn_hidden=4 * hidden, heads=heads, vocab=vocab,
              tied_embeddings=True)


MODEL_PRESETS: dict[str, TransformerSpec] = {m.name: m for m in (
    _gpt("gpt3-175b", 96, 12288, 96, "Brown et al. 2020 (arXiv 2005.14165), Table 2.1; BPE vocab 50257", 50257),
    _gpt("megatron-1.7b", 24, 2304, 24, NARAYANAN),
    _gpt("megatron-3.6b", 30, 3072, 32, NARAYANAN),
    _gpt("megatron-7.5b", 36, 4096, 32, NARAYANAN),
    _gpt("megatron-18b", 40, 6144, 48, NARAYANAN),
    _gpt("megatron-39b", 48, 8192, 64, NARAYANAN),
    _gpt("megatron-76b", 60, 10240, 80, NARAYANAN),
    _gpt("megatron-145b", 80, 12288, 96, NARAYANAN),
    _gpt("megatron-310b", 96, 16384, 128, NARAYANAN),
    _gpt("megatron-530b", 105, 20480, 128, NARAYANAN),
    _gpt("megatron-1t", 128, 25600, 160, NARAYANAN),
    _gpt("megatron-22b", 48, 6144, 64, KORTHIKANTI),
    _m("llama2-7b", "https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json",
       layers=32, hidden=4096, ffn_hidden=11008, heads=32, vocab=32000, mlp="swiglu"),
    _m("llama2-13b", "https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json",
       layers=40, hidden=5120, ffn_hidden=13824, heads=40, vocab=32000, mlp="swiglu"),
    _m("llama2-70b", "https://huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json",
       layers=80, hidden=8192, ffn_hidden=28672, heads=64, kv_heads=8, vocab=32000, mlp="swiglu"),
    _m("llama3-8b", LLAMA3.format("8B"), layers=32, hidden=4096, ffn_hidden=14336, heads=32, kv_heads=8,
       vocab=128256, mlp="swiglu"),
    _m("llama3-70b", LLAMA3.format("70B"), layers=80, hidden=8192, ffn_hidden=28672, heads=64, kv_heads=8,
       vocab=128256, mlp="swiglu"),
    _m("llama3-405b", "https://huggingface.co/meta-llama/Llama-3.1-405B/blob/main/config.json",
       layers=126, hidden=16384, ffn_hidden=53248, heads=128, kv_heads=8, vocab=128256, mlp="swiglu"),
    _m("mixtral-8x7b", "https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json",
       layers=32, hidden=4096, ffn_hidden=14336, heads=32, kv_heads=8, vocab=32000, mlp="swiglu",
       experts=8, top_k=2, expert_ffn_hidden=14336),
    _m("mixtral-8x22b", "https://huggingface.co/mistralai/Mixtral-8x22B-v0.1/blob/main/config.json",
       layers=56, hidden=6144, ffn_hidden=16384, heads=48, kv_heads=8, vocab=32768, mlp="swiglu",
       experts=8, top_k=2, expert_ffn_hidden=16384),
    _m("deepseek-v3", "https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json",
       layers=61, hidden=7168, ffn_hidden=18432, heads=128, head_dim=128, vocab=129280, mlp="swiglu",
       experts=256, top_k=8, expert_ffn_hidden=2048, shared_experts=1, dense_layers=3,
       q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, v_head_dim=128),
)}

_INT_FIELDS = ("layers", "hidden", "ffn_hidden", "heads", "kv_heads", "head_dim", "vocab", "experts", "top_k",
               "expert_ffn_hidden", "shared_experts", "dense_layers", "q_lora_rank", "kv_lora_rank",
               "qk_rope_head_dim", "v_head_dim")
_REQUIRED = ("name", "layers", "hidden", "ffn_hidden", "heads")


def load_model(arg: str) -> TransformerSpec:
    """A preset name or a MODEL file (YAML/JSON)."""
    if arg in MODEL_PRESETS:
        return MODEL_PRESETS[arg]
    if not (Path(arg).is_file() or arg.endswith((".yaml", ".yml", ".json"))):
        raise InputError(f"unknown model {arg!r}: not a file, not a preset (presets: {', '.join(MODEL_PRESETS)})",
                         field="--model")
    return parse_model(read_document(arg), source=arg)


def parse_model(data: Any, source: str | None = None) -> TransformerSpec:
    allowed = [f.name for f in fields(TransformerSpec)]
    expect_mapping(data, source=source, field=None, allowed=allowed, required=_REQUIRED)
    expect_type(data["name"], str, source=source, field="name", what="a string")
    for key in _INT_FIELDS:
        if key in data:
            expect_type(data[key], int, source=source, field=key, what="a whole number")
            if isinstance(data[key], bool) or data[key] < 0 or (key in _REQUIRED and data[key] == 0):
                raise InputError(f"must be a {'positive' if key in _REQUIRED else 'non-negative'} whole number, "
                                 f"got {data[key]!r}", source=source, field=key)
    mlp = data.get("mlp", "gelu")
    if mlp not in MLPS:
        raise InputError(f"unknown mlp {mlp!r} (use {' | '.join(MLPS)})", source=source, field="mlp")
    for key in ("tied_embeddings", "dropout"):
        if key in data:
            expect_type(data[key], bool, source=source, field=key, what="true or false")
    expect_type(data.get("source", ""), str, source=source, field="source", what="a string")
    if not data.get("head_dim") and data["hidden"] % data["heads"]:
        raise InputError(f"hidden {data['hidden']} does not split into {data['heads']} heads: give head_dim",
                         source=source, field="heads")
    spec = TransformerSpec(**{k: v for k, v in data.items()})
    _check(spec, source)
    return spec


def _check(spec: TransformerSpec, source: str | None) -> None:
    def bad(field: str, message: str) -> None:
        raise InputError(message, source=source, field=field)

    if spec.kv_heads > spec.heads:
        bad("kv_heads", f"{spec.kv_heads} K/V heads are more than the {spec.heads} heads")
    if spec.heads % spec.kv_heads:
        bad("kv_heads", f"{spec.heads} heads do not split into groups of {spec.kv_heads} K/V heads")
    if spec.experts and not 0 < spec.top_k <= spec.experts:
        bad("top_k", f"a MoE model routes each token to 1..{spec.experts} experts, got top_k {spec.top_k}")
    if spec.experts and not spec.expert_ffn_hidden:
        bad("expert_ffn_hidden", "a MoE model needs the experts' hidden size")
    if not spec.experts and (spec.top_k or spec.shared_experts or spec.dense_layers):
        bad("experts", "top_k, shared_experts and dense_layers need experts > 0")
    if spec.dense_layers >= spec.layers and spec.experts:
        bad("dense_layers", f"{spec.dense_layers} dense layers leave no MoE layer of {spec.layers}")
    if spec.mla and not spec.qk_rope_head_dim:
        bad("qk_rope_head_dim", "multi-head latent attention (kv_lora_rank > 0) needs the rotary head width")


def with_name(spec: TransformerSpec, name: str) -> TransformerSpec:
    return replace(spec, name=name)
