"""Schedule exports: MSCCL XML (both dialects) and MSCCL++ plans round-trip through the
simulator, the strict checker holds exported files to the runtimes' limits and catches
broken ones, foreign MSCCL XML imports, and the CLI writes and reads these files."""
from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest

from planner.core.collectives import Collective
from planner.core.errors import InputError, ScheduleError
from planner.exports import (FORMATS, check_msccl_xml, export_msccl_xml, export_mscclpp_json, import_msccl_xml,
                             import_mscclpp_json, movement, round_trip)
from planner.exports.mscclpp_json import MAX_OPERATION
from planner.core.schedule import Chunk, Schedule, Transfer
from planner.simulator import simulate
from solvers import baselines
from helpers import build_baseline, first_case
from topologies.io import load_topology

TOPOLOGIES = ("dgx-a100", "dgx1", "hgx-h100x2")
CASES = (("allgather", 0), ("reduce-scatter", 0), ("allreduce", 0), ("broadcast", 3), ("reduce", 3), ("alltoall", 0))
SIZE = 1 << 22


@lru_cache(maxsize=None)
def topo(name):
    return load_topology(name)


@lru_cache(maxsize=None)
def baseline(name, kind, root):
    s = build_baseline(first_case(kind), topo(name), SIZE, root)
    return s, simulate(s, topo(name))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind,root", CASES)
@pytest.mark.parametrize("tname", TOPOLOGIES)
@pytest.mark.slow
def test_round_trip_same_movement_time_and_data(tname, kind, root, fmt):
    schedule, sim = baseline(tname, kind, root)
    text, back, sim2 = round_trip(schedule, fmt, topo(tname), sim.time_us)  # raises when anything differs
    assert movement(back) == movement(schedule)
    assert abs(sim2.time_us - sim.time_us) <= 1e-9 * sim.time_us
    assert sim2.bytes_moved == pytest.approx(sim.bytes_moved)
    if fmt != "mscclpp-json":
        assert check_msccl_xml(text) == []
    else:
        for gpu in json.loads(text)["gpus"]:
            assert all(len(tb["ops"]) <= MAX_OPERATION for tb in gpu["threadblocks"])


@pytest.mark.parametrize("method,kind,size,tname", [("tree", "allreduce", 1 << 20, "dgx1"),
                                                     ("milp", "reduce", 4096, "dgx1"),
                                                     ("milp", "allreduce", 4096, "dgx1"),
                                                     ("hierarchical", "allreduce", 1 << 20, "hgx-h100x2")])
def test_other_methods_round_trip(method, kind, size, tname):
    """Trees reduce two children into a parent in one step: each lands apart and is reduced
    into place after the other (XML `r` + `re`, MSCCL++ wait + re), yet the transfers stay
    concurrent, so the time is the plan's."""
    from planner.kinds.collective import plan_collective

    t = topo(tname)
    res = plan_collective(Collective(kind, t.num_gpus, size), t, method, time_limit_s=20)
    twice = len({(x.dst, x.chunk, x.step) for x in res.solution.transfers if x.reduce}) < sum(
        x.reduce for x in res.solution.transfers)  # some place gets two reductions in one step
    assert twice or method != "tree"
    for fmt in FORMATS:
        text, back, sim = round_trip(res.solution, fmt, t, res.evidence.time_us)
        assert sim.time_us == pytest.approx(res.evidence.time_us, rel=1e-9)
        if fmt != "mscclpp-json":  # (MSCCL++ finishes every reduction with a local re)
            assert ('type="re"' in text) == twice


@pytest.mark.parametrize("kind", ["broadcast", "reduce"])
def test_import_infers_the_root(kind):
    schedule, sim = baseline("dgx1", kind, 3)
    xml = import_msccl_xml(export_msccl_xml(schedule))
    assert xml.collective.size == len(schedule.chunks) << 20  # the msccl dialect has no size: 1 MiB per chunk
    pp = import_mscclpp_json(export_mscclpp_json(schedule))
    assert pp.collective.size == SIZE  # min_message_size == max_message_size
    for back in (xml, pp):
        assert back.collective.root == 3
        simulate(back, topo("dgx1"))


def test_exec_dialect_names_and_attributes():
    schedule, _ = baseline("dgx-a100", "reduce-scatter", 0)
    exec_xml, msccl_xml = export_msccl_xml(schedule, "exec"), export_msccl_xml(schedule, "msccl")
    head = exec_xml.splitlines()[0]
    assert 'coll="reducescatter"' in head and 'outofplace="1"' in head
    assert f'minBytes="{SIZE}"' in head and f'maxBytes="{SIZE}"' in head
    head = msccl_xml.splitlines()[0]
    assert 'coll="reduce_scatter"' in head and "outofplace" not in head
    assert import_msccl_xml(exec_xml).collective.size == SIZE  # minBytes == maxBytes gives SIZE back
    assert check_msccl_xml(exec_xml, "exec") == [] and check_msccl_xml(msccl_xml, "msccl") == []
    assert any("outofplace" in p for p in check_msccl_xml(msccl_xml.replace('coll="reduce_scatter"', 'coll="allreduce"'),
                                                             "exec"))


def small_xml() -> str:
    return export_msccl_xml(baseline("dgx-a100", "allgather", 0)[0], "exec")


def test_checker_catches_unmatched_send():
    text = small_xml()
    lines = text.splitlines()
    k = max(i for i, l in enumerate(lines) if 'type="r"' in l and 'hasdep="0"' in l)
    broken = "\n".join(lines[:k] + lines[k + 1:])
    assert any("unmatched" in p for p in check_msccl_xml(broken))
    with pytest.raises(ScheduleError, match="would hang"):
        import_msccl_xml(broken)


def test_checker_catches_bad_offset():
    broken = re.sub(r'(type="r" .*?dstoff=)"\d+"', r'\1"64"', small_xml(), count=1)
    assert any("outside" in p for p in check_msccl_xml(broken))
    with pytest.raises(InputError, match="outside"):
        import_msccl_xml(broken)


def test_checker_catches_missing_exec_attribute():
    broken = small_xml().replace(' outofplace="1"', "", 1)
    assert any("missing attribute 'outofplace'" in p for p in check_msccl_xml(broken, "exec"))
    assert not any("outofplace" in p for p in check_msccl_xml(broken, "msccl"))  # msccl does not need it


def two_gpu_xml(dep0: str, dep1: str) -> str:
    gpus = []
    for g in (0, 1):
        dep = dep0 if g == 0 else dep1
        gpus.append(f'''  <gpu id="{g}" i_chunks="1" o_chunks="2" s_chunks="0">
    <tb id="0" send="{1 - g}" recv="-1" chan="0">
      <step s="0" type="s" srcbuf="i" srcoff="0" dstbuf="o" dstoff="{g}" cnt="1" {dep} hasdep="0"/>
    </tb>
    <tb id="1" send="-1" recv="{1 - g}" chan="0">
      <step s="0" type="r" srcbuf="i" srcoff="0" dstbuf="o" dstoff="{1 - g}" cnt="1" depid="-1" deps="-1" hasdep="1"/>
    </tb>
    <tb id="2" send="-1" recv="-1" chan="0">
      <step s="0" type="cpy" srcbuf="i" srcoff="0" dstbuf="o" dstoff="{g}" cnt="1" depid="-1" deps="-1" hasdep="0"/>
    </tb>
  </gpu>''')
    return ('<algo name="x" proto="Simple" nchannels="1" nchunksperloop="2" ngpus="2" coll="allgather" inplace="0">\n'
            + "\n".join(gpus) + "\n</algo>\n")


def test_checker_and_import_catch_a_dependency_cycle():
    fine = two_gpu_xml('depid="-1" deps="-1"', 'depid="-1" deps="-1"')
    assert check_msccl_xml(fine) == []
    assert simulate(import_msccl_xml(fine, size=2048), two_gpu_topo()).time_us > 0
    cycle = two_gpu_xml('depid="1" deps="0"', 'depid="1" deps="0"')
    assert any("cycle" in p for p in check_msccl_xml(cycle))
    with pytest.raises(ScheduleError, match="cycle"):
        import_msccl_xml(cycle)


def two_gpu_topo():
    from helpers import explicit
    return explicit("two", ["g0", "g1"], [("g0", "g1", 100, 1.0)])


@pytest.mark.slow
def test_limits_per_dialect():
    t = topo("dgx1")
    coll = Collective("broadcast", 8, 70 * 4 << 10)
    long = baselines.chain(coll, t, parts=70)  # 70 steps in a thread block: msccl allows 256, the executors 64
    text = export_msccl_xml(long, "msccl")
    assert check_msccl_xml(text, "msccl") == []
    problems = check_msccl_xml(text, "exec")
    assert any("allows 64 per thread block" in p for p in problems)
    with pytest.raises(InputError, match="does not fit the msccl-executor-nccl / RCCL runtime"):
        export_msccl_xml(long, "exec")
    text = export_mscclpp_json(long)  # MSCCL++ cuts long thread blocks into chained ones of <= 64 operations
    assert all(len(tb["ops"]) <= MAX_OPERATION for g in json.loads(text)["gpus"] for tb in g["threadblocks"])
    back = import_mscclpp_json(text, size=coll.size)
    assert simulate(back, t).time_us == pytest.approx(simulate(long, t).time_us, rel=1e-9)


def test_export_refuses_unequal_chunks_and_unsupported_collectives():
    coll = Collective("allgather", 2, 1024)
    chunks = (Chunk(0, 0.0, 0.5), Chunk(0, 0.5, 1.0), Chunk(1, 0.0, 1.0))
    s = Schedule(coll, chunks, (Transfer(0, 0, 1, 0), Transfer(1, 0, 1, 0), Transfer(2, 1, 0, 0)))
    for fn in (export_msccl_xml, export_mscclpp_json):
        with pytest.raises(InputError, match="not all the same size"):
            fn(s)
    v = Collective("alltoallv", 2, 0, traffic=((0, 10), (20, 0)))
    s = Schedule(v, (Chunk(0, 0, 1), Chunk(1, 0, 1)), (Transfer(0, 0, 1, 0), Transfer(1, 1, 0, 0)))
    with pytest.raises(InputError, match="no MSCCL"):
        export_msccl_xml(s)


def ring_allgather_msccl_tools(n: int = 4, wrong: bool = False) -> str:
    """A ring allgather as msccl-tools' allgather_ring.py (in place, one channel, fused
    receive-copy-send steps) writes it, by hand."""
    out = [f'<algo name="allgather_ring_1channelsperring" proto="LL128" nchannels="1" nchunksperloop="{n}" '
           f'ngpus="{n}" coll="allgather" inplace="1">']
    for r in range(n):
        out.append(f'  <gpu id="{r}" i_chunks="1" o_chunks="{n}" s_chunks="0">')
        out.append(f'    <tb id="0" send="{(r + 1) % n}" recv="{(r - 1) % n}" chan="0">')
        for s in range(n):
            typ = "s" if s == 0 else "r" if s == n - 1 else "rcs"
            off = (r - s) % n
            if wrong and r == 2 and s == 1:
                off = (off + 1) % n
            out.append(f'      <step s="{s}" type="{typ}" srcbuf="o" srcoff="{off}" dstbuf="o" dstoff="{off}" '
                       f'cnt="1" depid="-1" deps="-1" hasdep="0"/>')
        out += ["    </tb>", "  </gpu>"]
    return "\n".join(out + ["</algo>"]) + "\n"


def ring_allreduce_rccl_style(n: int = 4) -> str:
    """A ring allreduce with fused rrs / rrcs / rcs steps, as in RCCL's msccl-algorithms."""
    out = [f'<algo name="allreduce_ring" proto="Simple" nchannels="1" nchunksperloop="{n}" ngpus="{n}" '
           f'coll="allreduce" inplace="0" outofplace="1" minBytes="0" maxBytes="0">']
    for r in range(n):
        out += [f'  <gpu id="{r}" i_chunks="{n}" o_chunks="{n}" s_chunks="0">',
                f'    <tb id="0" send="{(r + 1) % n}" recv="{(r - 1) % n}" chan="0">']
        steps = [("s", "i", (r - 1) % n, "o", (r - 1) % n)]
        steps += [("rrs", "i", (r - 1 - s) % n, "o", (r - 1 - s) % n) for s in range(1, n - 1)]
        steps += [("rrcs", "i", r, "o", r)]
        steps += [("rcs", "o", (r - j) % n, "o", (r - j) % n) for j in range(1, n - 1)]
        steps += [("r", "o", (r + 1) % n, "o", (r + 1) % n)]
        for s, (typ, sb, so, db, do) in enumerate(steps):
            out.append(f'      <step s="{s}" type="{typ}" srcbuf="{sb}" srcoff="{so}" dstbuf="{db}" dstoff="{do}" '
                       'cnt="1" depid="-1" deps="-1" hasdep="0"/>')
        out += ["    </tb>", "  </gpu>"]
    return "\n".join(out + ["</algo>"]) + "\n"


def test_foreign_4_gpu_ring_allgather():
    from helpers import explicit

    four = explicit("four", [f"g{i}" for i in range(4)], [(f"g{i}", "sw", 100, 0.5) for i in range(4)], ["sw"])
    s = import_msccl_xml(ring_allgather_msccl_tools(4), size=4 << 20)
    assert (s.collective.kind, s.collective.ranks, len(s.transfers)) == ("allgather", 4, 12)
    assert simulate(s, four).time_us == pytest.approx(3 * ((1 << 20) / 100e3 + 1.0))  # 3 hops of 1 MiB + 2 x 0.5 us
    with pytest.raises(ScheduleError):
        simulate(import_msccl_xml(ring_allgather_msccl_tools(4, wrong=True), size=4 << 20), four)


def test_foreign_msccl_tools_xml_imports_and_simulates():
    t = load_topology("hgx-h100")
    ring = ring_allgather_msccl_tools(8)
    assert check_msccl_xml(ring) == []
    s = import_msccl_xml(ring, size=8 << 20)
    assert s.collective.kind == "allgather" and len(s.transfers) == 8 * 7
    assert simulate(s, t).time_us > 0
    with pytest.raises(ScheduleError, match="ends with|before it holds"):
        simulate(import_msccl_xml(ring_allgather_msccl_tools(8, wrong=True), size=8 << 20), t)
    ar = ring_allreduce_rccl_style(8)
    assert check_msccl_xml(ar) == []
    s = import_msccl_xml(ar, size=8 << 20)
    assert s.collective.kind == "allreduce" and sum(t_.reduce for t_ in s.transfers) == 8 * 7
    simulate(s, t)


def test_import_refuses_local_reductions_and_reports_races():
    text = two_gpu_xml('depid="-1" deps="-1"', 'depid="-1" deps="-1"').replace('type="cpy"', 'type="re"', 1)
    with pytest.raises(InputError, match="local reduction"):
        import_msccl_xml(text)
    # gpu 0 sends o[0] while its local copy writes o[0]: nothing orders the two
    racy = two_gpu_xml('depid="-1" deps="-1"', 'depid="-1" deps="-1"').replace(
        'type="s" srcbuf="i" srcoff="0" dstbuf="o" dstoff="0"', 'type="s" srcbuf="o" srcoff="0" dstbuf="o" dstoff="0"')
    with pytest.raises(ScheduleError):
        import_msccl_xml(racy)


# ---------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_collective_export_and_simulate(run_cli, tmp_path):
    plan, xml = tmp_path / "plan.json", tmp_path / "ar.xml"
    result = run_cli("collective", "allreduce", "--topology", "dgx1", "--size", "4MiB", "-o", plan,
                     "--export", "msccl-exec-xml", "--export-file", xml)
    assert result.exit_code == 0, result.stderr
    assert "same time" in result.stdout and check_msccl_xml(xml.read_text(), "exec") == []
    recorded = json.loads(plan.read_text())["metrics"]["time_us"]
    report = json.loads(run_cli("simulate", xml, "--topology", "dgx1", "--json").stdout)
    assert report["correct"] and report["runtime_problems"] == []
    assert report["time_us"] == pytest.approx(recorded, rel=1e-9) and report["size_bytes"] == 4 << 20
    pp = tmp_path / "ag.json"
    assert run_cli("collective", "allgather", "--topology", "hgx-h100x2", "--size", "16MiB", "--export",
                   "mscclpp-json", "--export-file", pp).exit_code == 0
    assert json.loads(run_cli("simulate", pp, "--topology", "hgx-h100x2", "--json").stdout)["correct"]


def test_cli_export_options_go_together_and_failures_write_nothing(run_cli, tmp_path):
    out = tmp_path / "x.xml"
    result = run_cli("collective", "allgather", "--topology", "dgx1", "--size", "1MiB", "--export", "msccl-xml")
    assert result.exit_code == 2 and "--export-file" in result.stderr
    result = run_cli("collective", "allgather", "--topology", "dgx1", "--size", "1MiB", "--export-file", out)
    assert result.exit_code == 2 and not out.exists()
    traffic = tmp_path / "t.json"
    traffic.write_text(json.dumps([[0 if i == j else 1024 * (1 + i) for j in range(8)] for i in range(8)]))
    result = run_cli("collective", "alltoallv", "--topology", "dgx1", "--traffic", traffic, "--export", "msccl-xml",
                     "--export-file", out)
    assert result.exit_code == 2 and "alltoallv" in result.stderr and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_simulate_foreign_xml(run_cli, tmp_path):
    good, bad = tmp_path / "ring.xml", tmp_path / "broken.xml"
    good.write_text(ring_allgather_msccl_tools(8))
    bad.write_text(ring_allgather_msccl_tools(8, wrong=True))
    result = run_cli("simulate", good, "--topology", "dgx-a100", "--size", "8MiB")
    assert result.exit_code == 0 and "correct" in result.stdout, result.stderr
    result = run_cli("simulate", bad, "--topology", "dgx-a100")
    assert result.exit_code == 1 and "INCORRECT" in result.stdout
    result = run_cli("simulate", good, "--topology", "dgx1-nonexistent")
    assert result.exit_code == 2
    result = run_cli("simulate", good, "--topology", "hgx-h100x2")
    assert result.exit_code == 2 and "8 GPUs" in result.stderr
    (tmp_path / "torn.xml").write_text(ring_allgather_msccl_tools(8)[:300])
    result = run_cli("simulate", tmp_path / "torn.xml", "--topology", "dgx-a100")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("method", ["flash", "hierarchical", "milp"])
@pytest.mark.slow
def test_alltoall_schedules_round_trip(method):
    """All-to-all plans (FLASH-style stages with their NVLink shuffles, the rail-aligned
    hierarchical baseline, the time-expanded MILP's multi-hop paths in whole units) export
    to every format and re-simulate to the same movement and time."""
    from models.alltoall_flow import time_expanded_schedule
    from planner.kinds.collective import COLLECTIVE, collective_problem
    from planner.search import run_method
    from topologies.routing import Router

    t = topo("hgx-h100x2")
    coll = Collective("alltoall", 16, 16 << 20)
    if method == "milp":  # (a 2 x 2-GPU cluster: the 16-GPU MILP takes half a minute)
        from test_alltoall import _two_by_two
        t = _two_by_two()
        coll = Collective("alltoall", 4, 4 << 20)
        schedule = time_expanded_schedule(coll, t, Router(t), integral=True, time_limit_s=30).schedule
    else:
        schedule = run_method(COLLECTIVE, method, collective_problem(coll, t)).solution
    time_us = simulate(schedule, t).time_us
    for fmt in FORMATS:
        if method == "milp" and fmt == "msccl-exec-xml":  # one step per unit: over its 64 per thread block
            with pytest.raises(InputError, match="64 per thread block"):
                round_trip(schedule, fmt, t, time_us)
            continue
        text, back, sim = round_trip(schedule, fmt, t, time_us)
        assert movement(back) == movement(schedule)
        assert sim.time_us == pytest.approx(time_us, rel=1e-9)


def test_alltoallv_export_says_why_not(run_cli, tmp_path):
    r = run_cli("collective", "alltoallv", "--topology", "hgx-h100x2", "--size", "8MiB", "--traffic",
                "zipf:s=1.2,seed=0", "--method", "flash", "--export", "msccl-xml", "--export-file",
                str(tmp_path / "a.xml"))
    assert r.exit_code == 2 and "alltoallv" in r.output and not (tmp_path / "a.xml").exists()
