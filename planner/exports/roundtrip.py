"""One entry point per format, and the round trip the CLI runs before it writes an export:
export, parse back, re-simulate; the data movement and the time must be the same."""
from __future__ import annotations

from planner.core.errors import ExportMismatch
from planner.exports.msccl_check import check_msccl_xml
from planner.exports.msccl_xml import export_msccl_xml, import_msccl_xml
from planner.exports.mscclpp_json import export_mscclpp_json, import_mscclpp_json
from planner.core.schedule import Schedule
from planner.simulator import SimResult, simulate
from topologies.types import Topology

FORMATS = ("msccl-xml", "msccl-exec-xml", "mscclpp-json")
DIALECT = {"msccl-xml": "msccl", "msccl-exec-xml": "exec"}
TIME_TOLERANCE = 1e-9  # relative


def export_text(schedule: Schedule, fmt: str, topology: Topology | None = None) -> str:
    if fmt == "mscclpp-json":
        return export_mscclpp_json(schedule, topology)
    return export_msccl_xml(schedule, DIALECT[fmt])


def import_text(text: str, fmt: str, source: str, size: int | None = None, root: int | None = None) -> Schedule:
    if fmt == "mscclpp-json":
        return import_mscclpp_json(text, source, size=size, root=root)
    return import_msccl_xml(text, source, size=size, root=root)


def movement(schedule: Schedule) -> list[tuple]:
    """What moves where: (block, lo, hi, src, dst, reduce) of every transfer, sorted."""
    out = []
    for t in schedule.transfers:
        c = schedule.chunks[t.chunk]
        out.append((c.block, round(c.lo, 9), round(c.hi, 9), t.src, t.dst, bool(t.reduce)))
    return sorted(out)


def round_trip(schedule: Schedule, fmt: str, topology: Topology, time_us: float | None = None,
               router=None) -> tuple[str, Schedule, SimResult]:
    """The export text, the schedule parsed back from it and its simulation; ExportMismatch
    when the strict checker objects or the data movement or the time differ."""
    if fmt not in FORMATS:
        raise ExportMismatch(f"unknown export format {fmt!r} ({' | '.join(FORMATS)})")
    text = export_text(schedule, fmt, topology)
    if fmt in DIALECT:
        problems = check_msccl_xml(text, DIALECT[fmt])
        if problems:
            raise ExportMismatch(f"the {fmt} file fails the strict checker: {problems[0]}")
    coll = schedule.collective
    back = import_text(text, fmt, f"<{fmt} export>", size=coll.size, root=coll.root)
    sim = simulate(back, topology, router)
    before, after = movement(schedule), movement(back)
    if before != after:
        diff = next((a, b) for a, b in zip(before + [None], after + [None]) if a != b)
        raise ExportMismatch(f"the {fmt} file parses back to a different data movement ({len(after)} transfers "
                             f"against {len(before)}; first difference {diff[0]} / {diff[1]}, as (block, lo, hi, "
                             "src, dst, reduce))")
    if time_us is None:
        time_us = simulate(schedule, topology, router).time_us
    if abs(sim.time_us - time_us) > TIME_TOLERANCE * max(abs(time_us), 1e-12):
        raise ExportMismatch(f"the {fmt} file re-simulates to {sim.time_us:.6f} us, the plan to {time_us:.6f} us "
                             "(orderings the runtime needs that the plan's step semantics leave implicit, or routes "
                             "the format cannot carry)")
    return text, back, sim
