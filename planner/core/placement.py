"""The placement JOB file, its ranks' communication groups, and the spread of a group.

JOB (contract): `{parallel: {tp, pp, dp, cp, ep}, order: "tp-cp-ep-dp-pp", bytes_per_step:
{dim: bytes}, constraints: {...}}`; world size = the product of the dimensions. The order
names the dimensions first fastest (Megatron-LM's default `tp-cp-ep-dp-pp`): rank =
sum over dimensions of coordinate x the product of the sizes before it. A dimension's group
holds the ranks that share every other coordinate. Constraints: `tp_in_node` (default true:
a TP group inside one server, its NVLink domain), `whole_nodes` (default true: the job
takes every GPU of the nodes it uses), `avoid` (node names not to use).

Without `bytes_per_step`, `model` (a preset or MODEL file) and `workload` (`seq_len`,
`global_batch`, `micro_batch`: sequences) derive it for DP and PP (`derived_bytes`): DP
all-reduces one TP x PP shard's gradients, params / (tp x pp) x 2 bytes (bf16, Megatron's
default `grad_reduce_in_fp32: false`; experts' gradients counted as if dense: a share of
them reduces over fewer ranks); PP sends every micro-batch's activations forward and their
gradients back over a stage boundary, 2 x global_batch / dp x seq_len x hidden x 2 bytes.
CP and EP bytes are given or not counted.

Spread (Arnold, arXiv 2509.15940): the number of domains of a tier (leaf, spine) a group's
GPUs touch, minus one, so 0 when the group stays inside one domain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from planner.core.errors import InputError
from planner.core.loader import expect_mapping, read_document

DIMENSIONS = ("tp", "cp", "ep", "dp", "pp")
DEFAULT_ORDER = "tp-cp-ep-dp-pp"
CONSTRAINTS = ("tp_in_node", "whole_nodes", "avoid")
WORKLOAD_FIELDS = ("seq_len", "global_batch", "micro_batch")
BF16 = 2


@dataclass(frozen=True)
class Job:
    sizes: tuple[tuple[str, int], ...]  # (dimension, size) in rank order, first fastest
    bytes_per_step: tuple[tuple[str, float], ...] = ()
    tp_in_node: bool = True
    whole_nodes: bool = True
    avoid: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(d for d, _ in self.sizes)

    @property
    def size(self) -> dict[str, int]:
        return dict(self.sizes)

    @property
    def world(self) -> int:
        return math.prod(n for _, n in self.sizes)

    def coordinates(self, rank: int) -> dict[str, int]:
        out = {}
        for d, n in self.sizes:
            out[d] = rank % n
            rank //= n
        return out

    def rank(self, coords: dict[str, int]) -> int:
        rank, stride = 0, 1
        for d, n in self.sizes:
            rank += coords.get(d, 0) * stride
            stride *= n
        return rank

    def groups(self, dim: str) -> list[tuple[int, ...]]:
        """Every group of dimension `dim` (the ranks sharing all other coordinates), each in
        rank order, the groups in the order of their first rank; none when `dim` has size 1."""
        if self.size.get(dim, 1) <= 1:
            return []
        seen: dict[tuple, list[int]] = {}
        for r in range(self.world):
            key = tuple(v for d, v in self.coordinates(r).items() if d != dim)
            seen.setdefault(key, []).append(r)
        return [tuple(v) for v in seen.values()]

    def describe(self) -> dict:
        return {"parallel": dict(self.sizes), "order": "-".join(self.order), "world": self.world,
                "bytes_per_step": dict(self.bytes_per_step),
                "constraints": {"tp_in_node": self.tp_in_node, "whole_nodes": self.whole_nodes,
                                "avoid": list(self.avoid)}}


def load_job(path: str) -> Job:
    return parse_job(read_document(path), source=path)


def parse_job(data: Any, source: str | None = None) -> Job:
    expect_mapping(data, source=source, field=None,
                   allowed=("parallel", "order", "bytes_per_step", "constraints", "model", "workload"),
                   required=("parallel",))
    parallel = data["parallel"]
    if not isinstance(parallel, dict) or not parallel:
        raise InputError("must map dimensions (tp, cp, ep, dp, pp) to sizes", source=source, field="parallel")
    for d, n in parallel.items():
        if d not in DIMENSIONS:
            raise InputError(f"unknown dimension {d!r} (use {', '.join(DIMENSIONS)})", source=source,
                             field=f"parallel.{d}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"must be a positive whole number, got {n!r}", source=source, field=f"parallel.{d}")
    order_text = data.get("order", DEFAULT_ORDER)
    order = order_text.split("-") if isinstance(order_text, str) else None
    if order is None or sorted(order) != sorted(set(order)) or not set(order) <= set(DIMENSIONS):
        raise InputError(f"must name dimensions once each, first fastest (e.g. {DEFAULT_ORDER}), got {order_text!r}",
                         source=source, field="order")
    missing = [d for d in parallel if d not in order]
    if missing:
        raise InputError(f"does not place {', '.join(missing)} (the order must name every dimension of parallel)",
                         source=source, field="order")
    sizes = tuple((d, parallel.get(d, 1)) for d in order)
    per_step = data.get("bytes_per_step") or {}
    if not isinstance(per_step, dict):
        raise InputError("must map dimensions to bytes", source=source, field="bytes_per_step")
    sizes_given = {}
    for d, b in per_step.items():
        if d not in DIMENSIONS:
            raise InputError(f"unknown dimension {d!r}", source=source, field=f"bytes_per_step.{d}")
        sizes_given[d] = _bytes(b, source, f"bytes_per_step.{d}")
    if per_step and ("model" in data or "workload" in data):
        raise InputError("give bytes_per_step or a model and workload to derive them from, not both", source=source,
                         field="model" if "model" in data else "workload")
    if "model" in data:
        sizes_given = derived_bytes(data["model"], data.get("workload"), dict(sizes), source)
    elif "workload" in data:
        raise InputError("needs a model to derive bytes_per_step from", source=source, field="workload")
    constraints = data.get("constraints") or {}
    expect_mapping(constraints, source=source, field="constraints", allowed=CONSTRAINTS)
    for key in ("tp_in_node", "whole_nodes"):
        if key in constraints and not isinstance(constraints[key], bool):
            raise InputError("must be true or false", source=source, field=f"constraints.{key}")
    avoid = constraints.get("avoid", [])
    if not isinstance(avoid, list) or not all(isinstance(x, str) for x in avoid):
        raise InputError("must be a list of node names", source=source, field="constraints.avoid")
    return Job(sizes, tuple(sorted(sizes_given.items())),
               constraints.get("tp_in_node", True), constraints.get("whole_nodes", True), tuple(avoid))


def derived_bytes(model: Any, workload: Any, sizes: dict[str, int], source: str | None) -> dict[str, float]:
    """DP and PP bytes per step of `model` under `workload` (see the module doc)."""
    from pathlib import Path

    from planner.core.transformer import MODEL_PRESETS, load_model, parse_model

    try:
        if isinstance(model, dict):
            spec = parse_model(model, source)
        elif isinstance(model, str) and model:
            here = Path(source).parent / model if source and model not in MODEL_PRESETS else None
            spec = load_model(str(here) if here is not None and here.is_file() else model)
        else:
            raise InputError(f"must be a model preset, a MODEL file or a mapping, got {model!r}")
    except InputError as exc:
        raise InputError(exc.message, source=source,
                         field="model" + (f".{exc.field}" if isinstance(model, dict) and exc.field else "")) from None
    expect_mapping(workload, source=source, field="workload", allowed=WORKLOAD_FIELDS,
                   required=("seq_len", "global_batch"))
    for key in WORKLOAD_FIELDS:
        v = workload.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"must be a positive whole number, got {v!r}", source=source, field=f"workload.{key}")
    tp, pp, dp = sizes.get("tp", 1), sizes.get("pp", 1), sizes.get("dp", 1)
    if workload["global_batch"] % (dp * workload.get("micro_batch", 1)):
        raise InputError(f"global_batch {workload['global_batch']} is not a multiple of dp x micro_batch",
                         source=source, field="workload.global_batch")
    out = {}
    if dp > 1:
        out["dp"] = spec.params / (tp * pp) * BF16
    if pp > 1:
        out["pp"] = 2.0 * workload["global_batch"] / dp * workload["seq_len"] * spec.hidden * BF16
    return out


def _bytes(value: Any, source: str | None, field: str) -> float:
    """Bytes as a number, a numeric string (YAML reads `2.0e9` as one) or a size (`4GiB`)."""
    from planner.core.units import parse_size

    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = float(parse_size(value, source=source, field=field))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"must be a number of bytes >= 0 (or a size such as 4GiB), got {value!r}", source=source,
                         field=field)
    return float(value)


def spread(domains: list[str]) -> int:
    """Domains touched minus one (0 inside one domain), for the domains of a group's GPUs."""
    return len(set(domains)) - 1 if domains else 0
