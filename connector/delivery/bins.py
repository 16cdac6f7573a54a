"""Which objects of a chunk go in which /users/track request: each user's objects together, requests full.

Two requests touching one user are never in flight at once (schedule.OrderedQueue), so a chunk packed in
source order whose users recur (100,000 events over 60,000 users) makes most requests wait for an earlier
one: few leave at a time. `plan_bins` groups each user's objects (a user's objects keep their source
order) and packs these runs into requests of `cap` objects like a bin-packing:

- a request opens with the oldest run not yet placed (users with several objects in order of first
  appearance; users with one object only fill rooms, and what is left of them closes the chunk);
- its room is filled with whole runs taken from anywhere later in the chunk, the largest that fits first
  (runs are kept in buckets by size, so each choice costs a few integer operations, not a scan);
- when no run left fits the room whole, the oldest run left is split: its first objects fill the room and
  the rest opens the next request, which then depends on this one (the queue sends it after); a run longer
  than a request only when that costs its user no extra request (else the oldest shorter one). A chain of
  requests linked by split users is at most `max_chain` long (beyond that the request closes with room
  left), so a chunk of medium runs that fit no gap (15 objects a user at 25 a request) does not become one
  long chain sent one request at a time;
- a run longer than a request opens a request with its first (length % cap) objects, filled like any
  other, and its rest fills whole requests of its own that follow (a chain: one user's requests go one
  after the other anyway); no other user's request waits at the end of that chain.

So a user recurring within a chunk sits in one request whenever its objects fit one, and the requests are
within a few of ceil(objects / cap). Nothing is looked ahead beyond the chunk, which is in memory already.
Byte caps are the packer's (batching.py): a planned request over the byte cap is cut further there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import chain, compress

# Requests linked by split users (each after the one before); 1 would never split a run that fits a request.
MAX_CHAIN = 3


def _keys_at(user_keys: Sequence[str], positions: Sequence[int]) -> list[str]:
    if isinstance(positions, range) and positions.step == 1:
        return list(user_keys[positions.start : positions.stop])
    return list(map(user_keys.__getitem__, positions))


def plan_bins(
    user_keys: Sequence[str], positions: Sequence[int], cap: int, max_chain: int = MAX_CHAIN
) -> list[list[int]] | None:
    """The positions of each request, in the order to send them; None when no user has two objects among
    `positions` (then source order is already the plan: one request per `cap` positions).

    Each list holds at most `cap` positions, ascending (positions are source order); a user's later objects
    are never in an earlier request.
    """
    if not isinstance(positions, range):
        positions = sorted(positions)  # source order (a request's tokens are, already: linear time then)
    keys = _keys_at(user_keys, positions)
    if len(set(keys)) == len(keys):
        return None
    groups: dict[str, list[int]] = {}  # each user's positions, users in order of first appearance
    add = groups.setdefault
    for p, k in zip(positions, keys, strict=True):
        add(k, []).append(p)
    runs = list(groups.values())
    sizes = list(map(len, runs))
    # Users with one object (most of them, usually) need no grouping: they are kept as positions, in order.
    ones = list(chain.from_iterable(compress(runs, map((1).__eq__, sizes))))
    return _pack(list(compress(runs, map((1).__lt__, sizes))), ones, cap, max(1, max_chain))


def _pack(runs: list[list[int]], ones: list[int], cap: int, max_chain: int) -> list[list[int]]:
    """Pack the runs of users with several objects (in order of first appearance) and the positions of the
    users with one object (`ones`)."""
    if cap == 1:
        return [[p] for run in runs for p in run] + [[p] for p in ones]
    # Runs that fit a request, by size (each bucket in order of first appearance; size 1 is `ones` from
    # `taken` on); `mask` has bit s set while size s has a run not placed, so the largest size fitting a room
    # is one bit operation away. A bucket holds exactly the runs not placed yet: requests open with the
    # oldest run not placed, which is at the head of its bucket.
    buckets: list[deque[int]] = [deque() for _ in range(cap)]
    for r, run in enumerate(runs):
        if len(run) < cap:
            buckets[len(run)].append(r)
    mask = 0
    for s in range(2, cap):
        if buckets[s]:
            mask |= 1 << s
    taken = 0
    if ones:
        mask |= 2
    placed = bytearray(len(runs))
    bins: list[list[int]] = []
    nxt = 0  # the next run to open a request with (skipping runs placed as fillers)
    carry: list[int] | None = None  # a split run's rest: it opens the next request
    depth = 0  # requests in the chain the current one ends (linked by split runs)
    while True:
        if carry is not None:
            run, carry = carry, None
            depth += 1
        else:
            while nxt < len(runs) and placed[nxt]:
                nxt += 1
            if nxt == len(runs):
                break
            placed[nxt] = 1
            run = runs[nxt]
            if len(run) < cap:
                bucket = buckets[len(run)]
                bucket.popleft()  # this run
                if not bucket:
                    mask &= ~(1 << len(run))
            depth = 1
        size = len(run)
        if size > cap:
            # A user with more objects than a request: its first size % cap objects open this request (which
            # other users fill), then whole requests of its own follow, one after the other. Its long chain
            # is then last in the chunk's order and no other user's request waits at its end.
            head = size % cap or cap
            run, carry = run[:head], run[head:]
            size = head
        current = list(run)
        room = cap - size
        while room and mask:
            fit = mask & ((2 << room) - 1)
            if not fit:
                break
            s = fit.bit_length() - 1
            if s == 1:
                take = min(len(ones) - taken, room)
                current += ones[taken : taken + take]
                taken += take
                if taken == len(ones):
                    mask &= ~2
                room -= take
                continue
            bucket = buckets[s]
            take = min(len(bucket), room // s)
            for _ in range(take):
                r = bucket.popleft()
                placed[r] = 1
                current += runs[r]
            if not bucket:
                mask &= ~(1 << s)
            room -= take * s
        if room and carry is None and depth < max_chain:
            # No whole run fits the room: the first objects of the oldest run left fill it, its rest opens the
            # next request. A run longer than a request is split so only when that costs its user no extra
            # request; else the oldest run left that fits a request is split instead.
            while nxt < len(runs) and placed[nxt]:
                nxt += 1
            r = nxt
            if r < len(runs) and len(runs[r]) >= cap and -(-(len(runs[r]) - room) // cap) == -(-len(runs[r]) // cap):
                heads = [buckets[b][0] for b in range(room + 1, cap) if mask >> b & 1]
                r = min(heads) if heads else len(runs)
            if r < len(runs):
                split = runs[r]
                placed[r] = 1
                if len(split) < cap:
                    bucket = buckets[len(split)]
                    bucket.popleft()  # the oldest of its size
                    if not bucket:
                        mask &= ~(1 << len(split))
                current += split[:room]
                carry = split[room:]
        current.sort()  # source order within the request: each user's order, and consecutive runs stay ranges
        bins.append(current)
    bins.extend(ones[i : i + cap] for i in range(taken, len(ones), cap))
    return bins
