#!/usr/bin/env python
"""L1 hits of an app served without lifespan events (issue 18): ``uvicorn --lifespan off``
or a bare ``httpx.ASGITransport`` never send ``lifespan.startup``.

The same app (ours, L1 + Redis, 1 KB JSON, in-process driver as in run.py) is measured with
its lifespan started and without it, after the same warm-up (one request, then 1.5 s for
the invalidation bus to be heard if it runs). Prints µs per hit (best of 20 short loops).

Usage: .bench-venv/bin/python benchmarks/lifespanless.py [--ref GIT_REF] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from benchlib.package_ref import pop_ref, use_ref  # noqa: E402

_REF = pop_ref(sys.argv)  # before anything imports the package
if _REF is not None:
    use_ref(_REF)

from benchlib.apps import PATH, Spec, build  # noqa: E402
from benchlib.driver import Exchange, Lifespan, make_scope  # noqa: E402
from benchlib.redis_proc import RedisServer  # noqa: E402


async def _best(app: Any, state: dict[str, Any], n: int, repeats: int = 20) -> tuple[float, float]:
    """(wall µs, CPU µs) per hit: the best of ``repeats`` loops of ``n // repeats``."""
    per = max(20, n // repeats)
    wall = cpu = float("inf")
    for _ in range(repeats):
        scopes = [make_scope(PATH, b"", (), state) for _ in range(per)]
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for scope in scopes:
            ex = Exchange()
            await app(scope, ex.receive, ex.send)
        wall = min(wall, (time.perf_counter_ns() - t0) / per / 1000)
        cpu = min(cpu, (time.thread_time_ns() - c0) / per / 1000)
    return wall, cpu


async def measure(redis_url: str, lifespan: bool, n: int) -> tuple[float, float]:
    built = build(Spec("ours-l1", 1024, redis_url=redis_url, namespace=f"ls-{lifespan}"))
    state: dict[str, Any] = {}
    runner = None
    if lifespan:
        runner = Lifespan(built.app)
        await runner.start()
        state = runner.state
    for _ in range(2):
        ex = Exchange()
        await built.app(make_scope(PATH, b"", (), state), ex.receive, ex.send)
    await asyncio.sleep(1.5)  # the bus, where it runs, is heard by now
    result = await _best(built.app, state, n)
    if runner is not None:
        await runner.stop()
    return result


async def main(n: int) -> dict[str, object]:
    with RedisServer() as server:
        with_ls = await measure(server.url_db(1), True, n)
        without = await measure(server.url_db(2), False, n)
    return {
        "ref": _REF or "working tree",
        "hit_with_lifespan_us": round(with_ls[0], 2),
        "hit_without_lifespan_us": round(without[0], 2),
        "cpu_with_lifespan_us": round(with_ls[1], 2),
        "cpu_without_lifespan_us": round(without[1], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.requests)), indent=2))
