"""All-to-all(v) in the style of FLASH: server-level Birkhoff-von Neumann stages, every
NIC kept busy by balancing over the fast intra-server links. A heuristic.

1. Traffic between servers is summed per server pair (A[s, t]) and padded to a matrix
   whose rows and columns all sum to its largest line sum L (padding is idle time);
2. the padded matrix is decomposed into weighted server permutations (Birkhoff-von
   Neumann: a perfect matching on the positive entries, its smallest entry as weight,
   subtracted, repeated; at most S^2 - 2S + 2 stages). In stage k server s sends the next
   lambda_k bytes of what it has for sigma_k(s);
3. a stage's bytes from s to t are cut into g equal shares, one per rail: share l leaves
   by GPU l's NIC for GPU l of server t. The blocks it is cut from are first moved over
   NVLink (or xGMI) to GPU l when they start elsewhere (load-balance before sending),
   and delivered from GPU l of t to their destination after (restore after receiving);
4. traffic inside a server goes directly over the scale-up fabric, at once.

The schedule is dataflow (planner/schedule.py): the intra-server shuffles of one stage
overlap the inter-server sends of others wherever their data is ready; each rail's NIC
connection sends its stages in order. When every server's NIC bandwidth is the binding
resource and intra-server links are fast enough to shuffle (the issue's condition: at
least 4x the NIC bandwidth per GPU), every NIC carries L/g bytes, so the inter-server
time is L/(g x NIC bandwidth): the server bound (planner/bounds.py). Measured against
the bound in bench/alltoall.py. O(S^3 x stages) to decompose, O(blocks + S^2 g) pieces.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from planner.collectives import Collective
from planner.errors import InputError
from planner.schedule import Chunk, Schedule, Transfer
from topologies.types import Topology

PIECES_PER_RAIL = 64  # pieces are at most the busiest rail's bytes / this: a short drain
MIN_PIECE_BYTES = 1 << 20


def server_stages(a: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Birkhoff-von Neumann stages of the server traffic matrix `a` (zero diagonal): a list
    of (permutation, bytes) whose weighted sum covers `a` entry by entry once padded to
    equal line sums. Matchings prefer real traffic over padding and the largest entries."""
    s = len(a)
    line = max(a.sum(axis=1).max(), a.sum(axis=0).max())
    if line <= 0:
        return []
    padded = a.astype(float).copy()
    row_gap, col_gap = line - padded.sum(axis=1), line - padded.sum(axis=0)
    i = j = 0
    while i < s and j < s:  # north-west corner: fill the deficits (diagonal allowed: idle)
        take = min(row_gap[i], col_gap[j])
        padded[i, j] += take
        row_gap[i] -= take
        col_gap[j] -= take
        if row_gap[i] <= line * 1e-12:
            i += 1
        if col_gap[j] <= line * 1e-12:
            j += 1
    real = a.astype(float).copy()
    stages = []
    left = line
    while left > line * 1e-9 and len(stages) <= s * s:
        positive = padded > line * 1e-12
        # max real traffic first, then the largest padded entries; zero entries forbidden
        score = np.where(positive, 1e6 * (real > 0) + padded / line, -1e12)
        rows, perm = linear_sum_assignment(score, maximize=True)
        if not positive[rows, perm].all():
            raise RuntimeError("Birkhoff-von Neumann: no perfect matching on the positive entries")
        weight = float(padded[rows, perm].min())
        padded[rows, perm] -= weight
        real[rows, perm] = np.maximum(real[rows, perm] - weight, 0.0)
        stages.append((perm.copy(), weight))
        left -= weight
    return stages


def flash_alltoall(collective: Collective, topo: Topology) -> Schedule:
    """The FLASH-style schedule for alltoall / alltoallv (see the module doc)."""
    if collective.kind not in ("alltoall", "alltoallv"):
        raise InputError(f"the flash method does not do {collective.kind}", field="method")
    servers = list(topo.servers.values())
    g = len(servers[0])
    if len(servers) < 2 or any(len(sv) != g for sv in servers):
        raise InputError("flash needs two or more servers with the same number of GPUs", field="method")
    rank_of = topo.rank_of
    members = [[rank_of[x] for x in sv] for sv in servers]
    server_of = {r: k for k, rs in enumerate(members) for r in rs}
    local = {r: l for rs in members for l, r in enumerate(rs)}
    blocks = collective.blocks
    ends = [(b.initial[0][0], b.required[0][0]) for b in blocks]
    nserv = len(members)
    a = np.zeros((nserv, nserv))
    queues: dict[tuple[int, int], dict[int, list[int]]] = {}  # (s, t) -> source GPU -> its blocks
    for k, (i, j) in enumerate(ends):
        si, sj = server_of[i], server_of[j]
        if si != sj:
            a[si, sj] += blocks[k].size
            queues.setdefault((si, sj), {}).setdefault(i, []).append(k)
    for q in queues.values():  # each source starts with a different destination: the rails'
        for i, ks in q.items():  # restores then spread over the GPUs instead of all hitting one
            ks.sort(key=lambda k: (local[ends[k][1]] - local[i]) % g)
    chunks: list[Chunk] = []
    transfers: list[Transfer] = []
    for k, (i, j) in enumerate(ends):  # inside a server: directly, at once
        if server_of[i] == server_of[j]:
            chunks.append(Chunk(k, 0.0, 1.0))
            transfers.append(Transfer(len(chunks) - 1, i, j, 0))
    at = {(pair, i): (0, 0.0) for pair, q in queues.items() for i in q}  # (block index in queue, bytes sent)
    left = {(pair, i): sum(blocks[k].size for k in q[i]) for pair, q in queues.items() for i in q}

    # the last pieces to cross the network are restored after the NICs finish: keep them small
    cap = max(MIN_PIECE_BYTES, max(a.sum(axis=1).max(), a.sum(axis=0).max()) / g / PIECES_PER_RAIL)

    def send(pair, i, amount, lane, step):
        s, t = pair
        pieces, at[pair, i] = _take(queues[pair][i], blocks, at[pair, i], amount)
        left[pair, i] -= amount
        sender, receiver = members[s][lane], members[t][lane]
        cut = [(k, lo, hi, max(1, int(np.ceil(blocks[k].size * (hi - lo) / cap)))) for k, lo, hi in pieces]
        pieces = [(k, lo + (hi - lo) * p / n, hi if p == n - 1 else lo + (hi - lo) * (p + 1) / n)
                  for k, lo, hi, n in cut for p in range(n)]
        for k, lo, hi in pieces:
            j = ends[k][1]
            chunks.append(Chunk(k, lo, hi))
            c = len(chunks) - 1
            # a connection per stage for the shuffles: stages overlap, and one FIFO would
            # hold a stage's pieces behind an earlier stage's that have not arrived yet
            if i != sender:  # load-balance: move it to the rail that sends it
                transfers.append(Transfer(c, i, sender, step, channel=1 + step // 3))
            transfers.append(Transfer(c, sender, receiver, step + 1))
            if j != receiver:  # restore: deliver it from the rail that received it
                transfers.append(Transfer(c, receiver, j, step + 2, channel=1 + step // 3))

    stages = server_stages(a)
    for stage, (perm, weight) in enumerate(stages):
        for s, t in enumerate(perm.tolist()):
            pair = (s, t)
            if s == t or pair not in queues:
                continue
            amount = min(weight, sum(left[pair, i] for i in queues[pair]))
            if amount <= 1e-9:
                continue
            target = amount / g
            deficit = [target] * g
            # each rail first sends its own GPU's data (no shuffle), then takes the surplus
            # of the others, largest first
            for lane, i in enumerate(members[s]):
                if (pair, i) in left:
                    own = min(target, left[pair, i])
                    if own > 1e-9:
                        send(pair, i, own, lane, 3 * stage)
                        deficit[lane] -= own
            for lane in range(g):
                while deficit[lane] > 1e-9 * target:
                    donor = max((i for i in queues[pair] if left[pair, i] > 1e-9), key=lambda i: left[pair, i],
                                default=None)
                    if donor is None:
                        break
                    use = min(deficit[lane], left[pair, donor])
                    send(pair, donor, use, lane, 3 * stage)
                    deficit[lane] -= use
    for pair, i in left:  # float dust: the rest goes on the GPU's own rail
        if at[pair, i][0] < len(queues[pair][i]):
            send(pair, i, float("inf"), local[i], 3 * len(stages))
    return Schedule(collective, tuple(chunks), tuple(transfers), algorithm="flash",
                    params=(("stages", len(stages)), ("heuristic", "flash")))


def _take(order: list[int], blocks, at: tuple[int, float], amount: float):
    """The next `amount` bytes of the blocks in `order` from position `at`, as (block,
    lo, hi) fractions, and the new position."""
    k, done = at
    out = []
    while amount > 1e-9 and k < len(order):
        size = blocks[order[k]].size
        use = min(amount, size - done)
        finished = size - (done + use) <= 1e-9 * size
        out.append((order[k], done / size, 1.0 if finished else (done + use) / size))
        done += use
        amount -= use
        if finished:
            k, done = k + 1, 0.0
    return out, (k, done)
