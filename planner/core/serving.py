"""The serving WORKLOAD file: traffic, lengths, SLOs, GPU prices, and one replica configuration.

Workload (contract, `mode: serve`), extended (docs/serving.md has the table):
- `prompt_tokens`, `output_tokens`: mean lengths; `distribution: fixed | uniform |
  exponential` draws each request's lengths around them (uniform: 0.5x to 1.5x;
  exponential: geometric, at least one token), or `trace: FILE.csv` gives every request
  (columns `arrival_s,prompt_tokens,output_tokens`; the rate is then the trace's, scaled
  to `rate_rps` when that is given too);
- `rate_rps`: the request rate to serve (Poisson arrivals), `ttft_slo_s`, `tpot_slo_s`,
  `slo_quantile` (default 0.9: DistServe's attainment target);
- `decode_batch`: the batch of the `--fix` decode-step figure;
- `dtype` (weights and compute: bf16 | fp16 | fp8), `kv_dtype` (default bf16, fp8 allowed);
- `prefix_hit`: the fraction of each prompt found in the prefix cache (not recomputed);
- `prices`: {GPU preset: $ per GPU-hour}; `available`: {GPU preset: GPUs usable} (default:
  all the topology has); `budget_per_hour`; `objective: cost` (the cheapest plan that
  serves `rate_rps`) or `goodput` (the most goodput within the budget and the GPUs);
- `roles: any | colocated | disaggregated`: which prefill/decode arrangements to consider;
- scheduler knobs (vLLM's and SGLang's): `max_batch` (running requests per replica,
  vLLM's max_num_seqs default 256), `chunk_tokens` (tokens per iteration under chunked
  prefill, 0 for none), `memory_utilization` (vLLM's gpu_memory_utilization, 0.9);
- `requests` (simulated per estimate, default 1200) and `seed`.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from planner.core.errors import InputError
from planner.core.loader import expect_mapping, expect_type, read_document

DISTRIBUTIONS = ("fixed", "uniform", "exponential")
SERVE_DTYPES = ("bf16", "fp16", "fp8")
KV_DTYPES = ("bf16", "fp16", "fp8")
OBJECTIVES = ("cost", "goodput")
ROLE_CHOICES = ("any", "colocated", "disaggregated")
ROLES = ("colocated", "prefill", "decode")


@dataclass(frozen=True)
class Request:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ServeWorkload:
    prompt_tokens: float
    output_tokens: float
    rate_rps: float
    ttft_slo_s: float
    tpot_slo_s: float
    slo_quantile: float = 0.9
    decode_batch: int | None = None
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    distribution: str = "fixed"
    prefix_hit: float = 0.0
    prices: tuple[tuple[str, float], ...] = ()
    available: tuple[tuple[str, int], ...] = ()
    budget_per_hour: float | None = None
    objective: str = "cost"
    roles: str = "any"
    max_batch: int = 256
    chunk_tokens: int = 8192
    memory_utilization: float = 0.9
    requests: int = 1200
    seed: int = 0
    trace: tuple[Request, ...] = field(default=(), compare=False, repr=False)
    trace_file: str | None = None
    profile: tuple["ProfileRow", ...] = field(default=(), compare=False, repr=False)
    profile_file: str | None = None

    @property
    def mean_context(self) -> float:
        """The mean context of a decode step (contract): prompt + output / 2."""
        return self.prompt_tokens + self.output_tokens / 2

    def price(self, gpu: str) -> float | None:
        return dict(self.prices).get(gpu)

    def describe(self) -> dict:
        out = {"mode": "serve"}
        for f in fields(self):
            if f.name in ("trace", "profile"):
                continue
            value = getattr(self, f.name)
            out[f.name] = dict(value) if f.name in ("prices", "available") else value
        if self.trace:
            out["trace_requests"] = len(self.trace)
        if self.profile:
            out["profile_rows"] = len(self.profile)
        return out


_POSITIVE = ("prompt_tokens", "output_tokens", "rate_rps", "ttft_slo_s", "tpot_slo_s")
_INTS = ("decode_batch", "max_batch", "requests")
_CHOICES = {"dtype": SERVE_DTYPES, "kv_dtype": KV_DTYPES, "distribution": DISTRIBUTIONS, "objective": OBJECTIVES,
            "roles": ROLE_CHOICES}
MAX_REQUESTS = 20000


def parse_serve_workload(data: Any, source: str | None = None) -> ServeWorkload:
    files = ("trace", "trace_file", "profile", "profile_file")
    allowed = ("mode", "trace", "profile", *(f.name for f in fields(ServeWorkload) if f.name not in files))
    trace_path = data.get("trace") if isinstance(data, dict) else None
    required = ("ttft_slo_s", "tpot_slo_s") if trace_path else ("prompt_tokens", "output_tokens", "rate_rps",
                                                                 "ttft_slo_s", "tpot_slo_s")
    expect_mapping(data, source=source, field=None, allowed=allowed, required=required)
    values: dict[str, Any] = {k: v for k, v in data.items() if k not in ("mode", "trace", "profile") and v is not None}

    def bad(key: str, message: str) -> InputError:
        return InputError(message, source=source, field=key)

    for key in _POSITIVE:
        if key in values:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise bad(key, f"must be a positive number, got {v!r}")
            values[key] = float(v)
    for key in _INTS:
        if key in values:
            expect_type(values[key], int, source=source, field=key, what="a positive whole number")
            if isinstance(values[key], bool) or values[key] < 1:
                raise bad(key, f"must be a positive whole number, got {values[key]!r}")
    if values.get("requests", 1) > MAX_REQUESTS:
        raise bad("requests", f"at most {MAX_REQUESTS} simulated requests")
    for key in ("chunk_tokens", "seed"):
        if key in values:
            expect_type(values[key], int, source=source, field=key, what="a whole number")
            if isinstance(values[key], bool) or values[key] < 0:
                raise bad(key, f"must be a whole number >= 0, got {values[key]!r}")
    if 0 < values.get("chunk_tokens", 8192) < 64:
        raise bad("chunk_tokens", "at least 64 tokens per iteration (0: no chunked prefill)")
    for key, choices in _CHOICES.items():
        if key in values and values[key] not in choices:
            raise bad(key, f"unknown {key} {values[key]!r} (use {' | '.join(choices)})")
    for key, lo, hi in (("slo_quantile", 0.0, 1.0), ("prefix_hit", 0.0, 1.0), ("memory_utilization", 0.0, 1.0)):
        if key in values:
            v = values[key]
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and lo <= v <= hi
            if not ok or (key != "prefix_hit" and v == 0) or (key == "prefix_hit" and v == 1):
                raise bad(key, f"must be a number in ({lo}, {hi}{']' if key != 'prefix_hit' else ')'}, got {v!r}"
                          if key != "prefix_hit" else f"must be a number in [0, 1), got {v!r}")
            values[key] = float(v)
    if "budget_per_hour" in values:
        v = values["budget_per_hour"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise bad("budget_per_hour", f"must be a positive number of $ per hour, got {v!r}")
        values["budget_per_hour"] = float(v)
    values["prices"] = _gpu_table(values.get("prices", {}), "prices", float, source)
    values["available"] = _gpu_table(values.get("available", {}), "available", int, source)
    if trace_path is not None:
        requests = load_trace(_beside(trace_path, source, "trace"))
        values["trace"] = requests
        values["trace_file"] = str(trace_path)
        values.setdefault("prompt_tokens", sum(r.prompt_tokens for r in requests) / len(requests))
        values.setdefault("output_tokens", sum(r.output_tokens for r in requests) / len(requests))
        span = requests[-1].arrival_s - requests[0].arrival_s
        values.setdefault("rate_rps", (len(requests) - 1) / span if span > 0 else float(len(requests)))
    if data.get("profile") is not None:
        values["profile"] = load_profile(_beside(data["profile"], source, "profile"))
        values["profile_file"] = str(data["profile"])
    return ServeWorkload(**values)


def _gpu_table(value: Any, key: str, kind: type, source: str | None) -> tuple:
    from planner.core.gpus import GPU_PRESETS

    if not isinstance(value, dict):
        raise InputError("must map GPU presets to numbers, e.g. {h100: 3.0}", source=source, field=key)
    out = []
    for gpu, v in sorted(value.items()):
        if gpu not in GPU_PRESETS:
            raise InputError(f"unknown GPU {gpu!r} (known: {', '.join(GPU_PRESETS)})", source=source,
                             field=f"{key}.{gpu}")
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (v >= 0 if kind is int else v > 0)
        if not ok or (kind is int and v != int(v)):
            what = "a whole number of GPUs >= 0" if kind is int else "a positive price in $ per GPU-hour"
            raise InputError(f"must be {what}, got {v!r}", source=source, field=f"{key}.{gpu}")
        out.append((gpu, kind(v)))
    return tuple(out)


TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
PROFILE_COLUMNS = ("gpu", "tp", "pp", "phase", "tokens", "batch", "context", "ms")


def _beside(value: Any, source: str | None, key: str) -> str:
    """A path the workload names, relative to the workload file."""
    if not isinstance(value, str):
        raise InputError("must be the path of a CSV file", source=source, field=key)
    path = Path(value)
    if source and not path.is_absolute():
        path = Path(source).parent / path
    return str(path)


def _csv_rows(path: str, columns: tuple[str, ...], what: str):
    """(line number, row) of a CSV whose header names `columns` (others are ignored)."""
    try:
        handle = open(path, newline="")
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror}", source=path, field=what) from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise InputError(f"the header lacks {', '.join(missing)} (columns: {', '.join(columns)})",
                             source=path, field="header")
        rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise InputError(f"the {what} has no rows", source=path, field=what)
    return rows


def load_trace(path: str) -> tuple[Request, ...]:
    """A request trace: a CSV with a header naming `arrival_s,prompt_tokens,output_tokens`
    (other columns ignored); rows sorted by arrival; a malformed row is bad input naming its line."""
    out: list[Request] = []
    for line, row in _csv_rows(path, TRACE_COLUMNS, "trace"):
        try:
            arrival = float(row["arrival_s"])
            prompt, output = int(row["prompt_tokens"]), int(row["output_tokens"])
        except (TypeError, ValueError):
            raise InputError("needs a number of seconds and two whole token counts", source=path,
                             field=f"line {line}") from None
        if not math.isfinite(arrival) or arrival < 0 or prompt < 1 or output < 1:
            raise InputError("arrival must be >= 0 seconds and both token counts >= 1", source=path,
                             field=f"line {line}")
        if out and arrival < out[-1].arrival_s:
            raise InputError("arrivals must not go back in time (sort the trace by arrival_s)", source=path,
                             field=f"line {line}")
        out.append(Request(arrival, prompt, output))
    if len(out) > MAX_REQUESTS:
        raise InputError(f"at most {MAX_REQUESTS} requests", source=path, field="trace")
    return tuple(out)


@dataclass(frozen=True)
class ProfileRow:
    """A measurement of one replica shape: `prefill` of a lone prompt of `tokens`, or one
    `decode` step of `batch` requests of `context` tokens each, in `ms`."""

    gpu: str
    tp: int
    pp: int
    phase: str
    tokens: int
    batch: int
    context: int
    ms: float


def load_profile(path: str) -> tuple[ProfileRow, ...]:
    """A measured profile: a CSV `gpu,tp,pp,phase,tokens,batch,context,ms` (prefill rows give
    `tokens`, decode rows `batch` and `context`; the other may be 0)."""
    from planner.core.gpus import GPU_PRESETS

    out = []
    for line, row in _csv_rows(path, PROFILE_COLUMNS, "profile"):
        try:
            r = ProfileRow(row["gpu"].strip(), int(row["tp"]), int(row["pp"]), row["phase"].strip(),
                           int(row["tokens"] or 0), int(row["batch"] or 0), int(row["context"] or 0),
                           float(row["ms"]))
        except (TypeError, ValueError, AttributeError):
            raise InputError("needs a GPU, whole numbers for tp, pp, tokens, batch, context and a number of ms",
                             source=path, field=f"line {line}") from None
        ok = (r.gpu in GPU_PRESETS and r.tp >= 1 and r.pp >= 1 and math.isfinite(r.ms) and r.ms > 0
              and ((r.phase == "prefill" and r.tokens >= 1) or (r.phase == "decode" and r.batch >= 1
                                                                 and r.context >= 0)))
        if not ok:
            raise InputError("a known GPU, tp and pp >= 1, phase prefill (tokens >= 1) or decode (batch >= 1, "
                             "context >= 0), ms > 0", source=path, field=f"line {line}")
        out.append(r)
    return tuple(sorted(out, key=lambda r: (r.gpu, r.tp, r.pp, r.phase, r.tokens, r.batch, r.context)))


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica: its GPU type, parallelism and role. `ep`: experts spread over the
    replica's GPUs (vLLM's --enable-expert-parallel) instead of tensor-sharded."""

    gpu: str
    tp: int = 1
    pp: int = 1
    ep: bool = False
    role: str = "colocated"

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def key(self) -> tuple:
        return (self.gpu, ROLES.index(self.role), self.tp, self.pp, self.ep)

    def label(self) -> str:
        return f"{self.gpu} tp{self.tp} pp{self.pp}{' ep' if self.ep else ''} {self.role}"

    def to_json(self) -> dict:
        return {"gpu": self.gpu, "tp": self.tp, "pp": self.pp, "ep": self.ep, "role": self.role}


SERVE_FIX_KEYS = ("tp", "pp", "ep", "gpu", "role")


def parse_serve_fix(text: str | None) -> dict:
    """`--fix tp=4,pp=1,ep=0,gpu=h100,role=colocated` -> {key: value}."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in SERVE_FIX_KEYS:
            raise InputError(f"{part!r}: serving --fix keys are {', '.join(SERVE_FIX_KEYS)} (key=value)",
                             field="--fix")
        if key in ("tp", "pp"):
            if not value.isdigit() or int(value) < 1:
                raise InputError(f"{key} must be a positive whole number, got {value!r}", field="--fix")
            out[key] = int(value)
        elif key == "ep":
            if value not in ("0", "1"):
                raise InputError(f"ep must be 0 or 1, got {value!r}", field="--fix")
            out[key] = value == "1"
        elif key == "role":
            if value not in ROLES:
                raise InputError(f"role must be one of {', '.join(ROLES)}, got {value!r}", field="--fix")
            out[key] = value
        else:
            out[key] = value
    return out


def is_serving(data: Any) -> bool:
    return isinstance(data, dict) and data.get("mode") == "serve"


def load_any_workload(path: str):
    """A WORKLOAD file of either mode: a TrainWorkload or a ServeWorkload."""
    from planner.core.training import parse_workload

    data = read_document(path)
    return parse_serve_workload(data, source=path) if is_serving(data) else parse_workload(data, source=path)
