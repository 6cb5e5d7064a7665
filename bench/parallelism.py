"""Training parallelism plans: the cost model against published runs, and the plans asked for.

    python -m bench.parallelism                  # every table
    python -m bench.parallelism --calibration    # tables 1-2: calibration and published runs
    python -m bench.parallelism --plans          # table 3: Llama-3-70B, Mixtral-8x22B, Llama-3-405B
    python -m bench.parallelism --stages         # table 4: the stage MILP on a mixed H100 + A100 cluster

Table 1: the one calibrated constant (planner/training/efficiency.py SUSTAINED), re-derived
from Korthikanti et al. 2022 Table 4, and the model's per-layer times beside theirs.
Table 2: every published run of planner/training/calibration.py, predicted (the grid's best
configuration with the published fields fixed; the rest searched) and, where the authors'
scripts give micro-batch and interleaving, "as run" with those fixed too; error per row.
Table 3: the plans (global batch 1024 x 8192 tokens, bf16): the chosen one and the next
four, search time, and the Megatron arguments of the chosen one.
Table 4: Llama-3-70B on 4 hgx-h100 + 8 dgx-a100 servers: the MILP's uneven stages against the
grid's split of the same configuration (even, or Megatron's uneven first/last).
"""
from __future__ import annotations

import time

from bench import run_tables
from planner.core.training import TrainWorkload
from planner.core.transformer import MODEL_PRESETS
from planner.kinds.parallelism import plan_training, training_problem
from planner.training import efficiency
from planner.training.calibration import TABLE4, predicted, published_runs, sustained_fraction, table4_layers
from planner.training.cost import TrainingSetup
from planner.training.search import grid_search
from topologies.io import load_topology, parse_topology

PLAN_WORKLOAD = TrainWorkload(1024, 8192)
MIXED = {"name": "4xhgx-h100+8xdgx-a100",
         "generator": {"servers": [{"preset": "hgx-h100", "count": 4}, {"preset": "dgx-a100", "count": 8}]}}


def calibration_table() -> None:
    print(f"SUSTAINED stored {efficiency.SUSTAINED:.4f}, re-derived from Korthikanti et al. 2022 Table 4: "
          f"{sustained_fraction():.4f}\n")
    print("| setting (22B layer, TP 8, micro-batch 4) | measured fwd / bwd ms | model fwd / bwd ms |")
    print("|---|---|---|")
    for (recompute, sp, fwd, bwd), row in zip(TABLE4, table4_layers()):
        print(f"| recompute {recompute}{', sequence parallel' if sp else ''} | {fwd} / {bwd} | "
              f"{row[0]:.2f} / {row[1]:.2f} |")
    print()


def published_table() -> None:
    print("| source | model | GPUs | published | predicted | error | as run | error | configuration chosen | "
          "search s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    errors: dict[str, list[tuple[float, float | None]]] = {}
    for run in published_runs():
        topo = load_topology(run.topology)
        setup = TrainingSetup(run.model_spec(), run.workload, topo)
        started = time.perf_counter()
        out = grid_search(setup, run.fix)
        seconds = time.perf_counter() - started
        if not out.ranked:
            print(f"| {run.source} | {run.model} | {topo.num_gpus} | {run.value} | does not fit | | | | | |")
            continue
        best = out.ranked[0]
        value = predicted(run, best)
        error = (value - run.value) / run.value
        as_run_cell, as_run_error = "", None
        if run.as_run:
            again = grid_search(setup, {**run.fix, **run.as_run})
            if again.ranked:
                v2 = predicted(run, again.ranked[0])
                as_run_error = (v2 - run.value) / run.value
                as_run_cell = f"{v2:.2f} | {100 * as_run_error:+.1f}%"
        errors.setdefault(run.source, []).append((error, as_run_error))
        c = best.config
        print(f"| {run.source} | {run.model} | {topo.num_gpus} | {run.value:g} {run.metric} | {value:.2f} | "
              f"{100 * error:+.1f}% | {as_run_cell or ' | '} | mb {c.micro_batch} v {c.interleave} {c.recompute} | "
              f"{seconds:.1f} |", flush=True)
    print("\n| source | rows | mean abs error (searched) | max | mean abs error (as run) | max |")
    print("|---|---|---|---|---|---|")
    for source, rows in errors.items():
        searched = [abs(e) for e, _ in rows]
        run = [abs(e) for _, e in rows if e is not None]
        cells = f"{100 * sum(run) / len(run):.1f}% | {100 * max(run):.1f}%" if run else "- | -"
        print(f"| {source} | {len(rows)} | {100 * sum(searched) / len(searched):.1f}% | {100 * max(searched):.1f}% | "
              f"{cells} |")
    print()


def plans_table() -> None:
    cases = [("llama3-70b", "dgx-a100x8"), ("llama3-70b", "hgx-h100x16"), ("mixtral-8x22b", "dgx-a100x8"),
             ("mixtral-8x22b", "hgx-h100x16"), ("llama3-405b", "hgx-h100x256")]
    for model, topology in cases:
        problem = training_problem(MODEL_PRESETS[model], PLAN_WORKLOAD, load_topology(topology), {}, top=5,
                                   topology_name=topology)
        started = time.perf_counter()
        result = plan_training(problem, "auto", time_limit_s=10.0)
        seconds = time.perf_counter() - started
        doc = result.plan.to_json()
        m = doc["metrics"]
        print(f"### {model} on {topology} ({problem.topology.num_gpus} GPUs): method {doc['method']}, "
              f"search {seconds:.1f} s, {m.get('configurations_considered', '-')} configurations\n")
        print("| rank | tp | pp | dp | cp | ep | mb | v | recompute | sp | do | step s | MFU | GB/GPU |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = [{"config": doc["plan"]["config"], **m}] + m.get("top", [])
        for i, row in enumerate(rows, 1):
            c = row["config"]
            print(f"| {i} | {c['tp']} | {c['pp']} | {c['dp']} | {c['cp']} | {c['ep']} | {c['micro_batch']} | "
                  f"{c['interleave']} | {c['recompute']} | {int(c['sequence_parallel'])} | "
                  f"{int(c['distributed_optimizer'])} | {row['step_time_s']:.2f} | {row['mfu']:.3f} | "
                  f"{row['memory_per_gpu_GB']:.1f} |")
        if m.get("why_best"):
            print(f"\nwhy: {m['why_best']}")
        print("\nlayers per stage:", doc["plan"]["layers_per_stage"])
        print("\n```\n" + " \\\n".join(doc["plan"]["megatron_args"]) + "\n```\n", flush=True)


def stages_table() -> None:
    topo = parse_topology(MIXED, MIXED["name"])
    print("| model | cluster | configuration | grid's best (even splits) s | this configuration, grid's split s | "
          "MILP split s | gain over even | layers per stage | solver |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fix in ({}, {"pp": 12, "tp": 8, "interleave": 1}):
        problem = training_problem(MODEL_PRESETS["llama3-70b"], PLAN_WORKLOAD, topo, fix, top=5,
                                   topology_name=MIXED["name"])
        result = plan_training(problem, "milp", time_limit_s=10.0)
        doc = result.plan.to_json()
        m, c, s = doc["metrics"], doc["plan"]["config"], doc["solver"]
        even = m.get("default_split_step_time_s")
        gain = f"{100 * (even - m['step_time_s']) / even:.1f}%" if even else "-"
        grid = m.get("candidates", {}).get("grid")
        print(f"| llama3-70b | {MIXED['name']} | tp {c['tp']} pp {c['pp']} dp {c['dp']} cp {c['cp']} mb "
              f"{c['micro_batch']} {c['recompute']}{' (fixed ' + str(fix) + ')' if fix else ''} | "
              f"{'-' if grid is None else f'{grid:.2f}'} | {'-' if even is None else f'{even:.2f}'} | "
              f"{m['step_time_s']:.2f} | {gain} | "
              f"{doc['plan']['layers_per_stage']} | {s['name'] + ' ' + s['status'] if s else '-'} |", flush=True)
    print()


def main() -> None:
    run_tables(__doc__, {"calibration": (calibration_table, published_table), "plans": (plans_table,),
                         "stages": (stages_table,)})


if __name__ == "__main__":
    main()
