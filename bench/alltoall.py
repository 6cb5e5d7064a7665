"""All-to-all(v): FLASH-style stages against direct and SpreadOut, and flash's synthesis time.

    python -m bench.alltoall              # both tables
    python -m bench.alltoall --quality    # table 1: simulated time / bound per method
    python -m bench.alltoall --scaling    # table 2: flash synthesis time up to 128 servers
    python -m bench.alltoall --skew 1000  # flash on 1000 seeded skewed matrices (hgx-h100x4)

Table 1: each GPU sends --size bytes (default 256 MiB): uniform alltoall, and alltoallv
from the zipf generator (s = 0.8 and 1.2, seed 0; docs/traffic.md). Ratios are simulated
time over the lower bound (planner/bounds.py: the larger of bytes over max-flow egress /
ingress of every GPU and server — the cut bound — and the max-concurrent-flow LP, both
printed; the LP is skipped beyond 20,000 variables). lp and milp are the time-expanded
flow model (models/alltoall_flow.py, 60 s each) on up to 16 GPUs. Table 2: flash's synthesis on hgx-h100 clusters, median of 3:
the plan (stages and every rail's bytes per stage, `flash_plan`) from the traffic matrix;
then, up to 256 GPUs, its materialization into chunks and transfers (`flash_schedule`,
what the simulator and the exporters read).
"""
from __future__ import annotations

import argparse
import statistics
import time

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.simulator import simulate
from planner.core.traffic import traffic_from_spec
from planner.core.units import parse_size
from solvers.baselines import direct_alltoall, spreadout_alltoall
from solvers.hierarchical import hierarchical_alltoall
from models.alltoall_flow import time_expanded_schedule
from solvers.flash import flash_alltoall, flash_members, flash_plan, flash_schedule
from topologies.io import load_topology
from topologies.routing import Router

TOPOLOGIES = ["hgx-h100x2", "hgx-h100x4", "hgx-h100x16", "dgx-a100x8", "mi300xx4"]
TRAFFIC = ["uniform", "zipf:s=0.8,seed=0", "zipf:s=1.2,seed=0"]
METHODS = {"flash": flash_alltoall, "direct": direct_alltoall, "spreadout": spreadout_alltoall,
           "hierarchical": hierarchical_alltoall}


def collective_for(topo, traffic: str, size: int) -> Collective:
    if traffic == "uniform":
        return Collective("alltoall", topo.num_gpus, size - size % topo.num_gpus)
    return Collective("alltoallv", topo.num_gpus, 1, traffic=traffic_from_spec(traffic, topo.num_gpus, size))


def quality(names: list[str], size: int, exact_upto: int = 16) -> None:
    """Every method's simulated time over the bound; the time-expanded LP and MILP (60 s
    each) on clusters of up to `exact_upto` GPUs, with their status and gap."""
    names_all = list(METHODS) + ["lp", "milp"]
    print("| topology | traffic | cut bound us | flow LP bound us | " + " | ".join(names_all)
          + " | lp / milp status, gap, s | flash transfers |")
    print("|---|---|---|---|" + "---|" * len(names_all) + "---|---|")
    for name in names:
        topo = load_topology(name)
        router = Router(topo)
        for traffic in TRAFFIC:
            coll = collective_for(topo, traffic, size)
            bound = lower_bound(coll, topo)
            detail = dict(bound.detail)
            cells, count, notes = [], 0, []
            for method, build in METHODS.items():
                schedule = build(coll, topo)
                if method == "flash":
                    count = len(schedule.transfers)
                cells.append(f"{simulate(schedule, topo, router).time_us / bound.time_us:.4f}")
            for integral in (False, True):
                if topo.num_gpus > exact_upto:
                    cells.append("-")
                    continue
                t0 = time.perf_counter()
                out = time_expanded_schedule(coll, topo, router, integral=integral, time_limit_s=60)
                took = time.perf_counter() - t0
                r = out.result
                notes.append(f"{r.termination.value} {r.gap if r.gap is None else f'{r.gap:.2f}'} {took:.1f}")
                cells.append("-" if out.schedule is None else
                             f"{simulate(out.schedule, topo, router).time_us / bound.time_us:.4f}")
            flow = detail.get("flow_lp_bound_us")
            print(f"| {name} | {traffic} | {detail['cut_bound_us']:.1f} | {'-' if flow is None else f'{flow:.1f}'} | "
                  + " | ".join(cells) + f" | {' / '.join(notes) or '-'} | {count} |", flush=True)


def scaling(servers: list[int], size: int, materialize_upto: int = 256) -> None:
    print("| GPUs | servers | traffic | flash synthesis s (median of 3) | stages | materialize s | transfers |")
    print("|---|---|---|---|---|---|---|")
    for s in servers:
        topo = load_topology(f"hgx-h100x{s}")
        members = flash_members(topo)
        for traffic in ("uniform", "zipf:s=1.2,seed=0"):
            coll = collective_for(topo, traffic, size)
            matrix = coll.matrix  # the input, built outside the timing
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                plan = flash_plan(matrix, members)
                runs.append(time.perf_counter() - t0)
            made, count = "-", "-"
            if topo.num_gpus <= materialize_upto:
                coll.blocks
                t0 = time.perf_counter()
                schedule = flash_schedule(coll, plan)
                made, count = f"{time.perf_counter() - t0:.3f}", len(schedule.transfers)
            print(f"| {topo.num_gpus} | {s} | {traffic} | {statistics.median(runs):.4f} | {plan.num_stages} | "
                  f"{made} | {count} |", flush=True)


def skew(count: int, size: int, name: str = "hgx-h100x4") -> None:
    """Flash (and direct) over `count` seeded zipf matrices, s drawn in [0.5, 1.5] and
    experts per GPU in {1, 2, 4, 8} by the same seed: worst and median ratio to bound."""
    import numpy as np

    topo = load_topology(name)
    router = Router(topo)
    flash, direct, worst = [], [], None
    for seed in range(count):
        rng = np.random.default_rng(seed)
        spec = f"zipf:s={rng.uniform(0.5, 1.5):.3f},seed={seed},experts={int(rng.choice([1, 2, 4, 8]))}"
        coll = Collective("alltoallv", topo.num_gpus, 1, traffic=traffic_from_spec(spec, topo.num_gpus, size))
        bound = lower_bound(coll, topo).time_us
        flash.append(simulate(flash_alltoall(coll, topo), topo, router).time_us / bound)
        direct.append(simulate(direct_alltoall(coll, topo), topo, router).time_us / bound)
        if worst is None or flash[-1] > worst[0]:
            worst = (flash[-1], spec)
    print("| topology | matrices | flash worst | flash median | flash > 1.05 | direct median | worst spec |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {name} | {count} | {max(flash):.3f} | {statistics.median(flash):.3f} | "
          f"{sum(f > 1.05 for f in flash)} | {statistics.median(direct):.3f} | {worst[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--size", default="256MiB", help="bytes each GPU sends")
    ap.add_argument("--topology", action="append", help="table 1 topologies (default: the issue's list)")
    ap.add_argument("--servers", type=int, action="append", help="table 2 cluster sizes (default 2..128)")
    ap.add_argument("--skew", type=int, default=0, help="also run flash on this many seeded skewed matrices")
    args = ap.parse_args()
    size = parse_size(args.size, field="--size")
    if args.skew:
        skew(args.skew, size)
        if not (args.quality or args.scaling):
            return
    both = not (args.quality or args.scaling)
    if args.quality or both:
        quality(args.topology or TOPOLOGIES, size)
    if args.scaling or both:
        scaling(args.servers or [2, 4, 8, 16, 32, 64, 128], size)


if __name__ == "__main__":
    main()
