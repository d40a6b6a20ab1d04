#!/usr/bin/env python
"""Memory per entry, in L1 and in Redis: ``python benchmarks/memory.py [--full]``.

L1: bytes per entry against the payload size (100 B to 100 KB), tracemalloc against the
L1 byte accounting. Redis: ``used_memory`` per entry, the entry and its indexes, for
1e5 entries (and 1e6 with ``--full``), each in a private redis-server. Writes
``benchmarks/results/memory.md`` and ``memory.json``. See benchmarks/README.md.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the package, when it is not installed

from benchlib.package_ref import pop_ref, use_ref  # noqa: E402

REF = pop_ref(sys.argv)  # before anything imports the package
if REF is not None:
    use_ref(REF)

from benchlib import memory, memreport, sysinfo  # noqa: E402
from benchlib.redis_proc import redis_version  # noqa: E402

REAL = 2_000  # entries stored through the miss path in each Redis measurement


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also 1e6 entries in Redis")
    parser.add_argument(
        "--counts", type=int, nargs="+", help="Redis entry counts (default 100000; --full adds 1e6)"
    )
    parser.add_argument("--l1-entries", type=int, default=10_000, help="L1 entries per size")
    parser.add_argument(
        "--l1-max-mib", type=int, default=32, help="fewer L1 entries when bodies add up to more"
    )
    parser.add_argument("--skip-l1", action="store_true", help="only the Redis part")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--stem", default="memory", help="file name of the results")
    parser.add_argument("--ref", metavar="GIT_REF", help="benchmark the package at this git ref")
    args = parser.parse_args()
    counts = args.counts or ([100_000, 1_000_000] if args.full else [100_000])
    started, load_start = time.monotonic(), sysinfo.loadavg()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    results: dict[str, Any] = {"l1": None, "redis": []}
    cfg = {"mem_entries": args.l1_entries, "mem_max_bytes": args.l1_max_mib << 20}
    if not args.skip_l1:
        log("L1 memory per entry")
        results["l1"] = asyncio.run(memory.l1_memory(cfg, log))
    for count in counts:
        for size in memory.REDIS_SIZES:
            log(f"Redis memory: {count:,} entries of {size:,} B")
            results["redis"].append(asyncio.run(memory.redis_memory(count, size, REAL, log)))
    import shutil

    binary = shutil.which("redis-server")
    results["meta"] = {
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - started,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": sysinfo.machine(redis_version(binary) if binary else None, None, "asyncio"),
        "versions": sysinfo.versions(),
        "load_start": load_start,
        "load_end": sysinfo.loadavg(),
        "config": {**cfg, "counts": counts, "real": REAL, "sizes": list(memory.REDIS_SIZES)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.md").write_text(memreport.markdown(results))
    (args.out / f"{args.stem}.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {args.out / (args.stem + '.md')} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
