"""A bounded HTTP/1.1 keep-alive load generator, used when ``wrk`` is not installed.

Run in its own process (``python loadgen.py --port P --path /items --duration 2``): it
opens ``--connections`` keep-alive connections to 127.0.0.1, sends GETs back to back for
``--duration`` seconds (and at most ``--max-requests``), and prints one JSON line with
requests/s and latency percentiles. Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time


async def _connection(
    args: argparse.Namespace, deadline: float, out: dict, budget: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    head = "".join(f"{h}\r\n" for h in args.header)
    salt = random.randrange(1 << 30)
    n = 0
    perf = time.perf_counter
    try:
        while perf() < deadline and budget[0] > 0:
            budget[0] -= 1
            n += 1
            path = f"{args.path}?n={salt}-{n}" if args.unique else args.path
            extra = f"{args.unique_header}: {salt}-{n}\r\n" if args.unique_header else ""
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n{head}{extra}\r\n"
            ).encode()
            t0 = perf()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            out["latencies"].append(perf() - t0)
            if not status_line.startswith(b"HTTP/1.1 2"):
                out["non2xx"] += 1
    except (OSError, asyncio.IncompleteReadError):
        out["errors"] += 1
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    out = {"latencies": [], "non2xx": 0, "errors": 0}
    budget = [args.max_requests]
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(
        *(_connection(args, deadline, out, budget) for _ in range(args.connections))
    )
    elapsed = time.perf_counter() - start
    lat = sorted(out["latencies"])

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1e6 if lat else 0.0

    print(
        json.dumps(
            {
                "requests": len(lat),
                "seconds": elapsed,
                "rps": len(lat) / elapsed,
                "p50_us": pct(50),
                "p90_us": pct(90),
                "p99_us": pct(99),
                "non2xx": out["non2xx"],
                "errors": out["errors"],
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/items")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--unique", action="store_true")
    parser.add_argument("--unique-header", help="a header with a new value on every request")
    ns = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(ns))
    else:
        uvloop.run(main(ns))
