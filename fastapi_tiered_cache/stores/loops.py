"""``PerLoopClient``: the L2 client as the cache holds it, one ``redis.asyncio`` client per
event loop.

A redis.asyncio connection (and so a pool, a pub/sub, a pipeline) belongs to the event loop
that opened it. One process often runs several loops over its life, one after the other or
at once: Starlette's ``TestClient`` starts a loop per ``with`` block and per request outside
one, pytest-asyncio one per test, a script may call ``asyncio.run`` twice. A connection used
from the wrong loop fails with "Event loop is closed" or "attached to a different loop".

So every attribute of a ``PerLoopClient`` is read from the client of the *running* loop,
made by the factory on first use in that loop. When that loop shuts down (``asyncio.run``,
``asyncio.Runner``, anyio, uvicorn and pytest-asyncio all finish with
``loop.shutdown_asyncgens()``), its client is closed on it, while it still runs: a small
async generator started in the loop is the signal, as that call closes every async
generator the loop started. The client of a loop that was closed without it is dropped
untouched.

Outside any loop (at start-up: ``isinstance``, ``hasattr``, ``register_script``) a first
client answers, which never opens a connection: every loop gets a client of its own, so
nothing outlives the loops that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from redis.commands.core import AsyncScript

__all__ = [
    "PerLoopClient",
    "asyncio_running",
    "background_task",
    "ours",
    "running_client",
    "warn_not_asyncio",
]

logger = logging.getLogger("fastapi_tiered_cache")
_warned: list[bool] = []


def asyncio_running() -> bool:
    """Whether this code runs in an asyncio event loop (not trio, through anyio)."""
    return asyncio._get_running_loop() is not None


def background_task(
    task: asyncio.Task[None] | None, start: Callable[[], Coroutine[Any, Any, None]], name: str
) -> asyncio.Task[None] | None:
    """``task``, or a new one running ``start()`` when ``task`` is finished or belongs to
    another loop. Outside asyncio (trio) nothing starts: the work waits, kept by its owner,
    for the next asyncio loop that asks."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return task
    if task is None or task.done() or task.get_loop() is not loop:
        return loop.create_task(start(), name=name)
    return task


def ours(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` belongs to the running loop (another loop's died with it)."""
    return task.get_loop() is asyncio._get_running_loop()


def warn_not_asyncio() -> None:
    """Say once per process that Redis is off outside asyncio."""
    if not _warned:
        _warned.append(True)
        logger.warning(
            "fastapi-tiered-cache: running outside asyncio (trio?): redis.asyncio is"
            " asyncio-only, so L2, the invalidation bus, the fleet lease and background"
            " refreshes are off under this event loop; L1 and in-process coalescing work",
            extra={"event": "not_asyncio"},
        )


def running_client(client: Any) -> Any:
    """The client that serves the running loop: ``client`` itself, or, behind a
    ``PerLoopClient``, the running loop's (``type``, which its ``__class__`` cannot fool)."""
    return client.current() if type(client) is PerLoopClient else client


class _Binding:
    """One loop's client, and the async generator whose closing closes it."""

    __slots__ = ("client", "guard", "loop", "owner")

    def __init__(self, owner: PerLoopClient, loop: asyncio.AbstractEventLoop, client: Any):
        self.owner = owner
        self.loop = loop
        self.client = client
        self.guard = self._closing()
        # Run it to its yield now: the loop's first-iteration hook adopts it, so the loop's
        # shutdown_asyncgens() will close it (and, in its finally, the client).
        with contextlib.suppress(StopIteration):
            self.guard.asend(None).send(None)

    async def _closing(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self.owner._release(self):  # still in use: close it on its own loop
                with contextlib.suppress(Exception):
                    await self.client.aclose()

    def abandon(self) -> None:
        """Finish the generator without its loop (closed): nothing may touch that loop."""
        with contextlib.suppress(StopIteration, RuntimeError):
            self.guard.aclose().send(None)


class PerLoopClient:
    """A ``redis.asyncio`` client per event loop (see the module docstring).

    - ``factory``: makes a new, unconnected client (``build_client`` is lazy).

    ``isinstance`` sees the class of the clients (``Redis``, ``RedisCluster``), so code that
    treats a cluster differently keeps working. Outside any running loop (at start-up, for
    ``hasattr`` checks) a first client answers, which is never given to a loop.

    Example::

        client = PerLoopClient(lambda: build_client("redis://localhost:6379/0"))
        await client.get("key")  # this loop's client
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        first = factory()
        self._factory = factory
        self._first = first
        self._bound: tuple[asyncio.AbstractEventLoop | None, Any] = (None, first)
        self._bindings: dict[asyncio.AbstractEventLoop, _Binding] = {}
        self._lock = threading.RLock()  # abandoning a binding calls _release

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what isinstance() consults
        return type(self._first)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"PerLoopClient({self._first!r})"

    def current(self) -> Any:
        """The running loop's client (made on first use in it); the first one outside."""
        loop = asyncio._get_running_loop()
        bound = self._bound  # one read: another thread's loop may rebind at any time
        if bound[0] is loop:
            return bound[1]
        if loop is None:
            return self._first
        return self._switch(loop)

    def register_script(self, script: str) -> AsyncScript:
        """A script that runs on whichever loop's client calls it (not the first one's)."""
        return AsyncScript(self, script)  # type: ignore[arg-type]

    @property
    def loops(self) -> int:
        """Loops holding a client now."""
        return len(self._bindings)

    def _switch(self, loop: asyncio.AbstractEventLoop) -> Any:
        with self._lock:
            binding = self._bindings.get(loop)
            if binding is None:
                self._drop_closed()
                client = self._factory()
                binding = self._bindings[loop] = _Binding(self, loop, client)
            self._bound = (loop, binding.client)
        return binding.client

    def _drop_closed(self) -> None:
        for loop in [loop for loop in self._bindings if loop.is_closed()]:
            binding = self._bindings.pop(loop)
            binding.abandon()

    def _release(self, binding: _Binding) -> bool:
        """Forget ``binding`` (its loop is ending); False if it was forgotten already."""
        with self._lock:
            if self._bindings.get(binding.loop) is not binding:
                return False
            del self._bindings[binding.loop]
            if self._bound[0] is binding.loop:
                self._bound = (None, self._first)
            return True
