"""GPU placement: the command line on a Slurm topology.conf, its exports read back, the
spread metric and bound, and the bad-input paths. (Every method of the kind also goes
through tests/kind_checks.py via tests/test_kinds.py.)"""
from __future__ import annotations

import json
import math

import pytest

from kind_checks import SLURM_TREE, placement_problems
from planner.exports.placement import parse_rankfile
from planner.kinds.placement import PLACEMENT, ranks_of
from planner.kind import Options
from planner.placement import methods
from planner.search import plan


@pytest.fixture()
def slurm(tmp_path):
    (tmp_path / "topology.conf").write_text(SLURM_TREE)
    (tmp_path / "state.txt").write_text("dev01 alloc\ndev05 drain\ngpu2 mix\n")
    (tmp_path / "job.yaml").write_text("parallel: {tp: 8, dp: 3, pp: 2}\n")
    return tmp_path


def test_a_slurm_tree_is_planned_on_and_its_rankfile_and_hostfile_read_back(run_cli, slurm, plan_validator):
    for fmt in ("rankfile", "hostfile", "cuda-visible-devices"):
        out = slurm / f"ranks.{fmt}"
        r = run_cli("place", slurm / "job.yaml", "--topology", slurm / "topology.conf", "--server", "dgx-a100",
                    "--node-state", slurm / "state.txt", "--export", fmt, "--export-file", out, "-o",
                    slurm / "plan.json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads((slurm / "plan.json").read_text())
        plan_validator(doc)
        ranks = [tuple(x) for x in doc["plan"]["ranks"]]
        assert parse_rankfile(out.read_text(), fmt) == ranks
    hosts = {h for h, _ in ranks}
    assert len(ranks) == 48 and len(hosts) == 6 and not hosts & {"dev01", "dev05", "gpu2"}
    assert doc["plan"]["order"] == "tp-cp-ep-dp-pp"


@pytest.mark.parametrize("parallel", [{"tp": 8, "dp": 4, "pp": 2}, {"tp": 4, "dp": 4, "pp": 4}, {"tp": 8, "pp": 6}])
def test_milp_and_greedy_reach_the_spread_bound_on_an_idle_cluster(parallel):
    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from topologies.fabrics import cluster

    problem = placement_problem(parse_job({"parallel": parallel}), cluster("dgx-a100", 8, fabric="fat-tree",
                                                                          leaf_size=4), "fat")
    exact = plan(PLACEMENT, problem, "milp", Options(5)).plan.to_json()
    assert exact["solver"]["status"] == "optimal" and exact["metrics"]["ratio_to_bound"] == pytest.approx(1, abs=1e-3)
    greedy = plan(PLACEMENT, problem, "greedy", Options(5)).plan.to_json()
    assert greedy["metrics"]["score"] == pytest.approx(exact["metrics"]["score"])


def test_spread_counts_the_domains_a_group_touches_minus_one():
    problem = placement_problems()[0]
    c = problem.cluster
    node_of = methods.linear(c)
    spreads = methods.spreads(c, node_of)
    for g in c.groups:
        leaves = {c.domains[node_of[b]][0] for b in g.blocks}
        assert len(leaves) - 1 <= spreads[g.kind]["leaf"][0]
    rank_table = ranks_of(problem, type(plan(PLACEMENT, problem, "linear").solution)(node_of))
    assert rank_table[0] == ("dev00", 0) and rank_table[8] == ("dev02", 0)  # dev01 is busy


def test_bad_input_and_infeasible_jobs(run_cli, slurm):
    big = slurm / "big.yaml"
    big.write_text("parallel: {tp: 8, dp: 8, pp: 2}\n")
    args = ("--topology", slurm / "topology.conf", "--server", "dgx-a100", "--node-state", slurm / "state.txt")
    r = run_cli("place", big, *args, "-o", slurm / "p.json")
    assert r.exit_code == 3 and "needs 16 nodes" in r.stderr and not (slurm / "p.json").exists()
    (slurm / "bad_state.txt").write_text("dev00 idle\nnope idle\n")
    r = run_cli("place", slurm / "job.yaml", "--topology", slurm / "topology.conf", "--server", "dgx-a100",
                "--node-state", slurm / "bad_state.txt")
    assert r.exit_code == 2 and "unknown node 'nope'" in r.stderr and "line 2" in r.stderr
    (slurm / "bad.conf").write_text("SwitchName=s0 Nodes=dev[3-1]\n")
    r = run_cli("place", slurm / "job.yaml", "--topology", slurm / "bad.conf", "--server", "dgx-a100")
    assert r.exit_code == 2 and "runs backwards" in r.stderr
    r = run_cli("place", slurm / "job.yaml", "--topology", "hgx-h100x8", "--node-state", slurm / "state.txt")
    assert r.exit_code == 2 and "--node-state" in r.stderr
    r = run_cli("place", slurm / "job.yaml", *args, "--oversubscription", "0.5")
    assert r.exit_code == 2 and "--oversubscription" in r.stderr
    (slurm / "tp.yaml").write_text("parallel: {tp: 16, dp: 2}\n")
    r = run_cli("place", slurm / "tp.yaml", "--topology", "hgx-h100x8")
    assert r.exit_code == 3 and "tp 16" in r.stderr


def test_per_step_bytes_are_priced_on_the_gpus_each_group_gets():
    problem = placement_problems()[1]  # bytes_per_step dp 4e9, pp 1e8
    linear = plan(PLACEMENT, problem, "linear").plan.to_json()["metrics"]
    assert set(linear["comm_time_s"]) == {"dp", "pp"} and linear["comm_time_s"]["dp"] > linear["comm_time_s"]["pp"] > 0
    assert linear["comm_time_per_step_s"] == pytest.approx(sum(linear["comm_time_s"].values()))


def test_a_model_and_workload_derive_the_per_step_bytes():
    from planner.core.errors import InputError
    from planner.core.placement import parse_job
    from planner.core.transformer import MODEL_PRESETS

    job = parse_job({"parallel": {"tp": 4, "pp": 8, "dp": 24}, "model": "llama3-70b",
                     "workload": {"seq_len": 4096, "global_batch": 768}})
    spec = MODEL_PRESETS["llama3-70b"]
    per_step = dict(job.bytes_per_step)
    assert per_step["dp"] == pytest.approx(spec.params / 32 * 2)
    assert per_step["pp"] == pytest.approx(2 * 768 / 24 * 4096 * 8192 * 2)
    with pytest.raises(InputError, match="global_batch"):
        parse_job({"parallel": {"dp": 3, "tp": 8}, "model": "llama3-8b", "workload": {"seq_len": 8, "global_batch": 8}})
    with pytest.raises(InputError, match="needs a model"):
        parse_job({"parallel": {"dp": 2}, "workload": {"seq_len": 8, "global_batch": 8}})


BUSY_TREE = "".join(f"SwitchName=l{s} Nodes=n[{6 * s:02d}-{6 * s + 5:02d}]\nSwitchName=s{s} Switches=l{s}\n"
                    for s in range(3)) + "SwitchName=core Switches=s[0-2]\n"


def _busy_problem(tmp_path, parallel, busy=("n01", "n04", "n08", "n13", "n16"), **kw):
    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from topologies.slurm import slurm_topology

    (tmp_path / "topology.conf").write_text(BUSY_TREE)
    (tmp_path / "state.txt").write_text("".join(f"{n} alloc\n" for n in busy))
    topo = slurm_topology(str(tmp_path / "topology.conf"), "dgx-a100", str(tmp_path / "state.txt"),
                          kw.pop("oversubscription", 1.0))
    return placement_problem(parse_job({"parallel": parallel, **kw}), topo, "busy")


def test_the_local_search_never_worsens_and_mends_hostname_order(tmp_path):
    from planner.placement.local_search import improve

    c = _busy_problem(tmp_path, {"dp": 12, "tp": 4, "pp": 2}).cluster
    for start in (methods.linear(c), methods.best_fit(c), methods.random(c)):
        assert methods.score(c, improve(c, start)) <= methods.score(c, start) + 1e-9
    linear = methods.linear(c)  # its DP groups straddle two leaves; pulling them together helps
    assert methods.score(c, improve(c, linear)) < methods.score(c, linear) - 1


def test_the_grid_bound_is_met_by_the_proven_optimum(tmp_path):
    problem = _busy_problem(tmp_path, {"dp": 12, "tp": 4, "pp": 2}, busy=())
    from planner.placement.bound import grid, kept_bound

    assert grid(problem.cluster)[0] == {"dp": (2, 6), "pp": (6, 2)}
    exact = plan(PLACEMENT, problem, "milp", Options(10)).plan.to_json()
    assert exact["solver"]["status"] == "optimal"
    assert kept_bound(problem.cluster) <= exact["metrics"]["score"] + 1e-9
    assert kept_bound(problem.cluster) == pytest.approx(exact["metrics"]["score"], abs=0.02)


def test_on_oversubscribed_uplinks_reaching_past_a_leaf_costs_time_and_milp_avoids_it(tmp_path):
    problem = _busy_problem(tmp_path, {"dp": 2, "tp": 8, "pp": 3}, oversubscription=4.0,
                            bytes_per_step={"dp": 1e8, "pp": 2e9})
    seconds = problem.cluster.tier_seconds
    assert seconds["pp"][1] > 1.5 * seconds["pp"][0]  # a 4:1 uplink slows the stage-to-stage copy
    exact = plan(PLACEMENT, problem, "milp", Options(10)).plan.to_json()["metrics"]
    linear = plan(PLACEMENT, problem, "linear").plan.to_json()["metrics"]
    assert exact["time_points"] < linear["time_points"] and exact["score"] <= linear["score"]
    assert exact["spread"]["pp"]["leaf"]["max"] == 0


def test_reaches_over_uneven_leaves_are_priced(tmp_path):
    from planner.placement.timing import _split

    assert _split([[0, 1, 2, 3], [4], [5], [6], [7]], 4) == [0, 1, 2, 4]  # one big leaf, singletons
    assert _split([[0, 1], [2]], 4) is None
    conf = "SwitchName=l0 Nodes=n[00-03]\n" + "".join(f"SwitchName=l{i} Nodes=n{i + 3:02d}\n" for i in range(1, 5))
    (tmp_path / "topology.conf").write_text(conf + "SwitchName=s Switches=l[0-4]\n")
    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from topologies.slurm import slurm_topology

    topo = slurm_topology(str(tmp_path / "topology.conf"), "dgx-a100", None, 4.0)
    problem = placement_problem(parse_job({"parallel": {"tp": 8, "dp": 4}, "bytes_per_step": {"dp": 1e9}}), topo, "x")
    leaf, spine, _ = problem.cluster.tier_seconds["dp"]
    assert spine > 1.5 * leaf  # over two leaves, 4:1 uplinks


def test_a_switch_above_a_leaf_and_a_spine_shares_by_the_gpus_below_it(tmp_path):
    from topologies.groups import group_topology
    from topologies.slurm import slurm_topology

    (tmp_path / "t.conf").write_text("SwitchName=l0 Nodes=n00\nSwitchName=l1 Nodes=n[01-03]\nSwitchName=s1 Switches=l1\n"
                                     "SwitchName=top Switches=l0,s1\n")
    topo = slurm_topology(str(tmp_path / "t.conf"), "dgx-a100")
    sub = group_topology(topo, (topo.servers[0][0], topo.servers[1][0]))
    whole = {(l.src, l.dst): l.bandwidth for l in topo.links}
    share = {(l.src, l.dst): l.bandwidth / whole[(l.src, l.dst)] for l in sub.links}
    assert share[("sw/s1", "sw/top")] == pytest.approx(1 / 24) and share[("sw/l0", "sw/top")] == pytest.approx(1 / 8)


def test_tp_after_a_faster_dimension_and_bytes_next_to_a_model_are_refused(run_cli, slurm):
    (slurm / "order.yaml").write_text("parallel: {tp: 8, dp: 2}\norder: dp-tp\n")
    r = run_cli("place", slurm / "order.yaml", "--topology", "hgx-h100x8")
    assert r.exit_code == 2 and "order" in r.stderr and "fastest" in r.stderr
    (slurm / "both.yaml").write_text("parallel: {tp: 8, dp: 2}\nbytes_per_step: {dp: 1e9}\nmodel: llama3-8b\n"
                                     "workload: {seq_len: 8, global_batch: 8}\n")
    r = run_cli("place", slurm / "both.yaml", "--topology", "hgx-h100x8")
    assert r.exit_code == 2 and "not both" in r.stderr


def test_a_job_sharing_nodes_takes_only_free_gpus_and_keeps_tp_pairs_together(run_cli, slurm, plan_validator):
    (slurm / "shared.txt").write_text("dev01 alloc\ndev05 drain\ngpu2 mix 4-7\ndev00 mix 0-1,6-7\n")
    (slurm / "shared.yaml").write_text("parallel: {tp: 2, dp: 10, pp: 3}\nconstraints: {whole_nodes: false}\n")
    args = ("--topology", slurm / "topology.conf", "--server", "dgx-a100", "--node-state", slurm / "shared.txt")
    out = slurm / "cvd.txt"
    r = run_cli("place", slurm / "shared.yaml", *args, "--export", "cuda-visible-devices", "--export-file", out,
                "-o", slurm / "plan.json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads((slurm / "plan.json").read_text())
    plan_validator(doc)
    ranks = [tuple(x) for x in doc["plan"]["ranks"]]
    assert len(ranks) == 60 and len(set(ranks)) == 60
    busy = {("dev00", g) for g in (2, 3, 4, 5)} | {("gpu2", g) for g in range(4)}
    assert not set(ranks) & busy and not {h for h, _ in ranks} & {"dev01", "dev05"}
    assert all(ranks[r][0] == ranks[r + 1][0] and ranks[r][1] % 2 == 0 for r in range(0, 60, 2))  # aligned pairs
    assert doc["problem"]["tiers"] == ["nvlink", "leaf", "spine"] and "nvlink" in doc["metrics"]["spread"]["dp"]
    assert parse_rankfile(out.read_text(), "cuda-visible-devices") == ranks
    (slurm / "whole.yaml").write_text("parallel: {tp: 2, dp: 10, pp: 3}\n")
    r = run_cli("place", slurm / "whole.yaml", *args)  # 60 GPUs are not whole nodes of 8
    assert r.exit_code == 3 and "whole nodes" in r.stderr
    (slurm / "many.yaml").write_text("parallel: {tp: 2, dp: 10, pp: 4}\nconstraints: {whole_nodes: false}\n")
    r = run_cli("place", slurm / "many.yaml", *args)
    assert r.exit_code == 3 and "slots of 2 GPUs" in r.stderr and "free GPUs" in r.stderr


@pytest.mark.parametrize("state, why", [("dev00 idle 0-3\n", "mix node only"), ("dev00 mix 6-9\n", "GPUs 0-7"),
                                        ("dev00 mix 3-1\n", "backwards")])
def test_free_gpus_of_a_node_state_line_are_checked(run_cli, slurm, state, why):
    (slurm / "bad.txt").write_text(state)
    r = run_cli("place", slurm / "job.yaml", "--topology", slurm / "topology.conf", "--server", "dgx-a100",
                "--node-state", slurm / "bad.txt")
    assert r.exit_code == 2 and why in r.stderr and "line 1" in r.stderr


def test_nvl72_trays_hold_tp_groups_of_two_trays_inside_one_rack(run_cli, tmp_path):
    from kind_checks import NVL72_TREE

    (tmp_path / "blocks.conf").write_text("BlockName=b1 Nodes=tray[01-18]\nBlockName=b2 Nodes=tray[19-36]\n")
    (tmp_path / "state.txt").write_text("tray03 alloc\n")
    (tmp_path / "job.yaml").write_text("parallel: {tp: 8, dp: 8, pp: 2}\nbytes_per_step: {dp: 4.0e9, pp: 1.0e8}\n")
    r = run_cli("place", tmp_path / "job.yaml", "--topology", tmp_path / "blocks.conf", "--server", "gb200-nvl72",
                "--node-state", tmp_path / "state.txt", "-o", tmp_path / "plan.json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    ranks = [tuple(x) for x in doc["plan"]["ranks"]]
    rack = {f"tray{i:02d}": (i - 1) // 18 for i in range(1, 37)}
    assert doc["problem"]["block_gpus"] == 8 and doc["problem"]["gpus_per_node"] == 4
    assert all(len({rack[ranks[r + i][0]] for i in range(8)}) == 1 for r in range(0, 128, 8))  # TP in one rack
    assert "tray03" not in {h for h, _ in ranks} and "tray04" not in {h for h, _ in ranks}  # its slot partner too
    assert doc["metrics"]["spread"]["dp"]["leaf"]["max"] == 0  # each PP stage's DP group inside one rack
    (tmp_path / "odd.conf").write_text("BlockName=b1 Nodes=tray[01-16]\n")
    r = run_cli("place", tmp_path / "job.yaml", "--topology", tmp_path / "odd.conf", "--server", "gb200-nvl72")
    assert r.exit_code == 2 and "18 nodes" in r.stderr
    (tmp_path / "tree.conf").write_text(NVL72_TREE)
    (tmp_path / "tp.yaml").write_text("parallel: {tp: 96}\n")
    r = run_cli("place", tmp_path / "tp.yaml", "--topology", tmp_path / "tree.conf", "--server", "gb200-nvl72")
    assert r.exit_code == 3 and "NVLink domain of 72 GPUs" in r.stderr


def test_the_milp_objective_is_the_score_and_the_decomposition_is_never_called_optimal():
    from models.placement_milp import SCALE, objective, solve_hierarchical
    from planner.kinds.placement import _finest, _milp
    from planner.kind import Context
    from planner.placement.score import Scorer

    problem = placement_problems()[3]  # NVL72 racks: NVLink, leaf and spine tiers
    c = problem.cluster
    assert c.tiers == ("nvlink", "leaf", "spine")
    captured = {}

    def spy(inputs, work, solver):
        captured["inputs"] = inputs
        return solve_hierarchical(inputs, work, solver)

    import planner.kinds.placement as kind_module
    saved = kind_module.solve_hierarchical, kind_module.FLAT_MAX_BINARIES
    kind_module.solve_hierarchical, kind_module.FLAT_MAX_BINARIES = spy, 0
    try:
        attempt = _milp(problem, Context(Options(5), "milp", True))
    finally:
        kind_module.solve_hierarchical, kind_module.FLAT_MAX_BINARIES = saved
    assert attempt.solve.termination.value == "feasible" and attempt.model["decomposed"]
    score = Scorer(c, attempt.solution.slot_of_block).total()
    assert attempt.proof <= score + 1e-9
    names, _ = _finest(c)
    domain_of = tuple(names.index(c.domains[x][0]) for x in attempt.solution.slot_of_block)
    assert objective(captured["inputs"], domain_of) == pytest.approx(score * SCALE, rel=2e-3)


def test_tp_groups_spread_over_nodes_are_scored_when_not_kept_in_a_node(tmp_path):
    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from topologies.slurm import slurm_topology

    (tmp_path / "topology.conf").write_text("SwitchName=l0 Nodes=n[0-3]\nSwitchName=l1 Nodes=n[4-7]\n")
    topo = slurm_topology(str(tmp_path / "topology.conf"), "hgx-h100")
    job_doc = {"parallel": {"tp": 8, "dp": 4}, "constraints": {"tp_in_node": False, "whole_nodes": False}}
    c = placement_problem(parse_job(job_doc), topo, "t").cluster
    assert c.block_size == 1 and "tp" in c.kinds
    by_node = tuple(range(32))  # slot r is GPU r % 8 of node r // 8: every TP group on one node
    scattered = tuple(next(s for s, slot in enumerate(c.slots) if slot.gpus == ((r % 8, r // 8),)) for r in range(32))
    assert methods.score(c, by_node) < methods.score(c, scattered)
    greedy = methods.greedy(c)
    assert methods.score(c, greedy) <= methods.score(c, by_node) + 1e-9
    # weighing TP as its bytes say (a TP all-reduce per layer), greedy keeps every TP group on a node
    heavy = placement_problem(parse_job({**job_doc, "bytes_per_step": {"tp": 1e11, "dp": 1e9}}), topo, "t").cluster
    assert methods.spreads(heavy, methods.greedy(heavy))["tp"]["nvlink"][0] == 0


def test_the_gpu_limit_counts_a_tray_not_a_rack(tmp_path):
    from topologies.slurm import slurm_topology

    conf = "".join(f"BlockName=b{i} Nodes=t{i}x[01-18]\n" for i in range(51))  # 918 trays, 3,672 GPUs
    (tmp_path / "topology.conf").write_text(conf)
    topo = slurm_topology(str(tmp_path / "topology.conf"), "gb200-nvl72")
    assert topo.num_gpus == 918 * 4 and len(topo.servers) == 51


def _two_level_tree(tmp_path, leaf_nodes: int, busy=(), spines=3):
    from topologies.slurm import slurm_topology

    lines, n = [], 0
    for s in range(spines):
        for leaf in range(2):
            lines.append(f"SwitchName=s{s}l{leaf} Nodes=n[{n:02d}-{n + leaf_nodes - 1:02d}]")
            n += leaf_nodes
        lines.append(f"SwitchName=sp{s} Switches=s{s}l[0-1]")
    (tmp_path / "tree.conf").write_text("\n".join(lines) + f"\nSwitchName=core Switches=sp[0-{spines - 1}]\n")
    (tmp_path / "state.txt").write_text("".join(f"{x} alloc\n" for x in busy))
    return slurm_topology(str(tmp_path / "tree.conf"), "dgx-a100", str(tmp_path / "state.txt"), 1.0)


@pytest.mark.parametrize("busy, parallel, bytes_per_step", [
    ((), {"tp": 8, "dp": 3, "pp": 2}, None),
    (("n00", "n04", "n07"), {"tp": 8, "dp": 3, "pp": 2}, {"dp": 4e9, "pp": 1e9}),
    (("n01",), {"tp": 4, "dp": 6, "pp": 2}, None),
])
def test_the_kept_bound_never_exceeds_the_best_placement(tmp_path, busy, parallel, bytes_per_step):
    import itertools

    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from planner.placement.bound import kept_bound
    from planner.placement.score import Scorer

    job = {"parallel": parallel, **({"bytes_per_step": bytes_per_step} if bytes_per_step else {})}
    c = placement_problem(parse_job(job), _two_level_tree(tmp_path, 3, busy, spines=2), "tiny").cluster
    leaves = list(c.free_in("leaf").values())
    best = math.inf
    for leaf_of in itertools.product(range(len(leaves)), repeat=c.blocks):  # slots of a leaf are alike
        taken = [0] * len(leaves)
        slot_of = []
        for leaf in leaf_of:
            if taken[leaf] == len(leaves[leaf]):
                break
            slot_of.append(leaves[leaf][taken[leaf]])
            taken[leaf] += 1
        else:
            best = min(best, Scorer(c, slot_of).total())
    assert kept_bound(c) <= best + 1e-9
    assert kept_bound(c) > 0.5 * best  # and not vacuous


def test_a_tiling_reaches_the_bound_where_groups_must_cross_spines(tmp_path):
    from planner.core.placement import parse_job
    from planner.kinds.placement import placement_problem
    from planner.placement.bound import kept_bound

    problem = placement_problem(parse_job({"parallel": {"tp": 8, "dp": 6, "pp": 4}}),
                                _two_level_tree(tmp_path, 7), "tiled")
    greedy = plan(PLACEMENT, problem, "greedy").plan.to_json()["metrics"]
    best_fit = plan(PLACEMENT, problem, "best-fit").plan.to_json()["metrics"]
    assert greedy["score"] == pytest.approx(kept_bound(problem.cluster)) == pytest.approx(greedy["lower_bound_score"])
    assert best_fit["score"] > greedy["score"] + 10
