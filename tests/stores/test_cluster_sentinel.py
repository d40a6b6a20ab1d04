"""L2 on a real Redis Cluster and a real Sentinel setup, through ``build_client``.

The store contract, then the middleware end to end with two "workers" (two caches, each
with its own client) sharing the same Redis deployment, then a Sentinel failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import RedisError

from fastapi_tiered_cache import CacheSettings, TieredCache
from fastapi_tiered_cache.exceptions import ConfigurationError, StoreUnavailable
from fastapi_tiered_cache.stores import RedisStore
from fastapi_tiered_cache.stores.connect import build_client, build_client_from_settings

from ..helpers import SECRET, Origin, client_for, make_cache
from ..support.redis_server import HOST, RedisSentinelSetup, admin_client, free_port
from ..support.redis_server import RedisCluster as ClusterSetup
from .test_contract import entry

KEYS = [f"ftc:_:pub:{i}" for i in range(12)]
FAILOVER_BOUND = 10.0  # seconds for the same client to store on the new master again
FOLLOW_BOUND = 4.0  # seconds, for an idle pool (redis-py alone takes ~10 s; we re-ask every 1 s)


async def check_contract(client: Any) -> None:
    """set / get / overwrite / delete / delete_many / expiry / decode-error-delete."""
    store = RedisStore(client, timeout=2.0, owns_client=False)
    for i, key in enumerate(KEYS):
        await store.set(key, entry(f"v{i}".encode()), 30)
    for i, key in enumerate(KEYS):
        assert await store.get(key) == entry(f"v{i}".encode())
    assert await store.get("ftc:missing") is None

    await store.set(KEYS[0], entry(b"two"), 30)
    overwritten = await store.get(KEYS[0])
    assert overwritten is not None
    assert overwritten.body == b"two"

    await store.delete(KEYS[0])
    await store.delete_many([*KEYS[1:6], "ftc:missing"])  # keys on several nodes
    assert [await store.get(key) for key in KEYS[:6]] == [None] * 6
    assert all([await store.get(key) is not None for key in KEYS[6:]])

    await store.set("ftc:short", entry(), 0.15)
    assert 0 < await client.pttl("ftc:short") <= 150
    await asyncio.sleep(0.3)
    assert await store.get("ftc:short") is None

    await client.set("ftc:garbage", b"garbage")
    assert await store.get("ftc:garbage") is None
    assert await client.exists("ftc:garbage") == 0
    assert store.decode_errors == 1


async def check_two_workers(first: Any, second: Any, paths: list[str]) -> None:
    """A MISS on one worker is an L2 HIT on the other, for every path."""
    origin = Origin(body=lambda scope: f"body of {scope['path']}".encode())
    caches = [
        make_cache(redis=first, redis_timeout=1.0),
        make_cache(redis=second, redis_timeout=1.0),
    ]
    try:
        async with client_for(origin, caches[0]) as a, client_for(origin, caches[1]) as b:
            for path in paths:
                miss = await a.get(path)
                hit = await b.get(path)
                assert miss.headers["x-cache"] == "MISS"
                assert "detail=l2" in hit.headers["cache-status"]
                assert hit.content == miss.content == f"body of {path}".encode()
        assert origin.calls == len(paths)
    finally:
        for cache in caches:
            await cache.close()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("url", "mode", "message"),
    [
        ("http://h:1", "standalone", "must specify one of the following schemes"),
        ("redis://h:port", "standalone", "Port could not be cast"),
        ("redis://h:1?nonsense=1", "standalone", "unknown option(s) nonsense"),
        ("redis://h:1?ssl_cert_reqs=none", "standalone", "ssl_cert_reqs for a redis:// URL"),
        ("unix:///tmp/r.sock?socket_keepalive=yes", "standalone", "for a unix:// URL"),
        ("redis://a:1,redis://b:2", "standalone", "TIERED_CACHE_REDIS_MODE=cluster"),
        ("redis://a:1,,b:2", "cluster", "empty"),
        ("a:1,redis://b:2", "cluster", "needs a scheme"),
        ("redis://:s3cr3t@a:1,redis://b:2", "cluster", "entry 2 (b:2)"),
        ("redis://:s3cr3t@a:1,b:2?db=1", "cluster", "entry 2"),
        ("redis://a:1/3", "cluster", "database 0"),
        ("unix:///tmp/redis.sock", "cluster", "unix sockets"),
        ("redis://a:1?sentinel_password=x", "cluster", "unknown option(s) sentinel_password"),
        ("redis://:s3cr3t@a:1?socket_timeout=x", "sentinel", "socket_timeout"),
    ],
    ids=[
        "scheme",
        "port",
        "unknown-option",
        "tls-option-without-tls",
        "tcp-option-on-unix",
        "list-in-standalone",
        "empty-entry",
        "bare-first-entry",
        "other-credentials",
        "options-on-bare-entry",
        "cluster-db",
        "cluster-unix",
        "sentinel-option-in-cluster",
        "bad-option-value",
    ],
)
def test_unusable_urls_fail_at_start_up_naming_the_variable(
    url: str, mode: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        build_client(url, mode=mode, sentinel_service="mymaster")
    text = str(info.value)
    assert "TIERED_CACHE_REDIS_URL" in text
    assert message in text
    assert "s3cr3t" not in text  # a credential never reaches a log


def test_sentinel_mode_needs_a_service() -> None:
    with pytest.raises(ConfigurationError, match="TIERED_CACHE_SENTINEL_SERVICE"):
        build_client("redis://127.0.0.1:26379", mode="sentinel")


async def test_each_mode_builds_its_client_from_the_url() -> None:
    standalone = build_client("redis://:s3cr3t@127.0.0.1:6390/2", max_connections=7)
    cluster = build_client(
        "rediss://:s3cr3t@10.0.0.1:7000,10.0.0.2:7001", mode="cluster", max_connections=7
    )
    sentinel = build_client(
        "redis://:s3cr3t@127.0.0.1:26390/2?sentinel_password=other,127.0.0.2",
        mode="sentinel",
        sentinel_service="mymaster",
    )
    try:
        assert isinstance(standalone, Redis)
        pool = standalone.connection_pool
        assert pool.max_connections == 7
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs["password"] == "s3cr3t"

        assert isinstance(cluster, RedisCluster)
        seeds = cluster.nodes_manager.startup_nodes
        assert sorted(seeds) == ["10.0.0.1:7000", "10.0.0.2:7001"]  # the bare entry inherits
        assert cluster.connection_kwargs["connection_class"] is SSLConnection
        assert cluster.connection_kwargs["password"] == "s3cr3t"
        assert all(node.max_connections == 7 for node in seeds.values())

        assert isinstance(sentinel, Redis)
        master = sentinel.connection_pool
        assert master.connection_kwargs["password"] == "s3cr3t"  # the master's credentials
        assert master.connection_kwargs["db"] == 2
        sentinels = [s.connection_pool.connection_kwargs for s in master.sentinel_manager.sentinels]
        assert [(s["host"], s["port"], s["password"]) for s in sentinels] == [
            ("127.0.0.1", 26390, "other"),
            ("127.0.0.2", 26379, "other"),  # default sentinel port
        ]
    finally:
        for client in (standalone, cluster, sentinel):
            await client.aclose()


# --------------------------------------------------------------------------- cluster


async def test_cluster_store_contract_over_several_nodes(
    cluster_urls: list[str], redis_cluster: ClusterSetup
) -> None:
    client = build_client(",".join(cluster_urls), mode="cluster")
    assert isinstance(client, RedisCluster)
    try:
        await check_contract(client)
        owners = {node.name for key in KEYS if (node := client.get_node_from_key(key))}
        assert len(owners) > 1
        holding = []
        for node in redis_cluster.nodes:
            with node.client() as admin:
                holding.append(admin.dbsize() > 0)
        assert sum(holding) > 1  # the entries really live on more than one master
    finally:
        await client.aclose()


async def test_two_workers_share_entries_through_the_cluster(cluster_urls: list[str]) -> None:
    seeds = ",".join(cluster_urls)
    first, second = build_client(seeds, mode="cluster"), build_client(seeds, mode="cluster")
    try:
        await check_two_workers(first, second, [f"/products/{i}" for i in range(6)])
    finally:
        await first.aclose()
        await second.aclose()


async def test_one_seed_is_enough_and_bare_entries_inherit(cluster_urls: list[str]) -> None:
    first, *others = cluster_urls
    bare = [url.removeprefix("redis://") for url in others]
    for url in (first, ",".join([first, *bare])):
        client = build_client(url, mode="cluster")
        assert isinstance(client, RedisCluster)
        try:
            await client.set("k", "v")
            assert await client.get("k") == b"v"
            assert len(client.get_primaries()) == 3
        finally:
            await client.aclose()


async def test_unreachable_cluster_is_a_miss_never_an_error() -> None:
    url = f"redis://{HOST}:{free_port()}"
    client = build_client(url, mode="cluster", connect_timeout=0.2, socket_timeout=0.2)
    store = RedisStore(client, timeout=2.0, owns_client=False)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        with pytest.raises(RedisError):  # as the lease listener calls it
            await client.initialize()
        pipe = client.pipeline(transaction=False)
        pipe.get("k")
        with pytest.raises(RedisError):  # not redis-py's RedisClusterException
            await pipe.execute()
        origin = Origin(body=b"from origin")
        cache = make_cache(redis=client, redis_timeout=1.0)
        try:
            async with client_for(origin, cache) as http:
                responses = [await http.get("/") for _ in range(2)]
        finally:
            await cache.close()
        assert [(r.status_code, r.content) for r in responses] == [(200, b"from origin")] * 2
    finally:
        await client.aclose()


async def test_settings_in_cluster_mode_build_a_cluster_client(cluster_urls: list[str]) -> None:
    settings = CacheSettings(
        redis_url=",".join(cluster_urls), redis_mode="cluster", redis_max_connections=9
    )
    client = build_client_from_settings(settings)
    assert isinstance(client, RedisCluster)
    try:
        await client.set("k", "v")
        assert {node.port for node in client.get_primaries()} == {
            int(url.rsplit(":", 1)[1]) for url in cluster_urls
        }
        assert all(node.max_connections == 9 for node in client.get_nodes())
    finally:
        await client.aclose()
    assert build_client_from_settings(CacheSettings()) is None


async def test_tiered_cache_in_cluster_mode_talks_to_the_cluster(cluster_urls: list[str]) -> None:
    cache = TieredCache(
        CacheSettings(redis_url=",".join(cluster_urls), redis_mode="cluster", secret_key=SECRET)
    )
    try:
        assert isinstance(cache.store.l2, RedisStore)
        assert isinstance(cache.store.l2.client, RedisCluster)
        assert await cache.warm_up()  # slot discovery, outside the 50 ms request budget
        await cache.store.set_remote("ftc:k", entry(), 10)
        assert await cache.store.lookup_remote("ftc:k") == entry()
    finally:
        await cache.close()


# --------------------------------------------------------------------------- sentinel


def sentinel_client(setup: RedisSentinelSetup) -> Any:
    return build_client(
        setup.sentinel_url,
        mode="sentinel",
        sentinel_service=setup.service_name,
        connect_timeout=0.5,
        socket_timeout=0.5,
    )


async def test_sentinel_store_contract_and_two_workers(redis_sentinel: RedisSentinelSetup) -> None:
    first, second = sentinel_client(redis_sentinel), sentinel_client(redis_sentinel)
    try:
        await check_contract(first)
        await check_two_workers(first, second, ["/a", "/b"])
        assert first.connection_pool.master_address == (HOST, redis_sentinel.master_port)
    finally:
        await first.aclose()
        await second.aclose()


async def wait_until_stored_on(
    port: int, client: Any, http: Any, peek: Any, *, bound: float
) -> tuple[int, float]:
    """Send requests until the same client stores on the master at ``port`` again.

    Every response in between must be the origin's (degraded, never an error). Returns the
    number of attempts and the seconds it took.
    """
    store = RedisStore(client, timeout=1.0, owns_client=False)
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        path = f"/after/{attempt}"
        response = await http.get(path)
        assert (response.status_code, response.content) == (200, path.encode())
        with contextlib.suppress(StoreUnavailable):  # the old master may be gone
            await store.set(f"probe:{attempt}", entry(), 30)
        on_new_master = await asyncio.to_thread(_exists, port, f"probe:{attempt}")
        seen = await peek.get(path)
        assert (seen.status_code, seen.content) == (200, path.encode())
        if on_new_master and "detail=l2" in seen.headers["cache-status"]:
            return attempt, time.monotonic() - started
        assert time.monotonic() - started < bound, f"not following the failover after {bound}s"
        await asyncio.sleep(0.05)


def _exists(port: int, key: str) -> bool:
    with admin_client(port, timeout=1.0) as admin:
        return bool(admin.exists(key))


async def test_sentinel_failover_is_followed_without_a_restart(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    setup = redis_sentinel
    client, peek_client = sentinel_client(setup), sentinel_client(setup)
    origin = Origin(body=lambda scope: scope["path"].encode())
    worker = make_cache(redis=client, redis_timeout=0.5)
    reader = make_cache(redis=peek_client, redis_timeout=0.5, l1_max_entries=0)  # L2 only
    try:
        async with client_for(origin, worker) as http, client_for(origin, reader) as peek:
            assert (await http.get("/before")).headers["x-cache"] == "MISS"
            old_port = setup.master_port
            new_port = await asyncio.to_thread(setup.failover)
            assert new_port != old_port
            attempts, seconds = await wait_until_stored_on(
                new_port, client, http, peek, bound=FAILOVER_BOUND
            )
            # Written before the failover (and replicated): still served from L2.
            assert "detail=l2" in (await peek.get("/before")).headers["cache-status"]
        assert isinstance(worker.store.l2, RedisStore)
        assert worker.store.l2.client is client  # the same client, never rebuilt
        assert client.connection_pool.master_address == (HOST, new_port)
        assert attempts >= 1
        assert seconds < FAILOVER_BOUND
    finally:
        for cache in (worker, reader):
            await cache.close()
        await client.aclose()
        await peek_client.aclose()


async def test_an_idle_pool_notices_the_new_master_within_the_check_interval(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    # One connection, used in turn: redis-py alone keeps writing to the former master until
    # the sentinel demotes it (~10 s after a SENTINEL FAILOVER); we re-ask every second.
    setup = redis_sentinel
    client = sentinel_client(setup)
    store = RedisStore(client, timeout=1.0, owns_client=False)
    try:
        await store.set("probe:0", entry(), 30)
        new_port = await asyncio.to_thread(setup.failover)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            with contextlib.suppress(StoreUnavailable):
                await store.set(f"probe:{attempt}", entry(), 30)
            if await asyncio.to_thread(_exists, new_port, f"probe:{attempt}"):
                break
            assert time.monotonic() - started < FOLLOW_BOUND
            await asyncio.sleep(0.05)
        assert len(client.connection_pool._available_connections) == 1
    finally:
        await client.aclose()


async def test_sentinel_master_crash_degrades_to_origin_then_recovers(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    setup = redis_sentinel
    client, peek_client = sentinel_client(setup), sentinel_client(setup)
    origin = Origin(body=lambda scope: scope["path"].encode())
    worker = make_cache(redis=client, redis_timeout=0.5)
    reader = make_cache(redis=peek_client, redis_timeout=0.5, l1_max_entries=0)
    try:
        async with client_for(origin, worker) as http, client_for(origin, reader) as peek:
            await http.get("/before")
            new_port = setup.replica.port
            setup.master.kill()
            for i in range(5):  # the master is gone and not yet replaced
                response = await http.get(f"/down/{i}")
                assert (response.status_code, response.content) == (200, f"/down/{i}".encode())
            await asyncio.to_thread(setup.wait_for_master, new_port, timeout=20.0)
            await wait_until_stored_on(new_port, client, http, peek, bound=FAILOVER_BOUND)
    finally:
        for cache in (worker, reader):
            await cache.close()
        await client.aclose()
        await peek_client.aclose()
