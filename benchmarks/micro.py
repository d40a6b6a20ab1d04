#!/usr/bin/env python
"""Small costs on every L2 hit and miss, measured apart from the noise of whole requests.

``python benchmarks/micro.py [--ref GIT_REF]`` prints a Markdown table:

- decoding a stored entry (``codec.decode``): a data entry (a ~800-byte model) and a
  response (1 KB body, 4 headers), as every L2 hit does;
- a new lease token, as every miss (and every data lookup that may take the lease) does;
- redis-py's CPU for one ``EVALSHA`` with the arguments of a fill sent one by one against
  the same arguments packed in one (what ``scripts.combine`` sends), and for a ``GET``
  and that ``EVALSHA`` through redis-py's command methods against ``stores/direct.py``
  on a pooled connection and on the wire (``stores/wire.py``), on the Redis at
  ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``).

The in-process figures are the best of 7 ``timeit`` repeats (a shared machine only ever
slows a repeat down); the Redis ones the median of 7 interleaved rounds of this process's
CPU time. With ``--ref`` the package is the one committed at that ref (before/after pairs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from benchlib.package_ref import pop_ref, use_ref  # noqa: E402

_REF = pop_ref(sys.argv)
if _REF is not None:
    use_ref(_REF)

import redis.asyncio as aioredis  # noqa: E402

from fastapi_tiered_cache.codec import decode, encode  # noqa: E402
from fastapi_tiered_cache.entry import CachedResponse, DataEntry  # noqa: E402
from fastapi_tiered_cache.leases import FleetLease  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
NUMBER = 20_000
# A fill's arguments (the store of one 1 KB entry with two indexes and the lease release).
FILL_ARGS = [2, 3, 9, 2, 4, 1, 1796687145793832, 120000000, 1796687145.79515]
FILL_ARGS += [1796690745.7949939, "bench:g0.0.0:_:pub:9fa0df9ef07c31fd7387bf14a933ca3f7f", 3601]
FILL_ARGS += [b"x" * 1188, 3599999, "003bfdfb9e04d1820328e3e8d8b9d374", "bench:lease-wake"]
FILL_ARGS += ["bench:g0.0.0:_:pub:9fa0df9ef07c31fd7387bf14a933ca3f7f", "0"]


def _bytes(value: object) -> bytes:
    # As redis-py (and ``scripts.netstrings``) encode an argument.
    return value if isinstance(value, bytes) else str(value).encode()


def best_us(call: object) -> float:
    runs = timeit.repeat(call, number=NUMBER, repeat=7)  # type: ignore[arg-type]
    return min(runs) / NUMBER * 1e6


def entries() -> dict[str, tuple[str, bytes]]:
    body = bytes(range(256)) * 3 + b"x" * 32
    data = DataEntry(
        status=200, headers=(), body=body, stored_at=1.0, fresh_for=3600.0, compute_seconds=0.01
    )
    headers = (
        (b"content-type", b"application/json"),
        (b"content-length", b"1024"),
        (b"etag", b'"abcdefghijklmnopqrstuv"'),
        (b"cache-control", b"max-age=60"),
    )
    response = CachedResponse(200, headers, b"y" * 1024, 1.0, 60.0, tags=("t",), route="/items")
    return {
        "decode a data entry (~800 B value)": ("d", encode("d", data)),
        "decode a response (1 KB, 4 headers)": ("r", encode("r", response)),
    }


async def redis_rows() -> list[tuple[str, float]]:
    client = aioredis.Redis.from_url(REDIS_URL)
    closing: list[aioredis.Redis] = [client]
    try:
        sha = await client.script_load("return 1")
        packed = b"".join(b"%d:%s" % (len(a), a) for a in map(_bytes, FILL_ARGS))
        keys = ["k1", "k2", "k3", "k4", "k5"]
        lookup = ("EVALSHA", sha, 2, "lease", "token", 3000)  # and a key
        ops = {
            f"EVALSHA, 5 keys + {len(FILL_ARGS)} arguments one by one": lambda: client.evalsha(
                sha, 5, *keys, *FILL_ARGS
            ),
            "EVALSHA, 5 keys + the same arguments packed in one": lambda: client.evalsha(
                sha, 5, *keys, packed
            ),
            "GET through redis-py's command methods": lambda: client.get("k1"),
        }
        try:
            from fastapi_tiered_cache.stores import direct
        except ImportError:  # a --ref from before stores/direct.py
            pass
        else:
            ops["GET sent by stores/direct.py"] = lambda: direct.send(client, "GET", "k1")
            ops[f"EVALSHA, 5 keys + {len(FILL_ARGS)} arguments, by stores/direct.py"] = lambda: (
                direct.send(client, "EVALSHA", sha, 5, *keys, *FILL_ARGS)
            )
            if hasattr(direct, "send_many"):
                ops["a batch of 8 lookups, by stores/direct.py (per batch)"] = lambda: (
                    direct.send_many(client, [(*lookup, f"k{i}") for i in range(8)])
                )

        try:
            from fastapi_tiered_cache.stores import wire
            from fastapi_tiered_cache.stores.connect import build_client
        except ImportError:  # a --ref from before stores/wire.py
            pass
        else:
            wired = build_client(REDIS_URL)
            closing.append(wired)
            assert type(wired.connection_pool) is wire.WiredPool
            ops["GET on the wire (stores/wire.py)"] = lambda: direct.send(wired, "GET", "k1")
            ops[f"EVALSHA, 5 keys + {len(FILL_ARGS)} arguments, on the wire"] = lambda: (
                direct.send(wired, "EVALSHA", sha, 5, *keys, *FILL_ARGS)
            )
            ops["a batch of 8 lookups, on the wire (per batch)"] = lambda: (
                direct.send_many(wired, [(*lookup, f"k{i}") for i in range(8)])
            )

        async def piped() -> None:
            pipe = client.pipeline(transaction=False)
            for i in range(8):
                pipe.execute_command(*lookup, f"k{i}")
            await pipe.execute(raise_on_error=False)

        ops["a batch of 8 lookups, redis-py pipeline (per batch)"] = piped
        samples: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(7):
            for name, op in ops.items():
                started = time.process_time()
                for _ in range(1000):
                    await op()
                samples[name].append((time.process_time() - started) / 1000 * 1e6)
        return [(name, statistics.median(values)) for name, values in samples.items()]
    finally:
        for each in closing:
            await each.aclose()


def main() -> None:
    rows = [
        (name, best_us(lambda k=key, d=data: decode(k, d)))
        for name, (key, data) in entries().items()
    ]
    rows.append(("a new lease token", best_us(FleetLease.new_token)))
    redis_part = asyncio.run(redis_rows())
    print(f"package: {os.environ.get('BENCH_PACKAGE_REF', 'working tree')}\n")
    print("| operation | µs |\n|---|---|")
    for name, value in rows:
        print(f"| {name} (best of 7) | {value:.2f} |")
    for name, value in redis_part:
        print(f"| {name}: redis-py CPU (median of 7) | {value:.1f} |")


if __name__ == "__main__":
    main()
