"""What every plan of one serving problem shares: the GPU pool, the replica configurations
that fit, each one's cost model and measured capacity, where replicas go, and the
simulation of a whole plan.

Capacity of a configuration in its role, from the request-level simulation of one replica
under Poisson arrivals (planner/serving/simulate.py), by `max_rate`:
- colocated: the goodput (DistServe's): the highest rate at which at least slo_quantile
  of the requests meet both the TTFT and the TPOT target;
- prefill: the highest rate at which PHASE_QUANTILE of the requests meet the TTFT target;
- decode: the highest rate at which PHASE_QUANTILE meet the TPOT target, the KV transfer
  from a prefill replica on another server included;
with PHASE_QUANTILE = 1 - (1 - q) / 2, so that a request meets both with probability at
least q when each phase misses at most half of the allowance (the union bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

from planner.core.errors import InputError
from planner.core.gpus import NETWORK_EFFICIENCY, GpuSpec, gpu_spec
from planner.core.serving import MAX_REQUESTS, ReplicaConfig, Request, ServeWorkload
from planner.core.transformer import TransformerSpec
from planner.serving.cost import ReplicaCost
from planner.serving.profile import MeasuredTimes
from planner.serving.simulate import (Served, at_rate, attainment, max_rate, simulate_replica, unit_requests)
from planner.training.comm import CommPricer
from topologies.types import Topology

PP_CHOICES = (1, 2, 4, 8)
# A rate is judged over at least this many request lifetimes (TTFT target + output x TPOT
# target): a short burst of requests fits in the batch at any rate, so a sample must last long
# enough for a queue that grows to show (an overload by a fraction f shows as f x this many
# lifetimes of waiting by the end).
HORIZON_LIFETIMES = 10
MIN_REQUESTS_IN_CACHE = 4  # a configuration whose KV cache holds fewer of the longest requests is not kept


@dataclass(frozen=True)
class Capacity:
    rate_rps: float
    prefill_ms: float  # a lone request of the mean prompt
    decode_step_ms: float  # one request of the mean context alone


@dataclass(frozen=True)
class PlacedReplica:
    config: ReplicaConfig
    gpus: tuple[str, ...]  # GPU ids, stage by stage, TP rank order within a stage
    rate_rps: float  # the traffic routed to it (decode replicas: the requests it decodes)

    def to_json(self) -> dict:
        return {**self.config.to_json(), "gpus": list(self.gpus), "rate_rps": self.rate_rps}


@dataclass
class ServingSetup:
    spec: TransformerSpec
    workload: ServeWorkload
    topology: Topology
    pricer: CommPricer = field(init=False)
    _costs: dict = field(default_factory=dict, init=False)
    _capacities: dict = field(default_factory=dict, init=False)
    checks: dict = field(default_factory=dict, init=False)  # plan simulations, by replicas and rate

    def __post_init__(self) -> None:
        self.pricer = CommPricer(self.topology)

    # ------------------------------------------------------------ the pool
    @cached_property
    def servers_by_gpu(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """GPU model -> its servers' GPU ids (servers in index order)."""
        topo = self.topology
        out: dict[str, list[tuple[str, ...]]] = {}
        for _, gpus in sorted(topo.servers.items()):
            models = {topo.node_by_id[g].model for g in gpus}
            for m in sorted(models):
                out.setdefault(m, []).append(tuple(g for g in gpus if topo.node_by_id[g].model == m))
        return {m: tuple(v) for m, v in out.items()}

    @cached_property
    def available(self) -> dict[str, int]:
        """GPUs usable per model: the topology's, capped by the workload's `available`."""
        cap = dict(self.workload.available)
        return {m: min(sum(len(s) for s in servers), cap.get(m, math.inf))
                for m, servers in self.servers_by_gpu.items() if cap.get(m, 1) > 0}

    def price(self, gpu: str) -> float:
        """$ per GPU-hour; 0 when the workload prices nothing (objective goodput, no budget)."""
        w = self.workload
        p = w.price(gpu)
        if p is None and not w.prices and w.objective == "goodput" and w.budget_per_hour is None:
            return 0.0
        if p is None:
            raise InputError(f"no price for {gpu} GPUs (add prices: {{{gpu}: $ per GPU-hour}})", field="prices")
        return p

    def gpu(self, name: str) -> GpuSpec:
        return gpu_spec(name, field="--topology")

    # ------------------------------------------------------------ configurations
    @cached_property
    def longest_request(self) -> int:
        return max(r.prompt_tokens + r.output_tokens for r in self.requests)

    @cached_property
    def requests(self) -> tuple[Request, ...]:
        """The request pool at one request per second: MAX_REQUESTS drawn, or the trace repeated."""
        return unit_requests(self.workload, MAX_REQUESTS)

    def sample(self, rate: float, at_least: int = 0, role: str = "colocated") -> tuple[Request, ...] | None:
        """The requests a rate is judged on: the workload's `requests`, more when the horizon
        needs them (HORIZON_LIFETIMES of the time a request stays on a replica of `role`);
        None when even the whole pool is too short (the rate cannot be certified, so a
        capacity is at most MAX_REQUESTS / the horizon). A trace is repeated to fill the horizon."""
        w = self.workload
        lifetime = (w.ttft_slo_s if role != "decode" else 0.0) + (w.output_tokens * w.tpot_slo_s
                                                                   if role != "prefill" else 0.0)
        n = max(w.requests, at_least, math.ceil(rate * HORIZON_LIFETIMES * lifetime))
        if n > len(self.requests):
            return None
        return at_rate(self.requests[:n], rate)

    def configurations(self) -> list[ReplicaConfig]:
        """Every configuration that fits: TP a power of two within one server and dividing the
        heads, PP across servers at the largest TP where TP x PP GPUs are available (2 stages
        always, deeper only while the shallower does not fit), EP on or off for MoE models, in the
        roles the workload allows (disaggregated ones only where there are NICs)."""
        s, w = self.spec, self.workload
        roles = {"any": ("colocated", "prefill", "decode"), "colocated": ("colocated",),
                 "disaggregated": ("prefill", "decode")}[w.roles]
        if not self.has_network:  # no NIC: no KV cache leaves a server, so no disaggregation across them
            roles = tuple(r for r in roles if r == "colocated")
        out = []
        for gpu, count in sorted(self.available.items()):
            server = min(len(x) for x in self.servers_by_gpu[gpu])
            tps = [t for t in (1, 2, 4, 8, 16, 32, 64, 72) if t <= server and s.heads % t == 0
                   and (s.kv_heads % t == 0 or t % s.kv_heads == 0 or s.mla)]
            for tp in tps:
                for pp in PP_CHOICES:
                    if pp > 1 and tp != tps[-1]:
                        break  # stages across servers; within one, the larger TP is the choice
                    if tp * pp > count or pp > s.layers:
                        break
                    eps = (False, True) if s.is_moe and tp > 1 else (False,)
                    fits = False
                    for ep in eps:
                        c = ReplicaConfig(gpu, tp, pp, ep)
                        if self.fits(c):
                            fits = True
                            out += [replace(c, role=r) for r in roles]
                    if fits and pp >= 2:
                        break
        return out

    def fits(self, c: ReplicaConfig) -> bool:
        return self.cost(c).kv_capacity_tokens >= MIN_REQUESTS_IN_CACHE * self.longest_request

    def cost(self, c: ReplicaConfig) -> ReplicaCost:
        key = replace(c, role="colocated")
        out = self._costs.get(key)
        if out is None:
            tp_ranks, pp_ranks = self._ranks(c)
            out = ReplicaCost(self.spec, self.workload, key, self.gpu(c.gpu), self.pricer, tp_ranks, pp_ranks)
            rows = tuple(r for r in self.workload.profile if (r.gpu, r.tp, r.pp) == (c.gpu, c.tp, c.pp))
            if rows:
                out.measured = MeasuredTimes.of(rows, out.per_context_s)
            self._costs[key] = out
        return out

    def _ranks(self, c: ReplicaConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ranks a replica of this shape is priced on: its first placement in the pool."""
        gpus = self.placement_blocks(c, {})
        rank = self.topology.rank_of
        if gpus is None:
            raise InputError(f"{c.label()} does not fit the pool", field="--topology")
        return tuple(rank[g] for g in gpus[:c.tp]), tuple(rank[gpus[i * c.tp]] for i in range(c.pp))

    # ------------------------------------------------------------ capacity
    @property
    def phase_quantile(self) -> float:
        return 1 - (1 - self.workload.slo_quantile) / 2

    def capacity(self, c: ReplicaConfig) -> Capacity:
        out = self._capacities.get(c)
        if out is None:
            out = self._capacities[c] = self._capacity(c)
        return out

    def _capacity(self, c: ReplicaConfig) -> Capacity:
        w = self.workload
        cost = self.cost(c)
        prompt, context = round(w.prompt_tokens), w.mean_context
        prefill = cost.prefill_s(prompt, min(prompt - 1, int(prompt * w.prefix_hit)))
        step = cost.iteration_s((), 1, context)
        delay = self.transfer_s(c) if c.role == "decode" else None
        need = {"prefill": (True, False), "decode": (False, True)}.get(c.role, (True, True))
        quantile_ = w.slo_quantile if c.role == "colocated" else self.phase_quantile

        def meets(r: float) -> bool:
            reqs = self.sample(r, role=c.role)
            if reqs is None:
                return False
            served = simulate_replica(cost, reqs, c.role, None if delay is None else lambda i, q: delay(q))
            return attainment(served, w, ttft=need[0], tpot=need[1]) >= quantile_
        alone = prefill + max(1.0, w.output_tokens - 1) * step
        lone_ttft, lone_tpot = prefill <= w.ttft_slo_s, step <= w.tpot_slo_s
        feasible = {"prefill": lone_ttft, "decode": lone_tpot}.get(c.role, lone_ttft and lone_tpot)
        rate = max_rate(meets, 1.0 / alone) if feasible else 0.0  # a lone request already misses
        if c.role != "colocated":  # its NICs carry every request's KV cache out (prefill) or in (decode)
            network = self.network_GBps(c) * 1e9
            rate = min(rate, network / self.kv_bytes(round(w.prompt_tokens))) if network > 0 else 0.0
        return Capacity(rate, prefill * 1e3, step * 1e3)

    # ------------------------------------------------------------ KV transfer
    @cached_property
    def has_network(self) -> bool:
        return any(n.type == "nic" for n in self.topology.nodes)

    def network_GBps(self, c: ReplicaConfig) -> float:
        """What a replica's GPUs reach over the fabric: its servers' NIC bandwidth per GPU x
        its GPUs, at the measured multi-node efficiency (planner/core/gpus.py)."""
        topo = self.topology
        servers = self.servers_by_gpu[c.gpu][0]
        server = topo.node_by_id[servers[0]].server
        nic_out = sum(l.bandwidth for n in topo.nodes if n.type == "nic" and n.server == server
                      for l in topo.out_links[n.id] if topo.node_by_id[l.dst].server != server)
        per_gpu = nic_out / len(topo.servers[server])
        return per_gpu * c.gpus * NETWORK_EFFICIENCY

    def kv_bytes(self, prompt: int) -> float:
        """The whole model's KV cache of a prompt (every layer, every K/V head once)."""
        return prompt * self.cost(ReplicaConfig(min(self.available), 1)).kv_bytes_per_token_layer * self.spec.layers

    def transfer_s(self, decode: ReplicaConfig, prefill: ReplicaConfig | None = None):
        """Seconds to move a request's KV cache from a prefill replica (on another server) to
        `decode`, as a function of the request: bytes / the slower side's network."""
        bandwidth = self.network_GBps(decode) if prefill is None else min(self.network_GBps(decode),
                                                                          self.network_GBps(prefill))
        if bandwidth <= 0:
            return lambda r: math.inf
        per_token = self.kv_bytes(1) / (bandwidth * 1e9)
        return lambda r: r.prompt_tokens * per_token

    # ------------------------------------------------------------ placement
    def placement_blocks(self, c: ReplicaConfig, used: dict[str, set[str]]) -> tuple[str, ...] | None:
        """GPUs for one replica: pp blocks of tp GPUs, each block inside one server (a stage's
        TP group on its NVLink), first fit over the servers of its GPU type in order; None
        when the pool has no room. `used` (GPU type -> GPU ids taken) is updated."""
        taken = used.setdefault(c.gpu, set())
        limit = self.available.get(c.gpu, 0)
        if len(taken) + c.gpus > limit:
            return None
        blocks: list[tuple[str, ...]] = []
        mine: set[str] = set()
        for server in self.servers_by_gpu[c.gpu]:
            free = [g for g in server if g not in taken and g not in mine]
            while len(free) >= c.tp and len(blocks) < c.pp:
                block = tuple(free[:c.tp])
                blocks.append(block)
                mine.update(block)
                free = free[c.tp:]
            if len(blocks) == c.pp:
                break
        if len(blocks) < c.pp:
            return None
        taken.update(mine)
        return tuple(g for b in blocks for g in b)

    def place(self, counts: list[tuple[ReplicaConfig, int, float]]) -> tuple[PlacedReplica, ...] | None:
        """Replicas (config, how many, traffic each) onto GPUs, largest first; None if they do not fit."""
        used: dict[str, set[str]] = {}
        out = []
        for c, n, rate in sorted(counts, key=lambda x: (-x[0].gpus, x[0].key())):
            for _ in range(n):
                gpus = self.placement_blocks(c, used)
                if gpus is None:
                    return None
                out.append(PlacedReplica(c, gpus, rate))
        return tuple(sorted(out, key=lambda r: (r.gpus[0] not in self.topology.rank_of,
                                                self.topology.rank_of.get(r.gpus[0], 0))))

    # ------------------------------------------------------------ a whole plan
    def simulate_plan(self, replicas: tuple[PlacedReplica, ...], rate: float, count: int) -> list[Served]:
        """`count` requests at `rate` over the plan: the router sends each to a colocated or
        prefill replica by smooth weighted round robin on their traffic shares; a prefill
        replica's requests go on to the decode replicas the same way."""
        reqs = self.sample(rate, count) or at_rate(self.requests, rate)
        front = [r for r in replicas if r.config.role in ("colocated", "prefill")]
        back = [r for r in replicas if r.config.role == "decode"]
        if not front:
            return []
        streams = _route(list(range(len(reqs))), [r.rate_rps for r in front])
        served: dict[int, Served] = {}
        handed: list[tuple[int, float, int]] = []  # (request, first token, prefill replica)
        for k, (replica, idx) in enumerate(zip(front, streams)):
            sub = tuple(reqs[i] for i in idx)
            mode = replica.config.role
            for s in simulate_replica(self.cost(replica.config), sub, mode):
                i = idx[s.request]
                if mode == "prefill":
                    handed.append((i, reqs[i].arrival_s + s.ttft_s, k))
                else:
                    served[i] = replace(s, request=i)
        if handed:
            handed.sort(key=lambda x: (x[1], x[0]))
            order = [h[0] for h in handed]
            first = {h[0]: h[1] for h in handed}
            source = {h[0]: front[h[2]].config for h in handed}
            for replica, idx in zip(back, _route(order, [r.rate_rps for r in back])):
                if not idx:
                    continue
                sub = tuple(Request(first[i], reqs[i].prompt_tokens, reqs[i].output_tokens) for i in idx)
                delays = [self.transfer_s(replica.config, source[i])(reqs[i]) for i in idx]
                for s in simulate_replica(self.cost(replica.config), sub, "decode", lambda j, q, d=delays: d[j]):
                    i = idx[s.request]
                    served[i] = Served(i, first[i] - reqs[i].arrival_s, s.tpot_s, s.finish_s)
        return [served[i] for i in sorted(served)]


def _route(items: list[int], weights: list[float]) -> list[list[int]]:
    """Smooth weighted round robin (nginx's): deterministic, each target's share of the items
    within one of its weight's share at every prefix."""
    out: list[list[int]] = [[] for _ in weights]
    total = sum(weights)
    if total <= 0:
        return out
    current = [0.0] * len(weights)
    for item in items:
        for k, wgt in enumerate(weights):
            current[k] += wgt
        best = max(range(len(weights)), key=lambda k: (current[k], -k))
        current[best] -= total
        out[best].append(item)
    return out
