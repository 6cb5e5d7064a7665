import pytest

from planner.core.errors import InputError
from topologies import fabrics
from topologies.io import load_topology, parse_topology, topology_to_dict
from topologies.metrics import bisection_bandwidth, gpu_bandwidths
from topologies.presets import DGX1_NVLINKS, MI250_XGMI, SERVER_PRESETS

# (preset, GPUs, per-GPU scale-up GB/s by kind, NIC share GB/s)
PRESET_FIGURES = [
    ("dgx1", 8, {"nvlink": 150.0}, 12.5 / 8),
    ("dgx2", 16, {"nvlink": 150.0}, 100.0 / 16),
    ("dgx-a100", 8, {"nvlink": 300.0}, 25.0),
    ("hgx-h100", 8, {"nvlink": 450.0}, 50.0),
    ("hgx-h200", 8, {"nvlink": 450.0}, 50.0),
    ("hgx-b200", 8, {"nvlink": 900.0}, 50.0),
    ("gb200-nvl72", 72, {"nvlink": 900.0}, 50.0),
    ("l40s-pcie", 8, {"pcie": 31.5}, 100.0 / 8),
    ("mi250", 16, {"xgmi": 350.0}, 16.0),
    ("mi300x", 8, {"xgmi": 448.0}, 50.0),
]


@pytest.mark.parametrize("name,gpus,scale_up,share", PRESET_FIGURES)
def test_preset_figures(name, gpus, scale_up, share):
    topo = load_topology(name)
    assert topo.num_gpus == gpus
    for row in gpu_bandwidths(topo):
        for kind, value in scale_up.items():
            assert row["by_kind_GBps"][kind] == pytest.approx(value)
        assert row["network_share_GBps"] == pytest.approx(share)


def test_presets_are_all_tested():
    assert {p[0] for p in PRESET_FIGURES} == set(SERVER_PRESETS)


def test_link_multiplicities():
    assert all(sum(row) == 6 for row in DGX1_NVLINKS)
    per_gcd = [0] * 16
    for i, j, c in MI250_XGMI:
        per_gcd[i] += c
        per_gcd[j] += c
    assert per_gcd == [7] * 16
    topo = load_topology("mi250")
    assert topo.link("0/gpu0", "0/gpu1").count == 4 and topo.link("0/gpu0", "0/gpu1").bandwidth == 200.0


@pytest.mark.parametrize("arg,gpus,servers", [("hgx-h100x4", 32, 4), ("mi300xx4", 32, 4), ("dgx1x2", 16, 2),
                                              ("gb200-nvl72x2", 144, 2), ("dgx-a100", 8, 1)])
def test_preset_multiples(arg, gpus, servers):
    topo = load_topology(arg)
    assert topo.num_gpus == gpus and len(topo.servers) == servers


def test_rail_fabric_bisection():
    # 4 servers x 8 NICs x 50 GB/s, non-blocking: half the servers send 2 x 400 GB/s
    assert bisection_bandwidth(load_topology("hgx-h100x4"))["GBps"] == pytest.approx(800.0)


def test_oversubscribed_fat_tree():
    topo = fabrics.cluster("hgx-h100", 8, fabric="fat-tree", leaf_size=2, oversubscription=4)
    leaf_up = [l for l in topo.links if l.src.startswith("leaf") and l.dst == "spine"]
    assert len(leaf_up) == 4 and all(l.bandwidth == pytest.approx(2 * 8 * 50 / 4) for l in leaf_up)
    assert bisection_bandwidth(topo)["GBps"] == pytest.approx(2 * 200.0)


@pytest.mark.parametrize("gen,args,gpus,links", [
    (fabrics.ring, (6, 10.0), 6, 12), (fabrics.torus, ([2, 3], 10.0), 6, 18), (fabrics.torus, ([3, 3, 3], 1.0), 27, 162),
    (fabrics.mesh, ([2, 2], 10.0), 4, 8), (fabrics.fully_connected, (5, 10.0), 5, 20),
])
def test_direct_generators(gen, args, gpus, links):
    topo = gen(*args)
    assert topo.num_gpus == gpus and len(topo.links) == links


def test_explicit_form_round_trip():
    for name in ("dgx1", "hgx-h100x2", "mi250"):
        topo = load_topology(name)
        again = parse_topology(topology_to_dict(topo))
        assert again.nodes == topo.nodes
        assert sorted(again.links, key=lambda l: (l.src, l.dst)) == sorted(topo.links, key=lambda l: (l.src, l.dst))


def test_compact_generator_form_expands():
    doc = {"name": "c", "generator": {"preset": "dgx-a100", "servers": 2, "fabric": "fat-tree", "leaf_size": 1,
                                      "oversubscription": 2}}
    topo = parse_topology(doc, "c.yaml")
    assert topo.num_gpus == 16 and any(n.id == "spine" for n in topo.nodes)
    doc = {"generator": {"type": "torus", "dims": [2, 2], "bandwidth": "100GB/s", "latency": 0.5}}
    assert parse_topology(doc, "t.yaml").num_gpus == 4


def test_parallel_links_add_up():
    doc = {"nodes": [{"id": "a", "type": "gpu"}, {"id": "b", "type": "gpu"}],
           "links": [{"src": "a", "dst": "b", "bandwidth": 25}, {"src": "a", "dst": "b", "bandwidth": 25}]}
    topo = parse_topology(doc)
    assert topo.link("a", "b").bandwidth == 50 and topo.link("b", "a").bandwidth == 50


def test_unknown_preset_message():
    with pytest.raises(InputError) as err:
        load_topology("hgx-h999")
    assert "hgx-h100" in str(err.value)


@pytest.mark.parametrize("name", ["dgx1x2", "mi250x2", "hgx-h100x2", "dgx-a100x2", "mi300xx2"])
def test_routes_between_gpus_of_one_server_stay_inside(name):
    from topologies.routing import Router

    topo = load_topology(name)
    router = Router(topo)
    for server, gpus in topo.servers.items():
        for a in gpus:
            for b in gpus:
                if a != b:
                    path = router.route(a, b)
                    assert all(topo.node_by_id[v].server == server for v in path), path
                    assert not any(topo.node_by_id[v].type == "nic" for v in path), path


def test_a_group_gets_the_share_of_a_leaf_uplink_its_gpus_under_that_leaf_have():
    from topologies.fabrics import cluster
    from topologies.groups import group_topology

    topo = cluster("dgx-a100", 4, fabric="fat-tree", leaf_size=2)  # two leaves of 2 servers (16 GPUs)
    gpus = (topo.servers[0][0], topo.servers[2][0])  # one GPU under each leaf
    sub = group_topology(topo, gpus)
    whole = {(l.src, l.dst): l.bandwidth for l in topo.links}
    ups = [l for l in sub.links if sub.node_by_id[l.src].kind == "leaf" and sub.node_by_id[l.dst].kind == "spine"]
    assert ups and all(l.bandwidth == pytest.approx(whole[(l.src, l.dst)] / 16) for l in ups)
