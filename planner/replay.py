"""Re-evaluating a written plan: rebuild its schedule, verify it, time it, bound it."""
from __future__ import annotations

import json
from pathlib import Path

from planner.bounds import lower_bound, quality_metrics
from planner.core.collectives import Collective
from planner.core.errors import InputError, ScheduleError
from planner.core.schedule import schedule_from_json
from planner.core.plan import read_plan
from planner.simulator import simulate
from topologies.types import Topology


def collective_from_problem(problem: object, source: str) -> Collective:
    if not isinstance(problem, dict):
        raise InputError("expected a mapping", source=source, field="problem")
    try:
        traffic = problem.get("traffic")
        return Collective(problem["collective"], int(problem["ranks"]), int(problem["size_bytes"]),
                          root=int(problem.get("root", 0)),
                          traffic=tuple(tuple(int(x) for x in row) for row in traffic) if traffic else None)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"incomplete problem ({exc.__class__.__name__}: {exc})", source=source, field="problem") from None
    except InputError as exc:
        raise exc.within(source, "problem") from None


def _is_mscclpp_plan(path: str) -> bool:
    """An MSCCL++ execution plan (JSON with `gpus`, no planner `schema`)."""
    if not str(path).lower().endswith(".json"):
        return False
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "schema" not in doc and "gpus" in doc


def replay_runtime_file(path: str, topo: Topology, size: int | None = None) -> dict:
    """The report of `replay_plan` for an MSCCL XML (either dialect, any writer) or an
    MSCCL++ execution plan: read into a Schedule, verified, timed and bounded. The report
    adds `format`, `size_bytes` and, for XML, `runtime_problems` (the strict checker's
    findings: what would keep a runtime from loading or running it)."""
    from planner.exports import check_msccl_xml, import_msccl_xml, import_mscclpp_json

    xml = str(path).lower().endswith(".xml")
    report: dict = {"plan": path, "format": "msccl-xml" if xml else "mscclpp-json", "topology": topo.name}
    try:
        schedule = import_msccl_xml(Path(path), path, size=size) if xml else import_mscclpp_json(Path(path), path,
                                                                                                  size=size)
    except ScheduleError as exc:
        return {**report, "correct": False, "error": str(exc)}
    coll = schedule.collective
    if coll.ranks != topo.num_gpus:
        raise InputError(f"the schedule is for {coll.ranks} GPUs, topology {topo.name} has {topo.num_gpus}",
                         source=path, field="ngpus")
    if size is not None:
        try:
            coll.require_whole_blocks()
        except InputError as exc:
            raise InputError(exc.message, source=path, field="--size") from None
    report.update({"collective": coll.kind, "size_bytes": coll.size})
    if xml:
        report["runtime_problems"] = check_msccl_xml(Path(path).read_text(encoding="utf-8"))
    try:
        sim = simulate(schedule, topo)
    except ScheduleError as exc:
        return {**report, "correct": False, "error": str(exc)}
    bound = lower_bound(coll, topo)
    report.update({"correct": True, **quality_metrics(coll, sim.time_us, bound.time_us), "transfers": sim.transfers,
                   "recorded_time_us": None, "matches_recorded": False})
    return report


def replay_plan(path: str, topo: Topology, size: int | None = None) -> dict:
    """A report dict: `correct`, and when correct the simulated time, bound and ratio,
    plus whether the time matches what the plan recorded. MSCCL XML and MSCCL++ plans go
    to `replay_runtime_file` (`size`: their SIZE in bytes, when the file does not say)."""
    if str(path).lower().endswith(".xml") or _is_mscclpp_plan(path):
        return replay_runtime_file(path, topo, size)
    if size is not None:
        raise InputError("a plan JSON carries its own size; --size is for MSCCL XML and MSCCL++ files",
                         source=path, field="--size")
    doc = read_plan(path)
    if doc["kind"] != "collective":
        raise InputError(f"simulate takes collective plans, this is a {doc['kind']} plan", source=path, field="kind")
    coll = collective_from_problem(doc["problem"], path)
    if coll.ranks != topo.num_gpus:
        raise InputError(f"the plan is for {coll.ranks} GPUs, topology {topo.name} has {topo.num_gpus}",
                         source=path, field="problem.ranks")
    if not isinstance(doc.get("plan"), dict):
        raise InputError("expected the schedule as a mapping", source=path, field="plan")
    schedule = schedule_from_json(doc["plan"], coll, path)
    report: dict = {"plan": path, "collective": coll.kind, "topology": topo.name}
    try:
        sim = simulate(schedule, topo)
    except ScheduleError as exc:
        return {**report, "correct": False, "error": str(exc)}
    bound = lower_bound(coll, topo)
    metrics = doc.get("metrics")
    recorded = metrics.get("time_us") if isinstance(metrics, dict) else None
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)):
        recorded = None
    report.update({"correct": True, **quality_metrics(coll, sim.time_us, bound.time_us),
                   "transfers": sim.transfers, "recorded_time_us": recorded,
                   "matches_recorded": recorded is not None and abs(recorded - sim.time_us) <= 1e-6 * max(1.0, sim.time_us)})
    return report
