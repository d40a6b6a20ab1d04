#!/usr/bin/env bash
# Every benchmark of the published figures, one after the other, on a quiet machine:
#
#   bash benchmarks/run_all.sh            # about an hour on 2 cores
#
# 1. run.py (full): hits, misses, L2, HTTP, Redis latency, L1 size, L1 memory, tag purges
#    -> results/latest.md
# 2. mixed.py: the mixed workload over HTTP (sleep origin)  -> results/mixed.md
# 3. mixed.py --origin postgres, when PostgreSQL answers on 127.0.0.1:5432 (database
#    "test", or BENCH_PG_DSN)                                -> results/mixed-postgres.md
# 4. memory.py --full: L1 by payload size, Redis per entry at 1e5 and 1e6
#                                                           -> results/memory.md
#
# Runs the working tree's package; BENCH_REF=<git ref> benchmarks a commit instead.
# Uses .bench-venv (bash benchmarks/setup.sh) unless PYTHON is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.bench-venv/bin/python}
DSN=${BENCH_PG_DSN:-postgresql://127.0.0.1:5432/test}
REF=()
if [ -n "${BENCH_REF:-}" ]; then REF=(--ref "$BENCH_REF"); fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (figures are meant for an idle machine)"

"$PY" benchmarks/run.py "${REF[@]}"
"$PY" benchmarks/mixed.py "${REF[@]}"
if "$PY" -c "import asyncio, asyncpg, sys; asyncio.run(asyncpg.connect(sys.argv[1], timeout=5)).terminate()" "$DSN" 2>/dev/null; then
  "$PY" benchmarks/mixed.py --origin postgres --dsn "$DSN" --stem mixed-postgres "${REF[@]}"
else
  echo "run_all.sh: PostgreSQL not reachable at $DSN (or asyncpg missing): skipped mixed-postgres" >&2
fi
"$PY" benchmarks/memory.py --full "${REF[@]}"
echo "done: benchmarks/results/{latest,mixed,mixed-postgres,memory}.md"
