"""Memory per entry: in L1 (per payload size) and in Redis (the entry and its indexes).

**L1.** Unique-URL misses through the real app (L1 only), measured with tracemalloc
(live bytes after gc, everything the misses left behind: the entry, its L1 slot, the L1
path index, the memo) against the L1 byte accounting (``MemoryStore.current_bytes``),
for payloads of 100 B to 100 KB: the accounting bounds L1, so it must not under-count.

**Redis.** A private redis-server per measurement. A few thousand entries are first
stored through the real miss path (``GET /items/{id}`` through ``install(app)``); then
the rest are written through the store API exactly as ``origin.py`` stores a miss:
``TieredStore.set_remote_many`` with the commands of ``Invalidator.index_commands`` for
the entry's ``index_names`` (its exact-path index, one prefix index per path segment).
Both kinds are compared key by key (``MEMORY USAGE``), so the shortcut is shown to store
the same thing; the total is ``INFO memory`` ``used_memory`` after minus before, divided
by the entries (it includes Redis's own per-key overhead: dictionary slots, expiry).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from .apps import Built, Spec, payload
from .driver import Exchange, Lifespan, make_scope
from .inproc import Harness, _unique_query

Log = Callable[[str], None]
L1_SIZES = (100, 1024, 10 * 1024, 100 * 1024)
REDIS_SIZES = (100, 1024)
SECRET = "bench-memory-secret-0123456789abcdef"
LONG_TTL = 3600  # nothing may expire while a million entries are written
_BATCH = 200  # entries per pipeline through the store API


# --------------------------------------------------------------------------- L1


async def l1_memory(cfg: dict[str, Any], log: Log) -> dict[str, Any]:
    """Bytes per L1 entry for each payload size: tracemalloc vs. the L1 accounting."""
    rows = []
    for size in L1_SIZES:
        # Fewer entries for large bodies: a 100 KB miss takes ~100 ms under tracemalloc.
        count = max(100, min(cfg["mem_entries"], cfg.get("mem_max_bytes", 32 << 20) // size))
        rows.append(await _l1_at(size, count, log))
    return {"rows": rows}


async def _l1_at(size: int, count: int, log: Log) -> dict[str, Any]:
    harness = Harness(log, {})
    try:
        spec = Spec(
            "ours-l1",
            size,
            namespace=f"mem{size}",
            settings={"l1_max_entries": count * 4, "l1_max_bytes": 8 << 30},
        )
        v = await harness.variant(spec, f"mem{size}", {}, query=_unique_query(), expect="miss")
        assert v is not None
        assert v.app is not None
        assert v.scope_factory is not None
        built: Built = v.built  # type: ignore[attr-defined]
        l1 = built.cache.store.l1
        for i in range(200):  # warm imports, caches and counters
            ex = Exchange()
            await v.app(v.scope_factory(i), ex.receive, ex.send)
        scopes = [v.scope_factory(1000 + i) for i in range(count)]
        gc.collect()
        entries0, bytes0 = len(l1), l1.current_bytes
        tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0]
        for scope in scopes:
            ex = Exchange()
            await v.app(scope, ex.receive, ex.send)
        del scopes, scope, ex
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced0
        tracemalloc.stop()
        added = len(l1) - entries0
        accounted = l1.current_bytes - bytes0
        body = len(payload(size)[1])
        row: dict[str, Any] = {"size": size, "entries": added, "body_bytes": body}
        if added:
            row["traced_per_entry"] = traced / added
            row["accounted_per_entry"] = accounted / added
            row["ratio"] = row["traced_per_entry"] / row["accounted_per_entry"]
            row["overhead_per_entry"] = row["traced_per_entry"] - body
        log(
            f"  L1 {body:>7,} B bodies x {added:,}: traced {traced / max(added, 1):,.0f} "
            f"B/entry, accounted {accounted / max(added, 1):,.0f} B/entry"
        )
        return row
    finally:
        await harness.aclose()
        gc.collect()


# --------------------------------------------------------------------------- Redis


def _items_app(size: int) -> Any:
    from fastapi import FastAPI

    body = payload(size)[0]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/items/{item_id}")
    async def get_item(item_id: int):  # type: ignore[no-untyped-def]
        return {**body, "page": item_id}

    return app


def _info(client: Any) -> dict[str, int]:
    info = client.info("memory")
    return {
        "used_memory": int(info["used_memory"]),
        "used_memory_dataset": int(info["used_memory_dataset"]),
        "keys": int(client.dbsize()),
    }


async def redis_memory(count: int, size: int, real: int, log: Log) -> dict[str, Any]:
    """Redis memory per entry after ``count`` entries of ``size``-byte bodies (``real`` of
    them through the miss path, the rest through the store API)."""
    import redis as redis_sync

    from fastapi_tiered_cache import CacheSettings, install

    from .redis_proc import RedisServer

    with RedisServer() as server:
        client = redis_sync.Redis.from_url(server.url)
        options: dict[str, Any] = {
            "redis_url": server.url,
            "secret_key": SECRET,
            "default_ttl": LONG_TTL,
            "redis_timeout": 10.0,  # a pipeline of 200 entries must not be abandoned
        }
        settings = CacheSettings(**options)
        app = _items_app(size)
        cache = install(app, settings)
        lifespan = Lifespan(app)
        await lifespan.start()
        try:
            empty = _info(client)
            started = time.monotonic()
            real_keys = await _real_misses(app, lifespan, client, real)
            after_real = _info(client)
            template = _template(cache, real_keys[0])
            api_keys = await _store_api(cache, template, real, count, log)
            seconds = time.monotonic() - started
            full = _info(client)
        finally:
            await lifespan.stop()
        result = _measure(client, cache, empty, after_real, full, real_keys, api_keys, count)
        result.update(size=size, body_bytes=len(payload(size)[1]), seconds=seconds, real=real)
        client.close()
    log(
        f"  Redis {count:,} x {result['body_bytes']:,} B: {result['per_entry']:,.0f} B/entry "
        f"(value {result['usage']['api']['entry']:,.0f}, indexes "
        f"{result['index_per_entry']:,.0f}) in {seconds:.0f} s"
    )
    return result


async def _real_misses(app: Any, lifespan: Lifespan, client: Any, real: int) -> list[str]:
    """``real`` misses through the app; the Redis keys of the entries they stored."""
    for item_id in range(1, real + 1):
        ex = Exchange()
        await app(make_scope(f"/items/{item_id}", b"", (), lifespan.state), ex.receive, ex.send)
        if ex.status != 200:
            raise RuntimeError(f"GET /items/{item_id}: {ex.status}")
    namespace = app.state.tiered_cache.settings.namespace
    for _ in range(50):  # stores run after the response
        keys = [k.decode() for k in client.scan_iter(match=f"{namespace}:g*", count=1000)]
        if len(keys) >= real:
            break
        await asyncio.sleep(0.1)
    if len(keys) != real:
        raise RuntimeError(f"{real} misses stored {len(keys)} entries in Redis")
    return keys


def _template(cache: Any, key: str) -> dict[str, Any]:
    record = cache.store.lookup_local(key)
    prefix, digest = key.rsplit(":", 1)
    tenant = next(name.split(":")[1] for name in cache.invalidator.local if name.startswith("x:"))
    return {"record": record, "prefix": prefix, "digest_hex": len(digest), "tenant": tenant}


async def _store_api(
    cache: Any, template: dict[str, Any], first: int, count: int, log: Log
) -> list[str]:
    """Entries ``first + 1 .. count`` as ``origin.py`` stores a miss, in batches."""
    from fastapi_tiered_cache.invalidation import index_names

    store, invalidator, record = cache.store, cache.invalidator, template["record"]
    size = template["digest_hex"] // 2
    keys: list[str] = []
    started = time.monotonic()
    for start in range(first + 1, count + 1, _BATCH):
        entries, then = [], []
        for item_id in range(start, min(count, start + _BATCH - 1) + 1):
            digest = hashlib.blake2b(b"%d" % item_id, digest_size=size).hexdigest()
            key = f"{template['prefix']}:{digest}"
            names = index_names(template["tenant"], f"/items/{item_id}", record.tags)
            entries.append((key, record, float(LONG_TTL)))
            then += invalidator.index_commands(key, names, float(LONG_TTL))
            keys.append(key)
        await store.l2.set_many(entries, then)  # no breaker: a failure must raise here
        if len(keys) % 100_000 < _BATCH:
            log(f"    {first + len(keys):,} entries ({time.monotonic() - started:.0f} s)")
    return keys


def _usage(client: Any, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def _measure(
    client: Any,
    cache: Any,
    empty: dict[str, int],
    after_real: dict[str, int],
    full: dict[str, int],
    real_keys: list[str],
    api_keys: list[str],
    count: int,
) -> dict[str, Any]:
    from fastapi_tiered_cache.invalidation import exact_index, prefix_index

    invalidator = cache.invalidator
    tenant = next(name.split(":")[1] for name in invalidator.local if name.startswith("x:"))
    shared = invalidator.redis_key(prefix_index(tenant, "/items"))
    stored = client.zcard(shared)
    if stored != count:
        raise RuntimeError(f"the /items prefix index holds {stored} entries, expected {count}")

    def by_kind(keys: list[str], first_id: int) -> dict[str, float]:
        """Mean MEMORY USAGE of entries ``first_id, ...`` (keys in that order for the
        API-written ones; any order for the real ones, whose paths are 1..n)."""
        step = max(1, len(keys) // 200)
        out: dict[str, list[int]] = {"entry": [], "exact_index": [], "own_prefix_index": []}
        for offset in range(0, len(keys), step):
            path = f"/items/{first_id + offset}"
            exact = invalidator.redis_key(exact_index(tenant, path))
            out["entry"].append(_usage(client, keys[offset]))
            out["exact_index"].append(_usage(client, exact))
            out["own_prefix_index"].append(
                _usage(client, invalidator.redis_key(prefix_index(tenant, path)))
            )
        return {kind: statistics.mean(values) for kind, values in out.items()}

    usage = {"real": by_kind(real_keys, 1), "api": by_kind(api_keys, len(real_keys) + 1)}
    shared_bytes = _usage(client, shared)
    per_entry = (full["used_memory"] - empty["used_memory"]) / count
    real = len(real_keys)
    return {
        "entries": count,
        "keys_per_entry": (full["keys"] - empty["keys"]) / count,
        "keys_per_real_entry": (after_real["keys"] - empty["keys"]) / real,
        "per_entry": per_entry,
        "dataset_per_entry": (full["used_memory_dataset"] - empty["used_memory_dataset"]) / count,
        "real_per_entry": (after_real["used_memory"] - empty["used_memory"]) / real,
        "used_memory": full["used_memory"],
        "value_bytes": int(client.strlen(api_keys[0])) if api_keys else None,
        "usage": usage,
        "shared_index_bytes": shared_bytes,
        "shared_index_per_entry": shared_bytes / count,
        "index_per_entry": usage["api"]["exact_index"]
        + usage["api"]["own_prefix_index"]
        + shared_bytes / count,
    }
