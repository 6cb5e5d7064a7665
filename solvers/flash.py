"""All-to-all(v) in the style of FLASH: server-level Birkhoff-von Neumann stages, every
NIC kept busy by balancing over the fast intra-server links. A heuristic.

Synthesis (`flash_plan`, numpy on the traffic matrix; what bench/alltoall.py times):
1. traffic between servers is summed per server pair (A[s, t]) and padded to a matrix
   whose rows and columns all sum to its largest line sum L (padding is idle time);
2. the padded matrix is decomposed into weighted server permutations (Birkhoff-von
   Neumann): a perfect matching on the positive entries, weighted by its smallest entry,
   subtracted; the matching is then repaired along one augmenting path per entry that
   reached zero instead of being recomputed. At most S^2 - 2S + 2 stages;
3. each server pair's bytes are cut into g equal rail shares. Rail l carries its own
   GPU's data to t first (no shuffle), then the surplus of the GPUs with more than a
   share (north-west corner between surpluses and deficits): the rail matrix X[s, t];
4. in stage k, pair (s, sigma_k(s)) sends its next lambda_k bytes, lambda_k / g per rail.

Materialization (`flash_schedule`): each rail's bytes of a stage become pieces of at most
the busiest rail's bytes / 64 (>= 1 MiB), so the last restores are short: moved over
NVLink/xGMI to the rail that sends them when they start elsewhere (load-balance), sent,
delivered from the receiving rail to their destination (restore). Each source orders its
blocks to server t ending with the destination on its own rail: restores spread over the
GPUs, and the last piece a rail sends needs none when it carries its own GPU's data.
Intra-server traffic goes directly, at once. The schedule is dataflow
(planner/schedule.py): shuffles overlap the NIC sends wherever data is ready; each rail's
NIC connection sends its stages in order; shuffles get a connection per stage.

Within a factor of the bound (docs/collectives.md): when every inter-server byte crosses
a NIC, rails are fully used (each carries L/g), and the scale-up links move the shuffles
of a stage while the NICs send the previous one, the time is L/(g x NIC bandwidth) plus
a pipeline fill and drain of one piece - the server bound of planner/bounds.py. Scale-up
bandwidth per GPU of at least 4x the NIC's is the issue's condition for this.

Cost: O(S^2) matchings of O(S^2) each in the worst case (with numpy), O(S^2 g^2) for the
rails; materialization is linear in the pieces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from planner.core.collectives import Collective
from planner.core.declined import Declined
from planner.core.schedule import Chunk, Schedule, Transfer
from planner.core import limits
from topologies.types import Topology

PIECES_PER_RAIL = 64  # pieces are at most the busiest rail's bytes / this: a short drain
MIN_PIECE_BYTES = 1 << 20


@dataclass(frozen=True)
class FlashPlan:
    """The synthesized schedule in compact form.

    members[s]: ranks of server s in rail order; pair[s, t]: bytes from s to t (A);
    rails[s, t, i, l]: bytes of GPU i's data for server t that rail l carries;
    perms[k, s]: where server s sends in stage k; sent[k, s]: how many bytes it sends then.
    """

    members: tuple[tuple[int, ...], ...]
    pair: np.ndarray
    rails: np.ndarray
    perms: np.ndarray
    weights: np.ndarray
    sent: np.ndarray

    @property
    def num_stages(self) -> int:
        return len(self.weights)


def server_stages(a: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Birkhoff-von Neumann stages of the server traffic matrix `a` (zero diagonal): a list
    of (permutation, bytes) whose weighted sum covers `a` entry by entry once padded to
    equal line sums. See `_decompose`."""
    perms, weights = _decompose(np.asarray(a, dtype=float))
    return [(p, float(w)) for p, w in zip(perms, weights)]


def _decompose(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = len(a)
    line = max(a.sum(axis=1).max(), a.sum(axis=0).max()) if s else 0.0
    if line <= 0:
        return np.zeros((0, s), dtype=np.int64), np.zeros(0)
    padded = _pad(a, line)
    tiny = line * 1e-12
    support = padded > tiny
    # the first matching the largest: lots of traffic in few stages when it is uniform
    _, row_match = linear_sum_assignment(np.where(support, padded, -line), maximize=True)
    col_match = np.empty(s, dtype=np.int64)
    col_match[row_match] = np.arange(s)
    rows = np.arange(s)
    perms, weights = [], []
    left = line
    while left > line * 1e-9 and len(perms) <= s * s:
        if not support[rows, row_match].all():
            raise RuntimeError("Birkhoff-von Neumann: no perfect matching on the positive entries")
        weight = float(padded[rows, row_match].min())
        padded[rows, row_match] -= weight
        perms.append(row_match.copy())
        weights.append(weight)
        left -= weight
        broken = rows[padded[rows, row_match] <= tiny]
        support[broken, row_match[broken]] = False
        if left <= line * 1e-9:
            break
        if len(broken) > 4:  # many entries ran out at once (uniform traffic): a new matching
            _, row_match = linear_sum_assignment(np.where(support, padded, -line), maximize=True)
            col_match[row_match] = rows
            continue
        col_match[row_match[broken]] = -1
        row_match[broken] = -1
        for r in broken.tolist():
            if not _augment(support, row_match, col_match, r):
                raise RuntimeError("Birkhoff-von Neumann: no perfect matching on the positive entries")
    return np.array(perms, dtype=np.int64).reshape(-1, s), np.array(weights)


def _pad(a: np.ndarray, line: float) -> np.ndarray:
    """`a` plus idle time (diagonal allowed) so every row and column sums to `line`:
    the deficits matched north-west corner."""
    s = len(a)
    padded = a.copy()
    row_gap, col_gap = line - padded.sum(axis=1), line - padded.sum(axis=0)
    i = j = 0
    while i < s and j < s:
        take = min(row_gap[i], col_gap[j])
        padded[i, j] += take
        row_gap[i] -= take
        col_gap[j] -= take
        if row_gap[i] <= line * 1e-12:
            i += 1
        if col_gap[j] <= line * 1e-12:
            j += 1
    return padded


def _augment(support: np.ndarray, row_match: np.ndarray, col_match: np.ndarray, r0: int) -> bool:
    """Match the free row r0 along a shortest augmenting path (breadth first, a frontier
    of rows at a time)."""
    parent = np.full(len(support), -1, dtype=np.int64)
    seen = np.zeros(len(support), dtype=bool)
    frontier = np.array([r0])
    while frontier.size:
        reach = support[frontier] & ~seen
        cols = np.flatnonzero(reach.any(axis=0))
        if not cols.size:
            return False
        parent[cols] = frontier[reach[:, cols].argmax(axis=0)]
        seen[cols] = True
        free = cols[col_match[cols] < 0]
        if free.size:
            c = int(free[0])
            while True:
                r = int(parent[c])
                prev = int(row_match[r])
                row_match[r], col_match[c] = c, r
                if r == r0:
                    return True
                c = prev
        frontier = col_match[cols]
    return False


def flash_applies(topo: Topology) -> str | None:
    """None, or why flash cannot run on `topo`."""
    servers = list(topo.servers.values())
    g = len(servers[0]) if servers else 0
    if len(servers) < 2 or any(len(sv) != g for sv in servers):
        return "flash needs two or more servers with the same number of GPUs"
    return None


def flash_members(topo: Topology) -> list[list[int]]:
    """Ranks per server in rail order (ValueError unless flash applies)."""
    reason = flash_applies(topo)
    if reason:
        raise ValueError(reason)
    return [[topo.rank_of[x] for x in sv] for sv in topo.servers.values()]


def flash_plan(traffic: np.ndarray, members: list[list[int]]) -> FlashPlan:
    """Stages and rail shares for the G x G byte matrix `traffic` on servers `members`
    (ranks in rail order): steps 1-4 of the module doc."""
    order = np.array([r for rs in members for r in rs])
    nserv, g = len(members), len(members[0])
    m = traffic[np.ix_(order, order)].reshape(nserv, g, nserv, g)
    by_source = m.sum(axis=3).transpose(0, 2, 1).copy()  # [s, t, i]: GPU i of s to server t
    by_source[np.arange(nserv), np.arange(nserv)] = 0.0
    pair = by_source.sum(axis=2)
    share = pair / g
    own = np.minimum(by_source, share[..., None])
    surplus, deficit = by_source - own, share[..., None] - own
    # north-west corner per pair: donors' surpluses against lanes' deficits, as intervals
    su, sd = np.cumsum(surplus, axis=2), np.cumsum(deficit, axis=2)
    hi = np.minimum(su[..., :, None], sd[..., None, :])
    lo = np.maximum((su - surplus)[..., :, None], (sd - deficit)[..., None, :])
    rails = np.maximum(hi - lo, 0.0)
    idx = np.arange(g)
    rails[..., idx, idx] += own
    perms, weights = _decompose(pair)
    sent = _stage_amounts(pair, perms, weights)
    perms, weights, sent = _cover_rounding(pair, perms, weights, sent)
    return FlashPlan(tuple(tuple(rs) for rs in members), pair, rails, perms, weights, sent)


def _stage_amounts(pair: np.ndarray, perms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sent[k, s]: bytes s sends to perms[k, s] in stage k, its pair's stream clipped to
    what the pair has (padding is idle)."""
    k, nserv = perms.shape
    if not k:
        return np.zeros((0, nserv))
    ids = (np.arange(nserv)[None, :] * nserv + perms).ravel()  # pair id per (stage, server)
    w = np.repeat(weights, nserv)
    by_pair = np.argsort(ids, kind="stable")  # stage order kept within a pair
    ids_sorted, w_sorted = ids[by_pair], w[by_pair]
    cum = np.cumsum(w_sorted)
    starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
    base = np.repeat(cum[starts] - w_sorted[starts], np.diff(np.r_[starts, len(ids_sorted)]))
    upto, before = cum - base, cum - base - w_sorted
    total = pair.ravel()[ids_sorted]
    amount = np.clip(upto, 0, total) - np.clip(before, 0, total)
    sent = np.empty(len(ids))
    sent[by_pair] = amount
    return sent.reshape(k, nserv)


def _cover_rounding(pair, perms, weights, sent):
    """Stages for what the decomposition's float tolerance left uncovered (pairs far below
    the largest line sum): one shift permutation per shift that has any, weighted by its
    largest remainder; the permutation carries only those remainders."""
    nserv = len(pair)
    covered = np.zeros_like(pair)
    np.add.at(covered, (np.broadcast_to(np.arange(nserv), perms.shape), perms), sent)
    short = np.where(pair > 0, np.maximum(pair - covered, 0.0), 0.0)
    extra_perms, extra_weights, extra_sent = [], [], []
    for d in range(1, nserv):
        targets = (np.arange(nserv) + d) % nserv
        rest = short[np.arange(nserv), targets]
        if (rest > 0).any():
            extra_perms.append(targets)
            extra_weights.append(float(rest.max()))
            extra_sent.append(rest)
    if not extra_perms:
        return perms, weights, sent
    return (np.vstack([perms, extra_perms]), np.r_[weights, extra_weights], np.vstack([sent, extra_sent]))


def flash_alltoall(collective: Collective, topo: Topology) -> Schedule | Declined:
    """The FLASH-style schedule for alltoall / alltoallv (see the module doc); Declined
    when it would be too large for the simulator to check."""
    if collective.kind not in ("alltoall", "alltoallv"):
        raise ValueError(f"the flash method does not do {collective.kind}")
    return flash_schedule(collective, flash_plan(collective.matrix, flash_members(topo)))


def flash_schedule(collective: Collective, plan: FlashPlan) -> Schedule | Declined:
    """Chunks and transfers of `plan` (the module doc's materialization), or Declined
    before materializing a schedule the simulator would refuse."""
    traffic, block_id = collective.matrix, collective.block_ids
    members = plan.members
    g = len(members[0])
    positive = traffic > 0
    chunks: list[Chunk] = []
    transfers: list[Transfer] = []
    for rs in members:  # inside a server: directly, at once
        for i in rs:
            for j in rs:
                if positive[i, j]:
                    chunks.append(Chunk(int(block_id[i, j]), 0.0, 1.0))
                    transfers.append(Transfer(len(chunks) - 1, i, j, 0))
    line = max(plan.pair.sum(axis=1).max(), plan.pair.sum(axis=0).max())  # the busiest server's bytes
    cap = max(MIN_PIECE_BYTES, line / g / PIECES_PER_RAIL)
    # pieces: at least one per rail and stage of a pair, and one per cap of bytes; most
    # take three transfers (load-balance, send, restore)
    pieces = int(np.ceil(plan.sent / g / cap).sum()) * g
    if 2 * pieces > limits.MAX_TRANSFERS:
        return Declined(f"the flash plan has {plan.num_stages} stages and about {pieces} pieces: more "
                        f"transfers than the simulator checks ({limits.MAX_TRANSFERS}); the plan itself is built "
                        "(solvers/flash.py flash_plan) but cannot be verified at this size")
    stages_of: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for k, row in enumerate(plan.perms.tolist()):
        for s, t in enumerate(row):
            if plan.sent[k, s] > 0 and s != t:
                stages_of.setdefault((s, t), []).append((k, float(plan.sent[k, s])))
    for (s, t), stages in sorted(stages_of.items()):
        _pair_pieces(plan, traffic, block_id, members[s], members[t], s, t, stages, cap, chunks, transfers)
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="flash",
                    params=(("stages", plan.num_stages),))


def _pair_pieces(plan, traffic, block_id, src_rail, dst_rail, s, t, stages, cap, chunks, transfers):
    """Pieces of the bytes from server s to t, appended as chunks and transfers."""
    g = len(src_rail)
    rails = plan.rails[s, t]
    ks = np.array([k for k, _ in stages])
    lane_cuts = np.r_[0.0, np.cumsum([amount / g for _, amount in stages])]
    # cut each stage of a lane into pieces of at most `cap` bytes
    counts = np.maximum(1, np.ceil(np.diff(lane_cuts) / cap).astype(np.int64))
    points = np.concatenate([lane_cuts[q] + (lane_cuts[q + 1] - lane_cuts[q]) * np.arange(n) / n
                             for q, n in enumerate(counts.tolist())] + [lane_cuts[-1:]])
    # each lane carries its own GPU's segment first, then the donors' in GPU order; each
    # source's stream gives its own rail the first bytes, then the lanes in order
    lane_start = np.zeros((g, g))  # [i, l]: where i's segment starts on lane l
    src_start = np.zeros((g, g))  # [i, l]: where i's bytes for lane l start in i's stream
    for l in range(g):
        order = [l] + [i for i in range(g) if i != l]
        lane_start[order, l] = np.r_[0.0, np.cumsum(rails[order, l])[:-1]]
    for i in range(g):
        order = [i] + [l for l in range(g) if l != i]
        src_start[i, order] = np.r_[0.0, np.cumsum(rails[i, order])[:-1]]
    for i in range(g):
        src = src_rail[i]
        dests = [dst_rail[(i + d) % g] for d in range(1, g + 1)]  # own rail's destination last
        sizes = traffic[src, dests]
        bounds = np.r_[0.0, np.cumsum(sizes)]
        tol = 1e-9 * max(bounds[-1], 1.0)
        cuts = [bounds]
        for l in range(g):
            if rails[i, l] <= tol:
                continue
            lo, hi = lane_start[i, l], lane_start[i, l] + rails[i, l]
            inner = points[(points > lo + tol) & (points < hi - tol)]
            cuts.append(src_start[i, l] + np.r_[0.0, inner - lo])
        cut = _merge_cuts(bounds, np.concatenate(cuts[1:]) if len(cuts) > 1 else np.zeros(0), tol)
        for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
            mid = (a + b) / 2
            d = int(np.searchsorted(bounds, mid, side="right")) - 1
            l = _lane_of(src_start[i], rails[i], i, mid)
            lane_pos = lane_start[i, l] + (mid - src_start[i, l])
            q = min(int(np.searchsorted(lane_cuts, lane_pos, side="right")) - 1, len(ks) - 1)
            size = sizes[d]
            lo_f = 0.0 if a == bounds[d] else (a - bounds[d]) / size
            hi_f = 1.0 if b == bounds[d + 1] else (b - bounds[d]) / size
            chunks.append(Chunk(int(block_id[src, dests[d]]), lo_f, hi_f))
            c = len(chunks) - 1
            step = 3 * int(ks[q])
            sender, receiver, j = src_rail[l], dst_rail[l], dests[d]
            if src != sender:  # load-balance: to the rail that sends it
                transfers.append(Transfer(c, src, sender, step, channel=1 + step // 3))
            transfers.append(Transfer(c, sender, receiver, step + 1))
            if j != receiver:  # restore: from the rail that received it
                transfers.append(Transfer(c, receiver, j, step + 2, channel=1 + step // 3))


def _merge_cuts(bounds: np.ndarray, inner: np.ndarray, tol: float) -> np.ndarray:
    """Block bounds (exact) and the lane/stage/piece cuts, sorted; a cut within `tol` of a
    kept one is dropped (never a block bound), so every piece lies inside one block and is
    either a whole block or longer than `tol`."""
    inner = inner[(inner > bounds[0]) & (inner < bounds[-1])]
    points = np.concatenate([bounds, inner])
    is_bound = np.r_[np.ones(len(bounds), dtype=bool), np.zeros(len(inner), dtype=bool)]
    order = np.lexsort((~is_bound, points))  # a bound before an equal cut
    points, is_bound = points[order], is_bound[order]
    keep = []
    for p, bound in zip(points.tolist(), is_bound.tolist()):
        if bound:
            while keep and not keep[-1][1] and p - keep[-1][0] <= tol:
                keep.pop()  # a cut just before a bound gives way to it
            if not keep or p > keep[-1][0]:
                keep.append((p, True))
        elif not keep or p - keep[-1][0] > tol:
            keep.append((p, False))
    return np.array([p for p, _ in keep])


def _lane_of(starts: np.ndarray, lengths: np.ndarray, own: int, pos: float) -> int:
    """The lane whose segment of a source's stream holds `pos` (own lane first, then the
    others in order)."""
    for l in [own] + [x for x in range(len(starts)) if x != own]:
        if starts[l] <= pos < starts[l] + lengths[l]:
            return l
    return own
