"""Published serving measurements the cost model is checked against (never fitted to):
`python -m bench.serving --accuracy` prints predicted vs measured per row.

Kinds of row:
- `prefill`: a lone request's prompt (first-token latency at batch 1, one output token);
- `decode`: one decode step of `batch` requests, each with the context of its prompt and
  half its output (the per-token latency percentiles of a fixed-batch run);
- `e2e`: a fixed batch end to end: the batch's prompts in one prefill iteration, then
  output - 1 decode steps of the whole batch (vLLM's benchmark_latency).
Sources (docs/serving.md, "Accuracy"):
- TRT: NVIDIA/TensorRT-LLM docs/source/performance.md (v0.5 first-token latency, batch 1;
  FP8 with FP8 KV on H100 and L40S, FP16 on A100; "LLaMA 7B/70B" are Llama-2's shapes);
- LMD: InternLM/lmdeploy docs/en/benchmark/a100_fp16.md (v0.1.0a1, A100-80G FP16; p50
  per-token decode latency, first token excluded, and first-token latency at batch 1);
- VLLM: vLLM's nightly latency benchmark (.buildkite/nightly-benchmarks/tests/latency-tests.json:
  batch 8, input 32, output 128; Buildkite performance-benchmark builds 9523 A100,
  9555 H100, 9513 H200), BF16.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.core.gpus import gpu_spec
from planner.core.serving import ReplicaConfig, parse_serve_workload
from planner.core.transformer import MODEL_PRESETS
from planner.serving.cost import Chunk, ReplicaCost
from planner.training.comm import CommPricer
from topologies.fabrics import cluster

SERVER_OF = {"a100-80g": "dgx-a100", "h100": "hgx-h100", "h200": "hgx-h200", "l40s": "l40s-pcie"}
TRT = "TensorRT-LLM v0.5, docs/source/performance.md (first-token latency, batch 1)"
LMD = "lmdeploy v0.1.0a1, docs/en/benchmark/a100_fp16.md"
VLLM = "vLLM nightly latency benchmark (batch 8, in 32, out 128), Buildkite builds 9523/9555/9513"


@dataclass(frozen=True)
class ServingRow:
    kind: str  # prefill | decode | e2e
    model: str
    gpu: str
    tp: int
    dtype: str
    prompt: int
    output: int
    batch: int
    measured_ms: float
    source: str

    def label(self) -> str:
        shape = f"in {self.prompt}" if self.kind == "prefill" else f"b{self.batch} {self.prompt}/{self.output}"
        return f"{self.kind} {self.model} {self.gpu} tp{self.tp} {self.dtype} {shape}"


def _rows() -> tuple[ServingRow, ...]:
    out = []
    for model, gpu, tp, dtype, pairs in (
            ("llama2-7b", "h100", 1, "fp8", ((128, 7), (2048, 36))),
            ("llama2-70b", "h100", 4, "fp8", ((128, 26), (2048, 109))),
            ("llama2-7b", "a100-80g", 1, "fp16", ((128, 16), (2048, 133))),
            ("llama2-70b", "a100-80g", 4, "fp16", ((128, 47), (2048, 377))),
            ("llama2-7b", "l40s", 1, "fp8", ((128, 14), (2048, 73)))):
        out += [ServingRow("prefill", model, gpu, tp, dtype, n, 1, 1, ms, TRT) for n, ms in pairs]
    for model, tp, cases in (
            ("llama2-7b", 1, ((1, 128, 128, 10), (1, 2048, 128, 10), (16, 128, 128, 11), (64, 128, 128, 14),
                              (64, 128, 2048, 30))),
            ("llama2-13b", 1, ((1, 128, 128, 17), (1, 2048, 128, 19))),
            ("llama2-70b", 4, ((1, 128, 128, 29), (1, 2048, 128, 31), (16, 128, 128, 30), (16, 128, 2048, 33),
                               (64, 128, 128, 37), (64, 128, 2048, 43)))):
        out += [ServingRow("decode", model, "a100-80g", tp, "fp16", i, o, b, ms, LMD) for b, i, o, ms in cases]
    for model, tp, pairs in (("llama2-7b", 1, ((128, 22), (2048, 139))), ("llama2-13b", 1, ((128, 40), (2048, 242))),
                             ("llama2-70b", 4, ((128, 74), (2048, 402)))):
        out += [ServingRow("prefill", model, "a100-80g", tp, "fp16", n, 1, 1, ms, LMD) for n, ms in pairs]
    for gpu, small, large in (("a100-80g", 1579.3, 3990.6), ("h100", 997.5, 2444.5), ("h200", 834.1, 2075.1)):
        out.append(ServingRow("e2e", "llama3-8b", gpu, 1, "bf16", 32, 128, 8, small, VLLM))
        out.append(ServingRow("e2e", "llama3-70b", gpu, 4, "bf16", 32, 128, 8, large, VLLM))
    return tuple(out)


SERVING_ROWS = _rows()


@lru_cache(maxsize=None)
def _pricer(gpu: str) -> CommPricer:
    return CommPricer(cluster(SERVER_OF[gpu], 1))


def replica_cost(row: ServingRow) -> ReplicaCost:
    kv = "fp8" if row.dtype == "fp8" else row.dtype
    w = parse_serve_workload({"mode": "serve", "prompt_tokens": row.prompt, "output_tokens": row.output,
                              "rate_rps": 1, "ttft_slo_s": 1, "tpot_slo_s": 1, "dtype": row.dtype, "kv_dtype": kv,
                              "chunk_tokens": 0, "max_batch": max(row.batch, 1)})
    return ReplicaCost(MODEL_PRESETS[row.model], w, ReplicaConfig(row.gpu, row.tp), gpu_spec(row.gpu),
                       _pricer(row.gpu), tuple(range(row.tp)))


def predict(row: ServingRow) -> float:
    """The cost model's milliseconds for the row's measurement."""
    c = replica_cost(row)
    if row.kind == "prefill":
        return c.prefill_s(row.prompt) * 1e3
    if row.kind == "decode":
        return c.iteration_s((), row.batch, row.batch * (row.prompt + row.output / 2)) * 1e3
    total = c.iteration_s(tuple(Chunk(row.prompt, 0) for _ in range(row.batch)))
    total += sum(c.iteration_s((), row.batch, row.batch * (row.prompt + k)) for k in range(1, row.output))
    return total * 1e3
