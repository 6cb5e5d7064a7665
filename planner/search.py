"""The one search every plan kind goes through: methods -> checked candidates -> one plan.

    plan(kind, problem, method, options)

1. The method asked for is looked up in the kind's registry: unknown, or not defined for
   this problem, is bad input (exit 2). `auto` and the exact methods *search*: they run
   every candidate method first, then the exact one(s) (auto: those whose `searched`
   allows it), each starting from the best candidate so far. Any other method runs alone.
2. A method that does not apply (its `applies` reason, or a Declined from its run) is
   recorded in `metrics.skipped` during a search, or is bad input when asked for alone;
   an exact method that gives no plan says why in `fallback`.
3. Every solution is checked by the kind (`evaluate`: the simulator for schedules, the map
   check for expert maps) before it becomes a candidate; one too large to check is
   skipped in a search.
4. Candidates are ranked by score (lower is better), an exact method first on a tie, then
   by name. With an export format the plan returned is the best whose export parses
   back to the same plan; the ones before it are listed in `skipped` with the reason.
5. The plan: the kind's metrics and body, the bound, the returned method's solve as the
   `solver` entry (the solver layer's result), the exact attempt's model figures under
   `metrics.milp_model` (with its own solve when it lost), the fallback and provenance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from planner import __version__
from planner.core.declined import Declined
from planner.core.errors import ExportMismatch, InputError, PlannerError, ScheduleTooLarge
from planner.core.plan import Plan
from planner.kind import Attempt, Candidate, Context, Method, Options, PlanKind
from solvers import SolveResult, SolverError

MODEL_KEY = "milp_model"  # metrics entry of the exact method's model
PLAN_STATUSES = ("optimal", "feasible", "infeasible", "no_solution", "error")


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    candidate: Candidate  # the returned one
    exported: str | None = None  # the export's text, parsed back and compared

    @property
    def solution(self) -> Any:
        return self.candidate.solution

    @property
    def evidence(self) -> Any:
        return self.candidate.evidence


def solver_json(result: SolveResult) -> dict:
    """The plan's `solver` entry; `unbounded` is not a plan status, so it reads `error`."""
    doc = result.to_json()
    if doc["status"] not in PLAN_STATUSES:
        doc["status"] = "error"
    return doc


def plan(kind: PlanKind, problem: Any, method: str = "auto", options: Options = Options()) -> PlanResult:
    """The plan of `problem` by `method` (see the module docstring)."""
    started = time.perf_counter()
    requested = _requested(kind, problem, method)
    searching = requested is None or requested.role == "exact"
    search = _Search(kind, problem, method, searching, options)
    for m in _pool(kind, problem, requested, searching):
        search.consider(m, requested)
    if not search.tried:
        reasons = {**search.skipped, **{name: why for name, why, _ in search.exact_notes}}
        raise InputError(f"no method gives a {kind.name} plan here: "
                         + "; ".join(f"{k}: {v}" for k, v in reasons.items()), field="--method")
    ranked = sorted(search.tried, key=_rank)
    chosen, exported, rest = search.returned(ranked)
    synthesis = time.perf_counter() - started if searching else chosen.seconds  # a search: all of it
    bound = kind.bound(problem, search.tried)
    metrics = kind.metrics(problem, chosen, bound)
    metrics["synthesis_seconds"] = synthesis
    if searching:
        metrics["candidates"] = {c.method.name: c.score for c in rest}
        if search.skipped:
            metrics["skipped"] = search.skipped
    for name, attempt in search.exact_attempts.items():
        if attempt.model is not None:
            model = dict(attempt.model)
            if name != chosen.method.name and attempt.solve is not None:
                model["solver"] = solver_json(attempt.solve)  # `solver` is the returned method's solve
            metrics[MODEL_KEY] = model
    solve = kind.solve_entry(problem, chosen, bound) if kind.solve_entry else chosen.attempt.solve
    document = Plan(
        kind=kind.plan_kind or kind.name,
        problem={**kind.describe(problem), "method_requested": method, "time_limit_s": options.time_limit_s,
                 "solver_requested": options.solver},
        method=chosen.method.name, metrics=metrics, bound=bound.to_json(), plan=kind.body(problem, chosen),
        solver=solver_json(solve) if solve is not None else None,
        fallback=search.fallback(chosen) if searching else None,
        provenance={"planner_version": __version__, "heuristic": chosen.method.heuristic,
                    "verified_by": kind.verified_by,
                    "auto_choice": (f"{kind.best_of} of {', '.join(c.method.name for c in rest)}"
                                    if searching else "requested")})
    return PlanResult(document, chosen, exported)


def run_method(kind: PlanKind, method: str, problem: Any, options: Options = Options()) -> Attempt | Declined:
    """One method's own attempt, outside a search: no candidates before it, no check after
    (benchmarks and tests that time or inspect a method alone)."""
    return kind.method(method).run(problem, Context(options, method, False))


def _requested(kind: PlanKind, problem: Any, method: str) -> Method | None:
    """The Method asked for (None for auto); bad input when unknown or not defined here."""
    if method == "auto":
        return None
    m = kind.method(method)
    if m is None:
        raise InputError(f"unknown method {method!r} ({kind.name}: {', '.join(kind.method_names)})", field="--method")
    if not m.handles(problem):
        others = [x.name for x in kind.methods if x.handles(problem)]
        raise InputError(f"method {method!r} does not do {kind.subject(problem)} (use {', '.join(['auto', *others])})",
                         field="--method")
    return m


def _pool(kind: PlanKind, problem: Any, requested: Method | None, searching: bool) -> list[Method]:
    if not searching:
        return [requested]
    handled = [m for m in kind.methods if m.handles(problem)]
    exact = [m for m in handled if m.role == "exact"] if requested is None else [requested]
    return [m for m in handled if m.role == "candidate"] + exact


def _rank(c: Candidate) -> tuple:
    return (c.score, c.method.role != "exact", c.method.name)


class _Search:
    """What a search gathers as it goes: candidates, skipped methods, exact attempts."""

    def __init__(self, kind: PlanKind, problem: Any, method: str, searching: bool, options: Options):
        self.kind, self.problem, self.method, self.searching, self.options = kind, problem, method, searching, options
        self.tried: list[Candidate] = []
        self.skipped: dict[str, str] = {}
        self.exact_attempts: dict[str, Attempt] = {}
        self.exact_notes: list[tuple[str, str, bool]] = []  # (method, why, name the returned method after it)

    def consider(self, m: Method, requested: Method | None) -> None:
        context = Context(self.options, self.method, self.searching, min(self.tried, key=_rank, default=None))
        if self.searching and m is not requested:
            why = m.searched(self.problem, context)
            if why is not None:
                self.skipped[m.name] = why
                return
        why = m.applies(self.problem)
        started = time.perf_counter()
        out = Declined(why) if why is not None else self._run(m, context)
        seconds = time.perf_counter() - started
        if isinstance(out, Declined):
            self._decline(m, out.reason)
            return
        if m.role == "exact":
            self.exact_attempts[m.name] = out
        if out.solution is None:
            if m.role == "exact":
                self.exact_notes.append((m.name, out.why or "no solution", True))
            else:
                self._decline(m, out.why or "no solution")
            return
        try:
            evidence, score = self.kind.evaluate(self.problem, out.solution)
        except ScheduleTooLarge as exc:
            self._decline(m, str(exc))
            return
        except PlannerError as exc:
            raise type(exc)(f"{m.name} produced an invalid {self.kind.name} plan: {exc}") from None
        self.tried.append(Candidate(m, out.solution, evidence, score, out, seconds))

    def _run(self, m: Method, context: Context) -> Attempt | Declined:
        try:
            return m.run(self.problem, context)
        except SolverError as exc:  # e.g. an LP-only --solver for an integer model
            raise InputError(f"{self.options.solver or 'the default solver'} cannot solve the {m.name} model: {exc}",
                             field="--solver") from None

    def _decline(self, m: Method, reason: str) -> None:
        if not self.searching:
            raise InputError(reason, field="--method")
        if m.role == "exact":
            self.exact_notes.append((m.name, f"not applicable here ({reason})", False))
        else:
            self.skipped[m.name] = reason

    def returned(self, ranked: list[Candidate]) -> tuple[Candidate, str | None, list[Candidate]]:
        """The best candidate that finishes and exports, its export, and the ranked
        candidates from it on; the ones before it go to `skipped`."""
        fmt = self.options.export
        if fmt is not None and fmt not in self.kind.exports:
            raise InputError(f"unknown export format {fmt!r} ({self.kind.name}: {', '.join(self.kind.exports)})",
                             field="--export")
        for i, candidate in enumerate(ranked):
            final = self._finished(candidate)
            if fmt is None:
                return final, None, ranked[i:]
            try:
                return final, self.kind.exports[fmt](self.problem, final), ranked[i:]
            except (InputError, ExportMismatch) as exc:
                message = exc.message if isinstance(exc, InputError) else str(exc)
                if i == len(ranked) - 1:
                    if isinstance(exc, ExportMismatch):
                        raise
                    raise InputError(message, source=exc.source, field=f"--export {fmt}") from None
                self.skipped[candidate.method.name] = f"its {self.kind.noun} does not export as {fmt}: {message}"
        raise AssertionError("unreachable: the last candidate returns or raises")

    def _finished(self, candidate: Candidate) -> Candidate:
        if self.kind.finish is None:
            return candidate
        started = time.perf_counter()
        better = self.kind.finish(self.problem, candidate)
        if better is None:
            return candidate
        evidence, score = self.kind.evaluate(self.problem, better)
        return replace(candidate, solution=better, evidence=evidence, score=score,
                       seconds=candidate.seconds + time.perf_counter() - started)

    def fallback(self, chosen: Candidate) -> str | None:
        """Why the returned plan is not an exact method's, when a search ran one."""
        notes = [f"{name}: {why}" + (f"; returned {chosen.method.name}" if name_it else "")
                 for name, why, name_it in self.exact_notes]
        for c in self.tried:
            if c.method.role != "exact" or c.method is chosen.method:
                continue
            if c.method.name in self.skipped:  # a checked plan is skipped only when its export is refused
                notes.append(f"{c.method.name}: {self.skipped[c.method.name]}; returned {chosen.method.name}")
            else:
                notes.append(self.kind.lost(c.method.name, c.score, chosen.method.name, chosen.score))
        return "; ".join(notes) or None
