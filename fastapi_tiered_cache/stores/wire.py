"""One connection that carries every hot command of a client, replies matched in order.

A command sent through redis-py's pool costs the worker about twice what the round trip
itself needs (``benchmarks/micro.py``: 57 against 27 µs of CPU for a ``GET`` on one
machine): a connection taken from the pool and given back (its events, its health
check, its observability hooks), the command written through a ``StreamWriter`` and
drained, the reply read through a ``StreamReader`` whose wake-ups go through a future of
their own, then parsed. The cache's hot commands (the L2 lookup, the fill, ``cache.get``;
``direct.RAW``) need none of it: Redis answers the commands of one connection in the order
it got them, so one connection can carry every one of them at once, each caller waiting
for the reply at its place in the line.

A ``Wire`` is that connection. A command is written to the socket at once (no drain: the
transport keeps what the kernel cannot take yet) and its caller waits on a future; each
reply, parsed by hiredis as it arrives, goes to the oldest caller still in line. So:

- concurrent commands pipeline by themselves, on one socket, without a pool to exhaust;
- a caller that stops waiting (its budget ran out, it was cancelled) leaves its place in
  the line; its reply, when it comes, is read and dropped, and the next caller gets its
  own. Nothing is ever read by the wrong caller, which a pooled connection can only
  promise by being dropped after such a cancellation;
- a server that stops answering is given up after ``STALL`` seconds of silence with a
  caller gone: the connection is aborted, every caller still waiting gets
  ``ConnectionError`` (as a lost connection gives), and the next command opens a new one;
- a lost connection fails every caller waiting on it; ``direct`` then tries each command
  once more, as it does for a pooled one.

The handshake (AUTH, HELLO, SELECT, the client's name and library) is redis-py's own: the
wire opens a connection of the pool's class with the pool's arguments, lets it connect,
then takes over its socket. Only a plain client built by this package with hiredis present
gets a wire (``WiredPool``, ``build_client``); a TLS, Sentinel or cluster client, or one
the application built, keeps the pool (``direct``'s pooled path).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import copy
from collections import deque
from typing import Any

from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is in every extra the tests install
    hiredis = None

__all__ = ["STALL", "Wire", "WiredPool", "own_copy", "wire_of", "wires_possible"]

STALL = 1.0  # seconds without a reply, with a caller gone, before the connection is dropped
_MORE = object()  # hiredis: no complete reply buffered yet (a reply may itself be False)
_PUSH: type | None = getattr(hiredis, "PushNotification", None)
_CLASSES = (Connection, UnixDomainSocketConnection)  # not TLS: its transport differs by version


def wires_possible(connection_class: Any) -> bool:
    """Whether a pool of ``connection_class`` may carry a wire (hiredis present, plain TCP
    or a Unix socket)."""
    return hiredis is not None and connection_class in _CLASSES


class WiredPool(ConnectionPool):
    """A connection pool that also holds the client's ``Wire`` (made on first use) and
    closes it with its connections. ``build_client`` gives one to a plain client."""

    _wire: Wire | None = None

    def wire(self) -> Wire:
        """The wire of the running loop (the pool's client belongs to one loop)."""
        wire = self._wire
        if wire is None or wire.loop is not asyncio.get_running_loop():
            wire = self._wire = Wire(self)
        return wire

    async def disconnect(self, inuse_connections: bool = True) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()
        await super().disconnect(inuse_connections)


def wire_of(client: Any) -> Wire | None:
    """``client``'s wire (a ``Redis`` on a ``WiredPool``), else None: use the pool."""
    pool = getattr(client, "connection_pool", None)  # a cluster has none
    return pool.wire() if type(pool) is WiredPool else None


class _Waiter:
    """A caller in line: ``count`` replies to collect, then ``future`` gets them."""

    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []


class Wire:
    """The connection every hot command of one client shares (see the module docstring),
    opened on first use and again after a loss.

    ``send(commands)`` writes commands (``("GET", key)``...) and returns their replies, an
    error reply as its exception object in its place (``ResponseError``, ``NoScriptError``).
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self._link: _Link | None = None
        self._opening: asyncio.Task[_Link] | None = None
        self._closed = False

    async def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` (each its name and arguments, encoded as redis-py encodes
        them) and wait for their replies. ``ConnectionError`` when the connection is lost
        (or cannot be opened) before they all came."""
        link = self._link
        if link is None or link.transport is None or link.transport.is_closing():
            link = await self._open()
        return await link.send(link.pack(commands), len(commands))

    def close(self) -> None:
        """Close the connection (the pool is closing); callers in line get ``ConnectionError``."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            link.close()
        if self._opening is not None:
            self._opening.cancel()  # its connection is closed as the cancellation ends it

    async def _open(self) -> _Link:
        if self._closed:
            raise RedisConnectionError("the connection to Redis was closed")
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = self.loop.create_task(self._connect())
            opening.add_done_callback(_retrieve)
        # Shielded: a caller whose budget runs out leaves the others' connect running.
        return await asyncio.shield(opening)

    async def _connect(self) -> _Link:
        connection: Any = self.pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            try:  # redis-py bounds the socket's connect, not the handshake after it
                await asyncio.wait_for(connection.connect(), connection.socket_connect_timeout)
            except asyncio.TimeoutError:
                raise RedisTimeoutError("Timeout connecting to Redis") from None
            stream, writer, parser = connection._reader, connection._writer, connection._parser
            if stream is None or writer is None or len(stream._buffer) or _buffered(parser):
                raise RedisConnectionError("the handshake left data unread")
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            raise
        kwargs: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": parser.parse_error,  # NOSCRIPT, WRONGTYPE... as redis-py names them
            "notEnoughData": _MORE,
        }
        encoder = connection.encoder
        if encoder.decode_responses:
            kwargs["encoding"] = encoder.encoding
            kwargs["errors"] = encoder.encoding_errors
        connection._reader = connection._writer = None  # the socket is the link's now
        link = _Link(writer, hiredis.Reader(**kwargs), connection)
        if self._closed:
            link.close()
            raise RedisConnectionError("the connection to Redis was closed")
        self._link = link
        return link


class _Link(asyncio.Protocol):
    """One socket of a ``Wire``: the callers in line on it, and its replies as they come.
    A lost or dropped socket fails its own line only (the wire opens another)."""

    def __init__(self, writer: asyncio.StreamWriter, reader: Any, packer: Any) -> None:
        # The stream writer is kept, unused: collected, it would close the socket.
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.transport: Any = writer.transport
        self.reader = reader
        self.packer = packer  # the handshake's connection: it encodes commands as redis-py does
        encoder = packer.encoder
        self.utf8 = codecs.lookup(encoder.encoding).name == "utf-8" and (
            encoder.encoding_errors == "strict"
        )
        self.line: deque[_Waiter] = deque()
        self.answered = 0  # callers answered (or skipped) on this socket
        self.queued = 0  # callers put in line on it
        self.given_up = 0  # the newest place in line whose caller stopped waiting
        self.watch: asyncio.TimerHandle | None = None
        self.heard = 0.0  # when the server last sent anything (loop time)
        self.transport.set_protocol(self)

    async def send(self, packed: bytes | list[bytes], count: int) -> list[Any]:
        transport = self.transport
        if transport is None:  # lost between its opening and this caller's turn
            raise RedisConnectionError("the connection to Redis was lost")
        waiter = _Waiter(self.loop.create_future(), count)
        self.line.append(waiter)
        self.queued += 1
        place = self.queued
        if type(packed) is bytes:
            transport.write(packed)
        else:
            transport.writelines(packed)
        try:
            return await waiter.future
        except BaseException:
            future = waiter.future
            if future.cancel() or future.cancelled():  # (a task's cancel cancels it first)
                self._gave_up(place)
            raise

    def pack(self, commands: list[tuple[Any, ...]]) -> bytes | list[bytes]:
        """``commands`` in RESP, byte for byte as redis-py writes them: by hiredis's packer
        (a tenth of the CPU of redis-py's, which wraps the same one) where the text is
        UTF-8 and every argument a str, bytes, int or float; by redis-py's otherwise."""
        if self.utf8:
            try:
                if len(commands) == 1:
                    return hiredis.pack_command(commands[0])  # type: ignore[no-any-return]
                return b"".join([hiredis.pack_command(command) for command in commands])
            except TypeError:
                pass  # redis-py's says what it refuses (DataError), or encodes what it can
        return list(self.packer.pack_commands(commands))

    def close(self) -> None:
        self._drop(RedisConnectionError("the connection to Redis was closed"), abort=False)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self.heard = self.loop.time()
        reader = self.reader
        reader.feed(data)
        line = self.line
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # garbage on the wire: nothing after it can be trusted
                self._drop(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is _MORE:
                return
            if _PUSH is not None and type(reply) is _PUSH:
                continue  # a notification the server pushed, not a reply
            if not line:
                self._drop(RedisConnectionError("a reply from Redis that nobody asked for"))
                return
            waiter = line[0]
            waiter.replies.append(reply)
            if len(waiter.replies) == waiter.count:
                line.popleft()
                self.answered += 1
                if not waiter.future.done():
                    waiter.future.set_result(waiter.replies)

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        self._drop(RedisConnectionError(f"the connection to Redis was lost{reason}"))

    # stalls and losses

    def _gave_up(self, place: int) -> None:
        """The caller at ``place`` stopped waiting. If its reply has not come, and not a
        byte came from the server for ``STALL`` seconds, the server is not answering: drop
        the socket. (A long reply still arriving, another's, is an answer.)"""
        self.given_up = place
        if self.watch is None and self.transport is not None:
            self._watch(place, self.loop.time())

    def _watch(self, place: int, since: float) -> None:
        self.watch = self.loop.call_at(since + STALL, self._check, place, since)

    def _check(self, place: int, since: float) -> None:
        self.watch = None
        if self.answered >= place:  # it came: watch the newest caller gone, if still in line
            if self.given_up > self.answered:
                self._watch(self.given_up, self.loop.time())
            return
        quiet_since = max(since, self.heard)
        if self.loop.time() - quiet_since >= STALL:
            self._drop(RedisConnectionError(f"no reply from Redis in {STALL:g} s"))
        else:
            self._watch(place, quiet_since)

    def _drop(self, error: Exception, *, abort: bool = True) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        line, self.line = self.line, deque()
        for waiter in line:
            if not waiter.future.done():
                waiter.future.set_exception(own_copy(error))


def own_copy(error: Exception) -> Exception:
    """A caller's own copy of an error many callers share (a lost socket, a failed batch):
    one exception object raised in many tasks would gather all their tracebacks (and keep
    their frames alive)."""
    try:
        return copy.copy(error)  # type, arguments and attributes; no traceback
    except Exception:  # an exception that cannot be rebuilt from its arguments
        return error


def _buffered(parser: Any) -> bool:
    reader = getattr(parser, "_reader", None)
    return bool(reader is not None and reader.has_data())


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
