"""The exhaustive search over configurations, and Megatron's rule of thumb as a baseline.

`grid` times every valid configuration (planner/training/space.py) that fits in memory
(checked first, without pricing any collective), and ranks them by step time, ties by the smaller
configuration. O(configurations x pipeline devices); devices and layers of the same
shape are costed once (planner/training/cost.py caches them), collectives once per
group shape (planner/training/comm.py).

`rule` is the published heuristic (Narayanan et al. 2021, section 3.3 takeaways): tensor
parallelism up to the GPUs of a server, pipeline parallelism across servers just deep
enough to fit, data parallelism for the rest, micro-batch 1, no interleaving, and the
memory savers of Korthikanti et al. 2022 (selective recompute + sequence parallelism,
the distributed optimizer), full recompute if it still does not fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.core.training import ParallelConfig
from planner.training.cost import Evaluation, TrainingSetup, evaluate, fits_statically, memory_excess_GB
from planner.training.space import configurations, divisors, stage_split, why_invalid


@dataclass(frozen=True)
class SearchOutcome:
    ranked: tuple[Evaluation, ...]  # fitting configurations, fastest first
    considered: int  # valid configurations
    over_memory: int  # valid but too large (statically or with activations)
    smallest_overflow: Evaluation | None = field(default=None, compare=False)  # nothing fits: the nearest miss


def grid_search(setup: TrainingSetup, fix: dict) -> SearchOutcome:
    spec, w = setup.spec, setup.workload
    ranked: list[Evaluation] = []
    considered = over = 0
    nearest: tuple[float, ParallelConfig] | None = None
    for c in configurations(spec, w, setup.topology.num_gpus, setup.gpus_per_server, fix):
        considered += 1
        fits = fits_statically(setup, c)
        excess = memory_excess_GB(setup, c) if fits or not ranked else math.inf
        if excess > 0 or not fits:
            over += 1
            if not ranked and (nearest is None or (excess, c.key()) < (nearest[0], nearest[1].key())):
                nearest = (excess, c)  # while nothing fits, the nearest miss names what overflows
            continue
        ranked.append(evaluate(setup, c))
    ranked.sort(key=lambda e: (e.step_time_s, e.config.key()))
    miss = evaluate(setup, nearest[1]) if nearest is not None and not ranked else None
    return SearchOutcome(tuple(ranked), considered, over, miss)


def rule_of_thumb(setup: TrainingSetup, fix: dict) -> Evaluation | None:
    spec, w = setup.spec, setup.workload
    gpus = setup.topology.num_gpus
    tp = fix.get("tp") or max(t for t in divisors(setup.gpus_per_server)
                              if gpus % t == 0 and spec.heads % t == 0 and (spec.mla or spec.kv_heads % t == 0)
                              and spec.ffn_hidden % t == 0 and (spec.expert_ffn_hidden or 0) % t == 0)
    for recompute in ("selective", "full"):
        for pp in divisors(gpus // tp):
            if pp > spec.layers or ("pp" in fix and fix["pp"] != pp):
                continue
            dp = gpus // (tp * pp)
            ep = fix.get("ep", max((e for e in divisors(dp) if spec.is_moe and spec.experts % e == 0), default=1))
            c = ParallelConfig(tp=tp, pp=pp, dp=dp, cp=fix.get("cp", 1), ep=ep, micro_batch=fix.get("micro_batch", 1),
                               recompute=fix.get("recompute", recompute),
                               sequence_parallel=fix.get("sequence_parallel", tp > 1),
                               distributed_optimizer=fix.get("distributed_optimizer", True),
                               layers_per_stage=stage_split(spec.layers, pp))
            if c.cp != 1:
                c = ParallelConfig(**{**c.__dict__, "dp": gpus // (tp * pp * c.cp)})
            if why_invalid(spec, w, gpus, c) is not None or not fits_statically(setup, c):
                continue
            e = evaluate(setup, c)
            if e.overflow is None:
                return e
    return None
