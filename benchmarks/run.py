#!/usr/bin/env python
"""Benchmark suite of issue 9: ``python benchmarks/run.py [--quick]``.

Starts a private redis-server on a free loopback port, measures every variant in-process
(minimal ASGI driver) and over HTTP (uvicorn + wrk), then writes
``benchmarks/results/latest.md`` and ``latest.json`` (and ``quick.*`` / ``full.*``).
See benchmarks/README.md. Nothing here asserts on timings: targets are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the package, when it is not installed

from benchlib.package_ref import pop_ref, use_ref  # noqa: E402

REF = pop_ref(sys.argv)  # before anything imports the package
if REF is not None:
    use_ref(REF)

from benchlib import httpmode, inproc, memory, report, sysinfo  # noqa: E402
from benchlib.redis_proc import RedisServer  # noqa: E402

SECTIONS = ("main", "rtt", "l1size", "memory", "tags", "http")

QUICK: dict[str, Any] = {
    "quick": True,
    "rounds": 4, "batch": 200, "budget": 0.06,
    "rtts": [0, 1, 2], "rtt_rounds": 3,
    "l1_sizes": [1_000, 50_000],
    "mem_entries": 1_000, "mem_max_bytes": 4 << 20,
    "tag_counts": [10, 100], "tag_reps": 1,
    "http_rounds": 1, "http_seconds": 2.0, "http_warmup": 1.0, "http_connections": 16,
}  # fmt: skip
FULL: dict[str, Any] = {
    "quick": False,
    "rounds": 25, "batch": 300, "budget": 0.15,
    "rtts": [0, 1, 2], "rtt_rounds": 12,
    "l1_sizes": [1_000, 1_000_000],
    "mem_entries": 10_000, "mem_max_bytes": 32 << 20,
    "tag_counts": [10, 100, 1_000, 10_000], "tag_reps": 2,
    "http_rounds": 3, "http_seconds": 3.0, "http_warmup": 1.0, "http_connections": 16,
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 2 min)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="skip sections")
    parser.add_argument(
        "--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
        help="event loop in-process and in uvicorn (auto: uvloop when installed)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument(
        "--ref",
        metavar="GIT_REF",
        help="benchmark fastapi_tiered_cache/ as committed at this ref (default: working tree)",
    )  # fmt: skip  (consumed before parsing; listed here for --help)
    args = parser.parse_args()

    cfg = QUICK if args.quick else FULL
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    loop = _pick_loop(args.loop)
    started = time.monotonic()
    load_start = sysinfo.loadavg()
    log = _logger(started)
    peers = inproc.peer_status()
    for peer, status in peers.items():
        if status != "ok":
            log(f"peer {peer}: {status}")
    results: dict[str, Any] = {"errors": {}}

    with RedisServer() as redis:
        log(
            f"redis-server {redis.version} pid {redis.proc.pid if redis.proc else '?'} "
            f"on port {redis.port}"
        )
        in_process = [s for s in sections if s != "http"]
        if in_process:
            _run_loop(loop, _in_process(in_process, redis, cfg, log, peers, results))
        if "http" in sections:
            log("http: starting servers")
            try:
                results["http"] = httpmode.run_http(redis, cfg, log, peers, loop)
            except Exception as exc:
                results["errors"]["http"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()

    wrk = results.get("http", {}).get("tool")
    results["meta"] = {
        "mode": "quick" if args.quick else "full",
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - started,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": sysinfo.machine(redis.version, wrk, loop),
        "versions": sysinfo.versions(),
        "peers": peers,
        "load_start": load_start,
        "load_end": sysinfo.loadavg(),
        "config": cfg,
        "sections": sections,
    }
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = results["meta"]["mode"]
    stems = ("latest", mode) if sections == list(SECTIONS) else ("partial",)
    for stem in stems:
        (args.out / f"{stem}.md").write_text(text)
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    for target in results["targets"]:
        ratio = "  -  " if target["ratio"] is None else f"{target['ratio']:5.2f}x"
        print(f"{target['result']:4s} {ratio}  {target['target']}")
    print(
        f"\nwrote {args.out / (stems[0] + '.md')} and {stems[0]}.json "
        f"({results['meta']['seconds']:.0f} s)"
    )
    return 0


async def _in_process(
    sections: list[str],
    redis: Any,
    cfg: dict[str, Any],
    log: Any,
    peers: dict[str, str],
    results: dict[str, Any],
) -> None:
    runners = {
        "main": lambda: inproc.main_matrix(redis, cfg, log, peers),
        "rtt": lambda: inproc.latency_sweep(redis, cfg, log, peers),
        "l1size": lambda: inproc.l1_size(cfg, log),
        "memory": lambda: memory.l1_memory(cfg, log),
        "tags": lambda: inproc.tag_purge(redis, cfg, log),
    }
    for name in sections:
        log(f"{name}: start")
        try:
            results[name] = await runners[name]()
        except Exception as exc:
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()


def _pick_loop(choice: str) -> str:
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def _run_loop(loop: str, coro: Any) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


def _logger(started: float) -> Any:
    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    return log


if __name__ == "__main__":
    sys.exit(main())
