"""End to end across processes: ``uvicorn --workers 4`` serving ``tests/mp_app.py``.

A bounded, concurrent load of reads (several resources, several identities, anonymous) and
writes (each bumps a resource's version in Redis) runs against the real server. We check
what a deployment promises: no response ever crosses identities, every worker serves hits,
and no read is staler than ``STALENESS_BOUND``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fastapi_tiered_cache import CacheSettings, ConfigurationError, TieredCache

from .helpers import SECRET
from .support.redis_server import HOST, free_port

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
TTL = 1  # seconds: TIERED_CACHE_DEFAULT_TTL and TIERED_CACHE_L1_MAX_TTL
# A write purges before it answers, a fill that raced it is refused (purge markers), and no
# worker serves L1 past the coherence bound (TIERED_CACHE_COHERENCE_BOUND, set to this).
STALENESS_BOUND = 0.1  # seconds
REQUESTS = 480
CONCURRENCY = 16
WRITE_SHARE = 0.1
RESOURCES = ("alpha", "beta", "gamma")
TOKENS = {"token-alice": "alice", "token-bob": "bob", "token-carol": "carol", None: "anonymous"}
START_TIMEOUT = 30.0  # seconds for all workers to answer
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


@dataclass
class Read:
    resource: str
    identity: str
    started: float
    version: int
    served_by: str
    cache_status: str


@dataclass
class Load:
    reads: list[Read] = field(default_factory=list)
    commits: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # (acked, version)


# --------------------------------------------------------------------------- the server


def _children(parent: int) -> set[int]:
    """Pids whose parent is ``parent`` (Linux /proc; empty elsewhere)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.parent.name))
    return found


def _stop(proc: subprocess.Popen[bytes], workers: set[int]) -> None:
    """SIGTERM uvicorn's supervisor, wait, SIGKILL on timeout; then any worker left, by pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _wait_for_workers(base_url: str, proc: subprocess.Popen[bytes]) -> set[str]:
    """Poll until every worker has answered once (new connection per request)."""
    deadline = time.monotonic() + START_TIMEOUT
    seen: set[str] = set()
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base_url, timeout=2.0, limits=limits, verify=False) as client:
        while len(seen) < WORKERS:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(seen)} of {WORKERS} workers up in {START_TIMEOUT}s")
            with contextlib.suppress(httpx.TransportError):
                seen.add(client.get("/healthz").headers["x-worker-pid"])
            time.sleep(0.02)
    return seen


@contextlib.contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    """``uvicorn tests.mp_app:app --workers 4`` on a free loopback port; yields its URL."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_CACHE_")}
    environ.update(env)
    for attempt in range(3):  # the free port may be taken before uvicorn binds it
        port = free_port()
        # fmt: off
        command = [
            sys.executable, "-m", "uvicorn", "tests.mp_app:app",
            "--workers", str(WORKERS), "--host", HOST, "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ]
        # fmt: on
        proc = subprocess.Popen(command, cwd=ROOT, env=environ)
        workers: set[int] = set()
        try:
            base_url = f"http://{HOST}:{port}"
            try:
                _wait_for_workers(base_url, proc)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            workers = _children(proc.pid)
            yield base_url
            return
        finally:
            workers |= _children(proc.pid)
            _stop(proc, workers)


# --------------------------------------------------------------------------- the load


async def run_load(base_url: str, seed: int = 20240611) -> Load:
    load = Load(commits={name: [(0.0, 0)] for name in RESOURCES})
    plan = random.Random(seed)
    operations = [
        (
            "write" if plan.random() < WRITE_SHARE else "read",
            plan.choice(RESOURCES),
            plan.choice(list(TOKENS)),
            plan.choice(("POST", "PUT")),
        )
        for _ in range(REQUESTS)
    ]
    queue: asyncio.Queue[tuple[str, str, str | None, str]] = asyncio.Queue()
    for operation in operations:
        queue.put_nowait(operation)
    # No keep-alive: each request is accepted anew, so the load spreads over every worker.
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=10.0, limits=limits, verify=False
    ) as client:

        async def runner() -> None:
            while not queue.empty():
                kind, resource, token, method = queue.get_nowait()
                path = f"/resources/{resource}"
                if kind == "write":
                    response = await client.request(method, path)
                    assert response.status_code == 200, response.text
                    load.commits[resource].append((time.monotonic(), response.json()["version"]))
                    continue
                headers = {"authorization": f"Bearer {token}"} if token else {}
                started = time.monotonic()
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["resource"] == resource
                load.reads.append(
                    Read(
                        resource=resource,
                        identity=body["identity"],
                        started=started,
                        version=body["version"],
                        served_by=response.headers["x-worker-pid"],
                        cache_status=response.headers.get("cache-status", ""),
                    )
                )
                # Identity is checked here too, so the first crossing fails at once.
                assert body["identity"] == TOKENS[token], (token, body)

        await asyncio.gather(*(runner() for _ in range(CONCURRENCY)))
    return load


def staleness(read: Read, commits: list[tuple[float, int]]) -> float:
    """Seconds since the first write newer than what ``read`` saw was acknowledged, counting
    only writes acknowledged before the read started (0 when the read was current)."""
    newer = [acked for acked, version in commits if version > read.version and acked < read.started]
    return read.started - min(newer) if newer else 0.0


def check(load: Load) -> None:
    reads = load.reads
    assert len(reads) > REQUESTS * (1 - WRITE_SHARE) * 0.8

    hits = [r for r in reads if "; hit;" in r.cache_status or r.cache_status.endswith("; hit")]
    l1_hits = [r for r in hits if "detail=l1" in r.cache_status]
    served = {r.served_by for r in reads}
    assert len(served) == WORKERS, f"only {len(served)} workers served reads"
    assert {r.served_by for r in hits} == served, "a worker served no hit"
    assert len({r.served_by for r in l1_hits}) >= 2, "L1 hits came from fewer than 2 workers"

    worst = max(reads, key=lambda r: staleness(r, load.commits[r.resource]))
    worst_seconds = staleness(worst, load.commits[worst.resource])
    assert worst_seconds <= STALENESS_BOUND, (worst, worst_seconds)


def cache_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "TIERED_CACHE_REDIS_URL": redis_url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "TIERED_CACHE_DEFAULT_TTL": str(TTL),
        "TIERED_CACHE_L1_MAX_TTL": str(TTL),
        "TIERED_CACHE_REDIS_TIMEOUT": "0.25",
        "TIERED_CACHE_COHERENCE_BOUND": str(STALENESS_BOUND),
        **extra,
    }


async def test_four_workers_share_one_standalone_redis(redis_url: str) -> None:
    with serve(cache_env(redis_url)) as base_url:
        load = await run_load(base_url)
    check(load)


async def _cluster_mode_is_wired() -> bool:
    settings = CacheSettings(
        redis_url="redis://127.0.0.1:1,redis://127.0.0.1:2", redis_mode="cluster"
    )
    try:
        cache = TieredCache(settings)  # a lazy client: nothing is connected
    except ConfigurationError:
        return False
    await cache.close()
    return True


@pytest.mark.redis_server
async def test_four_workers_share_one_cluster(request: pytest.FixtureRequest) -> None:
    if not await _cluster_mode_is_wired():
        pytest.skip("cache.py does not build a cluster client from TIERED_CACHE_REDIS_MODE yet")
    cluster_urls: list[str] = request.getfixturevalue("cluster_urls")  # only when it runs
    env = cache_env(",".join(cluster_urls), TIERED_CACHE_REDIS_MODE="cluster")
    with serve(env) as base_url:
        load = await run_load(base_url)
    check(load)
