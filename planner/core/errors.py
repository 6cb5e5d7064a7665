"""Exceptions that the command line turns into exit codes.

`InputError` (exit 2) always names the file and the field so the one-line message
points the user at what to fix; `InfeasibleError` (exit 3) carries the reason.
"""
from __future__ import annotations


class PlannerError(Exception):
    """Base class of the errors the CLI reports without a traceback."""

    exit_code = 1


class InputError(PlannerError, ValueError):
    """Bad input: unknown field, wrong type or unit, inconsistent description."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ": ".join(where)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return " ".join(text.split())

    def within(self, source: str | None = None, field_prefix: str | None = None) -> "InputError":
        """The same error, located inside `source` and under `field_prefix`."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        return InputError(self.message, source=self.source or source, field=field)


class InfeasibleError(PlannerError):
    """The problem has no solution (exit 3)."""

    exit_code = 3


class ScheduleError(PlannerError):
    """A schedule is wrong: data missing, counted twice, or a link that does not exist."""

    exit_code = 1


class ExportMismatch(PlannerError):
    """An exported file does not reproduce the plan it was written from (exit 1)."""

    exit_code = 1


class ScheduleTooLarge(PlannerError):
    """A schedule too large to verify and time; reported like bad input (exit 2)."""

    exit_code = 2
