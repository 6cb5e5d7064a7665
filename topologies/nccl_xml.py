"""NCCL topology XML (NCCL_TOPO_FILE / NCCL_TOPO_DUMP_FILE): import one server, export one server.

Import (`import_nccl_xml`, `parse_nccl_xml`) turns a `<system version="1">` document into a
one-server `Topology` (server index 0) with NOMINAL figures consistent with presets.py, not
NCCL's derated ones:

- GPUs `0/gpu{k}`, k = position in `rank` order; CPUs `0/cpu{numaid}` (switch, kind cpu);
  every other `pci` element `0/pci{n}` (switch, kind pcie; n in document order, tree kept);
  one `0/nvswitch` (kind nvswitch) for all NVSwitch targets; each `net` one NIC `0/nic{dev}`
  (a `pci` holding a single `net` is that NIC; one with several ports becomes a pci node with
  one NIC per port below it, each link carrying the pci element's bandwidth); a NIC directly
  under a `cpu` links to it at its own network speed (it is not a PCIe device); every NIC has
  a "net" link (kind net, speed/8000 GB/s, speed in Mb/s, 0 -> 10000 as NCCL) to switch `net`.
- PCIe: link to the parent pci/cpu at GT/s x encoding / 8 per lane x width (link_speed and
  link_width of the device, min with its parent pci's when both given; width 0/missing -> 16;
  missing/unknown speed -> gen3). The x16 figures are the presets' rounded constants.
- NVLink per link by sm: < 70 -> 20 (P100); 86 -> 14.0625 (GA10x bridge: 4 links, 56.25 GB/s
  per direction = 112.5 GB/s bidirectional); 70..99 -> 25; >= 100 -> 50. tclass 0x068000 or an
  unknown target -> NVSwitch; 0x068001 -> the GPU's CPU; a GPU busid -> GPU-GPU link (added in
  the reverse direction too when the peer does not list it). AMD GPUs (pci vendor 0x1002, a
  `gcn` attribute, or RCCL's `xgmi` rows) get kind "xgmi" at 64 GB/s per link for gfx94x/95x
  or sm >= 94 (MI300) and 50 otherwise (MI200). `c2c` rows: bw x count / 1000 GB/s, kind c2c.
  `pcilink` elements are ignored. A GPU sitting directly in a `cpu` that also has an NVLink/C2C
  link to it reaches the CPU over PCIe through an extra `0/pci{n}` root port (a Topology holds
  one link per ordered pair, and merging would lose the kinds).
- CPU-CPU: every pair at 2 x the largest GPU or bridge PCIe link of the file (presets.py
  `_pcie_tree` uses the same 2 x PCIe x16 of the platform: one UPI/xGMI socket link is taken
  as about two x16 links of its era), e.g. 63 GB/s on a gen4 DGX A100.
- A `gpu` without `sm` counts as sm 80; `dev`, `gdr`, cpu affinity/vendor and net port, guid,
  latency, maxconn are not used (NIC links get fabrics.NIC_LATENCY_US). C2C figures are the
  file's own (NCCL's numbers, not re-derived nominal ones).

Export (`export_nccl_xml`) writes one server of any Topology; see its docstring.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from planner.core.errors import InputError
from topologies.fabrics import NIC_LATENCY_US
from topologies.presets import (CPU_LINK_LATENCY_US, NVLINK_LATENCY_US, PCIE3_X16_GBPS, PCIE4_X16_GBPS,
                                PCIE5_X16_GBPS, PCIE_LATENCY_US, XGMI_MI250_GBPS, XGMI_MI300_GBPS)
from topologies.types import Link, Node, Topology, build_topology

# x16 bandwidth (GB/s) by GT/s: 8b/10b below 8 GT/s, 128b/130b from 8 GT/s, rounded as presets.py.
PCIE_X16_GBPS = {2.5: 4.0, 5.0: 8.0, 8.0: PCIE3_X16_GBPS, 16.0: PCIE4_X16_GBPS, 32.0: PCIE5_X16_GBPS,
                 64.0: 2 * PCIE5_X16_GBPS}
GPU_CLASS, BRIDGE_CLASS, NIC_CLASS = 0x030200, 0x060400, 0x020700
NVSWITCH_CLASS, NVLINK_CPU_CLASS = 0x068000, 0x068001
NVIDIA, AMD, MELLANOX = "0x10de", "0x1002", "0x15b3"
NO_SPEED_MBPS = 10000  # NCCL's figure for a net with speed <= 0
_SPEED_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*GT/s(?:\s+PCIe)?\s*$")
_BUSID_RE = re.compile(r"^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.([0-9a-f]+)$")


def nvlink_gbps(sm: int) -> float:
    """Nominal NVLink GB/s per link and direction for a GPU of compute capability `sm`."""
    if sm < 70:
        return 20.0
    if sm == 86:
        return 14.0625
    return 25.0 if sm < 100 else 50.0


def xgmi_gbps(sm: int, gcn: str | None) -> float:
    """Nominal xGMI GB/s per link and direction: MI300 (gfx94x/95x, sm >= 94) 64, else MI200 50."""
    if gcn:
        return XGMI_MI300_GBPS if gcn.lower().startswith(("gfx94", "gfx95")) else XGMI_MI250_GBPS
    return XGMI_MI300_GBPS if sm >= 94 else XGMI_MI250_GBPS


def pcie_gbps(gts: float | None, width: int | None) -> float:
    """PCIe GB/s per direction; None speed -> gen3, None width -> 16."""
    return PCIE_X16_GBPS[gts if gts is not None else 8.0] * (width or 16) / 16


# ----------------------------------------------------------------------------- import

@dataclass(frozen=True)
class _Gpu:
    rank: int
    busid: object
    sm: int
    amd: bool
    gcn: str | None
    parent: str
    bw: float
    cpu: str
    elem: ET.Element
    path: str


class _Reader:
    """Accumulates nodes and links while walking the element tree (one pass, O(elements))."""

    def __init__(self, source: str):
        self.source = source
        self.cpus: list[Node] = []
        self.pcis: list[Node] = []
        self.nics: dict[int, Node] = {}
        self.gpus: list[_Gpu] = []
        self.links: list[Link] = []
        self.speeds: list[tuple[str, float]] = []  # (nic id, network GB/s)

    def error(self, message: str, field: str) -> InputError:
        return InputError(message, source=self.source, field=field)

    def attr_int(self, elem: ET.Element, name: str, path: str, required: bool = False,
                 minimum: int = 0, base: int = 10) -> int | None:
        raw = elem.get(name)
        if raw is None:
            if required:
                raise self.error(f"missing required attribute {name!r}", f"{path}.{name}")
            return None
        try:
            value = int(raw.strip(), base)
        except ValueError:
            raise self.error(f"{name}={raw!r} is not a{' hex' if base == 16 else 'n'} integer",
                             f"{path}.{name}") from None
        if value < minimum:
            raise self.error(f"{name}={raw!r} must be >= {minimum}", f"{path}.{name}")
        return value

    def attr_float(self, elem: ET.Element, name: str, path: str, required: bool = False) -> float | None:
        raw = elem.get(name)
        if raw is None:
            if required:
                raise self.error(f"missing required attribute {name!r}", f"{path}.{name}")
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.error(f"{name}={raw!r} is not a number", f"{path}.{name}") from None
        if not value >= 0 or value == float("inf"):
            raise self.error(f"{name}={raw!r} must be a finite non-negative number", f"{path}.{name}")
        return value

    def link(self, a: str, b: str, bw: float, latency: float, kind: str, count: int = 1) -> None:
        self.links += [Link(a, b, bw, latency, kind, count), Link(b, a, bw, latency, kind, count)]


def _gts(raw: str | None) -> float | None:
    m = _SPEED_RE.match(raw) if raw else None
    return float(m.group(1)) if m and float(m.group(1)) in PCIE_X16_GBPS else None


def _busid(raw: str | None) -> object:
    text = (raw or "").strip().lower()
    m = _BUSID_RE.match(text)
    return tuple(int(g, 16) for g in m.groups()) if m else text


def _indexed(children: list[ET.Element], tag: str) -> Iterator[tuple[int, ET.Element]]:
    """(index among same-tag siblings, element) for the children with `tag`."""
    return ((i, e) for i, e in enumerate(c for c in children if c.tag == tag))


def _walk(rd: _Reader, elem: ET.Element, path: str, node: str, cpu: str, nic_bw: float | None) -> None:
    """Children of a cpu or pci element `elem` (node id `node`); nics of it link at `nic_bw`."""
    kids = list(elem)
    own_gts, own_width = None, None
    if elem.tag == "pci":  # a parent pci's link bounds its children's (width 0 = unknown)
        own_gts, own_width = _gts(elem.get("link_speed")), rd.attr_int(elem, "link_width", path) or None
    for i, nic in _indexed(kids, "nic"):
        for j, net in _indexed(list(nic), "net"):
            _add_nic(rd, net, f"{path}/nic[{i}]/net[{j}]", node, nic_bw)
    for i, pci in _indexed(kids, "pci"):
        p = f"{path}/pci[{i}]"
        gts = [g for g in (_gts(pci.get("link_speed")), own_gts) if g is not None]
        widths = [w for w in (rd.attr_int(pci, "link_width", p) or None, own_width) if w]
        bw = pcie_gbps(min(gts) if gts else None, min(widths) if widths else None)
        gpu = pci.find("gpu")
        nets = [(j, k, net) for j, nic in _indexed(list(pci), "nic") for k, net in _indexed(list(nic), "net")]
        if gpu is not None:
            g = f"{p}/gpu"
            vendor = rd.attr_int(pci, "vendor", p, base=16)
            gcn = gpu.get("gcn")
            rd.gpus.append(_Gpu(rd.attr_int(gpu, "rank", g, required=True), _busid(pci.get("busid")),
                                rd.attr_int(gpu, "sm", g) or 80, vendor == 0x1002 or gcn is not None,
                                gcn, node, bw, cpu, gpu, g))
        elif len(nets) == 1 and pci.find("pci") is None:
            j, k, net = nets[0]
            _add_nic(rd, net, f"{p}/nic[{j}]/net[{k}]", node, bw)
        else:
            pid = f"0/pci{len(rd.pcis)}"
            rd.pcis.append(Node(pid, "switch", 0, "pcie"))
            rd.link(pid, node, bw, PCIE_LATENCY_US, "pcie")
            _walk(rd, pci, p, pid, cpu, bw)


def _add_nic(rd: _Reader, net: ET.Element, path: str, parent: str, pcie_bw: float | None) -> None:
    dev = rd.attr_int(net, "dev", path, required=True)
    if dev in rd.nics:
        raise rd.error(f"duplicate net dev {dev}", f"{path}.dev")
    raw = rd.attr_float(net, "speed", path)  # negative speeds are rejected here
    gbps = (raw if raw else NO_SPEED_MBPS) / 8000.0
    nic = f"0/nic{dev}"
    rd.nics[dev] = Node(nic, "nic", 0, "nic")
    rd.link(nic, parent, pcie_bw if pcie_bw is not None else gbps, PCIE_LATENCY_US, "pcie")
    rd.speeds.append((nic, gbps))


def _gpu_links(rd: _Reader, gpus: list[_Gpu], ids: list[str]) -> tuple[bool, set[str]]:
    """NVLink/xGMI/C2C rows of every GPU. O(rows). Returns whether an NVSwitch is referenced
    and the GPUs linked to their CPU (NVLink tclass 0x068001 or C2C)."""
    by_busid: dict[object, str] = {}
    for g, gid in zip(gpus, ids):
        if g.busid in by_busid:
            raise rd.error("busid already used by another GPU", g.path.rsplit("/", 1)[0] + ".busid")
        if g.busid != "":
            by_busid[g.busid] = gid
    directed: dict[tuple[str, str], list] = {}
    nvswitch, to_cpu = False, set()
    for g, gid in zip(gpus, ids):
        rows = [(i, e) for tag in ("nvlink", "xgmi") for i, e in _indexed(list(g.elem), tag)]
        for i, row in rows:
            p = f"{g.path}/{row.tag}[{i}]"
            target = row.get("target")
            if not target:
                raise rd.error("missing required attribute 'target'", f"{p}.target")
            count = rd.attr_int(row, "count", p, required=True, minimum=1)
            tclass = rd.attr_int(row, "tclass", p, base=16)
            amd = g.amd or row.tag == "xgmi"
            per = xgmi_gbps(g.sm, g.gcn) if amd else nvlink_gbps(g.sm)
            kind = "xgmi" if amd else "nvlink"
            peer = by_busid.get(_busid(target))
            if tclass == NVLINK_CPU_CLASS:
                rd.link(gid, g.cpu, per * count, NVLINK_LATENCY_US, kind, count)
                to_cpu.add(gid)
            elif tclass != NVSWITCH_CLASS and peer is not None:
                if peer == gid:
                    raise rd.error(f"nvlink target {target!r} is the GPU itself", f"{p}.target")
                entry = directed.setdefault((gid, peer), [0, 0.0, kind])
                entry[0] += count
                entry[1] += per * count
            elif tclass is not None and tclass >> 16 == 0x03:
                raise rd.error(f"nvlink target GPU busid {target!r} not found", f"{p}.target")
            else:
                nvswitch = True
                rd.links += [Link(gid, "0/nvswitch", per * count, NVLINK_LATENCY_US, kind, count),
                             Link("0/nvswitch", gid, per * count, NVLINK_LATENCY_US, kind, count)]
        for i, row in _indexed(list(g.elem), "c2c"):
            p = f"{g.path}/c2c[{i}]"
            count = rd.attr_int(row, "count", p, required=True, minimum=1)
            bw = rd.attr_float(row, "bw", p, required=True)
            rd.link(gid, g.cpu, bw * count / 1000.0, NVLINK_LATENCY_US, "c2c", count)
            to_cpu.add(gid)
    for (a, b), (count, bw, kind) in list(directed.items()):
        rd.links.append(Link(a, b, bw, NVLINK_LATENCY_US, kind, count))
        if (b, a) not in directed:
            rd.links.append(Link(b, a, bw, NVLINK_LATENCY_US, kind, count))
    return nvswitch, to_cpu


def parse_nccl_xml(text: str, source: str = "<nccl-xml>") -> Topology:
    """A one-server Topology from NCCL topology XML text. O(elements); raises InputError."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(f"not well-formed XML: {exc}", source=source, field="system") from None
    rd = _Reader(source)
    if root.tag != "system":
        raise rd.error(f"root element is <{root.tag}>, expected <system>", "system")
    if rd.attr_int(root, "version", "system", required=True) != 1:
        raise rd.error(f"unsupported version {root.get('version')!r} (expected 1)", "system.version")
    for i, cpu in _indexed(list(root), "cpu"):
        p = f"system/cpu[{i}]"
        numaid = rd.attr_int(cpu, "numaid", p)
        cid = f"0/cpu{i if numaid is None else numaid}"
        if any(c.id == cid for c in rd.cpus):
            raise rd.error(f"duplicate cpu numaid {numaid}", f"{p}.numaid")
        rd.cpus.append(Node(cid, "switch", 0, "cpu"))
        _walk(rd, cpu, p, cid, cid, None)
    if not rd.gpus:
        raise rd.error("no <gpu> element with a rank (a GPU needs <pci><gpu rank=...>)", "system")
    gpus = sorted(rd.gpus, key=lambda g: g.rank)
    for a, b in zip(gpus, gpus[1:]):
        if a.rank == b.rank:
            raise rd.error(f"duplicate GPU rank {b.rank}", f"{b.path}.rank")
    ids = [f"0/gpu{k}" for k in range(len(gpus))]
    nvswitch, to_cpu = _gpu_links(rd, gpus, ids)
    for g, gid in zip(gpus, ids):
        parent = g.parent
        if parent == g.cpu and gid in to_cpu:  # keep the PCIe path apart from the NVLink/C2C link
            parent = f"0/pci{len(rd.pcis)}"
            rd.pcis.append(Node(parent, "switch", 0, "pcie"))
            rd.link(parent, g.cpu, g.bw, PCIE_LATENCY_US, "pcie")
        rd.link(gid, parent, g.bw, PCIE_LATENCY_US, "pcie")
    pcie = [l.bandwidth for l in rd.links if l.kind == "pcie" and l.src.startswith(("0/gpu", "0/pci"))]
    cpu_bw = 2 * max(pcie, default=PCIE3_X16_GBPS)
    for i, a in enumerate(rd.cpus):
        for b in rd.cpus[i + 1:]:
            rd.link(a.id, b.id, cpu_bw, CPU_LINK_LATENCY_US, "cpu")
    nodes = [Node(gid, "gpu", 0) for gid in ids] + rd.cpus + rd.pcis
    if nvswitch:
        nodes.append(Node("0/nvswitch", "switch", 0, "nvswitch"))
    nodes += [rd.nics[d] for d in sorted(rd.nics)]
    if rd.speeds:
        nodes.append(Node("net", "switch", None, "leaf"))
        for nic, gbps in rd.speeds:
            rd.link(nic, "net", gbps, NIC_LATENCY_US, "net")
    name = root.get("name") or (Path(source).stem if source != "<nccl-xml>" else "nccl-topo")
    return build_topology(name, nodes, rd.links, {"format": "nccl-xml", "source": source})


def import_nccl_xml(path: str | Path) -> Topology:
    """Read an NCCL topology XML file (see `parse_nccl_xml`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", source=str(path), field="system") from None
    return parse_nccl_xml(text, str(path))


# ----------------------------------------------------------------------------- export

def _pcie_attrs(bw: float) -> dict[str, str]:
    """link_speed/link_width for a PCIe bandwidth: an exact gen x width, else the nearest x16 gen."""
    for width in (16, 8, 4, 2, 1, 32):
        for gts, x16 in PCIE_X16_GBPS.items():
            if abs(x16 * width / 16 - bw) < 1e-6:
                return {"link_speed": f"{gts:.1f} GT/s PCIe", "link_width": str(width)}
    gts = min(PCIE_X16_GBPS, key=lambda s: abs(PCIE_X16_GBPS[s] - bw))
    return {"link_speed": f"{gts:.1f} GT/s PCIe", "link_width": "16"}


def _guess_sm(per_link: float, links: int) -> int:
    """sm for NVIDIA NVLink GB/s per link: >= 37.5 -> 100; >= 22.5 -> 70/90/80 for 6/18/other
    links (V100/H100/A100); >= 17 -> 60; below -> 86; no NVLink (per_link 0) -> 80."""
    if per_link == 0:
        return 80
    if per_link >= 37.5:
        return 100
    if per_link >= 22.5:
        return {6: 70, 18: 90}.get(links, 80)
    return 60 if per_link >= 17 else 86


def _make_busid(i: int) -> str:
    """The i-th synthetic busid: domain i // 256, bus i % 256, device 0, function 0."""
    return f"{i // 256:04x}:{i % 256:02x}:00.0"


_NVSWITCH_CHIPS = {70: 6, 80: 6, 90: 4, 100: 2}  # NVSwitch chips a GPU's NVLinks spread over


def _split(count: int, chips: int) -> list[int]:
    k = max(1, min(chips, count))
    return [count // k + (1 if i < count % k else 0) for i in range(k)]


@dataclass(frozen=True)
class _Tree:
    """One server's PCIe tree: CPU keys, children per node, uplink GB/s (None: directly in cpu)."""

    cpus: tuple[str, ...]
    children: dict[str, list[str]]
    up_bw: dict[str, float | None]
    role: dict[str, str]


def _server_nodes(topo: Topology, server: int) -> tuple[list[str], list[Node]]:
    """The server's GPUs (rank order) and member nodes; a server-less topology is taken whole."""
    if all(n.server is None for n in topo.nodes):
        return list(topo.gpus), list(topo.nodes)
    if server not in topo.servers:
        raise InputError(f"topology {topo.name!r} has no server {server}", field="server")
    gpus = set(topo.servers[server])
    return list(topo.servers[server]), [n for n in topo.nodes if n.id in gpus or
                                        (n.type != "gpu" and n.server == server)]


def _pcie_tree(topo: Topology, gpus: list[str], nodes: list[Node], nics: list[str]) -> _Tree:
    """BFS from the CPUs over pcie links (switches expand, GPUs/NICs are leaves); the
    leftovers are attached as `export_nccl_xml` says. O(nodes + links)."""
    members = {n.id for n in nodes}
    role = {n.id: ("gpu" if n.type == "gpu" else "nic" if n.type == "nic" else
                   n.kind if n.kind in ("cpu", "pcie") else "other") for n in nodes}
    cpus = [n.id for n in nodes if role[n.id] == "cpu"] or ["__cpu0"]
    children: dict[str, list[str]] = {}
    up_bw: dict[str, float | None] = {c: None for c in cpus}

    def attach(parent: str, child: str, bw: float | None) -> None:
        children.setdefault(parent, []).append(child)
        up_bw[child] = bw

    def bfs(start: list[str]) -> None:
        queue = deque(start)
        while queue:
            u = queue.popleft()
            for l in topo.out_links.get(u, ()):
                v = l.dst
                if l.kind == "pcie" and v in members and v not in up_bw and role[v] in ("pcie", "gpu", "nic"):
                    back = topo.link(v, u)
                    attach(u, v, back.bandwidth if back else l.bandwidth)
                    if role[v] == "pcie":
                        queue.append(v)

    bfs(cpus)
    for n in nodes:
        if n.id not in up_bw and role[n.id] == "pcie":
            attach(cpus[0], n.id, PCIE4_X16_GBPS)
            bfs([n.id])
    for g in gpus:
        if g not in up_bw:
            attach(cpus[0], f"__bridge{g}", PCIE4_X16_GBPS)
            attach(f"__bridge{g}", g, PCIE4_X16_GBPS)
            role[f"__bridge{g}"] = "pcie"
    for nic in nics:
        if nic not in up_bw:
            attach(cpus[0], nic, None)
    wanted = set(nics)
    children = {p: [c for c in cs if role[c] != "nic" or c in wanted] for p, cs in children.items()}
    return _Tree(tuple(cpus), children, up_bw, role)


def _gpu_rows(topo: Topology, gpus: list[str], tree: _Tree, members: set[str]):
    """Per GPU: sm, AMD flag and its rows (kind gpu|cpu|c2c|nvs, target, count, chip index),
    plus the number of NVSwitch chips used per switch node. O(GPU links)."""
    sm: dict[str, int] = {}
    amd: set[str] = set()
    rows: dict[str, list[tuple[str, str, int, int]]] = {}
    chips: dict[str, int] = {}
    for g in gpus:
        links = [l for l in topo.out_links[g] if l.dst in members and l.kind not in ("pcie", "net", "cpu")]
        nvl = [l for l in links if l.kind != "c2c"]
        per = max((l.bandwidth / max(1, l.count) for l in nvl), default=0.0)
        if any(l.kind == "xgmi" for l in nvl):
            amd.add(g)
            sm[g] = 94 if per >= 57 else 90
        else:
            sm[g] = _guess_sm(per, sum(l.count for l in nvl))
        rows[g] = []
        for l in links:
            r = tree.role[l.dst]
            if r in ("gpu", "cpu"):
                rows[g].append(("c2c" if l.kind == "c2c" and r == "cpu" else r, l.dst, l.count, 0))
            elif r != "pcie" and topo.node_by_id[l.dst].type == "switch" and l.kind != "c2c":
                parts = _split(l.count, _NVSWITCH_CHIPS.get(sm[g], 1))
                chips[l.dst] = max(chips.get(l.dst, 0), len(parts))
                rows[g] += [("nvs", l.dst, c, k) for k, c in enumerate(parts)]
    return sm, amd, rows, chips


def export_nccl_xml(topo: Topology, server: int = 0) -> str:
    """NCCL topology XML (pretty-printed, deterministic) for one server. O(nodes + links).

    Members: the server's GPUs and the switches/NICs tagged with it; a topology with no server
    index at all is exported whole. Tree: CPU nodes (kind cpu) -> `cpu` (numaid 0..), PCIe
    switches reached from them over pcie links -> bridge `pci` (0x060400), GPUs/NICs under the
    switch or CPU they link to. A PCIe switch not under a CPU hangs from the first CPU at gen4
    x16; a GPU without PCIe gets its own gen4 x16 bridge; a NIC without PCIe sits directly in
    the `cpu`; without CPUs one is synthesized. NICs with no network link are left out; a NIC's
    speed is its total link bandwidth to outside the server (or of kind net) x 8000 Mb/s.
    Busids are numbered in document order, then NVSwitch chips, then CPU NVLink targets.
    GPU links of any kind but pcie/net/cpu become rows: to an NVSwitch (any switch but cpu or
    pcie ones) as tclass 0x068000 split over a per-sm number of chips like real dumps; to a GPU
    as tclass 0x030200 with count=Link.count; to a CPU as 0x068001 (kind c2c -> `c2c`). sm from
    GB/s per link (`_guess_sm`); a GPU with an xgmi link is AMD (pci vendor 0x1002, gcn gfx942 /
    sm 94 at >= 57 GB/s per link, else gfx90a / sm 90). Per-link figures off these nominal
    values, and PCIe figures that are no gen x width, do not survive a round trip.
    """
    gpus, nodes = _server_nodes(topo, server)
    members = {n.id for n in nodes}

    def net_speed(nic: str) -> float:
        return sum(l.bandwidth for l in topo.out_links[nic] if l.kind == "net" or l.dst not in members)

    nics = {n.id: net_speed(n.id) for n in nodes if n.type == "nic" and net_speed(n.id) > 0}
    nic_index = {nic: k for k, nic in enumerate(nics)}
    tree = _pcie_tree(topo, gpus, nodes, list(nics))
    busid: dict[str, str] = {}

    def number(node: str) -> None:
        for c in tree.children.get(node, ()):
            busid[c] = _make_busid(len(busid) + 1)
            number(c)

    for c in tree.cpus:
        number(c)
    sm, amd, rows, chips = _gpu_rows(topo, gpus, tree, members)
    order = {n.id: i for i, n in enumerate(nodes)}
    targets = [(sw, k) for sw in sorted(chips, key=order.__getitem__) for k in range(chips[sw])]
    targets += [(c, 0) for c in tree.cpus]
    target_busid = {t: _make_busid(i) for i, t in enumerate(targets, start=len(busid) + 1)}
    rank = {g: k for k, g in enumerate(gpus)}

    def emit(parent: ET.Element, node: str) -> None:
        r = tree.role[node]
        holder = parent
        if tree.up_bw[node] is not None:
            cls = {"gpu": GPU_CLASS, "nic": NIC_CLASS}.get(r, BRIDGE_CLASS)
            vendor = {"gpu": AMD if node in amd else NVIDIA, "nic": MELLANOX}.get(r)
            holder = ET.SubElement(parent, "pci", busid=busid[node], **{"class": f"0x{cls:06x}"},
                                   **({"vendor": vendor} if vendor else {}), **_pcie_attrs(tree.up_bw[node]))
        if r == "gpu":
            extra = {"gcn": "gfx942" if sm[node] == 94 else "gfx90a"} if node in amd else {}
            gpu = ET.SubElement(holder, "gpu", dev=str(rank[node]), sm=str(sm[node]), **extra,
                                rank=str(rank[node]), gdr="1")
            for kind, target, count, chip in rows[node]:
                if kind == "c2c":
                    bw = topo.link(node, target).bandwidth * 1000 / count
                    ET.SubElement(gpu, "c2c", bw=f"{bw:g}", count=str(count))
                else:
                    tb = busid[target] if kind == "gpu" else target_busid[target, chip]
                    tc = {"gpu": GPU_CLASS, "cpu": NVLINK_CPU_CLASS, "nvs": NVSWITCH_CLASS}[kind]
                    ET.SubElement(gpu, "nvlink", target=tb, count=str(count), tclass=f"0x{tc:06x}")
        elif r == "nic":
            k = nic_index[node]
            ET.SubElement(ET.SubElement(holder, "nic"), "net", name=f"mlx5_{k}", dev=str(k),
                          speed=str(round(nics[node] * 8000)), port="1", latency="0",
                          guid=f"0x{0xb8cef60300000000 + k:016x}", maxconn="131072", gdr="1")
        for c in tree.children.get(node, ()):
            emit(holder, c)

    system = ET.Element("system", version="1")
    host = {"vendor": "AuthenticAMD", "familyid": "25", "modelid": "17"} if amd else \
        {"vendor": "GenuineIntel", "familyid": "6", "modelid": "143"}
    for numa, c in enumerate(tree.cpus):
        mask = ["00000000"] * len(tree.cpus)
        mask[len(tree.cpus) - 1 - numa] = "ffffffff"
        cpu = ET.SubElement(system, "cpu", numaid=str(numa), affinity=",".join(mask), arch="x86_64", **host)
        for child in tree.children.get(c, ()):
            emit(cpu, child)
    ET.indent(system, space="  ")
    return ET.tostring(system, encoding="unicode").replace(" />", "/>") + "\n"
