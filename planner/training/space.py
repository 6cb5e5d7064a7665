"""The configurations a search enumerates, and why one does not divide.

Rules (Megatron-LM's, planner/core/training.py names the fields):
- tp x pp x dp x cp = the GPUs; tp divides the heads, the K/V heads and the MLP widths;
- pp layers: an even split, or Megatron's uneven first and last stages
  (`--decoder-first/last-pipeline-num-layers`) with equal middle stages; interleaving
  (v > 1) needs pp > 1, layers divisible by pp x v and micro-batches divisible by pp;
- the global batch divides into dp x micro_batch; cp > 1 needs seq_len divisible by 2 cp
  (the load-balanced causal split); ep divides the experts and dp (experts are dense-free
  otherwise ep = 1); sequence parallelism needs tp > 1 and seq_len / cp divisible by tp, and
  MoE with tp > 1 needs it (Megatron-LM's rule).
A search takes tp up to the GPUs of one server (tensor parallelism stays on NVLink),
micro-batches up to MAX_MICRO_BATCH, cp up to MAX_CP; `--fix` may ask for any valid value.
"""
from __future__ import annotations

from itertools import product
from typing import Iterator

from planner.core.training import RECOMPUTE, ParallelConfig, TrainWorkload
from planner.core.transformer import TransformerSpec

MAX_MICRO_BATCH = 16
MAX_CP = 16
MAX_INTERLEAVE = 16


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def stage_split(layers: int, pp: int) -> tuple[int, ...] | None:
    """Layers per stage: even, else equal middle stages of ceil(layers / pp) with the
    rest split between the first and the last stage (Megatron's uneven first/last);
    None when no such split exists."""
    if layers % pp == 0:
        return None
    if pp < 3:
        return None
    middle = -(-layers // pp)
    rest = layers - (pp - 2) * middle
    if rest < 2:
        return None
    first = rest // 2
    return (first, *([middle] * (pp - 2)), rest - first)


def why_invalid(spec: TransformerSpec, w: TrainWorkload, gpus: int, c: ParallelConfig) -> tuple[str, str] | None:
    """(field, reason) of the first rule `c` breaks, or None."""
    if c.gpus != gpus:
        return "tp", (f"tp x pp x dp x cp = {c.tp} x {c.pp} x {c.dp} x {c.cp} = {c.gpus}, the topology has {gpus} "
                      "GPUs")
    if spec.heads % c.tp or (not spec.mla and spec.kv_heads % c.tp):
        return "tp", f"tp {c.tp} does not divide the {spec.heads} heads and {spec.kv_heads} K/V heads"
    for name, width in (("ffn_hidden", spec.ffn_hidden), ("expert_ffn_hidden", spec.expert_ffn_hidden)):
        if width % c.tp:
            return "tp", f"tp {c.tp} does not divide {name} {width}"
    if c.interleave > 1 and c.pp == 1:
        return "interleave", "interleaving needs pp > 1"
    if c.pp > spec.layers:
        return "pp", f"pp {c.pp} is more stages than the {spec.layers} layers"
    if c.layers_per_stage is not None:
        if len(c.layers_per_stage) != c.pp or sum(c.layers_per_stage) != spec.layers or min(c.layers_per_stage) < 1:
            return "pp", f"layers per stage {list(c.layers_per_stage)} are not {c.pp} stages of {spec.layers} layers"
    elif spec.layers % (c.pp * c.interleave):
        return ("interleave" if c.interleave > 1 else "pp"), (
            f"{spec.layers} layers do not split into pp {c.pp} x interleave {c.interleave} equal chunks"
            + ("" if c.interleave > 1 or stage_split(spec.layers, c.pp) is None else
               f" (an uneven split: {list(stage_split(spec.layers, c.pp))})"))
    if w.global_batch % (c.dp * c.micro_batch):
        return "micro_batch", (f"global batch {w.global_batch} does not divide into dp {c.dp} x micro_batch "
                               f"{c.micro_batch}")
    m = w.global_batch // (c.dp * c.micro_batch)
    if c.interleave > 1 and m % c.pp:
        return "interleave", f"the interleaved schedule needs the {m} micro-batches divisible by pp {c.pp}"
    if c.cp > 1 and w.seq_len % (2 * c.cp):
        return "cp", f"seq_len {w.seq_len} does not split into 2 x cp {c.cp} chunks"
    if c.ep > 1 and (not spec.is_moe or spec.experts % c.ep or c.dp % c.ep):
        return "ep", (f"ep {c.ep} must divide the {spec.experts} experts and dp {c.dp}" if spec.is_moe
                      else "expert parallelism needs a MoE model")
    if c.sequence_parallel and c.tp == 1:
        return "sequence_parallel", "sequence parallelism needs tp > 1"
    if c.sequence_parallel and (w.seq_len // c.cp) % c.tp:
        return "sequence_parallel", f"seq_len / cp = {w.seq_len // c.cp} does not split over tp {c.tp}"
    if spec.is_moe and c.tp > 1 and not c.sequence_parallel:
        return "sequence_parallel", "Megatron-LM needs sequence parallelism for MoE with tp > 1"
    return None


def configurations(spec: TransformerSpec, w: TrainWorkload, gpus: int, gpus_per_server: int,
                   fix: dict) -> Iterator[ParallelConfig]:
    """Every valid configuration agreeing with `fix`, in a fixed order. O(product of the
    choices); each field's choices are a few divisors."""
    def choices(key: str, default: list) -> list:
        return [fix[key]] if key in fix else default

    tps = choices("tp", [t for t in divisors(gpus_per_server) if gpus % t == 0])
    cps = choices("cp", [c for c in divisors(gpus) if c <= MAX_CP])
    for tp, cp in product(tps, cps):
        if gpus % (tp * cp):
            continue
        for pp in choices("pp", [p for p in divisors(gpus // (tp * cp)) if p <= spec.layers]):
            if gpus % (tp * cp * pp):
                continue
            dp = gpus // (tp * cp * pp)
            if "dp" in fix and fix["dp"] != dp:
                continue
            split = stage_split(spec.layers, pp)
            eps = choices("ep", [e for e in divisors(dp) if spec.is_moe and spec.experts % e == 0] or [1])
            per_replica = w.global_batch // dp if w.global_batch % dp == 0 else 0
            mbs = choices("micro_batch", [b for b in divisors(per_replica) if b <= MAX_MICRO_BATCH] if per_replica
                          else [1])
            vs = choices("interleave", [1] + ([v for v in divisors(spec.layers // pp) if 1 < v <= MAX_INTERLEAVE]
                                              if pp > 1 and spec.layers % pp == 0 else []))
            for ep, mb, v, rc in product(eps, mbs, vs, choices("recompute", list(RECOMPUTE))):
                for sp, do in product(choices("sequence_parallel", [False, True] if tp > 1 else [False]),
                                      choices("distributed_optimizer", [False, True])):
                    c = ParallelConfig(tp, pp, dp, cp, ep, mb, v, rc, sp, do,
                                       split if v == 1 else None)
                    if why_invalid(spec, w, gpus, c) is None:
                        yield c
