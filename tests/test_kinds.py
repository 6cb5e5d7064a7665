"""Every registered method of every plan kind, through the one shared validator
(tests/kind_checks.py). The cases are read from the registries (planner.kinds.KINDS): a
method added to a kind is tested here without a test of its own. Set PLANNER_TOY_METHOD=1
to register tests/toy_method.py's method first and see it collected and checked.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kind_checks import check_method, problems
from planner.core.plan import KINDS as SCHEMA_KINDS
from planner.core.plan import plan_schema
from planner.kind import Attempt, Method
from planner.kinds import KINDS, RESERVED
from planner.kinds.collective import COLLECTIVE

HEAVY = {("collective", "milp"), ("collective", "lp"), ("collective", "trees"), ("collective", "auto"),
         ("experts", "milp"), ("experts", "auto"),
         ("serving", "auto"), ("serving", "homogeneous"), ("serving", "greedy"), ("serving", "milp")}


def registered() -> list:
    """(kind, method) of every registered method and `auto`, read from the registries."""
    out = []
    for kind in KINDS.values():
        for name in kind.method_names:
            marks = [pytest.mark.slow] if (kind.name, name) in HEAVY else []
            out.append(pytest.param(kind.name, name, id=f"{kind.name}-{name}", marks=marks))
    return out


@pytest.mark.parametrize("kind, method", registered())
def test_every_method_gives_checked_plans(kind, method):
    assert check_method(KINDS[kind], method) > 0, f"{kind} {method}: no test problem it applies to (kind_checks.py)"


def test_the_registries_name_every_kind_the_schema_reserves():
    written = {kind.plan_kind or kind.name for kind in KINDS.values()}  # serving plans are `parallelism` ones
    assert written | set(RESERVED) == set(SCHEMA_KINDS)
    assert set(plan_schema()["properties"]["kind"]["enum"]) == set(SCHEMA_KINDS)
    assert not written & set(RESERVED)


def test_every_kind_has_test_problems():
    for kind in KINDS.values():
        assert problems(kind.name), kind.name


def _copies_like_the_ring(p, context):
    """A toy collective method: the ring baseline's schedule, under another name."""
    from solvers import baselines
    return Attempt(baselines.ring(p.collective, p.topology, router=p.router))


def _drops_a_transfer(p, context):
    out = _copies_like_the_ring(p, context)
    return Attempt(dataclasses.replace(out.solution, transfers=out.solution.transfers[1:]))


def test_a_toy_method_goes_through_the_shared_validator():
    copy = COLLECTIVE.method("ring")
    toy = Method("toy", "candidate", _copies_like_the_ring, "test", handles=copy.handles)
    kind = dataclasses.replace(COLLECTIVE, methods=COLLECTIVE.methods + (toy,))
    assert check_method(kind, "toy") > 0
    broken = Method("broken", "candidate", _drops_a_transfer, "test", handles=copy.handles)
    kind = dataclasses.replace(COLLECTIVE, methods=COLLECTIVE.methods + (broken,))
    with pytest.raises(Exception, match="broken produced an invalid collective plan"):
        check_method(kind, "broken")


@pytest.mark.slow
def test_a_method_registered_is_collected_without_a_test_of_its_own(tmp_path):
    """tests/toy_method.py registers a method into the collective kind (as a new module
    would); pytest then collects and runs it here with no test written for it."""
    here = Path(__file__).parent
    env = {**os.environ, "PLANNER_TOY_METHOD": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_kinds.py"),
                          "-k", "every_method and toy", "-rA"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout and "collective-toy" in run.stdout, run.stdout
