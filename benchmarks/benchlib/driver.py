"""A minimal in-process ASGI driver and the interleaved timing harness.

No server and no HTTP client: the scope is a dict built here, ``receive`` hands over an
empty request body (then waits for the response to finish before saying
``http.disconnect``, as a server would), and ``send`` only notes what it got. The time of
one request is ``perf_counter_ns`` around ``await app(scope, receive, send)``: everything
the app does for that request, including work after the last body byte (our store).

Variants are measured in rounds; each round runs one batch of every variant in a shuffled
order, so drift of the machine (frequency, noisy neighbours) is shared by all variants.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT = {"type": "http.disconnect"}

# What a browser-ish client sends; every variant gets the same headers (the identity
# variants add theirs). wrk sends only Host, which the HTTP mode reports separately.
BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0 (issue-9)"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"connection", b"keep-alive"),
)

_perf = time.perf_counter_ns


class Exchange:
    """One request's ``receive`` and ``send``."""

    __slots__ = ("body_len", "done", "headers", "requested", "status", "t_last", "waiter")

    def __init__(self) -> None:
        self.requested = False
        self.done = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_len = 0
        self.t_last = 0
        self.waiter: asyncio.Future[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if not self.requested:
            self.requested = True
            return REQUEST
        if not self.done:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers", [])
        elif kind == "http.response.body":
            self.body_len += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.done = True
                self.t_last = _perf()
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


def make_scope(
    path: str,
    query: bytes = b"",
    extra_headers: tuple[tuple[str, str], ...] = (),
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = list(BASE_HEADERS)
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


class Lifespan:
    """Run an app's lifespan protocol (startup now, shutdown at ``stop``)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.create_task(self.app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._outbox.get(), 30)
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"lifespan startup failed: {message}")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._outbox.get(), 30)
            await asyncio.wait_for(self._task, 30)
        except Exception:
            self._task.cancel()


Check = Callable[["Variant", Exchange | None, int], str | None]


@dataclass
class Variant:
    """Something timed per request: an ASGI app with its scopes, or a bare coroutine."""

    name: str  # unique id of this row
    label: str
    group: dict[str, Any]  # e.g. {"size": 1024, "origin_ms": 0}
    app: Callable[..., Awaitable[None]] | None = None
    scope_factory: Callable[[int], dict[str, Any]] | None = None
    op: Callable[[], Awaitable[Any]] | None = None  # instead of app: one timed await
    before_batch: Callable[[], Any] = lambda: None
    after_batch: Callable[[], Awaitable[None]] | None = None
    calls: Callable[[], int] = lambda: 0  # origin calls so far
    outcomes: Callable[[], dict[str, int]] = dict  # our cache's counters so far
    outcome_totals: dict[str, int] = field(default_factory=dict)  # during timed batches
    check: Check | None = None
    batch_scale: float = 1.0  # fraction of the batch size (slow variants)
    samples: list[int] = field(default_factory=list)  # ns, request to app return
    ttlb: list[int] = field(default_factory=list)  # ns, request to last body byte
    round_medians: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counter: int = 0
    last_n: int = 0
    cpu_ns: int = 0  # thread CPU time of the timed batches (immune to other processes)
    cpu_n: int = 0

    async def batch(self, n: int, budget_s: float) -> None:
        n = max(5, int(n * self.batch_scale))
        calls_before = self.calls()
        outcomes_before = self.outcomes()
        last: Exchange | None = None
        times: list[int] = []
        ttlb: list[int] = []
        deadline = _perf() + int(budget_s * 1e9)
        cpu0 = time.thread_time_ns()
        if self.op is not None:
            op = self.op
            for _ in range(n):
                t0 = _perf()
                await op()
                t1 = _perf()
                times.append(t1 - t0)
                if t1 > deadline and len(times) >= 5:
                    break
        else:
            assert self.app is not None
            assert self.scope_factory is not None
            app, factory = self.app, self.scope_factory
            scopes = [factory(self.counter + i) for i in range(n)]
            self.counter += n
            for scope in scopes:
                ex = Exchange()
                t0 = _perf()
                await app(scope, ex.receive, ex.send)
                t1 = _perf()
                times.append(t1 - t0)
                ttlb.append((ex.t_last or t1) - t0)
                last = ex
                if t1 > deadline and len(times) >= 5:
                    break
        self.cpu_ns += time.thread_time_ns() - cpu0
        self.cpu_n += len(times)
        self.last_n = len(times)
        for name, count in self.outcomes().items():
            delta = count - outcomes_before.get(name, 0)
            if delta:
                self.outcome_totals[name] = self.outcome_totals.get(name, 0) + delta
        self.samples.extend(times)
        self.ttlb.extend(ttlb)
        self.round_medians.append(statistics.median(times))
        if self.check is not None:
            problem = self.check(self, last, self.calls() - calls_before)
            if problem and problem not in self.problems:
                self.problems.append(problem)
        if self.after_batch is not None:
            await self.after_batch()


async def interleave(
    variants: list[Variant],
    *,
    rounds: int,
    batch: int,
    budget_s: float,
    seed: int = 9,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Warm every variant once (discarded), then ``rounds`` shuffled rounds."""
    rng = random.Random(seed)
    for variant in variants:
        await _run_batch(variant, max(20, batch // 5), budget_s)
        variant.samples.clear()
        variant.ttlb.clear()
        variant.round_medians.clear()
        variant.outcome_totals.clear()
        variant.cpu_ns = variant.cpu_n = 0
    gc.collect()
    for r in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            await _run_batch(variant, batch, budget_s)
        if progress is not None:
            progress(f"round {r + 1}/{rounds}")


async def _run_batch(variant: Variant, batch: int, budget_s: float) -> None:
    result = variant.before_batch()
    if asyncio.iscoroutine(result):
        await result
    try:
        await variant.batch(batch, budget_s)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if message not in variant.problems:
            variant.problems.append(message)


def summarize(samples: list[int]) -> dict[str, float]:
    """Median, p90, p99, mean and min in microseconds."""
    if not samples:
        return {}
    data = sorted(samples)
    n = len(data)

    def pct(p: float) -> float:
        return data[min(n - 1, max(0, round(p / 100 * (n - 1))))] / 1000

    return {
        "n": n,
        "median_us": statistics.median(data) / 1000,
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": statistics.fmean(data) / 1000,
        "min_us": data[0] / 1000,
    }


def spread(round_medians: list[float]) -> float:
    """Relative spread of the round medians ((max - min) / median), a noise indicator."""
    if len(round_medians) < 2:
        return 0.0
    mid = statistics.median(round_medians)
    return (max(round_medians) - min(round_medians)) / mid if mid else 0.0
