"""What a plan kind is, and what a method of one is: the registry entries `planner.search` runs.

A kind (one module in planner/kinds/) lists its methods in search order and says how a
solution is checked and scored, which bound it is held against, and how the plan's
metrics, body and exports are written. A method says which problems it is defined for,
whether it applies to this one (a reason when it does not) and whether a search tries it,
and runs. Everything else (auto, candidates, skipped, fallback, the solver entry,
provenance, the export filter) is done once, in `planner.search`, for every kind.

Roles:
- `candidate`: a fast method every search tries first (a heuristic, or a polynomial
  algorithm such as tree packing);
- `exact`: a formulation solved under the time limit; asked for, or under `auto`, it
  runs after the candidates and starts from the best of them (`Context.incumbent`);
- `baseline`: a published method run only when asked for, as a yardstick.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from planner.core.declined import Declined
from solvers import SolveResult

Role = Literal["candidate", "exact", "baseline"]
ROLES: tuple[Role, ...] = ("candidate", "exact", "baseline")


@dataclass(frozen=True)
class Options:
    """What the user set for the search: the exact methods' time limit, a solver backend
    by name (None: the solver layer's default for each model), an export format."""

    time_limit_s: float = 60.0
    solver: str | None = None
    export: str | None = None


@dataclass(frozen=True)
class Attempt:
    """A method's answer: a solution, or None and `why`; the solve behind it (the solver
    layer's result, for exact methods and LP-based ones), the model's figures (variables,
    constraints, ...) and what it proved about the optimum, for the kind's bound."""

    solution: Any = None
    solve: SolveResult | None = None
    model: dict | None = None
    why: str | None = None
    proof: Any = None


@dataclass(frozen=True)
class Context:
    """What a method sees of the search: the options, the method asked for, whether this
    is a search (auto, or an exact method, which also tries the candidates) and the best
    candidate so far."""

    options: Options
    requested: str
    searching: bool
    incumbent: "Candidate | None" = None


def _everything(problem: Any) -> bool:
    return True


def _no_reason(problem: Any) -> str | None:
    return None


def _always_searched(problem: Any, context: Context) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """One registry entry. `run(problem, context)` returns an Attempt, or Declined when
    it finds part-way that it cannot serve the problem. `handles`: the problems it is
    defined for at all (asking for it elsewhere is bad input; a search passes it by
    silently). `applies`: None, or why it cannot run on this problem (a search records
    it in `skipped`). `searched`: None, or why a search leaves it out although it applies
    (e.g. too large for auto); the method still runs when asked for by name."""

    name: str
    role: Role
    run: Callable[[Any, Context], Attempt | Declined]
    summary: str
    handles: Callable[[Any], bool] = _everything
    applies: Callable[[Any], str | None] = _no_reason
    searched: Callable[[Any, Context], str | None] = _always_searched
    heuristic: bool = True  # provenance: no optimality claim of any kind

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"method {self.name!r}: role {self.role!r} is not one of {ROLES}")


@dataclass(frozen=True)
class Candidate:
    """A checked solution: the method, what checking it gave (`evidence`: the simulation
    of a schedule, the loads of a map), its score (lower is better) and the attempt."""

    method: Method
    solution: Any
    evidence: Any
    score: float
    attempt: Attempt
    seconds: float


@dataclass(frozen=True)
class PlanKind:
    """A plan kind. Every callable takes the problem first.

    evaluate(problem, solution) -> (evidence, score): checks the solution and raises a
        PlannerError (exit 1) when it is wrong; ScheduleTooLarge when it cannot be checked.
    bound(problem, candidates) -> an object with `to_json()`: the lower bound(s), with
        what the candidates' solves proved.
    metrics(problem, candidate, bound) -> the kind's figures of the returned plan.
    body(problem, candidate) -> the plan's `plan` section.
    exports[fmt](problem, candidate) -> the export's text, parsed back and compared; an
        InputError when the format cannot express the solution, ExportMismatch (exit 1)
        when it does not parse back to the same plan.
    read_back[fmt](problem, text) -> the solution an export's text says (what a runtime
        or engine would load), for checks from outside.
    finish(problem, candidate) -> a better solution of the returned candidate at the same
        score (experts: fewer cross-node tokens), or None: applied after the choice.
    solve_entry(problem, candidate, bound) -> the returned plan's solve as the plan says
        it (experts: optimal only when the map meets the bound); default: the attempt's.
    lost(exact, its score, winner, winner's score) -> why an exact method's plan lost.
    subject(problem) -> what the problem is ("allgather"), for the error naming a method
        that does not do it.
    """

    name: str
    methods: tuple[Method, ...]
    describe: Callable[[Any], dict]
    evaluate: Callable[[Any, Any], tuple[Any, float]]
    bound: Callable[[Any, list[Candidate]], Any]
    metrics: Callable[[Any, Candidate, Any], dict]
    body: Callable[[Any, Candidate], dict]
    exports: Mapping[str, Callable[[Any, Candidate], str]]
    read_back: Mapping[str, Callable[[Any, str], Any]]
    lost: Callable[[str, float, str, float], str]
    subject: Callable[[Any], str]  # what the problem is, in "method X does not do <subject>"
    noun: str  # what a solution is called: "schedule", "map"
    export_check: str  # what an export's round trip showed, as the command line says it
    best_of: str  # provenance.auto_choice reads "<best_of> of <methods tried>"
    verified_by: str
    finish: Callable[[Any, Candidate], Any] | None = None
    solve_entry: Callable[[Any, Candidate, Any], SolveResult | None] | None = None
    plan_kind: str = ""  # the plan JSON's `kind` when it is not `name` (serving plans are `parallelism` ones)

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names) or "auto" in names:
            raise ValueError(f"kind {self.name!r}: method names must be unique and not 'auto': {names}")

    @property
    def method_names(self) -> tuple[str, ...]:
        """`auto` and every registered method: the choices of the command's --method."""
        return ("auto", *(m.name for m in self.methods))

    def method(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.name == name), None)
