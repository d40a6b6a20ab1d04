# ruff: noqa: RUF001
"""Markdown report of the mixed workload (``benchmarks/results/mixed.md``)."""

from __future__ import annotations

from typing import Any

from . import mixedprofile

METHOD = [
    "Each point (worker count × Zipf exponent) is its own group: every variant gets a fresh "
    "uvicorn (`--loop uvloop --http httptools`, access log off) and an empty Redis database "
    "of one private redis-server. Servers are warmed up by replaying the start of the "
    "stream, then measured in rounds; each round replays the same slice of the stream "
    "(a random offset) against every variant, in a shuffled order.",
    "req/s and latencies are wrk's (one thread, closed loop, keep-alive connections; "
    "wrk's percentiles are of the requests it sent, so they hide queueing it did not "
    "issue); the median over rounds is shown. wrk runs on the same cores as the servers.",
    "Hit ratio = share of GETs that never reached the origin, counted by the app of every "
    "worker (the same definition for every variant). Ours also reports its own outcome "
    "counters (L1 hits, L2 hits, misses).",
    "CPU µs/request: user + system CPU of the uvicorn processes (and, separately, of "
    "redis-server) during the loads, divided by the requests they served. Unlike req/s "
    "and latency, it hardly depends on what else runs on the machine.",
    "Entries live 60 s (our default TTL; the peers are given the same), so the hit ratio "
    "also depends on how many requests a variant serves per minute: a faster server sees "
    "more repeats. Entries survive from one round to the next.",
    "The check before the loads (GET, GET, PUT, GET, GET of an id outside the stream) must "
    "cost the origin [1, 0, 1, 0] calls for a cache (a miss, a hit, the purge, a hit): a "
    "variant that does not cache or does not purge is flagged in its notes.",
]


def _ms(us: float | None) -> str:
    return "–" if us is None else f"{us / 1000:.2f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _bare(group: dict[str, Any]) -> dict[str, Any] | None:
    return next((row for row in group["rows"] if row["variant"] == "bare"), None)


def _ratio(row: dict[str, Any], bare: dict[str, Any] | None, key: str) -> float | None:
    if bare is None or not bare.get(key) or row.get(key) is None:
        return None
    return float(row[key]) / float(bare[key])


def _tiers(row: dict[str, Any]) -> str:
    outcomes = row.get("outcomes") or {}
    if not outcomes:
        return ""
    l1 = sum(n for name, n in outcomes.items() if name.startswith("hit:") and "l1" in name)
    l2 = sum(n for name, n in outcomes.items() if name.startswith("hit:") and "l2" in name)
    misses = sum(n for name, n in outcomes.items() if name.startswith("miss:"))
    other = {
        name: n
        for name, n in outcomes.items()
        if not name.startswith(("hit:", "miss:", "store:", "bypass:method"))
    }
    text = f"L1 hits {l1:,}, L2 hits {l2:,}, misses {misses:,}"
    if other:
        text += "; " + ", ".join(f"{name} {n:,}" for name, n in sorted(other.items()))
    return text


def _gc(row: dict[str, Any]) -> str:
    if "gc_full_runs" not in row:
        return ""
    return (
        f"GC: {row['gc_seconds'] * 1000:,.0f} ms in all, {row['gc_full_runs']} full, longest "
        f"{row['gc_longest'] * 1000:,.1f} ms, {row['gc_tracked_objects']:,} objects"
    )


def verdicts(results: dict[str, Any]) -> list[str]:
    """Issue 18's goal, per point: ours ahead of bare FastAPI in req/s and p99."""
    out = []
    for group in results["groups"]:
        bare = _bare(group)
        ours = next((row for row in group["rows"] if row["variant"] == "ours"), None)
        where = f"{group['workers']} worker(s), s={group['exponent']:g}"
        if ours is None or bare is None:
            out.append(f"N/A   {where}: ours or bare did not run")
            continue
        rps = _ratio(ours, bare, "rps")
        p99 = _ratio(ours, bare, "p99_us")
        ahead = rps is not None and rps > 1.0 and p99 is not None and p99 < 1.0
        out.append(
            f"{'PASS' if ahead else 'FAIL':5s} {where}: hit ratio {ours['hit_ratio']:.1%}, "
            f"req/s {_num(rps, 2)}× bare, p99 {_num(p99, 2)}× bare"
        )
    return out


def markdown(results: dict[str, Any]) -> str:
    meta, cfg = results["meta"], results["meta"]["config"]
    origin = (
        f"`await asyncio.sleep({cfg['origin_ms'] / 1000:g})`"
        if cfg["origin"] == "sleep"
        else "one `SELECT` by primary key (asyncpg pool, PostgreSQL)"
    )
    lines = [
        "# Mixed workload over HTTP (issue 18)",
        "",
        f"Mode **{meta['mode']}**, run {meta['started']} in {meta['seconds'] / 60:.0f} min. "
        f"Command: `{meta['command']}`.",
        "",
        f"`GET /items/{{id}}` (~1 KB JSON, origin {origin}) and `PUT /items/{{id}}` "
        f"({cfg['writes']:.0%} of the requests; each purges that item), ids drawn from a "
        f"Zipf distribution over {cfg['keys']:,} items. wrk: "
        f"{cfg['connections']} connections, {cfg['seconds']} s per load, "
        f"{cfg['rounds']} interleaved round(s) after a {cfg['warmup']} s warm-up per server. "
        f"Each load: `{meta['wrk_command']}`.",
        "",
        "## Goal: ahead of bare FastAPI at every point (req/s higher and p99 lower)",
        "",
        *[f"- {line}" for line in verdicts(results)],
        "",
    ]
    lines += _machine(meta)
    lines += _streams(results.get("streams", {}))
    for group in results["groups"]:
        lines += _group(group)
    lines += ["## Method", "", *[f"- {note}" for note in METHOD], ""]
    return "\n".join(lines) + "\n"


def _machine(meta: dict[str, Any]) -> list[str]:
    lines = ["## Machine and versions", "", "| | |", "|---|---|"]
    for key, value in meta["machine"].items():
        if key != "wrk_path":
            lines.append(f"| {key} | {value} |")
    lines.append(f"| load average (start → end) | {meta['load_start']} → {meta['load_end']} |")
    for name, version in meta["versions"].items():
        lines.append(f"| {name} | {version} |")
    for peer, status in meta["peers"].items():
        if status != "ok":
            lines.append(f"| {peer} status | {status} |")
    return [*lines, ""]


def _streams(streams: dict[str, Any]) -> list[str]:
    lines = [
        "## Request streams",
        "",
        "| Zipf exponent | requests | writes | top 100 ids | top 10,000 ids "
        "| ids seen | unbounded cache, first 100k requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for about in streams.values():
        bound = about["unbounded_cache_100k"]["hit_ratio"]
        lines.append(
            f"| {about['exponent']:g} | {about['length']:,} | {about['write_share']:.1%} "
            f"| {about['top_100_share']:.1%} | {about['top_10000_share']:.1%} "
            f"| {about['distinct_ids']:,} | {bound:.1%} hit ratio |"
        )
    lines += [
        "",
        "The last column is what a cache that never expires nor evicts would hit when the "
        "first 100,000 requests of the stream are replayed once from empty: a reference "
        "for the measured ratios, which depend on how many requests each variant served "
        "while its entries were alive.",
        "",
    ]
    return lines


def _group(group: dict[str, Any]) -> list[str]:
    bare = _bare(group)
    lines = [
        f"## {group['workers']} worker(s), Zipf s = {group['exponent']:g}",
        "",
        f"Load average {group['load_start']} → {group['load_end']}.",
        "",
        "| variant | hit ratio | req/s | × bare | p50 ms | p99 ms | p99 × bare "
        "| app CPU µs/req | redis CPU µs/req | requests (PUT) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in group["rows"]:
        notes = [_tiers(row), _gc(row), *row.get("problems", []), *row.get("errors", [])]
        if row.get("non2xx"):
            notes.append(f"{row['non2xx']} non-2xx")
        notes += [f"socket errors: {e}" for e in row.get("socket_errors", [])]
        rps_x, p99_x = _ratio(row, bare, "rps"), _ratio(row, bare, "p99_us")
        lines.append(
            f"| {row['label']} | {row['hit_ratio']:.1%} | {_num(row.get('rps'))} "
            f"| {_num(rps_x, 2)}× | {_ms(row.get('p50_us'))} | {_ms(row.get('p99_us'))} "
            f"| {_num(p99_x, 2)}× | {_num(row.get('cpu_us_per_request'))} "
            f"| {_num(row.get('redis_cpu_us_per_request'))} "
            f"| {row['gets'] + row['puts']:,} ({row['puts']:,}) "
            f"| {'; '.join(n for n in notes if n)} |"
        )
    for fail in group.get("failed", []):
        lines.append(f"| {fail['variant']} | – | – | – | – | – | – | – | – | – | {fail['error']} |")
    rounds = [
        f"{row['variant']}: "
        + ", ".join(f"{rps:,.0f}" for rps in row.get("rps_all", []))
        + " req/s; hit "
        + ", ".join(f"{h:.0%}" for h in row.get("hit_ratio_all", []))
        for row in group["rows"]
    ]
    lines += ["", "Rounds: " + " · ".join(rounds) + ".", ""]
    commands = [
        f"{row['variant']}: "
        + ", ".join(
            f"{name} {n:.2f}" for name, n in list(row["redis_commands_per_request"].items())[:14]
        )
        for row in group["rows"]
        if row.get("redis_commands_per_request")
    ]
    if commands:
        lines += ["Redis commands per request: " + " · ".join(commands) + ".", ""]
    for variant, profile in (group.get("profiles") or {}).items():
        where = f"{variant}, {group['workers']} worker, s = {group['exponent']:g}"
        lines += mixedprofile.markdown(profile, where)
    return lines
