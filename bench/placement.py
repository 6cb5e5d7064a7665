"""GPU placement: Arnold's simulated settings, and a large cluster.

    python -m bench.placement              # every table
    python -m bench.placement --arnold     # table 1: Arnold's three settings, 0% and 30% of nodes busy
    python -m bench.placement --large      # table 2: 1,024 nodes (8,192 GPUs), job TP8 PP16 DP48
    python -m bench.placement --oversubscribed   # table 3: setting (ii) with 2:1 and 4:1 uplinks
    python -m bench.placement --shared     # table 4: sharing nodes (mix nodes), GB200 NVL72 racks

Clusters are Slurm topology.conf trees of 8-GPU hgx-h100 nodes (Arnold's are 8-GPU H800
nodes): nodes spread evenly over the spine domains ("minipods"), leaves of at most 32
nodes, one core switch above the spines; busy nodes drawn at seeded random (numpy PCG64,
seed 0). Arnold (arXiv 2509.15940) settings: (i) 3 spine domains, 18 nodes, DP12 TP4 PP2;
(ii) 5 domains, 438 nodes, DP24 TP4 PP8; (iii) 11 domains, 1019 nodes, DP46 TP8 PP8.
Arnold does not name the models; the per-step bytes come from ones that fit each shape
(llama2-13b, llama3-70b, gpt3-175b, llama3-405b for the large job; planner/core/placement.py
`derived_bytes`), 4096-token sequences, micro-batch 1, 4 x pp micro-batches per DP rank.
"ms/step" is the predicted per-step communication time of each kind's most spread group,
priced by the collective planner on the GPUs it gets (DP all-reduce + one PP copy).
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
SETTINGS = (("i", 3, 18, {"dp": 12, "tp": 4, "pp": 2}, "llama2-13b"),
            ("ii", 5, 438, {"dp": 24, "tp": 4, "pp": 8}, "llama3-70b"),
            ("iii", 11, 1019, {"dp": 46, "tp": 8, "pp": 8}, "gpt3-175b"))
SEQ_LEN = 4096
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


def job(parallel: dict, model: str):
    batch = parallel["dp"] * 4 * parallel["pp"]
    return parse_job({"parallel": parallel, "model": model,
                      "workload": {"seq_len": SEQ_LEN, "global_batch": batch, "micro_batch": 1}})


def cluster(spines: int, nodes: int, busy: float, oversubscription: float = 1.0):
    folder = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    (folder / "topology.conf").write_text(tree_conf(spines, nodes))
    rng = np.random.Generator(np.random.PCG64(0))
    taken = set(rng.choice(nodes, size=int(round(busy * nodes)), replace=False).tolist()) if busy else set()
    (folder / "state.txt").write_text("".join(f"n{i:04d} {'alloc' if i in taken else 'idle'}\n" for i in range(nodes)))
    return slurm_topology(str(folder / "topology.conf"), "hgx-h100", str(folder / "state.txt"), oversubscription)


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
    gap = f"{solver['gap']:.2f}" if solver and solver["gap"] is not None else "-"
    status = f"{solver['status']}, gap {gap}" if solver else "-"
    ms = m.get("comm_time_per_step_s", 0.0) * 1e3
    return (f"| {label} | {doc['method']} | {cell} | {ms:.1f} | {m['score']:.2f} ({m['time_points']:.2f}) | "
            f"{m['lower_bound_score']:.2f} | {status} | {seconds:.1f} |")


HEADER = ("| setting | method | DP max leaf | DP max spine | PP max leaf | PP max spine | ms/step | score (time) | bound "
          "| solver | s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def arnold_table() -> None:
    print(HEADER)
    for name, spines, nodes, parallel, model in SETTINGS:
        for busy in (0.0, 0.3):
            topo = cluster(spines, nodes, busy)
            problem = placement_problem(job(parallel, model), topo, f"({name})")
            for method in METHODS:
                print(_row(f"({name}) {spines} domains, {nodes} nodes, {busy:.0%} busy", problem, method, 60.0))
    print()


def large_table() -> None:
    print(HEADER)
    for busy in (0.3, 0.25):
        topo = cluster(8, 1024, busy)
        try:
            problem = placement_problem(job({"tp": 8, "pp": 16, "dp": 48}, "llama3-405b"), topo, "8192")
        except InfeasibleError as exc:
            print(f"| 1024 nodes, {busy:.0%} busy | all | infeasible: {exc} |")
            continue
        for method in ("greedy", "milp"):
            print(_row(f"1024 nodes, {busy:.0%} busy", problem, method, 120.0))
    print()


def oversubscribed_table() -> None:
    """Setting (ii), 30% busy, with leaf and spine uplinks carrying 1/2 and 1/4 of what
    they serve: the time points start to matter."""
    print(HEADER)
    name, spines, nodes, parallel, model = SETTINGS[1]
    for ratio in (2.0, 4.0):
        problem = placement_problem(job(parallel, model), cluster(spines, nodes, 0.3, ratio), f"({name})")
        for method in METHODS:
            print(_row(f"({name}) 30% busy, {ratio:g}:1 uplinks", problem, method, 60.0))
    print()


SHARED_HEADER = ("| setting | method | DP max per tier | PP max per tier | ms/step | score (time) | bound | nodes used "
                 "| free GPUs fragmented | solver | s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _shared_row(label: str, problem, method: str) -> str:
    started = time.perf_counter()
    doc = plan(PLACEMENT, problem, method, Options(60.0)).plan.to_json()
    seconds = time.perf_counter() - started
    m = doc["metrics"]
    cells = [" / ".join(f"{t} {v['max']}" for t, v in m["spread"].get(k, {}).items()) or "-" for k in ("dp", "pp")]
    solver = doc["solver"]
    status = f"{solver['status']}, gap {solver['gap']:.2f}" if solver and solver["gap"] is not None else "-"
    return (f"| {label} | {doc['method']} | {cells[0]} | {cells[1]} | {m.get('comm_time_per_step_s', 0) * 1e3:.1f} | "
            f"{m['score']:.2f} ({m['time_points']:.2f}) | {m['lower_bound_score']:.2f} | {m['nodes_used']} | "
            f"{m['free_gpus_fragmented']} | {status} | {seconds:.1f} |")


def shared_table() -> None:
    """Setting (ii) with 30% of nodes busy and 20% `mix` (GPUs 4-7 free), the job taking
    whole nodes or sharing them; and 16 GB200 NVL72 racks (18 trays of 4 GPUs, two racks
    per leaf, two spine domains), 30% of trays busy, job TP8 PP4 DP16 (TP over two trays
    of one rack)."""
    print(SHARED_HEADER)
    name, spines, nodes, parallel, model = SETTINGS[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    (folder / "topology.conf").write_text(tree_conf(spines, nodes))
    rng = np.random.Generator(np.random.PCG64(0))
    order = rng.permutation(nodes).tolist()
    busy, mix = set(order[:int(0.3 * nodes)]), set(order[int(0.3 * nodes):int(0.5 * nodes)])
    (folder / "state.txt").write_text("".join(
        f"n{i:04d} {'alloc' if i in busy else 'mix 4-7' if i in mix else 'idle'}\n" for i in range(nodes)))
    topo = slurm_topology(str(folder / "topology.conf"), "hgx-h100", str(folder / "state.txt"))
    for whole in (True, False):
        batch = parallel["dp"] * 4 * parallel["pp"]
        shared_job = parse_job({"parallel": parallel, "model": model, "constraints": {"whole_nodes": whole},
                                "workload": {"seq_len": SEQ_LEN, "global_batch": batch}})
        problem = placement_problem(shared_job, topo, f"({name})")
        for method in METHODS:
            print(_shared_row(f"({name}) 30% busy, 20% mix, whole_nodes {str(whole).lower()}", problem, method))
    racks = 16
    conf = "".join(f"SwitchName=leaf{l} Nodes=t[{36 * l + 1:03d}-{36 * l + 36:03d}]\n" for l in range(racks // 2))
    conf += "".join(f"SwitchName=spine{s} Switches=leaf[{4 * s}-{4 * s + 3}]\n" for s in range(2))
    conf += "SwitchName=core Switches=spine[0-1]\n"
    (folder / "nvl72.conf").write_text(conf)
    trays = racks * 18
    taken = set(rng.choice(trays, size=int(0.3 * trays), replace=False).tolist())
    (folder / "nvl72.txt").write_text("".join(f"t{i + 1:03d} {'alloc' if i in taken else 'idle'}\n"
                                              for i in range(trays)))
    topo = slurm_topology(str(folder / "nvl72.conf"), "gb200-nvl72", str(folder / "nvl72.txt"))
    parallel = {"tp": 8, "pp": 4, "dp": 16}
    problem = placement_problem(job(parallel, "llama3-70b"), topo, "nvl72")
    for method in METHODS:
        print(_shared_row("16 NVL72 racks, 30% of trays busy", problem, method))
    print()


def main() -> None:
    run_tables(__doc__, {"arnold": (arnold_table,), "large": (large_table,),
                         "oversubscribed": (oversubscribed_table,), "shared": (shared_table,)})


if __name__ == "__main__":
    main()
