#!/usr/bin/env python
"""Fleet benchmark of issue 21: ``python benchmarks/fleet.py [--sizes 4 32] [--seconds 5]``.

For each fleet size N, N uvicorn processes of ``tests/fleet_app.py`` (one port each, every
client sending the same ``Host``, as behind a load balancer) share one private
redis-server, their data living in a second one. Each size runs two fleets, one per
coherence bound (1.0 s, the default, and 0.1 s), and reports:

1. **Visibility** under racing load (``tests/support/fleet.py: race``): readers hit random
   processes every 1-6 ms while writes come in back-to-back pairs 2-12 ms apart, rotating
   the writing process. Per write: the seconds from its completion to the start of the
   last read that still returned an older version (0: none did); p50/p95/max, and how
   many reads that started more than 100 ms after a completed write were older.
2. **Stampede**: 200 concurrent requests for a cold key spread over the fresh processes:
   how often the origin was called.
3. **Ping cost**: the bus's pings while idle: ``PUBLISH`` calls a second on the cache's
   Redis (``INFO commandstats``), pings a second per process, and the Redis CPU they cost
   (``INFO cpu``), extrapolated linearly to 1,000 processes.
4. **The hit path's check**: ``Memo.find`` (every memo hit runs it) with the coherence
   check (a monotonic clock read and a comparison) against the same method with the
   boolean it replaced, interleaved in one process.

Writes ``benchmarks/results/fleet.md`` and ``fleet.json``. Nothing is asserted: the tests
(``tests/test_fleet.py``) assert; this measures at sizes a test cannot afford.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

from benchlib import sysinfo  # noqa: E402
from benchlib.redis_proc import RedisServer  # noqa: E402

from tests.support.fleet import Fleet, origin_calls, race, stampede  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
BOUNDS = (1.0, 0.1)


def _info(url: str) -> tuple[int, float, int]:
    """(PUBLISH calls, Redis CPU seconds, all commands) so far."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
    publish = int(stats.get("cmdstat_publish", {}).get("calls", 0))
    commands = sum(int(v.get("calls", 0)) for v in stats.values())
    return publish, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), commands


def redis_cpu(url: str, seconds: float) -> float:
    """Seconds of CPU a second the cache's Redis used over ``seconds``."""
    _, cpu0, _ = _info(url)
    started = time.monotonic()
    time.sleep(seconds)
    _, cpu1, _ = _info(url)
    return (cpu1 - cpu0) / (time.monotonic() - started)


def ping_cost(url: str, size: int, seconds: float, idle_cpu: float) -> dict[str, float]:
    """What the idle fleet costs the cache's Redis: its pings (and stats reports), the CPU
    of an idle Redis (``idle_cpu``, measured without a fleet) subtracted."""
    time.sleep(1.0)  # past start-up
    publish0, cpu0, commands0 = _info(url)
    started = time.monotonic()
    time.sleep(seconds)
    publish1, cpu1, commands1 = _info(url)
    elapsed = time.monotonic() - started
    publishes = (publish1 - publish0) / elapsed
    cpu = max(0.0, (cpu1 - cpu0) / elapsed - idle_cpu)
    return {
        "publish_per_s": round(publishes, 1),
        "pings_per_process_per_s": round(publishes / size, 2),
        "commands_per_s": round((commands1 - commands0) / elapsed, 1),
        "redis_cpu_percent": round(cpu * 100, 2),
        "publish_per_s_at_1000": round(publishes / size * 1000),
        "redis_cpu_percent_at_1000": round(cpu * 100 / size * 1000, 1),
    }


async def one_fleet(
    size: int,
    bound: float,
    cache: RedisServer,
    data: RedisServer,
    seconds: float,
    idle_cpu: float,
) -> dict[str, Any]:
    env = {
        "TIERED_CACHE_REDIS_URL": cache.url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "TIERED_CACHE_COHERENCE_BOUND": str(bound),
        "FLEET_DATA_URL": data.url,
        "FLEET_ORIGIN_DELAY": "0.003",
    }
    with redis.Redis.from_url(cache.url) as client:
        client.flushall()
    with redis.Redis.from_url(data.url) as client:
        client.flushall()
    started = time.monotonic()
    with Fleet(size, env, start_timeout=300) as fleet:
        up = time.monotonic() - started
        print(f"  {size} processes up in {up:.1f} s (bound {bound})", flush=True)
        item = f"cold-{size}-{bound}"
        responses = await stampede(fleet, item, requests=200)
        calls = origin_calls(data.url, item)
        statuses = sorted({r.status_code for r in responses})
        print(f"  stampede: {calls} origin call(s) for 200 requests", flush=True)
        pings = ping_cost(cache.url, size, seconds, idle_cpu)
        print(f"  pings: {pings}", flush=True)
        report = await race(fleet, duration=seconds, limit=0.1)
        summary = report.summary()
        print(f"  race: {summary}", flush=True)
    return {
        "size": size,
        "bound": bound,
        "startup_s": round(up, 1),
        "stampede": {"requests": 200, "origin_calls": calls, "statuses": statuses},
        "pings": pings,
        "race": summary,
    }


def hit_check_cost(rounds: int = 15, batch: int = 20_000) -> dict[str, float]:
    """Nanoseconds per ``Memo.find``: with the coherence check, and with the boolean it
    replaced (``generations.trusted`` as a plain attribute), interleaved in rounds."""
    from fastapi_tiered_cache import CacheSettings, TieredCache
    from fastapi_tiered_cache.memo import Memo

    cache = TieredCache(CacheSettings(secret_key=SECRET))
    memo = Memo(cache)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items/1",
        "raw_path": b"/items/1",
        "query_string": b"",
        "scheme": "http",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"fleet.test"), (b"user-agent", b"bench")],
    }
    memo.remember(scope, "key", cache.generations.version, "_", ())

    class Before(Memo):
        trusted = True

        def find(self, scope: Any) -> Any:  # the method as it was, with a boolean
            if not self.enabled:
                return None
            memo_key = self.key_of(scope)
            if memo_key is None:
                return None
            try:
                found = self.keys.get(memo_key)
            except TypeError:
                return None
            if found is None:
                return None
            if not self.trusted or self.generations.version != found.version:
                return None
            return found

    before = Before(cache)
    before.keys = memo.keys
    assert memo.find(scope) is not None
    assert before.find(scope) is not None
    timings: dict[str, list[float]] = {"now": [], "before": []}
    pair = [("now", memo), ("before", before)]
    for index in range(rounds):
        for name, subject in pair if index % 2 else reversed(pair):
            find = subject.find
            started = time.perf_counter_ns()
            for _ in range(batch):
                find(scope)
            timings[name].append((time.perf_counter_ns() - started) / batch)
    now, then = sorted(timings["now"])[rounds // 2], sorted(timings["before"])[rounds // 2]
    return {
        "find_ns": round(now, 1),
        "find_before_ns": round(then, 1),
        "delta_ns": round(now - then, 1),
    }


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Fleet benchmark (issue 21)",
        "",
        f"Run {meta['when']} in {meta['seconds']:.0f} s. Command: `{meta['command']}`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in meta["machine"].items() if k != "wrk_path"),
        f"| load average (start → end) | {meta['load_start']} → {meta['load_end']} |",
        "",
        "## Visibility under racing reads and writes",
        "",
        "Per write: seconds from its completion to the start of the last read still older"
        " (0 when none was). Stale: reads that started more than 100 ms after a completed"
        " write and returned an older version.",
        "",
        "| processes | bound | reads | writes | visibility p50 | p95 | max | stale > 100 ms"
        " | hits l1 / l2 / miss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        race_ = row["race"]
        vis = race_["visibility_ms"]
        tiers = race_["hits_by_tier"]
        lines.append(
            f"| {row['size']} | {row['bound']} s | {race_['reads']} | {race_['writes']} |"
            f" {vis['p50']} ms | {vis['p95']} ms | {vis['max']} ms |"
            f" {race_['stale_reads_beyond_limit']} |"
            f" {tiers.get('l1', 0)} / {tiers.get('l2', 0)} / {tiers.get('miss', 0)} |"
        )
    lines += [
        "",
        "## Stampede over fresh processes",
        "",
        "| processes | bound | requests | origin calls | statuses |",
        "|---|---|---|---|---|",
        *(
            f"| {r['size']} | {r['bound']} s | 200 | {r['stampede']['origin_calls']} |"
            f" {r['stampede']['statuses']} |"
            for r in rows
        ),
        "",
        "## What the pings cost (idle fleet)",
        "",
        "Measured on the cache's Redis over an idle window (the stats reports, every 5 s, are"
        " in `commands/s` too); Redis CPU is over that of the same Redis with no fleet"
        f" ({meta['idle_redis_cpu_percent']} %). The last two columns extrapolate linearly to"
        " 1,000 processes. On this 2-core machine the processes (not Redis) are the limit:"
        " when they cannot run often enough, fewer pings are sent than asked for.",
        "",
        "| processes | bound | pings/s per process | Redis PUBLISH/s | Redis commands/s"
        " | Redis CPU | PUBLISH/s at 1,000 | Redis CPU at 1,000 |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['size']} | {r['bound']} s | {r['pings']['pings_per_process_per_s']} |"
            f" {r['pings']['publish_per_s']} | {r['pings']['commands_per_s']} |"
            f" {r['pings']['redis_cpu_percent']} % | {r['pings']['publish_per_s_at_1000']} |"
            f" {r['pings']['redis_cpu_percent_at_1000']} % |"
            for r in rows
        ),
        "",
        "## The hit path's coherence check",
        "",
        "`Memo.find`, which every memo hit runs, median of interleaved rounds in one process:"
        " with the coherence check (one `time.monotonic()` and a comparison), and as it was"
        " (a boolean attribute).",
        "",
        "| find, now | find, before | difference |",
        "|---|---|---|",
        f"| {meta['hit_check']['find_ns']} ns | {meta['hit_check']['find_before_ns']} ns |"
        f" {meta['hit_check']['delta_ns']} ns |",
        "",
    ]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="of load and of idle")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    started = time.monotonic()
    meta: dict[str, Any] = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/fleet.py " + shlex.join(sys.argv[1:]),
        "load_start": sysinfo.loadavg(),
    }
    meta["hit_check"] = hit_check_cost()
    print(f"hit path check: {meta['hit_check']}", flush=True)
    rows = []
    with RedisServer() as cache, RedisServer() as data:
        meta["machine"] = sysinfo.machine(cache.version, None, "uvicorn default")
        idle = redis_cpu(cache.url, args.seconds)
        meta["idle_redis_cpu_percent"] = round(idle * 100, 2)
        for size in args.sizes:
            for bound in BOUNDS:
                print(f"fleet of {size}, bound {bound} s", flush=True)
                rows.append(await one_fleet(size, bound, cache, data, args.seconds, idle))
    meta["seconds"] = time.monotonic() - started
    meta["load_end"] = sysinfo.loadavg()
    write(Path(args.out), meta, rows)
    return 0


def write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "fleet.md").write_text(render(meta, rows))
    print(f"wrote {out / 'fleet.md'}")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
