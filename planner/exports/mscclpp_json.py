"""MSCCL++ execution plans (JSON): write a planner Schedule, read such a plan back.

The format is the one MSCCL++'s executor loads (microsoft/mscclpp
src/core/executor/execution_plan.cc) and its Python DSL writes (python/mscclpp/language):
per GPU `input_chunks`, `output_chunks`, `scratch_chunks`, `channels` (peers per channel
type), `remote_buffers` (peer buffers this GPU writes), `semaphores`, and `threadblocks`
of `ops` run in order. MSCCL++ moves data one-sidedly: the sender `put`s into the peer's
buffer and `signal`s; the receiver `wait`s for the signal before using the data.

Writing: each connection (src, dst, channel) is a sending thread block on src (per
transfer: put + signal; `pws`/`pwsf` on port channels, which signal themselves) and a
receiving one on dst (per transfer: wait). A transfer lands directly in its final place
when nothing was or is there; otherwise (a reduction, or a place some earlier step used)
it lands in a scratch chunk of its own and the receiving thread block finishes it with a
local `copy` or `re` (reduce) once the receiver's own ordering allows. Orderings between
thread blocks of one GPU (layout.analyse) are semaphores: the producer's group of ops ends
with `sem_release`, the consumer's waits with `sem_acquire`. A thread block longer than
the executor's 64 operations is cut into consecutive ones chained by a semaphore.
Channels between a pair of GPUs are `memory` inside a server and `port` across servers
(when a topology is given; all `memory` otherwise).

Reading accepts what the writer produces (the operations put, pws, pwsf, signal, wait,
copy, re, sem_acquire, sem_release, nop) and says so for anything else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from planner.core.collectives import Collective
from planner.core.errors import InputError, ScheduleError
from planner.core.loader import positive_int
from planner.exports.layout import RECV, SEND, BufferMap, analyse
from planner.exports.msccl_xml import DEFAULT_CHUNK_BYTES, _alias
from planner.exports.rebuild import Event, infer_root, rebuild
from planner.core.schedule import Schedule
from topologies.types import Topology

MAX_OPERATION = 64  # operations per thread block (src/core/include/execution_common.hpp)
MAX_SEMAPHORES_PER_OP = 16  # MAX_DEVICE_SEMAPHORES, ids one sem_acquire / sem_release carries
MAX_THREADBLOCKS = 108  # all thread blocks of a plan spin-wait on each other, so all must be resident: one per SM (A100: 108)
COLL_NAME = {"reduce-scatter": "reducescatter"}
KIND_OF = {"allgather": "allgather", "reducescatter": "reduce-scatter", "allreduce": "allreduce",
           "alltoall": "alltoall", "broadcast": "broadcast", "reduce": "reduce"}


def _buff(slot, size: int = 1) -> dict:
    return {"type": slot[0], "index": slot[1], "size": size}


def export_mscclpp_json(schedule: Schedule, topology: Topology | None = None, *, name: str | None = None) -> str:
    """The schedule as an MSCCL++ execution plan (see the module docstring)."""
    plan = analyse(schedule)
    coll = schedule.collective
    n = coll.ranks
    server = [0] * n if topology is None else [topology.server_of_gpu[g] for g in topology.gpus]
    if len(server) != n:
        raise InputError(f"the topology has {len(server)} GPUs, the schedule {n}", field="topology")

    def ctype(a: int, b: int) -> str:
        return "memory" if server[a] == server[b] else "port"

    recv_waits = {d.consumer for d in plan.deps if d.side == RECV}
    scratch = list(plan.scratch)
    landing = {}
    for m in plan.moves:
        if m.side is not None:
            landing[m.index] = m.side
        elif m.combine is not None or not m.fresh or m.index in recv_waits:
            landing[m.index] = ("s", scratch[m.dst])
            scratch[m.dst] += 1
    # channels: one per (GPU pair, planner channel), listed on both ends in the same order
    peers_of: list[dict[str, list[tuple[int, int]]]] = [{} for _ in range(n)]
    for (src, dst, ch), _ in plan.connections:
        for a, b in ((src, dst), (dst, src)):
            lst = peers_of[a].setdefault(ctype(a, b), [])
            if (b, ch) not in lst:
                lst.append((b, ch))
    chan_id = {}
    for a in range(n):
        for t, lst in peers_of[a].items():
            lst.sort()
            for k, (b, ch) in enumerate(lst):
                chan_id[(a, b, ch)] = (t, k)
    remote: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    for m in plan.moves:
        target = (m.dst, landing.get(m.index, m.write)[0])
        if target not in remote[m.src]:
            remote[m.src].append(target)
    for lst in remote:
        lst.sort()
    # logical thread blocks and their groups of ops
    ltbs: list[dict[tuple, list[dict]]] = [{} for _ in range(n)]
    at = {}
    for (src, dst, ch), ids in plan.connections:
        for side, g, key in ((SEND, src, ("send", dst, ch)), (RECV, dst, ("recv", src, ch))):
            groups = ltbs[g].setdefault(key, [])
            for i in ids:
                at[(i, side)] = (g, key, len(groups))
                groups.append({"move": plan.moves[i], "side": side, "acquire": [], "order": [], "release": []})
    for rank, a, b in plan.local_copies:
        ltbs[rank].setdefault(("local",), []).append({"copy": (a, b), "acquire": [], "release": []})
    sems = [0] * n
    waits: dict[tuple[int, tuple, int], set[tuple[tuple, int]]] = {}
    for d in plan.deps:
        g, key, pos = at[(d.consumer, d.side)]
        _, key2, pos2 = at[(d.producer, d.producer_side)]
        if key2 != key:
            waits.setdefault((g, key, pos), set()).add((key2, pos2))
    for g in range(n):
        for key, groups in ltbs[g].items():
            waited: dict[tuple, int] = {}
            for pos, grp in enumerate(groups):
                for key2, pos2 in sorted(waits.get((g, key, pos), ())):
                    if waited.get(key2, -1) >= pos2:
                        continue
                    waited[key2] = pos2
                    ltbs[g][key2][pos2]["release"].append(sems[g])
                    grp["acquire"].append(sems[g])
                    sems[g] += 1
                m = grp.get("move")
                if grp.get("side") == RECV and m.after is not None:  # a reduction into a place after another one
                    _, key2, pos2 = at[(m.after, RECV)]
                    if key2 != key:
                        ltbs[g][key2][pos2]["release"].append(sems[g])
                        grp["order"].append(sems[g])
                        sems[g] += 1
    gpus = []
    for g in range(n):
        tbs: list[dict] = []
        for key in sorted(ltbs[g]):
            chans = []
            if key[0] != "local":
                t, k = chan_id[(g, key[1], key[2])]
                chans = [{"channel_type": t, "channel_ids": [k]}]
            refs = sorted({remote[g].index((grp["move"].dst, landing.get(grp["move"].index, grp["move"].write)[0]))
                           for grp in ltbs[g][key] if grp.get("side") == SEND})
            ops_of = [_group_ops(grp, landing, chans, refs, remote[g]) for grp in ltbs[g][key]]
            for ops in _segments(ops_of, sems, g):
                tb = {"id": len(tbs), "ops": ops, "channels": chans, "remote_buffer_refs": []}
                if refs:
                    tb["remote_buffer_refs"] = [{"access_channel_type": chans[0]["channel_type"],
                                                 "remote_buffer_ids": refs}]
                tbs.append(tb)
        if len(tbs) > MAX_THREADBLOCKS:
            raise InputError(f"gpu {g} needs {len(tbs)} thread blocks; an MSCCL++ plan's thread blocks must all be "
                             f"resident at once (at most {MAX_THREADBLOCKS}, one per SM of an A100)", field="export")
        channels = [{"channel_type": t, "connected_to": [b for b, _ in lst]} for t, lst in sorted(peers_of[g].items())]
        gpus.append({"id": g, "input_chunks": plan.buffers.input_chunks(),
                     "output_chunks": plan.buffers.output_chunks(), "scratch_chunks": scratch[g],
                     "threadblocks": tbs, "channels": channels,
                     "remote_buffers": [{"rank": r, "type": b, "access_channel_types": [ctype(g, r)]}
                                        for r, b in remote[g]],
                     "semaphores": [{"init_value": 0} for _ in range(sems[g])]})
    doc = {"name": name or f"planner_{schedule.algorithm or 'schedule'}_{coll.kind}_{n}",
           "collective": COLL_NAME.get(coll.kind, coll.kind), "protocol": "Simple", "inplace": False,
           "reuse_resources": False, "gpus": gpus, "num_threads_per_block": 1024, "use_double_scratch_buffer": False,
           "buffer_alignment": 16, "min_message_size": coll.size, "max_message_size": coll.size}
    if schedule.loops > 1:  # the planner's own: how many slices it timed the plan over (the executor ignores it)
        doc["loops"] = schedule.loops
    return json.dumps(doc, indent=1) + "\n"


def _sem_ops(kind: str, ids: list[int]) -> list[dict]:
    return [{"name": kind, "semaphore_ids": ids[k:k + MAX_SEMAPHORES_PER_OP]}
            for k in range(0, len(ids), MAX_SEMAPHORES_PER_OP)]


def _group_ops(grp: dict, landing: dict, chans: list, refs: list[int], remote: list) -> list[dict]:
    if "copy" in grp:
        a, b = grp["copy"]
        return _sem_ops("sem_acquire", grp["acquire"]) + [{"name": "copy", "src_buff": [_buff(a)],
                                                            "dst_buff": [_buff(b)]}] + _sem_ops("sem_release",
                                                                                                grp["release"])
    m, t = grp["move"], chans[0]["channel_type"]
    land = landing.get(m.index)
    if grp["side"] == SEND:
        target = land or m.write
        dst = {"buffer_id": refs.index(remote.index((m.dst, target[0]))), "index": target[1], "size": 1}
        if t == "memory":
            data = [{"name": "put", "src_buff": [_buff(m.read)], "dst_buff": [dst], "channel_type": t},
                    {"name": "signal", "channel_ids": [0], "channel_type": t}]
        else:
            data = [{"name": "pwsf" if grp["release"] else "pws", "src_buff": [_buff(m.read)], "dst_buff": [dst],
                     "channel_ids": [0], "channel_type": t}]
        return _sem_ops("sem_acquire", grp["acquire"]) + data + _sem_ops("sem_release", grp["release"])
    # acquired before the wait: the transfer waits; after it: only its last, local step does
    ops = (_sem_ops("sem_acquire", grp["acquire"]) + [{"name": "wait", "channel_ids": [0], "channel_type": t}]
           + _sem_ops("sem_acquire", grp["order"]))
    if land and m.combine is not None:
        ops.append({"name": "re", "src_buff": [_buff(m.combine), _buff(land)], "dst_buff": [_buff(m.write)],
                    "reduce_op": "sum"})
    elif land:
        ops.append({"name": "copy", "src_buff": [_buff(land)], "dst_buff": [_buff(m.write)]})
    return ops + _sem_ops("sem_release", grp["release"])


def _segments(ops_of: list[list[dict]], sems: list[int], g: int) -> list[list[dict]]:
    """Op lists of at most MAX_OPERATION, cut between groups and chained by semaphores."""
    out, cur = [], []
    for ops in ops_of:
        if len(ops) + 2 > MAX_OPERATION:
            raise InputError(f"one transfer needs {len(ops)} operations on gpu {g}", field="export")
        if cur and len(cur) + len(ops) + 1 > MAX_OPERATION:
            cur.append({"name": "sem_release", "semaphore_ids": [sems[g]]})
            out.append(cur)
            cur = [{"name": "sem_acquire", "semaphore_ids": [sems[g]]}]
            sems[g] += 1
        cur += ops
    out.append(cur)
    return out


# ---------------------------------------------------------------- reading

@dataclass
class _Group:
    kind: str  # "send" | "recv" | "local"
    where: str
    op: dict | None = None  # put / pws / pwsf, or the local copy / re
    final: dict | None = None  # the receiving side's copy / re
    acquire: list[int] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # acquired between the wait and the final copy / re
    release: list[int] = field(default_factory=list)
    channel: tuple | None = None
    event: int = -1


def _need(obj, key: str, where: str, src: str, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise InputError("missing", source=src, field=f"{where}.{key}")
    v = obj[key]
    if kind is not None and (not isinstance(v, kind) or isinstance(v, bool) and kind is not bool):
        raise InputError(f"expected {kind.__name__ if isinstance(kind, type) else 'a value'}, got {v!r}", source=src,
                         field=f"{where}.{key}")
    return v


def import_mscclpp_json(text_or_path, source: str | None = None, size: int | None = None,
                        root: int | None = None) -> Schedule:
    """The planner Schedule an MSCCL++ execution plan of the writer's form describes. SIZE:
    `size`, else min_message_size when it equals max_message_size, else chunks x 1 MiB."""
    if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{"):
        src = source or str(text_or_path)
        try:
            text = Path(str(text_or_path)).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read it ({exc.__class__.__name__})", source=src) from None
    else:
        text, src = str(text_or_path), source or "<mscclpp json>"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc})", source=src) from None
    name = _need(doc, "collective", "plan", src, str)
    if name not in KIND_OF:
        raise InputError(f"collective {name!r} is not one the planner models ({', '.join(KIND_OF)})", source=src,
                         field="collective")
    kind = KIND_OF[name]
    gpus = _need(doc, "gpus", "plan", src, list)
    n = len(gpus)
    if n < 2:
        raise InputError("needs at least 2 GPUs", source=src, field="gpus")
    key = "output_chunks" if kind == "allgather" else "input_chunks"
    nchunks = _need(gpus[0], key, "gpus[0]", src, int)
    per_block = nchunks if kind in ("broadcast", "reduce") else nchunks // n
    if nchunks < 1 or per_block * (1 if kind in ("broadcast", "reduce") else n) != nchunks:
        raise InputError(f"{nchunks} chunks do not split into the blocks of {kind}", source=src, field=f"gpus[0].{key}")
    groups_of, signals, waits = _read_gpus(gpus, src)
    events, strong, weak, order = _events(groups_of, signals, waits, src)
    lo, hi = doc.get("min_message_size"), doc.get("max_message_size")
    size = size or (lo if isinstance(lo, int) and lo == hi and lo > 0 else nchunks * DEFAULT_CHUNK_BYTES)
    root = infer_root(kind, events, n) if root is None else root
    try:
        coll = Collective(kind, n, int(size), root=root)
    except InputError as exc:
        raise exc.within(src, "plan") from None
    loops = positive_int(doc.get("loops", 1), source=src, field="loops", what="a whole number of runs")
    body = rebuild(coll, BufferMap.of(coll, per_block), events, strong, weak, src,
                   algorithm=f"mscclpp-json:{doc.get('name', '')}",
                   alias=_alias(kind, per_block) if doc.get("inplace") is True else None, order=order)
    return replace(body, loops=loops)


def _read_gpus(gpus: list, src: str):
    groups_of: dict[tuple[int, int], list[_Group]] = {}
    signals: dict[tuple, list[_Group]] = {}
    waits: dict[tuple, list[_Group]] = {}
    for g, gpu in enumerate(gpus):
        w = f"gpus[{g}]"
        if _need(gpu, "id", w, src, int) != g:
            raise InputError(f"gpu {g} is listed with id {gpu['id']}", source=src, field=f"{w}.id")
        flat = {}
        for ch in gpu.get("channels", []):
            t = _need(ch, "channel_type", f"{w}.channels", src, str)
            flat.setdefault(t, []).extend(_need(ch, "connected_to", f"{w}.channels", src, list))
        ident = {}  # (type, index) -> (peer, pair identity)
        for t, peers in flat.items():
            for k, p in enumerate(peers):
                nth = peers[:k].count(p)
                ident[(t, k)] = (p, (min(g, p), max(g, p), t, nth))
        rbs = [(_need(rb, "rank", f"{w}.remote_buffers", src, int), _need(rb, "type", f"{w}.remote_buffers", src, str))
               for rb in gpu.get("remote_buffers", [])]
        for tb in sorted(_need(gpu, "threadblocks", w, src, list), key=lambda tb: tb.get("id", -1)):
            t_id = _need(tb, "id", f"{w}.threadblocks", src, int)
            wt = f"{w}.threadblocks[{t_id}]"
            chans = {c["channel_type"]: c["channel_ids"] for c in tb.get("channels", [])}
            refs = {r["access_channel_type"]: r["remote_buffer_ids"] for r in tb.get("remote_buffer_refs", [])}
            groups, pending, cur = [], [], None
            for k, op in enumerate(_need(tb, "ops", wt, src, list)):
                wo = f"gpu {g} threadblock {t_id} op {k}"
                name = _need(op, "name", f"{wt}.ops[{k}]", src, str)
                try:
                    if name in ("put", "pws", "pwsf", "wait"):
                        t = op["channel_type"]
                        cur = _Group("send" if name != "wait" else "recv", wo, op if name != "wait" else None,
                                     acquire=pending)
                        pending = []
                        groups.append(cur)
                        if name != "put":
                            cur.channel = ident[(t, chans[t][op["channel_ids"][0]])]
                            (signals if name != "wait" else waits).setdefault((cur.channel[1], g), []).append(cur)
                        if name != "wait":
                            ref = op["dst_buff"][0]
                            op["_remote"] = rbs[refs[t][ref["buffer_id"]]]
                    elif name == "signal":
                        t = op["channel_type"]
                        if cur is None or cur.kind != "send" or cur.channel is not None:
                            raise InputError("a signal that does not follow a put", source=src, field=wo)
                        cur.channel = ident[(t, chans[t][op["channel_ids"][0]])]
                        signals.setdefault((cur.channel[1], g), []).append(cur)
                    elif name in ("copy", "re"):
                        if cur is not None and cur.kind == "recv" and cur.final is None and not cur.release:
                            cur.final = op
                            cur.order += pending
                        else:
                            cur = _Group("local", wo, op, acquire=pending)
                            groups.append(cur)
                        pending = []
                    elif name == "sem_acquire":
                        pending += op["semaphore_ids"]
                    elif name == "sem_release":
                        if cur is None:
                            raise InputError("a sem_release before any operation", source=src, field=wo)
                        cur.release += op["semaphore_ids"]
                    elif name != "nop":
                        raise InputError(f"operation {name!r} is not one the planner writes or reads (put, pws, pwsf, "
                                         "signal, wait, copy, re, sem_acquire, sem_release, nop)", source=src, field=wo)
                except (KeyError, IndexError, TypeError) as exc:
                    raise InputError(f"malformed operation ({exc.__class__.__name__}: {exc})", source=src,
                                     field=wo) from None
            groups_of[(g, t_id)] = groups
    return groups_of, signals, waits


def _places(g: int, buff: dict) -> tuple:
    return tuple((g, buff["type"], buff["index"] + j) for j in range(buff["size"]))


def _events(groups_of, signals, waits, src: str):
    events: list[Event] = []
    for (ident, signaller), sends in signals.items():
        peer = ident[0] if ident[1] == signaller else ident[1]
        recvs = waits.get((ident, peer), [])
        if len(sends) != len(recvs):
            raise ScheduleError(f"gpu {signaller} signals gpu {peer} {len(sends)} time(s) on channel {ident}, which "
                                f"waits {len(recvs)} time(s): the plan would hang or read too early")
        for s, r in zip(sends, recvs):
            op = s.op
            rank, btype = op["_remote"]
            landed = (rank, btype, op["dst_buff"][0]["index"])
            size = op["dst_buff"][0]["size"]
            if rank != peer:
                raise InputError(f"{s.where} puts into gpu {rank} but signals gpu {peer}", source=src)
            reads = _places(signaller, op["src_buff"][0])
            writes, combine = tuple((rank, btype, landed[2] + j) for j in range(size)), ()
            if r.final is not None:
                ins = [_places(peer, b) for b in r.final["src_buff"]]
                if writes not in ins or (r.final["name"] == "copy") != (len(ins) == 1):
                    raise InputError(f"{r.where}: the {r.final['name']} after a wait does not use what arrived",
                                     source=src)
                combine = next((x for x in ins if x != writes), ())
                writes = _places(peer, r.final["dst_buff"][0])
            s.event = r.event = len(events)
            events.append(Event("xfer", f"{s.where} -> {r.where}", signaller, peer, ident[3], reads, writes, combine))
    strong: set[tuple[int, int]] = set()
    weak: set[tuple[int, int]] = set()
    order: set[tuple[int, int]] = set()
    released: dict[tuple[int, int], _Group] = {}
    for (g, _), groups in sorted(groups_of.items()):
        for grp in groups:
            if grp.kind == "local":
                if grp.op["name"] != "copy":
                    raise InputError(f"{grp.where}: a local reduction ('re') has no counterpart in the planner's "
                                     "schedules (one value per GPU and chunk)", source=src)
                grp.event = len(events)
                events.append(Event("copy", grp.where, g, g, 0, _places(g, grp.op["src_buff"][0]),
                                    _places(g, grp.op["dst_buff"][0])))
            elif grp.event < 0:
                raise ScheduleError(f"{grp.where}: a {'put' if grp.kind == 'send' else 'wait'} without its signal / "
                                    "wait on the other GPU")
            for sem in grp.release:
                if (g, sem) in released:
                    raise InputError(f"gpu {g} semaphore {sem} is released twice; the planner reads one release and "
                                     "one acquire per semaphore", source=src)
                released[(g, sem)] = grp
    acquired = set()
    for (g, _), groups in sorted(groups_of.items()):
        prev = None
        for grp in groups:
            if prev is not None and prev.event != grp.event:
                if events[prev.event].connection is None or events[prev.event].connection != events[grp.event].connection:
                    (weak if prev.kind == "send" else strong).add((prev.event, grp.event))
            for sem in grp.acquire + grp.order:
                if (g, sem) not in released or (g, sem) in acquired:
                    raise InputError(f"{grp.where}: semaphore {sem} is acquired without its own release", source=src)
                acquired.add((g, sem))
                before = released[(g, sem)]
                if before.event != grp.event:
                    edges = order if sem in grp.order else weak if before.kind == "send" else strong
                    edges.add((before.event, grp.event))
            prev = grp
    return events, strong, weak, order
