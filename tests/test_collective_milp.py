import pytest

from models.collective_milp import milp_schedule
from planner.bounds import lower_bound
from planner.collectives import Collective
from planner.errors import InputError
from planner.pipeline import plan_collective
from planner.simulator import simulate, verify
from topologies import fabrics
from topologies.io import load_topology
from topologies.routing import Router


@pytest.mark.parametrize("kind", ["allgather", "reduce-scatter", "allreduce", "broadcast", "reduce"])
@pytest.mark.parametrize("name", ["dgx-a100", "dgx1"])
def test_milp_schedules_verify_and_respect_the_bound(kind, name):
    topo = load_topology(name)
    coll = Collective(kind, 8, 8 << 10, root=3)
    outcome = milp_schedule(coll, topo, Router(topo), horizon_us=50.0, parts=1 if kind != "broadcast" else 2,
                            time_limit_s=20)
    assert outcome.result.termination.value == "optimal" and outcome.schedule is not None
    verify(outcome.schedule)
    assert simulate(outcome.schedule, topo).time_us >= lower_bound(coll, topo).time_us * (1 - 1e-9)


def test_milp_allgather_reaches_the_bound_on_an_nvswitch_server():
    # 1 KiB per GPU on DGX A100: one step, every GPU to every other, is optimal
    topo = load_topology("dgx-a100")
    coll = Collective("allgather", 8, 8 << 10)
    result = plan_collective(coll, topo, "milp", time_limit_s=20)
    assert result.plan.method == "milp" and result.plan.fallback is None
    assert result.plan.solver["status"] == "optimal" and result.plan.solver["gap"] == 0
    assert result.plan.metrics["ratio_to_bound"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["dgx1", "dgx-a100x2"])
@pytest.mark.parametrize("per_gpu", [1 << 10, 64 << 10])
def test_auto_is_no_slower_than_any_baseline(name, per_gpu):
    topo = load_topology(name)
    coll = Collective("allgather", topo.num_gpus, per_gpu * topo.num_gpus)
    plan = plan_collective(coll, topo, "auto", time_limit_s=20).plan
    times = plan.metrics["candidates"]
    assert plan.metrics["time_us"] == min(times.values())
    assert plan.solver is None or plan.solver["status"] in ("optimal", "feasible", "no_solution", "infeasible")


def test_time_limited_milp_is_not_called_optimal():
    topo = load_topology("dgx-a100x2")
    coll = Collective("allreduce", 16, 16 << 16)
    plan = plan_collective(coll, topo, "milp", time_limit_s=0.2).plan
    assert plan.solver["limit_hit"] and plan.solver["status"] in ("feasible", "no_solution")
    if plan.method != "milp":
        assert plan.fallback.startswith("milp:")


def test_milp_forwards_through_gpus_on_a_torus():
    # non-neighbours are reached store-and-forward through other GPUs, as trees
    topo = fabrics.torus([2, 3], 10.0, latency=0.5)
    plan = plan_collective(Collective("allgather", 6, 6 << 10), topo, "milp").plan
    assert plan.method == "milp" and plan.fallback is None
    assert plan.metrics["time_us"] < plan.metrics["candidates"]["ring"]


def test_milp_refuses_alltoall_and_huge_models():
    topo = load_topology("dgx-a100")
    with pytest.raises(InputError, match="milp"):
        plan_collective(Collective("alltoall", 8, 8 << 10), topo, "milp")
    with pytest.raises(InputError, match="variables"):
        milp_schedule(Collective("allgather", 8, 8 << 10), topo, Router(topo), 50.0, max_variables=10)
