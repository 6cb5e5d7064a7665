"""Every planning command over the cross product of its registered methods and export
formats, on two small topologies and a single GPU: it exits 0 (with the plan and the
export written), or 2 or 3 with one line on stderr and nothing written. Never a traceback
(the CLI runner re-raises anything the command line did not turn into an exit code), and
never exit 1: an export that does not round-trip here is an exporter's bug.
"""
from __future__ import annotations

import json

import pytest
import yaml

from kind_checks import EPLB_EXAMPLE, one_gpu_doc, one_server_doc, two_servers_doc, write_topologies
from planner.core.collectives import COLLECTIVES
from planner.kinds import KINDS

COLLECTIVE, EXPERTS, PARALLELISM = KINDS["collective"], KINDS["experts"], KINDS["parallelism"]


@pytest.fixture(scope="module")
def topologies(tmp_path_factory) -> dict:
    return write_topologies(tmp_path_factory.mktemp("topologies"), (one_server_doc(), two_servers_doc(), one_gpu_doc()))


def _exits_cleanly(result, written: list) -> None:
    """Exit 0 with everything written, or 2-3 with one line and nothing written."""
    assert result.exit_code in (0, 2, 3), result.output
    if result.exit_code == 0:
        assert all(p.exists() for p in written), result.stdout
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("planner: error:"), result.stderr
    assert not any(p.exists() for p in written), result.stderr


def _export_file(folder, fmt: str):
    return folder / ("export.xml" if fmt.endswith("xml") else "export.json")


@pytest.mark.slow
@pytest.mark.parametrize("method", COLLECTIVE.method_names)
@pytest.mark.parametrize("coll", COLLECTIVES)
def test_collective_every_method_and_export(topologies, run_cli, tmp_path, coll, method):
    size = ["--traffic", "zipf:s=1.2,seed=0", "--size", "64KiB"] if coll == "alltoallv" else ["--size", "64KiB"]
    for name, topology in topologies.items():
        _every_export(run_cli, COLLECTIVE, tmp_path / name,
                      ["collective", coll, "--topology", topology, *size, "--method", method, "--time-limit", "5"])


@pytest.fixture(scope="module")
def loads(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("loads")
    weights = EPLB_EXAMPLE.astype(int).tolist()
    plain = folder / "loads.json"
    plain.write_text(json.dumps({"weights": weights}))
    paired = folder / "pairs.json"
    paired.write_text(json.dumps({"weights": weights, "coactivation": [[[0, 1, 30], [5, 10, 40]], [[1, 2, 20]]]}))
    return {"plain": (plain, ["--gpus", "8", "--nodes", "2", "--redundant", "4", "--groups", "4"]),
            "co-activation": (paired, ["--gpus", "4", "--nodes", "2", "--slots-per-gpu", "4"])}


@pytest.mark.parametrize("method", EXPERTS.method_names)
@pytest.mark.slow
def test_experts_every_method_and_export(loads, run_cli, tmp_path, method):
    for name, (path, options) in loads.items():
        _every_export(run_cli, EXPERTS, tmp_path / name,
                      ["experts", path, *options, "--method", method, "--time-limit", "2"], must_plan=True)


@pytest.mark.parametrize("fmt", ["yaml", "json", "nccl-xml"])
def test_topology_export_every_format(topologies, run_cli, tmp_path, fmt):
    for name, topology in topologies.items():
        out = tmp_path / f"{name}.{fmt}"
        _exits_cleanly(run_cli("topology", "export", topology, "--format", fmt, "-o", out), [out])


@pytest.mark.parametrize("flag", ["--solver", "--time-limit", "--method", "--export"])
def test_bad_planning_options_are_one_line(run_cli, topologies, tmp_path, flag):
    value = {"--solver": "nope", "--time-limit": "-1", "--method": "nope", "--export": "nope"}[flag]
    plan = tmp_path / "plan.json"
    result = run_cli("collective", "allgather", "--topology", topologies["one-server"], "--size", "64KiB",
                     flag, value, "-o", plan)
    assert result.exit_code == 2
    _exits_cleanly(result, [plan])


@pytest.fixture(scope="module")
def gpu_topologies(tmp_path_factory) -> dict:
    """The same small topologies with a GPU model on every GPU node (the cost model needs it)."""
    docs = []
    for doc in (one_server_doc(), two_servers_doc(), one_gpu_doc()):
        for node in doc["nodes"]:
            if node["type"] == "gpu":
                node["model"] = "a100-80g"
        docs.append(doc)
    return write_topologies(tmp_path_factory.mktemp("gpu-topologies"), docs)


@pytest.mark.slow
@pytest.mark.parametrize("method", PARALLELISM.method_names)
def test_parallelize_every_method_and_export(gpu_topologies, run_cli, tmp_path, method):
    from kind_checks import TINY_DENSE

    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(TINY_DENSE))
    workload = tmp_path / "workload.yaml"
    workload.write_text(yaml.safe_dump({"mode": "train", "global_batch": 8, "seq_len": 1024}))
    for name, topology in gpu_topologies.items():
        _every_export(run_cli, PARALLELISM, tmp_path / name,
                      ["parallelize", "--model", model, "--topology", topology, "--workload", workload,
                       "--method", method, "--time-limit", "2"], must_plan=True)  # a small model fits everywhere


def _every_export(run_cli, kind, folder, args: list, must_plan: bool = False) -> None:
    """The command with -o, alone and with each of the kind's export formats."""
    for fmt in (None, *kind.exports):
        plan = folder / f"{fmt}" / "plan.json"
        written = [plan]
        extra = ["-o", plan]
        if fmt:
            written.append(_export_file(folder / f"{fmt}", fmt))
            extra += ["--export", fmt, "--export-file", written[-1]]
        result = run_cli(*args, *extra)
        _exits_cleanly(result, written)
        if must_plan:
            assert result.exit_code == 0, result.stderr
