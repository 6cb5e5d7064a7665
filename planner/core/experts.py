"""MoE expert placement: the problem description, the LOADS file, and the arithmetic of a
map that the methods and the checks share (GPU loads, node holdings, crossing tokens,
the group-to-node splits).

A layer's map is `physical_to_logical_map[p]` = logical expert in physical slot p; slot p
lives on GPU p // K (K slots per GPU) and GPU g on node g // (G / nodes). A replica carries
its expert's load / replica count (uniform dispatch over replicas: SGLang's and vLLM's
dispatch, docs/experts.md). At most one replica of an expert per GPU; with expert groups
(node-limited routing) every replica of a group's experts sits on that group's node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.core.errors import InfeasibleError, InputError
from planner.core.loader import expect_mapping, read_document

LOADS_FIELDS = ("weights", "coactivation", "logical_count")


@dataclass(frozen=True)
class Coactivation:
    """Per layer, pairs of experts the same tokens pick: arrays (first, second, tokens)."""

    first: tuple[np.ndarray, ...]
    second: tuple[np.ndarray, ...]
    tokens: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class ExpertProblem:
    weights: np.ndarray  # [layers, experts], tokens routed to each logical expert
    gpus: int
    nodes: int
    slots_per_gpu: int
    groups: int | None = None
    coactivation: Coactivation | None = None
    source: str | None = None

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def experts(self) -> int:
        return self.weights.shape[1]

    @property
    def slots(self) -> int:
        return self.gpus * self.slots_per_gpu

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def has_node_traffic(self) -> bool:
        """Co-activation data on several nodes, without expert groups: when the milp's
        traffic model and the traffic swap search run (docs/experts.md)."""
        return self.coactivation is not None and not self.groups and self.nodes > 1

    def describe(self) -> dict:
        return {"loads": self.source, "layers": self.layers, "experts": self.experts, "gpus": self.gpus,
                "nodes": self.nodes, "slots_per_gpu": self.slots_per_gpu, "slots": self.slots,
                "redundant": self.slots - self.experts, "groups": self.groups,
                "coactivation": self.coactivation is not None}


def read_loads(path: str) -> tuple[np.ndarray, Coactivation | None]:
    """Expert loads from a LOADS file: `{"weights": [[...]...], "coactivation": ...}`, a bare
    list of layers, or an SGLang expert-distribution dump saved as JSON (`logical_count`,
    [layers, experts] or [passes, layers, experts], summed over passes)."""
    if path.endswith(".pt"):
        raise InputError("a .pt dump needs torch; save its logical_count as JSON "
                         "(json.dump({'logical_count': d['logical_count'].tolist()}, f))", source=path)
    doc = read_document(path)
    coact = None
    if isinstance(doc, list):
        weights, field = doc, "weights"
    else:
        expect_mapping(doc, source=path, field=None, allowed=LOADS_FIELDS + ("rank", "average_utilization_rate_over_window"))
        if ("weights" in doc) == ("logical_count" in doc):
            raise InputError("give exactly one of 'weights' and 'logical_count'", source=path, field="weights")
        field = "weights" if "weights" in doc else "logical_count"
        weights = doc[field]
    matrix = _numeric_layers(weights, path, field)
    if "coactivation" in (doc if isinstance(doc, dict) else {}):
        coact = _read_coactivation(doc["coactivation"], matrix.shape, path)
    return matrix, coact


def _numeric_layers(value, path: str, field: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise InputError("expected a non-empty list of layers, each a list of per-expert loads", source=path, field=field)
    depth = 3 if isinstance(value[0], list) and value[0] and isinstance(value[0][0], list) else 2
    try:
        arr = np.array(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError("ragged or non-numeric: every layer needs one number per expert", source=path,
                         field=field) from None
    if arr.ndim != depth or arr.size == 0:
        raise InputError("ragged or non-numeric: every layer needs one number per expert", source=path, field=field)
    if depth == 3:  # SGLang stat dump: [passes, layers, experts]
        arr = arr.sum(axis=0)
    bad = np.argwhere(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        layer, expert = (int(v) for v in bad[0])
        raise InputError(f"loads must be finite and >= 0 (layer {layer}, expert {expert}: {arr[layer, expert]})",
                         source=path, field=f"{field}[{layer}][{expert}]")
    return arr


def _read_coactivation(value, shape: tuple[int, int], path: str) -> Coactivation:
    layers, experts = shape
    field = "coactivation"
    if not isinstance(value, list) or len(value) != layers:
        raise InputError(f"expected one list of [expert, expert, tokens] pairs per layer ({layers})", source=path,
                         field=field)
    first, second, tokens = [], [], []
    for layer, pairs in enumerate(value):
        where = f"{field}[{layer}]"
        try:
            arr = np.array(pairs, dtype=np.float64).reshape(-1, 3) if pairs else np.zeros((0, 3))
        except (ValueError, TypeError):
            raise InputError("expected [expert, expert, tokens] triples", source=path, field=where) from None
        if pairs and (np.array(pairs, dtype=object).ndim != 2 or len(pairs[0]) != 3):
            raise InputError("expected [expert, expert, tokens] triples", source=path, field=where)
        ids = arr[:, :2]
        if ((ids != np.round(ids)) | (ids < 0) | (ids >= experts)).any() or (ids[:, 0] == ids[:, 1]).any():
            raise InputError(f"expert ids must be integers in 0..{experts - 1}, two different per pair", source=path,
                             field=where)
        if (~np.isfinite(arr[:, 2]) | (arr[:, 2] < 0)).any():
            raise InputError("token counts must be finite and >= 0", source=path, field=where)
        first.append(ids[:, 0].astype(np.int64))
        second.append(ids[:, 1].astype(np.int64))
        tokens.append(arr[:, 2].copy())
    return Coactivation(tuple(first), tuple(second), tuple(tokens))


def expert_problem(weights: np.ndarray, gpus: int, nodes: int = 1, slots_per_gpu: int | None = None,
                   redundant: int | None = None, groups: int | None = None,
                   coactivation: Coactivation | None = None, source: str | None = None) -> ExpertProblem:
    """Validate the engine's constraints (each failure names the option, exit 2) and build
    the problem; InfeasibleError (exit 3) when no map can satisfy them."""
    layers, experts = weights.shape
    if gpus < 1:
        raise InputError("must be >= 1", field="--gpus")
    if nodes < 1 or gpus % nodes:
        raise InputError(f"{gpus} GPUs do not divide into {nodes} nodes", field="--nodes")
    if slots_per_gpu is not None and redundant is not None:
        raise InputError("give --slots-per-gpu or --redundant, not both", field="--redundant")
    if slots_per_gpu is None:
        redundant = 0 if redundant is None else redundant
        if redundant < 0:
            raise InputError("must be >= 0", field="--redundant")
        if (experts + redundant) % gpus:
            raise InputError(f"{experts} experts + {redundant} redundant = {experts + redundant} slots do not "
                             f"divide over {gpus} GPUs", field="--redundant")
        slots_per_gpu = (experts + redundant) // gpus
    if slots_per_gpu < 1:
        raise InputError("must be >= 1", field="--slots-per-gpu")
    if gpus * slots_per_gpu < experts:
        raise InfeasibleError(f"no map holds every expert: {experts} experts need at least {experts} slots; "
                              f"{gpus} GPUs x {slots_per_gpu} = {gpus * slots_per_gpu}")
    if slots_per_gpu > experts:
        raise InfeasibleError(f"no map fills a GPU's {slots_per_gpu} slots with only {experts} experts, at most one "
                              f"replica of an expert per GPU")
    if groups is not None:
        if groups < 1 or experts % groups:
            raise InputError(f"{experts} experts do not divide into {groups} groups", field="--groups")
        if groups % nodes:
            raise InputError(f"{groups} groups do not spread evenly over {nodes} nodes (node-limited routing keeps "
                             f"a group on one node)", field="--groups")
        if (gpus * slots_per_gpu) % nodes:
            raise InputError("slots do not divide over the nodes", field="--nodes")
        node_experts = experts // nodes
        node_slots = gpus * slots_per_gpu // nodes
        if slots_per_gpu > node_experts or node_slots < node_experts:
            raise InfeasibleError(f"no map keeps every group on one node: a node's {node_experts} experts do not fit "
                                  f"its {node_slots} slots ({slots_per_gpu} per GPU, one replica of an expert per GPU)")
    if coactivation is not None and len(coactivation.tokens) != layers:
        raise InputError("coactivation needs one entry per layer", source=source, field="coactivation")
    return ExpertProblem(np.asarray(weights, dtype=np.float64), gpus, nodes, slots_per_gpu, groups, coactivation,
                         source)


# ---------------------------------------------------------------- the arithmetic of a map
def gpu_loads(w: np.ndarray, phys: np.ndarray, slots_per_gpu: int) -> np.ndarray:
    """Load of every GPU in one layer: each slot carries its expert's load / replica count."""
    counts = np.bincount(phys, minlength=len(w))
    return (w[phys] / counts[phys]).reshape(-1, slots_per_gpu).sum(axis=1)


def holds_by_node(phys: np.ndarray, slots_per_node: int, experts: int) -> np.ndarray:
    """`node_holds` of a map whose nodes are runs of `slots_per_node` slots."""
    holds = np.zeros((len(phys) // slots_per_node, experts), dtype=bool)
    holds[np.arange(len(phys)) // slots_per_node, phys] = True
    return holds


def crossing_tokens(holds: np.ndarray, first: np.ndarray, second: np.ndarray, tokens: np.ndarray) -> float:
    """Tokens of pairs no node serves alone; holds[n, e] = node n holds expert e."""
    return float(tokens[~(holds[:, first] & holds[:, second]).any(axis=0)].sum())


def count_equal_partitions(items: int, parts: int) -> int:
    size = items // parts
    return math.factorial(items) // (math.factorial(size) ** parts * math.factorial(parts))


def equal_partitions(items: int, parts: int):
    """Every way to split items 0..n-1 into `parts` equal unlabelled sets (each set opened
    by its smallest item)."""
    size = items // parts
    assigned = [-1] * items

    def place(i, sizes):
        if i == items:
            yield list(assigned)
            return
        opened = sum(1 for s in sizes if s > 0)
        for p in range(min(opened + 1, parts)):
            if sizes[p] < size:
                assigned[i] = p
                sizes[p] += 1
                yield from place(i + 1, sizes)
                sizes[p] -= 1
        assigned[i] = -1

    yield from place(0, [0] * parts)
