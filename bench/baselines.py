"""Baseline collectives on the presets: quality against the bound and the cost of each stage.

Run: `python -m bench.baselines [--size 1GiB] [--topologies dgx-a100,hgx-h100x2,...]`
Prints one table row per (topology, collective): simulated time, algbw, lower bound, ratio
to bound, and seconds spent building the schedule, simulating it and computing the bound.
"""
from __future__ import annotations

import argparse
import time

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.kinds.collective import COLLECTIVE, collective_problem
from planner.search import run_method
from planner.report import comparison_table
from planner.simulator import simulate
from planner.core.units import parse_size
from topologies.io import load_topology

DEFAULT_TOPOLOGIES = "dgx1,dgx-a100,mi250,mi300x,dgx-a100x2,hgx-h100x2,hgx-h100x4,mi300xx4,hgx-h100x8"
COLLECTIVES = ("allgather", "reduce-scatter", "allreduce", "broadcast", "alltoall")
COLUMNS = (("topology", "topology", "{}"), ("collective", "collective", "{}"), ("method", "method", "{}"),
           ("algbw_GBps", "algbw (GB/s)", "{:.1f}"), ("ratio_to_bound", "ratio to bound", "{:.3f}"),
           ("transfers", "transfers", "{}"), ("build_s", "build (s)", "{:.3f}"), ("simulate_s", "simulate (s)", "{:.3f}"),
           ("bound_s", "bound (s)", "{:.3f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--topologies", default=DEFAULT_TOPOLOGIES)
    ap.add_argument("--collectives", default=",".join(COLLECTIVES))
    args = ap.parse_args()
    size = parse_size(args.size)
    rows = []
    for name in args.topologies.split(","):
        topo = load_topology(name)
        for kind in args.collectives.split(","):
            coll = Collective(kind, topo.num_gpus, size)
            problem = collective_problem(coll, topo, name)
            for m in COLLECTIVE.methods:  # the heuristics that apply here
                if not (m.heuristic and m.handles(problem)) or m.applies(problem):
                    continue
                method = m.name
                t0 = time.perf_counter()
                schedule = run_method(COLLECTIVE, method, problem).solution
                t1 = time.perf_counter()
                sim = simulate(schedule, topo, problem.router)
                t2 = time.perf_counter()
                bound = lower_bound(coll, topo)
                t3 = time.perf_counter()
                rows.append({"topology": name, "collective": kind, "method": method,
                             "algbw_GBps": size / sim.time_us / 1e3, "ratio_to_bound": sim.time_us / bound.time_us,
                             "transfers": sim.transfers, "build_s": t1 - t0, "simulate_s": t2 - t1,
                             "bound_s": t3 - t2})
                print(comparison_table(rows[-1:], columns=COLUMNS).splitlines()[-1], flush=True)
    print()
    print(comparison_table(rows, title=f"baselines at {args.size} per GPU", columns=COLUMNS))


if __name__ == "__main__":
    main()
