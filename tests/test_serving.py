"""Serving plans: the simulator's shortcuts against its step-by-step loop, the cost model
against published measurements, the workload's bad input, --fix figures, infeasible SLOs,
and the engine exports. (Every method of the kind also goes through tests/kind_checks.py
via tests/test_kinds.py.)"""
from __future__ import annotations

import json

import pytest
import yaml

import planner.serving.simulate as simulate
from kind_checks import serving_problems
from planner.core.errors import InputError
from planner.core.serving import ReplicaConfig, parse_serve_fix, parse_serve_workload
from planner.core.transformer import MODEL_PRESETS
from planner.exports.serving import engine_script, parse_engine_script
from planner.kinds.serving import serving_problem
from planner.serving.calibration import SERVING_ROWS, predict
from planner.serving.setup import ServingSetup
from topologies.fabrics import cluster

BASE = {"mode": "serve", "prompt_tokens": 1024, "output_tokens": 128, "rate_rps": 4, "ttft_slo_s": 1.0,
        "tpot_slo_s": 0.05, "requests": 200}


@pytest.mark.parametrize("chunk", [8192, 0])
@pytest.mark.parametrize("distribution", ["fixed", "exponential"])
def test_fast_forward_equals_the_iteration_by_iteration_loop(monkeypatch, chunk, distribution):
    w = parse_serve_workload({**BASE, "chunk_tokens": chunk, "distribution": distribution})
    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1))
    cost = setup.cost(ReplicaConfig("h100", 2))
    for rate in (2.0, 30.0):
        reqs = simulate.at_rate(setup.requests[:200], rate)
        fast = simulate.simulate_replica(cost, reqs)
        monkeypatch.setattr(simulate.Engine, "_steps_to_event", lambda self, to_finish, *rest: 1)
        slow = simulate.simulate_replica(cost, reqs)
        monkeypatch.undo()
        assert len(fast) == len(slow) == 200
        for a, b in zip(fast, slow):
            assert a.ttft_s == pytest.approx(b.ttft_s, abs=1e-9) and a.tpot_s == pytest.approx(b.tpot_s, abs=1e-9)


def test_a_lone_request_takes_its_prefill_then_one_step_per_token():
    w = parse_serve_workload({**BASE, "distribution": "fixed", "requests": 1})
    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1))
    cost = setup.cost(ReplicaConfig("h100", 1))
    (s,) = simulate.simulate_replica(cost, setup.requests[:1])
    assert s.ttft_s == pytest.approx(cost.prefill_s(1024), rel=1e-12)
    steps = sum(cost.iteration_s((), 1, 1024 + k) for k in range(1, 128))
    assert s.tpot_s == pytest.approx(steps / 127, rel=1e-9)


def test_attainment_falls_and_goodput_is_where_it_crosses_the_quantile():
    w = parse_serve_workload(BASE)
    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1))
    c = ReplicaConfig("h100", 1)
    cap = setup.capacity(c).rate_rps
    cost = setup.cost(c)
    below = simulate.attainment(simulate.simulate_replica(cost, setup.sample(cap)), w)
    above = simulate.attainment(simulate.simulate_replica(cost, setup.sample(cap * 1.3)), w)
    assert below >= 0.9 > above


def test_cost_model_within_its_published_error():
    """bench/serving.py's accuracy table, held to the mean it reports (docs/serving.md)."""
    errors = [abs(predict(row) - row.measured_ms) / row.measured_ms for row in SERVING_ROWS]
    assert len(errors) >= 20
    assert sum(errors) / len(errors) <= 0.15


@pytest.mark.parametrize("doc, field", [
    ({**BASE, "rate_rps": 0}, "rate_rps"),
    ({**BASE, "slo_quantile": 1.5}, "slo_quantile"),
    ({**BASE, "distribution": "zipf"}, "distribution"),
    ({**BASE, "prices": {"h900": 1}}, "prices.h900"),
    ({**BASE, "chunk_tokens": 10}, "chunk_tokens"),
    ({**BASE, "colour": 1}, "colour"),
    ({k: v for k, v in BASE.items() if k != "ttft_slo_s"}, "ttft_slo_s"),
])
def test_bad_workload_names_its_field(doc, field):
    with pytest.raises(InputError) as err:
        parse_serve_workload(doc, "w.yaml")
    assert field in err.value.one_line() and "w.yaml" in err.value.one_line()


def test_trace_rows_are_read_and_a_bad_row_names_its_line(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n0.5,200,20\n1.0,300,30\n")
    w = parse_serve_workload({"mode": "serve", "trace": "t.csv", "ttft_slo_s": 1, "tpot_slo_s": 0.1},
                             str(tmp_path / "w.yaml"))
    assert (w.prompt_tokens, w.output_tokens, w.rate_rps, len(w.trace)) == (200, 20, 2.0, 3)
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n0.5,abc,20\n")
    with pytest.raises(InputError) as err:
        parse_serve_workload({"mode": "serve", "trace": str(trace), "ttft_slo_s": 1, "tpot_slo_s": 0.1})
    assert "line 3" in err.value.one_line() and "t.csv" in err.value.one_line()


def test_serving_fix_keys():
    assert parse_serve_fix("tp=4,pp=2,ep=1,gpu=h100,role=decode") == {"tp": 4, "pp": 2, "ep": True, "gpu": "h100",
                                                                      "role": "decode"}
    for bad in ("tp=0", "dp=2", "role=both", "ep=2"):
        with pytest.raises(InputError):
            parse_serve_fix(bad)


@pytest.mark.slow
def test_exports_read_back_as_the_same_replicas():
    problem = serving_problems()[2]  # disaggregated on two GPU types
    from planner.kinds.serving import plan_serving

    result = plan_serving(problem, "milp")
    replicas = result.solution.replicas
    assert {r.config.role for r in replicas} == {"prefill", "decode"}
    for engine in ("vllm", "sglang"):
        text = engine_script(problem.model, problem.workload, replicas, engine)
        back = parse_engine_script(text, engine)
        assert [(r.config, r.gpus) for r in back] == [(r.config, r.gpus) for r in replicas]
    vllm = engine_script(problem.model, problem.workload, replicas, "vllm")
    assert "kv_producer" in vllm and "kv_consumer" in vllm and "--tensor-parallel-size" in vllm
    sglang = engine_script(problem.model, problem.workload, replicas, "sglang")
    assert "--disaggregation-mode prefill" in sglang and "sglang_router.launch_router --pd-disaggregation" in sglang


@pytest.fixture()
def serve_file(tmp_path):
    def write(**changes):
        path = tmp_path / "serve.yaml"
        path.write_text(yaml.safe_dump({**BASE, "prices": {"h100": 3.0}, **changes}))
        return path
    return write


@pytest.mark.slow
def test_cli_fix_reports_the_contract_figures(run_cli, serve_file, tmp_path, plan_validator):
    plan = tmp_path / "p.json"
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                serve_file(decode_batch=16), "--fix", "tp=2", "-o", plan, "--json", "--reproducible")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    plan_validator(doc)
    assert doc["kind"] == "parallelism" and doc["plan"]["mode"] == "serve"
    m = doc["metrics"]
    assert {"prefill_ms", "decode_step_ms", "ttft_p90_s", "tpot_p90_s", "goodput_rps"} <= m.keys()
    assert m["prefill_ms"] > 0 and m["decode_step_ms"] > 0 and m["goodput_rps"] > 0
    again = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                    serve_file(decode_batch=16), "--fix", "tp=2", "--json", "--reproducible")
    assert again.stdout == r.stdout


@pytest.mark.slow
def test_cli_plans_and_exports(run_cli, serve_file, tmp_path):
    out = tmp_path / "run.sh"
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                serve_file(rate_rps=6, roles="colocated", available={"h100": 2}), "--export", "vllm", "--export-file", out)
    assert r.exit_code == 0, r.stderr
    assert "vllm serve meta-llama/Meta-Llama-3-8B" in out.read_text() and "written to" in r.stdout


def test_cli_unmeetable_slo_exits_3_with_the_closest_figures(run_cli, serve_file, tmp_path):
    plan = tmp_path / "p.json"
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                serve_file(tpot_slo_s=0.001), "-o", plan)
    assert r.exit_code == 3 and "closest achievable" in r.stderr and "TPOT" in r.stderr and not plan.exists()


def test_cli_model_that_fits_nowhere_and_budget_below_one_replica(run_cli, serve_file, tmp_path):
    r = run_cli("parallelize", "--model", "llama3-405b", "--topology", "l40s-pcie", "--workload",
                serve_file(prices={"l40s": 1.0}))
    assert r.exit_code == 3 and "fits on no available GPU" in r.stderr
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                serve_file(objective="goodput", budget_per_hour=1.0))
    assert r.exit_code == 3 and "budget" in r.stderr


def test_cli_bad_serving_input_exits_2(run_cli, serve_file, tmp_path):
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload",
                serve_file(prices={}))
    assert r.exit_code == 2 and "prices" in r.stderr
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload", serve_file(),
                "--fix", "tp=16")
    assert r.exit_code == 2 and "--fix" in r.stderr
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload", serve_file(),
                "--method", "grid")
    assert r.exit_code == 2 and "--method" in r.stderr


def test_moe_replicas_consider_expert_parallelism():
    w = parse_serve_workload({**BASE, "prices": {"h200": 3.5}, "dtype": "fp8"})
    problem = serving_problem(MODEL_PRESETS["deepseek-v3"], w, cluster("hgx-h200", 1), {})
    configs = problem.setup.configurations()
    assert any(c.ep for c in configs) and all(c.tp == 8 for c in configs)


def test_a_measured_profile_replaces_the_model(tmp_path, run_cli):
    (tmp_path / "profile.csv").write_text(
        "gpu,tp,pp,phase,tokens,batch,context,ms\n"
        "h100,1,1,prefill,512,0,0,30\nh100,1,1,prefill,2048,0,0,130\n"
        "h100,1,1,decode,0,1,1000,8\nh100,1,1,decode,0,1,3000,9\nh100,1,1,decode,0,64,1000,20\n")
    work = tmp_path / "serve.yaml"
    work.write_text(yaml.safe_dump({**BASE, "prices": {"h100": 3.0}, "profile": "profile.csv", "decode_batch": 1}))
    w = parse_serve_workload(yaml.safe_load(work.read_text()), str(work))
    cost = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1)).cost(ReplicaConfig("h100", 1))
    assert cost.prefill_s(1024) == pytest.approx((30 + (130 - 30) * (1024 - 512) / 1536) / 1e3)
    assert cost.iteration_s((), 1, 2000) == pytest.approx(8.5e-3)
    a, b = cost.decode_terms(64)
    assert a + b * 64 * 1000 == pytest.approx(20e-3)
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload", work, "--fix", "tp=1",
                "--json")
    doc = json.loads(r.stdout)
    assert doc["metrics"]["prefill_ms"] == pytest.approx(1e3 * cost.prefill_s(1024))
    assert doc["plan"]["replicas"][0]["timing"] == "profile"
    (tmp_path / "profile.csv").write_text("gpu,tp,pp,phase,tokens,batch,context,ms\nh100,1,1,decode,0,0,10,5\n")
    r = run_cli("parallelize", "--model", "llama3-8b", "--topology", "hgx-h100", "--workload", work)
    assert r.exit_code == 2 and "line 2" in r.stderr and "profile.csv" in r.stderr


@pytest.mark.slow
def test_a_short_trace_is_repeated_so_capacities_stay_finite(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.0,512,128\n0.5,512,128\n")
    w = parse_serve_workload({"mode": "serve", "trace": "t.csv", "ttft_slo_s": 1, "tpot_slo_s": 0.05,
                              "prices": {"h100": 3.0}}, str(tmp_path / "w.yaml"))
    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1))
    assert len(setup.requests) > 1000 and setup.requests[2].arrival_s > setup.requests[1].arrival_s
    assert 1 < setup.capacity(ReplicaConfig("h100", 1, role="decode")).rate_rps < 1000


def test_a_decode_replica_finishes_a_one_token_request_on_arrival():
    w = parse_serve_workload({**BASE, "distribution": "fixed", "output_tokens": 1})
    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], w, cluster("hgx-h100", 1))
    (s,) = simulate.simulate_replica(setup.cost(ReplicaConfig("h100", 1)), setup.requests[:1], "decode")
    assert s.finish_s == setup.requests[0].arrival_s and s.tpot_s == 0.0


def test_without_nics_only_colocated_replicas_are_considered():
    doc = {"name": "two", "nodes": [{"id": "0/gpu0", "type": "gpu", "server": 0, "model": "h100"},
                                    {"id": "0/gpu1", "type": "gpu", "server": 0, "model": "h100"}],
           "links": [{"src": "0/gpu0", "dst": "0/gpu1", "bandwidth": 450}]}
    from topologies.io import parse_topology

    setup = ServingSetup(MODEL_PRESETS["llama3-8b"], parse_serve_workload(BASE), parse_topology(doc, "two"))
    assert {c.role for c in setup.configurations()} == {"colocated"}


def test_measured_times_never_fall_past_the_last_measurement():
    from planner.core.serving import ProfileRow
    from planner.serving.profile import MeasuredTimes

    rows = (ProfileRow("h100", 1, 1, "decode", 0, 1, 100, 10.0), ProfileRow("h100", 1, 1, "decode", 0, 8, 100, 9.0))
    a, b = MeasuredTimes.of(rows, 1e-7).decode_terms(256)
    assert a + b * 256 * 100 >= 9e-3 - 1e-12


def test_decode_shares_add_up_to_the_prefill_shares():
    from planner.kinds.serving import _scaled

    problem = serving_problems()[0]  # rate 20
    c = ReplicaConfig("a100-80g", 1)
    out = _scaled(problem, [(c, 1, 12.0), (replace_role(c, "prefill"), 1, 12.0), (replace_role(c, "decode"), 1, 12.0)])
    shares = {x[0].role: x[1] * x[2] for x in out}
    assert shares["colocated"] + shares["prefill"] == pytest.approx(20) and shares["decode"] == pytest.approx(10)


def replace_role(c: ReplicaConfig, role: str) -> ReplicaConfig:
    from dataclasses import replace

    return replace(c, role=role)
