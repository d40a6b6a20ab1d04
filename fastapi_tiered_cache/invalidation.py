"""Purges by path, path prefix and tag: indexes, L1 eviction everywhere, and races.

Stored entries are indexed in Redis sorted sets (member = key, score = expiry time) under
``{namespace}:ix:{tenant}:{kind}:{hash}``: one exact-path index, one index per ancestor
path (for prefix purges) and one per tag. Every insert first trims members that have
expired, so an index never holds more than the live entries that carry it. A purge costs
in proportion to the entries it removes; nothing ever scans the keyspace. The same indexes
are kept in memory for L1, which works with or without Redis.

The classic race -- a purge deletes a key, then a read-through that started before the
purge stores the old value -- is closed in Redis by purge markers (``markers.py``: a purge
marks each index before reading it, and a store refuses, atomically or by deleting again,
when a marker is later than the fill's start) and in L1 by the purges this process has
heard: a fill does not enter L1 if a purge of its path or tags was heard after it began,
and a purge heard later drops it (the L1 copies are indexed here). Purge counts are
exact: the entries that really were deleted (or marked stale).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

from redis.asyncio.cluster import RedisCluster

from .announcements import Announcements
from .codec import decode, encode
from .entry import CachedResponse
from .exceptions import DecodeError, StoreUnavailable
from .fills import Fills
from .markers import MARK, MARKER_TTL, UNINDEX, FillStart, marker_key, members
from .stores import TieredStore, scripts
from .stores.base import Runner, TimeoutRunner
from .unfinished import UnfinishedPurges

__all__ = [
    "MAX_INDEXED_DEPTH",
    "FillStart",
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
Command = tuple[str, tuple[Any, ...]]  # a client method name and its arguments


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
    """Every index an entry stored for ``path`` with ``tags`` belongs to: its exact path,
    each ancestor (a prefix purge reads the prefix's index and its exact one, so an entry
    needs no prefix index of its own path: one sorted set fewer per entry), its tags."""
    path = normalize_path(path)
    names = [exact_index(tenant, path)]
    segments = [part for part in path.split("/") if part]
    ancestors = segments[:-1] if len(segments) <= MAX_INDEXED_DEPTH else segments
    prefix = ""
    for segment in ancestors[:MAX_INDEXED_DEPTH]:
        prefix += "/" + segment
        names.append(f"p:{tenant}:{_digest(prefix)}")
    names.extend(tag_index(tenant, tag) for tag in sorted(set(tags)) if tag)
    return names


class Invalidator:
    """Index entries as they are stored, and purge them by index name.

    - ``store``: the tiers; L1 copies are dropped here, L2 copies deleted (or marked stale).
    - ``client``: the Redis client of L2, or ``None`` (L1 only).
    - ``publish``: coroutine sending a bus message, or ``None`` without a bus.
    - ``run`` / ``purge_run``: the ``Runner`` of fills and of purges (the cache passes its
      store's: budgeted, abandoned if slow to cancel; an open breaker skips fills but not
      purges); ``TimeoutRunner(timeout)`` when omitted.
    - ``timer``: the monotonic clock fills measure their duration with (``FillStart``).
    - ``clock``: wall-clock seconds, the scores of the indexes.
    - ``announce_for``: seconds an announcement that could not be sent is retried
      (``announcements``: the longest an L1 copy lives).

    ``fills`` stores what read-throughs fetched, unless a purge raced them (``fills.py``).
    """

    def __init__(
        self,
        store: TieredStore,
        client: Any,
        namespace: str,
        *,
        publish: Callable[[str, Any], Any] | None = None,
        timeout: float = 0.05,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        run: Runner | None = None,
        purge_run: Runner | None = None,
        announce_for: float = 30.0,
    ) -> None:
        self.store = store
        # Tell the other processes (retried in the background when it cannot be now).
        self.announcements = Announcements(publish, give_up_after=announce_for, timer=timer)
        self.announce = self.announcements.send
        # Purges Redis did not complete, run again when it answers (``purge_all`` is wired
        # by the cache: past a bound they collapse into a purge of everything).
        self.unfinished = UnfinishedPurges(self._purge_again)
        self.run: Runner = run if run is not None else TimeoutRunner(timeout)
        self.purge_run: Runner = purge_run if purge_run is not None else self.run
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.namespace = namespace
        self.timeout = timeout
        self.timer = timer
        self.clock = clock
        self.local: dict[str, set[str]] = {}
        self._prune_at = 2000
        self._memberships = 0  # keys added to ``local`` sets since the last count
        self.recent: OrderedDict[str, int] = OrderedDict()  # index name -> purge sequence
        self.sequence = 0
        self.reset_at = 0  # the sequence when this process last may have missed purges
        self.fills = Fills(self)

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

    # -- purging --------------------------------------------------------------------
    def seen_since(self, names: Iterable[str], since: int) -> bool:
        """Whether a purge touching any of ``names`` was heard after ``since`` (a
        ``sequence`` value taken when a fill began), or purges may have gone unheard
        since (the bus was lost): what keeps a fill out of L1. Counting, not timing:
        immune to clock resolution."""
        return since < self.reset_at or self.heard_since(names, since)

    def heard_since(self, names: Iterable[str], since: int) -> bool:
        """Whether a purge touching any of ``names`` was heard after ``since``: a fill that
        is known to be stale, not worth sending to Redis (whose purge markers refuse a
        raced fill whether or not this process heard the purge)."""
        recent = self.recent
        return any(recent.get(name, -1) > since for name in names)

    def note(self, names: Iterable[str]) -> None:
        self.sequence += 1
        self.store.purges += 1  # an L2 lookup in flight must not promote what it finds
        for name in names:
            self.recent[name] = self.sequence
            self.recent.move_to_end(name)
        while len(self.recent) > _LOG_SIZE:
            self.recent.popitem(last=False)

    def reset(self) -> None:
        """Purges may have gone unheard (the bus was lost or is back): no fill that began
        before now may enter L1, and no lookup in flight may promote what it finds."""
        self.note(())
        self.reset_at = self.sequence
        self.local.clear()

    def evict_local(self, names: Iterable[str], keys: Iterable[str] = ()) -> set[str]:
        """Drop the L1 copies indexed under ``names`` (and ``keys``); returns the keys of
        the copies that were there."""
        dropped = set(keys)
        for name in names:
            dropped |= self.local.pop(name, set())
        l1 = self.store.l1
        if l1 is None:
            return set()
        present = {key for key in dropped if key in l1}
        for key in dropped:
            l1.discard(key)
        return present

    async def purge(self, names: list[str], *, soft: bool = False) -> int:
        """Purge every entry indexed under ``names``; returns how many entries were purged:
        deleted (or marked stale) in Redis, or dropped from this process's L1.

        Raises ``StoreUnavailable`` when Redis could not be reached (the purge is partial:
        L1 copies are gone, L2 copies will expire, and the caller should retry).
        """
        self.note(names)
        purged = self.evict_local(names)
        found: set[str] = set()
        error: Exception | None = None
        if self.client is not None:
            try:
                found, removed = await self._purge_remote(names, soft)
            except StoreUnavailable as exc:
                error = exc
            else:
                purged |= self.evict_local((), found)  # copies promoted from L2: not indexed
                purged |= removed
        await self.announce("purge", [names, sorted(found | purged)])
        if error is not None:
            self.unfinished.add(names, soft=soft)
            raise StoreUnavailable(f"purge incomplete (finished when Redis answers): {error}")
        return len(purged)

    async def purge_keys(self, keys: list[str], names: list[str]) -> set[str]:
        """Delete the entries ``keys`` (one request's); ``names`` (their path) are marked, so
        a fill racing this purge is refused. Returns those of ``keys`` that were stored."""
        self.note(names)
        purged = self.evict_local((), keys)
        error: Exception | None = None
        if self.client is not None:
            try:
                await self._mark(names)
                replies = await self.pipelined([("delete", (key,)) for key in keys])
            except StoreUnavailable as exc:
                error = exc
            else:
                purged |= {key for key, reply in zip(keys, replies, strict=True) if reply}
        await self.announce("purge", [[], keys])
        if error is not None:
            self.unfinished.add(names)  # the whole path, when Redis answers: more, not less
            raise StoreUnavailable(f"purge incomplete (finished when Redis answers): {error}")
        return purged

    async def _mark(self, names: list[str]) -> list[list[Any]]:
        """Mark each index of ``names`` as purged now, and return its members (``MARK``)."""
        indexes = [self.redis_key(name) for name in names]
        if not indexes:
            return []
        ttl = int(MARKER_TTL * 1000)
        if self.cluster:
            replies = await self.pipelined(
                [("eval", (MARK, 2, index, marker_key(index), ttl)) for index in indexes]
            )
            return [reply[0] for reply in replies]
        markers = [marker_key(index) for index in indexes]
        script = ("eval", (MARK, 2 * len(indexes), *indexes, *markers, ttl))
        return list((await self.pipelined([script]))[0])

    async def _purge_remote(self, names: list[str], soft: bool) -> tuple[set[str], set[str]]:
        """Mark and read the indexes, then delete (or mark stale) their entries: the keys
        found, and those really deleted (or marked).

        Then each index forgets the members read, unless re-added since (``UNINDEX``): a
        fill that started after the marker (new data) may have stored the same key again
        meanwhile, and a later purge must still find it."""
        found = [members(reply) for reply in await self._mark(names)]
        ordered = sorted({key for pairs in found for key, _ in pairs})
        removed: set[str] = set()
        if ordered and soft:
            removed = await self._mark_stale(ordered)
        elif ordered:
            replies = await self.pipelined([("delete", (key,)) for key in ordered])
            removed = {key for key, reply in zip(ordered, replies, strict=True) if reply}
        if not soft:
            indexes = [self.redis_key(name) for name in names]
            unindex = [
                ("eval", (UNINDEX, 1, index, *(part for pair in pairs for part in pair)))
                for index, pairs in zip(indexes, found, strict=True)
                if pairs
            ]
            await self.pipelined(unindex)
        return set(ordered), removed

    async def pipelined(self, commands: list[Command]) -> list[Any]:
        """Run single-key commands in non-transactional pipelines of bounded size: one
        connection and a few round trips however many entries a purge touches (and
        cluster-safe: the client splits a pipeline by node)."""
        replies: list[Any] = []
        for start in range(0, len(commands), _BATCH):
            batch = commands[start : start + _BATCH]
            replies.extend(await self.purge_run(partial(self.pipeline, batch), "purge", 20))
        return replies

    async def pipeline(self, commands: list[Command]) -> list[Any]:
        """One pipeline of ``commands``, scripts sent by SHA (``stores.scripts``), on a
        pooled connection: a purge's replies (an index's members, the entries of a soft
        purge) can be large, and the wire's lookups would wait behind them."""
        return await scripts.pipeline(self.client, commands, on_wire=False)

    async def _mark_stale(self, keys: list[str]) -> set[str]:
        """Soft purge: keep each entry but make it stale, so it can still be served stale.
        Returns the keys marked."""
        values = await self.pipelined([("get", (key,)) for key in keys])
        writes: list[tuple[str, bytes]] = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                record = decode(key, value)
            except DecodeError:
                continue
            if isinstance(record, CachedResponse):
                # Stale, and never served stale-while-revalidate: the next request must
                # revalidate (or refetch); only stale-if-error may still show the old body.
                stale = replace(
                    record,
                    fresh_for=0.0,
                    stale_for=record.fresh_for + record.stale_for,
                    stale_while_revalidate=0.0,
                )
                writes.append((key, encode(key, stale)))
        if not writes:
            return set()
        # SET ... KEEPTTL XX through the pipeline's generic command interface.
        replies = await self.pipelined(
            [("execute_command", ("SET", key, value, "KEEPTTL", "XX")) for key, value in writes]
        )
        return {key for (key, _), reply in zip(writes, replies, strict=True) if reply}

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

    async def _purge_again(self, names: list[str], soft: bool) -> None:
        """Run an unfinished purge again (raises ``StoreUnavailable`` while Redis fails):
        the entries still indexed go, and so do the copies any process took of them."""
        found, _ = await self._purge_remote(names, soft)
        self.note(names)
        self.evict_local(names, found)
        await self.announce("purge", [names, sorted(found)])

    async def close(self) -> None:
        """Stop the retries (announcements, unfinished purges) of this loop."""
        await self.announcements.close()
        await self.unfinished.close()
