"""Slurm's topology.conf, hostlists and node state, read into the planners' topology type."""
from __future__ import annotations

import json

import pytest

from planner.core.errors import InputError
from topologies.dataplane import data_plane_gap
from topologies.slurm import expand_hostlist, parse_node_state, parse_topology_conf, slurm_topology

TREE = """# a three-level tree
SwitchName=leaf0 Nodes=dev[00-03]
SwitchName=leaf1 Nodes=dev[04-07]
SwitchName=leaf2 Nodes=gpu[1-2],gpu7
SwitchName=spine0 Switches=leaf[0-1]
SwitchName=spine1 Switches=leaf2
SwitchName=core Switches=spine[0-1] LinkSpeed=400
"""


@pytest.mark.parametrize("expr, hosts", [
    ("dev[0-5]", ["dev0", "dev1", "dev2", "dev3", "dev4", "dev5"]),
    ("node[01-03,12]", ["node01", "node02", "node03", "node12"]),
    ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ("rack[1-2]-g[08-09]", ["rack1-g08", "rack1-g09", "rack2-g08", "rack2-g09"]),
    ("a,b[1,3],c", ["a", "b1", "b3", "c"]),
])
def test_hostlists_expand_as_slurm_does(expr, hosts):
    assert expand_hostlist(expr) == hosts


@pytest.mark.parametrize("expr", ["dev[3-1]", "dev[1-2", "dev1-2]", "a,,b", "x[a-b]", "x[]"])
def test_a_hostlist_that_does_not_parse_is_bad_input(expr):
    with pytest.raises(InputError, match="hostlist"):
        expand_hostlist(expr)


def test_a_three_level_tree_becomes_one_connected_topology(tmp_path):
    conf = tmp_path / "topology.conf"
    conf.write_text(TREE)
    state = tmp_path / "state.txt"
    state.write_text("dev00 idle\ndev01 alloc\ngpu7 drain\n")
    topo = slurm_topology(str(conf), "dgx-a100", str(state))
    meta = dict(topo.meta)
    assert topo.num_gpus == 88 and len(topo.servers) == 11
    assert meta["server_names"].split(",")[8:] == ["gpu1", "gpu2", "gpu7"]
    parents = json.loads(meta["slurm_parents"])
    assert parents["sw/leaf2"] == "sw/spine1" and parents["sw/spine0"] == "sw/core" and parents["sw/core"] is None
    assert json.loads(meta["slurm_leaf"])["gpu7"] == "sw/leaf2"
    states = json.loads(meta["node_state"])
    assert (states["dev00"], states["dev01"], states["gpu7"], states["dev05"]) == ("idle", "alloc", "drain", "idle")
    assert data_plane_gap(topo) is None
    up = topo.link("sw/leaf0", "sw/spine0")
    assert up is not None and up.bandwidth == pytest.approx(4 * 8 * 25.0)  # 4 DGX A100 x 8 HDR NICs


def test_blocks_and_their_sizes():
    tree = parse_topology_conf("BlockName=b1 Nodes=node[1-4]\nBlockName=b2 Nodes=node[5-8]\nBlockSizes=4,8\n")
    assert tree.kind == "block" and tree.block_sizes == (4, 8) and tree.leaf["node6"] == "b2"


@pytest.mark.parametrize("text, field", [
    ("SwitchName=s0 Nodes=a[1-2]\nSwitchName=s1 Nodes=a2\n", "Nodes"),
    ("SwitchName=s0 Nodes=a1\nSwitchName=s1 Switches=s9\n", "Switches"),
    ("SwitchName=s0 Nodes=a1 oops\n", "line 1"),
    ("SwitchName=s0 Nodes=a1\nBlockName=b Nodes=a2\n", "topology"),
    ("SwitchName=s0\n", "line 1"),
])
def test_a_malformed_topology_conf_names_the_line_or_field(text, field):
    with pytest.raises(InputError) as err:
        parse_topology_conf(text, "topology.conf")
    assert field in err.value.one_line() and "topology.conf" in err.value.one_line()


def test_node_state_names_an_unknown_node():
    assert parse_node_state("a1 idle\na2 down*\n", ["a1", "a2"]) == ({"a1": "idle", "a2": "down*"}, {})
    with pytest.raises(InputError, match="unknown node 'zz'") as err:
        parse_node_state("a1 idle\nzz idle\n", ["a1"], "state.txt")
    assert "line 2" in err.value.one_line()


def test_job_ranks_follow_the_order_first_fastest():
    from planner.core.placement import parse_job
    from planner.training.comm import group_ranks

    job = parse_job({"parallel": {"tp": 2, "dp": 3, "pp": 2}})
    assert job.order == ("tp", "cp", "ep", "dp", "pp") and job.world == 12
    assert job.coordinates(7) == {"tp": 1, "cp": 0, "ep": 0, "dp": 0, "pp": 1}
    assert all(job.rank(job.coordinates(r)) == r for r in range(12))
    assert job.groups("dp")[0] == (0, 2, 4) and job.groups("pp")[0] == (0, 6) and job.groups("cp") == []
    # the same groups as the training planner's Megatron order
    sizes = {"tp": 2, "cp": 1, "ep": 1, "edp": 3, "pp": 2}
    assert job.groups("dp")[0] == group_ranks(sizes, "dp") and job.groups("tp")[0] == group_ranks(sizes, "tp")
    other = parse_job({"parallel": {"tp": 2, "dp": 3, "pp": 2}, "order": "tp-pp-dp"})
    assert other.groups("pp")[0] == (0, 2)


@pytest.mark.parametrize("doc, field", [
    ({"parallel": {"tp": 0}}, "parallel.tp"),
    ({"parallel": {"xp": 2}}, "parallel.xp"),
    ({"parallel": {"tp": 2, "dp": 2}, "order": "tp-tp-dp"}, "order"),
    ({"parallel": {"tp": 2, "dp": 2}, "order": "tp-pp"}, "order"),
    ({"parallel": {"tp": 2}, "bytes_per_step": {"dp": -1}}, "bytes_per_step.dp"),
    ({"parallel": {"tp": 2}, "constraints": {"whole": True}}, "constraints.whole"),
])
def test_a_bad_job_names_its_field(doc, field):
    from planner.core.placement import parse_job

    with pytest.raises(InputError) as err:
        parse_job(doc, "job.yaml")
    assert field in err.value.one_line() and "job.yaml" in err.value.one_line()
