"""CBC backend through PuLP's command-line interface (MILP and LP)."""

from __future__ import annotations

import math
import os
import re
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..linear_model import MatrixForm, LinearModel
from ..result import Limit, SolveOptions, SolveResult, Termination
from .base import Backend, time_limit_reached

_BOUND_LINE = re.compile(r"^(?:Lower|Upper) bound:\s*(\S+)", re.MULTILINE)
_RESULT_LINE = re.compile(r"^Result - (.*)$", re.MULTILINE)
_TIME_LIMIT_TEXT = re.compile(r"stopped on time|time limit|exiting on maximum time", re.IGNORECASE)
_NOT_OUTCOME_LINE = ("Total time", "Option for", "Coin0", "Cbc0", "Cgl0")


class CbcBackend(Backend):
    """CBC via pulp.COIN_CMD, using PuLP's bundled binary when present.

    PuLP reports status "Optimal" even when a time limit stopped CBC with an
    incumbent, so the mapping uses `prob.sol_status` and CBC's log instead:
    LpSolutionOptimal -> optimal; LpSolutionIntegerFeasible -> feasible
    (limit_hit if the log reports a time limit or the limit elapsed); status
    Infeasible (also CBC's "Integer infeasible") -> infeasible; Unbounded ->
    unbounded; no solution after a time limit -> no_solution; else error.
    The dual bound is read from CBC's log ("Lower/Upper bound:", printed with
    3 decimals) when present.
    All files live in a private temporary directory removed after the solve.

    CBC checks its time limit only between phases, and its primal heuristics
    can overrun it by minutes on large models. On Linux the CBC process is
    therefore killed at 1.5 x time limit + 1 s, giving no_solution with
    limit_hit (its incumbent, if any, is lost).
    """

    name = "cbc"
    supports_integer = True
    supports_continuous = True

    def _solve(self, model: LinearModel, form: MatrixForm, options: SolveOptions, started: float) -> SolveResult:
        import pulp

        problem, xs = _to_pulp(form)
        with tempfile.TemporaryDirectory(prefix="planner-cbc-") as workdir:
            log_path = os.path.join(workdir, "cbc.log")
            command = _cbc_command(options, log_path)
            command.tmpDir = workdir
            solve_started = time.perf_counter()
            with _hard_deadline(workdir, _hard_limit(options)) as was_killed:
                try:
                    problem.solve(command)
                except pulp.PulpSolverError as exc:
                    if was_killed():
                        return self._result(
                            form, started, Termination.no_solution, limit=Limit.time,
                            message=f"CBC overran its time limit and was killed after {_hard_limit(options):.1f}s",
                        )
                    return self._result(form, started, Termination.error, message=f"CBC failed: {exc}")
            solver_seconds = time.perf_counter() - solve_started
            log = _read_text(log_path)
        if options.verbose:
            print(log)

        outcome = _outcome(log)
        stopped_on_time = bool(_TIME_LIMIT_TEXT.search(log)) or time_limit_reached(options, solver_seconds)
        bound = _parse_bound(log)
        if bound is not None:
            bound += form.offset

        if problem.sol_status == pulp.LpSolutionOptimal:
            values = _values(xs, form)
            return self._result(form, started, Termination.optimal, values=values, dual_bound=bound, message=outcome)
        if problem.sol_status == pulp.LpSolutionIntegerFeasible:
            values = _values(xs, form)
            return self._result(
                form, started, Termination.feasible, values=values, dual_bound=bound,
                limit=Limit.time if stopped_on_time else None, message=outcome,
            )
        if problem.status == pulp.LpStatusInfeasible:
            return self._result(form, started, Termination.infeasible, message=outcome)
        if problem.status == pulp.LpStatusUnbounded:
            return self._result(form, started, Termination.unbounded, message=outcome)
        if problem.status == pulp.LpStatusNotSolved and stopped_on_time:
            return self._result(form, started, Termination.no_solution, limit=Limit.time, message=outcome)
        return self._result(
            form, started, Termination.error,
            message=f"PuLP status {pulp.LpStatus.get(problem.status)}: {outcome}",
        )


def _to_pulp(form: MatrixForm):
    """Translate to a PuLP problem with safe names x0.., c0..; the objective constant is left out."""
    import pulp

    problem = pulp.LpProblem("planner", pulp.LpMaximize if form.maximize else pulp.LpMinimize)
    xs = [
        problem.add_variable(
            f"x{j}",
            lb if math.isfinite(lb) else None,
            ub if math.isfinite(ub) else None,
            pulp.LpInteger if integer else pulp.LpContinuous,
        )
        for j, lb, ub, integer in form.variables()
    ]
    for row, lb, ub, entries in form.rows():
        terms = [(xs[j], coef) for j, coef in entries]
        if lb == ub:
            sides = [(pulp.LpConstraintEQ, lb, f"c{row}")]
        else:
            sides = []
            if math.isfinite(lb):
                sides.append((pulp.LpConstraintGE, lb, f"c{row}_lo"))
            if math.isfinite(ub):
                sides.append((pulp.LpConstraintLE, ub, f"c{row}_up"))
        for sense, rhs, name in sides:
            problem.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, name, rhs))
    objective = [(xs[j], coef) for j, coef in enumerate(form.c.tolist()) if coef != 0.0]
    problem.setObjective(pulp.LpAffineExpression(objective))
    return problem, xs


def _hard_limit(options: SolveOptions) -> float | None:
    if options.time_limit_s is None:
        return None
    return 1.5 * options.time_limit_s + 1.0


@contextmanager
def _hard_deadline(workdir: str, seconds: float | None) -> Iterator[Callable[[], bool]]:
    """Kill our CBC child process (found by its unique `workdir`) if it runs past `seconds`.

    Yields a function telling whether it had to. A no-op where /proc does not exist.
    """
    killed: list[int] = []
    if seconds is None or not os.path.isdir("/proc"):
        yield lambda: False
        return
    finished = threading.Event()

    def watch() -> None:
        if finished.wait(seconds):
            return
        for pid in _child_processes_mentioning(workdir):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass

    watcher = threading.Thread(target=watch, name="cbc-deadline", daemon=True)
    watcher.start()
    try:
        yield lambda: bool(killed)
    finally:
        finished.set()
        watcher.join()


def _child_processes_mentioning(text: str) -> Iterator[int]:
    """Process ids of this process's children whose command line contains `text` (Linux /proc)."""
    me, needle = os.getpid(), text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                # "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            if parent != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command_line = handle.read()
        except (OSError, IndexError, ValueError):
            continue
        if needle in command_line:
            yield int(entry)


def _cbc_command(options: SolveOptions, log_path: str):
    from pulp import COIN_CMD
    from pulp.apis.coin_api import PULP_CBC_CMD

    bundled = PULP_CBC_CMD.pulp_cbc_path
    # COIN_CMD with the bundled path avoids PULP_CBC_CMD's deprecation warning;
    # without a bundled binary COIN_CMD looks for `cbc` on PATH.
    path = bundled if os.access(bundled, os.X_OK) else None
    # CBC and CLP treat seed 0 as "seed from the time of day", hence the +1.
    return COIN_CMD(
        path=path,
        msg=False,
        timeLimit=options.time_limit_s,
        gapRel=options.rel_gap,
        threads=options.threads,
        options=[f"randomSeed {options.seed + 1}", f"randomCbcSeed {options.seed + 1}"],
        logPath=log_path,
        keepFiles=False,
    )


def _values(xs, form: MatrixForm) -> list[float]:
    # Variables in no row and not in the objective are absent from CBC's
    # output; any value in their bounds is optimal, so take the one nearest 0.
    values = []
    for x, lb, ub in zip(xs, form.var_lb.tolist(), form.var_ub.tolist()):
        value = x.varValue
        values.append(min(max(0.0, lb), ub) if value is None else float(value))
    return values


def _outcome(log: str) -> str:
    """CBC's "Result - ..." line or, for LPs and early exits, the last status line of the log."""
    match = _RESULT_LINE.search(log)
    if match is not None:
        return match.group(1).strip()
    lines = [line.strip() for line in log.splitlines()]
    for line in reversed(lines):
        if line and not line.startswith(_NOT_OUTCOME_LINE):
            return line
    return "empty CBC log"


def _parse_bound(log: str) -> float | None:
    match = _BOUND_LINE.search(log)
    if match is None:
        return None
    try:
        bound = float(match.group(1))
    except ValueError:
        return None
    return bound if math.isfinite(bound) else None


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
