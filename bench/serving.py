"""Serving plans: the cost model against published measurements, and the plans the issue asks for.

    python -m bench.serving               # every table
    python -m bench.serving --accuracy    # tables 1-2: predicted vs measured, per row; GEMMs vs Vidur's profiles
    python -m bench.serving --mixed       # table 2: Llama-3-70B on 16 H100 + 32 A100-80G + 32 L40S, 3 rates
    python -m bench.serving --moe         # table 3: DeepSeek-V3 (FP8) on 4 hgx-h200, colocated vs disaggregated

Table 1: every row of planner/serving/calibration.py (TensorRT-LLM first-token latencies,
lmdeploy decode steps and first-token latencies, vLLM's fixed-batch latency benchmark).
Table 2: the per-layer weight matmuls (QKV, output projection, MLP up, MLP down) of
Llama-2-7B/70B and Llama-3-8B/70B against the kernel times Vidur ships from its profiling
(bench/data/vidur_mlp_ops.csv: the median columns of microsoft/vidur
data/profiling/compute/{a100,h100}/meta-llama/*/mlp.csv at 7d47513, FP16, TP emulated by
sharding on one GPU, 1 to 4096 tokens).
Table 3: for each rate, the MILP's plan, the best homogeneous plan and the greedy one: GPUs,
$/h, requests per $, simulated SLO attainment at the rate, solve time. SLOs TTFT 1 s and
TPOT 50 ms at 90%, prompts 1024 and outputs 256 tokens on average (exponential), prices in
PRICES (docs/serving.md says where they come from).
Table 4: DeepSeek-V3 on 32 H200 at one rate: the cheapest plan with colocated replicas only,
disaggregated only, and either.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from bench import run_tables
from planner.core.errors import InfeasibleError
from planner.core.serving import parse_serve_workload
from planner.core.transformer import MODEL_PRESETS
from planner.kinds.serving import plan_serving, serving_problem
from planner.serving.calibration import SERVING_ROWS, ServingRow, predict, replica_cost
from topologies.io import load_topology, parse_topology

PRICES = {"h100": 2.99, "a100-80g": 1.79, "l40s": 1.84, "h200": 3.29}
MIXED = {"name": "16xh100+32xa100+32xl40s", "generator": {"fabric": "fat-tree", "servers": [
    {"preset": "hgx-h100", "count": 2}, {"preset": "dgx-a100", "count": 4}, {"preset": "l40s-pcie", "count": 4}]}}
RATES = (6.0, 20.0, 40.0)
SLO = {"ttft_slo_s": 1.0, "tpot_slo_s": 0.05, "slo_quantile": 0.9}


def accuracy_table() -> None:
    print("| row | measured ms | predicted ms | error | source |")
    print("|---|---|---|---|---|")
    errors: dict[str, list[float]] = {}
    for row in SERVING_ROWS:
        p = predict(row)
        e = (p - row.measured_ms) / row.measured_ms
        errors.setdefault(row.source.split(",")[0].split(" (")[0], []).append(abs(e))
        print(f"| {row.label()} | {row.measured_ms:g} | {p:.1f} | {100 * e:+.1f}% | {row.source.split(',')[0]} |")
    every = [x for v in errors.values() for x in v]
    print()
    for source, v in errors.items():
        print(f"mean |error| {source}: {100 * sum(v) / len(v):.1f}% over {len(v)} rows")
    print(f"mean |error| all: {100 * sum(every) / len(every):.1f}% over {len(every)} rows\n")


VIDUR_OPS = Path(__file__).parent / "data" / "vidur_mlp_ops.csv"
VIDUR_MODELS = {"Llama-2-7B": "llama2-7b", "Llama-2-70B": "llama2-70b", "Llama-3-8B": "llama3-8b",
                "Llama-3-70B": "llama3-70b"}
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def vidur_table() -> None:
    rows = list(csv.DictReader(VIDUR_OPS.open()))
    print("| model | GPU | TP | tokens | Vidur GEMMs ms | predicted ms | error |")
    print("|---|---|---|---|---|---|---|")
    errors = []
    for r in rows:
        gpu = {"a100": "a100-80g", "h100": "h100"}[r["gpu"]]
        row = ServingRow("decode", VIDUR_MODELS[r["model"]], gpu, int(r["tp"]), "fp16", 1, 1, 1, 0.0, "Vidur")
        tokens = int(r["num_tokens"])
        predicted = sum(replica_cost(row).weight_matmuls_s(tokens)) * 1e3
        measured = sum(float(r[f"{op}_median_ms"]) for op in GEMM_OPS)
        e = (predicted - measured) / measured
        errors.append(abs(e))
        if int(r["tp"]) in (1, 4, 8) and tokens in (1, 256, 4096):
            print(f"| {r['model']} | {r['gpu']} | {r['tp']} | {tokens} | {measured:.3f} | {predicted:.3f} | "
                  f"{100 * e:+.1f}% |")
    print(f"\nmean |error| over all {len(errors)} rows (TP 1/2/4/8, 1/16/64/256/1024/4096 tokens; TP 1/4/8 at 1, 256 and "
          f"4096 shown): {100 * sum(errors) / len(errors):.1f}%\n")


def _row(label: str, result, seconds: float) -> str:
    m = result.plan.metrics
    used = ", ".join(f"{n} {g}" for g, n in m["gpus_used"].items())
    roles = sorted({r.config.label() for r in result.solution.replicas})
    return (f"| {label} | {result.plan.method} | {used} | {m['cost_per_hour']:.2f} | {m['served_rps']:.2f} | "
            f"{m.get('goodput_per_dollar', 0):.0f} | {100 * m['slo_attainment']:.1f}% | {seconds:.1f} | "
            f"{'; '.join(roles)} |")


def mixed_table() -> None:
    model = MODEL_PRESETS["llama3-70b"]
    topo = parse_topology(MIXED, "mixed")
    print("| rate rps | method | GPUs | $/h | capacity rps | requests per $ | attainment | s | replicas |")
    print("|---|---|---|---|---|---|---|---|---|")
    setup = None
    for rate in RATES:
        w = parse_serve_workload({"mode": "serve", "prompt_tokens": 1024, "output_tokens": 256, "rate_rps": rate,
                                  "distribution": "exponential", "prices": PRICES, **SLO})
        problem = serving_problem(model, w, topo, {})
        if setup is not None:  # the capacities do not depend on the rate: computed once
            object.__setattr__(problem, "setup", setup)
        for method in ("milp", "homogeneous", "greedy"):
            started = time.perf_counter()
            try:
                result = plan_serving(problem, method, time_limit_s=60)
            except InfeasibleError as exc:
                print(f"| {rate:g} | {method} | - | - | - | - | - | {time.perf_counter() - started:.1f} | {exc} |")
                continue
            print(_row(f"{rate:g}", result, time.perf_counter() - started))
        setup = problem.setup
    print("(the first rate's seconds include simulating every configuration's capacity)\n")


def moe_table() -> None:
    model = MODEL_PRESETS["deepseek-v3"]
    topo = load_topology("hgx-h200x4")
    print("| roles | method | GPUs | $/h | capacity rps | requests per $ | attainment | s | replicas |")
    print("|---|---|---|---|---|---|---|---|---|")
    for roles in ("colocated", "disaggregated", "any"):
        w = parse_serve_workload({"mode": "serve", "prompt_tokens": 2048, "output_tokens": 512, "rate_rps": 6,
                                  "distribution": "exponential", "prices": PRICES, "dtype": "fp8", "roles": roles,
                                  "ttft_slo_s": 2.0, "tpot_slo_s": 0.08, "slo_quantile": 0.9})
        problem = serving_problem(model, w, topo, {})
        started = time.perf_counter()
        result = plan_serving(problem, "auto", time_limit_s=60)
        print(_row(roles, result, time.perf_counter() - started))
    print()


def main() -> None:
    run_tables(__doc__, {"accuracy": (accuracy_table, vidur_table), "mixed": (mixed_table,), "moe": (moe_table,)})


if __name__ == "__main__":
    main()
