"""Latency-bound collectives: the MILP method (best of baselines and the time-expanded model) vs every baseline.

Run: `python -m bench.small_messages [--topologies dgx1,dgx-a100x2] [--sizes 1KiB,64KiB]
[--time-limit 60]`. SIZE is per GPU (the block). Prints each method's simulated time, what
auto returned, the ratio to the lower bound, and the MILP's status, gap, model size and
solve seconds.
"""
from __future__ import annotations

import argparse
import time

from planner.core.collectives import Collective
from planner.kinds.collective import plan_collective
from planner.report import comparison_table
from planner.core.units import parse_size
from topologies.io import load_topology

COLUMNS = (("topology", "topology", "{}"), ("collective", "collective", "{}"), ("per_gpu", "per GPU", "{}"),
           ("auto", "returned", "{}"), ("auto_us", "returned (us)", "{:.2f}"), ("best_baseline", "best baseline", "{}"),
           ("baseline_us", "baseline (us)", "{:.2f}"), ("ratio_to_bound", "returned / bound", "{:.3f}"),
           ("milp_status", "milp status", "{}"), ("milp_gap", "gap", "{}"), ("milp_vars", "milp vars", "{}"),
           ("milp_s", "solve (s)", "{:.2f}"), ("wall_s", "total (s)", "{:.1f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topologies", default="dgx1,dgx-a100x2")
    ap.add_argument("--sizes", default="1KiB,64KiB")
    ap.add_argument("--collectives", default="allgather,reduce-scatter,allreduce,broadcast")
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    rows = []
    for name in args.topologies.split(","):
        topo = load_topology(name)
        for size_text in args.sizes.split(","):
            per_gpu = parse_size(size_text)
            for kind in args.collectives.split(","):
                size = per_gpu * topo.num_gpus if kind != "broadcast" else per_gpu
                t0 = time.perf_counter()
                plan = plan_collective(Collective(kind, topo.num_gpus, size), topo, "milp",
                                       time_limit_s=args.time_limit).plan
                wall = time.perf_counter() - t0
                baselines = {m: t for m, t in plan.metrics["candidates"].items() if m != "milp"}
                best = min(baselines, key=baselines.get)
                solver = plan.solver or plan.metrics.get("milp_model", {}).get("solver") or {}
                gap = solver.get("gap")
                rows.append({"topology": name, "collective": kind, "per_gpu": size_text, "auto": plan.method,
                             "auto_us": plan.metrics["time_us"], "best_baseline": best,
                             "baseline_us": baselines[best], "ratio_to_bound": plan.metrics["ratio_to_bound"],
                             "milp_status": solver.get("status", "-"),
                             "milp_gap": "-" if gap is None else f"{gap:.3f}",
                             "milp_vars": plan.metrics.get("milp_model", {}).get("variables", "-"),
                             "milp_s": solver.get("seconds", 0.0), "wall_s": wall})
                print(comparison_table(rows[-1:], columns=COLUMNS).splitlines()[-1], flush=True)
    print()
    print(comparison_table(rows, title="small messages: auto (with the MILP) vs baselines", columns=COLUMNS))


if __name__ == "__main__":
    main()
