#!/usr/bin/env python
"""Where an L1 hit and an L2 hit spend their time: ``python benchmarks/profile_hits.py``.

Three views, written to ``benchmarks/results/profile.md`` (and ``profile.json``):

1. Steps: each step of the hit path timed on its own, many iterations (no profiler
   overhead), using the same public ``TieredCache`` methods the middleware calls. Internal
   names may move while the package evolves: a step that cannot be timed is reported.
2. cProfile over many hits: functions by own time, as a share of the profiled total.
3. py-spy (when installed and allowed to attach): sampled leaf functions of a subprocess
   serving hits in a loop, with no instrumentation overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from benchlib.package_ref import pop_ref, use_ref  # noqa: E402

_REF = pop_ref(sys.argv)  # before anything imports the package; PYTHONPATH reaches py-spy
if _REF is not None:
    use_ref(_REF)

from benchlib.apps import PATH, Spec, build  # noqa: E402
from benchlib.driver import Exchange, Lifespan, make_scope  # noqa: E402

_perf = time.perf_counter_ns


async def _setup(kind: str, redis_url: str | None) -> tuple[Any, Lifespan, Any]:
    built = build(Spec(kind, 1024, redis_url=redis_url, namespace=f"prof-{kind}"))
    lifespan = Lifespan(built.app)
    await lifespan.start()
    query = b"setup=1" if kind == "ours-miss" else b""
    for i in range(3):  # miss, then hits (or three misses)
        ex = Exchange()
        if kind == "ours-miss":
            query = b"setup=%d" % i
        await built.app(make_scope(PATH, query, (), lifespan.state), ex.receive, ex.send)
    return built, lifespan, ex


_COUNTER = [0]


async def _best(
    app: Any, state: dict[str, Any], n: int, unique: bool, repeats: int = 20
) -> tuple[float, float]:
    """(wall µs, CPU µs) per request: the best of ``repeats`` short loops of ``n // repeats``
    (the minimum is the least disturbed by other processes on the machine)."""
    per = max(20, n // repeats)
    wall = cpu = float("inf")
    for _ in range(repeats):
        c0 = time.thread_time_ns()
        w = await _loop(app, state, per, unique)
        cpu = min(cpu, (time.thread_time_ns() - c0) / per / 1000)
        wall = min(wall, w)
    return wall, cpu


async def _loop(app: Any, state: dict[str, Any], n: int, unique: bool = False) -> float:
    """Mean µs per request over ``n`` requests (scopes prebuilt, as in run.py)."""
    if unique:  # a miss each time
        base = _COUNTER[0]
        _COUNTER[0] += n
        scopes = [make_scope(PATH, b"n=%d" % (base + i), (), state) for i in range(n)]
    else:
        scopes = [make_scope(PATH, b"", (), state) for _ in range(n)]
    t0 = _perf()
    for scope in scopes:
        ex = Exchange()
        await app(scope, ex.receive, ex.send)
    return (_perf() - t0) / n / 1000


async def _time_step(fn: Any, n: int, repeats: int = 20) -> float:
    """µs of ``fn()`` (awaited when it returns an awaitable): best mean of ``repeats`` runs."""
    first = fn()
    is_async = inspect.isawaitable(first)
    if is_async:
        await first
    best = float("inf")
    per = max(1, n // repeats)
    for _ in range(repeats):
        t0 = _perf()
        if is_async:
            for _ in range(per):
                await fn()
        else:
            for _ in range(per):
                fn()
        best = min(best, (_perf() - t0) / per / 1000)
    return best


async def steps(built: Any, state: dict[str, Any], n: int) -> list[tuple[str, float | str]]:
    """Each step of ``_Responder.__call__`` for a hit, timed alone."""
    from fastapi_tiered_cache.keys import vary_values
    from fastapi_tiered_cache.metrics import Event
    from fastapi_tiered_cache.policy import check_request
    from fastapi_tiered_cache.request import RequestInfo

    cache = built.cache
    scope = make_scope(PATH, b"", (), state)
    info = RequestInfo.from_scope(scope)
    identity = await cache.identify(info)
    names = cache.vary_names(None)
    vary = vary_values(info, names)
    has_generation = hasattr(cache, "generation")
    generation = await cache.generation(identity) if has_generation else None

    def key() -> str:
        if has_generation:
            return str(cache.key_for(info, identity, vary, generation))
        return str(cache.key_for(info, identity, vary))

    the_key = key()
    found = await cache.store.get(the_key)
    record = found[0] if found else None
    out: list[tuple[str, float | str]] = []

    async def add(name: str, fn: Any) -> None:
        try:
            out.append((name, await _time_step(fn, n)))
        except Exception as exc:
            out.append((name, f"{type(exc).__name__}: {exc}"))

    await add("make_scope (driver, not in the hit)", lambda: make_scope(PATH, b"", (), state))
    try:
        from fastapi_tiered_cache import TieredCacheMiddleware
        from fastapi_tiered_cache.middleware import Responder as _Responder

        class Never:
            """The app's routes (the cache keys by them: it caches nothing it cannot see
            into), but an app that a hit must never reach."""

            router = getattr(built.app, "router", None) or getattr(
                getattr(built.app, "app", None), "router", None
            )

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                raise AssertionError("a hit must not reach the app")

        never = Never()
        middleware = TieredCacheMiddleware(never, cache=cache)

        async def whole_middleware() -> None:
            ex = Exchange()
            await middleware(scope, ex.receive, ex.send)

        async def whole_responder() -> None:
            ex = Exchange()
            await _Responder(never, cache)(scope, ex.receive, ex.send)

        await add("**whole hit: TieredCacheMiddleware.__call__**", whole_middleware)
        await add("**whole hit: _Responder.__call__ (the full path, no memo)**", whole_responder)
    except Exception as exc:
        out.append(("whole hit", f"{type(exc).__name__}: {exc}"))
    if hasattr(cache, "start_background"):
        await add("cache.start_background()", cache.start_background)
    await add(
        f"RequestInfo.from_scope ({len(scope['headers'])} headers)",
        lambda: RequestInfo.from_scope(scope),
    )
    await add("check_request", lambda: check_request(info, cache.methods))
    if cache.rules:
        await add("rules.match", lambda: cache.rules.match(info.path))
    await add("await cache.identify(info)", lambda: cache.identify(info))
    if has_generation:
        await add("await cache.generation(identity)", lambda: cache.generation(identity))
    await add("vary_names + vary_values", lambda: vary_values(info, cache.vary_names(None)))
    await add("cache.key_for (keyed BLAKE2b)", key)
    await add(
        f"await cache.store.get(key) [{found[1] if found else 'miss'}]",
        lambda: cache.store.get(the_key),
    )
    if record is not None:
        now = cache.clock()
        await add(
            "record.matches + is_fresh",
            lambda: (
                record.matches(vary_values(info, [k for k, _ in record.vary]))
                and record.is_fresh(now)
            ),
        )
    await add("cache.record(Event.HIT)", lambda: cache.record(Event.HIT, tier="l1"))
    if record is not None:
        try:
            from fastapi_tiered_cache.middleware import Responder as _Responder
            from fastapi_tiered_cache.stores import Tier

            responder = _Responder(built.app, cache)

            async def replay() -> None:
                ex = Exchange()
                await responder.replay(info, record, Tier.L1, ex.send)

            await add("_Responder.replay (headers + 2 sends)", replay)
        except Exception as exc:
            out.append(("_Responder.replay", f"{type(exc).__name__}: {exc}"))
    return out


async def stack_costs(n: int) -> list[tuple[str, float]]:
    """Whole requests of reference apps: the raw floor, and FastAPI's stack around a
    middleware that answers at once (what any add_middleware'd middleware pays first)."""
    out = []
    for kind, name in (
        ("raw", "raw ASGI floor (whole request)"),
        ("stack", "FastAPI stack + constant middleware (whole request)"),
    ):
        built = build(Spec(kind, 1024))
        lifespan = Lifespan(built.app)
        await lifespan.start()
        try:
            await _loop(built.app, lifespan.state, n // 5)
            out.append((name, (await _best(built.app, lifespan.state, n, False))[0]))
        finally:
            await lifespan.stop()
    return out


def cprofile_view(stats: pstats.Stats, n: int, top: int = 25) -> list[dict[str, Any]]:
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(path)}:{line}({func})",
                "calls_per_request": nc / n,
                "own_share": tt / total if total else 0.0,
                "cum_share": ct / total if total else 0.0,
            }
        )
    rows.sort(key=lambda r: r["own_share"], reverse=True)
    return rows[:top]


def _short(path: str) -> str:
    for marker in ("site-packages/", "fastapi_tiered_cache/", "benchmarks/"):
        if marker in path:
            return (marker if marker != "site-packages/" else "") + path.split(marker, 1)[1]
    return path


async def profile_kind(kind: str, redis_url: str | None, n: int) -> dict[str, Any]:
    built, lifespan, last = await _setup(kind, redis_url)
    try:
        status = last.header(b"cache-status")
        unique = kind == "ours-miss"
        await _loop(built.app, lifespan.state, n // 5, unique)  # warm
        wall, cpu = await _best(built.app, lifespan.state, n, unique)
        commands = await _redis_commands(built, lifespan.state, redis_url, unique)
        profiler = cProfile.Profile()
        scopes_n = n
        profiler.enable()
        profiled = await _loop(built.app, lifespan.state, scopes_n, unique)
        profiler.disable()
        stats = pstats.Stats(profiler)
        result: dict[str, Any] = {
            "kind": kind,
            "cache_status": status,
            "wall_us_per_request": wall,
            "cpu_us_per_request": cpu,
            "redis_commands_per_request": commands,
            "profiled_us_per_request": profiled,
            "cprofile": cprofile_view(stats, scopes_n),
            "cumulative": _cumulative(stats, scopes_n),
        }
        if built.cache is not None and not unique:
            result["steps"] = await steps(built, lifespan.state, max(5000, n // 2))
        return result
    finally:
        await lifespan.stop()
        await built.aclose()


async def _redis_commands(
    built: Any, state: dict[str, Any], url: str | None, unique: bool, n: int = 200
) -> dict[str, float]:
    """Redis commands per request (INFO commandstats before and after ``n`` requests)."""
    if not url:
        return {}
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:

        async def snapshot() -> dict[str, int]:
            info = await client.info("commandstats")
            return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

        before = await snapshot()
        await _loop(built.app, state, n, unique)
        after = await snapshot()
        delta = {k: (v - before.get(k, 0)) / n for k, v in after.items()}
        delta["info"] = delta.get("info", 0) - 1 / n  # our own second INFO
        return {k: round(v, 2) for k, v in sorted(delta.items()) if round(v, 2) > 0}
    finally:
        await client.aclose()


def _cumulative(stats: pstats.Stats, n: int) -> list[dict[str, Any]]:
    """Inclusive share of a few functions worth naming (whatever exists in this version)."""
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    wanted = (
        "__call__",
        "replay",
        "from_scope",
        "identify",
        "generation",
        "key_for",
        "build_key",
        "get",
        "lookup",
        "record",
        "start_background",
        "enabled",
        "marks",
        "wait_for",
        "_run",
        "decode",
        "lookup_remote",
        "execute_command",
        "peek",
        "current",
        "store",
        "set_remote",
        "set_local",
        "record_remote",
        "encode",
        "finish",
        "build_record",
        "app_through",
        "send",
        "on_body",
        "on_start",
        "judge",
        "execute",
        "acquire",
        "release",
        "lease",
        "_lease",
        "serialize_response",
        "jsonable_encoder",
        "run_endpoint_function",
        "app",
        "handle",
    )
    rows = []
    for (path, line, func), (_cc, nc, _tt, ct, _c) in stats.stats.items():  # type: ignore[attr-defined]
        if func in wanted and (
            "fastapi_tiered_cache" in path
            or "fastapi/" in path
            or "starlette" in path
            or "redis" in path
            or "asyncio" in path
        ):
            rows.append(
                {
                    "function": f"{_short(path)}:{line}({func})",
                    "calls_per_request": nc / n,
                    "cum_share": ct / total if total else 0,
                }
            )
    rows.sort(key=lambda r: r["cum_share"], reverse=True)
    return rows[:25]


# --------------------------------------------------------------------------- py-spy


def pyspy_view(kind: str, redis_url: str | None, seconds: float) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    out = Path(tempfile.mkdtemp(prefix="pyspy-")) / "stacks.txt"
    cmd = [
        spy,
        "record",
        "--format",
        "raw",
        "--rate",
        "1000",
        "--nonblocking",
        "-o",
        str(out),
        "--",
        sys.executable,
        __file__,
        "--serve",
        kind,
        "--seconds",
        str(seconds),
    ]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0 or not out.exists():
        return {"skipped": f"py-spy failed: {(done.stderr or done.stdout).strip()[-300:]}"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if not any("_Responder" in f or "middleware.py" in f for f in frames):
            continue  # only samples inside a request
        n = int(count)
        total += n
        own[_frame(frames[-1])] += n
        for f in {_frame(f) for f in frames}:
            if not f.startswith(_NOT_REQUEST):
                inclusive[f] += n
    shutil.rmtree(out.parent, ignore_errors=True)
    return {
        "samples": total,
        "own": [(f, c / total) for f, c in own.most_common(20)] if total else [],
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(30)] if total else [],
    }


_NOT_REQUEST = ("main ", "<module> ", "run ", "Runner.", "run.<locals>", "serve_loop ", "_loop ")


def _frame(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    return f"{func} ({_short(path) or where})"


async def serve_loop(kind: str, redis_url: str | None, seconds: float) -> None:
    built, lifespan, _ = await _setup(kind, redis_url)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await _loop(built.app, lifespan.state, 500)
    finally:
        await lifespan.stop()
        await built.aclose()


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Hit path profile",
        "",
        f"{results['meta']['python']}, loop {results['meta']['loop']}, "
        f"{results['meta']['cpu']}; package {results['meta']['git']}.",
        "",
    ]
    lines += [
        "## Reference apps (wall µs per whole request, best of 20 short loops)",
        "",
        "| app | µs |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in results.get("reference", [])]
    lines.append("")
    for item in results["kinds"]:
        commands = item.get("redis_commands_per_request") or {}
        command_text = ", ".join(f"{k} {v:g}" for k, v in commands.items()) or "none"
        lines += [
            f"## {item['label']}",
            "",
            f"Cache-Status of a profiled response: `{item['cache_status']}`. "
            f"Per request without the profiler (best of 20 short loops): "
            f"**{item['wall_us_per_request']:.1f} µs wall, "
            f"{item['cpu_us_per_request']:.1f} µs CPU** "
            f"({item['profiled_us_per_request']:.1f} µs under cProfile). "
            f"Redis commands per request: {command_text}.",
            "",
        ]
        if item.get("steps"):
            lines += [
                "### Steps of the full path (no memo) timed alone (wall µs, best of 20 loops)",
                "",
                "| step | µs | share of the wall time |",
                "|---|---|---|",
            ]
            timed = 0.0
            for name, value in item["steps"]:
                if isinstance(value, float):
                    share = 100 * value / item["wall_us_per_request"]
                    lines.append(f"| {name} | {value:.2f} | {share:.0f}% |")
                    if not name.startswith(("make_scope", "**whole")):
                        timed += value
                else:
                    lines.append(f"| {name} | {value} | |")
            whole = item["wall_us_per_request"]
            rest = whole - timed
            lines.append(
                f"| **sum of the cache's steps** | **{timed:.2f}** | {100 * timed / whole:.0f}% |"
            )
            lines.append(
                f"| rest: driver, FastAPI/Starlette stack, awaits, dispatch | "
                f"{rest:.2f} | {100 * rest / whole:.0f}% |"
            )
            lines.append("")
        lines += [
            "### cProfile: own time (share of the profiled total)",
            "",
            "cProfile counts every resumption of a coroutine as a call, so an `async` "
            "function that suspended once shows 2 calls per request.",
            "",
            "| function | calls/request | own | inclusive |",
            "|---|---|---|---|",
        ]
        for row in item["cprofile"][:20]:
            lines.append(
                f"| `{row['function']}` | {row['calls_per_request']:.1f} | "
                f"{100 * row['own_share']:.1f}% | {100 * row['cum_share']:.1f}% |"
            )
        lines += [
            "",
            "### cProfile: inclusive share of named functions",
            "",
            "| function | calls/request | inclusive |",
            "|---|---|---|",
        ]
        for row in item["cumulative"]:
            lines.append(
                f"| `{row['function']}` | {row['calls_per_request']:.1f} | "
                f"{100 * row['cum_share']:.1f}% |"
            )
        spy = item.get("pyspy", {})
        lines += ["", "### py-spy (sampled, no instrumentation)", ""]
        if "skipped" in spy:
            lines.append(f"Skipped: {spy['skipped']}")
        elif spy:
            lines += [
                f"{spy['samples']} samples inside requests.",
                "",
                "| leaf function (own) | share |",
                "|---|---|",
            ]
            lines += [f"| `{f}` | {100 * s:.1f}% |" for f, s in spy["own"][:15]]
            lines += ["", "| function (inclusive) | share |", "|---|---|"]
            lines += [f"| `{f}` | {100 * s:.1f}% |" for f, s in spy["inclusive"][:25]]
        lines.append("")
    return "\n".join(lines) + "\n"


LABELS = {
    "ours-l1": "L1 hit via install(app) (a repeat: the memo answers in the app's __call__)",
    "ours-l1-outer": "L1 hit, TieredCacheMiddleware wrapping the FastAPI app",
    "ours-l1-ident": "L1 hit with Authorization, X-Tenant-ID and Vary (vary_on)",
    "ours-l2": "L2 hit (l1_max_entries=0)",
    "ours-miss": "Miss with store (unique URL each time, L1 + L2)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description="profile the hit paths")
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--pyspy-seconds", type=float, default=8.0)
    parser.add_argument("--no-pyspy", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--ref", metavar="GIT_REF", help="profile fastapi_tiered_cache/ as committed at this ref"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # py-spy target
    parser.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = _runner()
    if args.serve:
        run(serve_loop(args.serve, args.redis_url, args.seconds))
        return 0

    from benchlib import sysinfo
    from benchlib.redis_proc import RedisServer

    results: dict[str, Any] = {"kinds": []}
    print("reference apps", flush=True)
    results["reference"] = run(stack_costs(args.requests))
    with RedisServer() as redis:
        for kind in ("ours-l1", "ours-l1-outer", "ours-l1-ident", "ours-l2", "ours-miss"):
            n = args.requests if kind.startswith("ours-l1") else max(2000, args.requests // 6)
            print(f"profiling {kind} ({n} requests)", flush=True)
            item = run(profile_kind(kind, redis.url, n))
            item["label"] = LABELS[kind]
            if not args.no_pyspy and kind in ("ours-l1", "ours-l2"):
                print(f"py-spy {kind} ({args.pyspy_seconds:g} s)", flush=True)
                item["pyspy"] = pyspy_view(kind, redis.url, args.pyspy_seconds)
            results["kinds"].append(item)
    machine = sysinfo.machine(None, None, "uvloop" if _has_uvloop() else "asyncio")
    results["meta"] = {k: machine[k] for k in ("python", "cpu", "git")}
    results["meta"]["loop"] = machine["event_loop"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.md").write_text(markdown(results))
    (args.out / "profile.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out / 'profile.md'}")
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _runner() -> Any:
    if _has_uvloop() and os.environ.get("BENCH_LOOP", "auto") != "asyncio":
        import uvloop

        return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    sys.exit(main())
