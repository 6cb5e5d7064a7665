"""Expert maps for serving engines, each parsed back and compared before it is written.

- `sglang`: `{"physical_to_logical_map": [layers][slots]}`, a file for SGLang's
  `--init-expert-location`. SGLang passes every key of such a file to
  `ExpertLocationMetadata.init_by_mapping`, which takes only `physical_to_logical_map`, so
  a `logical_count` next to it would stop the server (python/sglang/srt/eplb/
  expert_location.py); the loads stay in the plan. Slots = experts + redundant experts,
  GPU-major (slot p on EP rank p // K).
- `vllm`: vLLM's EPLB state arrays: `physical_to_logical_map` [layers][slots],
  `logical_to_physical_map` [layers][experts][max replicas] padded with -1, and
  `logical_replica_count` [layers][experts].
- `gpu-list`: `{"slots_per_gpu": K, "experts_per_gpu": [layers][gpus][K]}`, for people.
"""
from __future__ import annotations

import json

import numpy as np

from planner.core.errors import ExportMismatch

EXPERT_FORMATS = ("sglang", "vllm", "gpu-list")


def export_expert_maps(maps: np.ndarray, slots_per_gpu: int, experts: int, fmt: str) -> str:
    maps = np.asarray(maps, dtype=np.int64)
    if fmt == "sglang":
        doc = {"physical_to_logical_map": maps.tolist()}
    elif fmt == "vllm":
        counts = np.stack([np.bincount(row, minlength=experts) for row in maps])
        width = int(counts.max())
        l2p = np.full((maps.shape[0], experts, width), -1, dtype=np.int64)
        for layer, row in enumerate(maps):
            seen = np.zeros(experts, dtype=np.int64)
            for slot, e in enumerate(row.tolist()):
                l2p[layer, e, seen[e]] = slot
                seen[e] += 1
        doc = {"physical_to_logical_map": maps.tolist(), "logical_to_physical_map": l2p.tolist(),
               "logical_replica_count": counts.tolist()}
    elif fmt == "gpu-list":
        doc = {"slots_per_gpu": slots_per_gpu,
               "experts_per_gpu": maps.reshape(maps.shape[0], -1, slots_per_gpu).tolist()}
    else:
        raise ValueError(f"unknown expert map format {fmt!r}")
    return json.dumps(doc, separators=(",", ":")) + "\n"


def import_expert_maps(text: str, fmt: str, experts: int) -> np.ndarray:
    """The physical-to-logical maps a file says, after checking it is self-consistent:
    shapes, ids in range, every expert with a slot, and (vllm) the three arrays agreeing."""
    doc = json.loads(text)
    if fmt == "sglang":
        if set(doc) != {"physical_to_logical_map"}:
            raise ExportMismatch(f"sglang file has keys {sorted(doc)}; SGLang accepts only physical_to_logical_map")
        maps = _int_array(doc["physical_to_logical_map"], 2, "physical_to_logical_map")
    elif fmt == "vllm":
        maps = _int_array(doc["physical_to_logical_map"], 2, "physical_to_logical_map")
        l2p = _int_array(doc["logical_to_physical_map"], 3, "logical_to_physical_map")
        counts = _int_array(doc["logical_replica_count"], 2, "logical_replica_count")
        if l2p.shape[:2] != (maps.shape[0], experts) or counts.shape != (maps.shape[0], experts):
            raise ExportMismatch("vllm arrays disagree in shape")
        for layer, row in enumerate(maps):
            for e in range(experts):
                listed = l2p[layer, e][l2p[layer, e] >= 0]
                if len(listed) != counts[layer, e] or (row[listed] != e).any() or \
                        len(listed) != int((row == e).sum()):
                    raise ExportMismatch(f"vllm layer {layer} expert {e}: replica list, count and map disagree")
    elif fmt == "gpu-list":
        per_gpu = _int_array(doc["experts_per_gpu"], 3, "experts_per_gpu")
        if per_gpu.shape[2] != doc["slots_per_gpu"]:
            raise ExportMismatch("gpu-list: rows do not have slots_per_gpu entries")
        maps = per_gpu.reshape(per_gpu.shape[0], -1)
    else:
        raise ValueError(f"unknown expert map format {fmt!r}")
    if maps.min() < 0 or maps.max() >= experts:
        raise ExportMismatch("an expert id is out of range")
    for layer, row in enumerate(maps):
        if (np.bincount(row, minlength=experts) == 0).any():
            raise ExportMismatch(f"layer {layer}: a logical expert has no physical slot")
    return maps


def _int_array(value, ndim: int, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.int64)
    except (ValueError, TypeError):
        raise ExportMismatch(f"{name} is ragged or not integers") from None
    if arr.ndim != ndim:
        raise ExportMismatch(f"{name} has {arr.ndim} dimensions, expected {ndim}")
    return arr


def round_trip_expert_maps(maps: np.ndarray, slots_per_gpu: int, experts: int, fmt: str) -> str:
    """The export text, written only if it parses back to exactly `maps`."""
    text = export_expert_maps(maps, slots_per_gpu, experts, fmt)
    back = import_expert_maps(text, fmt, experts)
    if back.shape != maps.shape or (back != maps).any():
        raise ExportMismatch(f"{fmt} export does not parse back to the same expert map")
    return text
