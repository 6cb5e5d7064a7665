"""The training WORKLOAD file and one parallel configuration (what `--fix` names).

Workload (contract): `{mode: train, global_batch, seq_len, micro_batch, recompute, dtype}`,
extended with what the published runs differ in (defaults: current Megatron-LM):
- `attention: flash | unfused` (default flash: fused attention that skips the causal
  half and keeps no s x s tensor; `unfused`: Megatron 2021's batched GEMMs + softmax);
- `grad_reduce_dtype: fp32 | bf16 | fp16` (default: fp32 for bf16 training, as Megatron
  forces `accumulate_allreduce_grads_in_fp32` with bf16; the parameters' dtype for fp16);
- `overlap_grad_reduce: true | false` (default true: the DP reduce overlaps the last
  micro-batch's backward; false: it runs after the pipeline flush, as in 2021);
- `tp_comm_overlap: true | false` (default false);
- `gradient_accumulation_fusion: true | false` (default true: the weight-gradient GEMM
  accumulates into the fp32 gradient buffer; false, Megatron before August 2021: it
  writes a 16-bit gradient that a separate kernel adds to the buffer, every micro-batch).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from planner.core.errors import InputError
from planner.core.loader import expect_mapping, expect_type, read_document

RECOMPUTE = ("none", "selective", "full")
TRAIN_DTYPES = ("bf16", "fp16", "fp8")
ATTENTION = ("flash", "unfused")
GRAD_DTYPES = ("fp32", "bf16", "fp16")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


@dataclass(frozen=True)
class TrainWorkload:
    global_batch: int
    seq_len: int
    micro_batch: int | None = None
    recompute: str | None = None
    dtype: str = "bf16"
    attention: str = "flash"
    grad_reduce_dtype: str = ""
    overlap_grad_reduce: bool = True
    tp_comm_overlap: bool = False
    gradient_accumulation_fusion: bool = True

    def __post_init__(self) -> None:
        if not self.grad_reduce_dtype:
            object.__setattr__(self, "grad_reduce_dtype", "fp16" if self.dtype == "fp16" else "fp32")
        if self.grad_reduce_dtype in ("bf16", "fp16") and self.grad_reduce_dtype != self.dtype and self.dtype != "fp8":
            raise InputError(f"{self.dtype} training reduces gradients in fp32 or {self.dtype}",
                             field="grad_reduce_dtype")

    def fixed(self) -> dict:
        """The workload's own choices (micro_batch, recompute), as --fix would give them."""
        return {k: v for k, v in (("micro_batch", self.micro_batch), ("recompute", self.recompute)) if v is not None}

    @property
    def tokens(self) -> int:
        return self.global_batch * self.seq_len

    def describe(self) -> dict:
        return {"mode": "train", **{f.name: getattr(self, f.name) for f in fields(self)}}


_BOOLS = ("overlap_grad_reduce", "tp_comm_overlap", "gradient_accumulation_fusion")
_CHOICES = {"recompute": RECOMPUTE, "dtype": TRAIN_DTYPES, "attention": ATTENTION, "grad_reduce_dtype": GRAD_DTYPES}


def load_workload(path: str) -> TrainWorkload:
    return parse_workload(read_document(path), source=path)


def parse_workload(data: Any, source: str | None = None) -> TrainWorkload:
    allowed = ("mode", *(f.name for f in fields(TrainWorkload)))
    if isinstance(data, dict) and data.get("mode", "train") != "train":
        raise InputError(f"mode {data['mode']!r} is not a training workload (mode: train; a serving workload, "
                         "mode: serve, is read by planner.core.serving)", source=source, field="mode")
    expect_mapping(data, source=source, field=None, allowed=allowed, required=("global_batch", "seq_len"))
    for key in ("global_batch", "seq_len", "micro_batch"):
        if data.get(key) is not None:
            expect_type(data[key], int, source=source, field=key, what="a positive whole number")
            if isinstance(data[key], bool) or data[key] < 1:
                raise InputError(f"must be a positive whole number, got {data[key]!r}", source=source, field=key)
    for key, choices in _CHOICES.items():
        if data.get(key) is not None and data[key] not in choices:
            raise InputError(f"unknown {key} {data[key]!r} (use {' | '.join(choices)})", source=source, field=key)
    for key in _BOOLS:
        if key in data:
            expect_type(data[key], bool, source=source, field=key, what="true or false")
    try:
        return TrainWorkload(**{k: v for k, v in data.items() if k != "mode" and v is not None})
    except InputError as exc:
        raise exc.within(source) from None


@dataclass(frozen=True)
class ParallelConfig:
    """One training configuration. `layers_per_stage`: the decoder layers of each pipeline
    stage (device), None for the even split; `interleave`: model chunks per device."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    micro_batch: int = 1
    interleave: int = 1
    recompute: str = "none"
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    layers_per_stage: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        split = self.layers_per_stage
        if split is not None and len(set(split)) == 1 and len(split) == self.pp:
            object.__setattr__(self, "layers_per_stage", None)  # an even split is the default split

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    def key(self) -> tuple:
        """The fields a search orders ties by (smaller first)."""
        return (self.tp, self.pp, self.cp, self.ep, self.micro_batch, self.interleave,
                RECOMPUTE.index(self.recompute), self.sequence_parallel, self.distributed_optimizer,
                self.layers_per_stage or ())

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["layers_per_stage"] = list(self.layers_per_stage) if self.layers_per_stage else None
        return out


FIX_INTS = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "interleave")
FIX_BOOLS = ("sequence_parallel", "distributed_optimizer")
FIX_KEYS = FIX_INTS + FIX_BOOLS + ("recompute",)


def parse_fix(text: str | None) -> dict:
    """`--fix tp=8,pp=8,...` -> {key: value}; unknown keys and bad values are bad input."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        key = key.strip()
        if not sep or key not in FIX_KEYS:
            raise InputError(f"{item.strip()!r}: use key=value with key one of {', '.join(FIX_KEYS)}", field="--fix")
        value = value.strip()
        if key in out:
            raise InputError(f"{key} is given twice", field="--fix")
        if key in FIX_INTS:
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
                raise InputError(f"{key}={value!r}: a positive whole number", field="--fix")
            out[key] = int(value)
        elif key in FIX_BOOLS:
            if value not in ("0", "1"):
                raise InputError(f"{key}={value!r}: 0 or 1", field="--fix")
            out[key] = value == "1"
        else:
            if value not in RECOMPUTE:
                raise InputError(f"recompute={value!r}: one of {' | '.join(RECOMPUTE)}", field="--fix")
            out[key] = value
    return out




