"""The test-support helpers themselves, exercised against real redis-server processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import redis_server as redis_server_module
from tests.support.redis_server import (
    HOST,
    RedisCluster,
    RedisSentinelSetup,
    RedisServer,
    RedisServerError,
    free_port,
    require_redis_server,
)
from tests.support.tcp_proxy import TcpProxy, ThreadedTcpProxy

pytestmark = pytest.mark.redis_server  # every test here talks to a real redis-server


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    require_redis_server()  # also for tests that build servers without the conftest fixtures


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _async_client(url: str, timeout: float = 2.0) -> redis.asyncio.Redis:
    """A client that fails fast: no retries, short timeouts."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=AsyncRetry(NoBackoff(), 0),
    )


# --------------------------------------------------------------------------- RedisServer


def test_server_starts_and_answers_ping(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    assert server.running
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
        assert client.info("server")["process_id"] == server.pid
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_restart_keeps_port_and_server_is_reachable_again(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    port, old_pid = server.port, server.pid
    assert old_pid is not None
    with redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
    server.restart()
    assert server.port == port
    assert server.pid != old_pid
    assert not _pid_alive(old_pid)
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
        assert client.get("k") is None  # no persistence


def test_stop_kills_the_pid_and_removes_the_dir() -> None:
    server = RedisServer().start()
    pid, directory, port = server.pid, server.dir, server.port
    assert pid is not None
    assert _pid_alive(pid)
    server.stop()
    assert not server.running
    assert not _pid_alive(pid)
    assert not directory.exists()
    with (
        redis.Redis(host=HOST, port=port, retry=Retry(NoBackoff(), 0)) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()
    server.stop()  # idempotent


def test_kill_and_pause(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    server.pause()
    with (
        redis.Redis.from_url(server.url, socket_timeout=0.2) as client,
        pytest.raises(redis.TimeoutError),
    ):
        client.ping()
    server.resume()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not _pid_alive(pid)
    server.start()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True


def test_port_race_is_retried_and_foreign_server_not_mistaken_for_ours(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first port handed out is taken by another redis-server (which answers PING!).
    ports = iter([redis_server.port])
    monkeypatch.setattr(redis_server_module, "free_port", lambda: next(ports, None) or free_port())
    with RedisServer() as server:
        assert server.port != redis_server.port
        with redis.Redis.from_url(server.url) as client:
            assert client.info("server")["process_id"] == server.pid


def test_start_failure_reports_the_log_and_cleans_up() -> None:
    server = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(RedisServerError, match="no-such-directive"):
        server.start()
    assert not server.running
    with pytest.raises(RuntimeError):
        server.dir  # noqa: B018  (temp dir removed)


@pytest.mark.parametrize("attempt", [1, 2])
def test_redis_url_is_flushed_between_tests(redis_url: str, attempt: int) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set(f"left-over-{attempt}", "x")


# --------------------------------------------------------------------------- cluster


async def test_cluster_spreads_keys_over_nodes(
    cluster_urls: list[str], redis_cluster: RedisCluster
) -> None:
    host, port = redis_cluster.startup_nodes[0]
    client = AsyncRedisCluster(host=host, port=port)
    try:
        for i in range(100):
            await client.set(f"key:{i}", i)
        for i in range(100):
            assert await client.get(f"key:{i}") == str(i).encode()
    finally:
        await client.aclose()
    sizes = []
    for node in redis_cluster.nodes:
        with node.client() as admin:
            sizes.append(admin.dbsize())
    assert sum(sizes) == 100
    assert sum(1 for size in sizes if size > 0) > 1
    assert cluster_urls == [f"redis://127.0.0.1:{node.port}" for node in redis_cluster.nodes]


# --------------------------------------------------------------------------- sentinel


async def _write_through_sentinel(setup: RedisSentinelSetup, key: str) -> tuple[str, int]:
    sentinel = Sentinel(setup.sentinels, socket_timeout=2.0)
    master = sentinel.master_for(setup.service_name, socket_timeout=2.0)
    try:
        host, port = await sentinel.discover_master(setup.service_name)
        await master.set(key, "v")
        assert await master.get(key) == b"v"
        return str(host), int(port)
    finally:
        await master.aclose()
        for client in sentinel.sentinels:
            await client.aclose()


async def test_sentinel_discovery_and_failover(redis_sentinel: RedisSentinelSetup) -> None:
    setup = redis_sentinel
    assert setup.service_name == "mymaster"
    assert setup.sentinel_url == f"redis://127.0.0.1:{setup.sentinel.port}"
    old_master, old_replica = setup.master_port, setup.replica.port

    assert await _write_through_sentinel(setup, "before") == (HOST, old_master)

    assert setup.failover() == old_replica
    assert setup.master_port == old_replica
    assert await _write_through_sentinel(setup, "after") == (HOST, old_replica)
    with setup.master.client() as admin:
        assert admin.get("before") == "v"  # replicated before the failover


async def test_sentinel_automatic_failover_after_master_dies(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    setup = redis_sentinel
    survivor = setup.replica
    setup.master.kill()
    setup.wait_for_master(survivor.port, timeout=20)
    assert await _write_through_sentinel(setup, "k") == (HOST, survivor.port)


# --------------------------------------------------------------------------- TCP proxy


@pytest.fixture
def upstream(redis_server: RedisServer) -> int:
    """Port of the session server, for the proxy to forward to."""
    return redis_server.start().port


async def test_proxy_pass_round_trips_ping(upstream: int) -> None:
    async with TcpProxy(upstream) as proxy:
        assert proxy.mode == "pass"
        assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
        client = _async_client(proxy.url)
        try:
            assert await client.ping() is True
            await client.set("via-proxy", b"x" * 200_000)  # several chunks each way
            assert await client.get("via-proxy") == b"x" * 200_000
            assert proxy.connection_count == 1
        finally:
            await client.aclose()
    assert proxy.connection_count == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_proxy_delay_adds_latency(upstream: int) -> None:
    async with TcpProxy(upstream) as proxy:
        client = _async_client(proxy.url)
        try:
            await client.ping()  # connect while fast
            proxy.delay(0.1)
            assert proxy.mode == "delay"
            start = time.monotonic()
            assert await client.ping() is True
            elapsed = time.monotonic() - start
            assert elapsed >= 0.2 - 0.005  # 0.1 s each way
            assert elapsed < 1.5
            proxy.passthrough()
            start = time.monotonic()
            await client.ping()
            assert time.monotonic() - start < 0.19  # below the 0.2 s it took when delayed
        finally:
            await client.aclose()


async def test_proxy_blackhole_makes_clients_time_out(upstream: int) -> None:
    async with TcpProxy(upstream) as proxy:
        established = _async_client(proxy.url, timeout=0.2)
        try:
            await established.ping()
            proxy.blackhole()
            start = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                await established.ping()
            assert time.monotonic() - start < 1.0
            fresh = _async_client(proxy.url, timeout=0.2)
            try:
                with pytest.raises(redis.TimeoutError):
                    await fresh.ping()
            finally:
                await fresh.aclose()
            proxy.passthrough()
            assert await established.ping() is True  # reconnects after the timeout
        finally:
            await established.aclose()


async def test_proxy_drop_refuses_new_connections(upstream: int) -> None:
    async with TcpProxy(upstream) as proxy:
        proxy.drop()
        client = _async_client(proxy.url)
        try:
            with pytest.raises(redis.ConnectionError):
                await client.ping()
            proxy.passthrough()
            assert await client.ping() is True
        finally:
            await client.aclose()


async def test_proxy_cut_kills_open_connections(upstream: int) -> None:
    async with TcpProxy(upstream) as proxy:
        client = _async_client(proxy.url)
        try:
            await client.ping()
            assert proxy.cut() == 1
            with pytest.raises(redis.ConnectionError):
                await client.ping()
            assert await client.ping() is True  # a new connection passes again
            assert proxy.mode == "pass"
        finally:
            await client.aclose()


async def test_proxy_to_a_dead_target_closes_the_client() -> None:
    async with TcpProxy(free_port()) as proxy:
        client = _async_client(proxy.url)
        try:
            with pytest.raises(redis.ConnectionError):
                await client.ping()
        finally:
            await client.aclose()


def test_threaded_proxy_from_sync_code(upstream: int) -> None:
    with ThreadedTcpProxy(upstream) as proxy:
        thread = proxy._thread
        with redis.Redis.from_url(
            proxy.url, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
        ) as client:
            assert client.ping() is True
            proxy.delay(0.05)
            start = time.monotonic()
            assert client.ping() is True
            assert time.monotonic() - start >= 0.1 - 0.005
            proxy.blackhole()
            with pytest.raises(redis.TimeoutError):
                client.ping()
            proxy.passthrough()
            assert client.ping() is True
            assert proxy.cut() == 1
            proxy.drop()
            with pytest.raises(redis.ConnectionError):
                client.ping()
    assert thread is not None
    assert not thread.is_alive()
