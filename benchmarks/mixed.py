#!/usr/bin/env python
"""Mixed workload over HTTP (issue 18): ``python benchmarks/mixed.py [--quick]``.

uvicorn with 1 and 4 workers serving ``GET /items/{id}`` (a ~1 KB JSON document from an
origin that awaits 2 ms) and ``PUT /items/{id}`` (5 % of the requests, purging the item),
loaded by wrk replaying a precomputed stream of Zipf-distributed ids over 100,000 items,
for bare FastAPI, ours (``install(app)``: defaults + a secret key, L1 + Redis) and the
Redis-backed peers. Writes ``benchmarks/results/mixed.md`` and ``mixed.json``
(``mixed-quick.*`` with ``--quick``). Nothing is asserted: the goal of issue 18 (ahead of
bare FastAPI at every point) is reported as PASS / FAIL per point. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import tempfile
import time
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

from benchlib import mixedprofile, mixedreport, sysinfo, zipf  # noqa: E402
from benchlib.inproc import peer_status  # noqa: E402
from benchlib.mixedapp import VARIANTS  # noqa: E402
from benchlib.mixedrun import Wrk, check, measure_group, start_group, summarize  # noqa: E402
from benchlib.redis_proc import RedisServer  # noqa: E402

HEADERS = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0 (issue-18)"),
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-GB,en;q=0.9"),
]
QUICK: dict[str, Any] = {
    "workers": [1, 4], "exponents": [0.6, 1.2], "rounds": 1, "seconds": 5, "warmup": 3,
    "connections": 16, "keys": 100_000, "writes": 0.05, "stream": 300_000,
}  # fmt: skip
FULL: dict[str, Any] = {
    "workers": [1, 4], "exponents": [0.6, 0.9, 1.2], "rounds": 3, "seconds": 10, "warmup": 10,
    "connections": 16, "keys": 100_000, "writes": 0.05, "stream": 1_000_000,
}  # fmt: skip
PEERS = {"fc2": "fastapi-cache2", "cashews": "cashews"}


def main() -> int:
    args = _parser().parse_args()
    if args.render:  # only rewrite the Markdown of a results file (after a report change)
        results = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(mixedreport.markdown(results))
        print(f"wrote {args.render.with_suffix('.md')}")
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("workers", "exponents", "rounds", "seconds", "warmup", "connections"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg.update(origin=args.origin, origin_ms=args.origin_ms, quick=args.quick)
    cfg["profile"] = not args.no_profile
    wrk_binary = shutil.which("wrk")
    if wrk_binary is None:
        raise SystemExit("wrk is required (apt-get install wrk, or bash benchmarks/setup.sh)")
    loop = "uvloop" if _importable("uvloop") else "asyncio"
    started, load_start = time.monotonic(), sysinfo.loadavg()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    peers = peer_status()
    variants = [v for v in (args.variants or VARIANTS) if v not in PEERS or _peer_ok(v, peers)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    script = tmp / "mixed.lua"
    zipf.wrk_script(script, HEADERS)
    wrk = Wrk(wrk_binary, script, cfg["connections"])
    spec: dict[str, Any] = {
        "origin": args.origin, "origin_ms": args.origin_ms, "connections": cfg["connections"],
    }  # fmt: skip
    if args.origin == "postgres":
        from benchlib.pg import prepare

        spec["dsn"] = args.dsn
        prepare(args.dsn, cfg["keys"] + 1000, log)
    streams = _streams(cfg, tmp, log)
    groups: list[dict[str, Any]] = []
    rng = random.Random(18)
    try:
        with RedisServer() as redis:
            log(f"redis-server {redis.version} on port {redis.port}; variants {variants}")
            for workers in cfg["workers"]:
                for exponent in cfg["exponents"]:
                    groups.append(
                        _group(workers, exponent, variants, redis, spec, loop, wrk, streams,
                               cfg, log, rng)
                    )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "groups": groups,
        "streams": {str(e): s["about"] for e, s in streams.items()},
        "meta": {
            "mode": "quick" if args.quick else "full",
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": time.monotonic() - started,
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "wrk_command": wrk.command("PORT", "STREAM_FILE", "OFFSET", cfg["seconds"]),
            "wrk_script": script.read_text() if script.exists() else "",
            "machine": sysinfo.machine(redis.version, _wrk_version(wrk_binary), loop),
            "versions": sysinfo.versions(),
            "peers": peers,
            "load_start": load_start,
            "load_end": sysinfo.loadavg(),
            "config": cfg,
            "headers": HEADERS,
        },
    }
    stem = args.stem or ("mixed-quick" if args.quick else "mixed")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(mixedreport.markdown(results))
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    for line in mixedreport.verdicts(results):
        print(line)
    print(
        f"\nwrote {args.out / (stem + '.md')} and {stem}.json ({time.monotonic() - started:.0f} s)"
    )
    return 0


def _group(
    workers: int, exponent: float, variants: list[str], redis: Any, spec: dict[str, Any],
    loop: str, wrk: Wrk, streams: dict[float, dict[str, Any]], cfg: dict[str, Any],
    log: Any, rng: random.Random,
) -> dict[str, Any]:  # fmt: skip
    import redis as redis_sync

    flusher = redis_sync.Redis.from_url(redis.url)
    flusher.flushall()  # every group starts with empty caches
    flusher.close()
    log(f"group: {workers} worker(s), Zipf s={exponent:g} (load {sysinfo.loadavg()})")
    group: dict[str, Any] = {
        "workers": workers, "exponent": exponent, "load_start": sysinfo.loadavg(),
    }  # fmt: skip
    servers, failed = start_group(variants, workers, redis, spec, loop)
    try:
        problems = {s.variant: check(s, cfg["keys"] + 7) for s in servers}
        for variant, found in problems.items():
            for problem in found:
                log(f"    {variant}: {problem}")
        stream = streams[exponent]
        runs = measure_group(
            servers, wrk, stream["path"], cfg, redis, log, rng, len(stream["requests"])
        )
        if cfg["profile"] and workers == 1:
            offset = rng.randrange(len(stream["requests"]))
            group["profiles"] = {}
            for server in servers:
                if server.variant in ("bare", "ours"):
                    log(f"    profiling {server.variant} (py-spy)")
                    group["profiles"][server.variant] = mixedprofile.profile(
                        server, wrk, stream["path"], offset, cfg["seconds"]
                    )
    finally:
        for server in servers:
            server.stop()
    group["rows"] = [summarize(v, runs[v]) | {"problems": problems[v]} for v in runs]
    group["failed"] = failed
    group["load_end"] = sysinfo.loadavg()
    return group


def _streams(cfg: dict[str, Any], tmp: Path, log: Any) -> dict[float, dict[str, Any]]:
    out = {}
    for exponent in cfg["exponents"]:
        requests = zipf.stream(exponent, cfg["keys"], cfg["stream"], cfg["writes"])
        path = tmp / f"stream-{exponent:g}.txt"
        zipf.write_stream(path, requests)
        about = {
            "exponent": exponent,
            "keys": cfg["keys"],
            "length": len(requests),
            "write_share": sum(1 for r in requests if r < 0) / len(requests),
            "top_100_share": zipf.top_share(exponent, cfg["keys"], 100),
            "top_10000_share": zipf.top_share(exponent, cfg["keys"], 10_000),
            "distinct_ids": len({abs(r) for r in requests}),
            "unbounded_cache_100k": zipf.expected_ratio(requests[:100_000]),
        }
        log(
            f"stream s={exponent:g}: {len(requests):,} requests, "
            f"{about['write_share']:.1%} writes, top 100 ids {about['top_100_share']:.1%}"
        )
        out[exponent] = {"path": path, "requests": requests, "about": about}
    return out


def _peer_ok(variant: str, peers: dict[str, str]) -> bool:
    return peers.get(PEERS[variant]) == "ok"


def _wrk_version(binary: str) -> str:
    import subprocess

    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else "wrk"


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 5 s per point (~5 min)")
    parser.add_argument("--workers", type=int, nargs="+", help="uvicorn worker counts (1 4)")
    parser.add_argument(
        "--exponents", type=float, nargs="+", help="Zipf exponents (0.6 0.9 1.2; --quick: 0.6 1.2)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per point (3)")
    parser.add_argument("--seconds", type=int, help="wrk duration of one load (10)")
    parser.add_argument("--warmup", type=int, help="wrk warm-up per server, seconds (10)")
    parser.add_argument("--connections", type=int, help="wrk connections (16)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="subset of variants")
    parser.add_argument(
        "--origin", choices=("sleep", "postgres"), default="sleep",
        help="origin of each request: await asyncio.sleep(--origin-ms), or one SELECT by id",
    )  # fmt: skip
    parser.add_argument("--origin-ms", type=float, default=2.0, help="sleep origin, ms (2)")
    parser.add_argument(
        "--dsn", default="postgresql://127.0.0.1:5432/test", help="PostgreSQL, --origin postgres"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy pass (bare and ours, 1 worker)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--stem", help="file name of the results (default mixed / mixed-quick)")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only rewrite the .md of a results .json"
    )
    parser.add_argument("--ref", metavar="GIT_REF", help="benchmark the package at this git ref")
    return parser


if __name__ == "__main__":
    sys.exit(main())
