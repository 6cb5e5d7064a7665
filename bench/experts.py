"""MoE expert placement: milp and greedy against DeepSeek's EPLB and the lower bound.

    python -m bench.experts                 # all three tables
    python -m bench.experts --balance       # table 1 (milp: --time-limit s per input)
    python -m bench.experts --traffic       # table 2: cross-node tokens at equal balance

Table 1: the published EPLB example (2 layers, 12 experts, 16 replicas, 4 groups, 2 nodes,
8 GPUs; with and without its groups) and seeded DeepSeek-V3-sized loads: 58 layers x 256
experts, lognormal(0, sigma) per expert, on 32 GPUs with 288 slots and 64 GPUs with 320,
sigma 1 and 2 (seed 0). Per method: max_over_mean (mean over layers of max GPU load /
mean), ratio to the lower bound (planner/expert_bounds.py, mean over layers) and the
synthesis time. EPLB is the published algorithm reimplemented (solvers/eplb.py).
Table 2: a seeded token-routing model (topics that favour a subset of experts; each token
picks top-8 by Gumbel sampling) gives loads and co-activation pairs; cross-node tokens
(pairs no node serves alone) of milp and greedy (both finish with the traffic swap
search) against the same greedy without co-activation data (traffic-blind).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from planner.kinds.experts import plan_experts
from planner.core.experts import Coactivation, expert_problem
from planner.expert_checks import cross_node_tokens

EPLB_EXAMPLE = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                         [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=np.float64)


def synthetic_loads(layers: int, experts: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.lognormal(0.0, sigma, (layers, experts)) * 1000)


def balance_inputs():
    yield "EPLB example, 4 groups", expert_problem(EPLB_EXAMPLE, 8, 2, redundant=4, groups=4)
    yield "EPLB example, no groups", expert_problem(EPLB_EXAMPLE, 8, 2, redundant=4)
    for gpus, slots in ((32, 288), (64, 320)):
        for sigma in (1.0, 2.0):
            w = synthetic_loads(58, 256, sigma, 0)
            yield f"58x256, {gpus} GPUs, {slots} slots, sigma {sigma:g}", \
                expert_problem(w, gpus, gpus // 8, slots_per_gpu=slots // gpus)


def balance_table(time_limit: float) -> None:
    print("| input | method | max_over_mean | worst layer | bound | ratio to bound | synthesis s | solver |")
    print("|---|---|---|---|---|---|---|---|")
    for name, problem in balance_inputs():
        for method in ("milp", "greedy", "eplb"):
            r = plan_experts(problem, method, time_limit)
            m, s = r.plan.metrics, r.plan.solver
            solver = f"{s['status']} gap {s['gap']:.3f}" if s else "-"
            print(f"| {name} | {method} | {m['max_over_mean']:.4f} | {m['worst_layer_max_over_mean']:.4f} | "
                  f"{m['lower_bound_max_over_mean']:.4f} | {m['ratio_to_bound']:.4f} | {m['synthesis_seconds']:.3f} | "
                  f"{solver} |", flush=True)


def token_routing(layers: int, experts: int, tokens: int, top_k: int, seed: int):
    """Loads and co-activation pairs from a seeded routing model."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((layers, experts))
    first, second, counts = [], [], []
    for _ in range(layers):
        popularity = rng.lognormal(0.0, 1.0, experts)
        topics = 16
        affinity = np.ones((topics, experts))
        for t in range(topics):
            affinity[t, rng.choice(experts, 24, replace=False)] = 12.0
        topic = rng.integers(0, topics, tokens)
        logits = np.log(popularity[None, :] * affinity[topic]) + rng.gumbel(size=(tokens, experts))
        picks = np.argpartition(-logits, top_k, axis=1)[:, :top_k]
        layer = len(first)
        weights[layer] = np.bincount(picks.ravel(), minlength=experts)
        pair = np.zeros((experts, experts))
        for a in range(top_k):
            for b in range(a + 1, top_k):
                lo, hi = np.minimum(picks[:, a], picks[:, b]), np.maximum(picks[:, a], picks[:, b])
                np.add.at(pair, (lo, hi), 1)
        i, j = np.nonzero(pair)
        first.append(i)
        second.append(j)
        counts.append(pair[i, j])
    return weights, Coactivation(tuple(first), tuple(second), tuple(counts))


def traffic_table(time_limit: float) -> None:
    print("| cluster | method | max_over_mean | cross-node tokens | share of co-activated pairs | synthesis s |")
    print("|---|---|---|---|---|---|")
    weights, coact = token_routing(8, 256, 4096, 8, 0)
    for gpus, nodes, slots in ((32, 4, 288), (64, 8, 320)):
        aware = expert_problem(weights, gpus, nodes, slots_per_gpu=slots // gpus, coactivation=coact)
        blind = expert_problem(weights, gpus, nodes, slots_per_gpu=slots // gpus)
        for label, problem, method in (("milp", aware, "milp"), ("greedy", aware, "greedy"),
                                       ("traffic-blind greedy", blind, "greedy"), ("eplb", aware, "eplb")):
            r = plan_experts(problem, method, time_limit)
            crossing, total = cross_node_tokens(aware, r.solution.maps)
            m = r.plan.metrics
            print(f"| {gpus} GPUs / {nodes} nodes | {label} | {m['max_over_mean']:.4f} | {crossing:.0f} | "
                  f"{crossing / total:.3f} | {m['synthesis_seconds']:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--balance", action="store_true")
    parser.add_argument("--traffic", action="store_true")
    parser.add_argument("--time-limit", type=float, default=60.0, help="milp seconds per input (all layers)")
    args = parser.parse_args()
    both = not (args.balance or args.traffic)
    started = time.perf_counter()
    if args.balance or both:
        balance_table(args.time_limit)
    if args.traffic or both:
        print()
        traffic_table(args.time_limit)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
