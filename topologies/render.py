"""Human views of a topology: the summary `planner topology show` prints."""
from __future__ import annotations

from collections import Counter, deque

from topologies.metrics import bisection_bandwidth, gpu_bandwidths
from topologies.types import Topology


def levels(topo: Topology) -> list[dict]:
    """Nodes by hop distance from the nearest GPU (undirected), with the bandwidth that
    leaves each level towards the next. O(V + E)."""
    nbrs: dict[str, set[str]] = {n.id: set() for n in topo.nodes}
    for l in topo.links:
        nbrs[l.src].add(l.dst)
        nbrs[l.dst].add(l.src)
    dist = {g: 0 for g in topo.gpus}
    queue = deque(topo.gpus)
    while queue:
        u = queue.popleft()
        for v in sorted(nbrs[u]):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    out = []
    for level in range(max(dist.values(), default=0) + 1):
        members = [n for n in topo.nodes if dist.get(n.id) == level]
        kinds = Counter(n.kind or n.type for n in members)
        up = sum(l.bandwidth for l in topo.links if dist.get(l.src) == level and dist.get(l.dst) == level + 1)
        out.append({"level": level, "nodes": len(members), "kinds": dict(sorted(kinds.items())),
                    "up_GBps": round(up, 6)})
    return out


def summary(topo: Topology) -> dict:
    per_gpu = gpu_bandwidths(topo)
    return {"name": topo.name, "num_gpus": topo.num_gpus, "gpus": list(topo.gpus),
            "servers": {str(s): list(g) for s, g in topo.servers.items()},
            "num_nodes": len(topo.nodes), "num_links": len(topo.links),
            "per_gpu": per_gpu, "bisection": bisection_bandwidth(topo), "levels": levels(topo)}


def render_text(topo: Topology, info: dict | None = None) -> str:
    info = info or summary(topo)
    servers = info["servers"]
    lines = [f"{topo.name}: {topo.num_gpus} GPUs in {len(servers)} server(s), "
             f"{len(topo.nodes)} nodes, {len(topo.links)} directed links"]
    lines.append("servers (GPU ranks):")
    ranks = topo.rank_of
    items = list(servers.items())
    shown = items if len(items) <= 8 else items[:4] + [None] + items[-2:]
    for item in shown:
        if item is None:
            lines.append(f"  ... {len(items) - 6} more")
            continue
        s, gpus = item
        r = [ranks[g] for g in gpus]
        span = f"{r[0]}-{r[-1]}" if r == list(range(r[0], r[-1] + 1)) else ",".join(map(str, r))
        models = sorted({topo.node_by_id[g].model for g in gpus} - {""})
        kind = f" {'+'.join(models)}" if models else ""
        lines.append(f"  server {s}: ranks {span} ({len(gpus)}{kind} GPUs: {gpus[0]} .. {gpus[-1]})")
    distinct = Counter((tuple(sorted(r["by_kind_GBps"].items())), r["network_GBps"], r["network_share_GBps"])
                       for r in info["per_gpu"])
    lines.append("per-GPU bandwidth (GB/s per direction):")
    for (kinds, net, share), count in distinct.most_common():
        parts = "  ".join(f"{k} {v:g}" for k, v in kinds)
        lines.append(f"  {count:4d} GPU(s): {parts}  | network {net:g} alone, {share:g} fair share")
    bis = info["bisection"]
    lines.append(f"bisection: {bis['GBps']:g} GB/s (split by {bis['split']})")
    lines.append("levels (hops from the GPUs):")
    for lv in reversed(info["levels"]):
        kinds = ", ".join(f"{v} {k}" for k, v in lv["kinds"].items())
        up = f"  --{lv['up_GBps']:g} GB/s up-->" if lv["up_GBps"] else ""
        lines.append(f"  L{lv['level']}  {kinds}{up}")
    return "\n".join(lines)
