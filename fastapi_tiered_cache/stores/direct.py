"""One command on a pooled connection, without redis-py's per-command machinery.

``Redis.execute_command`` wraps every command in more than the command needs here: a retry
object called through two closures, observability hooks awaited before and after (timing,
pool names, error counts), the response-callback lookup, the client's lazy initialisation.
On the cache's hot commands that is 7-11 % of the CPU of a lone ``GET`` (the L2 hit), 2-9 %
of a lone script (the lookup, the fill) and up to 16 % of a batch's (``benchmarks/micro.py``).
``send`` does what remains: a connection from the pool, the command written, its reply
read, the connection returned; ``send_many`` the same for the commands of one batch
(``batching.py``), in one write. On a client this package built (``wire.WiredPool``) both
go on its wire instead: one connection every caller shares, with no pool to go through.

What it keeps from redis-py: the pool (its bound, a Sentinel pool's failover), the
connection's health check, and the cleanup: a connection whose replies were not all read
(an error, a cancellation, a budget that ran out) is disconnected before it goes back to
the pool, so no later command can read this one's reply. What the cache does instead of
redis-py's retry: one second try, on a fresh connection, after a lost connection (as the
client's own ``Retry`` is configured, ``connect.RETRIES``); every command sent here may run
twice without harm (lookups, stores of one value, lease takes that know their own token).

Only plain clients on a pool go this way (``usable``); a cluster, a client holding one
connection, or anything else is sent its commands through its own methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connect import RETRIES
from .wire import Wire, wire_of

__all__ = ["RAW", "call", "send", "send_many", "usable"]

T = TypeVar("T")

# Commands sent as they are (the name upper-cased): none has a redis-py response callback
# that would turn its reply into something else.
RAW = frozenset({"eval", "evalsha", "get"})


def usable(client: Any) -> bool:
    """Whether ``send`` may run commands on ``client``: a plain ``Redis`` on a pool."""
    return (
        type(client) is Redis
        and client.connection is None
        and not getattr(client, "single_connection_client", True)
    )


async def call(client: Any, name: str, *args: Any) -> Any:
    """``client.<name>(*args)``: by ``send`` where it may go so, else by the method."""
    if name in RAW and usable(client):
        return await send(client, name.upper(), *args)
    return await getattr(client, name)(*args)


async def send(client: Redis, *args: Any) -> Any:
    """Run the command ``args`` (``"GET", key`` or ``"EVALSHA", sha, numkeys, ...``) on
    ``client`` (``usable``): its raw reply (no response callback: these commands have
    none), or its error raised (``ResponseError`` for an error reply, ``NoScriptError``
    included)."""
    wire = wire_of(client)
    if wire is not None:
        reply = (await _on_wire(wire, [args]))[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply
    return await _retried(lambda: _once(client, args))


async def send_many(
    client: Redis, commands: list[tuple[Any, ...]], *, on_wire: bool = True
) -> list[Any]:
    """Run ``commands`` (each as for ``send``) on ``client`` (``usable``) in one write and
    one read, as a non-transactional pipeline: each one's raw reply, or its error reply
    (``ResponseError``) in its place. ``on_wire=False`` keeps them off the wire (a
    purge's: their replies can be large, and the request path's lookups would wait
    behind them)."""
    wire = wire_of(client) if on_wire else None
    if wire is not None:
        return await _on_wire(wire, commands)
    return await _retried(lambda: _many(client, commands))


async def _on_wire(wire: Wire, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``wire.send(commands)``, tried again as ``_retried`` does (without its closure: the
    path of every hot command)."""
    for left in range(RETRIES, -1, -1):
        try:
            return await wire.send(commands)
        except (RedisConnectionError, RedisTimeoutError):
            if not left:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _retried(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, tried again on a fresh connection after a lost one, as often as the
    client's own ``Retry`` would (``RETRIES``); a full pool is not tried again."""
    for left in range(RETRIES, -1, -1):
        try:
            return await attempt()
        except MaxConnectionsError:
            raise  # a full pool: it would be full again now
        except (RedisConnectionError, RedisTimeoutError):
            if not left:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _once(client: Redis, args: tuple[Any, ...]) -> Any:
    pool: Any = client.connection_pool  # get_connection is untyped in some releases
    connection = await pool.get_connection()
    try:
        await connection.send_command(*args)
        return await connection.read_response()
    except ResponseError:
        raise  # an error reply, read in full: the connection is fine
    except BaseException:
        # redis-py disconnects on these too; without it, the next command on this
        # connection would read this one's reply.
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


async def _many(client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:  # read in full: the next reply follows
                replies.append(exc)
        return replies
    except BaseException:
        await connection.disconnect(nowait=True)  # replies may be left unread
        raise
    finally:
        await pool.release(connection)
