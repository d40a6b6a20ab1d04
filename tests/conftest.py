"""Shared fixtures. Real-server logic lives in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import (
    RedisCluster,
    RedisSentinelSetup,
    RedisServer,
    require_redis_server,
)

# Tests using any of these fixtures get the `redis_server` marker automatically.
REAL_REDIS_FIXTURES = {
    "redis_server",
    "redis_url",
    "fresh_redis_server",
    "redis_cluster",
    "cluster_urls",
    "redis_sentinel",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis_server)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the session's typing tests: the package and its dependencies are
    analysed once, each test's snippet on its own."""
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session (prefer `redis_url` in tests)."""
    require_redis_server()
    with RedisServer(name="session-redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, FLUSHALLed before the test."""
    redis_server.start()  # no-op unless a test stopped it
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A private redis-server the test may stop / restart / kill / pause."""
    require_redis_server()
    with RedisServer(name="fresh-redis") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster, started on first use (prefer `cluster_urls` in tests)."""
    require_redis_server()
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_urls(redis_cluster: RedisCluster) -> list[str]:
    """``redis://host:port`` of every cluster master, all FLUSHALLed before the test."""
    redis_cluster.flushall()
    return redis_cluster.urls


@pytest.fixture
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """Master + replica + sentinel ("mymaster"), per test since failovers mutate it."""
    require_redis_server()
    with RedisSentinelSetup() as setup:
        yield setup
