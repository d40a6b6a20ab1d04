"""The data API against its peers and its floors, in one interleaved run (issue 20).

Every variant awaits one call per operation, returning a ~1 KB pydantic model, in one
event loop. Rounds run the variants in a new random order each time, so drift on a busy
machine is shared; a variant's figure is the median over rounds of its mean per operation.

    floors   msgpack decode into the model; one raw redis.asyncio GET + that decode
    ours     @cached L1 hit (mutable model; frozen model), cache.get L1 hit, L2 hit (L1
             off), miss (a new key per call, the function itself free)
    peers    cashews (mem://, redis://, client-side), aiocache (memory, Redis with pickle:
             its default JSON serializer cannot store a model), async-lru, cachebox, theine

Usage: .bench-venv/bin/python benchmarks/data_bench.py [--quick] [--rounds N]
         [--ref GIT_REF] [--stem NAME]
Writes benchmarks/results/data.md and data.json (or NAME.md / NAME.json). Nothing is
asserted: targets are reported with the ratio that decided them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.package_ref import pop_ref, use_ref

_REF = pop_ref(sys.argv)  # --ref GIT_REF: the package as committed there (before importing it)
if _REF is not None:
    use_ref(_REF)

from benchlib.redis_proc import RedisServer  # noqa: E402
from benchlib.sysinfo import loadavg, machine  # noqa: E402

from fastapi_tiered_cache import CacheSettings, TieredCache, cached  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "benchmark-secret-key-0123456789"


class Product(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    price: float
    currency: str
    stock: int
    tags: list[str]
    attributes: dict[str, str]
    created: dt.datetime
    updated: dt.datetime


class FrozenProduct(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    sku: str
    name: str
    description: str
    price: float
    currency: str
    stock: int
    tags: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    created: dt.datetime
    updated: dt.datetime


def product(pid: int) -> Product:
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    return Product(
        id=pid,
        sku=f"SKU-{pid:08d}",
        name=f"Product number {pid}",
        description="A sturdy, well-reviewed product. " * 9,
        price=999.99,
        currency="EUR",
        stock=42,
        tags=[f"tag-{i}" for i in range(12)],
        attributes={f"attribute-{i}": f"value-{i}" for i in range(12)},
        created=now,
        updated=now,
    )


def frozen(pid: int) -> FrozenProduct:
    p = product(pid)
    return FrozenProduct(
        **{**p.model_dump(), "tags": tuple(p.tags), "attributes": tuple(p.attributes.items())}
    )


Op = Callable[[int], Awaitable[Any]]


@dataclass
class Variant:
    name: str
    op: Op
    group: str  # floor | ours | peer
    per_batch: int
    samples: list[float] = field(default_factory=list)  # µs per operation, one per round
    cpu: list[float] = field(default_factory=list)  # this thread's CPU µs per operation
    error: str = ""


class Counting(aioredis.Connection):
    sent: list[str] = []

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        Counting.sent.append(name.split()[0].upper())
        return super().pack_command(*args)


async def build(server: RedisServer, quick: bool) -> tuple[list[Variant], list[Any]]:
    """Every variant, warmed (its entry stored); plus what must be closed at the end."""
    url = server.url_db(1)
    hot, in_memory = (300, 2000) if quick else (1000, 5000)
    variants: list[Variant] = []
    closers: list[Any] = []
    blob = msgpack.packb(product(1).model_dump(mode="python"), datetime=False, default=str)

    async def decode_floor(_: int) -> Product:
        return Product.model_validate(msgpack.unpackb(blob))

    raw = aioredis.Redis.from_url(url)
    closers.append(raw)
    await raw.set("raw:product", blob)

    async def get_floor(_: int) -> Product:
        return Product.model_validate(msgpack.unpackb(await raw.get("raw:product")))

    variants += [
        Variant("floor: msgpack decode into the model", decode_floor, "floor", in_memory),
        Variant("floor: raw redis.asyncio GET + decode", get_floor, "floor", hot),
    ]

    settings = CacheSettings(redis_url=url, secret_key=SECRET, l1_max_ttl=3600)
    ours = TieredCache(settings)
    ours_l2 = TieredCache(settings.model_copy(update={"l1_max_entries": 0}))
    closers += [ours, ours_l2]

    @cached(ttl=3600, cache=ours)
    async def load(pid: int) -> Product:
        return product(pid)

    @cached(ttl=3600, cache=ours)
    async def load_frozen(pid: int) -> FrozenProduct:
        return frozen(pid)

    @cached(ttl=3600, cache=ours_l2)
    async def load_l2(pid: int) -> Product:
        return product(pid)

    prebuilt = product(1)

    @cached(ttl=3600, cache=ours)
    async def load_miss(pid: int) -> Product:
        return prebuilt

    misses = iter(range(10**9))
    await ours.set("by-key", product(1), ttl=3600)

    async def get_by_key(_: int) -> Product:
        value: Product = await ours.get("by-key", as_type=Product)
        return value

    variants += [
        Variant("ours: @cached L1 hit (model)", lambda _: load(1), "ours", in_memory),
        Variant("ours: cache.get L1 hit (as_type=model)", get_by_key, "ours", in_memory),
        Variant("ours: @cached L1 hit (frozen model)", lambda _: load_frozen(1), "ours", in_memory),
        Variant("ours: @cached L2 hit (L1 off)", lambda _: load_l2(1), "ours", hot),
        Variant(
            "ours: @cached miss (new key, free origin)",
            lambda _: load_miss(next(misses)),
            "ours",
            hot,
        ),
    ]
    variants += await peers(url, hot, in_memory, closers)
    for variant in variants:  # warm: store the entry, open connections
        try:
            for i in range(3):
                await variant.op(i)
        except Exception as exc:  # a peer that does not work here is reported, not run
            variant.error = f"{type(exc).__name__}: {exc}"[:160]
    return variants, closers


async def peers(url: str, hot: int, in_memory: int, closers: list[Any]) -> list[Variant]:
    found: list[Variant] = []

    def unavailable(name: str, exc: Exception) -> None:
        found.append(Variant(name, _fail, "peer", 1, error=f"{type(exc).__name__}: {exc}"[:160]))

    try:
        from cashews import Cache as CashewsCache

        for name, setup, batch in (
            ("cashews mem://", ("mem://",), in_memory),
            ("cashews redis://", (url,), hot),
            ("cashews redis:// client_side", (url,), in_memory),
        ):
            cache = CashewsCache()
            if "client_side" in name:
                cache.setup(setup[0], client_side=True)
            else:
                cache.setup(*setup)
            closers.append(cache)

            @cache(ttl="1h")
            async def load(pid: int) -> Product:
                return product(pid)

            found.append(Variant(f"peer: {name}", _bind(load), "peer", batch))
    except Exception as exc:
        unavailable("peer: cashews", exc)
    try:
        from aiocache import Cache as AioCache
        from aiocache import cached as aiocached
        from aiocache.serializers import PickleSerializer

        @aiocached(ttl=3600, cache=AioCache.MEMORY)
        async def load_memory(pid: int) -> Product:
            return product(pid)

        host, port = url.removeprefix("redis://").split("/")[0].split(":")

        @aiocached(
            ttl=3600,
            cache=AioCache.REDIS,
            endpoint=host,
            port=int(port),
            serializer=PickleSerializer(),
        )
        async def load_redis(pid: int) -> Product:
            return product(pid)

        found.append(Variant("peer: aiocache memory", _bind(load_memory), "peer", in_memory))
        found.append(Variant("peer: aiocache redis (pickle)", _bind(load_redis), "peer", hot))
    except Exception as exc:
        unavailable("peer: aiocache", exc)
    try:
        from async_lru import alru_cache

        @alru_cache(maxsize=1024)
        async def load_lru(pid: int) -> Product:
            return product(pid)

        found.append(Variant("peer: async-lru", _bind(load_lru), "peer", in_memory))
    except Exception as exc:
        unavailable("peer: async-lru", exc)
    try:
        import cachebox

        @cachebox.cached(cachebox.LRUCache(1024))
        async def load_box(pid: int) -> Product:
            return product(pid)

        @cachebox.cached(cachebox.LRUCache(1024))
        async def load_box_frozen(pid: int) -> FrozenProduct:
            return frozen(pid)

        found.append(Variant("peer: cachebox", _bind(load_box), "peer", in_memory))
        found.append(
            Variant("peer: cachebox (frozen model)", _bind(load_box_frozen), "peer", in_memory)
        )
    except Exception as exc:
        unavailable("peer: cachebox", exc)
    try:
        from theine import Memoize

        @Memoize(1024, None)
        async def load_theine(pid: int) -> Product:
            return product(pid)

        @load_theine.key
        def _(pid: int) -> str:
            return f"p{pid}"

        found.append(Variant("peer: theine", _bind(load_theine), "peer", in_memory))
    except Exception as exc:
        unavailable("peer: theine", exc)
    return found


def _bind(load: Callable[[int], Awaitable[Any]]) -> Op:
    async def op(_: int) -> Any:
        return await load(1)

    return op


async def _fail(_: int) -> None:
    raise RuntimeError("unavailable")


async def measure(variants: list[Variant], rounds: int) -> None:
    runnable = [v for v in variants if not v.error]
    for _ in range(rounds):
        random.shuffle(runnable)
        for variant in runnable:
            op, n = variant.op, variant.per_batch
            started, cpu = time.perf_counter(), time.thread_time()
            for i in range(n):
                await op(i)
            variant.samples.append((time.perf_counter() - started) / n * 1e6)
            variant.cpu.append((time.thread_time() - cpu) / n * 1e6)


async def count_commands(url: str) -> dict[str, dict[str, int]]:
    """Redis commands one L2 hit and one miss send (the bus's own left out)."""
    client = aioredis.Redis.from_url(url, connection_class=Counting)
    cache = TieredCache(CacheSettings(secret_key=SECRET, l1_max_entries=0), redis=client)

    @cached(ttl=3600, cache=cache)
    async def load(pid: int) -> Product:
        return product(pid)

    out: dict[str, dict[str, int]] = {}
    try:
        for i in range(40):
            await load(10_000 + i)  # misses: the lease rides with the lookup
        Counting.sent.clear()
        await load(1)
        out["miss"] = _tally()
        for i in range(40):
            await load(10_000 + i)  # hits: a plain GET
        Counting.sent.clear()
        await load(1)
        out["l2 hit"] = _tally()
    finally:
        await cache.close()
        await client.aclose()
    return out


def _tally() -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in Counting.sent:
        if name not in ("PUBLISH", "SUBSCRIBE", "PING"):
            counts[name] = counts.get(name, 0) + 1
    Counting.sent.clear()
    return counts


def median(variants: list[Variant], name: str, what: str = "samples") -> float | None:
    for v in variants:
        if v.name == name and v.samples:
            return statistics.median(getattr(v, what))
    return None


def targets(variants: list[Variant]) -> list[dict[str, Any]]:
    rows = []
    for label, ours, base, limit in (
        (
            "L1 hit (model) <= 1.5x the decode floor",
            "ours: @cached L1 hit (model)",
            "floor: msgpack decode into the model",
            1.5,
        ),
        (
            "L1 hit by key (model) <= 1.5x the decode floor",
            "ours: cache.get L1 hit (as_type=model)",
            "floor: msgpack decode into the model",
            1.5,
        ),
        (
            "L1 hit, immutable type <= 2x cachebox's hit",
            "ours: @cached L1 hit (frozen model)",
            "peer: cachebox (frozen model)",
            2.0,
        ),
        (
            "L2 hit <= 1.15x the GET floor",
            "ours: @cached L2 hit (L1 off)",
            "floor: raw redis.asyncio GET + decode",
            1.15,
        ),
        (
            "miss <= 2.5x the GET floor",
            "ours: @cached miss (new key, free origin)",
            "floor: raw redis.asyncio GET + decode",
            2.5,
        ),
    ):
        a, b = median(variants, ours), median(variants, base)
        ratio = a / b if a and b else None
        a_cpu, b_cpu = median(variants, ours, "cpu"), median(variants, base, "cpu")
        rows.append(
            {
                "target": label,
                "measured_us": a,
                "baseline_us": b,
                "ratio": ratio,
                "cpu_ratio": a_cpu / b_cpu if a_cpu and b_cpu else None,
                "limit": limit,
                "pass": ratio is not None and ratio <= limit,
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Data API benchmark (issue 20)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['python']}, redis-server {result['machine']['redis_server']}, "
        f"event loop {result['machine']['event_loop']}  ",
        f"Load average: {result['load_before']} (start), {result['load_after']} (end)  ",
        f"Value: a pydantic model of {result['value_bytes']} bytes as msgpack; "
        f"{result['rounds']} interleaved rounds.",
        "",
        "## Targets",
        "",
        "| target | measured | baseline | ratio | CPU-time ratio | limit | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        ratio = f"{t['ratio']:.2f}×" if t["ratio"] else "n/a"
        cpu = f"{t['cpu_ratio']:.2f}×" if t["cpu_ratio"] else "n/a"
        lines.append(
            f"| {t['target']} | {_us(t['measured_us'])} | {_us(t['baseline_us'])} | {ratio} | "
            f"{cpu} | <= {t['limit']}× | **{'PASS' if t['pass'] else 'FAIL'}** |"
        )
    lines += [
        "",
        "The result is decided by the median latency ratio; the CPU-time ratio (this thread's"
        " CPU per call, which other processes on a busy machine do not inflate) is shown"
        " beside it.",
    ]
    lines += ["", "Redis commands per operation (counted at the client, the bus's left out):", ""]
    for name, counts in result["commands"].items():
        total = sum(counts.values())
        lines.append(f"- {name}: {total} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    lines += [
        "",
        "## Every variant",
        "",
        "| variant | median µs/op | min | max | CPU µs/op | × decode floor | × GET floor | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    decode = result["floors"]["decode"]
    get = result["floors"]["get"]
    for row in result["variants"]:
        if row["error"]:
            lines.append(f"| {row['name']} | – | – | – | – | – | – | unavailable: {row['error']} |")
            continue
        m = row["median_us"]
        lines.append(
            f"| {row['name']} | {m:.1f} | {row['min_us']:.1f} | {row['max_us']:.1f} | "
            f"{row['cpu_us']:.1f} | {m / decode:.2f}× | {m / get:.2f}× | {row['note']} |"
        )
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} µs"


NOTES = {
    "peer: cashews mem://": "one shared instance: a caller's change shows in later hits",
    "peer: cashews redis:// client_side": "one shared instance from its local layer",
    "peer: aiocache memory": "one shared instance",
    "peer: async-lru": "one shared instance",
    "peer: cachebox": "copies dicts/lists it returns, not models: one shared model",
    "peer: theine": "one shared instance",
    "ours: @cached L1 hit (model)": "each caller its own copy (decoded from the stored bytes)",
    "ours: @cached L1 hit (frozen model)": "immutable type: one shared instance",
}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        variants, closers = await build(server, args.quick)
        load_before = loadavg()
        await measure(variants, args.rounds)
        load_after = loadavg()
        commands = await count_commands(server.url_db(2))
        for closer in closers:
            close = getattr(closer, "aclose", None) or getattr(closer, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        version = server.version if hasattr(server, "version") else None
    value_bytes = len(msgpack.packb(product(1).model_dump(mode="python"), default=str))
    rows = [
        {
            "name": v.name,
            "group": v.group,
            "median_us": statistics.median(v.samples) if v.samples else None,
            "min_us": min(v.samples) if v.samples else None,
            "max_us": max(v.samples) if v.samples else None,
            "cpu_us": statistics.median(v.cpu) if v.cpu else None,
            "samples": v.samples,
            "error": v.error,
            "note": NOTES.get(v.name, ""),
        }
        for v in sorted(
            variants, key=lambda v: ({"floor": 0, "ours": 1, "peer": 2}[v.group], v.name)
        )
    ]
    return {
        "command": " ".join(["python", "benchmarks/data_bench.py", *sys.argv[1:]]),
        "machine": machine(version, None, "asyncio"),
        "load_before": load_before,
        "load_after": load_after,
        "rounds": args.rounds,
        "value_bytes": value_bytes,
        "variants": rows,
        "floors": {
            "decode": median(variants, "floor: msgpack decode into the model"),
            "get": median(variants, "floor: raw redis.asyncio GET + decode"),
        },
        "targets": targets(variants),
        "commands": commands,
        "notes": [
            "Ours run with L2 attached (the deployed shape: L1 in front of Redis); the L2 row"
            " turns L1 off. The miss row computes nothing (the function returns a prebuilt"
            " model), so it measures the cache's own cost of a miss: a lookup that takes the"
            " fleet lease, encoding, and one pipeline storing the value and releasing the lease.",
            "Peers' hits return the instance they stored (see the notes column): ours decode a"
            " copy for each caller unless the type is immutable, which is what the decode floor"
            " measures.",
        ],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--stem", default="data", help="results file names (default: data)")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 8 if args.quick else 25
    result = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.stem}.json").write_text(json.dumps(result, indent=2, default=str))
    (RESULTS / f"{args.stem}.md").write_text(markdown(result))
    print(markdown(result))
