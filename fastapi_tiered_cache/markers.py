"""Purge markers: why a read-through that raced a purge never stores what it read.

The race: a request misses and calls the origin, which reads the old data; a write then
changes the data and purges the entry; finally the first request stores the old body,
with a full fresh lifetime, after the purge. Every process would then serve it.

1. **A purge leaves a marker before it reads its index.** For each index it purges (a
   path, a prefix, a tag), the purge sets ``{<index key>}:purged`` to the Redis server
   time (``TIME``, in microseconds), then reads the index's members, in one script per
   index (one for all of them off a cluster). The marker shares the index's hash slot.
2. **A fill knows when it started**, in Redis time: the lookup that missed returns
   ``TIME`` in its own round trip (or, where no lookup preceded the origin call, one
   ``TIME`` is asked first). A fill starts before the origin reads anything.
3. **Standalone and Sentinel: one script stores.** It refuses when any index of the entry
   (its path, every ancestor, every tag, including tags only the response revealed) has
   a marker at or after the fill's start; else it sets the entry and adds it to those
   indexes. Script and purge are atomic on one server: if the store runs first, the
   purge's read of the index finds the entry and deletes it; if the purge runs first, the
   store sees its marker. Either way no old body outlives the purge.
4. **Cluster: index, store, then check.** An entry and its indexes live on different
   nodes, so no script sees both. Per index, one script adds the entry to the index and
   returns the marker with that node's ``TIME``; then the entry is stored; then the same
   script runs again. The fill measured its own duration ``d`` (its process's monotonic
   clock, from before its lookup to the reply): a marker later than ``node time - d`` may
   be a purge after the fill began. Seen by the first check, nothing is stored; by the
   second, the entry is deleted again and the deletion published, so no process keeps a
   copy. A purge sets its marker before reading its index, and the entry is in its index
   before it exists, so every purge either finds the entry (and names it in its bus
   message, which drops copies other processes took) or is seen by the second check. No
   two machines' clocks are ever compared. Until its second check passes, the entry is
   stored for ``PROVISIONAL_MS`` (``fills``) only, then given its full life: a check that
   never answers cannot leave a body a purge already passed for its whole life.

Markers live ``MARKER_TTL`` seconds: a fill that took longer than that from its start to
its store is not stored (the markers that could refute it may be gone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MARKER_TTL", "FillStart", "marker_key", "members", "raced"]

MARKER_TTL = 120.0  # seconds a purge marker lives: the longest fill that may still store

# KEYS = n indexes, then their n markers; ARGV[1] = marker life, ms. Returns each index's
# members with their scores. A marker never moves backwards (a clock stepped back by NTP).
MARK = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local n = #KEYS / 2
local found = {}
for i = 1, n do
  local old = tonumber(redis.call('GET', KEYS[n + i]) or '0')
  -- As an integer string: Lua would write a number this large in %.14g, rounded.
  redis.call('SET', KEYS[n + i], string.format('%.0f', math.max(now, old)), 'PX', ARGV[1])
  found[i] = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
end
return found
"""

# KEYS = e entries, n indexes, n markers. ARGV = e, fill start (us), longest fill (us),
# now and expiry of the member (the app's clock, the index scores), member, index life
# (s), then (value, ms) per entry: ARGV[6 + 2i], ARGV[7 + 2i]. 0: refused (a purge raced
# the fill, or it took longer than markers live); 1: stored.
FILL = """
if redis.replicate_commands then redis.replicate_commands() end
local e = tonumber(ARGV[1])
local n = (#KEYS - e) / 2
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local start = tonumber(ARGV[2])
if now - start > tonumber(ARGV[3]) then return 0 end
for i = 1, n do
  local marker = redis.call('GET', KEYS[e + n + i])
  if marker and tonumber(marker) >= start then return 0 end
end
for i = 1, e do
  redis.call('SET', KEYS[i], ARGV[6 + 2 * i], 'PX', ARGV[7 + 2 * i])
end
for i = 1, n do
  local index = KEYS[e + i]
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[4])
  redis.call('ZADD', index, ARGV[5], ARGV[6])
  if redis.call('TTL', index) < tonumber(ARGV[7]) then
    redis.call('EXPIRE', index, ARGV[7])
  end
end
return 1
"""

# After a purge deleted the entries it read, KEYS[1] = an index, ARGV = (member, score) as
# read: remove each member whose score is unchanged. A member re-added since (the same key
# stored again by a fill that started after the marker: new data) has a new score and
# stays, so the next purge still finds it.
UNINDEX = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""

# A cluster's second step, per index (KEYS = index, its marker): add the member as FILL
# does, and return the marker ('' if none) and this node's time (us).
INDEX_CHECK = """
if redis.replicate_commands then redis.replicate_commands() end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
local t = redis.call('TIME')
return {redis.call('GET', KEYS[2]) or '', t[1] * 1000000 + t[2]}
"""


def marker_key(index_key: str) -> str:
    """The marker of an index: in the index's hash slot (the index key as hash tag)."""
    return f"{{{index_key}}}:purged"


@dataclass(frozen=True, slots=True)
class FillStart:
    """When a fill began to read what it may store: a purge after that may have changed it.

    - ``sequence``: the purges this process had heard (``Invalidator.sequence``).
    - ``read_at``: the coherence timer (monotonic seconds) before the lookup or the origin.
    - ``server_us``: Redis ``TIME`` at the lookup, in microseconds, when known.
    - ``write``: the value is the caller's (``set``), not read from anywhere: a purge
      during it is concurrent with it, and either order is a valid outcome, so a cluster
      stores it without the marker checks, which cannot tell the write's own purge (just
      before it began) from a later one on a jittery network (``fills``).
    """

    sequence: int
    read_at: float
    server_us: int | None = None
    write: bool = False


def members(reply: Sequence[Any]) -> list[tuple[str, bytes]]:
    """``(member, score)`` pairs of one index as ``MARK`` returned it (the score as Redis
    wrote it, for ``UNINDEX`` to compare)."""
    flat = list(reply)
    pairs = []
    for member, score in zip(flat[::2], flat[1::2], strict=True):
        name = member.decode() if isinstance(member, bytes) else str(member)
        pairs.append((name, score if isinstance(score, bytes) else str(score).encode()))
    return pairs


def raced(replies: Sequence[Any], elapsed: float) -> bool:
    """Whether a cluster fill's index checks (``INDEX_CHECK`` replies) saw a marker that
    may be later than the fill's start, ``elapsed`` seconds before (its own clock)."""
    if elapsed > MARKER_TTL:
        return True
    for reply in replies:
        marker, now = reply
        if marker not in (b"", "", None) and int(marker) >= int(now) - elapsed * 1_000_000:
            return True
    return False
