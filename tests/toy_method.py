"""A toy collective method, registered into planner.kinds.KINDS when PLANNER_TOY_METHOD is
set (tests/conftest.py): the ring baseline's schedule under the name `toy`. It has no test
of its own; tests/test_kinds.py collects it from the registry."""
from __future__ import annotations

import dataclasses

from planner.kind import Attempt, Method
from planner.kinds import KINDS


def _ring_again(p, context):
    from solvers import baselines
    return Attempt(baselines.ring(p.collective, p.topology, router=p.router))


def register() -> None:
    kind = KINDS["collective"]
    toy = Method("toy", "candidate", _ring_again, "the ring, as a toy", handles=kind.method("ring").handles)
    KINDS["collective"] = dataclasses.replace(kind, methods=kind.methods + (toy,))
