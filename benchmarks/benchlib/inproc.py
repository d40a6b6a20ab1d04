"""In-process sections: the main matrix, Redis latency sweep, L1 size, tag purge (L1 memory:
``memory.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import inspect
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from .apps import LABELS, LONG_TTL, PATH, Built, Spec, build, outcomes, payload
from .driver import Exchange, Lifespan, Variant, interleave, make_scope, spread, summarize
from .proxy_proc import ProxyProcess

Log = Callable[[str], None]
KB1, KB100 = 1024, 100 * 1024
HOT_KEYS = 1_000
PEERS = {"fc2": ("fastapi_cache", "fastapi-cache2"), "cashews": ("cashews", "cashews")}


def peer_status() -> dict[str, str]:
    """``ok`` or why a peer cannot be benchmarked (not installed / import fails)."""
    status = {}
    for module, dist in PEERS.values():
        try:
            importlib.import_module(module)
            if module == "fastapi_cache":
                importlib.import_module("fastapi_cache.decorator")
            status[dist] = "ok"
        except Exception as exc:
            status[dist] = f"unavailable: {type(exc).__name__}: {exc}"
    return status


def _peer_of(kind: str) -> str | None:
    if kind.startswith("fc2"):
        return "fastapi-cache2"
    if kind.startswith("cashews"):
        return "cashews"
    return None


class Harness:
    """Builds variants, runs their lifespans, and closes everything at the end."""

    def __init__(self, log: Log, peers: dict[str, str]) -> None:
        self.log = log
        self.peers = peers
        self.built: list[Built] = []
        self.lifespans: list[Lifespan] = []
        self.failed: list[dict[str, Any]] = []  # variants that could not even be built

    async def variant(
        self,
        spec: Spec,
        name: str,
        group: dict[str, Any],
        *,
        label: str | None = None,
        batch_scale: float = 1.0,
        query: Callable[[int], bytes] | None = None,
        expect: str = "hit",
    ) -> Variant | None:
        label = label or LABELS[spec.kind]
        peer = _peer_of(spec.kind)
        if peer is not None and self.peers.get(peer) != "ok":
            self.failed.append({"name": name, "label": label, **group, "error": self.peers[peer]})
            return None
        try:
            built = build(spec)
            lifespan = Lifespan(built.app)
            await lifespan.start()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.log(f"  ! {name}: cannot build: {error}")
            self.failed.append({"name": name, "label": label, **group, "error": error})
            return None
        self.built.append(built)
        self.lifespans.append(lifespan)
        salt = random.randrange(1 << 30)
        state = lifespan.state
        headers = spec.request_headers
        if query is None and spec.unique_urls:

            def query(i: int) -> bytes:
                return b"n=%d-%d" % (salt, i)

        unique_header = spec.unique_header
        if unique_header is not None:

            def scope_factory(i: int) -> dict[str, Any]:
                extra = (*headers, (unique_header, f"{salt:x}-{i}"))
                return make_scope(PATH, b"", extra, state)

        elif query is None:

            def scope_factory(i: int) -> dict[str, Any]:
                return make_scope(PATH, b"", headers, state)

        else:
            make_query = query

            def scope_factory(i: int) -> dict[str, Any]:
                return make_scope(PATH, make_query(i), headers, state)

        variant = Variant(
            name=name,
            label=label,
            group=group,
            app=built.app,
            scope_factory=scope_factory,
            before_batch=built.before_batch,
            calls=lambda: built.origin_calls,
            outcomes=lambda: outcomes(built.cache),
            check=_checker(spec, expect),
            batch_scale=batch_scale,
        )
        variant.built = built  # type: ignore[attr-defined]
        return variant

    async def prewarm(self, variants: list[Variant]) -> None:
        """One request each, so that hit variants find their entry from the first batch."""
        for variant in variants:
            assert variant.scope_factory is not None
            assert variant.app is not None
            variant.before_batch()
            ex = Exchange()
            try:
                await variant.app(variant.scope_factory(-1), ex.receive, ex.send)
            except Exception as exc:
                variant.problems.append(f"warm-up: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        for lifespan in self.lifespans:
            await lifespan.stop()
        for built in self.built:
            await built.aclose()
        self.built.clear()
        self.lifespans.clear()


def _checker(spec: Spec, expect: str) -> Any:
    size = len(payload(spec.size)[1])

    def check(variant: Variant, ex: Exchange | None, calls: int) -> str | None:
        if ex is None:
            return None
        if ex.status != 200 or ex.body_len != size:
            return f"last response: status {ex.status}, {ex.body_len} bytes (expected {size})"
        if expect == "miss":
            if calls != variant.last_n:
                return f"origin called {calls}x for {variant.last_n} requests (expected all misses)"
            return None
        if spec.kind in ("raw", "stack", "bare"):
            return None
        if calls:
            return f"origin called {calls}x in a batch of {variant.last_n}: not all hits"
        if spec.kind.startswith("ours-"):
            tier = "l2" if spec.kind == "ours-l2" else "l1"
            status = ex.header(b"cache-status") or ""
            if "hit" not in status or tier not in status:
                return f"last response Cache-Status {status!r}: expected a {tier} hit"
        return None

    return check


async def _redis_entry_key(url: str, namespace: str) -> str | None:
    """The key of our stored response under ``namespace`` (the largest string value)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        best, best_len = None, -1
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            if await client.type(key) != b"string":
                continue
            length = await client.strlen(key)
            if length > best_len:
                best, best_len = key.decode(), length
        return best
    finally:
        await client.aclose()


async def raw_get_variant(
    url: str, key: str | None, name: str, group: dict[str, Any], closers: list[Any]
) -> Variant:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    closers.append(client.aclose)
    problems = [] if key else ["no stored entry of our L2 variant found in Redis"]
    the_key = key or "missing"

    async def op() -> Any:
        return await client.get(the_key)

    await op()  # connect outside the timed batches
    return Variant(name=name, label=LABELS["redis-get"], group=group, op=op, problems=problems)


def rows(variants: list[Variant], section: str) -> list[dict[str, Any]]:
    out = []
    for v in variants:
        row: dict[str, Any] = {"section": section, "name": v.name, "label": v.label, **v.group}
        row.update(summarize(v.samples))
        if v.ttlb:
            row["ttlb"] = summarize(v.ttlb)
        row["round_spread"] = round(spread(v.round_medians), 3)
        row["outcomes"] = dict(v.outcome_totals)
        row["cpu_us"] = v.cpu_ns / v.cpu_n / 1000 if v.cpu_n else None
        row["problems"] = list(v.problems)
        out.append(row)
    return out


# --------------------------------------------------------------------------- main matrix


async def main_matrix(
    redis: Any, cfg: dict[str, Any], log: Log, peers: dict[str, str]
) -> dict[str, Any]:
    """Every variant, both payloads, both origins (where the origin is called), interleaved."""
    harness = Harness(log, peers)
    closers: list[Any] = []
    variants: list[Variant] = []
    try:
        for size in (KB1, KB100):
            tag = "1k" if size == KB1 else "100k"
            hit = {"size": size, "origin_ms": None}
            specs = [
                ("raw", Spec("raw", size)),
                ("stack", Spec("stack", size)),
                ("ours-l1", Spec("ours-l1", size, redis_url=redis.url, namespace=f"l1-{tag}")),
                (
                    "ours-l1-ident",
                    Spec("ours-l1-ident", size, redis_url=redis.url, namespace=f"l1i-{tag}"),
                ),
                ("ours-l2", Spec("ours-l2", size, redis_url=redis.url, namespace=f"l2-{tag}")),
                ("fc2-mem", Spec("fc2-mem", size, namespace=f"fm-{tag}")),
                ("fc2-redis", Spec("fc2-redis", size, redis_url=redis.url, namespace=f"fr-{tag}")),
                ("cashews-mem", Spec("cashews-mem", size, namespace=f"cm-{tag}")),
                (
                    "cashews-redis",
                    Spec("cashews-redis", size, redis_url=redis.url, namespace=f"cr-{tag}"),
                ),
            ]
            if size == KB1:
                specs[3:3] = [
                    (
                        "ours-l1-outer",
                        Spec("ours-l1-outer", size, redis_url=redis.url, namespace=f"l1o-{tag}"),
                    ),
                ]
                specs[5:5] = [
                    (
                        "ours-l1-reqid",
                        Spec("ours-l1-reqid", size, redis_url=redis.url, namespace=f"l1r-{tag}"),
                    ),
                    (
                        "ours-l1-vptr",
                        Spec("ours-l1-vptr", size, redis_url=redis.url, namespace=f"l1v-{tag}"),
                    ),
                ]
            for kind, spec in specs:
                v = await harness.variant(spec, f"{kind}/{tag}", hit)
                if v is not None:
                    variants.append(v)
            for origin_ms in (0.0, 2.0):
                group = {"size": size, "origin_ms": origin_ms}
                scale = 1.0 if origin_ms == 0 else 0.15
                # bare gets unique URLs too, so that it pays what the miss pays for the URL
                bare = await harness.variant(
                    Spec("bare", size, origin_ms=origin_ms),
                    f"bare/{tag}/{origin_ms:g}ms",
                    group,
                    batch_scale=scale,
                    query=_unique_query(),
                )
                miss_spec = Spec(
                    "ours-miss",
                    size,
                    origin_ms=origin_ms,
                    redis_url=redis.url_db(1),
                    namespace=f"m-{tag}-{origin_ms:g}",
                )
                miss = await harness.variant(
                    miss_spec,
                    f"ours-miss/{tag}/{origin_ms:g}ms",
                    group,
                    batch_scale=scale,
                    expect="miss",
                )
                if miss is not None:
                    miss.after_batch = _flusher(redis.url_db(1), closers)
                variants.extend(v for v in (bare, miss) if v is not None)
        log(f"  {len(variants)} variants built; warming up")
        await harness.prewarm(variants)
        for size in (KB1, KB100):
            tag = "1k" if size == KB1 else "100k"
            key = await _redis_entry_key(redis.url, f"l2-{tag}")
            variants.append(
                await raw_get_variant(
                    redis.url, key, f"redis-get/{tag}", {"size": size, "origin_ms": None}, closers
                )
            )
        _freeze()
        t0 = time.monotonic()
        await interleave(
            variants,
            rounds=cfg["rounds"],
            batch=cfg["batch"],
            budget_s=cfg["budget"],
            progress=lambda m: log(f"  main matrix {m} ({time.monotonic() - t0:.0f}s)"),
        )
        return {"rows": rows(variants, "main"), "failed": harness.failed}
    finally:
        await harness.aclose()
        for close in closers:
            await close()
        gc.unfreeze()


def _unique_query() -> Callable[[int], bytes]:
    salt = random.randrange(1 << 30)
    return lambda i: b"n=%d-%d" % (salt, i)


def _flusher(url: str, closers: list[Any]) -> Callable[[], Any]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    closers.append(client.aclose)

    async def flush() -> None:
        await client.flushdb()

    return flush


def _freeze() -> None:
    gc.collect()
    gc.freeze()


# --------------------------------------------------------------------------- Redis latency


async def latency_sweep(
    redis: Any, cfg: dict[str, Any], log: Log, peers: dict[str, str]
) -> dict[str, Any]:
    """Hits through the delaying proxy adding 0, 1, 2 ms of Redis round trip."""
    harness = Harness(log, peers)
    closers: list[Any] = []
    proxies: list[ProxyProcess] = []
    variants: list[Variant] = []
    try:
        for rtt in cfg["rtts"]:
            proxy = ProxyProcess(redis.port, rtt).start()
            proxies.append(proxy)
            group = {"size": KB1, "rtt_ms": rtt}
            for kind in ("ours-l1", "ours-l2", "fc2-redis", "cashews-redis"):
                ns = f"rtt{rtt:g}-{kind}"[:32]
                spec = Spec(kind, KB1, redis_url=proxy.url(0), namespace=ns)
                v = await harness.variant(spec, f"{kind}/rtt{rtt:g}", group, batch_scale=0.3)
                if v is not None:
                    variants.append(v)
        await harness.prewarm(variants)
        for rtt, proxy in zip(cfg["rtts"], proxies, strict=False):
            key = await _redis_entry_key(redis.url, f"rtt{rtt:g}-ours-l2")
            v = await raw_get_variant(
                proxy.url(0), key, f"redis-get/rtt{rtt:g}", {"size": KB1, "rtt_ms": rtt}, closers
            )
            v.batch_scale = 0.3
            variants.append(v)
        _freeze()
        t0 = time.monotonic()
        await interleave(
            variants,
            rounds=cfg["rtt_rounds"],
            batch=cfg["batch"],
            budget_s=cfg["budget"],
            progress=lambda m: log(f"  latency sweep {m} ({time.monotonic() - t0:.0f}s)"),
        )
        return {"rows": rows(variants, "rtt"), "failed": harness.failed}
    finally:
        await harness.aclose()
        for close in closers:
            await close()
        for proxy in proxies:
            proxy.stop()
        gc.unfreeze()


# --------------------------------------------------------------------------- L1 size


async def l1_size(cfg: dict[str, Any], log: Log) -> dict[str, Any]:
    """L1 hits among 1e3 and 1e6 (quick: 5e4) stored entries, at 1,000 random hot keys."""

    harness = Harness(log, {})
    variants: list[Variant] = []
    notes: list[str] = []
    try:
        for count in cfg["l1_sizes"]:
            settings = {"l1_max_entries": count * 2, "l1_max_bytes": 16 << 30}
            spec = Spec("ours-l1", KB1, redis_url=None, namespace=f"n{count}", settings=settings)
            rng = random.Random(count)
            # The same number of distinct keys is requested whatever the size (1,000 hot
            # keys picked at random among all), so only the size of L1 differs.
            hot = rng.sample(range(count), min(HOT_KEYS, count))
            picks = [hot[rng.randrange(len(hot))] for _ in range(1 << 16)]
            group = {"size": KB1, "entries": count}
            v = await harness.variant(
                spec,
                f"ours-l1/{count:.0e}",
                group,
                label="ours: L1 hit (repeated request)",
                query=lambda i, p=picks: b"id=%d" % p[i % len(p)],
            )
            assert v is not None
            built: Built = v.built  # type: ignore[attr-defined]
            cache = built.cache
            state = harness.lifespans[-1].state
            t0 = time.monotonic()
            # One real request stores the template record; the rest are copies of it (own
            # objects, shared body bytes) put straight into L1 under their real keys.
            scope = make_scope(PATH, b"id=0", (), state)
            ex = Exchange()
            await built.app(scope, ex.receive, ex.send)
            names = cache.vary_names(None)

            template = cache.store.lookup_local(await _key_of(cache, state, names, 0))
            if template is None:
                raise RuntimeError("cannot find the stored entry under TieredCache.key_for(...)")
            for i in range(1, count):
                key = await _key_of(cache, state, names, i)
                cache.store.set_local(key, dataclasses.replace(template), LONG_TTL)
            stored = len(cache.store.l1)
            log(f"  filled L1 with {stored:,} entries in {time.monotonic() - t0:.1f}s")
            notes.append(
                f"{count:,}: {stored:,} entries, {cache.store.l1.current_bytes:,} B accounted"
            )
            for i in hot:  # each hot key requested once before timing (as in steady state)
                await _request(built.app, make_scope(PATH, b"id=%d" % i, (), state))
            salt = random.randrange(1 << 30)

            def full_path(i: int, p: list[int] = picks, s: int = salt, st: Any = state) -> Any:
                unique = (("x-request-id", f"{s:x}-{i}"),)  # never byte-identical
                return make_scope(PATH, b"id=%d" % p[i % len(p)], unique, st)

            full = Variant(
                name=f"ours-l1/{count:.0e}/full",
                label="ours: L1 hit, unique X-Request-ID (full path)",
                group=group,
                app=v.app,
                scope_factory=full_path,
                calls=v.calls,
                outcomes=v.outcomes,
                check=v.check,
            )
            variants += [v, full]
        _freeze()
        await interleave(variants, rounds=cfg["rounds"], batch=cfg["batch"], budget_s=cfg["budget"])
        return {"rows": rows(variants, "l1size"), "notes": notes}
    finally:
        await harness.aclose()
        variants.clear()
        gc.unfreeze()
        gc.collect()


def _takes_generation(cache: Any) -> bool:
    # An instance attribute in later releases (the routing phase's), a method before.
    return "generation" in inspect.signature(cache.key_for).parameters


async def _key_of(cache: Any, state: dict[str, Any], names: Any, i: int) -> str:
    """The key of ``/items?id=<i>``: the middleware's own steps (identify, generation,
    key_for) through the public TieredCache methods; a mismatch shows as a missing entry."""
    from fastapi_tiered_cache.keys import vary_values
    from fastapi_tiered_cache.request import RequestInfo

    info = RequestInfo.from_scope(make_scope(PATH, b"id=%d" % i, (), state))
    identity = await cache.identify(info)
    vary = vary_values(info, names)
    if _takes_generation(cache):
        generation = await cache.generation(identity)
        return str(cache.key_for(info, identity, vary, generation))
    return str(cache.key_for(info, identity, vary))


# --------------------------------------------------------------------------- L1 memory


# --------------------------------------------------------------------------- tag purge


async def tag_purge(redis: Any, cfg: dict[str, Any], log: Log) -> dict[str, Any]:
    """Cost of ``await cache.invalidate_tags(...)`` against the number of entries tagged."""
    from fastapi_tiered_cache import TieredCache

    purge = getattr(TieredCache, "invalidate_tags", None)
    if purge is None:
        return {
            "skipped": "TieredCache has no invalidate_tags yet (the invalidation API is "
            "being written); this section runs once it exists"
        }
    signature = inspect.signature(purge)
    variadic = any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()
    )
    results = []
    flush = _flusher(redis.url_db(2), [])
    for count in cfg["tag_counts"]:
        times: list[int] = []
        errors: list[str] = []
        purged: list[Any] = []
        in_l1: list[Any] = []
        for rep in range(cfg["tag_reps"]):
            harness = Harness(log, {})
            try:
                tag = f"bench-{count}-{rep}"
                spec = Spec(
                    "ours-l1",
                    KB1,
                    redis_url=redis.url_db(2),
                    namespace=f"tag{count}-{rep}",
                    response_headers={"surrogate-key": tag},  # a default tag header
                )
                v = await harness.variant(spec, tag, {}, query=_unique_query(), expect="miss")
                assert v is not None
                assert v.app is not None
                assert v.scope_factory is not None
                app, factory = v.app, v.scope_factory

                for first in range(0, count, 4):  # a few at a time (Redis time budget)
                    batch = range(first, min(count, first + 4))
                    await asyncio.gather(*(_request(app, factory(i)) for i in batch))
                cache = v.built.cache  # type: ignore[attr-defined]
                l1 = cache.store.l1
                before = len(l1) if l1 is not None else None
                in_l1.append(before)
                t0 = time.perf_counter_ns()
                answer = purge(cache, tag) if variadic else purge(cache, [tag])
                if inspect.isawaitable(answer):
                    answer = await answer
                times.append(time.perf_counter_ns() - t0)
                purged.append(answer)
                if rep == 0:
                    after = len(l1) if l1 is not None else None
                    log(
                        f"  {count} tagged: purge {times[-1] / 1e6:.2f} ms "
                        f"(L1 {before} -> {after} entries, returned {answer!r})"
                    )
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log(f"  {count} tagged: {message}")
                if message not in errors:
                    errors.append(message)
            finally:
                await harness.aclose()
                await flush()
        row: dict[str, Any] = {
            "entries": count,
            "reps": len(times),
            "errors": errors,
            "returned": purged[:1],
            "in_l1": in_l1[:1],
        }
        if times:
            row["median_ms"] = statistics.median(times) / 1e6
            row["per_entry_us"] = statistics.median(times) / 1e3 / max(count, 1)
        results.append(row)
    return {"signature": f"invalidate_tags{signature}", "rows": results}


async def _request(app: Any, scope: dict[str, Any]) -> None:
    ex = Exchange()
    await app(scope, ex.receive, ex.send)
