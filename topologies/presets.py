"""Server presets: the GPUs, intra-server fabric, PCIe tree and NICs of one server.

Every figure is nominal, per direction, and its source is listed in docs/presets.md.
Node ids are `"{server}/{local name}"`, e.g. `"0/gpu3"`, `"1/nvswitch"`, `"0/nic2"`.
NICs are returned in rail order; the fabric generators (fabrics.py) attach them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from topologies.types import Link, Node

# Per-direction link figures (GB/s) and latencies (us) shared by the presets.
NVLINK2_GBPS = 25.0     # V100: 6 links x 25 GB/s
NVLINK3_GBPS = 25.0     # A100: 12 links x 25 GB/s = 300 GB/s
NVLINK4_GBPS = 25.0     # H100/H200: 18 links x 25 GB/s = 450 GB/s
NVLINK5_GBPS = 50.0     # B200/GB200: 18 links x 50 GB/s = 900 GB/s
XGMI_MI250_GBPS = 50.0  # MI250 Infinity Fabric link, 50 GB/s per direction
XGMI_MI300_GBPS = 64.0  # MI300X Infinity Fabric link, 64 GB/s per direction
PCIE3_X16_GBPS = 15.75  # 8 GT/s x 16 lanes x 128/130 / 8
PCIE4_X16_GBPS = 31.5
PCIE5_X16_GBPS = 63.0
NVLINK_LATENCY_US = 0.7
PCIE_LATENCY_US = 1.0
CPU_LINK_LATENCY_US = 1.0

# DGX-1 (V100) hybrid cube-mesh: NVLink count between GPU i and j (each GPU has 6).
DGX1_NVLINKS = (
    (0, 2, 1, 1, 2, 0, 0, 0),
    (2, 0, 1, 2, 0, 1, 0, 0),
    (1, 1, 0, 2, 0, 0, 2, 0),
    (1, 2, 2, 0, 0, 0, 0, 1),
    (2, 0, 0, 0, 0, 2, 1, 1),
    (0, 1, 0, 0, 2, 0, 1, 2),
    (0, 0, 2, 0, 1, 1, 0, 2),
    (0, 0, 0, 1, 1, 2, 2, 0),
)


@dataclass
class ServerBuilder:
    """Collects the nodes and links of one server; ids are prefixed with the server index."""

    server: int
    gpu_model: str = ""  # the GPU preset every GPU of the server is
    nodes: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    nics: list[tuple[str, float]] = field(default_factory=list)  # (nic id, network GB/s), rail order

    def id(self, local: str) -> str:
        return f"{self.server}/{local}"

    def add_gpus(self, n: int) -> list[str]:
        ids = [self.id(f"gpu{i}") for i in range(n)]
        self.nodes.extend(Node(g, "gpu", self.server, model=self.gpu_model) for g in ids)
        return ids

    def add_switch(self, local: str, kind: str) -> str:
        self.nodes.append(Node(self.id(local), "switch", self.server, kind))
        return self.id(local)

    def add_nic(self, local: str, network_gbps: float) -> str:
        nic = self.id(local)
        self.nodes.append(Node(nic, "nic", self.server, "nic"))
        self.nics.append((nic, network_gbps))
        return nic

    def connect(self, a: str, b: str, bandwidth: float, latency: float, kind: str, count: int = 1) -> None:
        """`count` parallel links each way, `bandwidth` each."""
        self.links.append(Link(a, b, bandwidth * count, latency, kind, count))
        self.links.append(Link(b, a, bandwidth * count, latency, kind, count))


def _nvswitch_server(b: ServerBuilder, gpus: int, links_per_gpu: int, link_gbps: float,
                     nics: int, nic_gbps: float, pcie_gbps: float, gpus_per_pcie_switch: int) -> None:
    """GPUs on one (logical) NVSwitch plane; PCIe switches each with GPUs and their NICs; 2 CPUs.

    The several physical NVSwitch chips of these servers form a non-blocking crossbar, so one
    switch node with each GPU's full NVLink bandwidth gives the same cuts.
    """
    gpu_ids = b.add_gpus(gpus)
    nvs = b.add_switch("nvswitch", "nvswitch")
    for g in gpu_ids:
        b.connect(g, nvs, link_gbps, NVLINK_LATENCY_US, "nvlink", links_per_gpu)
    _pcie_tree(b, gpu_ids, nics, nic_gbps, pcie_gbps, gpus_per_pcie_switch)


def _pcie_tree(b: ServerBuilder, gpu_ids: list[str], nics: int, nic_gbps: float, pcie_gbps: float,
               gpus_per_pcie_switch: int) -> None:
    """PCIe switches under two CPUs; NIC k sits on the switch of GPU k * len(gpus) / nics."""
    n_switch = max(1, len(gpu_ids) // gpus_per_pcie_switch)
    cpus = [b.add_switch(f"cpu{c}", "cpu") for c in range(2 if n_switch > 1 else 1)]
    if len(cpus) == 2:
        b.connect(cpus[0], cpus[1], pcie_gbps * 2, CPU_LINK_LATENCY_US, "cpu")
    switches = []
    for k in range(n_switch):
        sw = b.add_switch(f"pcie{k}", "pcie")
        b.connect(sw, cpus[k * len(cpus) // n_switch], pcie_gbps, PCIE_LATENCY_US, "pcie")
        switches.append(sw)
    for i, g in enumerate(gpu_ids):
        b.connect(g, switches[i * n_switch // len(gpu_ids)], pcie_gbps, PCIE_LATENCY_US, "pcie")
    for k in range(nics):
        nic = b.add_nic(f"nic{k}", nic_gbps)
        owner = k * len(gpu_ids) // nics
        b.connect(nic, switches[owner * n_switch // len(gpu_ids)], pcie_gbps, PCIE_LATENCY_US, "pcie")


def build_dgx1(b: ServerBuilder) -> None:
    gpu_ids = b.add_gpus(8)
    for i in range(8):
        for j in range(i + 1, 8):
            if DGX1_NVLINKS[i][j]:
                b.connect(gpu_ids[i], gpu_ids[j], NVLINK2_GBPS, NVLINK_LATENCY_US, "nvlink", DGX1_NVLINKS[i][j])
    _pcie_tree(b, gpu_ids, nics=1, nic_gbps=12.5, pcie_gbps=PCIE3_X16_GBPS, gpus_per_pcie_switch=2)


def build_dgx2(b: ServerBuilder) -> None:
    _nvswitch_server(b, 16, 6, NVLINK2_GBPS, nics=8, nic_gbps=12.5, pcie_gbps=PCIE3_X16_GBPS,
                     gpus_per_pcie_switch=2)


def build_dgx_a100(b: ServerBuilder) -> None:
    _nvswitch_server(b, 8, 12, NVLINK3_GBPS, nics=8, nic_gbps=25.0, pcie_gbps=PCIE4_X16_GBPS,
                     gpus_per_pcie_switch=2)


def build_hgx_h100(b: ServerBuilder) -> None:
    _nvswitch_server(b, 8, 18, NVLINK4_GBPS, nics=8, nic_gbps=50.0, pcie_gbps=PCIE5_X16_GBPS,
                     gpus_per_pcie_switch=1)


def build_hgx_b200(b: ServerBuilder) -> None:
    _nvswitch_server(b, 8, 18, NVLINK5_GBPS, nics=8, nic_gbps=50.0, pcie_gbps=PCIE5_X16_GBPS,
                     gpus_per_pcie_switch=1)


def build_gb200_nvl72(b: ServerBuilder) -> None:
    """One NVL72 rack = one NVLink domain of 72 GPUs (18 trays x 4), one 400 Gb/s NIC per GPU."""
    _nvswitch_server(b, 72, 18, NVLINK5_GBPS, nics=72, nic_gbps=50.0, pcie_gbps=PCIE5_X16_GBPS,
                     gpus_per_pcie_switch=2)


def build_l40s_pcie(b: ServerBuilder) -> None:
    """8 L40S on PCIe Gen4 (no NVLink), two per PCIe switch under two CPUs, 4 x 200 Gb/s NICs."""
    gpu_ids = b.add_gpus(8)
    _pcie_tree(b, gpu_ids, nics=4, nic_gbps=25.0, pcie_gbps=PCIE4_X16_GBPS, gpus_per_pcie_switch=2)


def build_mi300x(b: ServerBuilder) -> None:
    gpu_ids = b.add_gpus(8)
    for i in range(8):
        for j in range(i + 1, 8):
            b.connect(gpu_ids[i], gpu_ids[j], XGMI_MI300_GBPS, NVLINK_LATENCY_US, "xgmi")
    _pcie_tree(b, gpu_ids, nics=8, nic_gbps=50.0, pcie_gbps=PCIE5_X16_GBPS, gpus_per_pcie_switch=1)


# MI250: 8 OAM packages x 2 GCDs, 7 xGMI links per GCD; (i, j, links) for i < j. In-package
# pairs (0,1), (2,3), ... have 4 links. Link multiplicities as in ForestColl's MI250 model.
MI250_XGMI: tuple[tuple[int, int, int], ...] = (
    (0, 1, 4), (0, 4, 2), (0, 8, 1), (1, 5, 1), (1, 9, 1), (1, 10, 1),
    (2, 3, 4), (2, 6, 1), (2, 9, 1), (2, 10, 1), (3, 7, 2), (3, 11, 1),
    (4, 5, 4), (4, 6, 1), (5, 6, 1), (5, 7, 1), (6, 7, 4), (8, 9, 4),
    (8, 12, 2), (9, 13, 1), (10, 11, 4), (10, 14, 1), (11, 15, 2), (12, 13, 4),
    (12, 14, 1), (13, 14, 1), (13, 15, 1), (14, 15, 4),
)


def build_mi250(b: ServerBuilder) -> None:
    gpu_ids = b.add_gpus(16)
    for i, j, count in MI250_XGMI:
        b.connect(gpu_ids[i], gpu_ids[j], XGMI_MI250_GBPS, NVLINK_LATENCY_US, "xgmi", count)
    # One 16 GB/s network port per GCD, as in ForestColl's MI250 model.
    _pcie_tree(b, gpu_ids, nics=16, nic_gbps=16.0, pcie_gbps=PCIE4_X16_GBPS, gpus_per_pcie_switch=2)


@dataclass(frozen=True)
class ServerPreset:
    name: str
    summary: str
    gpus: int
    build: Callable[[ServerBuilder], None]
    gpu: str  # the GPU preset of its GPUs (planner.core.gpus.GPU_PRESETS)
    node_gpus: int = 0  # GPUs per Slurm node when the NVLink domain spans several (0: the whole server)


SERVER_PRESETS: dict[str, ServerPreset] = {p.name: p for p in (
    ServerPreset("dgx1", "NDv2 / DGX-1: 8 V100, NVLink2 hybrid cube-mesh, 1x100Gb/s IB", 8, build_dgx1, "v100-32g"),
    ServerPreset("dgx2", "DGX-2: 16 V100 on NVSwitch (150 GB/s each), 8x100Gb/s IB", 16, build_dgx2, "v100-32g"),
    ServerPreset("dgx-a100", "DGX A100: 8 A100 on NVSwitch (300 GB/s each), 8x200Gb/s HDR", 8, build_dgx_a100, "a100-80g"),
    ServerPreset("hgx-h100", "HGX H100: 8 H100 on NVSwitch (450 GB/s each), 8x400Gb/s NDR", 8, build_hgx_h100, "h100"),
    ServerPreset("hgx-h200", "HGX H200: 8 H200 on NVSwitch (450 GB/s each), 8x400Gb/s NDR", 8, build_hgx_h100, "h200"),
    ServerPreset("hgx-b200", "HGX B200: 8 B200 on NVSwitch (900 GB/s each), 8x400Gb/s NDR", 8, build_hgx_b200, "b200"),
    ServerPreset("gb200-nvl72", "GB200 NVL72: 72 B200 in one NVLink domain (900 GB/s each), 72x400Gb/s",
                 72, build_gb200_nvl72, "gb200", node_gpus=4),
    ServerPreset("l40s-pcie", "8 L40S 48 GB on PCIe Gen4 x16 (no NVLink), 4x200Gb/s", 8, build_l40s_pcie, "l40s"),
    ServerPreset("mi250", "MI250 node: 8 MI250 = 16 GCDs on xGMI (50 GB/s links, 7 per GCD), 16 GB/s network per GCD", 16, build_mi250, "mi250"),
    ServerPreset("mi300x", "MI300X platform: 8 GPUs fully connected by xGMI (64 GB/s links), 8x400Gb/s",
                 8, build_mi300x, "mi300x"),
)}
