"""Fleet-wide numbers: each process's counters in Redis, summed when asked.

``Stats`` counts what one process did. Every ``TIERED_CACHE_STATS_INTERVAL`` seconds (5)
each process writes its counters so far, with its L1 size and L2 faults, to
``{namespace}:stats:{process}`` (living three intervals, so a process that stopped drops
out) and notes itself in the sorted set ``{namespace}:stats:processes`` (scored by report
time). ``read_fleet`` reads the reports of the processes that reported within three
intervals and sums them: the ``stats`` of the admin router and of the CLI. A report is a
few hundred bytes of JSON; N processes cost Redis N small writes per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

# Bound at import: the report runs beside the app's requests, and must not show up in
# what an app's test watches of its own (a mocked ``json.dumps``, say).
from json import dumps, loads
from typing import Any

from .exceptions import StoreUnavailable
from .metrics import Stats
from .stores.base import Runner
from .tasks import finish, raise_if_cancelled

__all__ = ["FleetReporter", "read_fleet"]

logger = logging.getLogger("fastapi_tiered_cache")
_LIVES = 3  # intervals a report counts for


def _processes_key(namespace: str) -> str:
    return f"{namespace}:stats:processes"


def _report_key(namespace: str, process: str) -> str:
    return f"{namespace}:stats:{process}"


class FleetReporter:
    """Writes this process's counters to Redis every ``every`` seconds.

    - ``client``: the cache's Redis client; ``run``: its ``Runner`` (budget and breaker).
    - ``stats``: the process's counters; ``gauges()``: its L1 entries and bytes and its L2
      faults, read at each report.
    """

    def __init__(
        self,
        client: Any,
        namespace: str,
        stats: Stats,
        gauges: Callable[[], dict[str, int]],
        *,
        run: Runner,
        every: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.stats = stats
        self.gauges = gauges
        self.run = run
        self.every = every
        self.clock = clock
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.reports = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Report now and every ``every`` seconds (idempotent; needs a running loop)."""
        loop = asyncio.get_running_loop()
        task = self._task
        # Another loop's task died with that loop (a test client's, say): start one here.
        if self.every > 0 and (task is None or task.done() or task.get_loop() is not loop):
            self._task = loop.create_task(self._loop(), name="ftc-stats")

    def payload(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "pid": os.getpid(),
            "at": self.clock(),
            **self.stats.export(),
            **self.gauges(),
        }

    async def report(self) -> None:
        """Write the report now (raises ``StoreUnavailable`` when Redis did not take it)."""
        now = self.clock()
        data = dumps(self.payload(), separators=(",", ":"))
        life = max(1, int(self.every * _LIVES * 1000))
        processes = _processes_key(self.namespace)

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(_report_key(self.namespace, self.process), data, px=life)
            pipe.zadd(processes, {self.process: now})
            pipe.zremrangebyscore(processes, "-inf", now - self.every * _LIVES)
            pipe.pexpire(processes, life)
            await pipe.execute()

        await self.run(write, "stats report", 2)
        self.reports += 1

    async def _loop(self) -> None:
        while True:
            raise_if_cancelled()
            with contextlib.suppress(StoreUnavailable):
                await self.report()
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        """Stop reporting (the report expires on its own); only this loop's task."""
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            await finish([self._task])
            self._task = None


async def read_fleet(
    client: Any, namespace: str, run: Runner, every: float, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """The reports of every process that reported within the last three intervals,
    summed: ``processes``, then what ``Stats.snapshot`` gives, ``l1`` and ``l2_faults``."""
    processes = _processes_key(namespace)

    async def read() -> list[Any]:
        names = await client.zrangebyscore(processes, clock() - every * _LIVES, "+inf")
        if not names:
            return []
        pipe = client.pipeline(transaction=False)
        for name in names:
            process = name.decode() if isinstance(name, bytes) else str(name)
            pipe.get(_report_key(namespace, process))
        return list(await pipe.execute())

    reports = []
    for raw in await run(read, "stats read", 4):
        if raw is None:
            continue
        with contextlib.suppress(ValueError, TypeError):
            reports.append(loads(raw))
    return summarize(reports)


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of process reports (``FleetReporter.payload``)."""
    merged = Stats.merged(reports)
    return {
        "processes": len(reports),
        **merged.snapshot(),
        "l1": {
            "entries": sum(int(r.get("l1_entries", 0)) for r in reports),
            "bytes": sum(int(r.get("l1_bytes", 0)) for r in reports),
        },
        "l2_faults": sum(int(r.get("l2_faults", 0)) for r in reports),
    }
