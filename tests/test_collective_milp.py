import pytest

from models.collective_milp import milp_schedule
from planner.bounds import lower_bound
from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.kinds.collective import plan_collective
from planner.simulator import simulate, verify
from topologies import fabrics
from topologies.io import load_topology
from topologies.routing import Router


@pytest.mark.parametrize("kind", ["allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"])
@pytest.mark.parametrize("name", ["dgx-a100", "dgx1"])
@pytest.mark.slow
def test_milp_schedules_verify_and_respect_the_bound(kind, name):
    topo = load_topology(name)
    coll = Collective(kind, 8, 8 << 10, root=3)
    outcome = milp_schedule(coll, topo, Router(topo), horizon_us=50.0, parts=1 if kind != "broadcast" else 2,
                            time_limit_s=20)
    expected = "feasible" if kind == "allreduce" else "optimal"  # allreduce: two halves, no joint proof
    assert outcome.result.termination.value == expected and outcome.schedule is not None
    verify(outcome.schedule)
    assert simulate(outcome.schedule, topo).time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)


def test_milp_allgather_reaches_the_bound_on_an_nvswitch_server():
    # 1 KiB per GPU on DGX A100: one step, every GPU to every other, is optimal
    topo = load_topology("dgx-a100")
    coll = Collective("allgather", 8, 8 << 10)
    result = plan_collective(coll, topo, "milp", time_limit_s=20)
    assert result.plan.method == "milp" and result.plan.fallback is None
    assert result.plan.solver["status"] == "optimal" and result.plan.solver["gap"] == 0
    assert not result.plan.solver["limit_hit"]
    assert result.plan.metrics["ratio_to_bound"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name,kind,per_gpu", [("dgx1", "allgather", 1 << 10), ("dgx1", "allreduce", 64 << 10),
                                               ("dgx-a100x2", "allgather", 1 << 10),
                                               ("dgx-a100x2", "allreduce", 1 << 10)])
@pytest.mark.slow
def test_auto_is_no_slower_than_any_baseline_and_reports_the_milp(name, kind, per_gpu):
    topo = load_topology(name)
    coll = Collective(kind, topo.num_gpus, per_gpu * topo.num_gpus)
    baselines = [plan_collective(coll, topo, m).plan.metrics["time_us"]
                 for m in ("ring", "tree", "hierarchical") if m != "hierarchical" or len(topo.servers) > 1
                 if kind == "allreduce" or m != "tree"]
    plan = plan_collective(coll, topo, "auto", time_limit_s=30).plan
    assert plan.metrics["time_us"] <= min(baselines) * (1 + 1e-12)
    attempt = plan.solver if plan.method == "milp" else plan.metrics["milp_model"]["solver"]
    assert attempt["status"] in ("optimal", "feasible") and attempt["gap"] is not None
    # `solver` describes the returned method's own solve: the MILP, or the LP trees pack from
    assert (plan.solver is None) == (plan.method not in ("milp", "trees"))


def test_time_limited_milp_is_not_called_optimal(monkeypatch):
    import dataclasses

    import models.collective_milp as milp
    from solvers import Limit, Termination

    real = milp.solve_model

    def stopped_by_the_clock(model, solver, options):
        result = real(model, solver, options)
        return dataclasses.replace(result, termination=Termination.feasible, limit=Limit.time, gap=0.5)

    monkeypatch.setattr(milp, "solve_model", stopped_by_the_clock)
    topo = load_topology("dgx-a100")
    plan = plan_collective(Collective("allgather", 8, 8 << 10), topo, "milp", time_limit_s=5).plan
    assert plan.method == "milp"
    assert plan.solver["status"] == "feasible" and plan.solver["limit_hit"] and plan.solver["gap"] == 0.5
    assert plan.solver["limit"] == "time"


def test_allreduce_halves_are_never_claimed_optimal():
    topo = load_topology("dgx-a100")
    plan = plan_collective(Collective("allreduce", 8, 8 << 10), topo, "milp", time_limit_s=20).plan
    status = (plan.solver or plan.metrics["milp_model"]["solver"])["status"]
    assert status == "feasible"


def test_unsupported_solver_is_bad_input(run_cli):
    result = run_cli("collective", "allgather", "--topology", "dgx1", "--size", "8KiB", "--method", "milp",
                     "--solver", "glop")
    assert result.exit_code == 2 and "--solver" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_solution_in_time_falls_back_with_the_reason(monkeypatch):
    import dataclasses

    import models.collective_milp as milp
    from solvers import Limit, Termination

    real = milp.solve_model

    def nothing_in_time(model, solver, options):
        result = real(model, solver, options)
        return dataclasses.replace(result, termination=Termination.no_solution, limit=Limit.time, values=None,
                                   objective=None, gap=None)

    monkeypatch.setattr(milp, "solve_model", nothing_in_time)
    plan = plan_collective(Collective("allgather", 8, 8 << 10), load_topology("dgx-a100"), "milp").plan
    assert plan.method != "milp" and (plan.solver is None) == (plan.method != "trees")
    assert plan.fallback == f"milp: the time limit was hit before any solution; returned {plan.method}"
    assert plan.metrics["milp_model"]["solver"]["status"] == "no_solution"


def test_milp_forwards_through_gpus_on_a_torus():
    # non-neighbours are reached store-and-forward through other GPUs, as trees
    topo = fabrics.torus([2, 3], 10.0, latency=0.5)
    plan = plan_collective(Collective("allgather", 6, 6 << 10), topo, "milp").plan
    assert plan.method == "milp" and plan.fallback is None
    assert plan.metrics["time_us"] < plan.metrics["candidates"]["ring"]


def test_milp_refuses_alltoall_and_declines_huge_models():
    topo = load_topology("dgx-a100")
    with pytest.raises(ValueError, match="milp"):  # all-to-all has its own flow model (test_alltoall.py)
        milp_schedule(Collective("alltoall", 8, 8 << 10), topo, Router(topo), 50.0)
    declined = milp_schedule(Collective("allgather", 8, 8 << 10), topo, Router(topo), 50.0, max_variables=10)
    assert isinstance(declined, Declined) and "variables" in declined.reason


@pytest.mark.slow
def test_a_model_over_the_limit_is_reduced_by_server_symmetry_and_not_called_optimal():
    topo = load_topology("dgx-a100x2")
    router = Router(topo)
    coll = Collective("allgather", 16, 16 << 10)
    declined = milp_schedule(coll, topo, router, horizon_us=32.0, time_limit_s=20, max_variables=10_000)
    assert isinstance(declined, Declined) and "reduced by server symmetry" in declined.reason
    outcome = milp_schedule(coll, topo, router, horizon_us=32.0, time_limit_s=20, max_variables=40_000)
    assert outcome.symmetry == 2 and outcome.variables < 40_000 < 2 * outcome.variables
    assert outcome.result.termination.value == "feasible"  # optimal only among symmetric schedules
    assert outcome.result.gap is None and "symmetric" in outcome.result.message
    schedule = outcome.schedule
    verify(schedule)
    assert simulate(schedule, topo, router).time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)
    # every send has its image on the other server, in the same step
    sends = {(t.chunk, t.src, t.dst, t.step) for t in schedule.transfers}
    rotate = lambda r: (r + 8) % 16  # noqa: E731  (server 0 <-> server 1, GPU by GPU)
    assert {(rotate(c), rotate(a), rotate(b), s) for c, a, b, s in sends} == sends
