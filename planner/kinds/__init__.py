"""The plan kinds, one module each; `KINDS` is the registry the command line and the tests
read. A kind reserved in the plan schema but not built yet names the module it goes in
(docs/architecture.md says how to add one)."""
from __future__ import annotations

from planner.kind import PlanKind
from planner.kinds.collective import COLLECTIVE
from planner.kinds.experts import EXPERTS
from planner.kinds.parallelism import PARALLELISM
from planner.kinds.placement import PLACEMENT
from planner.kinds.serving import SERVING

KINDS: dict[str, PlanKind] = {kind.name: kind for kind in (COLLECTIVE, EXPERTS, PARALLELISM, PLACEMENT, SERVING)}
RESERVED: dict[str, str] = {}
