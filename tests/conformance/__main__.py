"""``python -m tests.conformance``: the outcome of every case, and the totals by kind."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from .runner import run_all
from .test_conformance import CASES, STRICT, kind


def main() -> int:
    results = asyncio.run(run_all(CASES, STRICT))
    for case in CASES:
        outcome = results[case["id"]]
        if outcome.status != "pass":
            print(f"{kind(case):9} {outcome.status:5} {case['id']}: {outcome.message}")
    counts = Counter((kind(case), results[case["id"]].status) for case in CASES)
    print(f"{len(CASES)} cases")
    for (group, status), number in sorted(counts.items()):
        print(f"  {group:9} {status:5} {number}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
