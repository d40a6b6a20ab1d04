#!/usr/bin/env bash
# Create the benchmark venv (.bench-venv by default) with the package and the benchmark's
# dependencies, then check for redis-server and wrk. Usage: bash benchmarks/setup.sh
#
#   PYTHON=python3.12 bash benchmarks/setup.sh   # another interpreter
#   BENCH_VENV=/tmp/bv bash benchmarks/setup.sh  # another venv location
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-.bench-venv}
REQ=benchmarks/requirements.txt

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip

# 1. The package and everything that is not a peer.
grep -v '# peer' "$REQ" > "$VENV/bench-core.txt"
"${PIP[@]}" install -q -e . -r "$VENV/bench-core.txt"

# 2. Peers, one at a time, never allowed to change what the package resolved.
"${PIP[@]}" freeze --exclude-editable \
  | grep -iE '^(fastapi|starlette|redis|pydantic|pydantic[-_]core|pydantic[-_]settings)==' \
  > "$VENV/bench-constraints.txt"
status=0
while IFS= read -r line; do
  spec=${line%%#*}
  spec=$(echo "$spec" | xargs)
  [ -n "$spec" ] || continue
  if ! "${PIP[@]}" install -q -c "$VENV/bench-constraints.txt" "$spec"; then
    echo "setup.sh: could not install $spec alongside the package's fastapi/starlette/redis;" \
         "run.py will report it as unavailable" >&2
    status=1
  fi
done < <(grep '# peer' "$REQ")

# 3. System tools: redis-server (required) and wrk (optional; else an asyncio load generator).
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y "$@" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$@" >/dev/null; }
  else
    return 1
  fi
}
command -v redis-server >/dev/null || apt_install redis-server \
  || echo "setup.sh: redis-server not found; install it (apt-get install redis-server)" >&2
command -v wrk >/dev/null || apt_install wrk \
  || echo "setup.sh: wrk not found; HTTP mode will use benchmarks/benchlib/loadgen.py" >&2

echo "ready: $VENV/bin/python benchmarks/run.py --quick   (peers: status $status)"
