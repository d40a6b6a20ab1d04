# ruff: noqa: RUF001
"""Targets of issue 9 and the Markdown report."""

from __future__ import annotations

from typing import Any

from . import memreport


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def _med(rows: dict[str, dict[str, Any]], name: str, key: str = "median_us") -> float | None:
    row = rows.get(name)
    if row is None or row.get(key) is None:
        return None
    return float(row[key])


def _ttlb(rows: dict[str, dict[str, Any]], name: str) -> float | None:
    """Median time until the client had the last byte."""
    row = rows.get(name)
    ttlb = row.get("ttlb") if row else None
    return float(ttlb["median_us"]) if ttlb and ttlb.get("median_us") is not None else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured ratio and PASS / FAIL (or N/A when not measured)."""
    main = _by_name(results.get("main", {}).get("rows", []))
    http = _by_name(results.get("http", {}).get("rows", []))
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        num: float | None,
        den: float | None,
        limit: float,
        how: str,
        higher_is_better: bool = False,
        detail: str = "",
    ) -> None:
        if num is None or den is None or den == 0:
            out.append(
                {
                    "target": name,
                    "ratio": None,
                    "limit": limit,
                    "result": "N/A",
                    "how": how,
                    "detail": detail or "not measured in this run",
                }
            )
            return
        ratio = num / den
        ok = ratio >= limit if higher_is_better else ratio <= limit
        out.append(
            {
                "target": name,
                "ratio": ratio,
                "limit": limit,
                "result": "PASS" if ok else "FAIL",
                "how": how,
                "detail": detail,
            }
        )

    for variant, what in (("ours-l1", "L1 hit"), ("ours-l1-ident", "L1 hit, auth+tenant+Vary")):
        add(
            f"{what}, in-process 1 KB: median <= 4x raw-ASGI floor",
            _med(main, f"{variant}/1k"),
            _med(main, "raw/1k"),
            4.0,
            "<=",
            detail=_us(main, f"{variant}/1k", "raw/1k"),
        )
        add(
            f"{what}, in-process: 100 KB no slower than 1 KB (5% noise allowance)",
            _med(main, f"{variant}/100k"),
            _med(main, f"{variant}/1k"),
            1.05,
            "<=",
            detail=_us(main, f"{variant}/100k", f"{variant}/1k"),
        )
    for tag in ("1k", "100k"):
        add(
            f"L2 hit {tag.upper().replace('K', ' KB')}: median <= 1.5x raw Redis GET",
            _med(main, f"ours-l2/{tag}"),
            _med(main, f"redis-get/{tag}"),
            1.5,
            "<=",
            detail=_us(main, f"ours-l2/{tag}", f"redis-get/{tag}"),
        )
    for tag in ("1k", "100k"):
        for origin in ("0ms", "2ms"):
            # Client-visible: until the client has the last byte (the store comes after it).
            miss, bare = f"ours-miss/{tag}/{origin}", f"bare/{tag}/{origin}"
            seen = _ttlb(main, miss)
            stored = _med(main, miss)
            add(
                f"miss {tag.upper().replace('K', ' KB')}, origin {origin}: client-visible median "
                "<= bare + 10%",
                seen,
                _med(main, bare),
                1.10,
                "<=",
                detail=(
                    f"{seen:,.1f} µs to last byte vs {_med(main, bare) or 0:,.1f} µs; "
                    f"{stored or 0:,.1f} µs with the store"
                    if seen is not None
                    else ""
                ),
            )
    for variant, what in (("ours-l1", "L1 hit"), ("ours-l1-ident", "L1 hit, auth+tenant+Vary")):
        for tag in ("1k", "100k"):
            add(
                f"{what}, over HTTP {tag.upper().replace('K', ' KB')}: req/s >= 80% of raw-ASGI",
                _med(http, f"{variant}/{tag}", "rps"),
                _med(http, f"raw/{tag}", "rps"),
                0.80,
                ">=",
                higher_is_better=True,
                detail=_rps(http, f"{variant}/{tag}", f"raw/{tag}"),
            )
    return out


def _us(rows: dict[str, dict[str, Any]], a: str, b: str) -> str:
    x, y = _med(rows, a), _med(rows, b)
    if x is None or y is None:
        return ""
    return f"{x:,.1f} µs vs {y:,.1f} µs"


def _rps(rows: dict[str, dict[str, Any]], a: str, b: str) -> str:
    x, y = _med(rows, a, "rps"), _med(rows, b, "rps")
    if x is None or y is None:
        return ""
    return f"{x:,.0f} vs {y:,.0f} req/s"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _size(size: int | None) -> str:
    if size is None:
        return "–"
    return f"{size // 1024} KB"


def _origin(origin: float | None) -> str:
    return "–" if origin is None else f"{origin:g} ms"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# fastapi-tiered-cache benchmarks",
        "",
        f"Mode **{meta['mode']}**, run {meta['started']} in {meta['seconds']:.0f} s. "
        f"Command: `{meta['command']}`.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    for key, value in meta["machine"].items():
        if key != "wrk_path":
            lines.append(f"| {key} | {value} |")
    lines.append(f"| load average (start → end) | {meta['load_start']} → {meta['load_end']} |")
    for note in meta.get("notes", []):
        lines.append(f"| note | {note} |")
    for name, version in meta["versions"].items():
        lines.append(f"| {name} | {version} |")
    for peer, status in meta["peers"].items():
        if status != "ok":
            lines.append(f"| {peer} status | {status} |")
    lines += [
        "",
        "## Targets (ratios measured in the same interleaved run)",
        "",
        "| target | measured | ratio | limit | result |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        ratio = "–" if t["ratio"] is None else f"{t['ratio']:.2f}×"
        lines.append(
            f"| {t['target']} | {t['detail']} | {ratio} | {t['how']} {t['limit']:g}× "
            f"| **{t['result']}** |"
        )
    lines += _main_section(results.get("main"))
    lines += _http_section(results.get("http"))
    lines += _rtt_section(results.get("rtt"))
    lines += _l1size_section(results.get("l1size"))
    lines += _memory_section(results.get("memory"))
    lines += _tags_section(results.get("tags"))
    lines += ["", "## Method", ""] + [f"- {note}" for note in METHOD]
    errors = results.get("errors", {})
    if errors:
        lines += ["", "## Sections that failed", ""]
        lines += [f"- **{name}**: {error}" for name, error in errors.items()]
    return "\n".join(lines) + "\n"


def _problems(row: dict[str, Any]) -> str:
    notes = [f"⚠ {p}" for p in row.get("problems", [])]
    outcome = _outcome_note(row)
    if outcome:
        notes.append(outcome)
    return "; ".join(notes)


def _outcome_note(row: dict[str, Any]) -> str:
    """Our cache's own counters during the timed requests, when not all as expected."""
    counts = {
        k: v
        for k, v in (row.get("outcomes") or {}).items()
        if k.split(":")[0] in ("hit", "miss", "stale", "coalesced", "bypass")
    }
    total = sum(counts.values())
    name = row.get("name", "")
    if not total or not name.startswith("ours-"):
        return ""
    expected = (
        "miss"
        if name.startswith("ours-miss")
        else "hit:l2"
        if name.startswith("ours-l2")
        else "hit:l1"
    )
    good = sum(v for k, v in counts.items() if k == expected or k.startswith(expected + ":"))
    if good == total:
        return ""
    parts = ", ".join(
        f"{k} {100 * v / total:.1f}%" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return f"served: {parts}"


def _main_section(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    rows = section["rows"]
    by = _by_name(rows)
    out = [
        "",
        "## In-process (minimal ASGI driver, µs per request)",
        "",
        "Hit variants never call the origin, so the origin cost does not apply to them (–). "
        "× floor: median over the raw-ASGI median of the same payload; × bare: over bare "
        "FastAPI with the same payload and origin (0 ms for hits). CPU µs: this thread's CPU "
        "time per request (mean; excludes waiting for Redis and time other processes took "
        "the core, so it stays meaningful on a busy machine). `to last byte`: when the "
        "client had the whole body (our miss stores after that).",
        "",
    ]
    for tag, size in (("1k", 1024), ("100k", 100 * 1024)):
        floor = _med(by, f"raw/{tag}")
        out += [
            f"### {_size(size)} JSON",
            "",
            "| variant | origin | n | median | p99 | CPU µs | × floor | × bare | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            if row.get("size") != size:
                continue
            origin = row.get("origin_ms")
            bare = _med(by, f"bare/{tag}/{origin or 0:g}ms")
            med = row.get("median_us")
            notes = []
            if row.get("ttlb") and row["name"].startswith("ours-miss"):
                notes.append(f"to last byte: {row['ttlb']['median_us']:,.1f} µs median")
            notes.append(_problems(row))
            xf = f"{med / floor:,.1f}×" if med and floor else "–"
            xb = f"{med / bare:,.2f}×" if med and bare else "–"
            out.append(
                f"| {row['label']} | {_origin(origin)} | {row.get('n', 0)} | "
                f"{_fmt(med)} | {_fmt(row.get('p99_us'))} | {_fmt(row.get('cpu_us'))} | "
                f"{xf} | {xb} | "
                f"{' '.join(n for n in notes if n)} |"
            )
        out.append("")
    out += _failed(section.get("failed", []))
    return out


def _failed(failed: list[dict[str, Any]]) -> list[str]:
    if not failed:
        return []
    out = ["Not measured:", ""]
    seen = set()
    for item in failed:
        key = (item["label"], item["error"])
        if key not in seen:
            seen.add(key)
            out.append(f"- {item['label']}: {item['error']}")
    return [*out, ""]


def _http_section(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    rows = section["rows"]
    by = _by_name(rows)
    out = [
        "",
        "## Over HTTP",
        "",
        f"{section['server']} on 127.0.0.1; load: {section['tool']}, 1 thread, "
        f"{section['connections']} keep-alive connections, {section['seconds']:g} s per run; "
        "medians over rounds. Latency is wrk's (closed loop, includes queueing).",
        "",
        "| variant | payload | origin | req/s | p50 µs | p99 µs | % of raw req/s | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tag = "1k" if row.get("size") == 1024 else "100k"
        raw = _med(by, f"raw/{tag}", "rps")
        rps = row.get("rps")
        pct = f"{100 * rps / raw:.0f}%" if rps and raw else "–"
        out.append(
            f"| {row['label']} | {_size(row.get('size'))} | {_origin(row.get('origin_ms'))} "
            f"| {_fmt(rps, 0)} | {_fmt(row.get('p50_us'), 0)} | {_fmt(row.get('p99_us'), 0)} "
            f"| {pct} | {_problems(row)} |"
        )
    out.append("")
    return out + _failed(section.get("failed", []))


def _rtt_section(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    rows = section["rows"]
    rtts = sorted({row["rtt_ms"] for row in rows})
    out = [
        "",
        "## Added Redis round trip (1 KB, through the delaying TCP proxy)",
        "",
        "Median (p99) µs per request. The proxy runs in its own process; at 0 ms it only "
        "forwards. Its delays are asyncio timers (millisecond granularity), so the raw GET "
        "row shows the round trip actually added.",
        "",
        "| variant | " + " | ".join(f"+{r:g} ms" for r in rtts) + " |",
        "|---|" + "---|" * len(rtts),
    ]
    labels: dict[str, dict[float, dict[str, Any]]] = {}
    for row in rows:
        labels.setdefault(row["label"], {})[row["rtt_ms"]] = row
    for label, cells in labels.items():
        parts = []
        for r in rtts:
            row = cells.get(r)
            if row is None or row.get("median_us") is None:
                parts.append("–")
            else:
                flag = " ⚠" if row.get("problems") else ""
                parts.append(f"{row['median_us']:,.0f} ({row['p99_us']:,.0f}){flag}")
        out.append(f"| {label} | " + " | ".join(parts) + " |")
    out.append("")
    problems = [
        f"- {row['name']}: {'; '.join(row['problems'])}" for row in rows if row.get("problems")
    ]
    return out + problems + _failed(section.get("failed", []))


def _l1size_section(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    out = [
        "",
        "## L1 hit latency against entries stored (1 KB)",
        "",
        "L1 filled through `cache.store.set_local` with copies of one real entry (own "
        "objects, shared body bytes) under the keys `TieredCache.key_for` gives "
        "`/items?id=<i>`; L1 only (no Redis). Requests go to 1,000 keys picked at random "
        "among all of them (the same count whatever the size), each requested once before "
        "timing. `repeated request`: byte-identical requests (a request-to-key memo, if the "
        "package has one, applies); `unique X-Request-ID`: every request differs, so the "
        "full hit path (parse, identify, hash, look up) runs.",
        "",
        "| variant | entries | n | median µs | p99 µs | notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(section["rows"], key=lambda r: (r["label"], r["entries"])):
        out.append(
            f"| {row['label']} | {row['entries']:,} | {row.get('n', 0)} | "
            f"{_fmt(row.get('median_us'))} | {_fmt(row.get('p99_us'))} | {_problems(row)} |"
        )
    out += ["", *[f"- {note}" for note in section.get("notes", [])]]
    return [*out, ""]


def _memory_section(section: dict[str, Any] | None) -> list[str]:
    return memreport.l1_lines(section)


def _tags_section(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    out = ["", "## Tag purge cost", ""]
    if "skipped" in section:
        return [*out, f"Skipped: {section['skipped']}.", ""]
    out += [
        f"`await cache.{section.get('signature', 'invalidate_tags')}` with one tag, L1 + "
        "L2 (Redis db 2), after N entries were stored through the middleware with "
        "`Surrogate-Key: <tag>` (default settings).",
        "",
        "| entries tagged | in L1 before | reps | median ms | µs per entry | returned | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in section.get("rows", []):
        returned = row["returned"][0] if row.get("returned") else "–"
        in_l1 = row["in_l1"][0] if row.get("in_l1") else "–"
        out.append(
            f"| {row['entries']:,} | {in_l1} | {row.get('reps', 0)} "
            f"| {_fmt(row.get('median_ms'), 2)} | {_fmt(row.get('per_entry_us'), 1)} "
            f"| {returned} | {'; '.join(row.get('errors', []))} |"
        )
    return [*out, ""]


METHOD = [
    "In-process: a minimal ASGI driver builds the scope (5 request headers, plus "
    "Authorization, X-Tenant-ID and Accept-Language for the identity rows), hands over an "
    "empty body and records what is sent; each request is timed with perf_counter_ns around "
    "`await app(scope, receive, send)`, so work after the last body byte is included.",
    "Rounds: every round runs one batch of every variant in a shuffled order (warm-up batch "
    "discarded), so machine drift is shared; a batch stops at its request count or time budget.",
    "Each app's lifespan runs first; GC stays on (objects alive after set-up are frozen).",
    "The endpoint returns a dict (FastAPI serialises it); the raw-ASGI floor sends the same "
    "bytes prebuilt. Hits use long TTLs (3600 s, `l1_max_ttl` too) so they stay hits.",
    "Our L1 rows run with L2 attached (the deployed shape); the L2 row sets `l1_max_entries=0`. "
    "The miss uses a unique query string per request (bare FastAPI too) and stores into L1 "
    "and Redis (db 1, flushed between batches).",
    "Every batch is checked: hit rows must not call the origin and ours must say `hit` with "
    "the right tier in Cache-Status; a miss row must call it every time. Violations are "
    "shown as ⚠.",
    "Redis: a private redis-server on a free loopback port, persistence off, stopped by pid.",
]
