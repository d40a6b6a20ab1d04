"""``build_client``: the ``redis.asyncio`` client of L2, from ``TIERED_CACHE_REDIS_URL``.

The URL means one thing per ``redis_mode``:

- ``standalone``: one server, ``redis://[user:password@]host:6379/0`` (``rediss://`` for TLS,
  ``unix:///run/redis.sock``), as ``Redis.from_url`` reads it.
- ``cluster``: seed nodes, comma-separated: ``redis://:pw@10.0.0.1:6379,10.0.0.2:6379``. One
  reachable seed is enough; the client learns the rest of the cluster from ``CLUSTER SLOTS``.
- ``sentinel``: the sentinels, comma-separated, and ``sentinel_service`` names the master:
  ``redis://:pw@10.0.0.1:26379/0,10.0.0.2:26379``. The credentials, database and TLS of the
  URL are the master's; ``?sentinel_password=`` (and ``sentinel_username``) authenticate to
  the sentinels themselves.

In both lists an entry without a scheme (``host:port``) takes the scheme, credentials and
options of the first entry. A comma inside a password must be written ``%2C``.

Following a Sentinel failover surprises people: redis-py asks the sentinels for the master
only when it opens a connection (and drops one that gets ``READONLY``), so a pooled
connection to a former master that is still up keeps writing there, and the sentinels
demote that node only seconds later. Our pool therefore asks them again at most once per
``MASTER_CHECK_INTERVAL`` and retires connections to an address that is no longer the master.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import FullJitterBackoff, NoBackoff
from redis.exceptions import ClusterError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import ConfigurationError
from .wire import WiredPool, wires_possible

__all__ = [
    "MASTER_CHECK_INTERVAL",
    "Mode",
    "RedisClient",
    "RedisOptions",
    "build_client",
    "build_client_from_settings",
]

Mode = Literal["standalone", "cluster", "sentinel"]
RedisClient: TypeAlias = Redis | RedisCluster

URL_VARIABLE = "TIERED_CACHE_REDIS_URL"
HEALTH_CHECK_INTERVAL = 30  # seconds a pooled connection may idle before a PING checks it
MASTER_CHECK_INTERVAL = 1.0  # seconds between two questions to the sentinels
RETRIES = 1  # a second try on a fresh connection; the store's time budget bounds the rest
CLUSTER_RETRIES = 2  # re-reads of the slot map after CLUSTERDOWN / a moved or lost node
_PORTS = {"standalone": 6379, "cluster": 6379, "sentinel": 26379}


def _parameters(*classes: Callable[..., object]) -> frozenset[str]:
    return frozenset(
        parameter.name
        for cls in classes
        for parameter in inspect.signature(cls).parameters.values()
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ) | {"max_connections", "connection_class"}


# What a URL may set, by the connection class its scheme selects: anything else would only
# fail at the first command (a TypeError, past the store's boundary), so it fails at start-up.
_OPTIONS_BY_CLASS: dict[object, tuple[str, frozenset[str]]] = {
    Connection: ("redis://", _parameters(AbstractConnection, Connection)),
    SSLConnection: ("rediss://", _parameters(AbstractConnection, Connection, SSLConnection)),
    UnixDomainSocketConnection: (
        "unix://",
        _parameters(AbstractConnection, UnixDomainSocketConnection),
    ),
}
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class RedisOptions(Protocol):
    """The settings ``build_client_from_settings`` reads; ``CacheSettings`` has them all."""

    @property
    def redis_url(self) -> _Secret | None: ...
    @property
    def redis_mode(self) -> Mode: ...
    @property
    def sentinel_service(self) -> str | None: ...
    @property
    def redis_connect_timeout(self) -> float: ...
    @property
    def redis_timeout(self) -> float: ...
    @property
    def redis_max_connections(self) -> int: ...


def build_client_from_settings(settings: RedisOptions) -> RedisClient | None:
    """The client the settings describe, or None when no Redis URL is set."""
    if settings.redis_url is None:
        return None
    return build_client(
        settings.redis_url.get_secret_value(),
        mode=settings.redis_mode,
        sentinel_service=settings.sentinel_service,
        connect_timeout=settings.redis_connect_timeout,
        # The store enforces the per-operation budget; the socket only catches a dead peer
        # (a cluster client needs that to refresh its slot map; see build_client).
        socket_timeout=max(settings.redis_timeout, settings.redis_connect_timeout),
        max_connections=settings.redis_max_connections,
    )


def build_client(
    url: str,
    *,
    mode: Mode = "standalone",
    sentinel_service: str | None = None,
    connect_timeout: float = 1.0,  # seconds
    socket_timeout: float = 1.0,  # seconds
    max_connections: int = 100,  # per process (per node in a cluster)
) -> RedisClient:
    """A lazy ``redis.asyncio`` client (nothing is opened until its first command).

    - ``url``: one URL, or comma-separated seed nodes / sentinels (see the module docstring).
    - ``mode``: ``standalone``, ``cluster`` or ``sentinel``.
    - ``sentinel_service``: the master's name, required in sentinel mode.
    - ``max_connections``: pool bound; past it a command fails at once (a miss), never queues.

    Raises ``ConfigurationError`` naming ``TIERED_CACHE_REDIS_URL`` for a URL it cannot use.
    Example::

        client = build_client("redis://10.0.0.1:6379,10.0.0.2:6379", mode="cluster")
    """
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        # Standalone and Sentinel: no socket timeout. Every command of the cache runs under
        # its own budget, which abandons a hung one (and redis-py then drops the
        # connection); a socket timeout only added a task per command (redis-py wraps each
        # write in asyncio.wait_for, which makes a task before Python 3.12). A cluster
        # client keeps it: a timeout is what makes it refresh its slot map.
        "socket_timeout": socket_timeout if mode == "cluster" else None,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "max_connections": max_connections,
    }
    retry = Retry(FullJitterBackoff(cap=0.1, base=0.01), RETRIES)  # in every redis-py 5+
    if mode == "standalone":
        _options(url, "the URL", mode)
        try:
            return _standalone(url, retry=retry, **common)
        except (TypeError, ValueError) as exc:
            raise _error(str(exc)) from None
    nodes, options = _seeds(url, mode)
    if mode == "cluster":
        return _cluster(nodes, options, common)
    if mode == "sentinel":
        if not sentinel_service:
            raise ConfigurationError(
                "invalid cache settings: TIERED_CACHE_SENTINEL_SERVICE is required in sentinel mode"
            )
        return _sentinel(nodes, options, common, retry, sentinel_service, socket_timeout)
    raise ConfigurationError(f"TIERED_CACHE_REDIS_MODE: unknown mode {mode!r}")


def _standalone(url: str, **options: Any) -> Redis:
    """``Redis.from_url(url, **options)``, on a ``WiredPool`` where its connections may
    carry a wire (``wire``: the hot commands share one connection)."""
    pool = ConnectionPool.from_url(url, **options)
    if wires_possible(pool.connection_class):
        pool = WiredPool.from_url(url, **options)
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as from_url does: the client owns its pool
    return client


def _untyped(function: Any) -> Callable[..., Any]:
    """``function`` as an untyped callable: redis-py types some of these only in some
    releases, so neither a call nor a ``type: ignore`` is right for every version."""
    return cast(Callable[..., Any], function)


def _cluster(
    nodes: list[tuple[str, int]], options: dict[str, Any], common: dict[str, Any]
) -> RedisCluster:
    if options.pop("db", 0):
        raise _error("a cluster has only database 0; remove the /<db> from the URL")
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    first_host, first_port = nodes[0]
    try:
        return _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            # A cache serves what it can: keys on healthy nodes keep working while some
            # slots are uncovered (resharding, a lost master without a replica).
            require_full_coverage=False,
            retry=Retry(NoBackoff(), CLUSTER_RETRIES),
            **{**common, **options},
        )
    except (TypeError, ValueError, RedisClusterException) as exc:
        raise _error(f"cluster seed {first_host}:{first_port}: {exc}") from None


def _sentinel(
    nodes: list[tuple[str, int]],
    options: dict[str, Any],
    common: dict[str, Any],
    retry: Retry,
    service: str,
    socket_timeout: float,
) -> Redis:
    sentinel_auth = {
        key.removeprefix("sentinel_"): options.pop(key)
        for key in ("sentinel_username", "sentinel_password")
        if key in options
    }
    ssl = options.pop("connection_class", None) is SSLConnection
    # A sentinel that does not answer is skipped for the next one, not retried: that
    # needs a socket timeout on the connections to the sentinels.
    socket = {**{k: v for k, v in common.items() if k.startswith("socket_")}}
    socket["socket_timeout"] = socket_timeout
    sentinel_kwargs = {**socket, **sentinel_auth, "retry": Retry(NoBackoff(), 0), "ssl": ssl}
    sentinel = _untyped(Sentinel)(nodes, sentinel_kwargs=sentinel_kwargs)
    client: Redis = sentinel.master_for(
        service,
        connection_pool_class=_MasterFollowingPool,
        retry=retry,
        ssl=ssl,
        **{**common, **options},
    )
    return client


class _Cluster(RedisCluster):
    """``RedisCluster`` whose failures are all ``RedisError``s.

    redis-py raises ``RedisClusterException`` (not a ``RedisError``) when no seed answers or a
    slot is not covered; the store's boundary turns only ``RedisError`` into a miss.
    """

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise _cluster_error(exc) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _cluster_error(exc) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused, as redis-py does
        # Abstract only in some releases' stubs: built untyped, like the Sentinel pieces.
        pipeline: ClusterPipeline = _untyped(_ClusterPipeline)(self, transaction)
        return pipeline


class _ClusterPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise _cluster_error(exc) from exc


def _cluster_error(exc: RedisClusterException) -> ClusterError:
    return ClusterError(f"{type(exc).__name__}: {exc}")


class _MasterFollowingPool(SentinelConnectionPool):
    """A master pool that notices a failover even while its connections still work.

    It also closes the sentinel connections when the client closes: the pool is their only
    owner.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        _untyped(super().__init__)(service_name, sentinel_manager, **kwargs)
        self._checked_at = -math.inf

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if now - self._checked_at >= MASTER_CHECK_INTERVAL:
            self._checked_at = now
            # Drops idle connections when the master moved. Sentinels unreachable: keep the
            # master we know; connecting will tell.
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await _untyped(self.get_master_address)()
        connection = await _untyped(super().get_connection)()
        try:
            if self.master_address is not None and self.master_address != (
                connection.host,
                connection.port,
            ):
                # Busy when the master moved, so not dropped then: reconnect to the new one.
                await connection.disconnect()
                await connection.connect()
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def _seeds(url: str, mode: Mode) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The ``(host, port)`` of each entry, and the options they share."""
    parts = [part.strip() for part in url.split(",")]
    if not all(parts):
        raise _error("an entry of the comma-separated list is empty")
    if "://" not in parts[0]:
        raise _error(f"entry 1 ({_redact(parts[0])}): the first entry needs a scheme (redis://)")
    nodes: list[tuple[str, int]] = []
    shared: dict[str, Any] = {}
    for number, part in enumerate(parts, start=1):
        where = f"entry {number} ({_redact(part)})"
        full = "://" in part
        options = _options(part if full else f"redis://{part}", where, mode)
        if options.get("connection_class") is UnixDomainSocketConnection:
            raise _error(f"{where}: unix sockets cannot be used in {mode} mode")
        host = options.pop("host", None)
        port = int(options.pop("port", _PORTS[mode]))
        if not host:
            raise _error(f"{where}: no host")
        if number == 1:
            shared = options
        elif (full and options != shared) or (not full and options):
            raise _error(
                f"{where}: give host:port only, or the scheme, credentials and options of entry 1"
            )
        nodes.append((host, port))
    return nodes, dict(shared)


def _options(url: str, where: str, mode: Mode) -> dict[str, Any]:
    try:
        options = dict(parse_url(url))
    except ValueError as exc:
        hint = ""
        if "," in url and mode == "standalone":
            hint = " (several entries need TIERED_CACHE_REDIS_MODE=cluster or sentinel)"
        raise _error(f"{where}: {exc}{hint}") from None
    scheme, allowed = _OPTIONS_BY_CLASS[options.get("connection_class", Connection)]
    if mode == "sentinel":
        allowed |= _SENTINEL_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise _error(f"{where}: unknown option(s) {', '.join(unknown)} for a {scheme} URL")
    return options


def _redact(part: str) -> str:
    """The entry as it may be shown: without its credentials."""
    try:
        netloc = urlsplit(part if "://" in part else f"//{part}").netloc
    except ValueError:
        return "?"
    _, at, hostport = netloc.rpartition("@")
    return f"***@{hostport}" if at else hostport


def _error(detail: str) -> ConfigurationError:
    return ConfigurationError(f"invalid cache settings: {URL_VARIABLE}: {detail}")
