"""Storing what a read-through fetched: in Redis only if no purge raced it, and where from.

A fill starts (``FillStart``) when its lookup misses, before the origin reads anything.
Its store refuses, or deletes again, what a purge that followed that start may have
changed: one script off a cluster, store-then-check on one (``markers.py`` gives the
argument). The same pipeline records the ``scheme://host`` of what was stored, so a
purge of a relative URL can be resolved against every origin seen (``purge.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from .codec import encode
from .entry import Record
from .exceptions import StoreUnavailable
from .markers import FILL, INDEX_CHECK, MARKER_TTL, FillStart, marker_key, raced
from .stores import batching

if TYPE_CHECKING:
    from .invalidation import Invalidator

__all__ = ["MAX_ORIGINS", "PROVISIONAL_MS", "Fills"]

logger = logging.getLogger("fastapi_tiered_cache")

Command = tuple[str, tuple[Any, ...]]  # a client method name and its arguments
MAX_ORIGINS = 64  # scheme://host values recorded for resolving relative purge URLs
PROVISIONAL_MS = 2000  # most a cluster fill's entry lives in Redis before its check passed
# KEYS[1] = an entry; ARGV = SHA-1 of the value a fill stored, its full life (ms). Extend
# the entry's life only if it still holds that value.
EXTEND = """
local value = redis.call('GET', KEYS[1])
if value and redis.sha1hex(value) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] = the origins set; ARGV = origin, most members. Add unless full.
_ADD_ORIGIN = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
return redis.call('SADD', KEYS[1], ARGV[1])
"""


class Fills:
    """The fills of one process, through its ``Invalidator`` (Redis client, runners, index
    names, L1 eviction and bus).

    Counters: ``raced`` (fills not stored because a purge may have raced them).
    """

    def __init__(self, invalidator: Invalidator) -> None:
        self.invalidator = invalidator
        self.raced = 0
        self.origins_key = f"{invalidator.namespace}:origins"
        self.recorded: set[str] = set()  # origins this process has stored responses of

    def start(self, read_at: float, server_us: int | None = None) -> FillStart:
        """A fill starting now, after a lookup sent at ``read_at`` that said ``server_us``."""
        return FillStart(self.invalidator.sequence, read_at, server_us)

    async def begin(self, read_at: float) -> FillStart:
        """A fill that no lookup preceded: off a cluster, ask Redis the time (the atomic
        store needs it); on a cluster, or when Redis does not answer, the fill's own
        duration will do (see ``markers``)."""
        sequence = self.invalidator.sequence
        if self.invalidator.client is None or self.invalidator.cluster:
            return FillStart(sequence, read_at)
        try:
            seconds, micros = await self.invalidator.run(
                lambda: self.invalidator.client.time(), "TIME"
            )
        except StoreUnavailable:
            return FillStart(sequence, read_at)
        return FillStart(sequence, read_at, int(seconds) * 1_000_000 + int(micros))

    def atomic(self, start: FillStart) -> bool:
        """Whether ``fill`` stores in one script, so a command may follow it in its pipeline."""
        return start.server_us is not None and not self.invalidator.cluster

    async def fill(
        self,
        entries: list[tuple[str, Record, float]],
        member: str,
        names: list[str],
        start: FillStart,
        then: list[Command] | None = None,
        origin: str | None = None,
    ) -> bool:
        """Store ``entries`` in Redis and index ``member`` under ``names``, unless a purge of
        any of ``names`` may have followed ``start``; False when refused (or deleted again).

        ``then`` (only where ``atomic``) rides in the same pipeline, after the store, with
        the recording of the entry's ``origin``. Raises ``StoreUnavailable`` when Redis
        could not be asked.
        """
        encoded = [
            (key, encode(key, record), int(ttl * 1000))
            for key, record, ttl in entries
            if int(ttl * 1000) > 0
        ]
        if not encoded:
            return False
        ttl = max(ttl for _, _, ttl in entries)
        indexes = [self.invalidator.redis_key(name) for name in names]
        then = [*(then or []), *self.origin_commands(origin)]
        if self.atomic(start):
            stored = await self._fill_atomic(encoded, member, indexes, start, ttl, then)
        else:
            stored = await self._fill_then_check(encoded, member, indexes, start, ttl, then)
        if not stored:
            self.raced += 1
            logger.debug("fill not stored: a purge raced it", extra={"event": "fill_raced"})
            return False
        residents = self.invalidator.store.residents
        for key, _, ms in encoded:
            residents.note(key, ms / 1000)  # in Redis now: its next lookup can be a GET
        return True

    def _index_args(self, member: str, ttl: float) -> tuple[float, float, str, int]:
        now = self.invalidator.clock()
        return now, now + ttl, member, int(ttl) + 2

    async def _fill_atomic(
        self,
        encoded: list[tuple[str, bytes, int]],
        member: str,
        indexes: list[str],
        start: FillStart,
        ttl: float,
        then: list[Command],
    ) -> bool:
        keys = [*(key for key, _, _ in encoded), *indexes, *(marker_key(i) for i in indexes)]
        values = [part for _, value, ms in encoded for part in (value, ms)]
        args = [len(encoded), start.server_us, int(MARKER_TTL * 1_000_000)]
        script = ("eval", (FILL, len(keys), *keys, *args, *self._index_args(member, ttl), *values))
        commands = [script, *then]
        invalidator = self.invalidator
        if all(name == "eval" for name, _ in then):
            # One script, one command (the lease's release after the store, atomically):
            # half the client's work of a pipeline of two.
            run = partial(batching.run_scripts, invalidator.client, commands)
        else:
            run = partial(invalidator.pipeline, commands)
        replies = await invalidator.run(run, "fill", 2)
        return bool(replies[0])

    async def _fill_then_check(
        self,
        encoded: list[tuple[str, bytes, int]],
        member: str,
        indexes: list[str],
        start: FillStart,
        ttl: float,
        then: list[Command],
    ) -> bool:
        """Index, store provisionally, check the markers again, then the full life.

        - **Indexed first**: an entry is never in Redis without being in its indexes, so
          every purge that follows finds it, and names it in its bus message: a copy
          another process took from Redis meanwhile (not in that process's own index of
          L1) is dropped by key. The first check also spares the store of a fill a purge
          already followed.
        - **Provisional**: until the second check has passed, an entry lives
          ``PROVISIONAL_MS`` at most. A purge may have deleted the entry before it was
          stored (its marker says so); a check that never answers (a timeout under load)
          must not leave that old body in Redis for its whole life.
        """
        keys = [key for key, _, _ in encoded]
        sets = [
            ("execute_command", ("SET", key, value, "PX", min(ms, PROVISIONAL_MS)))
            for key, value, ms in encoded
        ]
        args = self._index_args(member, ttl)
        checks = [("eval", (INDEX_CHECK, 2, i, marker_key(i), *args)) for i in indexes]
        invalidator = self.invalidator
        pipeline, run, timer = invalidator.pipeline, invalidator.run, invalidator.timer
        if start.write:  # indexed first all the same, so every purge that follows finds it
            await run(partial(pipeline, checks), "fill index", 2)
            full = [
                ("execute_command", ("SET", key, value, "PX", ms)) for key, value, ms in encoded
            ]
            await run(partial(pipeline, [*full, *then]), "fill", 2)
            return True
        if raced(await run(partial(pipeline, checks), "fill index", 2), timer() - start.read_at):
            return False
        try:
            await run(partial(pipeline, [*sets, *then]), "fill", 2)
            replies = await run(partial(pipeline, checks), "fill check", 2)
        except StoreUnavailable:
            # Maybe stored, indexed but not judged; Redis is failing, so the request does
            # not wait for a deletion (the provisional life bounds the entry), and copies
            # other processes took meanwhile are dropped once the bus can say so.
            self._drop_local(keys)
            await invalidator.announce("purge", [[], keys], now=False)
            raise
        if raced(replies, timer() - start.read_at):
            await self._withdraw(keys)
            return False
        # Judged: the full life, for the value this fill stored only (a purge and a newer
        # fill may have replaced it since, and that one is judged by its own check).
        extend = [
            ("eval", (EXTEND, 1, key, hashlib.sha1(value, usedforsecurity=False).hexdigest(), ms))
            for key, value, ms in encoded
            if ms > PROVISIONAL_MS
        ]
        if extend:
            with contextlib.suppress(StoreUnavailable):  # it only expires sooner: a miss
                await run(partial(pipeline, extend), "fill extend", 2)
        return True

    def _drop_local(self, keys: list[str]) -> None:
        """Drop this process's copies of ``keys``, and keep a lookup in flight from
        promoting what it read (it may be the body just withdrawn)."""
        self.invalidator.note(())
        self.invalidator.evict_local((), keys)

    async def _withdraw(self, keys: list[str]) -> None:
        """Delete a fill's entries again, and make every process drop any copy it took
        meanwhile (best effort: a provisional entry expires soon anyway)."""
        self._drop_local(keys)
        with contextlib.suppress(StoreUnavailable):
            await self.invalidator.pipelined([("delete", (key,)) for key in keys])
        await self.invalidator.announce("purge", [[], keys])

    def origin_commands(self, origin: str | None) -> list[Command]:
        """The command recording ``origin`` (``scheme://host``) in Redis the first time this
        process stores one of its responses (a bounded set: hosts are client input)."""
        if not origin or origin in self.recorded or len(self.recorded) >= MAX_ORIGINS:
            return []
        self.recorded.add(origin)
        if self.invalidator.client is None:
            return []
        return [("eval", (_ADD_ORIGIN, 1, self.origins_key, origin, MAX_ORIGINS))]

    async def origins(self) -> list[str]:
        """Every origin whose responses were stored (fleet-wide with Redis), sorted."""
        found = set(self.recorded)
        if self.invalidator.client is not None:
            members = await self.invalidator.purge_run(
                lambda: self.invalidator.client.smembers(self.origins_key), "SMEMBERS"
            )
            found |= {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        return sorted(found)
