"""Lua scripts sent by SHA: ``EVALSHA``, and ``EVAL`` once where the server lacks one.

A script is a command like any other here, ``("eval", (script, numkeys, *keys, *args))``.
The first time a client runs a script it is sent as ``EVAL``, which runs it and caches it
on that server; after that ``pipeline`` sends it as ``EVALSHA`` (a 40-byte digest instead
of the script's text, which Redis would otherwise hash again on every call). A server that
lost the script since (a restart, ``SCRIPT FLUSH``, a cluster node that never ran it)
answers ``NOSCRIPT`` without running it; those commands, and only those, are sent again
once as ``EVAL``. (The commands of a pipeline after one that answered ``NOSCRIPT`` have
run already when it runs again: nothing may depend on that order for its correctness,
only, as a lease's release after its fill, for sparing work; sending a script's text on a
client's first use keeps even that order for a fresh fleet on a fresh server.)
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from .direct import RAW, call, send_many, usable
from .loops import running_client

__all__ = ["Command", "combine", "evalsha", "netstrings", "pipeline", "sha_of"]

Command = tuple[str, tuple[Any, ...]]  # a client method name and its arguments
_SHAS: dict[str, str] = {}
# Per client (the running loop's, behind a PerLoopClient): the scripts it has sent in full.
_SENT: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def sha_of(script: str) -> str:
    """The SHA-1 Redis knows ``script`` by (memoised: scripts are module constants)."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    return sha


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def _sent(client: Any) -> set[str]:
    target = running_client(client)
    try:
        sent = _SENT.get(target)
        if sent is None:
            sent = _SENT[target] = set()
    except TypeError:  # not weakly referable: send by SHA, load on NOSCRIPT
        return set(_SHAS.values())
    return sent


async def evalsha(client: Any, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Run ``script`` on ``client`` by its SHA; by its text if the server may lack it."""
    sha, sent = sha_of(script), _sent(client)
    if sha in sent:
        try:
            return await call(client, "evalsha", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not _noscript(exc):
                raise
    reply = await call(client, "eval", script, len(keys), *keys, *args)
    sent.add(sha)
    return reply


async def pipeline(
    client: Any, commands: Sequence[Command], *, raise_on_error: bool = True, on_wire: bool = True
) -> list[Any]:
    """Run ``commands`` in one non-transactional pipeline, scripts by SHA once sent; raises
    the first error a command answered, as ``execute()`` does (or, without
    ``raise_on_error``, returns each command's error in place of its reply). ``on_wire``:
    as for ``direct.send_many``."""
    # redis-py before 8.2 refuses EVALSHA in a cluster's pipeline: there, scripts go by text.
    sent = set() if isinstance(client, RedisCluster) else _sent(client)
    first: list[str] = []
    replies = await _pipelined(client, commands, sent, first, on_wire)
    sent.update(first)
    missing = [i for i, reply in enumerate(replies) if _noscript(reply)]
    if missing:
        # Not run at all: safe to send again, by text this time (which caches them).
        again = await _pipelined(client, [commands[i] for i in missing], set(), [], on_wire)
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


async def _pipelined(
    client: Any, commands: Sequence[Command], sent: set[str], first: list[str], on_wire: bool
) -> list[Any]:
    """Every command's reply or error; scripts known to ``sent`` go by SHA, the SHAs of
    those sent in full are added to ``first``."""
    resolved: list[Command] = []
    for name, args in commands:
        if name == "eval":
            sha = sha_of(args[0])
            if sha in sent:
                resolved.append(("evalsha", (sha, *args[1:])))
                continue
            first.append(sha)
        resolved.append((name, args))
    if usable(client) and all(name in RAW for name, _ in resolved):
        packed = [(name.upper(), *args) for name, args in resolved]
        return await send_many(client, packed, on_wire=on_wire)
    pipe = client.pipeline(transaction=False)
    for name, args in resolved:
        getattr(pipe, name)(*args)
    return list(await pipe.execute(raise_on_error=False))


# Runs several scripts as one. KEYS = every script's keys, in order; ARGV[1] = every
# argument as netstrings ("<length>:<bytes>"): how many scripts, then (keys, args) counts
# per script, then every script's arguments. One argument, not one per value: redis-py
# encodes each argument of a command in Python, which costs a fill more than anything
# else it sends. Each script's body is a function whose KEYS and ARGV are its own slices.
# Returns each script's reply (false for nil, which would end the table).
_COMBINED_MAIN = """
local packed, argv, at = ARGV[1], {}, 1
while at <= #packed do
  local colon = string.find(packed, ':', at, true)
  local size = tonumber(string.sub(packed, at, colon - 1))
  argv[#argv + 1] = string.sub(packed, colon + 1, colon + size)
  at = colon + size + 1
end
local n = tonumber(argv[1])
local k, a = 0, 1 + 2 * n
local out = {}
for i = 1, n do
  local nk, na = tonumber(argv[2 * i]), tonumber(argv[2 * i + 1])
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[k + j] end
  for j = 1, na do args[j] = argv[a + j] end
  k, a = k + nk, a + na
  local reply = parts[i](keys, args)
  if reply == nil then reply = false end
  out[i] = reply
end
return out
"""
_COMBINED: dict[tuple[str, ...], str] = {}


def _combined(scripts: tuple[str, ...]) -> str:
    text = _COMBINED.get(scripts)
    if text is None:
        parts = [
            f"local function part{i}(KEYS, ARGV)\n{body}\nend\n"
            for i, body in enumerate(scripts, 1)
        ]
        table = ", ".join(f"part{i}" for i in range(1, len(scripts) + 1))
        text = _COMBINED[scripts] = "".join(parts) + f"local parts = {{{table}}}\n" + _COMBINED_MAIN
    return text


def combine(commands: Sequence[Command]) -> tuple[str, list[Any], list[Any]]:
    """Scripts meant for one pipeline (``("eval", (script, numkeys, *keys, *args))``, every
    key on one server) as one script: ``(script, keys, args)``, whose reply lists each
    one's. Atomic, unlike the pipeline: a later script's writes follow the earlier's."""
    keys: list[Any] = []
    args: list[Any] = []
    counts: list[int] = []
    for _, (_script, numkeys, *rest) in commands:
        keys.extend(rest[:numkeys])
        args.extend(rest[numkeys:])
        counts += [numkeys, len(rest) - numkeys]
    scripts = tuple(command[1][0] for command in commands)
    return _combined(scripts), keys, [netstrings([len(commands), *counts, *args])]


def netstrings(values: Sequence[Any]) -> bytes:
    """``values`` as one argument: each as ``<length>:<bytes>``, encoded as redis-py
    would encode it on its own (bytes as they are, str as UTF-8, numbers by ``repr``)."""
    parts = []
    for value in values:
        if type(value) is bytes:
            data = value
        elif type(value) is str:
            data = value.encode()
        elif type(value) in (int, float):
            data = repr(value).encode()
        else:
            raise TypeError(f"a script argument must be bytes, str, int or float: {value!r}")
        parts.append(b"%d:%s" % (len(data), data))
    return b"".join(parts)
