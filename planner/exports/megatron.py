"""A training configuration as Megatron-LM command-line arguments, and back.

Argument names are Megatron-LM's (megatron/training/arguments.py). The pipeline split:
even (nothing), Megatron's uneven first/last stages (`--decoder-first-pipeline-num-layers`,
`--decoder-last-pipeline-num-layers`) when the middle stages are equal, else the explicit
`--pipeline-model-parallel-layout` (E embedding, t a decoder layer, L the loss, stages
split by |). Interleaving is `--num-layers-per-virtual-pipeline-stage`. Full recompute is
`--recompute-granularity full --recompute-method uniform --recompute-num-layers 1`.
The text is one argument (with its value) per line, ending in a backslash, so it pastes
into a launch script; `parse_megatron` reads it (or any argument list) back.
"""
from __future__ import annotations

import shlex

from planner.core.errors import InputError
from planner.core.training import ParallelConfig, TrainWorkload
from planner.core.transformer import TransformerSpec

DTYPE_FLAGS = {"bf16": [["--bf16"]], "fp16": [["--fp16"]], "fp8": [["--bf16"], ["--fp8-format", "hybrid"]]}


def megatron_arguments(spec: TransformerSpec, w: TrainWorkload, c: ParallelConfig) -> list[list[str]]:
    """[flag, value...] per argument."""
    args: list[list[str]] = [
        ["--tensor-model-parallel-size", str(c.tp)], ["--pipeline-model-parallel-size", str(c.pp)],
        ["--context-parallel-size", str(c.cp)], ["--expert-model-parallel-size", str(c.ep)],
        ["--micro-batch-size", str(c.micro_batch)], ["--global-batch-size", str(w.global_batch)],
        ["--seq-length", str(w.seq_len)], ["--num-layers", str(spec.layers)], ["--hidden-size", str(spec.hidden)],
        ["--ffn-hidden-size", str(spec.ffn_hidden)], ["--num-attention-heads", str(spec.heads)],
    ]
    args += _model_shape(spec)
    if c.interleave > 1:
        args.append(["--num-layers-per-virtual-pipeline-stage", str(spec.layers // (c.pp * c.interleave))])
    if c.layers_per_stage is not None:
        stages = c.layers_per_stage
        middle = set(stages[1:-1])
        if len(middle) <= 1 and len(stages) > 2:
            args += [["--decoder-first-pipeline-num-layers", str(stages[0])],
                     ["--decoder-last-pipeline-num-layers", str(stages[-1])]]
        else:
            cells = ["t" * n for n in stages]
            cells[0] = "E" + cells[0]
            cells[-1] = cells[-1] + "L"
            args.append(["--pipeline-model-parallel-layout", "|".join(cells)])
    if c.recompute == "full":
        args += [["--recompute-granularity", "full"], ["--recompute-method", "uniform"], ["--recompute-num-layers", "1"]]
    elif c.recompute == "selective":
        args.append(["--recompute-granularity", "selective"])
    if c.sequence_parallel:
        args.append(["--sequence-parallel"])
    if c.distributed_optimizer:
        args.append(["--use-distributed-optimizer"])
    if w.overlap_grad_reduce:
        args.append(["--overlap-grad-reduce"])
        if c.distributed_optimizer:
            args.append(["--overlap-param-gather"])
    if w.tp_comm_overlap and c.tp > 1:
        args.append(["--tp-comm-overlap"])
    if w.dtype == "bf16" and w.grad_reduce_dtype == "bf16":
        args.append(["--grad-reduce-in-bf16"])
    if w.dtype == "fp16" and w.grad_reduce_dtype == "fp32":
        args.append(["--accumulate-allreduce-grads-in-fp32"])
    if not w.gradient_accumulation_fusion:
        args.append(["--no-gradient-accumulation-fusion"])
    if w.attention == "unfused":
        args.append(["--attention-backend", "unfused"])
    return args + DTYPE_FLAGS[w.dtype]


def _model_shape(spec: TransformerSpec) -> list[list[str]]:
    """The flags that make Megatron build the model the cost model priced."""
    args: list[list[str]] = []
    if spec.mla:
        args.append(["--multi-latent-attention"])
        if spec.q_lora_rank:
            args.append(["--q-lora-rank", str(spec.q_lora_rank)])
        args += [["--kv-lora-rank", str(spec.kv_lora_rank)], ["--qk-head-dim", str(spec.head_dim)],
                 ["--qk-pos-emb-head-dim", str(spec.qk_rope_head_dim)], ["--v-head-dim", str(spec.v_head_dim)]]
    else:
        if spec.head_dim != spec.hidden // spec.heads:
            args.append(["--kv-channels", str(spec.head_dim)])
        if spec.kv_heads != spec.heads:
            args += [["--group-query-attention"], ["--num-query-groups", str(spec.kv_heads)]]
    if spec.mlp == "swiglu":
        args.append(["--swiglu"])
    if not spec.tied_embeddings:
        args.append(["--untie-embeddings-and-output-weights"])
    if not spec.has_dropout:
        args += [["--hidden-dropout", "0"], ["--attention-dropout", "0"]]
    if spec.is_moe:
        args += [["--num-experts", str(spec.experts)], ["--moe-router-topk", str(spec.top_k)],
                 ["--moe-ffn-hidden-size", str(spec.expert_ffn_hidden)]]
        if spec.shared_experts:
            args.append(["--moe-shared-expert-intermediate-size", str(spec.shared_experts * spec.expert_ffn_hidden)])
        if spec.dense_layers:
            args.append(["--moe-layer-freq", f"([0]*{spec.dense_layers}+[1]*{spec.moe_layers})"])
    return args


SHAPE_FLAGS = {"--num-layers": "layers", "--hidden-size": "hidden", "--ffn-hidden-size": "ffn_hidden",
               "--num-attention-heads": "heads"}


def model_shape_mismatch(text: str, spec: TransformerSpec) -> str | None:
    """The first model-shape flag of `text` that does not say `spec`, or None."""
    tokens = shlex.split(text.replace("\\\n", " "))
    for flag, field in SHAPE_FLAGS.items():
        if flag not in tokens or tokens[tokens.index(flag) + 1] != str(getattr(spec, field)):
            return f"{flag} is not {getattr(spec, field)}"
    return None


def megatron_text(spec: TransformerSpec, w: TrainWorkload, c: ParallelConfig) -> str:
    return "".join(" ".join(shlex.quote(x) for x in arg) + " \\\n" for arg in megatron_arguments(spec, w, c))


def parse_megatron(text: str, layers: int, gpus: int) -> ParallelConfig:
    """The configuration an argument list says (what Megatron-LM would run)."""
    tokens = shlex.split(text.replace("\\\n", " "))
    values: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        if not flag.startswith("--"):
            raise InputError(f"expected a --flag, got {flag!r}", field="megatron")
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            values[flag] = tokens[i + 1]
            i += 2
        else:
            values[flag] = True
            i += 1

    def number(flag: str, default: int) -> int:
        raw = values.get(flag)
        if raw is None:
            return default
        if not isinstance(raw, str) or not raw.isdigit():
            raise InputError(f"{flag} needs a whole number, got {raw!r}", field="megatron")
        return int(raw)

    tp, pp, cp, ep = (number(f"--{k}", 1) for k in ("tensor-model-parallel-size", "pipeline-model-parallel-size",
                                                   "context-parallel-size", "expert-model-parallel-size"))
    mb = number("--micro-batch-size", 1)
    per_chunk = number("--num-layers-per-virtual-pipeline-stage", 0)
    interleave = layers // (pp * per_chunk) if per_chunk else 1
    split = None
    if "--pipeline-model-parallel-layout" in values:
        split = tuple(cell.count("t") for cell in str(values["--pipeline-model-parallel-layout"]).split("|"))
    elif "--decoder-first-pipeline-num-layers" in values:
        first, last = number("--decoder-first-pipeline-num-layers", 0), number("--decoder-last-pipeline-num-layers", 0)
        middle = (layers - first - last) // max(1, pp - 2)
        split = (first, *([middle] * (pp - 2)), last)
    granularity = values.get("--recompute-granularity")
    recompute = granularity if granularity in ("full", "selective") else "none"
    return ParallelConfig(tp=tp, pp=pp, dp=gpus // (tp * pp * cp), cp=cp, ep=ep,
                          micro_batch=mb, interleave=interleave, recompute=recompute,
                          sequence_parallel="--sequence-parallel" in values,
                          distributed_optimizer="--use-distributed-optimizer" in values,
                          layers_per_stage=split)
