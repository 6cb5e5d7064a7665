"""MSCCL algorithm XML: write a planner Schedule, read any MSCCL XML back into one.

Writing (`export_msccl_xml`): every connection (src, dst, channel) becomes a send-only
thread block on the sender and a receive-only one on the receiver, whose steps are the
connection's transfers in order; a transfer is an `s` step on the sender and an `r` (copy)
or `rrc` (receive, reduce, copy) step on the receiver — or, for a second reduction into a
place in one step, `r` into a scratch chunk and `re` into the place after the first. Values
a GPU already holds are copied into its output by `cpy` steps of a local thread block. The
dependencies a runtime cannot derive itself (layout.analyse) become depid/deps on the
waiting step, extra ones on `nop` steps just before it, and hasdep=1 on the steps waited
for. The result must pass the strict checker (msccl_check) for the dialect's runtime, else
InputError says what does not fit.

Reading (`import_msccl_xml`): the k-th send of GPU a to b on channel c is the k-th receive
of b from a on c; each pair is one transfer event. Thread block order, depid/deps (and
their nops) become orderings: strong after a step that received or copied, weak after a
step that only sent; the waits of an `re` right after the `r` that received its operand
order only that local reduction. rebuild.py turns that into a Schedule. Fused steps (rcs,
rrs, rrcs) forward what they received; other local reductions (`re`, `ra`) have no
counterpart in the planner's model (one value per GPU and chunk).
"""
from __future__ import annotations

from dataclasses import replace

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from planner.core.collectives import Collective
from planner.core.errors import InputError, ScheduleError
from planner.exports.layout import RECV, SEND, BufferMap, analyse
from planner.exports.msccl_check import LIMITS, RECV_TYPES, SEND_TYPES, USES, check_msccl_xml, detect_dialect
from planner.exports.rebuild import Event, infer_root, rebuild
from planner.core.schedule import Schedule

DIALECTS = ("msccl", "exec")
COLL_NAMES = {"msccl": {"reduce-scatter": "reduce_scatter"}, "exec": {"reduce-scatter": "reducescatter"}}
KIND_OF = {"allgather": "allgather", "reduce_scatter": "reduce-scatter", "reducescatter": "reduce-scatter",
           "allreduce": "allreduce", "broadcast": "broadcast", "reduce": "reduce", "alltoall": "alltoall"}
DEFAULT_CHUNK_BYTES = 1 << 20  # the byte size of a chunk when neither the caller nor the file says


def _attrs(**kv) -> str:
    return " ".join(f'{k}="{v}"' for k, v in kv.items())


def export_msccl_xml(schedule: Schedule, dialect: str = "msccl", *, name: str | None = None,
                     min_bytes: int | None = None, max_bytes: int | None = None) -> str:
    """The schedule as MSCCL XML of `dialect` ("msccl" | "exec"); see the module docstring.
    exec's minBytes/maxBytes default to SIZE (the size the schedule was made for)."""
    if dialect not in DIALECTS:
        raise InputError(f"unknown MSCCL XML dialect {dialect!r} ({' | '.join(DIALECTS)})", field="dialect")
    plan = analyse(schedule)
    coll = schedule.collective
    n = coll.ranks
    # thread blocks: (send peer, recv peer, channel) -> entries, per GPU
    tbs: list[dict[tuple[int, int, int], list]] = [{} for _ in range(n)]
    for (src, dst, ch), ids in plan.connections:
        tbs[src][(dst, -1, ch)] = [(SEND, i) for i in ids]
        tbs[dst][(-1, src, ch)] = [e for i in ids for e in ([(RECV, i), ("re", i)] if plan.moves[i].side else
                                                              [(RECV, i)])]
    for rank, a, b in plan.local_copies:
        entries = tbs[rank].setdefault((-1, -1, 0), [])
        last = entries[-1] if entries else None
        if (last and last[1][0] == a[0] and last[2][0] == b[0] and last[1][1] + last[3] == a[1]
                and last[2][1] + last[3] == b[1] and last[3] < LIMITS[dialect].max_count - 1):
            entries[-1] = ("cpy", last[1], last[2], last[3] + 1)
        else:
            entries.append(("cpy", a, b, 1))
    order = [sorted(t) for t in tbs]
    tb_id = [{key: k for k, key in enumerate(keys)} for keys in order]
    at = {}  # (transfer, side) -> (gpu, tb id, entry position); "final": the step that puts the value in place
    for g in range(n):
        for key, entries in tbs[g].items():
            for pos, e in enumerate(entries):
                if e[0] in (SEND, RECV, "re"):
                    at[(e[1], e[0])] = (g, tb_id[g][key], pos)
                if e[0] in (RECV, "re"):
                    at[(e[1], "final")] = (g, tb_id[g][key], pos)
    waits: dict[tuple[int, int, int], set[tuple[int, int]]] = {}
    for d in plan.deps:
        g, t, pos = at[(d.consumer, d.side)]
        g2, t2, pos2 = at[(d.producer, "final" if d.producer_side == RECV else SEND)]
        assert g == g2, "layout.analyse puts both steps of a dependency on one GPU"
        if t2 != t:
            waits.setdefault((g, t, pos), set()).add((t2, pos2))
    kept: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for g in range(n):
        for key in order[g]:
            t, waited = tb_id[g][key], {}
            for pos, e in enumerate(tbs[g][key]):
                if e[0] == "re":  # only orders the local reduction after the one before it: always written
                    _, t2, pos2 = at[(plan.moves[e[1]].after, "final")]
                    kept[(g, t, pos)] = [(t2, pos2)] if t2 != t else []
                    continue
                need = [w for w in sorted(waits.get((g, t, pos), ())) if waited.get(w[0], -1) < w[1]]
                for t2, pos2 in need:
                    waited[t2] = max(waited.get(t2, -1), pos2)
                kept[(g, t, pos)] = need
    index = {}  # (gpu, tb, entry position) -> s, after the nops
    for g in range(n):
        for key in order[g]:
            t, s = tb_id[g][key], 0
            for pos in range(len(tbs[g][key])):
                s += max(0, len(kept[(g, t, pos)]) - 1)
                index[(g, t, pos)] = s
                s += 1
    flagged = {(g, t2, pos2) for (g, _, _), need in kept.items() for t2, pos2 in need}
    kind = COLL_NAMES[dialect].get(coll.kind, coll.kind)
    head = {"name": (name or f"planner_{schedule.algorithm or 'schedule'}_{coll.kind}_{n}")[:63], "proto": "Simple",
            "nchannels": 1 + max(key[2] for keys in order for key in keys), "nchunksperloop": plan.buffers.nchunks,
            "ngpus": n, "coll": kind, "inplace": 0}
    if dialect == "exec":
        head.update(outofplace=1, minBytes=coll.size if min_bytes is None else min_bytes,
                    maxBytes=coll.size if max_bytes is None else max_bytes)
    if schedule.loops > 1:  # the planner's own: how many slices it timed the program over (runtimes ignore it)
        head["loops"] = schedule.loops
    lines = [f"<algo {_attrs(**head)}>"]
    for g in range(n):
        lines.append(f'  <gpu {_attrs(id=g, i_chunks=plan.buffers.input_chunks(), o_chunks=plan.buffers.output_chunks(), s_chunks=plan.scratch[g])}>')
        for key in order[g]:
            t = tb_id[g][key]
            lines.append(f"    <tb {_attrs(id=t, send=key[0], recv=key[1], chan=key[2])}>")
            for pos, e in enumerate(tbs[g][key]):
                need = kept[(g, t, pos)]
                for t2, pos2 in need[1:]:
                    lines.append(_step(index[(g, t, pos)] - len(need) + 1 + need[1:].index((t2, pos2)), "nop",
                                       ("i", -1), ("o", -1), 0, (t2, index[(g, t2, pos2)]), False))
                dep = (need[0][0], index[(g, need[0][0], need[0][1])]) if need else None
                flag = (g, t, pos) in flagged
                if e[0] == "cpy":
                    lines.append(_step(index[(g, t, pos)], "cpy", e[1], e[2], e[3], dep, flag))
                    continue
                m = plan.moves[e[1]]
                if e[0] == SEND:
                    lines.append(_step(index[(g, t, pos)], "s", m.read, m.side or m.write, 1, dep, flag))
                elif e[0] == "re":
                    lines.append(_step(index[(g, t, pos)], "re", m.side, m.write, 1, dep, flag))
                elif m.side is not None:
                    lines.append(_step(index[(g, t, pos)], "r", m.read, m.side, 1, dep, flag))
                elif m.combine is not None:
                    lines.append(_step(index[(g, t, pos)], "rrc", m.combine, m.write, 1, dep, flag))
                else:
                    lines.append(_step(index[(g, t, pos)], "r", m.read, m.write, 1, dep, flag))
            lines.append("    </tb>")
        lines.append("  </gpu>")
    lines.append("</algo>")
    text = "\n".join(lines) + "\n"
    problems = check_msccl_xml(text, dialect)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"the schedule does not fit the {LIMITS[dialect].runtime} runtime: {problems[0]}{more}",
                         field="export")
    return text


def _step(s: int, typ: str, src, dst, cnt: int, dep, hasdep: bool) -> str:
    depid, deps = dep if dep else (-1, -1)
    return (f"      <step {_attrs(s=s, type=typ, srcbuf=src[0], srcoff=src[1], dstbuf=dst[0], dstoff=dst[1], cnt=cnt, depid=depid, deps=deps, hasdep=int(hasdep))}/>")


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class _Step:
    where: str
    gpu: int
    tb: int
    pos: int
    type: str
    src: tuple[str, int]
    dst: tuple[str, int]
    cnt: int
    depid: int
    deps: int
    hasdep: int


def _read_text(text_or_path, source: str | None) -> tuple[str, str]:
    if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("<"):
        path = str(text_or_path)
        try:
            return Path(path).read_text(encoding="utf-8"), source or path
        except FileNotFoundError:
            raise InputError("file not found", source=source or path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read it ({exc.__class__.__name__})", source=source or path) from None
    return str(text_or_path), source or "<msccl xml>"


def _int(el: ET.Element, name: str, where: str, source: str) -> int:
    """An integer attribute, read as the runtimes' strtol(base 0) reads it."""
    v = el.get(name)
    if v is None:
        raise InputError("missing attribute", source=source, field=f"{where}.{name}")
    body = v.strip()
    digits = body.lstrip("+-")
    try:
        x = int(digits, 8) if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX" else int(digits, 0)
    except ValueError:
        raise InputError(f"not an integer: {v!r}", source=source, field=f"{where}.{name}") from None
    return -x if body.startswith("-") else x


def import_msccl_xml(text_or_path, source: str | None = None, size: int | None = None,
                     root: int | None = None) -> Schedule:
    """The planner Schedule an MSCCL XML (either dialect) describes. SIZE: `size`, else the
    exec dialect's minBytes when it equals maxBytes, else nchunksperloop x 1 MiB. The root of
    broadcast / reduce is `root`, else the rank that receives (sends) nothing."""
    text, src = _read_text(text_or_path, source)
    try:
        top = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(f"not well-formed XML ({exc})", source=src) from None
    if top.tag != "algo":
        raise InputError(f"the top element is <{top.tag}>, not <algo>", source=src, field="algo")
    dialect = detect_dialect(top)
    coll_name = top.get("coll")
    if coll_name is None:
        raise InputError("missing attribute", source=src, field="algo.coll")
    if coll_name not in KIND_OF:
        raise InputError(f"collective {coll_name!r} is not one the planner models ({', '.join(KIND_OF)})",
                         source=src, field="algo.coll")
    kind = KIND_OF[coll_name]
    n, nchunks = _int(top, "ngpus", "algo", src), _int(top, "nchunksperloop", "algo", src)
    if n < 2 or nchunks < 1:
        raise InputError(f"ngpus={n}, nchunksperloop={nchunks}: needs at least 2 GPUs and 1 chunk", source=src,
                         field="algo")
    per_block = nchunks if kind in ("broadcast", "reduce") else nchunks // n
    if per_block * (1 if kind in ("broadcast", "reduce") else n) != nchunks:
        raise InputError(f"nchunksperloop={nchunks} does not split into the {n} blocks of {kind} (the planner's "
                         f"blocks are whole chunks)", source=src, field="algo.nchunksperloop")
    inplace = _int(top, "inplace", "algo", src) == 1 and (dialect == "msccl" or top.get("outofplace") == "0")
    gpus = _read_gpus(top, n, src)
    events, strong, weak, order = _events(gpus, src)
    if size is None and dialect == "exec" and top.get("minBytes") == top.get("maxBytes") != "0":
        size = _int(top, "minBytes", "algo", src) or None
    size = size or nchunks * DEFAULT_CHUNK_BYTES
    root = infer_root(kind, events, n) if root is None else root
    try:
        coll = Collective(kind, n, int(size), root=root)
    except InputError as exc:
        raise exc.within(src, "algo") from None
    buffers = BufferMap.of(coll, per_block)
    loops = _int(top, "loops", "algo", src) if "loops" in top.attrib else 1
    if loops < 1:
        raise InputError(f"loops={loops}: a program runs at least once", source=src, field="algo.loops")
    body = rebuild(coll, buffers, events, strong, weak, src, algorithm=f"msccl-xml:{top.get('name', '')}",
                   alias=_alias(kind, per_block) if inplace else None, order=order)
    return replace(body, loops=loops)


def _alias(kind: str, per_block: int):
    """In place, input and output are one buffer (NCCL's layout for each collective)."""
    def canon(p):
        r, b, i = p
        if kind == "allgather" and b == "i":
            return (r, "o", r * per_block + i)
        if kind == "reduce-scatter" and b == "o":
            return (r, "i", r * per_block + i)
        if kind not in ("allgather", "reduce-scatter") and b == "o":
            return (r, "i", i)
        return p
    return canon


def _read_gpus(top: ET.Element, n: int, src: str) -> dict[int, dict[int, dict]]:
    gpus: dict[int, dict[int, dict]] = {}
    for g_el in top:
        if g_el.tag != "gpu":
            continue
        g = _int(g_el, "id", "gpu", src)
        if not 0 <= g < n or g in gpus:
            raise InputError(f"gpu id {g} is not a new rank of 0..{n - 1}", source=src, field="gpu.id")
        chunks = {b: _int(g_el, f"{b}_chunks", f"gpu[{g}]", src) for b in "ios"}
        tbs: dict[int, dict] = {}
        for t_el in g_el:
            if t_el.tag != "tb":
                continue
            t = _int(t_el, "id", f"gpu[{g}].tb", src)
            w = f"gpu[{g}].tb[{t}]"
            tb = {"send": _int(t_el, "send", w, src), "recv": _int(t_el, "recv", w, src),
                  "chan": _int(t_el, "chan", w, src), "steps": []}
            if t in tbs or not all(-1 <= tb[k] < n and tb[k] != g for k in ("send", "recv")):
                raise InputError(f"duplicate id, or a peer that is not another rank (send={tb['send']}, "
                                 f"recv={tb['recv']})", source=src, field=w)
            for pos, s_el in enumerate(x for x in t_el if x.tag == "step"):
                ws = f"{w}.step[{pos}]"
                typ = s_el.get("type")
                if typ == "ra":
                    raise InputError("a residual add ('ra') has no counterpart in the planner's schedules",
                                     source=src, field=f"{ws}.type")
                if typ not in SEND_TYPES + RECV_TYPES + ("cpy", "re", "nop"):
                    raise InputError(f"unknown step type {typ!r}", source=src, field=f"{ws}.type")
                st = _Step(f"gpu {g} tb {t} step {pos}", g, t, pos, typ,
                           (s_el.get("srcbuf", "i"), _int(s_el, "srcoff", ws, src) if typ != "nop" else -1),
                           (s_el.get("dstbuf", "o"), _int(s_el, "dstoff", ws, src) if typ != "nop" else -1),
                           _int(s_el, "cnt", ws, src) if typ != "nop" else 0,
                           _int(s_el, "depid", ws, src), _int(s_el, "deps", ws, src),
                           int(s_el.get("hasdep", "0") == "1"))
                _check_bounds(st, chunks, src, ws)
                if typ in SEND_TYPES and tb["send"] < 0 or typ in RECV_TYPES and tb["recv"] < 0:
                    raise InputError(f"a '{typ}' step in a thread block without a peer for it", source=src, field=ws)
                tb["steps"].append(st)
            tbs[t] = tb
        gpus[g] = tbs
    if sorted(gpus) != list(range(n)):
        raise InputError(f"ngpus={n} but <gpu> elements for {sorted(gpus)[:8]}", source=src, field="gpu")
    return gpus


def _check_bounds(st: _Step, chunks: dict, src: str, where: str) -> None:
    for side, (buf, off) in (("src", st.src), ("dst", st.dst)):
        if side not in USES[st.type]:
            continue
        if buf not in chunks:
            raise InputError(f"buffer {buf!r} (i | o | s)", source=src, field=f"{where}.{side}buf")
        if st.cnt < 1 or off < 0 or off + st.cnt > chunks[buf]:
            raise InputError(f"{buf}[{off}..{off + st.cnt}) is outside the gpu's {chunks[buf]} {buf}_chunks",
                             source=src, field=f"{where}.{side}off")


def _places(g: int, slot: tuple[str, int], cnt: int) -> tuple:
    return tuple((g, slot[0], slot[1] + j) for j in range(cnt))


def _events(gpus: dict, src: str):
    """Transfer and copy events with their strong / weak orderings (module docstring)."""
    sends: dict[tuple[int, int, int], list[_Step]] = {}
    recvs: dict[tuple[int, int, int], list[_Step]] = {}
    owner: dict[tuple[int, str, int], int] = {}
    for g, tbs in gpus.items():
        for t, tb in sorted(tbs.items()):
            for st in tb["steps"]:
                if st.type in SEND_TYPES:
                    key = (g, tb["send"], tb["chan"])
                    if owner.setdefault((g, "send", key), t) != t:
                        raise ScheduleError(f"gpu {g}: thread blocks {owner[(g, 'send', key)]} and {t} both send to "
                                            f"gpu {tb['send']} on channel {tb['chan']} (one connection)")
                    sends.setdefault(key, []).append(st)
                if st.type in RECV_TYPES:
                    key = (tb["recv"], g, tb["chan"])
                    if owner.setdefault((g, "recv", key), t) != t:
                        raise ScheduleError(f"gpu {g}: thread blocks {owner[(g, 'recv', key)]} and {t} both receive "
                                            f"from gpu {tb['recv']} on channel {tb['chan']} (one connection)")
                    recvs.setdefault(key, []).append(st)
    fused: dict[tuple[int, int, int], _Step] = {}  # an `r` step -> the `re` that reduces what it received
    for g, tbs in gpus.items():
        for t, tb in tbs.items():
            real = [st for st in tb["steps"] if st.type != "nop"]
            for before, st in zip([None] + real, real):
                if st.type != "re":
                    continue
                if before is None or before.type != "r" or before.dst != st.src or before.cnt != st.cnt:
                    raise InputError(f"{st.where}: a local reduction ('re') is read only right after the receive "
                                     "of what it reduces (the planner keeps one value per GPU and chunk)", source=src)
                fused[(g, t, before.pos)] = st
    events: list[Event] = []
    roles: dict[tuple[int, int, int], list[tuple[int, bool]]] = {}  # step -> (event, strong after it)
    strong: set[tuple[int, int]] = set()
    weak: set[tuple[int, int]] = set()
    order: set[tuple[int, int]] = set()

    def fwd(st: _Step) -> tuple:  # what a step sends: its source, or what it just received
        if st.type == "s":
            return _places(st.gpu, st.src, st.cnt)
        if st.type == "rrs":
            return tuple((st.gpu, "v", (st.tb * 4096 + st.pos) * 128 + j) for j in range(st.cnt))
        return _places(st.gpu, st.dst, st.cnt)

    for key in sorted(set(sends) | set(recvs)):
        ss, rr = sends.get(key, []), recvs.get(key, [])
        if len(ss) != len(rr):
            a, b, c = key
            raise ScheduleError(f"gpu {a} sends {len(ss)} time(s) to gpu {b} on channel {c}, gpu {b} receives "
                                f"{len(rr)} time(s): the runtime would hang")
        for s, r in zip(ss, rr):
            if s.cnt != r.cnt:
                raise ScheduleError(f"{s.where} sends {s.cnt} chunk(s), {r.where} receives {r.cnt}")
            writes = fwd(r) if r.type == "rrs" else _places(r.gpu, r.dst, r.cnt)
            combine = _places(r.gpu, r.src, r.cnt) if r.type in ("rrc", "rrs", "rrcs") else ()
            red = fused.get((r.gpu, r.tb, r.pos))
            if red is not None:  # received into a scratch chunk, then reduced into its place
                writes = combine = _places(r.gpu, red.dst, r.cnt)
            events.append(Event("xfer", f"{s.where} -> {r.where}", s.gpu, r.gpu, key[2], fwd(s), writes, combine))
            e = len(events) - 1
            roles.setdefault((s.gpu, s.tb, s.pos), []).append((e, False))
            roles.setdefault((r.gpu, r.tb, r.pos), []).append((e, True))
            if red is not None:
                roles[(red.gpu, red.tb, red.pos)] = [(e, True)]
    for key, evs in roles.items():  # a fused step forwards what it received
        recv_part = [e for e, strong_after in evs if strong_after]
        for e, strong_after in evs:
            if not strong_after and recv_part:
                strong.add((recv_part[0], e))
    for g, tbs in gpus.items():
        for t, tb in tbs.items():
            for st in tb["steps"]:
                if st.type == "cpy":
                    events.append(Event("copy", st.where, g, g, tb["chan"], _places(g, st.src, st.cnt),
                                        _places(g, st.dst, st.cnt)))
                    roles[(g, t, st.pos)] = [(len(events) - 1, True)]
    for g, tbs in gpus.items():
        for t, tb in tbs.items():
            prev, pending = [], []
            for st in tb["steps"]:
                if st.depid >= 0:
                    pending.append(_target(gpus, st, src))
                if st.type == "nop":
                    continue
                mine = [e for e, _ in roles[(g, t, st.pos)]]
                for before, after_strong in prev:
                    for e in mine:
                        if events[before].connection is None or events[before].connection != events[e].connection:
                            (strong if after_strong else weak).add((before, e))
                for target in pending:
                    for before, after_strong in roles[target]:
                        for e in mine:
                            if before != e:  # a local reduction waits to write, not to receive
                                (order if st.type == "re" else strong if after_strong else weak).add((before, e))
                prev, pending = roles[(g, t, st.pos)], []
    return events, strong, weak, order


def _target(gpus: dict, st: _Step, src: str) -> tuple[int, int, int]:
    """The step whose flag satisfies a dependency: the first one at or after `deps` in
    thread block `depid` that sets its flag (the runtime's flags only grow)."""
    tb = gpus[st.gpu].get(st.depid)
    if tb is None or not 0 <= st.deps < len(tb["steps"]):
        raise InputError(f"depends on thread block {st.depid} step {st.deps}, which does not exist",
                         source=src, field=f"gpu[{st.gpu}].tb[{st.tb}].step[{st.pos}].depid")
    for other in tb["steps"][st.deps:]:
        if other.type != "nop" and other.hasdep:
            return (st.gpu, st.depid, other.pos)
    raise ScheduleError(f"{st.where} waits for gpu {st.gpu} tb {st.depid} step {st.deps}, which never sets its flag "
                        "(hasdep=0 there and on every later step): the runtime would hang")
