import json

import pytest
import yaml

from conftest import DATA

GOOD_NODES = [{"id": "g0", "type": "gpu", "server": 0}, {"id": "g1", "type": "gpu", "server": 0},
              {"id": "sw", "type": "switch", "server": 0}]
GOOD_LINKS = [{"src": "g0", "dst": "sw", "bandwidth": 100}, {"src": "g1", "dst": "sw", "bandwidth": 100}]


def _doc(**changes):
    doc = {"name": "t", "nodes": [dict(n) for n in GOOD_NODES], "links": [dict(l) for l in GOOD_LINKS]}
    doc.update(changes)
    return doc


# Each bad-input class: (file content, the field the one-line message must name).
BAD_TOPOLOGIES = {
    "unknown top-level field": (_doc(colour="red"), "colour"),
    "unknown node field": (_doc(nodes=GOOD_NODES[:2] + [{"id": "sw", "type": "switch", "size": 3}]), "nodes[2].size"),
    "unknown link field": (_doc(links=[{**GOOD_LINKS[0], "speed": 3}, GOOD_LINKS[1]]), "links[0].speed"),
    "missing node id": (_doc(nodes=[{"type": "gpu"}] + GOOD_NODES[1:]), "nodes[0].id"),
    "missing bandwidth": (_doc(links=[{"src": "g0", "dst": "sw"}, GOOD_LINKS[1]]), "links[0].bandwidth"),
    "link to unknown node": (_doc(links=[GOOD_LINKS[0], {"src": "g1", "dst": "nvs", "bandwidth": 5}]), "links[1].dst"),
    "zero bandwidth": (_doc(links=[{**GOOD_LINKS[0], "bandwidth": 0}, GOOD_LINKS[1]]), "links[0].bandwidth"),
    "negative bandwidth": (_doc(links=[{**GOOD_LINKS[0], "bandwidth": -25}, GOOD_LINKS[1]]), "links[0].bandwidth"),
    "wrong bandwidth unit": (_doc(links=[{**GOOD_LINKS[0], "bandwidth": "100 furlongs"}, GOOD_LINKS[1]]),
                             "links[0].bandwidth"),
    "negative latency": (_doc(links=[{**GOOD_LINKS[0], "latency": -1}, GOOD_LINKS[1]]), "links[0].latency"),
    "unreachable GPU": (_doc(links=[GOOD_LINKS[0]]), "nodes[1]"),
    "one-way GPU": (_doc(links=[GOOD_LINKS[0], {**GOOD_LINKS[1], "bidirectional": False}]), "nodes"),
    "duplicate id": (_doc(nodes=GOOD_NODES + [{"id": "g1", "type": "gpu"}]), "nodes[3].id"),
    "no GPU": (_doc(nodes=[{"id": "sw", "type": "switch"}], links=[]), "nodes"),
    "wrong node type": (_doc(nodes=GOOD_NODES[:2] + [{"id": "sw", "type": "router"}]), "nodes[2].type"),
    "wrong type for server": (_doc(nodes=[{**GOOD_NODES[0], "server": "zero"}] + GOOD_NODES[1:]), "nodes[0].server"),
    "wrong type for nodes": (_doc(nodes="g0,g1"), "nodes"),
    "wrong type for bidirectional": (_doc(links=[{**GOOD_LINKS[0], "bidirectional": "yes"}, GOOD_LINKS[1]]),
                                     "links[0].bidirectional"),
    "bad generator": ({"generator": {"preset": "hgx-h100", "servers": 0}}, "generator.servers"),
    "unknown generator field": ({"generator": {"preset": "hgx-h100", "racks": 2}}, "generator.racks"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOPOLOGIES))
def test_bad_topology_exits_2_with_one_line(case, tmp_path, run_cli):
    doc, field = BAD_TOPOLOGIES[case]
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli("topology", "validate", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and field in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content,expect", [("", "empty"), ("   \n", "empty"), ("nodes: [\n", "invalid YAML"),
                                            ("{\"nodes\": ", "invalid JSON")])
def test_empty_or_malformed_file(content, expect, tmp_path, run_cli):
    path = tmp_path / ("t.json" if content.startswith("{") else "t.yaml")
    path.write_text(content)
    result = run_cli("topology", "validate", path)
    assert result.exit_code == 2 and expect in result.stderr and str(path) in result.stderr


def test_missing_file(run_cli, tmp_path):
    result = run_cli("topology", "show", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "not found" in result.stderr


@pytest.mark.parametrize("args,field", [
    (("allgather", "--topology", "dgx-a100", "--size", "64 parsecs"), "--size"),
    (("allgather", "--topology", "dgx-a100", "--size", "1001"), "--size"),  # does not divide into 8 blocks
    (("allgather", "--topology", "dgx-a100", "--size", "-4"), "--size"),
    (("allgather", "--topology", "dgx-a100"), "--size"),
    (("allgather", "--topology", "hgx-h999", "--size", "1MiB"), "topology"),
    (("allgather", "--topology", "dgx-a100", "--size", "1MiB", "--method", "flux"), "method"),
    (("alltoall", "--topology", "dgx-a100", "--size", "1MiB", "--method", "ring"), "method"),
    (("allgather", "--topology", "dgx-a100", "--size", "1MiB", "--solver", "gurobi"), "--solver"),
    (("broadcast", "--topology", "dgx-a100", "--size", "1MiB", "--root", "8"), "root"),
    (("alltoallv", "--topology", "dgx-a100"), "--traffic"),
])
def test_bad_collective_arguments(args, field, run_cli, tmp_path):
    out = tmp_path / "plan.json"
    result = run_cli("collective", *args, "-o", out)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and field in result.stderr
    assert not out.exists(), "nothing is written when the input is bad"


@pytest.mark.parametrize("matrix,field", [([[0, 1], [1, 0]], "matrix"), ([[0] * 8] * 7 + [[0] * 7], "matrix"),
                                          ([[0, -1] + [0] * 6] + [[0] * 8] * 7, "matrix[0][1]"),
                                          ([[0, 1.5] + [0] * 6] + [[0] * 8] * 7, "matrix[0][1]")])
def test_bad_traffic(matrix, field, tmp_path, run_cli):
    path = tmp_path / "traffic.json"
    path.write_text(json.dumps(matrix))
    result = run_cli("collective", "alltoallv", "--topology", "dgx-a100", "--traffic", path)
    assert result.exit_code == 2 and field in result.stderr and str(path) in result.stderr


def test_show_hgx_h100x4_json(run_cli, tmp_path):
    result = run_cli("topology", "show", "hgx-h100x4", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    summary = doc["summary"]
    assert summary["num_gpus"] == 32 and len(summary["gpus"]) == 32 and len(summary["servers"]) == 4
    assert {row["by_kind_GBps"]["nvlink"] for row in summary["per_gpu"]} == {450.0}
    assert summary["bisection"]["GBps"] == pytest.approx(800.0)
    # the explicit form is printed too, and loads back as a description
    assert {"nodes", "links"} <= set(doc) and sum(1 for n in doc["nodes"] if n["type"] == "gpu") == 32
    path = tmp_path / "shown.json"
    path.write_text(result.stdout)
    again = json.loads(run_cli("topology", "show", path, "--json").stdout)
    assert again["summary"]["per_gpu"] == summary["per_gpu"] and again["links"] == doc["links"]


def test_show_text_has_levels(run_cli):
    result = run_cli("topology", "show", "dgx-a100x2")
    assert result.exit_code == 0
    assert "16 GPUs in 2 server(s)" in result.stdout and "nvlink 300" in result.stdout and "L0" in result.stdout


def test_import_nccl_matches_preset(run_cli, tmp_path):
    out = tmp_path / "imported.yaml"
    result = run_cli("topology", "import-nccl", DATA / "dgx-a100-nccl-topo.xml", "-o", out)
    assert result.exit_code == 0, result.output
    imported = json.loads(run_cli("topology", "show", out, "--json").stdout)["summary"]
    preset = json.loads(run_cli("topology", "show", "dgx-a100", "--json").stdout)["summary"]
    assert imported["num_gpus"] == 8
    keys = ("by_kind_GBps", "injection_GBps", "network_GBps", "network_share_GBps")
    assert [{k: r[k] for k in keys} for r in imported["per_gpu"]] == [{k: r[k] for k in keys} for r in preset["per_gpu"]]
    assert imported["per_gpu"][0]["by_kind_GBps"]["nvlink"] == 300.0
    assert imported["per_gpu"][0]["network_share_GBps"] == 25.0


def test_export_formats_load_back(run_cli, tmp_path):
    for fmt, suffix in (("yaml", "yaml"), ("json", "json")):
        path = tmp_path / f"t.{suffix}"
        assert run_cli("topology", "export", "hgx-h100x2", "--format", fmt, "-o", path).exit_code == 0
        assert run_cli("topology", "validate", path).exit_code == 0
    xml = tmp_path / "t.xml"
    assert run_cli("topology", "export", "hgx-h100x2", "--format", "nccl-xml", "--server", "1", "-o", xml).exit_code == 0
    assert run_cli("topology", "import-nccl", xml, "-o", tmp_path / "back.json").exit_code == 0
    assert run_cli("topology", "export", "hgx-h100x2", "--format", "nccl-xml", "--server", "5").exit_code == 2


def test_topology_list(run_cli):
    result = run_cli("topology", "list", "--json")
    names = {p["name"] for p in json.loads(result.stdout)["presets"]}
    assert {"dgx1", "dgx2", "dgx-a100", "hgx-h100", "hgx-h200", "hgx-b200", "gb200-nvl72", "mi250", "mi300x"} <= names


def test_ring_allgather_dgx_a100_is_optimal(run_cli, tmp_path, plan_validator):
    out = tmp_path / "ag.json"
    result = run_cli("collective", "allgather", "--topology", "dgx-a100", "--size", "1GiB", "--method", "ring",
                     "-o", out)
    assert result.exit_code == 0, result.output
    doc = plan_validator(out)
    algbw = doc["metrics"]["algbw_GBps"]
    assert algbw == pytest.approx(8 / 7 * 300, rel=0.01)
    assert doc["metrics"]["ratio_to_bound"] <= 1.01
    assert doc["bound"]["optimal_algbw_GBps"] == pytest.approx(8 / 7 * 300, rel=1e-9)
    assert doc["solver"] is None and doc["method"] == "ring" and doc["provenance"]["heuristic"] is True


@pytest.mark.parametrize("coll", ["allgather", "reduce-scatter", "allreduce", "broadcast", "reduce", "alltoall"])
@pytest.mark.slow
def test_every_written_plan_validates_and_replays(coll, run_cli, tmp_path, plan_validator):
    out = tmp_path / f"{coll}.json"
    result = run_cli("collective", coll, "--topology", "hgx-h100x2", "--size", "16MiB", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    doc = plan_validator(out)
    assert json.loads(result.stdout)["metrics"] == doc["metrics"]
    replay = json.loads(run_cli("simulate", out, "--topology", "hgx-h100x2", "--json").stdout)
    assert replay["correct"] and replay["matches_recorded"]
    assert replay["time_us"] == pytest.approx(doc["metrics"]["time_us"], rel=1e-9)


def test_alltoallv_from_csv(run_cli, tmp_path, plan_validator):
    rows = [[0 if i == j else (i + 1) * 4096 for j in range(8)] for i in range(8)]
    path = tmp_path / "traffic.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    out = tmp_path / "v.json"
    result = run_cli("collective", "alltoallv", "--topology", "dgx-a100", "--traffic", path, "-o", out)
    assert result.exit_code == 0, result.output
    doc = plan_validator(out)
    assert doc["problem"]["traffic"] == rows
    assert json.loads(run_cli("simulate", out, "--topology", "dgx-a100", "--json").stdout)["correct"]


def test_simulate_reports_incorrect_plan(run_cli, tmp_path):
    out = tmp_path / "ag.json"
    run_cli("collective", "allgather", "--topology", "dgx-a100", "--size", "1MiB", "--method", "ring", "-o", out)
    doc = json.loads(out.read_text())
    doc["plan"]["transfers"] = doc["plan"]["transfers"][:-1]
    out.write_text(json.dumps(doc))
    result = run_cli("simulate", out, "--topology", "dgx-a100")
    assert result.exit_code == 1 and "INCORRECT" in result.stdout and "does not end with" in result.stdout
    result = run_cli("simulate", out, "--topology", "hgx-h100x2")
    assert result.exit_code == 2 and "16" in result.stderr


@pytest.mark.parametrize("args", [("allreduce", "--topology", "dgx1x2", "--size", "64MiB"),
                                  ("allgather", "--topology", "dgx-a100", "--size", "8KiB")])  # milp, proved optimal
@pytest.mark.slow
def test_same_input_same_bytes(args, run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        assert run_cli("collective", *args, "--reproducible", "-o", path).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_quickstart(run_cli, tmp_path, plan_validator):
    out = tmp_path / "qs"
    result = run_cli("quickstart", "-o", out)
    assert result.exit_code == 0, result.output
    assert "algbw" in result.stdout and "ratio to bound" in result.stdout
    plans = sorted(out.glob("*.plan.json"))
    assert len(plans) == 5
    for p in plans:
        doc = plan_validator(p)
        assert doc["problem"]["topology"] == "hgx-h100x2" and doc["metrics"]["ratio_to_bound"] >= 1.0
    assert (out / "report.md").read_text().count("|") > 20
    report = json.loads((out / "report.json").read_text())
    assert {r["collective"] for r in report["rows"]} == {"allgather", "reduce-scatter", "allreduce", "broadcast",
                                                         "alltoall"}


def test_gpus_joined_only_through_a_nic_make_collectives_infeasible(tmp_path, run_cli):
    # One server whose GPUs meet only through their NICs: physically connected (a valid
    # description), but a lone server's collectives do not use its network, so no
    # collective can run: exit 3 with the reason.
    doc = {"nodes": [{"id": "g0", "type": "gpu", "server": 0}, {"id": "g1", "type": "gpu", "server": 0},
                     {"id": "n0", "type": "nic", "server": 0}, {"id": "n1", "type": "nic", "server": 0},
                     {"id": "leaf", "type": "switch"}],
           "links": [{"src": "g0", "dst": "n0", "bandwidth": 50}, {"src": "g1", "dst": "n1", "bandwidth": 50},
                     {"src": "n0", "dst": "leaf", "bandwidth": 50}, {"src": "n1", "dst": "leaf", "bandwidth": 50}]}
    path = tmp_path / "nic-only.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_cli("topology", "validate", path)
    assert result.exit_code == 0 and "paths collectives may use" in result.stdout
    out = tmp_path / "p.json"
    result = run_cli("collective", "allgather", "--topology", path, "--size", "1MiB", "-o", out)
    assert result.exit_code == 3 and "paths collectives may use" in result.stderr and "'g1'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def _plan(run_cli, tmp_path, *args):
    out = tmp_path / "p.json"
    assert run_cli("collective", *args, "-o", out).exit_code == 0
    return out, json.loads(out.read_text())


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.pop("plan"), "plan"),
    (lambda d: d.update(problem=[1, 2]), "problem"),
    (lambda d: d["problem"].pop("ranks"), "problem"),
    (lambda d: d["plan"].update(params=[1]), "plan"),
    (lambda d: d["plan"]["transfers"][0].extend([[], []]), "plan"),
    (lambda d: d["plan"].update(transfers="x"), "plan"),
    (lambda d: d["problem"].update(size_bytes=-8), "size"),
    (lambda d: d.update(schema="other/v9"), "schema"),
])
def test_simulate_rejects_malformed_plans(mutate, field, run_cli, tmp_path):
    out, doc = _plan(run_cli, tmp_path, "allgather", "--topology", "dgx-a100", "--size", "1MiB")
    mutate(doc)
    out.write_text(json.dumps(doc))
    result = run_cli("simulate", out, "--topology", "dgx-a100")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and field in result.stderr and str(out) in result.stderr


def test_simulate_tolerates_odd_recorded_metrics(run_cli, tmp_path):
    out, doc = _plan(run_cli, tmp_path, "allgather", "--topology", "dgx-a100", "--size", "1MiB")
    doc["metrics"] = ["not", "a", "mapping"]
    out.write_text(json.dumps(doc))
    report = json.loads(run_cli("simulate", out, "--topology", "dgx-a100", "--json").stdout)
    assert report["correct"] and report["recorded_time_us"] is None and not report["matches_recorded"]


def test_simulate_json_of_an_incorrect_plan_exits_1(run_cli, tmp_path):
    out, doc = _plan(run_cli, tmp_path, "allgather", "--topology", "dgx-a100", "--size", "1MiB")
    doc["plan"]["transfers"].pop()
    out.write_text(json.dumps(doc))
    result = run_cli("simulate", out, "--topology", "dgx-a100", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["correct"] is False


def test_one_gpu_plan(run_cli, tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({"nodes": [{"id": "g", "type": "gpu"}]}))
    out, doc = _plan(run_cli, tmp_path, "allreduce", "--topology", one, "--size", "4KiB")
    assert doc["metrics"]["time_us"] == 0.0
    assert json.loads(run_cli("simulate", out, "--topology", one, "--json").stdout)["correct"]


@pytest.mark.parametrize("args,field", [
    (("allgather", "--topology", "dgx-a100", "--size", "9" * 400), "--size"),
    (("allgather", "--topology", "dgx-a100", "--size", "2PiB"), "--size"),
    (("allgather", "--topology", "dgx-a100", "--size", "1MiB", "--time-limit", "nan"), "--time-limit"),
    (("allgather", "--topology", "dgx-a100", "--size", "1MiB", "--time-limit", "abc"), "--time-limit"),
    (("allgather", "--topology", "hgx-h100x100000", "--size", "1MiB"), "servers"),
])
def test_more_bad_arguments(args, field, run_cli):
    result = run_cli("collective", *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and field in result.stderr


def test_alltoallv_takes_no_size(run_cli, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([[0 if i == j else 8 for j in range(8)] for i in range(8)]))
    result = run_cli("collective", "alltoallv", "--topology", "dgx-a100", "--traffic", path, "--size", "1MiB")
    assert result.exit_code == 2 and "--size" in result.stderr
    doc = json.loads(run_cli("collective", "alltoallv", "--topology", "dgx-a100", "--traffic", path, "--json").stdout)
    assert doc["problem"]["size_bytes"] == 7 * 8  # the largest send buffer, as alltoall's SIZE


@pytest.mark.slow
def test_unwritable_output(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("collective", "allgather", "--topology", "dgx-a100", "--size", "1MiB", "-o", blocker / "p.json")
    assert result.exit_code == 2 and "-o" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("quickstart", "-o", blocker / "sub")
    assert result.exit_code == 2 and "-o" in result.stderr


def test_plan_file_mode_follows_umask(run_cli, tmp_path):
    import os
    import stat

    out, _ = _plan(run_cli, tmp_path, "allgather", "--topology", "dgx-a100", "--size", "1MiB")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_reserved_node_id_suffix(run_cli, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"nodes": [{"id": "g", "type": "gpu"}, {"id": "g^up", "type": "gpu"}],
                                    "links": [{"src": "g", "dst": "g^up", "bandwidth": 1}]}))
    result = run_cli("topology", "validate", path)
    assert result.exit_code == 2 and "nodes[1].id" in result.stderr


@pytest.mark.slow
def test_quickstart_names_plans_after_a_topology_file(run_cli, tmp_path):
    topo = tmp_path / "my-pair.yaml"
    topo.write_text(yaml.safe_dump({"generator": {"preset": "dgx-a100", "servers": 2}}))
    out = tmp_path / "qs"
    assert run_cli("quickstart", "--topology", topo, "--size", "16MiB", "-o", out).exit_code == 0
    assert sorted(p.name for p in out.glob("*.plan.json"))[0] == "allgather-my-pair.plan.json"


def test_usage_errors_are_one_line(run_cli):
    for args in (("collective", "bogus"), ("topology", "validate", "/"), ("nope",)):
        result = run_cli(*args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_simulate_rejects_malformed_msccl_xml_in_one_line(run_cli, tmp_path):
    path = tmp_path / "algo.xml"
    path.write_text("<algo name='x'/>")
    result = run_cli("simulate", path, "--topology", "dgx-a100")
    assert result.exit_code == 2 and str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_import_nccl_with_a_zero_bandwidth_link_writes_nothing(run_cli, tmp_path):
    text = (DATA / "dgx-a100-nccl-topo.xml").read_text().replace(
        '<gpu dev="0" sm="80" rank="0" gdr="1">', '<gpu dev="0" sm="80" rank="0" gdr="1"><c2c bw="0" count="1"/>', 1)
    assert "c2c" in text
    src, out = tmp_path / "c2c.xml", tmp_path / "out.yaml"
    src.write_text(text)
    result = run_cli("topology", "import-nccl", src, "-o", out)
    assert result.exit_code == 2 and "bandwidth" in result.stderr and not out.exists()
