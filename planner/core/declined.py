"""`Declined`: a method that does not apply to a problem, and why.

A value, not an exception: an algorithm that finds, part-way, that it cannot serve the
problem (a model over its size limit, a forest that fails its check, a plan too large
to verify) returns one, and the search records the reason and moves on.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Declined:
    reason: str
