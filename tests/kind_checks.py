"""The shared validator of every plan kind, and the problems it runs each method on.

`check_method(kind, method, problems)` plans every problem the method handles and applies
to, and holds each plan to what every plan of every kind must be:
- checked: the kind's own check passes on the solution again and gives the same score;
- never below the bound: `metrics.ratio_to_bound` >= 1;
- schema-valid (planner/schema/plan.schema.json);
- honest: `optimal` with a limit hit only when the plan meets its bound (the bound, not
  the solver, proved it); a search (auto, exact methods) never worse than any heuristic
  candidate run alone;
- exports round-trip: every format either refuses with one reason (InputError) or writes
  a text that, read back as a runtime or engine would, checks and scores the same.
A method added to a kind's registry is run through this by tests/test_kinds.py without a
test of its own.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from planner.core.collectives import Collective
from planner.core.errors import InputError
from planner.core.experts import Coactivation, expert_problem
from planner.core.plan import plan_schema
from planner.core.traffic import traffic_from_spec
from planner.kind import Options, PlanKind
from planner.kinds.collective import collective_problem
from planner.search import plan
from topologies.io import parse_topology

TIME_LIMIT_S = 5.0
EPLB_EXAMPLE = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                         [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=np.float64)


def one_server_doc() -> dict:
    """4 GPUs on one NVSwitch-like switch."""
    nodes = [{"id": f"g{i}", "type": "gpu", "server": 0} for i in range(4)] + [{"id": "sw", "type": "switch",
                                                                                "server": 0}]
    links = [{"src": f"g{i}", "dst": "sw", "bandwidth": 100, "latency": 0.5} for i in range(4)]
    return {"name": "one-server", "nodes": nodes, "links": links}


def two_servers_doc() -> dict:
    """2 servers x 2 GPUs: a switch inside each, one NIC per GPU on a rail switch."""
    nodes, links = [{"id": "rail0", "type": "switch"}, {"id": "rail1", "type": "switch"}], []
    for s in range(2):
        nodes.append({"id": f"{s}/sw", "type": "switch", "server": s})
        for k in range(2):
            nodes += [{"id": f"{s}/g{k}", "type": "gpu", "server": s}, {"id": f"{s}/nic{k}", "type": "nic", "server": s}]
            links += [{"src": f"{s}/g{k}", "dst": f"{s}/sw", "bandwidth": 100, "latency": 0.5},
                      {"src": f"{s}/g{k}", "dst": f"{s}/nic{k}", "bandwidth": 50, "latency": 0.5},
                      {"src": f"{s}/nic{k}", "dst": f"rail{k}", "bandwidth": 25, "latency": 2.0}]
    return {"name": "two-servers", "nodes": nodes, "links": links}


def one_gpu_doc() -> dict:
    return {"name": "one-gpu", "nodes": [{"id": "g0", "type": "gpu", "server": 0}], "links": []}


def write_topologies(folder: Path, docs=None) -> dict[str, Path]:
    out = {}
    for doc in docs or (one_server_doc(), two_servers_doc()):
        out[doc["name"]] = folder / f"{doc['name']}.yaml"
        out[doc["name"]].write_text(yaml.safe_dump(doc))
    return out


@lru_cache(maxsize=None)
def problems(kind: str) -> tuple:
    """Small problems of each kind, between them every collective and every option."""
    if kind == "collective":
        out = []
        for doc in (one_server_doc(), two_servers_doc()):
            topo = parse_topology(doc, doc["name"])
            n = topo.num_gpus
            for coll in ("allgather", "reduce-scatter", "allreduce", "broadcast", "reduce", "alltoall"):
                out.append(collective_problem(Collective(coll, n, 64 << 10, root=n - 1), topo, doc["name"]))
            matrix = traffic_from_spec("zipf:s=1.2,seed=0", n, 64 << 10)
            out.append(collective_problem(Collective("alltoallv", n, 1, traffic=matrix), topo, doc["name"]))
        return tuple(out)
    if kind == "experts":
        pairs = Coactivation(tuple(np.array(x) for x in ([0, 5], [1])), tuple(np.array(x) for x in ([1, 10], [2])),
                             tuple(np.array(x, dtype=float) for x in ([30, 40], [20])))
        skewed = np.round(np.random.default_rng(1).lognormal(0, 1.5, (3, 16)) * 100)
        return (expert_problem(EPLB_EXAMPLE, 8, 2, redundant=4, groups=4, source="eplb-example"),
                expert_problem(EPLB_EXAMPLE, 8, 2, redundant=4, source="eplb-example"),
                expert_problem(EPLB_EXAMPLE, 4, 2, slots_per_gpu=4, coactivation=pairs, source="pairs"),
                expert_problem(skewed, 8, 2, redundant=8, groups=4, source="skewed"))
    if kind == "parallelism":
        return parallelism_problems()
    if kind == "serving":
        return serving_problems()
    if kind == "placement":
        return placement_problems()
    raise KeyError(f"no test problems for kind {kind!r}: add them here")


TINY_DENSE = {"name": "tiny-dense", "layers": 8, "hidden": 1024, "ffn_hidden": 4096, "heads": 16, "vocab": 32000}
TINY_MOE = {"name": "tiny-moe", "layers": 6, "hidden": 1024, "ffn_hidden": 2048, "heads": 16, "kv_heads": 4,
            "mlp": "swiglu", "experts": 8, "top_k": 2, "expert_ffn_hidden": 1024, "shared_experts": 1,
            "dense_layers": 1, "vocab": 32000}
MIXED_CLUSTER = {"name": "h100+a100", "generator": {"servers": [{"preset": "hgx-h100"}, {"preset": "dgx-a100"}]}}


def parallelism_problems() -> tuple:
    """Small models on one server, two servers, and a cluster of two GPU types (the stage
    MILP's case: pp fixed to 2, one stage per server)."""
    from planner.core.training import parse_workload
    from planner.core.transformer import parse_model
    from planner.kinds.parallelism import training_problem
    from topologies.fabrics import cluster

    dense, moe = parse_model(TINY_DENSE, "tiny-dense"), parse_model(TINY_MOE, "tiny-moe")
    train = parse_workload({"mode": "train", "global_batch": 16, "seq_len": 2048}, "train")
    mixed = parse_topology(MIXED_CLUSTER, "h100+a100")
    return (training_problem(dense, train, cluster("dgx-a100", 1), {}, top=3),
            training_problem(moe, train, cluster("dgx-a100", 2), {"micro_batch": 1}, top=3),
            training_problem(dense, train, mixed, {"pp": 2, "tp": 8, "interleave": 1}, top=3))


SERVE = {"mode": "serve", "prompt_tokens": 512, "output_tokens": 64, "rate_rps": 20, "ttft_slo_s": 0.5,
         "tpot_slo_s": 0.03, "requests": 200, "distribution": "exponential",
         "prices": {"h100": 3.0, "a100-80g": 1.8}}


SLURM_TREE = ("SwitchName=leaf0 Nodes=dev[00-03]\nSwitchName=leaf1 Nodes=dev[04-07]\nSwitchName=leaf2 Nodes=gpu[1-4]\n"
              "SwitchName=spine0 Switches=leaf[0-1]\nSwitchName=spine1 Switches=leaf2\n"
              "SwitchName=core Switches=spine[0-1]\n")


NVL72_TREE = "SwitchName=leaf0 Nodes=tray[01-36]\nSwitchName=leaf1 Nodes=tray[37-72]\nSwitchName=spine Switches=leaf[0-1]\n"


@lru_cache(maxsize=1)
def placement_problems() -> tuple:
    """A job on a three-level Slurm tree with busy nodes; one on a fat-tree preset cluster
    with per-step bytes and a node to avoid; one sharing nodes (TP pairs on the free GPUs
    of mix nodes); one on GB200 NVL72 racks, two per leaf, its TP groups over two trays."""
    import tempfile

    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from topologies.fabrics import cluster
    from topologies.slurm import slurm_topology

    folder = Path(tempfile.mkdtemp(prefix="planner-placement-"))
    (folder / "topology.conf").write_text(SLURM_TREE)
    (folder / "state.txt").write_text("dev01 alloc\ndev05 drain\ngpu2 mix\n")
    tree = slurm_topology(str(folder / "topology.conf"), "dgx-a100", str(folder / "state.txt"))
    fat = cluster("dgx-a100", 8, fabric="fat-tree", leaf_size=2)
    (folder / "shared.txt").write_text("dev01 alloc\ndev05 drain\ngpu2 mix 4-7\ndev00 mix 0-1,6-7\ndev04 mix 2-5\n")
    shared = slurm_topology(str(folder / "topology.conf"), "dgx-a100", str(folder / "shared.txt"))
    (folder / "nvl72.conf").write_text(NVL72_TREE)
    (folder / "nvl72.txt").write_text("tray03 alloc\ntray40 drain\n")
    racks = slurm_topology(str(folder / "nvl72.conf"), "gb200-nvl72", str(folder / "nvl72.txt"))
    per_step = {"dp": 4e9, "pp": 1e8}
    return (placement_problem(parse_job({"parallel": {"tp": 8, "dp": 3, "pp": 2}}), tree, "tree"),
            placement_problem(parse_job({"parallel": {"tp": 4, "dp": 4, "pp": 2}, "bytes_per_step": per_step,
                                         "constraints": {"avoid": ["node0"]}}), fat, "fat"),
            placement_problem(parse_job({"parallel": {"tp": 2, "dp": 6, "pp": 2}, "bytes_per_step": per_step,
                                         "constraints": {"whole_nodes": False}}), shared, "shared"),
            placement_problem(parse_job({"parallel": {"tp": 8, "dp": 6, "pp": 2}, "bytes_per_step": per_step}),
                              racks, "nvl72"))


@lru_cache(maxsize=1)
def serving_problems() -> tuple:
    """A dense model at the least cost on one server; a MoE model (EP allowed) with the most
    goodput within a budget on two servers; the mixed cluster, disaggregated roles only.
    Kept (lru_cache): a problem caches its configurations' simulated capacities."""
    from planner.core.serving import parse_serve_workload
    from planner.core.transformer import MODEL_PRESETS
    from planner.kinds.serving import serving_problem
    from topologies.fabrics import cluster

    dense, moe = MODEL_PRESETS["llama2-7b"], MODEL_PRESETS["mixtral-8x7b"]
    mixed = parse_topology(MIXED_CLUSTER, "h100+a100")
    cost = parse_serve_workload(SERVE, "serve")
    goodput = parse_serve_workload({**SERVE, "objective": "goodput", "budget_per_hour": 12.0}, "serve-goodput")
    split = parse_serve_workload({**SERVE, "roles": "disaggregated"}, "serve-split")
    return (serving_problem(dense, cost, cluster("dgx-a100", 1), {}),
            serving_problem(moe, goodput, cluster("dgx-a100", 2), {}),
            serving_problem(dense, split, mixed, {}))


@lru_cache(maxsize=1)
def _schema_validator():
    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_method(kind: PlanKind, method: str, cases=None) -> int:
    """Plan every problem `method` handles and applies to, and check each plan (module
    docstring). Returns how many plans were checked."""
    checked = 0
    m = kind.method(method)
    for problem in cases if cases is not None else problems(kind.name):
        if m is not None and (not m.handles(problem) or m.applies(problem)):
            continue
        result = plan(kind, problem, method, Options(time_limit_s=TIME_LIMIT_S))
        check_plan(kind, problem, method, result)
        checked += 1
    return checked


def check_plan(kind: PlanKind, problem, method: str, result) -> None:
    doc = result.plan.to_json()
    _schema_validator().validate(json.loads(json.dumps(doc)))
    evidence, score = kind.evaluate(problem, result.solution)
    assert np.isclose(score, result.candidate.score, rtol=1e-9, atol=0), (method, score, result.candidate.score)
    assert doc["metrics"]["ratio_to_bound"] >= 1 - 1e-9, (method, doc["metrics"]["ratio_to_bound"], doc["bound"])
    if doc["solver"] is not None and doc["solver"]["status"] == "optimal" and doc["solver"]["limit_hit"]:
        assert doc["metrics"]["ratio_to_bound"] <= 1 + 1e-4, (method, doc["solver"], doc["metrics"]["ratio_to_bound"])
    if method == "auto" or kind.method(method).role == "exact":
        for other in kind.methods:
            if other.role == "candidate" and other.heuristic and other.handles(problem) and not other.applies(problem):
                alone = plan(kind, problem, other.name, Options(time_limit_s=TIME_LIMIT_S)).candidate.score
                assert result.candidate.score <= alone * (1 + 1e-9), (method, other.name, alone, result.candidate.score)
    for fmt, export in kind.exports.items():
        try:
            text = export(problem, result.candidate)
        except InputError as exc:  # the format cannot say this plan: one reason, nothing written
            assert exc.message and "\n" not in exc.one_line()
            continue
        back = kind.read_back[fmt](problem, text)
        _, score_back = kind.evaluate(problem, back)
        assert np.isclose(score_back, result.candidate.score, rtol=1e-9, atol=0), (method, fmt)
