"""How commands print: aligned plain-text tables (readable, and easy to cut or grep),
setting values as one would write them, and the counters of a stats answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..metrics import format_ratio

__all__ = ["MASK", "print_counts", "print_table", "shown"]

MASK = "**********"


def shown(value: Any) -> str:
    """A setting's value as printed: ``unset``, JSON for lists and dicts, else ``str``."""
    if value is None:
        return "unset"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Columns padded to their widest cell, two spaces apart, no trailing spaces."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print(indent + "  ".join(cells).rstrip())


def print_counts(data: dict[str, Any], indent: str) -> None:
    """Hit ratios, L1 size, counts by event and the routes table of a stats answer."""
    by_tier = data.get("hit_ratio_by_tier") or {}
    tiers = "".join(f", {tier} {format_ratio(value)}" for tier, value in sorted(by_tier.items()))
    print(f"{indent}hit ratio: {format_ratio(data.get('hit_ratio'))}{tiers}")
    l1 = data.get("l1") or {}
    if l1:
        print(f"{indent}L1: {l1.get('entries')} entries, {l1.get('bytes')} B")
    if indent and "l2_faults" in data:
        print(f"{indent}L2 faults: {data.get('l2_faults', 0)}")
    for event, details in sorted((data.get("counts") or {}).items()):
        print(f"{indent}{event}: " + ", ".join(f"{k} {v}" for k, v in sorted(details.items())))
    routes = data.get("routes") or {}
    if routes:
        rows = [
            (route, format_ratio(c.get("hit_ratio")), str(c.get("hit", 0)), str(c.get("miss", 0)))
            for route, c in sorted(routes.items())
        ]
        print_table(("ROUTE", "HIT RATIO", "HITS", "MISSES"), rows, indent)
