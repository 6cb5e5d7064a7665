"""MoE expert placement: loads, validation, bounds, greedy, milp, traffic, exports, CLI."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from planner.core.errors import InfeasibleError, InputError
from planner.expert_bounds import expert_bounds, groups_on_nodes_bound, layer_bounds
from planner.kinds.experts import EXPERTS, plan_experts
from planner.core.experts import Coactivation, crossing_tokens, expert_problem, gpu_loads, read_loads
from planner.expert_checks import check_expert_maps, cross_node_tokens
from planner.exports.expert_maps import export_expert_maps, import_expert_maps, round_trip_expert_maps
from planner.core.errors import ExportMismatch
from solvers.expert_counts import SPARE_POLICIES, counts_for_target, replica_counts
from solvers.expert_greedy import greedy_assign, place_in_order
from models.expert_traffic_milp import place_gpus_on_nodes
from solvers.expert_traffic import reduce_crossing

EXAMPLE = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=np.float64)


def _max_loads(problem, maps):
    return np.array([gpu_loads(w, m, problem.slots_per_gpu).max() for w, m in zip(problem.weights, maps)])


def _brute_force_optimum(w, gpus, k):
    """Least max GPU load over every placement (one replica of an expert per GPU)."""
    experts = len(w)
    per_gpu = list(itertools.combinations(range(experts), k))
    best = np.inf
    for choice in itertools.product(per_gpu, repeat=gpus):
        phys = np.array([e for c in choice for e in c])
        if len(np.unique(phys)) < experts:
            continue
        best = min(best, gpu_loads(w, phys, k).max())
    return best


# ---------------------------------------------------------------- loads and validation
def test_loads_forms(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"weights": [[1, 2, 3], [4, 5, 6]]}))
    (tmp_path / "b.json").write_text(json.dumps([[1, 2, 3], [4, 5, 6]]))
    (tmp_path / "c.json").write_text(json.dumps({"logical_count": [[[1, 2, 3], [4, 5, 6]], [[1, 1, 1], [0, 0, 0]]],
                                                 "rank": 0}))
    a, _ = read_loads(str(tmp_path / "a.json"))
    b, _ = read_loads(str(tmp_path / "b.json"))
    c, _ = read_loads(str(tmp_path / "c.json"))
    assert a.tolist() == b.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert c.tolist() == [[2, 3, 4], [4, 5, 6]]  # an SGLang dump: summed over passes


@pytest.mark.parametrize("doc, field", [
    ({"weights": [[1, 2], [3]]}, "weights"),
    ({"weights": [[1, float("nan")], [3, 4]]}, "weights[0][1]"),
    ({"weights": [[1, -2], [3, 4]]}, "weights[0][1]"),
    ({"weights": [[1, 2]], "bogus": 1}, "bogus"),
    ({"weights": [[1, 2]], "logical_count": [[1, 2]]}, "weights"),
    ({"weights": [[1, 2]], "coactivation": [[[0, 0, 3]]]}, "coactivation[0]"),
    ({"weights": [[1, 2]], "coactivation": [[[0, 5, 3]]]}, "coactivation[0]"),
    ({"weights": [[1, 2]], "coactivation": []}, "coactivation"),
])
def test_bad_loads(tmp_path, doc, field):
    path = tmp_path / "loads.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_loads(str(path))
    assert err.value.field == field and err.value.source == str(path)


@pytest.mark.parametrize("kwargs, field", [
    (dict(gpus=5), "--redundant"),  # 12 slots over 5 GPUs
    (dict(gpus=8, nodes=3), "--nodes"),
    (dict(gpus=8, redundant=4, groups=5), "--groups"),
    (dict(gpus=8, nodes=4, redundant=4, groups=2), "--groups"),  # groups do not spread over nodes
    (dict(gpus=8, slots_per_gpu=2, redundant=4), "--redundant"),
])
def test_bad_constraints(kwargs, field):
    with pytest.raises(InputError) as err:
        expert_problem(EXAMPLE, **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("kwargs, why", [
    (dict(gpus=8, slots_per_gpu=1), "need at least 12 slots"),  # fewer slots than experts
    (dict(gpus=2, slots_per_gpu=13), "at most one replica"),  # more slots per GPU than experts
    (dict(gpus=2, nodes=2, slots_per_gpu=7, groups=2), "on one node"),  # 7 slots per GPU, 6 experts per node
])
def test_constraints_no_map_can_meet_are_infeasible(kwargs, why, run_cli, tmp_path):
    with pytest.raises(InfeasibleError, match=why):
        expert_problem(EXAMPLE, **kwargs)
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"weights": EXAMPLE.tolist()}))
    args = [f"--{k.replace('_', '-')}={v}" for k, v in kwargs.items()]
    r = run_cli("experts", loads, *args, "-o", tmp_path / "p.json")
    assert r.exit_code == 3 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


# ---------------------------------------------------------------- bounds
def test_heaviest_replica_is_the_best_possible_max_replica():
    rng = np.random.default_rng(3)
    for _ in range(20):
        w = rng.lognormal(0, 1.5, 5)
        slots, gpus = 8, 4
        best = min(max(w[e] / r[e] for e in range(5))
                   for r in itertools.product(range(1, gpus + 1), repeat=5) if sum(r) == slots)
        assert layer_bounds(w, gpus, slots)["heaviest_replica"] == pytest.approx(best)
        assert layer_bounds(w, gpus, slots)["lp_relaxation"] <= best * (1 + 1e-9) or \
            layer_bounds(w, gpus, slots)["lp_relaxation"] == pytest.approx(w.sum() / gpus)


def test_group_partition_bound_by_hand():
    # groups 262, 330, 116, 325 on 2 nodes of 4 GPUs: best split {330, 116} / {262, 325} = 587
    assert groups_on_nodes_bound(np.array([262.0, 330, 116, 325]), 2, 4) == pytest.approx(587 / 4)


@pytest.mark.parametrize("method", [m.name for m in EXPERTS.methods])
@pytest.mark.slow
def test_no_method_beats_the_bound(method):
    rng = np.random.default_rng(7)
    w = np.round(rng.lognormal(0, 1.5, (3, 24)) * 100)
    for groups in (None, 4):
        problem = expert_problem(w, 8, 2, slots_per_gpu=4, groups=groups)
        r = plan_experts(problem, method, time_limit_s=3)
        bounds = np.array([b["value"] for b in expert_bounds(problem)])
        assert (_max_loads(problem, r.solution.maps) >= bounds * (1 - 1e-9)).all()
        assert r.plan.metrics["ratio_to_bound"] >= 1 - 1e-9


# ---------------------------------------------------------------- greedy, milp, eplb
def test_milp_is_optimal_on_a_tiny_layer():
    w = np.array([[9.0, 5, 4, 1]])
    problem = expert_problem(w, 3, 1, slots_per_gpu=2)
    r = plan_experts(problem, "milp", time_limit_s=10)
    optimum = _brute_force_optimum(w[0], 3, 2)
    assert _max_loads(problem, r.solution.maps)[0] == pytest.approx(optimum)
    assert r.plan.solver["status"] == "optimal" and r.plan.solver["gap"] == 0.0


def test_milp_chooses_the_group_split_and_proves_it_against_brute_force():
    rng = np.random.default_rng(2)
    w = np.round(rng.lognormal(0, 1.2, (2, 8)) * 100)  # 4 groups of 2 on 2 nodes of 2 GPUs x 3 slots
    problem = expert_problem(w, 4, 2, slots_per_gpu=3, groups=4)
    r = plan_experts(problem, "milp", time_limit_s=10)
    for layer in range(2):
        pairs = w[layer].reshape(4, 2)
        optimum = min(max(_brute_force_optimum(pairs[[a, b]].ravel(), 2, 3),
                          _brute_force_optimum(pairs[[c, d]].ravel(), 2, 3))
                      for (a, b), (c, d) in (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))))
        assert _max_loads(problem, r.solution.maps)[layer] == pytest.approx(optimum)
    assert r.plan.solver["status"] == "optimal"
    eplb = plan_experts(expert_problem(EXAMPLE, 8, 2, redundant=4, groups=4), "milp", time_limit_s=10)
    assert eplb.plan.solver["status"] == "optimal" and eplb.plan.metrics["max_over_mean"] < 1.2252 - 1e-3


@pytest.mark.slow
def test_milp_never_worse_than_its_warm_start_and_deterministic():
    rng = np.random.default_rng(11)
    w = np.round(rng.lognormal(0, 2, (4, 32)) * 100)
    problem = expert_problem(w, 8, 1, slots_per_gpu=5)
    greedy = plan_experts(problem, "greedy")
    first = plan_experts(problem, "milp", time_limit_s=4)
    second = plan_experts(problem, "milp", time_limit_s=4)
    assert (_max_loads(problem, first.solution.maps) <= _max_loads(problem, greedy.solution.maps) * (1 + 1e-12)).all()
    assert (first.solution.maps == second.solution.maps).all()


@pytest.mark.slow
def test_milp_maps_do_not_depend_on_the_machines_cores(monkeypatch):
    """The work limit is set for WORK_CORES whatever the machine has: told it has 1 or 16
    cores (threads 1 or 4 here), the milp gives the same maps, with the work limit (not
    the wall clock) stopping its models, and a work limit that does not move."""
    import models.expert_milp as expert_milp

    rng = np.random.default_rng(11)
    w = np.round(rng.lognormal(0, 2, (4, 32)) * 100)
    problem = expert_problem(w, 8, 1, slots_per_gpu=5)
    seen = []
    for cores in (1, 16):
        monkeypatch.setattr(expert_milp.os, "cpu_count", lambda cores=cores: cores)
        r = plan_experts(problem, "milp", time_limit_s=4)
        assert r.plan.solver["limit"] in ("work", None), r.plan.solver
        seen.append(r.solution.maps)
    assert (seen[0] == seen[1]).all()
    assert expert_milp.work_limit(4, 4) == 4 * expert_milp.WORK_CORES / 4 / 2
    assert expert_milp.work_limit(4, 1) == 4 / 2  # one model: one thread's share, as on any machine


def test_greedy_on_deepseek_sized_layers_is_valid():
    rng = np.random.default_rng(0)
    w = np.round(rng.lognormal(0, 1, (61, 256)) * 1000)
    problem = expert_problem(w, 64, 8, slots_per_gpu=5)
    maps = greedy_assign(problem.weights, 64, 5)
    check_expert_maps(problem, maps)
    assert (_max_loads(problem, maps) / (w.sum(axis=1) / 64)).mean() < 1.03


def test_groups_stay_on_nodes():
    problem = expert_problem(EXAMPLE, 8, 2, redundant=4, groups=4)
    for method in ("greedy", "milp", "eplb"):
        maps = plan_experts(problem, method, time_limit_s=2).solution.maps
        check_expert_maps(problem, maps, shared_gpus=True)
        nodes = np.arange(16) // 8
        for row in maps:
            for grp in range(4):
                assert len(set(nodes[(row // 3) == grp])) == 1


def test_published_eplb_example_through_the_pipeline():
    r = plan_experts(expert_problem(EXAMPLE, 8, 2, redundant=4, groups=4), "eplb")
    assert r.solution.maps.tolist()[0] == [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]


def test_replica_counts_fill_every_slot():
    assert replica_counts(np.array([10.0, 1, 1]), 7, 3).tolist() == [3, 2, 2]


@pytest.mark.parametrize("spare", SPARE_POLICIES)
def test_counts_for_target_keep_replicas_under_target(spare):
    w = np.random.default_rng(3).lognormal(0.0, 2.0, 256)
    gpus, slots = 64, 320
    target = max(w.sum() / gpus, float((w / replica_counts(w, slots, gpus)).max()))
    counts = counts_for_target(w, target, gpus, slots, spare)
    share = w / counts
    assert counts.sum() == slots and counts.min() >= 1 and counts.max() <= gpus
    assert share.max() <= target * (1 + 1e-9)
    assert counts[share > target / 2].sum() <= gpus  # no two such replicas need share a GPU
    assert counts_for_target(w, target / 2, gpus, slots, spare) is None
    with pytest.raises(ValueError, match="spare"):
        counts_for_target(w, target, gpus, slots, "nope")


def test_packing_makes_room_when_only_a_holder_has_a_free_slot():
    slots = [[0, 1], [2]]  # GPU 1 has the free slot but already holds expert 2
    load = np.array([2.0, 1.0])
    place_in_order([2], np.array([1.0, 1.0, 1.0]), slots, load, 2)
    assert sorted(slots[0] + slots[1]) == [0, 1, 2, 2]
    assert all(len(set(s)) == len(s) == 2 for s in slots) and load.tolist() == [2.0, 2.0]


def test_greedy_splits_a_giant_expert_without_stacking_replicas():
    # one expert carries ~36x a GPU's mean: water-filling alone gives 67 replicas above half
    # the mean on 64 GPUs, so two share a GPU (1.38x); packing-aware counts avoid it
    w = np.round(np.random.default_rng(0).lognormal(0.0, 2.0, (58, 256))[40] * 1000)
    phys = greedy_assign(w[None, :], 64, 5)[0]
    load = np.bincount(np.arange(320) // 5, weights=(w / np.bincount(phys, minlength=256))[phys])
    assert load.max() / load.mean() < 1.01


# ---------------------------------------------------------------- co-activation traffic
def test_traffic_search_keeps_balance_and_cuts_crossing():
    w = np.array([4.0, 4, 4, 4, 1, 1, 1, 1])
    phys = np.array([0, 4, 1, 5, 2, 6, 3, 7])  # 4 GPUs, 2 slots, 2 nodes of 2 GPUs
    first, second, tokens = np.array([0, 4]), np.array([2, 6]), np.array([10.0, 5.0])
    before_max = gpu_loads(w, phys, 2).max()
    holds = lambda p: np.stack([np.isin(np.arange(8), p[:4]), np.isin(np.arange(8), p[4:])])  # noqa: E731
    before = crossing_tokens(holds(phys), first, second, tokens)
    after_map = reduce_crossing(w, phys, 2, 2, first, second, tokens)
    assert gpu_loads(w, after_map, 2).max() <= before_max
    assert crossing_tokens(holds(after_map), first, second, tokens) < before
    assert sorted(after_map.tolist()) == sorted(phys.tolist())


def test_traffic_model_moves_gpus_between_nodes_to_serve_pairs():
    # 4 GPUs of one expert each on 2 nodes; the heavy pairs are 0-2 and 1-3, split today
    phys = np.array([0, 1, 2, 3])
    first, second, tokens = np.array([0, 1, 0]), np.array([2, 3, 1]), np.array([10.0, 9.0, 1.0])
    s = place_gpus_on_nodes(phys, 4, 1, 2, first, second, tokens, work_s=2.0)
    assert s.crossing_before == 19.0 and s.crossing_after == 1.0 and s.status == "optimal"
    assert sorted(s.phys.tolist()) == [0, 1, 2, 3]
    assert {frozenset(s.phys[:2].tolist()), frozenset(s.phys[2:].tolist())} == {frozenset({0, 2}), frozenset({1, 3})}


@pytest.mark.slow
def test_milp_second_objective_cuts_crossing_at_equal_balance_and_is_deterministic():
    rng = np.random.default_rng(5)
    w = np.round(rng.lognormal(0, 1, (2, 32)) * 100)
    pairs = [rng.choice(32, (40, 2)) for _ in range(2)]
    pairs = [p[p[:, 0] != p[:, 1]] for p in pairs]
    coact = Coactivation(tuple(p[:, 0] for p in pairs), tuple(p[:, 1] for p in pairs),
                         tuple(rng.integers(1, 50, len(p)).astype(float) for p in pairs))
    problem = expert_problem(w, 8, 4, slots_per_gpu=5, coactivation=coact)
    first = plan_experts(problem, "milp", time_limit_s=4)
    again = plan_experts(problem, "milp", time_limit_s=4)
    greedy = plan_experts(problem, "greedy")
    traffic = first.plan.metrics["milp_model"]["traffic_model"]
    assert traffic["crossing_tokens_after"] < traffic["crossing_tokens_before"]
    assert cross_node_tokens(problem, first.solution.maps)[0] < cross_node_tokens(problem, greedy.solution.maps)[0]
    assert (_max_loads(problem, first.solution.maps) <= _max_loads(problem, greedy.solution.maps) * (1 + 1e-12)).all()
    assert (first.solution.maps == again.solution.maps).all()


def test_cross_node_metric_in_plan():
    coact = Coactivation((np.array([0, 1]), np.array([0])), (np.array([5, 2]), np.array([11])),
                         (np.array([7.0, 3.0]), np.array([2.0])))
    problem = expert_problem(EXAMPLE, 8, 2, redundant=4, coactivation=coact)
    r = plan_experts(problem, "greedy")
    crossing, total = cross_node_tokens(problem, r.solution.maps)
    assert total == 12.0
    assert r.plan.metrics["cross_node_coactivated_tokens"] == crossing


# ---------------------------------------------------------------- exports
@pytest.mark.parametrize("fmt", ["sglang", "vllm", "gpu-list"])
def test_exports_parse_back(fmt):
    problem = expert_problem(EXAMPLE, 8, 2, redundant=4)
    maps = plan_experts(problem, "greedy").solution.maps
    text = round_trip_expert_maps(maps, 2, 12, fmt)
    assert (import_expert_maps(text, fmt, 12) == maps).all()
    doc = json.loads(text)
    if fmt == "sglang":
        assert set(doc) == {"physical_to_logical_map"}
    if fmt == "vllm":
        assert np.array(doc["logical_to_physical_map"]).shape[:2] == (2, 12)
        assert np.array(doc["logical_replica_count"]).sum(axis=1).tolist() == [16, 16]


def test_tampered_vllm_export_is_refused():
    maps = plan_experts(expert_problem(EXAMPLE, 8, 2, redundant=4), "greedy").solution.maps
    doc = json.loads(export_expert_maps(maps, 2, 12, "vllm"))
    doc["logical_replica_count"][0][0] += 1
    with pytest.raises(ExportMismatch):
        import_expert_maps(json.dumps(doc), "vllm", 12)
    doc = {"physical_to_logical_map": [[0] * 16, [0] * 16]}
    with pytest.raises(ExportMismatch):
        import_expert_maps(json.dumps(doc), "sglang", 12)  # experts without a slot


# ---------------------------------------------------------------- command line
def test_cli_writes_plan_and_export(tmp_path):
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"weights": EXAMPLE.astype(int).tolist()}))
    out, exp = tmp_path / "plan.json", tmp_path / "sglang.json"
    args = ["experts", str(loads), "--gpus", "8", "--nodes", "2", "--redundant", "4", "--groups", "4",
            "--time-limit", "2", "-o", str(out), "--export", "sglang", "--export-file", str(exp), "--reproducible"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "experts" and doc["plan"]["slots_per_gpu"] == 2
    assert json.loads(exp.read_text())["physical_to_logical_map"] == doc["plan"]["physical_to_logical_map"]
    first = out.read_bytes()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize("extra, needle", [
    (["--gpus", "5"], "--redundant"),
    (["--gpus", "8", "--nodes", "3"], "--nodes"),
    (["--gpus", "8", "--redundant", "4", "--export", "sglang"], "--export-file"),
    (["--gpus", "8", "--redundant", "4", "--time-limit", "0"], "--time-limit"),
])
def test_cli_bad_input_exits_2(tmp_path, extra, needle):
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps(EXAMPLE.tolist()))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["experts", str(loads), *extra, "-o", str(out)])
    assert result.exit_code == 2 and needle in result.output
    assert not out.exists()
