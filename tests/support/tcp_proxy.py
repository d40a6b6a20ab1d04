"""An asyncio TCP proxy for fault injection between a client and a (Redis) server.

Listens on 127.0.0.1:<free port> and forwards to ``(target_host, target_port)``. The mode can
be switched at any time and applies to open connections as well as new ones:

* ``pass`` (:meth:`~TcpProxy.passthrough`): forward both ways.
* ``delay`` (:meth:`~TcpProxy.delay`): every chunk, in both directions, is delivered ``seconds``
  after it was read (order preserved, pipelined: a round trip costs ``2 * seconds``).
* ``blackhole`` (:meth:`~TcpProxy.blackhole`): connections are accepted and kept open but
  nothing is forwarded; bytes read meanwhile are discarded (like a network partition, clients
  hang until their own timeout). Connections accepted in this mode never get an upstream, so
  they stay dead after switching back; clients must reconnect (redis-py does after a timeout).
* ``drop`` (:meth:`~TcpProxy.drop`): new connections are accepted and closed at once; open
  ones keep their current behaviour unless ``cut_existing=True``.
* :meth:`~TcpProxy.cut`: abort every open connection now (both sides), keep the mode.

:class:`TcpProxy` runs in the current event loop (``async with TcpProxy(port) as proxy``).
:class:`ThreadedTcpProxy` hosts one in its own thread and loop, for sync code and benchmarks
(``with ThreadedTcpProxy(port) as proxy``); its mode methods block until applied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

HOST = "127.0.0.1"
Mode = Literal["pass", "delay", "blackhole", "drop"]
MODES: tuple[Mode, ...] = ("pass", "delay", "blackhole", "drop")

_CHUNK = 64 * 1024
_P = TypeVar("_P", bound="TcpProxy")
_TP = TypeVar("_TP", bound="ThreadedTcpProxy")
_R = TypeVar("_R")


class _Connection:
    """One proxied client connection and (once connected) its upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.writers: list[asyncio.StreamWriter] = [client]

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        """Close both sides; abort if a graceful close does not finish promptly."""
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                writer.transport.abort()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            except Exception:  # the peer reset the connection: closed anyway
                pass


class TcpProxy:
    """Fault-injecting TCP proxy living in the running event loop."""

    def __init__(
        self,
        target_port: int,
        target_host: str = HOST,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __repr__(self) -> str:
        return (
            f"<TcpProxy {HOST}:{self._port} -> {self.target_host}:{self.target_port} "
            f"mode={self._mode} connections={len(self._connections)}>"
        )

    # -- addresses
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- modes
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def delay_seconds(self) -> float:
        return self._delay

    def set_mode(self, mode: Mode, *, seconds: float = 0.0) -> None:
        """Switch to ``mode`` (``seconds`` is the per-direction latency for ``delay``)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._delay = seconds if mode == "delay" else 0.0
        self._mode = mode

    def passthrough(self) -> None:
        self.set_mode("pass")

    def delay(self, seconds: float) -> None:
        self.set_mode("delay", seconds=seconds)

    def blackhole(self) -> None:
        self.set_mode("blackhole")

    def drop(self, *, cut_existing: bool = False) -> None:
        self.set_mode("drop")
        if cut_existing:
            self.cut()

    def cut(self) -> int:
        """Abort all currently open connections (both sides); returns how many."""
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        return len(connections)

    # -- lifecycle
    async def start(self: _P) -> _P:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._closing = False
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        """Stop listening, abort every connection and wait for all handler tasks."""
        if self._server is None:
            return
        self._closing = True
        server, self._server = self._server, None
        server.close()
        while self._tasks:
            self._tasks = {task for task in self._tasks if not task.done()}
            self.cut()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let handlers of just-accepted sockets start and exit
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5.0)

    async def __aenter__(self: _P) -> _P:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            await self._serve(connection, reader)
        except asyncio.CancelledError:
            pass  # aclose(): the connection is closed below
        except Exception:  # never let a handler error reach the loop's exception handler
            connection.abort()
        finally:
            self._connections.discard(connection)
            if self._closing:
                connection.abort()
            try:
                with contextlib.suppress(OSError):  # a reset while closing: closed anyway
                    await connection.close()
            finally:
                # Always: a task left here done would make aclose() spin forever.
                self._tasks.discard(task)

    async def _serve(self, connection: _Connection, client_reader: asyncio.StreamReader) -> None:
        mode = self._mode
        if self._closing or mode == "drop":
            return
        if mode == "blackhole":
            while await client_reader.read(_CHUNK):
                pass  # discard until the client goes away or we are cut
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError):
            connection.abort()  # like a refused connection, as far as the client can tell
            return
        connection.writers.append(upstream_writer)
        client_writer = connection.writers[0]
        await asyncio.gather(
            self._pipe(connection, client_reader, upstream_writer),
            self._pipe(connection, upstream_reader, client_writer),
        )

    async def _pipe(
        self, connection: _Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        """Forward ``src`` to ``dst`` honouring the mode; a queue keeps delayed chunks ordered."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read_side() -> None:
            try:
                while data := await src.read(_CHUNK):
                    mode = self._mode
                    if mode == "blackhole":
                        continue
                    due = loop.time() + (self._delay if mode == "delay" else 0.0)
                    queue.put_nowait((due, data))
            except OSError:
                connection.abort()
            finally:
                queue.put_nowait(None)

        async def write_side() -> None:
            try:
                while (item := await queue.get()) is not None:
                    due, data = item
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    if self._mode == "blackhole":
                        continue
                    if dst.is_closing():
                        return
                    dst.write(data)
                    await dst.drain()
                if not dst.is_closing() and dst.can_write_eof():
                    dst.write_eof()  # half-close: pass the EOF on, let the other side finish
            except (OSError, RuntimeError):
                connection.abort()

        await asyncio.gather(read_side(), write_side())


class ThreadedTcpProxy:
    """A :class:`TcpProxy` running in a private event loop on a daemon thread.

    Usable from sync code (``with ThreadedTcpProxy(port) as proxy: ...``); every mode method
    returns once the change is in effect in the proxy's loop.
    """

    def __init__(
        self,
        target_port: int,
        target_host: str = HOST,
        *,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self.proxy = TcpProxy(target_port, target_host, connect_timeout=connect_timeout)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<ThreadedTcpProxy {self.proxy!r}>"

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def mode(self) -> Mode:
        return self.proxy.mode

    @property
    def connection_count(self) -> int:
        return self._call(lambda: self.proxy.connection_count)

    def set_mode(self, mode: Mode, *, seconds: float = 0.0) -> None:
        self._call(lambda: self.proxy.set_mode(mode, seconds=seconds))

    def passthrough(self) -> None:
        self._call(self.proxy.passthrough)

    def delay(self, seconds: float) -> None:
        self._call(lambda: self.proxy.delay(seconds))

    def blackhole(self) -> None:
        self._call(self.proxy.blackhole)

    def drop(self, *, cut_existing: bool = False) -> None:
        self._call(lambda: self.proxy.drop(cut_existing=cut_existing))

    def cut(self) -> int:
        return self._call(self.proxy.cut)

    def start(self: _TP) -> _TP:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="ThreadedTcpProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise RuntimeError("ThreadedTcpProxy did not start in time")
        if self._error is not None:
            self._thread.join(self.timeout)
            self._thread = None
            raise RuntimeError("ThreadedTcpProxy failed to start") from self._error
        return self

    def stop(self) -> None:
        """Close the proxy and its connections, stop the loop and join the thread."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(event.set)
        thread.join(self.timeout)
        if thread.is_alive():
            raise RuntimeError("ThreadedTcpProxy thread did not stop in time")
        self._thread = self._loop = self._stop_event = None

    def __enter__(self: _TP) -> _TP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread just ends
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        async with self.proxy:
            self._ready.set()
            await self._stop_event.wait()

    def _call(self, fn: Callable[[], _R]) -> _R:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("proxy not started")
        future: concurrent.futures.Future[_R] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(self.timeout)
