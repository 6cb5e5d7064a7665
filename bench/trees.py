"""Spanning-tree packing (`--method trees`): quality against the bound and ring, and
synthesis time by cluster size.

    python -m bench.trees              # both tables (tens of minutes on 2 cores)
    python -m bench.trees --quality    # table 1 only
    python -m bench.trees --scaling    # table 2 only
    python -m bench.trees --forest packing   # the edge-splitting + Lovasz packing forests

Table 1: allgather, reduce-scatter and allreduce at 1 GiB. `rate/LP` is the packing's
steady-state rate over the throughput LP's optimum (the bandwidth term; 1.000 = optimal);
`LP/cut` how much tighter the LP is than the plain min-cut bound (switches cannot copy);
`trees/bound` and `ring/bound` the simulated times over the bound (LP-tightened).
Table 2: synthesis time (median of 3) of the allgather forest on rail-optimized HGX H100
clusters up to 1024 GPUs, split into the throughput LP and what builds the trees from it
(column generation, or splitting + packing), stopping after a size takes more than
--limit s. `|G|` is the order of the server symmetry both reduce by (one root per orbit);
`trees` counts the whole forest, `base` the trees solved for.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.simulator import simulate
from solvers import baselines
from models.forest import gather_forest
from models.tree_packing import tree_schedule
from topologies.io import load_topology
from topologies.routing import Router

HERE = Path(__file__).parent
QUALITY = ["dgx-a100", "mi250", "dgx-a100x2", "dgx-a100x4", "mi250x2", "hgx-h100x4", str(HERE / "data" / "fat-tree-64.yaml")]
KINDS = ["allgather", "reduce-scatter", "allreduce"]
SIZE = 1 << 30


def quality(names: list[str], budget: int, forest: str) -> None:
    print("| topology | collective | synth s | trees | depth | rate/LP | LP/cut | trees/bound | ring/bound | transfers |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        topo = load_topology(name)
        router = Router(topo)
        label = Path(name).stem
        for kind in KINDS:
            coll = Collective(kind, topo.num_gpus, SIZE)
            t0 = time.perf_counter()
            sched = tree_schedule(coll, topo, budget=budget, forest=forest)  # first: it solves the LP the bound reuses
            synth = time.perf_counter() - t0
            bound = lower_bound(coll, topo)
            sim = simulate(sched, topo, router)
            p = dict(sched.params)
            up = "up_" if kind == "allreduce" else ""
            rate = p[up + "rate_GBps_per_gpu"] / p[up + "lp_rate_GBps_per_gpu"]
            lp_cut = p[up + "lp_rate_GBps_per_gpu"] / p[up + "cut_rate_GBps_per_gpu"]
            ring = simulate(baselines.ring(coll, topo, router=router), topo, router)
            print(f"| {label} | {kind} | {synth:.2f} | {p['trees']} | {p['max_depth']} | {rate:.4f} | {lp_cut:.4f} | "
                  f"{sim.time_us / bound.time_us:.3f} | {ring.time_us / bound.time_us:.3f} | {len(sched.transfers)} |",
                  flush=True)


def scaling(sizes: list[int], limit: float, forest: str) -> None:
    print("| GPUs | servers | median s | LP s | trees from LP s | |G| | trees | base | depth | rounds | rate/LP |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for servers in sizes:
        name = f"hgx-h100x{servers}" if servers > 1 else "hgx-h100"
        runs = []
        for _ in range(3):
            topo = load_topology(name)  # fresh: the LP is kept on a topology once solved
            t0 = time.perf_counter()
            found = gather_forest(topo, method=forest)
            runs.append((time.perf_counter() - t0, found))
            if runs[-1][0] > limit:
                break
        secs = statistics.median(r[0] for r in runs)
        st = runs[-1][1].stats
        rate = float(runs[-1][1].rate_mbps) / runs[-1][1].lp_rate_mbps
        print(f"| {topo.num_gpus} | {servers} | {secs:.2f} | {st['lp_seconds']:.2f} | "
              f"{st['seconds'] - st['lp_seconds']:.2f} | {st.get('symmetry', 1)} | {st['trees']} | "
              f"{len(runs[-1][1].base_trees)} | {st['max_depth']} | {st.get('columns_rounds', '-')} | {rate:.4f} |",
              flush=True)
        if secs > limit:
            print(f"(stopped: {topo.num_gpus} GPUs took more than {limit:.0f} s)")
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--budget", type=int, default=200_000, help="transfers per trees schedule")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds after which scaling stops")
    ap.add_argument("--topology", action="append", help="table 1 topologies (default: the issue's list)")
    ap.add_argument("--forest", choices=["columns", "packing"], default="columns",
                    help="how the trees are found from the throughput LP")
    ap.add_argument("--servers", type=int, action="append", help="table 2 cluster sizes in servers")
    args = ap.parse_args()
    both = not (args.quality or args.scaling)
    if args.quality or both:
        quality(args.topology or QUALITY, args.budget, args.forest)
    if args.scaling or both:
        scaling(args.servers or [1, 2, 4, 8, 16, 32, 64, 128], args.limit, args.forest)


if __name__ == "__main__":
    main()
