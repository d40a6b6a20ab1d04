"""Commands of one event-loop turn sent together: one pipeline, one write, one read.

redis-py spends most of a command's CPU around it, not in it: a write, a wake-up of the
loop for the reply, a read, and the bookkeeping of the pool and the parser. On this
project's benchmark machine that is about 70 µs per command sent alone and about 29 µs
per command sent in a pipeline of 16 (docs/benchmarks.md). A busy worker has many
requests at the same point at once (their lookups, their stores), so their commands can
share one round trip without waiting for one another.

A command sent while none of its client's awaits a reply goes out at once, as it always
did: an idle worker pays nothing. While others are in flight, the worker is busy and the
command will wait for the loop anyway; the first such command of a turn leads: it yields
once to the loop, so the tasks ready in the same turn can add theirs, then sends what
was gathered as one non-transactional pipeline (or, alone, as a plain command) and hands
each reply to the task that asked. Nothing waits for a timer.

Each command keeps what it had alone:

- **its reply or error**: a pipeline answers per command, so one command's error (a
  script's, a wrong type) is that caller's only; a lost connection is everyone's, as it
  would have been for commands sent apart on a shared pool;
- **its budget and breaker**: every caller still runs inside its own ``RedisStore._run``;
  a caller whose budget runs out stops waiting, and the others are not affected;
- **its script cache**: scripts go by SHA once sent, by text after ``NOSCRIPT``
  (``scripts.pipeline``).

If the leader is cancelled (its budget ran out, its client went away) before the replies
came, the commands it carried for others may or may not have run: each of those callers
sends its own again, on its own budget. Every command batched here may run twice
without harm (lookups, stores of the same value, lease takes that recognise their own
token). A cluster is left out: its commands go to several nodes, and its pipelines are
not cheaper per command.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from redis.asyncio import Redis

from .direct import call
from .loops import running_client
from .scripts import Command, combine, evalsha, pipeline
from .wire import own_copy

__all__ = ["execute", "run_scripts"]

# Per client (the running loop's, behind a PerLoopClient): what it has in flight.
_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


class _LeaderGone(Exception):
    """The batch's leader was cancelled before its replies came: send it yourself."""


class _State:
    """A client's commands awaiting replies (``busy``), and the batch gathering now."""

    __slots__ = ("batch", "busy")

    def __init__(self) -> None:
        self.batch: _Batch | None = None
        self.busy = 0


class _Batch:
    __slots__ = ("commands", "waiters")

    def __init__(self, command: Command) -> None:
        self.commands = [command]
        self.waiters: list[asyncio.Future[Any]] = []  # the followers', in command order

    def join(self, command: Command, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        waiter = loop.create_future()
        self.commands.append(command)
        self.waiters.append(waiter)
        return waiter

    def answer(self, replies: list[Any]) -> None:
        for waiter, reply in zip(self.waiters, replies[1:], strict=True):
            if waiter.done():  # its caller stopped waiting (its budget, a cancel)
                continue
            if isinstance(reply, Exception):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def fail(self, error: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if isinstance(error, Exception):
                    waiter.set_exception(own_copy(error))
                else:  # the leader's cancellation is its own, not its followers'
                    waiter.set_exception(_LeaderGone())
                waiter.exception()  # retrieved: a follower gone already never reads it


async def execute(client: Any, command: Command) -> Any:
    """Run ``command`` (``(method name, arguments)``; ``"eval"`` for a script, as in
    ``scripts``) on ``client``; its reply, or its error raised. While other commands of
    the client await their replies, in one pipeline with the commands other tasks ask
    for in the same turn of the loop; otherwise at once."""
    target = running_client(client)
    if not isinstance(target, Redis):
        return await _alone(target, command)
    state = _STATES.get(target)
    if state is None:
        state = _STATES[target] = _State()
    batch = state.batch
    if batch is not None:
        return await _follow(target, command, batch)
    state.busy += 1
    try:
        if state.busy == 1:  # nothing else in flight: no company to wait for
            return await _alone(target, command)
        return await _lead(target, command, state)
    finally:
        state.busy -= 1


async def _lead(target: Any, command: Command, state: _State) -> Any:
    batch = state.batch = _Batch(command)
    try:
        await asyncio.sleep(0)  # the turn's other ready tasks add their commands
        state.batch = None
        if not batch.waiters:
            return await _alone(target, command)
        replies = await pipeline(target, batch.commands, raise_on_error=False)
    except BaseException as exc:
        if state.batch is batch:
            state.batch = None
        batch.fail(exc)
        raise
    batch.answer(replies)
    reply = replies[0]
    if isinstance(reply, Exception):
        raise reply
    return reply


async def _follow(target: Any, command: Command, batch: _Batch) -> Any:
    waiter = batch.join(command, asyncio.get_running_loop())
    try:
        return await waiter
    except _LeaderGone:
        return await execute(target, command)


async def _alone(client: Any, command: Command) -> Any:
    name, args = command
    if name == "eval":
        script, numkeys, *rest = args
        return await evalsha(client, script, rest[:numkeys], rest[numkeys:])
    return await call(client, name, *args)


async def run_scripts(client: Any, commands: list[Command]) -> list[Any]:
    """Run ``commands`` (scripts only, every key on one server) as one command (in the
    turn's batch): their replies, as ``pipeline`` would give them."""
    if len(commands) == 1:
        return [await execute(client, commands[0])]
    script, keys, args = combine(commands)
    return list(await execute(client, ("eval", (script, len(keys), *keys, *args))))
