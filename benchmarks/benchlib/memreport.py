# ruff: noqa: RUF001
"""Markdown of the memory measurements (``results/memory.md``, and run.py's memory section)."""

from __future__ import annotations

from typing import Any


def _b(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def l1_lines(section: dict[str, Any] | None) -> list[str]:
    """The L1 table: one row per payload size."""
    if not section or not section.get("rows"):
        return []
    lines = [
        "",
        "## L1 memory per entry, by payload size",
        "",
        "Unique-URL misses stored in L1 (L1 only), measured with tracemalloc (live bytes "
        "after gc: the entry, its L1 slot and index, the memo) against the L1 byte "
        "accounting (`MemoryStore.current_bytes / len`), which is what bounds L1 "
        "(`TIERED_CACHE_L1_MAX_BYTES`): real / accounted near 1.00 means the bound is what "
        "the process really holds.",
        "",
        "| body | entries | tracemalloc B/entry | accounted B/entry | real / accounted "
        "| beyond the body |",
        "|---|---|---|---|---|---|",
    ]
    for row in section["rows"]:
        lines.append(
            f"| {_b(row['body_bytes'])} B | {row['entries']:,} | {_b(row.get('traced_per_entry'))} "
            f"| {_b(row.get('accounted_per_entry'))} | {row.get('ratio', 0):.2f}× "
            f"| {_b(row.get('overhead_per_entry'))} B |"
        )
    return [*lines, ""]


def redis_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The Redis table: one row per (entries, payload size)."""
    if not rows:
        return []
    lines = [
        "",
        "## Redis memory per entry, with its indexes",
        "",
        "`INFO memory` `used_memory` of a private redis-server after the entries were "
        "stored, minus before, per entry (Redis's own per-key overhead included); then "
        "`MEMORY USAGE` (exact, `SAMPLES 0`) of the keys of an entry: the entry (the "
        "msgpack value: status, headers, body, metadata, and its key), its exact-path "
        "index, its own prefix index (`/items/{id}`), and its share of the `/items` prefix "
        "index that every entry joins (one sorted-set member each).",
        "",
        "| entries | body | value | B/entry (used_memory) | entry key | exact index "
        "| own prefix index | /items index share | keys/entry | fill time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        api = row["usage"]["api"] or row["usage"]["real"]
        lines.append(
            f"| {row['entries']:,} | {_b(row['body_bytes'])} B | {_b(row.get('value_bytes'))} B "
            f"| **{_b(row['per_entry'])}** | {_b(api['entry'])} | {_b(api['exact_index'])} "
            f"| {_b(api['own_prefix_index'])} | {row['shared_index_per_entry']:,.1f} "
            f"| {row['keys_per_entry']:.2f} | {row['seconds']:.0f} s |"
        )
    lines += [
        "",
        "Check of the shortcut (entries written through the store API rather than through "
        "HTTP): the first entries of each measurement go through the real miss path "
        "(`GET /items/{id}` into `install(app)`); `MEMORY USAGE` of their keys against the "
        "API-written ones:",
        "",
        "| entries | body | through the app: entry / exact / own prefix | through the store "
        "API: entry / exact / own prefix | keys per entry (app / all) "
        "| used_memory B/entry (first app-written / all) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        real, api = row["usage"]["real"], row["usage"]["api"]
        lines.append(
            f"| {row['entries']:,} | {_b(row['body_bytes'])} B "
            f"| {_b(real['entry'])} / {_b(real['exact_index'])} / {_b(real['own_prefix_index'])} "
            f"| {_b(api['entry'])} / {_b(api['exact_index'])} / {_b(api['own_prefix_index'])} "
            f"| {row['keys_per_real_entry']:.2f} / {row['keys_per_entry']:.2f} "
            f"| {_b(row['real_per_entry'])} / {_b(row['per_entry'])} |"
        )
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Memory per entry (issue 18)",
        "",
        f"Run {meta['started']} in {meta['seconds'] / 60:.1f} min. Command: "
        f"`{meta['command']}`. Load average {meta['load_start']} → {meta['load_end']}.",
    ]
    lines += l1_lines(results.get("l1"))
    lines += redis_lines(results.get("redis", []))
    lines += ["", "## Machine and versions", "", "| | |", "|---|---|"]
    for key, value in meta["machine"].items():
        if key not in ("wrk_path", "load_generator", "event_loop"):
            lines.append(f"| {key} | {value} |")
    for name, version in meta["versions"].items():
        if name not in ("fastapi-cache2", "cashews", "uvicorn", "uvloop", "httptools"):
            lines.append(f"| {name} | {version} |")
    return "\n".join(lines) + "\n"
