"""A strict checker for MSCCL algorithm XML, in both dialects, against the runtimes' limits.

Dialect "msccl" is what the microsoft/msccl NCCL fork loads (src/graph/topo.cc
mscclGetAlgoFromXMLAndSetAlgo, limits in src/include/msccl.h); "exec" is what
Azure/msccl-executor-nccl and ROCm/rccl load (src/misc/msccl/msccl_parser.cc), which also
requires outofplace, minBytes and maxBytes and calls reduce-scatter `reducescatter`. Where
the two executors differ the tighter limit is enforced. docs/exports.md lists every limit
with its source. `check_msccl_xml` returns the problems it finds (empty: none); it never
raises on bad input.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    runtime: str
    max_steps: int  # steps per thread block: s < max_steps
    max_tbs: int  # thread blocks per GPU
    max_tbs_per_channel: int  # thread blocks that send (receive) on one channel of a GPU
    max_channels: int  # chan < max_channels
    max_count: int  # cnt < max_count
    colls: tuple[str, ...]
    algo_attrs: tuple[str, ...]  # required attributes of <algo>
    types: tuple[str, ...]


MAX_DEPID = 127  # dependentBid is int8_t in both runtimes
MAX_OFFSET = 32767  # srcoffset / dstoffset are int16_t
MAX_NODES = 4096  # XML nodes a rank loads: <algo>, every <gpu>, its own <tb>s and <step>s
MAX_SUBS = 1024  # children of one element
MAX_ATTRS = 16  # attributes of one element
MAX_VALUE = 254  # characters of a name or value (MAX_STR_LEN 255 with the terminator)
SEND_TYPES = ("s", "rcs", "rrs", "rrcs")
RECV_TYPES = ("r", "rcs", "rrs", "rrc", "rrcs")
USES = {"s": "src", "r": "dst", "rcs": "dst", "rrs": "src", "rrc": "src dst", "rrcs": "src dst",
        "cpy": "src dst", "re": "src dst", "ra": "src dst", "nop": ""}
STEP_ATTRS = ("s", "type", "srcbuf", "srcoff", "dstbuf", "dstoff", "cnt", "depid", "deps", "hasdep")

LIMITS = {
    "msccl": Limits("microsoft/msccl", 256, 216, 32, 32, 72,
                    ("allreduce", "allgather", "reduce", "broadcast", "alltoall", "reduce_scatter", "custom"),
                    ("name", "ngpus", "nchunksperloop", "nchannels", "proto", "coll", "inplace"),
                    ("s", "r", "rcs", "rrs", "rrc", "rrcs", "cpy", "re", "ra", "nop")),
    "exec": Limits("msccl-executor-nccl / RCCL", 64, 64, 32, 32, 72,
                   ("reduce", "broadcast", "allreduce", "reducescatter", "allgather", "send", "recv", "gather",
                    "scatter", "alltoall", "alltoallv"),
                   ("nchunksperloop", "nchannels", "ngpus", "proto", "coll", "minBytes", "maxBytes", "inplace",
                    "outofplace"),
                   ("s", "r", "rcs", "rrs", "rrc", "rrcs", "cpy", "re", "nop")),
}
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_TAG = re.compile(r"<(/?)([^<>]*)>")
_OPEN = re.compile(r'[A-Za-z_]+( [A-Za-z_]+="[^"\n]*")* ?/?')


def detect_dialect(root: ET.Element) -> str:
    return "exec" if "outofplace" in root.attrib or root.get("coll") == "reducescatter" else "msccl"


def _lexical(text: str) -> list[str]:
    """The runtimes read XML with a small hand-written parser: one start tag per line with
    single spaces between attributes, double quotes, no declaration, no tabs."""
    out = []
    if "<?" in text:
        out.append("an XML declaration or processing instruction ('<?'): the runtimes' parsers read it as an element "
                   "and fail")
    if "\t" in text:
        out.append("a tab character: the runtimes' parsers accept only spaces and newlines between elements")
    if "&" in text:
        out.append("an '&' entity: the runtimes' parsers do not decode entities")
    for m in _TAG.finditer(text):
        body = m.group(2)
        if m.group(1) or body.startswith("!--"):
            continue
        if not _OPEN.fullmatch(body):
            out.append(f"start tag <{body[:40]}...> is not in the runtimes' form (name, then name=\"value\" "
                       "attributes separated by single spaces, on one line)")
            break
    return out


def check_msccl_xml(text: str, dialect: str | None = None) -> list[str]:
    """Every problem a runtime (or a run of it) would have with this XML, as sentences."""
    problems = _lexical(text)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return problems + [f"not well-formed XML ({exc})"]
    if root.tag != "algo":
        return problems + [f"the top element is <{root.tag}>, not <algo>"]
    dialect = dialect or detect_dialect(root)
    if dialect not in LIMITS:
        return problems + [f"unknown dialect {dialect!r} (msccl | exec)"]
    return problems + _Checker(root, LIMITS[dialect], dialect).run()


class _Checker:
    def __init__(self, root: ET.Element, lim: Limits, dialect: str):
        self.root, self.lim, self.dialect, self.out = root, lim, dialect, []

    def p(self, where: str, what: str) -> None:
        self.out.append(f"{where}: {what}")

    def int(self, el: ET.Element, name: str, where: str, lo: int | None = None, hi: int | None = None) -> int | None:
        v = el.get(name)
        if v is None:
            self.p(where, f"missing attribute '{name}' ({self.lim.runtime} requires it)")
            return None
        if not _INT.fullmatch(v):
            self.p(where, f"'{name}'={v!r} is not a plain decimal integer (the runtimes read it with strtol base 0)")
            return None
        x = int(v)
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            self.p(where, f"'{name}'={x} is outside [{lo if lo is not None else '-inf'}, "
                          f"{hi if hi is not None else 'inf'}]")
        return x

    def run(self) -> list[str]:
        root, lim = self.root, self.lim
        for el in root.iter():
            if len(el.attrib) > MAX_ATTRS:
                self.p(f"<{el.tag}>", f"{len(el.attrib)} attributes; the parsers keep {MAX_ATTRS}")
            for k, v in el.attrib.items():
                if len(v) > MAX_VALUE:
                    self.p(f"<{el.tag}>", f"attribute '{k}' is {len(v)} characters long (at most {MAX_VALUE})")
        for name in lim.algo_attrs:
            if name not in root.attrib:
                self.p("algo", f"missing attribute '{name}' ({lim.runtime} requires it)")
        ngpus = self.int(root, "ngpus", "algo", 1, MAX_SUBS) if "ngpus" in root.attrib else None
        nchunks = self.int(root, "nchunksperloop", "algo", 1, MAX_OFFSET) if "nchunksperloop" in root.attrib else None
        nchannels = self.int(root, "nchannels", "algo", 1, lim.max_channels) if "nchannels" in root.attrib else None
        coll = root.get("coll")
        if coll is not None and coll not in lim.colls:
            self.p("algo", f"coll={coll!r} is not one {lim.runtime} knows ({', '.join(lim.colls)})")
        if root.get("proto") is not None and root.get("proto") not in ("Simple", "LL", "LL128"):
            self.p("algo", f"proto={root.get('proto')!r} (Simple | LL | LL128)")
        for flag in ("inplace", "outofplace"):
            if flag in root.attrib:
                self.int(root, flag, "algo", 0, 1)
        if self.dialect == "exec" and root.get("inplace") == "0" and root.get("outofplace") == "0":
            self.p("algo", "inplace=0 and outofplace=0: the executor never selects it")
        if "nthreads" in root.attrib:
            nt = self.int(root, "nthreads", "algo", 0)
            if nt is not None and nt % 32:
                self.p("algo", f"nthreads={nt} is not a multiple of 32")
        lo = self.int(root, "minBytes", "algo", 0) if "minBytes" in root.attrib else 0
        hi = self.int(root, "maxBytes", "algo", 0) if "maxBytes" in root.attrib else None
        if lo is not None and hi is not None and lo > hi and not (self.dialect == "exec" and hi == 0):
            self.p("algo", f"minBytes {lo} > maxBytes {hi}")
        if ngpus is None:
            return self.out
        gpus = self.gpus(ngpus, nchunks, nchannels, coll)
        if len(self.out) == 0:
            self.pairing(gpus)
        if len(self.out) == 0:
            self.cycles(gpus)
        return self.out

    def gpus(self, ngpus: int, nchunks: int | None, nchannels: int | None, coll: str | None) -> dict:
        lim = self.lim
        seen: dict[int, dict] = {}
        subs = [el for el in self.root if el.tag == "gpu"]
        if len(subs) > MAX_SUBS:
            self.p("algo", f"{len(subs)} <gpu> elements; the parsers keep {MAX_SUBS} children")
        for g_el in subs:
            gid = self.int(g_el, "id", "gpu", 0, ngpus - 1)
            if gid is None:
                continue
            where = f"gpu {gid}"
            if gid in seen:
                self.p(where, "appears twice")
                continue
            chunks = {b: self.int(g_el, f"{b}_chunks", where, 0, MAX_OFFSET + 1) for b in "ios"}
            if nchunks is not None and coll is not None:
                mult = {"i": ngpus if coll == "allgather" else 1,
                        "o": ngpus if coll in ("reduce_scatter", "reducescatter") else 1}
                for b, m in mult.items():
                    if chunks[b] and chunks[b] * m != nchunks:
                        self.p(where, f"{b}_chunks={chunks[b]} does not match nchunksperloop={nchunks} for {coll} "
                                      f"({b}_chunks x {m} must equal it)")
            tbs = {}
            tb_els = [el for el in g_el if el.tag == "tb"]
            if len(tb_els) > lim.max_tbs:
                self.p(where, f"{len(tb_els)} thread blocks; {lim.runtime} allows {lim.max_tbs} per GPU")
            nodes = 1 + ngpus + len(tb_els) + sum(1 for t in tb_els for s in t if s.tag == "step")
            if nodes > MAX_NODES:
                self.p(where, f"{nodes} XML nodes to load; the parsers hold {MAX_NODES}")
            for t_el in tb_els:
                tb = self.tb(t_el, gid, ngpus, nchannels, chunks)
                if tb is None:
                    continue
                if tb["id"] in tbs:
                    self.p(f"{where} tb {tb['id']}", "duplicate thread block id")
                tbs[tb["id"]] = tb
            if tbs and sorted(tbs) != list(range(len(tbs))):
                self.p(where, f"thread block ids {sorted(tbs)[:8]}... are not 0..{len(tbs) - 1} without gaps")
            per_chan: dict[tuple[str, int], list[int]] = {}
            for tb in tbs.values():
                for role in ("send", "recv"):
                    if tb[role] >= 0:
                        per_chan.setdefault((role, tb["chan"]), []).append(tb[role])
            for (role, chan), peers in per_chan.items():
                if len(peers) > lim.max_tbs_per_channel:
                    self.p(where, f"{len(peers)} thread blocks {role} on channel {chan}; {lim.runtime} allows "
                                  f"{lim.max_tbs_per_channel}")
                if len(set(peers)) != len(peers):
                    self.p(where, f"two thread blocks {role} {'to' if role == 'send' else 'from'} the same peer on "
                                  f"channel {chan} (one connection, one thread block)")
            self.deps(gid, tbs)
            seen[gid] = tbs
        missing = sorted(set(range(ngpus)) - set(seen))
        if missing:
            self.p("algo", f"no <gpu> for rank(s) {missing[:8]}")
        return seen

    def tb(self, t_el: ET.Element, gid: int, ngpus: int, nchannels: int | None, chunks: dict) -> dict | None:
        lim = self.lim
        vals = {k: self.int(t_el, k, f"gpu {gid} tb", lo, hi)
                for k, lo, hi in (("id", 0, lim.max_tbs - 1), ("send", -1, ngpus - 1), ("recv", -1, ngpus - 1),
                                  ("chan", 0, lim.max_channels - 1))}
        if any(v is None for v in vals.values()):
            return None
        where = f"gpu {gid} tb {vals['id']}"
        if gid in (vals["send"], vals["recv"]):
            self.p(where, "a thread block cannot send to or receive from its own GPU")
        if nchannels is not None and vals["chan"] >= nchannels:
            self.p(where, f"chan={vals['chan']} but the algorithm has nchannels={nchannels}")
        step_els = [el for el in t_el if el.tag == "step"]
        if len(step_els) > lim.max_steps:
            self.p(where, f"{len(step_els)} steps; {lim.runtime} allows {lim.max_steps} per thread block")
        steps = []
        for pos, s_el in enumerate(step_els):
            st = self.step(s_el, where, pos, vals, chunks)
            if st is not None:
                steps.append(st)
        return {**vals, "steps": steps, "where": where}

    def step(self, el: ET.Element, where: str, pos: int, tb: dict, chunks: dict) -> dict | None:
        lim = self.lim
        w = f"{where} step {pos}"
        missing = [a for a in STEP_ATTRS if a not in el.attrib]
        if missing:
            self.p(w, f"missing attribute(s) {', '.join(missing)} ({lim.runtime} requires every step to have them)")
            return None
        s = self.int(el, "s", w, 0)  # (too many steps is one problem of the thread block, not one per step)
        if s is not None and s != pos:
            self.p(w, f"s={s} but it is step {pos} of its thread block (the runtime counts steps in order)")
        typ = el.get("type")
        if typ not in lim.types:
            self.p(w, f"type={typ!r} is not one {lim.runtime} runs ({', '.join(lim.types)})")
            return None
        cnt = self.int(el, "cnt", w, 0 if typ == "nop" else 1, lim.max_count - 1)
        st = {"type": typ, "cnt": cnt or 0, "where": w, "pos": pos}
        for side in ("src", "dst"):
            buf, off = el.get(f"{side}buf"), self.int(el, f"{side}off", w, -1, MAX_OFFSET)
            if buf not in ("i", "o", "s"):
                self.p(w, f"{side}buf={buf!r} (i | o | s)")
                continue
            if side in USES[typ] and off is not None and cnt:
                if off < 0 or off + cnt > (chunks.get(buf) or 0):
                    self.p(w, f"{side}buf={buf} {side}off={off} cnt={cnt} is outside the {chunks.get(buf)} "
                              f"{buf}_chunks of this GPU")
            st[side] = (buf, off)
        if typ in SEND_TYPES and tb["send"] < 0:
            self.p(w, f"a '{typ}' step in a thread block with send=-1")
        if typ in RECV_TYPES and tb["recv"] < 0:
            self.p(w, f"a '{typ}' step in a thread block with recv=-1")
        st["depid"] = self.int(el, "depid", w, -1, MAX_DEPID)
        st["deps"] = self.int(el, "deps", w, -1)
        st["hasdep"] = self.int(el, "hasdep", w, 0, 1)
        if st["depid"] is not None and st["depid"] >= 0 and (st["deps"] is None or st["deps"] < 0):
            self.p(w, f"depid={st['depid']} with deps={el.get('deps')}")
        return st

    def deps(self, gid: int, tbs: dict) -> None:
        for tb in tbs.values():
            pending_nop = False
            for st in tb["steps"]:
                d = st.get("depid")
                if st["type"] == "nop":
                    if d is None or d < 0:
                        self.p(st["where"], "a nop without a dependency (the runtime's step counter then skips it)")
                    pending_nop = True
                elif pending_nop and (d is None or d < 0):
                    self.p(st["where"], "follows nop(s) but has no depid: the runtime rejects a dependency chain "
                                        "whose last step has none")
                    pending_nop = False
                else:
                    pending_nop = False
                if d is None or d < 0:
                    continue
                target = tbs.get(d)
                if target is None or st["deps"] is None or not 0 <= st["deps"] < len(target["steps"]):
                    self.p(st["where"], f"depends on tb {d} step {st['deps']}, which does not exist on gpu {gid}")
                    continue
                dep = target["steps"][st["deps"]]
                if d == tb["id"] and st["deps"] >= st["pos"]:
                    self.p(st["where"], f"depends on step {st['deps']} of its own thread block, which is not earlier")
                if dep["type"] == "nop" or dep["hasdep"] != 1:
                    self.p(st["where"], f"depends on {dep['where']}, which does not set its flag (hasdep=1, not a nop)")
            if pending_nop:
                self.p(tb["where"], "ends with nop(s) whose dependencies nothing waits for")

    def pairing(self, gpus: dict) -> None:
        sends: dict[tuple[int, int, int], list[dict]] = {}
        recvs: dict[tuple[int, int, int], list[dict]] = {}
        for gid, tbs in gpus.items():
            for tb in tbs.values():
                for st in tb["steps"]:
                    if st["type"] in SEND_TYPES:
                        sends.setdefault((gid, tb["send"], tb["chan"]), []).append(st)
                    if st["type"] in RECV_TYPES:
                        recvs.setdefault((tb["recv"], gid, tb["chan"]), []).append(st)
        for key in sorted(set(sends) | set(recvs)):
            a, b, c = key
            ss, rr = sends.get(key, []), recvs.get(key, [])
            for s, r in zip(ss, rr):
                if s["cnt"] != r["cnt"]:
                    self.p(s["where"], f"sends cnt={s['cnt']} but the matching receive {r['where']} has cnt={r['cnt']}")
            if len(ss) != len(rr):
                extra = (ss if len(ss) > len(rr) else rr)[min(len(ss), len(rr))]
                self.p(extra["where"], f"unmatched: gpu {a} sends {len(ss)} time(s) to gpu {b} on channel {c}, "
                                       f"gpu {b} receives {len(rr)} time(s)")
            for s, r in zip(ss, rr):
                s.setdefault("to", []).append(r)

    def cycles(self, gpus: dict) -> None:
        """Kahn's algorithm over steps: thread block order, dependencies, send -> receive."""
        succ: dict[int, list[int]] = {}
        indeg: dict[int, int] = {}
        steps = {}
        for tbs in gpus.values():
            for tb in tbs.values():
                prev = None
                for st in tb["steps"]:
                    steps[id(st)] = st
                    indeg.setdefault(id(st), 0)
                    edges = [prev] if prev is not None else []
                    if st.get("depid") is not None and st["depid"] >= 0:
                        edges.append(tbs[st["depid"]]["steps"][st["deps"]])
                    for e in edges:
                        succ.setdefault(id(e), []).append(id(st))
                        indeg[id(st)] += 1
                    prev = st
        for st in steps.values():
            for r in st.get("to", []):
                succ.setdefault(id(st), []).append(id(r))
                indeg[id(r)] += 1
        ready = [k for k, d in indeg.items() if d == 0]
        done = 0
        while ready:
            k = ready.pop()
            done += 1
            for m in succ.get(k, ()):
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
        if done < len(indeg):
            stuck = next(steps[k]["where"] for k, d in indeg.items() if d > 0)
            self.p(stuck, f"dependency cycle: {len(indeg) - done} steps can never run (deadlock)")
