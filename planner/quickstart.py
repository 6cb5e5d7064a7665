"""`planner quickstart`: the baseline collectives on a default cluster, end to end."""
from __future__ import annotations

import json
from pathlib import Path

from planner.core.collectives import Collective
from planner.kinds.collective import plan_collective
from planner.core.plan import dumps, write_plan, write_text_atomic
from planner.report import comparison_table
from planner.core.units import parse_size
from topologies.io import load_topology

QUICKSTART_COLLECTIVES = ("allgather", "reduce-scatter", "allreduce", "broadcast", "alltoall")


def run_quickstart(topo_arg: str, size_arg: str, out_dir: str, reproducible: bool = False) -> dict:
    topo = load_topology(topo_arg)
    size = parse_size(size_arg, field="--size")
    out = Path(out_dir)
    label = Path(topo_arg).stem if Path(topo_arg).suffix else topo_arg
    collectives = [Collective(kind, topo.num_gpus, size).require_whole_blocks() for kind in QUICKSTART_COLLECTIVES]
    rows = []
    plans = []
    for coll in collectives:
        kind = coll.kind
        result = plan_collective(coll, topo, "auto", topology_name=topo_arg)
        name = f"{kind}-{label}.plan.json"
        plans.append((out / name, result.plan))
        doc = result.plan.to_json(reproducible)
        rows.append({"collective": kind, "method": doc["method"], "plan_file": name, **{
            k: doc["metrics"][k] for k in ("time_us", "algbw_GBps", "lower_bound_us", "ratio_to_bound",
                                           "synthesis_seconds")}})
    table = comparison_table(rows, title=f"planner quickstart: {topo_arg} ({topo.num_gpus} GPUs), "
                                           f"{size_arg} per GPU")
    report = {"topology": topo_arg, "gpus": topo.num_gpus, "size_bytes": size, "rows": rows, "table": table}
    # Written only once every plan was made: a failure leaves no partial output.
    for path, plan in plans:
        write_plan(plan, path, reproducible)
    write_text_atomic(out / "report.md", table + "\n")
    write_text_atomic(out / "report.json", dumps({k: v for k, v in report.items() if k != "table"}))
    return json.loads(dumps(report)) if reproducible else report
