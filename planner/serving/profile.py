"""Measured iteration times that replace the analytical model for a replica shape (the
workload's `profile` CSV, planner/core/serving.py `load_profile`).

Prefill: a lone prompt of n tokens takes P(n), piecewise linear between the measured
lengths and extended along the last segment, never below the last value (0 at 0 tokens); a chunk of c tokens after k
cached ones takes P(k + c) - P(k), so the measured attention growth carries over.
Decode: for each measured batch B a step takes a_B + b_B x (the batch's total context), a
least-squares line through that batch's rows (one row: the analytical per-context slope);
other batches interpolate a and b linearly in B and extend along the nearest segment.
An iteration mixing prefill and decode (chunked prefill) takes the sum of the two parts:
a conservative reading, as the engine runs them in one pass.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from planner.core.serving import ProfileRow


def _along(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    """Piecewise-linear through the points, extended along the end segments: never below the
    last point's value past it (a larger batch or prompt does not take less), and between 0
    and the first point's value before it."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if x > xs[-1]:
        return max(y, ys[-1])
    if x < xs[0]:
        return min(max(y, 0.0), ys[0])
    return y


@dataclass(frozen=True)
class MeasuredTimes:
    prefill_tokens: tuple[float, ...] = ()
    prefill_seconds: tuple[float, ...] = ()
    decode_batches: tuple[float, ...] = ()
    decode_fixed: tuple[float, ...] = ()
    decode_per_context: tuple[float, ...] = ()

    @classmethod
    def of(cls, rows: tuple[ProfileRow, ...], per_context_fallback: float) -> "MeasuredTimes | None":
        prefill: dict[int, list[float]] = {}
        decode: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            if r.phase == "prefill":
                prefill.setdefault(r.tokens, []).append(r.ms / 1e3)
            else:
                decode.setdefault(r.batch, []).append((r.batch * r.context, r.ms / 1e3))
        if not prefill and not decode:
            return None
        p_tokens = tuple(float(n) for n in sorted(prefill))
        p_seconds = tuple(sum(prefill[n]) / len(prefill[n]) for n in sorted(prefill))
        if p_tokens and p_tokens[0] > 0:
            p_tokens, p_seconds = (0.0, *p_tokens), (0.0, *p_seconds)
        fixed, slope = [], []
        for b in sorted(decode):
            a, s = _line(decode[b], per_context_fallback)
            fixed.append(a)
            slope.append(s)
        return cls(p_tokens, p_seconds, tuple(float(b) for b in sorted(decode)), tuple(fixed), tuple(slope))

    @property
    def has_prefill(self) -> bool:
        return bool(self.prefill_tokens)

    @property
    def has_decode(self) -> bool:
        return bool(self.decode_batches)

    def prefill_s(self, tokens: float) -> float:
        return max(0.0, _along(self.prefill_tokens, self.prefill_seconds, tokens))

    def chunk_s(self, tokens: int, cached: int) -> float:
        return max(0.0, self.prefill_s(cached + tokens) - self.prefill_s(cached))

    def decode_terms(self, batch: int) -> tuple[float, float]:
        return (max(0.0, _along(self.decode_batches, self.decode_fixed, batch)),
                max(0.0, _along(self.decode_batches, self.decode_per_context, batch)))


def _line(points: list[tuple[float, float]], slope_fallback: float) -> tuple[float, float]:
    """Least squares y = a + b x; with one distinct x, the fallback slope through the mean."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my - slope_fallback * mx, slope_fallback
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b
