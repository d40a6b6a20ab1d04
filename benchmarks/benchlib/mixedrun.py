"""Running the mixed workload: one group (worker count x Zipf exponent) at a time.

In a group every variant gets its own uvicorn, all started first and all served by the
same private redis-server (each variant in its own database). Each server is checked
(a miss, a hit, a ``PUT`` that purges, a miss again: counted at the origin, so a variant
that does not purge or does not cache is flagged), warmed up by replaying the same
stream, then measured in rounds: each round replays the same slice of the stream against
every variant in a shuffled order, so machine drift is shared. Counters are read before
and after each load through the workers' control ports, never through the app.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .httpmode import parse_wrk
from .mixedapp import LABELS, SECRET
from .mixedserver import MixedServer, cpu_seconds, delta

Log = Callable[[str], None]
DATABASES = {"ours": 1, "fc2": 2, "cashews": 3}


class Wrk:
    """``wrk`` replaying a stream file from an offset (see ``zipf.wrk_script``)."""

    def __init__(self, binary: str, script: Path, connections: int) -> None:
        self.binary = binary
        self.script = script
        self.connections = connections

    def run(self, port: int, stream: Path, offset: int, seconds: int) -> dict[str, Any]:
        cmd = [
            self.binary, "-t1", f"-c{self.connections}", f"-d{seconds}s", "--latency",
            "-s", str(self.script), f"http://127.0.0.1:{port}/", "--", str(stream), str(offset),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        result = parse_wrk(done.stdout)
        if "Requests/sec" not in done.stdout:
            result["error"] = (done.stderr or done.stdout).strip()[-300:] or "wrk failed"
        return result

    def command(self, port: str, stream: str, offset: str, seconds: int) -> str:
        return (
            f"{self.binary} -t1 -c{self.connections} -d{seconds}s --latency -s {self.script.name} "
            f"http://127.0.0.1:{port}/ -- {stream} {offset}"
        )


def start_group(
    variants: list[str], workers: int, redis: Any, spec: dict[str, Any], loop: str
) -> tuple[list[MixedServer], list[dict[str, Any]]]:
    """Start every variant's server; returns those that came up and why the others did not."""
    servers = []
    for variant in variants:
        url = redis.url_db(DATABASES.get(variant, 0))
        env = {"TIERED_CACHE_REDIS_URL": url, "TIERED_CACHE_SECRET_KEY": SECRET}
        # A worker never has more queries in flight than wrk has connections to it.
        pool = max(2, -(-spec["connections"] // workers))
        server = MixedServer(
            variant,
            workers,
            {**spec, "redis_url": url, "pool_size": pool},
            env if variant == "ours" else {},
            loop,
        )
        server.start()
        servers.append(server)
    ready, failed = [], []
    for server in servers:
        problem = server.wait_ready()
        if problem is None:
            ready.append(server)
        else:
            failed.append({"variant": server.variant, "error": problem})
            server.stop()
    return ready, failed


def check(server: MixedServer, probe: int) -> list[str]:
    """A miss, a hit, a purging ``PUT``, a miss: judged by origin calls, not by headers."""
    problems: list[str] = []
    path = f"/items/{probe}"
    seen: list[int] = []
    statuses: list[str] = []
    for step in ("get", "get", "put", "get", "get"):
        if step == "put":
            status, _, _ = server.request("PUT", path, '{"name":"Checked","price":1.5}')
            if status != 200:
                problems.append(f"check: PUT answered {status}")
            time.sleep(0.2)  # the purge reaches every worker over the bus
            continue
        status, headers, body = server.request("GET", path)
        try:
            ok = status == 200 and json.loads(body)["id"] == probe
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            problems.append(f"check: GET {path} answered {status} with another document")
        statuses.append(
            headers.get("cache-status") or headers.get("x-fastapi-cache") or headers.get("x-cache")
            or "-"
        )  # fmt: skip
        seen.append(server.counters()["origin_get"])
    calls = [b - a for a, b in itertools.pairwise(seen)]  # by GETs 2, 3 (after PUT), 4
    expected = [1, 1, 1] if server.variant == "bare" else [0, 1, 0]
    if calls != expected:
        problems.append(
            f"check: origin calls {calls} for GET, GET, PUT+GET, GET (expected {expected}); "
            f"response headers {statuses}"
        )
    return problems


def measure_group(
    servers: list[MixedServer],
    wrk: Wrk,
    stream: Path,
    cfg: dict[str, Any],
    redis: Any,
    log: Log,
    rng: random.Random,
    stream_length: int,
) -> dict[str, list[dict[str, Any]]]:
    """Warm up every server, then ``cfg['rounds']`` interleaved rounds; the runs by variant.

    Around each load, redis-server's CPU time and command counts are read too: only one
    variant is loaded at a time, so what changed is (nearly all) that variant's doing."""
    import redis as redis_sync

    stats = redis_sync.Redis.from_url(redis.url)
    redis_pid = redis.proc.pid if redis.proc else None
    for server in servers:
        result = wrk.run(server.port, stream, 0, cfg["warmup"])
        if result.get("error"):
            log(f"    warm-up {server.variant}: {result['error']}")
    runs: dict[str, list[dict[str, Any]]] = {server.variant: [] for server in servers}
    try:
        for r in range(cfg["rounds"]):
            offset = rng.randrange(stream_length)  # one slice of the stream for every variant
            order = list(servers)
            rng.shuffle(order)
            for server in order:
                before, commands = server.counters(), _commands(stats)
                redis_before = cpu_seconds(redis_pid) if redis_pid else None
                result = wrk.run(server.port, stream, offset, cfg["seconds"])
                time.sleep(0.3)  # requests still in flight when wrk stopped reach the counters
                redis_after = cpu_seconds(redis_pid) if redis_pid else None
                result.update(delta(before, server.counters()))
                result["redis_commands"] = _commands_delta(commands, _commands(stats))
                result["offset"] = offset
                if redis_before is not None and redis_after is not None:
                    result["redis_cpu_s"] = redis_after - redis_before
                runs[server.variant].append(result)
                log(
                    f"    round {r + 1} {server.variant:8s} {result.get('rps', 0):8.0f} req/s  "
                    f"hit {hit_ratio(result):5.1%}  p99 {result.get('p99_us', 0) / 1000:6.1f} ms"
                )
    finally:
        stats.close()
    return runs


def _commands(client: Any) -> dict[str, int]:
    """Calls per Redis command so far (``INFO commandstats``)."""
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in client.info("commandstats").items()
    }


def _commands_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {name: n - before.get(name, 0) for name, n in after.items()}
    out.pop("info", None)  # our own reading
    return {name: n for name, n in out.items() if n > 0}


def hit_ratio(run: dict[str, Any]) -> float:
    """Share of GETs the origin did not see (0 for bare FastAPI)."""
    gets = run.get("gets", 0)
    return 1.0 - run.get("origin_get", 0) / gets if gets else 0.0


def summarize(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of req/s and latency; totals of counters; per-request CPU."""
    good = [run for run in runs if not run.get("error")]
    row: dict[str, Any] = {"variant": variant, "label": LABELS[variant], "rounds": len(good)}
    for key in ("rps", "p50_us", "p90_us", "p99_us"):
        values = [run[key] for run in good if key in run]
        if values:
            row[key] = statistics.median(values)
            row[f"{key}_all"] = values
    served = sum(run.get("gets", 0) + run.get("puts", 0) for run in good)
    for key in ("gets", "puts", "origin_get", "origin_put", "non2xx"):
        row[key] = sum(run.get(key, 0) for run in good)
    row["hit_ratio"] = hit_ratio(row)
    row["hit_ratio_all"] = [hit_ratio(run) for run in good]
    row["write_share"] = row["puts"] / served if served else 0.0
    if served:
        row["cpu_us_per_request"] = sum(run["cpu_s"] for run in good) * 1e6 / served
        redis = [run["redis_cpu_s"] for run in good if "redis_cpu_s" in run]
        if len(redis) == len(good):
            row["redis_cpu_us_per_request"] = sum(redis) * 1e6 / served
    commands: dict[str, int] = {}
    for run in good:
        for name, n in run.get("redis_commands", {}).items():
            commands[name] = commands.get(name, 0) + n
    if served:
        row["redis_commands_per_request"] = {
            name: n / served for name, n in sorted(commands.items(), key=lambda kv: -kv[1])
        }
    outcomes: dict[str, int] = {}
    for run in good:
        for name, n in run.get("outcomes", {}).items():
            outcomes[name] = outcomes.get(name, 0) + n
    row["outcomes"] = outcomes
    row["gc_full_runs"] = sum(run.get("gc_full_runs", 0) for run in good)
    row["gc_seconds"] = sum(run.get("gc_seconds", 0.0) for run in good)
    row["gc_longest"] = max((run.get("gc_longest", 0.0) for run in good), default=0.0)
    row["gc_tracked_objects"] = max((run.get("gc_tracked_objects", 0) for run in good), default=0)
    row["errors"] = [run["error"] for run in runs if run.get("error")]
    socket_errors = {run.get("socket_errors") for run in good if run.get("socket_errors")}
    if socket_errors:
        row["socket_errors"] = sorted(socket_errors)
    return row
