"""Request-level, event-driven simulation of serving replicas: continuous batching, chunked
prefill, FCFS, KV-cache admission; TTFT / TPOT of every request, SLO attainment, goodput.

An engine (one replica, or one of a pipeline-parallel replica's `pp` virtual engines) runs
iterations back to back while it has work. Each iteration carries every running request's
next token and, under chunked prefill, as much of the waiting prompts as the token budget
leaves (vLLM's and SGLang's default schedulers; without chunking a prefill iteration
carries whole prompts and no decode, vLLM's v0 policy). A waiting request is admitted FCFS
when the running batch has room (`max_batch`) and the KV cache has room for its prompt and
its whole output (so nothing is preempted). Its first token comes at the end of the
iteration that finishes its prompt (TTFT = that time - arrival); TPOT = (finish - first
token) / (output - 1).

Disaggregated: a prefill engine runs prefill-only iterations; each finished prompt's KV
cache moves to its decode replica (transfer time = bytes / the path's bandwidth) and waits
there FCFS for room; the decode engine runs decode-only iterations. The transfer and the
wait count in TPOT, as the first output token is already out.

Every iteration's time is planner/serving/cost.py's. Deterministic: requests come from a
seeded PCG64 generator (numpy's, the same on every platform) or from the trace; a rate
scales the same unit-rate arrivals (common random numbers), so attainment falls as the
rate rises.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from planner.core.serving import Request, ServeWorkload
from planner.serving.cost import Chunk, ReplicaCost

GOODPUT_STEPS = 10  # bisection steps after the bracket: the rate to within 2^-10 of the bracket


@dataclass(frozen=True)
class Served:
    """One request's outcome."""

    request: int
    ttft_s: float
    tpot_s: float
    finish_s: float


def unit_requests(w: ServeWorkload, count: int | None = None) -> tuple[Request, ...]:
    """`count` (default: the workload's `requests`) requests at one request per second: drawn,
    or the trace rescaled to one per second and repeated end to end (one mean gap between
    copies) until there are `count` of them."""
    n = count or w.requests
    if w.trace:
        first = w.trace[0].arrival_s
        span = w.trace[-1].arrival_s - first
        scale = (len(w.trace) - 1) / span if span > 0 else 1.0
        period = (span * scale + 1.0) if span > 0 else float(len(w.trace))
        one = [Request((r.arrival_s - first) * scale if span > 0 else float(i), r.prompt_tokens, r.output_tokens)
               for i, r in enumerate(w.trace)]
        copies = max(1, -(-n // len(one)))
        return tuple(Request(r.arrival_s + k * period, r.prompt_tokens, r.output_tokens)
                     for k in range(copies) for r in one)[:max(n, len(one))]
    rng = np.random.Generator(np.random.PCG64(w.seed))
    gaps = rng.exponential(1.0, n)
    arrivals = np.cumsum(gaps) - gaps[0]
    prompts, outputs = _lengths(rng, w.distribution, w.prompt_tokens, n), _lengths(rng, w.distribution,
                                                                                  w.output_tokens, n)
    return tuple(Request(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs))


def _lengths(rng: np.random.Generator, kind: str, mean: float, n: int) -> np.ndarray:
    if kind == "fixed":
        return np.full(n, max(1, round(mean)), dtype=np.int64)
    if kind == "uniform":
        return np.maximum(1, np.rint(rng.uniform(0.5 * mean, 1.5 * mean, n))).astype(np.int64)
    return np.maximum(1, np.rint(rng.exponential(mean, n))).astype(np.int64)


def at_rate(requests: tuple[Request, ...], rate: float) -> tuple[Request, ...]:
    return tuple(Request(r.arrival_s / rate, r.prompt_tokens, r.output_tokens) for r in requests)


@dataclass
class _Live:
    index: int
    arrival: float
    prompt: int
    output: int
    todo: int  # prompt tokens still to prefill
    done_prefill: int  # prompt tokens already in the cache
    first: float = math.nan


class Engine:
    """One engine's event loop. `mode`: colocated | prefill | decode."""

    def __init__(self, cost: ReplicaCost, mode: str = "colocated", virtual: int = 1) -> None:
        self.cost = cost
        self.mode = mode
        w = cost.workload
        self.capacity = cost.kv_capacity_tokens // virtual
        self.max_batch = max(1, w.max_batch // virtual)
        self.budget = w.chunk_tokens if mode == "colocated" else 0
        self.hit = w.prefix_hit

    def run(self, arrivals: list[tuple[float, int, Request, float]]) -> list[tuple[int, float, float]]:
        """arrivals: (time it is here, request index, request, first-token time or NaN),
        sorted by time. Returns (index, first-token time, finish time) per request; a
        prefill engine's finish is its first token."""
        cost, out = self.cost, []
        queue: deque[_Live] = deque()
        prefilling: list[_Live] = []
        running: list[tuple[int, int, _Live]] = []  # heap of (finish iteration, index, request)
        used = 0  # KV tokens reserved
        context = 0.0  # sum of the running requests' contexts
        t, it, nxt = 0.0, 0, 0
        n = len(arrivals)

        def decoded(steps: int) -> None:
            """`steps` decode iterations of the running batch are done (at time t): each request
            gained a token per step; those with all their tokens leave and free their cache."""
            nonlocal it, context, used
            it += steps
            context += len(running) * steps
            while running and running[0][0] <= it:
                _, _, live = heapq.heappop(running)
                context -= live.prompt + live.output
                used -= self._reserved(live)
                out.append((live.index, live.first, t))
        while nxt < n or queue or prefilling or running:
            while nxt < n and arrivals[nxt][0] <= t:
                here, idx, r, first = arrivals[nxt]
                cached = int(r.prompt_tokens * self.hit)
                live = _Live(idx, here, r.prompt_tokens, r.output_tokens, r.prompt_tokens - cached, cached, first)
                if self.mode == "decode":
                    live.todo = 0
                queue.append(live)
                nxt += 1
            # admission, FCFS
            while queue and len(running) + len(prefilling) < self.max_batch \
                    and used + self._reserved(queue[0]) <= self.capacity:
                live = queue.popleft()
                if self.mode == "decode" and live.output <= 1:  # its only token came from the prefill
                    out.append((live.index, live.first, live.arrival))
                    continue
                used += self._reserved(live)
                if self.mode == "decode":
                    heapq.heappush(running, (it + live.output - 1, live.index, live))
                    context += live.prompt + 1
                else:
                    prefilling.append(live)
            if not prefilling and not running:
                if queue and used == 0:  # a request larger than the whole cache: it can never run
                    live = queue.popleft()
                    out.append((live.index, math.inf, math.inf))
                    continue
                if nxt < n:
                    t = max(t, arrivals[nxt][0])
                    continue
                break
            if not prefilling and self.mode != "prefill":
                blocked = bool(queue)  # the head waits for a finish: arrivals cannot change the batch
                k = self._steps_to_event(running[0][0] - it, len(running), context, t,
                                         None if blocked or nxt >= n else arrivals[nxt][0])
                a, b = cost.decode_terms(len(running))
                decode = len(running)
                t += k * a + b * (k * context + decode * k * (k - 1) / 2)
                decoded(k)
                continue
            chunks, finishing = self._chunks(prefilling, len(running))
            decode = len(running) if self.mode != "prefill" else 0
            if self.mode == "colocated" and self.budget == 0 and chunks:
                decode = 0  # no chunking: a prefill iteration carries no decode
            dt = cost.iteration_s(tuple(c for _, c in chunks), decode, context if decode else 0.0)
            t += dt
            if decode:
                decoded(1)
            for live in finishing:
                prefilling.remove(live)
                live.first = t
                if self.mode == "prefill" or live.output <= 1:
                    used -= self._reserved(live)
                    out.append((live.index, t, t))
                else:
                    heapq.heappush(running, (it + live.output - 1, live.index, live))
                    context += live.prompt + 1
        return out

    def _steps_to_event(self, to_finish: int, decode: int, context: float, t: float, arrival: float | None) -> int:
        """Decode-only iterations until the batch changes: the next finish, or the first
        iteration that ends at or after the next arrival (then it is admitted). Iteration j
        takes a + b (context + j decode), so k iterations take k a + b (k context + decode k(k-1)/2)."""
        if arrival is None or to_finish <= 1:
            return max(1, to_finish)
        a, b = self.cost.decode_terms(decode)
        gap = arrival - t

        def elapsed(k: int) -> float:
            return k * a + b * (k * context + decode * k * (k - 1) / 2)

        qa, qb = b * decode / 2, a + b * context - b * decode / 2
        k = gap / qb if qa <= 0 else (-qb + math.sqrt(qb * qb + 4 * qa * gap)) / (2 * qa)
        k = max(1, min(to_finish, int(k)))
        while k > 1 and elapsed(k - 1) >= gap:
            k -= 1
        while k < to_finish and elapsed(k) < gap:
            k += 1
        return k

    def _reserved(self, live: _Live) -> int:
        """KV tokens a request holds: its prompt, and on a decoding engine its output too."""
        return live.prompt + (0 if self.mode == "prefill" else live.output)

    def _chunks(self, prefilling: list[_Live], decoding: int) -> tuple[list[tuple[_Live, Chunk]], list[_Live]]:
        """This iteration's prefill pieces (FCFS) and the requests whose prompts they finish."""
        if not prefilling:
            return [], []
        budget = self.budget - decoding if self.budget else self.cost.token_budget
        if self.mode == "prefill":
            budget = self.cost.token_budget
        out, finishing = [], []
        for live in prefilling:
            if budget <= 0:
                break
            n = live.todo if not self.budget else min(live.todo, budget)
            if out and not self.budget and n > budget:
                break
            out.append((live, Chunk(n, live.done_prefill)))
            budget -= n
        for live, chunk in out:
            live.todo -= chunk.tokens
            live.done_prefill += chunk.tokens
            if live.todo == 0:
                finishing.append(live)
        return out, finishing


def simulate_replica(cost: ReplicaCost, requests: tuple[Request, ...], mode: str = "colocated",
                     delay: Callable[[int, Request], float] | None = None) -> list[Served]:
    """Requests (arrival order) on one replica; a pipeline-parallel one as pp virtual
    engines taking requests in turn. A decode replica's requests arrive with their first
    token (at `arrival_s`) and reach it `delay(i, request)` later (the KV transfer)."""
    virtual = cost.config.pp
    engines = [Engine(cost, mode, virtual) for _ in range(virtual)]
    streams: list[list] = [[] for _ in range(virtual)]
    for i, r in enumerate(requests):
        first = r.arrival_s if mode == "decode" else math.nan
        here = r.arrival_s + (delay(i, r) if delay is not None else 0.0)
        streams[i % virtual].append((here, i, r, first))
    served = []
    for engine, stream in zip(engines, streams):
        stream.sort(key=lambda x: (x[0], x[1]))
        for idx, first, finish in engine.run(stream):
            served.append(_served(requests[idx], idx, first, finish))
    return sorted(served, key=lambda s: s.request)


def _served(r: Request, idx: int, first: float, finish: float) -> Served:
    ttft = first - r.arrival_s
    tpot = (finish - first) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
    return Served(idx, ttft, tpot, finish)


def attainment(served: list[Served], w: ServeWorkload, ttft: bool = True, tpot: bool = True) -> float:
    if not served:
        return 0.0
    ok = sum(1 for s in served if (not ttft or s.ttft_s <= w.ttft_slo_s) and (not tpot or s.tpot_s <= w.tpot_slo_s))
    return ok / len(served)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank rule (a value some request actually had)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def max_rate(meets, start: float) -> float:
    """The highest rate at which `meets(rate)` holds: doubling from `start` to a bracket,
    then bisection; 0 when even start/1024 fails. `meets` should fall with the rate."""
    lo, hi = 0.0, start
    if meets(hi):
        lo = hi
        hi *= 2
        while meets(hi):
            lo, hi = hi, hi * 2
            if hi > 1e6:
                return lo
    else:
        while hi > start / 1024:
            hi /= 2
            if meets(hi):
                lo = hi
                hi *= 2
                break
        else:
            return 0.0
    for _ in range(GOODPUT_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo
