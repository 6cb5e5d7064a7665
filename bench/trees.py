"""Spanning-tree packing (`--method trees`): quality against the bound, the baselines and
what `auto` returns, and synthesis time by cluster size.

    python -m bench.trees              # both tables (an hour or more on 2 cores)
    python -m bench.trees --quality    # table 1 only (--size 64MiB --size 16MiB for more sizes)
    python -m bench.trees --scaling    # table 2 only
    python -m bench.trees --forest packing   # the edge-splitting + Lovasz packing forests

Table 1: allgather, reduce-scatter and allreduce (1 GiB unless --size). Each row runs the
planner's own search (`auto`: what it returns, and the baselines' simulated times from its
plan) and `--method trees` (the full loop; auto runs a shorter one, every run simulated). `rate/LP` is the forest's steady-state
rate over the throughput LP's optimum (the bandwidth term; 1.000 = optimal), `units` the
rate lost to whole units (models/tree_units.py), `LP/cut` how much tighter the LP is than
the plain min-cut bound; the times are simulated, over the bound (LP-tightened).
`periodic` is how many runs of the loop body were simulated (all: every run); `synth s`
and `sim s` the trees method's synthesis and simulation seconds, `auto s` the whole search.
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

from planner.core.collectives import Collective
from planner.core.units import parse_size
from planner.kinds.collective import plan_collective
from planner.simulator import simulate
from models.forest import gather_forest
from models.tree_packing import tree_schedule
from topologies.io import load_topology
from topologies.routing import Router

HERE = Path(__file__).parent
QUALITY = ["dgx-a100x2", "dgx-a100x4", "hgx-h100x2", "hgx-h100x4", "mi250x2", str(HERE / "data" / "fat-tree-64.yaml")]
KINDS = ["allgather", "reduce-scatter", "allreduce"]


def quality(names: list[str], sizes: list[int], forest: str | None) -> None:
    print("| topology | size | collective | trees | depth | Q | loops | rate/LP | units | LP/cut | "
          "trees/bound | ring/bound | hierarchical/bound | tree/bound | auto returns | synth s | sim s | periodic | auto s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        topo = load_topology(name)
        router = Router(topo)
        label = Path(name).stem
        for size in sizes:
            for kind in KINDS:
                coll = Collective(kind, topo.num_gpus, size)
                t0 = time.perf_counter()
                # a fresh topology: nothing the trees method solved is kept for auto
                result = plan_collective(coll, load_topology(name), "auto", topology_name=label)
                auto_s = time.perf_counter() - t0
                times = dict(result.plan.metrics["candidates"])
                bound = result.plan.metrics["lower_bound_us"]
                t0 = time.perf_counter()
                sched = tree_schedule(coll, topo, forest=forest)  # `--method trees`: the full loop
                synth = time.perf_counter() - t0
                t0 = time.perf_counter()
                runs = simulate(sched, topo, router)
                simulated = time.perf_counter() - t0
                times["trees"] = runs.time_us
                p = dict(sched.params)
                up = "up_" if kind == "allreduce" else ""
                rate = p[up + "rate_GBps_per_gpu"] / p[up + "lp_rate_GBps_per_gpu"]
                units = p[up + "rate_GBps_per_gpu"] / p[up + "units_rate_GBps_per_gpu"]
                lp_cut = p[up + "lp_rate_GBps_per_gpu"] / p[up + "cut_rate_GBps_per_gpu"]

                def r(m: str) -> str:
                    return f"{times[m] / bound:.3f}" if m in times else "-"
                periodic = "all" if runs.period_us == 0 else f"{runs.runs_simulated} of {sched.loops}"
                print(f"| {label} | {_size(size)} | {kind} | {p['trees']} | {p['max_depth']} | {p['units_per_block']} | "
                      f"{sched.loops} | {rate:.4f} | {units:.4f} | {lp_cut:.4f} | {r('trees')} | {r('ring')} | "
                      f"{r('hierarchical')} | {r('tree')} | {result.plan.method} {result.plan.metrics['ratio_to_bound']:.3f} | "
                      f"{synth:.1f} | {simulated:.1f} | {periodic} | {auto_s:.1f} |", flush=True)


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


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
    ap.add_argument("--size", action="append", help="table 1 message sizes (default 1GiB)")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds after which scaling stops")
    ap.add_argument("--topology", action="append", help="table 1 topologies (default: the issue's list)")
    ap.add_argument("--forest", choices=["columns", "packing"], default=None,
                    help="how the trees are found from the throughput LP")
    ap.add_argument("--servers", type=int, action="append", help="table 2 cluster sizes in servers")
    args = ap.parse_args()
    both = not (args.quality or args.scaling)
    if args.quality or both:
        quality(args.topology or QUALITY, [parse_size(x) for x in args.size or ["1GiB"]], args.forest)
    if args.scaling or both:
        scaling(args.servers or [1, 2, 4, 8, 16, 32, 64, 128], args.limit, args.forest or "columns")


if __name__ == "__main__":
    main()
