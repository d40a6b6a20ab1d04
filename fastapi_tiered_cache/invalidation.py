"""Purges by path, path prefix and tag: indexes, L1 eviction everywhere, and races.

Stored entries are indexed in Redis sorted sets (member = key, score = expiry time) under
``{namespace}:ix:{tenant}:{kind}:{hash}``: one exact-path index, one index per ancestor
path (for prefix purges) and one per tag. Every insert first trims members that have
expired, so an index never holds more than the live entries that carry it. A purge costs
in proportion to the entries it removes; nothing ever scans the keyspace. The same indexes
are kept in memory for L1, which works with or without Redis.

The classic race -- a purge deletes a key, then a read-through that started before the
purge stores the old value -- is closed twice: a fetch does not store if a purge touching
its path or tags was seen after the fetch began, and the purging process repeats its purge
once ``race_window`` seconds later, catching a store that finished elsewhere before the
bus message arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

from redis.asyncio.cluster import RedisCluster

from .codec import decode, encode
from .entry import CachedResponse
from .exceptions import DecodeError, StoreUnavailable
from .stores import TieredStore
from .stores.base import Runner, TimeoutRunner

__all__ = [
    "MAX_INDEXED_DEPTH",
    "Invalidator",
    "exact_index",
    "index_names",
    "parent_path",
    "prefix_index",
    "tag_index",
]

logger = logging.getLogger("fastapi_tiered_cache")

MAX_INDEXED_DEPTH = 16  # ancestors indexed per entry; deeper prefixes purge a little more
_LOG_SIZE = 100_000  # purged index names remembered for racing fetches
_BATCH = 500  # commands per pipeline in a purge
# KEYS[1] = index; ARGV = now, expires_at, member, ttl seconds. Trim, add, extend life.
_INDEX_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 1
"""
# The same for every index of an entry at once (KEYS = the indexes): one command per store
# where all keys live on one node (not a cluster, where each index goes on its own).
_INDEX_ADD_ALL = """
for _, index in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[1])
  redis.call('ZADD', index, ARGV[2], ARGV[3])
  if redis.call('TTL', index) < tonumber(ARGV[4]) then
    redis.call('EXPIRE', index, ARGV[4])
  end
end
return #KEYS
"""


def normalize_path(path: str) -> str:
    """``/heroes/`` and ``/heroes`` name the same collection for purging."""
    return path.rstrip("/") or "/"


def parent_path(path: str) -> str | None:
    """``/heroes/2`` -> ``/heroes``; the root has no parent."""
    path = normalize_path(path)
    if path == "/":
        return None
    return path.rsplit("/", 1)[0] or "/"


def _digest(text: str) -> str:
    # Index names hold a digest of the path, not the path: bounded size whatever the URL.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def exact_index(tenant: str, path: str) -> str:
    """The index of every entry stored for exactly ``path`` (any query, variant, scope)."""
    return f"x:{tenant}:{_digest(normalize_path(path))}"


def prefix_index(tenant: str, prefix: str) -> str:
    """The index of every entry stored at or below ``prefix`` (whole segments)."""
    segments = [part for part in normalize_path(prefix).split("/") if part]
    return f"p:{tenant}:{_digest('/' + '/'.join(segments[:MAX_INDEXED_DEPTH]))}"


def tag_index(tenant: str, tag: str) -> str:
    return f"t:{tenant}:{_digest(tag)}"


def index_names(tenant: str, path: str, tags: Iterable[str]) -> list[str]:
    """Every index an entry stored for ``path`` with ``tags`` belongs to."""
    path = normalize_path(path)
    names = [exact_index(tenant, path)]
    segments = [part for part in path.split("/") if part][:MAX_INDEXED_DEPTH]
    prefix = ""
    for segment in segments:
        prefix += "/" + segment
        names.append(f"p:{tenant}:{_digest(prefix)}")
    names.extend(tag_index(tenant, tag) for tag in sorted(set(tags)) if tag)
    return names


class Invalidator:
    """Index entries as they are stored, and purge them by index name.

    - ``store``: the tiers; L1 copies are dropped here, L2 copies deleted (or marked stale).
    - ``client``: the Redis client of L2, or ``None`` (L1 only).
    - ``publish``: coroutine sending a bus message, or ``None`` without a bus.
    - ``run`` / ``purge_run``: the ``Runner`` of index writes and of purges (the cache
      passes its store's: budgeted, abandoned if slow to cancel; an open breaker skips
      index writes but not purges); ``TimeoutRunner(timeout)`` when omitted.
    """

    def __init__(
        self,
        store: TieredStore,
        client: Any,
        namespace: str,
        *,
        publish: Callable[[str, Any], Any] | None = None,
        timeout: float = 0.05,
        race_window: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        run: Runner | None = None,
        purge_run: Runner | None = None,
    ) -> None:
        self.store = store
        self.run: Runner = run if run is not None else TimeoutRunner(timeout)
        self.purge_run: Runner = purge_run if purge_run is not None else self.run
        self.client = client
        self.namespace = namespace
        self.publish = publish
        self.timeout = timeout
        self.race_window = race_window
        self.timer = timer
        self.clock = clock
        self.local: dict[str, set[str]] = {}
        self._prune_at = 2000
        self._memberships = 0  # keys added to ``local`` sets since the last count
        self.recent: OrderedDict[str, int] = OrderedDict()  # index name -> purge sequence
        self.sequence = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def redis_key(self, name: str) -> str:
        kind, tenant, rest = name.split(":", 2)
        digest = hashlib.blake2b(rest.encode("utf-8", "surrogatepass"), digest_size=12)
        return f"{self.namespace}:ix:{tenant}:{kind}:{digest.hexdigest()}"

    # -- recording ------------------------------------------------------------------
    def record_local(self, key: str, names: Iterable[str]) -> None:
        """Index an L1 entry (kept small: pruned against L1 when it outgrows it).

        The bound counts memberships, not index names: one path with endless query strings
        is one name whose set would otherwise keep every key ever stored there.
        """
        for name in names:
            self.local.setdefault(name, set()).add(key)
            self._memberships += 1
        if self._memberships > self._prune_at:
            self._prune_local()
            # Amortised: the next prune waits until the index has doubled again.
            self._memberships = sum(len(keys) for keys in self.local.values())
            l1 = self.store.l1
            self._prune_at = 2 * max(self._memberships, len(l1) if l1 is not None else 0, 1000)

    def _prune_local(self) -> None:
        l1 = self.store.l1
        for name in list(self.local):
            live = {key for key in self.local[name] if l1 is not None and key in l1}
            if live:
                self.local[name] = live
            else:
                del self.local[name]

    def index_commands(
        self, key: str, names: Iterable[str], ttl: float
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The commands that index an L2 entry, for a pipeline: one EVAL for all of them, or
        on a cluster one per index, which it routes by that key (Redis caches the script)."""
        now = self.clock()
        seconds = int(ttl) + 2
        indexes = [self.redis_key(name) for name in names]
        if not indexes:
            return []
        if not isinstance(self.client, RedisCluster):
            args = (now, now + ttl, key, seconds)
            return [("eval", (_INDEX_ADD_ALL, len(indexes), *indexes, *args))]
        return [("eval", (_INDEX_ADD, 1, index, now, now + ttl, key, seconds)) for index in indexes]

    # -- purging --------------------------------------------------------------------
    def seen_since(self, names: Iterable[str], since: int) -> bool:
        """Whether a purge touching any of ``names`` was seen after ``since`` (a ``sequence``
        value taken when a fetch began). Counting, not timing: immune to clock resolution."""
        recent = self.recent
        return any(recent.get(name, -1) > since for name in names)

    def note(self, names: Iterable[str]) -> None:
        self.sequence += 1
        for name in names:
            self.recent[name] = self.sequence
            self.recent.move_to_end(name)
        while len(self.recent) > _LOG_SIZE:
            self.recent.popitem(last=False)

    def evict_local(self, names: Iterable[str], keys: Iterable[str] = ()) -> set[str]:
        """Drop the L1 copies indexed under ``names`` (and ``keys``); returns the keys."""
        dropped = set(keys)
        for name in names:
            dropped |= self.local.pop(name, set())
        if self.store.l1 is not None:
            for key in dropped:
                self.store.l1.discard(key)
        return dropped

    async def purge(self, names: list[str], *, soft: bool = False, repeat: bool = True) -> int:
        """Purge every entry indexed under ``names``; returns how many keys were purged.

        Raises ``StoreUnavailable`` when Redis could not be reached (the purge is partial:
        L1 copies are gone, L2 copies will expire, and the caller should retry).
        """
        self.note(names)
        keys = self.evict_local(names)
        error: Exception | None = None
        if self.client is not None:
            try:
                found = await self._purge_remote(names, soft)
            except StoreUnavailable as exc:
                error = exc
            else:
                self.evict_local((), found)  # copies promoted from L2 were not indexed here
                keys |= found
        if self.publish is not None:
            with contextlib.suppress(Exception):
                await self.publish("purge", [names, sorted(keys)])
        if repeat and self.client is not None:
            self._later(names, soft)
        if error is not None:
            raise StoreUnavailable(f"purge incomplete: {error}")
        return len(keys)

    async def _purge_remote(self, names: list[str], soft: bool) -> set[str]:
        index_keys = [self.redis_key(name) for name in names]
        members = await self._pipelined([("zrange", (index, 0, -1)) for index in index_keys])
        keys = {m.decode() if isinstance(m, bytes) else str(m) for ms in members for m in ms}
        if keys and soft:
            await self._mark_stale(sorted(keys))
        elif keys:
            await self._pipelined([("delete", (key,)) for key in sorted(keys)])
        if not soft:
            await self._pipelined([("delete", (index,)) for index in index_keys])
        return keys

    async def _pipelined(self, commands: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run single-key commands in non-transactional pipelines of bounded size: one
        connection and a few round trips however many entries a purge touches (and
        cluster-safe: the client splits a pipeline by node)."""
        replies: list[Any] = []
        for start in range(0, len(commands), _BATCH):
            batch = commands[start : start + _BATCH]
            replies.extend(await self.purge_run(partial(self._pipeline, batch), "purge", 20))
        return replies

    async def _pipeline(self, commands: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return list(await pipe.execute())

    async def _mark_stale(self, keys: list[str]) -> None:
        """Soft purge: keep each entry but make it stale, so it can still be served stale."""
        values = await self._pipelined([("get", (key,)) for key in keys])
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                record = decode(key, value)
            except DecodeError:
                continue
            if isinstance(record, CachedResponse):
                stale = replace(
                    record, fresh_for=0.0, stale_for=record.fresh_for + record.stale_for
                )
                writes.append(("set", (key, encode(key, stale))))
        if writes:
            # SET ... KEEPTTL XX through the pipeline's generic command interface.
            await self._pipelined(
                [
                    ("execute_command", ("SET", key, value, "KEEPTTL", "XX"))
                    for _, (key, value) in writes
                ]
            )

    def _later(self, names: list[str], soft: bool) -> None:
        async def again() -> None:
            await asyncio.sleep(self.race_window)
            with contextlib.suppress(Exception):
                await self.purge(names, soft=soft, repeat=False)

        task = asyncio.get_running_loop().create_task(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_purge_message(self, data: Any) -> None:
        """A purge announced by another process: forget our L1 copies and log it."""
        try:
            names, keys = data
            names = [str(name) for name in names]
            keys = [str(key) for key in keys]
        except (TypeError, ValueError):
            return
        self.note(names)
        self.evict_local(names, keys)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
