"""GPU placement: Arnold's simulated settings, and a large cluster.

    python -m bench.placement              # every table
    python -m bench.placement --arnold     # table 1: Arnold's three settings, 0% and 30% of nodes busy
    python -m bench.placement --large      # table 2: 1,024 nodes (8,192 GPUs), job TP8 PP16 DP48

Clusters are Slurm topology.conf trees of 8-GPU hgx-h100 nodes (Arnold's are 8-GPU H800
nodes): nodes spread evenly over the spine domains ("minipods"), leaves of at most 32
nodes, one core switch above the spines; busy nodes drawn at seeded random (numpy PCG64,
seed 0). Arnold (arXiv 2509.15940) settings: (i) 3 spine domains, 18 nodes, DP12 TP4 PP2;
(ii) 5 domains, 438 nodes, DP24 TP4 PP8; (iii) 11 domains, 1019 nodes, DP46 TP8 PP8.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import run_tables
from planner.core.errors import InfeasibleError
from planner.core.placement import parse_job
from planner.kind import Options
from planner.kinds.placement import PLACEMENT, placement_problem
from planner.search import plan
from topologies.slurm import slurm_topology

LEAF_NODES = 32
SETTINGS = (("i", 3, 18, {"dp": 12, "tp": 4, "pp": 2}), ("ii", 5, 438, {"dp": 24, "tp": 4, "pp": 8}),
            ("iii", 11, 1019, {"dp": 46, "tp": 8, "pp": 8}))
METHODS = ("milp", "greedy", "best-fit", "random", "linear")


def tree_conf(spines: int, nodes: int) -> str:
    lines, n = [], 0
    for s in range(spines):
        count = nodes // spines + (1 if s < nodes % spines else 0)
        leaves = math.ceil(count / LEAF_NODES)
        names = []
        for l in range(leaves):
            size = count // leaves + (1 if l < count % leaves else 0)
            leaf = f"s{s}l{l}"
            lines.append(f"SwitchName={leaf} Nodes=n[{n:04d}-{n + size - 1:04d}]")
            names.append(leaf)
            n += size
        lines.append(f"SwitchName=spine{s} Switches={','.join(names)}")
    lines.append(f"SwitchName=core Switches=spine[0-{spines - 1}]")
    return "\n".join(lines) + "\n"


def cluster(spines: int, nodes: int, busy: float):
    folder = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    (folder / "topology.conf").write_text(tree_conf(spines, nodes))
    rng = np.random.Generator(np.random.PCG64(0))
    taken = set(rng.choice(nodes, size=int(round(busy * nodes)), replace=False).tolist()) if busy else set()
    (folder / "state.txt").write_text("".join(f"n{i:04d} {'alloc' if i in taken else 'idle'}\n" for i in range(nodes)))
    return slurm_topology(str(folder / "topology.conf"), "hgx-h100", str(folder / "state.txt"))


def _row(label: str, problem, method: str, time_limit: float) -> str:
    started = time.perf_counter()
    try:
        result = plan(PLACEMENT, problem, method, Options(time_limit))
    except InfeasibleError as exc:
        return f"| {label} | {method} | infeasible: {exc} |"
    seconds = time.perf_counter() - started
    doc = result.plan.to_json()
    m = doc["metrics"]
    sp = m["spread"]
    cell = " | ".join(f"{sp.get(k, {}).get(t, {}).get('max', 0)}" for k in ("dp", "pp") for t in ("leaf", "spine"))
    solver = doc["solver"]
    status = f"{solver['status']}, gap {solver['gap'] if solver['gap'] is not None else '-'}" if solver else "-"
    return (f"| {label} | {doc['method']} | {cell} | {m['score']:.3f} | {m['lower_bound_score']:.3f} | {status} | "
            f"{seconds:.1f} |")


HEADER = ("| setting | method | DP max leaf | DP max spine | PP max leaf | PP max spine | score | bound | solver | s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def arnold_table() -> None:
    print(HEADER)
    for name, spines, nodes, parallel in SETTINGS:
        for busy in (0.0, 0.3):
            topo = cluster(spines, nodes, busy)
            problem = placement_problem(parse_job({"parallel": parallel}), topo, f"({name})")
            for method in METHODS:
                print(_row(f"({name}) {spines} domains, {nodes} nodes, {busy:.0%} busy", problem, method, 60.0))
    print()


def large_table() -> None:
    print(HEADER)
    for busy in (0.3, 0.2):
        topo = cluster(8, 1024, busy)
        try:
            problem = placement_problem(parse_job({"parallel": {"tp": 8, "pp": 16, "dp": 48}}), topo, "8192")
        except InfeasibleError as exc:
            print(f"| 1024 nodes, {busy:.0%} busy | all | infeasible: {exc} |")
            continue
        for method in ("greedy", "milp"):
            print(_row(f"1024 nodes, {busy:.0%} busy", problem, method, 120.0))
    print()


def main() -> None:
    run_tables(__doc__, {"arnold": (arnold_table,), "large": (large_table,)})


if __name__ == "__main__":
    main()
