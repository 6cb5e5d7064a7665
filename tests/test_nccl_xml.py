"""NCCL topology XML import/export: the hand-written DGX A100 file, preset round trips, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.core.errors import InputError
from topologies.fabrics import cluster, ring
from topologies.metrics import gpu_bandwidths
from topologies.nccl_xml import export_nccl_xml, import_nccl_xml, parse_nccl_xml
from topologies.presets import PCIE3_X16_GBPS, PCIE4_X16_GBPS, PCIE5_X16_GBPS
from topologies.types import Link, Node, build_topology

DGX_A100_XML = Path(__file__).parent / "data" / "dgx-a100-nccl-topo.xml"


def _system(body: str, version: str = "1") -> str:
    return f'<system version="{version}"><cpu numaid="0" arch="x86_64">{body}</cpu></system>'


def _gpu(busid: str, rank: int, rows: str = "", sm: int = 80, pci_attrs: str = "") -> str:
    return (f'<pci busid="{busid}" class="0x030200" link_speed="16.0 GT/s PCIe" link_width="16" {pci_attrs}>'
            f'<gpu dev="{rank}" sm="{sm}" rank="{rank}" gdr="1">{rows}</gpu></pci>')


def _out(topo, src: str, kind: str) -> float:
    return sum(l.bandwidth for l in topo.out_links[src] if l.kind == kind)


# ----------------------------------------------------------------------------- DGX A100 file

def test_dgx_a100_file_matches_preset():
    topo = import_nccl_xml(DGX_A100_XML)
    rows = gpu_bandwidths(topo)
    assert topo.gpus == tuple(f"0/gpu{k}" for k in range(8))
    for row in rows:
        assert row["by_kind_GBps"] == {"nvlink": 300.0, "pcie": 31.5}
        assert row["network_share_GBps"] == 25.0
    assert rows == gpu_bandwidths(cluster("dgx-a100", 1))
    assert topo.link("0/gpu0", "0/nvswitch").count == 12
    assert topo.link("0/cpu0", "0/cpu1").bandwidth == 2 * PCIE4_X16_GBPS
    assert topo.link("0/nic3", "net").bandwidth == 25.0
    kinds = {n.id: n.kind for n in topo.nodes}
    assert [k for k in kinds if kinds[k] == "pcie"] == [f"0/pci{n}" for n in range(4)]
    assert topo.link("0/gpu5", "0/pci2") and topo.link("0/nic5", "0/pci2") and topo.link("0/pci2", "0/cpu1")


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("preset", ["dgx-a100", "hgx-h100", "dgx1", "mi300x", "mi250", "hgx-b200"])
def test_preset_round_trip(preset):
    topo = cluster(preset, 1)
    back = parse_nccl_xml(export_nccl_xml(topo), f"{preset}.xml")
    assert gpu_bandwidths(back) == gpu_bandwidths(topo)
    for a in topo.gpus:  # per-pair GPU-GPU link counts and kinds survive (dgx1, mi300x, mi250)
        for l in topo.out_links[a]:
            if l.dst in topo.rank_of:
                twin = back.link(a, l.dst)
                assert (twin.count, twin.kind, twin.bandwidth) == (l.count, l.kind, l.bandwidth)


def test_export_is_deterministic_and_realistic():
    topo = cluster("hgx-h100", 2)
    text = export_nccl_xml(topo, server=1)
    assert text == export_nccl_xml(topo, server=1) == export_nccl_xml(topo, server=0)
    assert text.startswith('<system version="1">')
    assert text.count('tclass="0x068000"') == 8 * 4  # 18 links split 5+5+4+4 like a real dump
    assert 'count="5"' in text and 'sm="90"' in text and 'speed="400000"' in text
    assert 'link_speed="32.0 GT/s PCIe" link_width="16"' in text
    assert 'link_speed="8.0 GT/s PCIe"' in export_nccl_xml(cluster("dgx1", 1))
    assert 'link_speed="16.0 GT/s PCIe"' in export_nccl_xml(cluster("dgx-a100", 1))
    with pytest.raises(InputError, match="field 'server'"):
        export_nccl_xml(topo, server=7)


def test_export_without_pcie_structure_synthesizes_cpu_and_bridges():
    text = export_nccl_xml(ring(4, 25.0))
    assert text.count("<cpu ") == 1 and text.count('class="0x060400"') == 4
    back = parse_nccl_xml(text)
    assert [_out(back, g, "nvlink") for g in back.gpus] == [50.0] * 4
    assert [_out(back, g, "pcie") for g in back.gpus] == [PCIE4_X16_GBPS] * 4


# ----------------------------------------------------------------------------- import details

@pytest.mark.parametrize("speed, width, parent, expected", [
    ("16.0 GT/s PCIe", "16", None, PCIE4_X16_GBPS),
    ("16 GT/s", "16", None, PCIE4_X16_GBPS),
    ("16.0 GT/s", "0", None, PCIE4_X16_GBPS),
    ("8.0 GT/s PCIe", None, None, PCIE3_X16_GBPS),
    ("32.0 GT/s PCIe", "16", None, PCIE5_X16_GBPS),
    ("32.0 GT/s PCIe", "8", None, PCIE5_X16_GBPS / 2),
    ("5.0 GT/s PCIe", "16", None, 8.0),
    ("Unknown", "16", None, PCIE3_X16_GBPS),
    (None, None, None, PCIE3_X16_GBPS),
    ("32.0 GT/s PCIe", "16", "16.0 GT/s PCIe", PCIE4_X16_GBPS),  # min with the parent bridge
])
def test_pcie_bandwidth(speed, width, parent, expected):
    attrs = "".join(f' {k}="{v}"' for k, v in (("link_speed", speed), ("link_width", width)) if v is not None)
    gpu = f'<pci busid="0000:07:00.0" class="0x030200"{attrs}><gpu dev="0" sm="80" rank="0" gdr="1"/></pci>'
    if parent:
        gpu = f'<pci busid="0000:01:00.0" class="0x060400" link_speed="{parent}" link_width="16">{gpu}</pci>'
    topo = parse_nccl_xml(_system(gpu))
    assert _out(topo, "0/gpu0", "pcie") == expected


@pytest.mark.parametrize("sm, per_link", [(60, 20.0), (70, 25.0), (80, 25.0), (86, 14.0625), (90, 25.0),
                                          (100, 50.0)])
def test_nvlink_per_link_by_sm(sm, per_link):
    row = '<nvlink target="fffffff:ff:ff.0" count="4" tclass="0x068000"/>'
    topo = parse_nccl_xml(_system(_gpu("0000:07:00.0", 0, row, sm=sm)))
    assert topo.link("0/gpu0", "0/nvswitch").bandwidth == 4 * per_link


def test_gpu_gpu_rows_ranks_cpu_links_and_amd():
    body = (_gpu("0000:0a:00.0", 3, '<nvlink target="0000:07:00.0" count="2" tclass="0x030200"/>')
            + _gpu("0000:07:00.0", 1, '<nvlink target="0000:0A:00.0" count="2" tclass="0x030200"/>'
                                      '<nvlink target="0000:0c:00.0" count="1" tclass="0x030200"/>'
                                      '<nvlink target="0000:f0:00.0" count="3" tclass="0x068001"/>')
            + _gpu("0000:0c:00.0", 7))
    topo = parse_nccl_xml(_system(body))
    # GPUs are numbered by rank: rank 1 -> gpu0, rank 3 -> gpu1, rank 7 -> gpu2.
    assert topo.link("0/gpu0", "0/gpu1").count == 2 and topo.link("0/gpu1", "0/gpu0").count == 2
    assert topo.link("0/gpu2", "0/gpu0").bandwidth == 25.0  # one-sided row: reverse added
    assert (topo.link("0/gpu0", "0/cpu0").bandwidth, topo.link("0/gpu0", "0/cpu0").kind) == (75.0, "nvlink")
    assert _out(topo, "0/gpu0", "pcie") == PCIE4_X16_GBPS  # via a root-port pci node, not merged
    c2c = _system('<pci busid="0009:01:00.0" class="0x030200" link_speed="32.0 GT/s PCIe" link_width="16">'
                  '<gpu dev="0" sm="100" rank="0" gdr="1"><c2c bw="44712" count="5"/>'
                  '<nvlink target="fffffff:ff:ff.0" count="18" tclass="0x068000"/></gpu></pci>')
    topo = parse_nccl_xml(c2c)
    assert gpu_bandwidths(topo)[0]["by_kind_GBps"] == {"c2c": 223.56, "nvlink": 900.0, "pcie": PCIE5_X16_GBPS}
    amd = _system(_gpu("0000:07:00.0", 0, '<xgmi target="0000:0a:00.0" count="1" tclass="0x038000"/>', sm=94,
                       pci_attrs='vendor="0x1002"') + _gpu("0000:0a:00.0", 1, sm=90, pci_attrs='vendor="0x1002"'))
    topo = parse_nccl_xml(amd)
    assert (topo.link("0/gpu0", "0/gpu1").kind, topo.link("0/gpu0", "0/gpu1").bandwidth) == ("xgmi", 64.0)


def test_nics_multi_port_and_cpu_attached():
    body = (_gpu("0000:07:00.0", 0)
            + '<pci busid="0000:0c:00.0" class="0x020700" link_speed="16.0 GT/s PCIe" link_width="16"><nic>'
              '<net name="mlx5_0" dev="0" speed="200000"/><net name="mlx5_1" dev="1" speed="0"/></nic></pci>'
            + '<nic><net name="eth0" dev="2" speed="100000"/></nic>')
    topo = parse_nccl_xml(_system(body))
    assert topo.link("0/nic0", "0/pci0").bandwidth == PCIE4_X16_GBPS
    assert topo.link("0/nic1", "net").bandwidth == 10000 / 8000  # speed 0 -> NCCL's 10 Gb/s
    assert topo.link("0/nic2", "0/cpu0").bandwidth == topo.link("0/nic2", "net").bandwidth == 12.5
    assert topo.node_by_id["net"].server is None and topo.node_by_id["net"].kind == "leaf"


# ----------------------------------------------------------------------------- errors

_NV = '<nvlink target="0000:c4:00.0" count="2" tclass="0x068000"/>'
_ERRORS = [
    ("<system version='1'><cpu>", "system"),
    ('<topology version="1"/>', "system"),
    (_system(_gpu("0000:07:00.0", 0), version="2"), "system.version"),
    ('<system><cpu numaid="0"/></system>', "system.version"),
    (_system('<pci busid="0000:07:00.0"><gpu dev="0" sm="80"/></pci>'), "system/cpu[0]/pci[0]/gpu.rank"),
    (_system(_gpu("0000:07:00.0", 0, '<nvlink count="2" tclass="0x068000"/>')),
     "system/cpu[0]/pci[0]/gpu/nvlink[0].target"),
    (_system(_gpu("0000:07:00.0", 0, _NV + '<nvlink target="0000:c5:00.0" tclass="0x068000"/>')),
     "system/cpu[0]/pci[0]/gpu/nvlink[1].count"),
    (_system(_gpu("0000:07:00.0", 0) + '<pci busid="0000:0c:00.0"><nic><net speed="1"/></nic></pci>'),
     "system/cpu[0]/pci[1]/nic[0]/net[0].dev"),
    (_system('<pci busid="0000:07:00.0"><gpu rank="zero"/></pci>'), "system/cpu[0]/pci[0]/gpu.rank"),
    (_system(_gpu("0000:07:00.0", 0, sm="eighty")), "system/cpu[0]/pci[0]/gpu.sm"),
    (_system(_gpu("0000:07:00.0", 0, '<nvlink target="0000:c4:00.0" count="two"/>')),
     "system/cpu[0]/pci[0]/gpu/nvlink[0].count"),
    (_system(_gpu("0000:07:00.0", 0, '<nvlink target="0000:c4:00.0" count="1" tclass="nvswitch"/>')),
     "system/cpu[0]/pci[0]/gpu/nvlink[0].tclass"),
    (_system('<pci busid="0000:07:00.0" link_width="x16"><gpu rank="0"/></pci>'), "system/cpu[0]/pci[0].link_width"),
    (_system(_gpu("0000:07:00.0", 0) + '<nic><net dev="0" speed="fast"/></nic>'), "system/cpu[0]/nic[0]/net[0].speed"),
    (_system(_gpu("0000:07:00.0", 0) + '<nic><net dev="0" speed="-100000"/></nic>'),
     "system/cpu[0]/nic[0]/net[0].speed"),
    (_system(_gpu("0000:07:00.0", 0) + '<nic><net dev="0"/><net dev="0"/></nic>'), "system/cpu[0]/nic[0]/net[1].dev"),
    (_system(_gpu("0000:07:00.0", 0, '<nvlink target="0000:99:00.0" count="1" tclass="0x030200"/>')),
     "system/cpu[0]/pci[0]/gpu/nvlink[0].target"),
    (_system('<pci busid="0000:07:00.0" class="0x030200"/>'), "system"),
    (_system(_gpu("0000:07:00.0", 0) + _gpu("0000:08:00.0", 0)), "system/cpu[0]/pci[1]/gpu.rank"),
    (_system(_gpu("0000:07:00.0", 0) + _gpu("0000:07:00.0", 1)), "system/cpu[0]/pci[1].busid"),
]


@pytest.mark.parametrize("text, field", _ERRORS)
def test_errors_name_file_and_field(tmp_path, text, field):
    path = tmp_path / "topo.xml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        import_nccl_xml(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        import_nccl_xml(tmp_path / "missing.xml")


# ----------------------------------------------------------------------------- property

@st.composite
def _small_topologies(draw):
    n = draw(st.integers(2, 8))
    per_link = draw(st.sampled_from([20.0, 25.0, 50.0]))
    gpus = [f"0/gpu{i}" for i in range(n)]
    nodes = [Node(g, "gpu", 0) for g in gpus]
    nodes += [Node("0/cpu0", "switch", 0, "cpu"), Node("0/pcie0", "switch", 0, "pcie")]
    links = [Link("0/pcie0", "0/cpu0", PCIE4_X16_GBPS, 1.0, "pcie"),
             Link("0/cpu0", "0/pcie0", PCIE4_X16_GBPS, 1.0, "pcie")]
    for g in gpus:
        links += [Link(g, "0/pcie0", PCIE4_X16_GBPS, 1.0, "pcie"), Link("0/pcie0", g, PCIE4_X16_GBPS, 1.0, "pcie")]
    for i in range(n):
        for j in range(i + 1, n):
            count = draw(st.integers(0, 3))
            if count:
                links += [Link(gpus[i], gpus[j], count * per_link, 0.7, "nvlink", count),
                          Link(gpus[j], gpus[i], count * per_link, 0.7, "nvlink", count)]
    if draw(st.booleans()):
        nodes.append(Node("0/nvswitch", "switch", 0, "nvswitch"))
        for g in gpus:
            count = draw(st.integers(1, 18))
            links += [Link(g, "0/nvswitch", count * per_link, 0.7, "nvlink", count),
                      Link("0/nvswitch", g, count * per_link, 0.7, "nvlink", count)]
    nics = draw(st.integers(0, 4))
    if nics:
        nodes.append(Node("leaf", "switch", None, "leaf"))
    for k in range(nics):
        nic, gbps = f"0/nic{k}", draw(st.sampled_from([12.5, 25.0, 50.0]))
        nodes.append(Node(nic, "nic", 0, "nic"))
        links += [Link(nic, "0/pcie0", PCIE4_X16_GBPS, 1.0, "pcie"), Link("0/pcie0", nic, PCIE4_X16_GBPS, 1.0, "pcie"),
                  Link(nic, "leaf", gbps, 1.0, "net"), Link("leaf", nic, gbps, 1.0, "net")]
    return build_topology("random", nodes, links)


@settings(max_examples=150, deadline=None)
@given(_small_topologies())
@pytest.mark.slow
def test_random_topologies_round_trip_nvlink(topo):
    back = parse_nccl_xml(export_nccl_xml(topo))
    assert back.gpus == topo.gpus
    assert [_out(back, g, "nvlink") for g in back.gpus] == [_out(topo, g, "nvlink") for g in topo.gpus]
    for a in topo.gpus:
        for l in topo.out_links[a]:
            if l.dst in topo.rank_of:
                assert back.link(a, l.dst).count == l.count
    assert gpu_bandwidths(back) == gpu_bandwidths(topo)
