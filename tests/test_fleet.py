"""Fleet correctness under load, with real processes (issue 21).

Four uvicorn processes of ``tests/fleet_app.py``, one port each, every client sending the
same ``Host`` (as behind a load balancer), share one Redis started by the fixtures:

- **Writes racing fills**: readers hammer random processes every 1-6 ms while writes
  (PUT, PATCH, POST, DELETE, rotating the writing process) come in back-to-back pairs
  2-12 ms apart. No read that starts more than 100 ms after a completed write may return
  an older version. Standalone and Cluster.
- **Stampede**: 200 concurrent requests for a cold key, spread over fresh processes, make
  exactly one origin call. Standalone, Cluster and Sentinel.
- **Silent partition**: one process reaches Redis through a proxy that blackholes its
  connections (open, nothing delivered); with ``TIERED_CACHE_COHERENCE_BOUND=0.1`` no
  read anywhere is stale beyond 100 ms.

Each test reports what it measured (``-s`` shows it): visibility percentiles, tiers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from .helpers import SECRET
from .support.fleet import Fleet, ProxyProcess, RaceReport, origin_calls, race, stampede
from .support.redis_server import RedisCluster, RedisSentinelSetup, RedisServer

pytestmark = pytest.mark.redis_server

PROCESSES = 4
ADMIN_TOKEN = "fleet-admin-token-0123456789"
LIMIT = 0.1  # seconds a completed write may take to be seen everywhere


@pytest.fixture
def data_url(redis_url: str) -> str:
    """The fleet app's own data (versions, origin-call counters): the session server."""
    return redis_url


def env(cache_url: str, data_url: str, **extra: str) -> dict[str, str]:
    return {
        "TIERED_CACHE_REDIS_URL": cache_url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "FLEET_DATA_URL": data_url,
        "FLEET_ORIGIN_DELAY": "0.003",  # the origin reads, then takes 3 ms: fills race writes
        **extra,
    }


def check_race(report: RaceReport) -> None:
    summary = report.summary()
    print(json.dumps(summary))
    assert not report.errors, report.errors[:5]
    # The load really ran: reads on every process, writes through several, L1 hits.
    assert summary["reads"] > 200 and summary["writes"] >= 16
    assert {read.process for read in report.reads} == set(range(PROCESSES))
    assert len({write.process for write in report.writes}) >= 2
    assert summary["hits_by_tier"].get("l1", 0) > 50
    stale = report.stale()
    assert stale == [], [(r, w) for r, w in stale[:3]]


@pytest.fixture
def cluster_env(redis_cluster: RedisCluster, data_url: str) -> dict[str, str]:
    redis_cluster.flushall()
    return env(",".join(redis_cluster.urls), data_url, TIERED_CACHE_REDIS_MODE="cluster")


async def test_writes_racing_fills_are_seen_everywhere_within_100_ms(
    fresh_redis_server: RedisServer, data_url: str
) -> None:
    with Fleet(PROCESSES, env(fresh_redis_server.url, data_url)) as fleet:
        report = await race(fleet, duration=3.0, limit=LIMIT)
    check_race(report)


async def test_writes_racing_fills_on_a_cluster(cluster_env: dict[str, str]) -> None:
    with Fleet(PROCESSES, cluster_env) as fleet:
        report = await race(fleet, duration=3.0, limit=LIMIT)
    check_race(report)


async def _one_call(fleet: Fleet, data_url: str, item: str) -> None:
    responses = await stampede(fleet, item, requests=200)
    assert [r.status_code for r in responses] == [200] * 200
    assert len({r.json()["version"] for r in responses}) == 1
    served_by = {r.headers["x-worker-pid"] for r in responses}
    assert len(served_by) == PROCESSES
    assert origin_calls(data_url, item) == 1


async def test_a_stampede_over_fresh_processes_calls_the_origin_once(
    fresh_redis_server: RedisServer, data_url: str
) -> None:
    """And the admin router of any one process counts the whole fleet's answers."""
    admin = env(
        fresh_redis_server.url,
        data_url,
        TIERED_CACHE_ADMIN_ENABLED="true",
        TIERED_CACHE_ADMIN_TOKEN=ADMIN_TOKEN,
        TIERED_CACHE_STATS_INTERVAL="0.2",
    )
    with Fleet(PROCESSES, admin) as fleet:
        await _one_call(fleet, data_url, "cold")
        fleet_stats = await _fleet_stats_once_every_process_reported(fleet, answers=200)
    items = fleet_stats["routes"]["/items/{name}"]
    assert items["miss"] == 1 and items["store"] == 1


async def _fleet_stats_once_every_process_reported(fleet: Fleet, answers: int) -> Any:
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}", "host": "fleet.test"}
    async with httpx.AsyncClient(base_url=fleet.urls[0], headers=auth) as client:
        for _ in range(50):
            stats = (await client.get("/_cache/stats")).json()["fleet"]
            route = stats["routes"].get("/items/{name}", {})
            if (
                stats["processes"] == PROCESSES
                and sum(route.get(event, 0) for event in ("hit", "miss", "coalesced")) == answers
            ):
                return stats
            await asyncio.sleep(0.1)
    raise AssertionError(f"the fleet's stats never added up: {stats}")


async def test_a_stampede_over_a_slow_network_calls_the_origin_once(
    fresh_redis_server: RedisServer, data_url: str
) -> None:
    """4 ms round trips to Redis: a fresh process's burst used to open a connection per
    request, time out, and call the origin without the fleet (one call per process)."""
    with ProxyProcess(fresh_redis_server.port) as proxy:
        proxy.delay(0.002)
        slow = dict.fromkeys(range(PROCESSES), proxy.url)
        with Fleet(PROCESSES, env(fresh_redis_server.url, data_url), proxied=slow) as fleet:
            await _one_call(fleet, data_url, "cold-slow")


async def test_a_stampede_on_a_cluster_calls_the_origin_once(
    cluster_env: dict[str, str], data_url: str
) -> None:
    with Fleet(PROCESSES, cluster_env) as fleet:
        await _one_call(fleet, data_url, "cold-cluster")


async def test_a_stampede_with_sentinel_calls_the_origin_once(
    redis_sentinel: RedisSentinelSetup, data_url: str
) -> None:
    sentinel = env(
        redis_sentinel.sentinel_url,
        data_url,
        TIERED_CACHE_REDIS_MODE="sentinel",
        TIERED_CACHE_SENTINEL_SERVICE=redis_sentinel.service_name,
    )
    with Fleet(PROCESSES, sentinel) as fleet:
        await _one_call(fleet, data_url, "cold-sentinel")


async def test_a_silently_partitioned_process_serves_nothing_staler_than_the_bound(
    fresh_redis_server: RedisServer, data_url: str
) -> None:
    """Process 0 reaches Redis through a proxy that, three times during the load,
    blackholes it for 0.6 s (connections open, nothing delivered either way), then lets
    it reconnect. Half the reads go to it; writes go through the others."""
    bound = env(fresh_redis_server.url, data_url, TIERED_CACHE_COHERENCE_BOUND="0.1")

    async def partitions() -> None:
        for _ in range(3):
            await asyncio.sleep(0.8)
            await asyncio.to_thread(proxy.blackhole)
            await asyncio.sleep(0.6)
            await asyncio.to_thread(proxy.passthrough)

    with (
        ProxyProcess(fresh_redis_server.port) as proxy,
        Fleet(PROCESSES, bound, proxied={0: proxy.url}) as fleet,
    ):
        report = await race(
            fleet,
            duration=4.5,
            limit=LIMIT,
            readable=[0, 0, 0, 1, 2, 3],
            writers=[1, 2, 3],
            pause=0.05,
            during=partitions,
        )
    check_race(report)
    partitioned = [read for read in report.reads if read.process == 0]
    assert sum("detail=l1" in read.status for read in partitioned) > 50
