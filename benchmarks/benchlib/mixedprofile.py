# ruff: noqa: RUF001
"""Where a worker's CPU goes under the mixed workload: py-spy attached to a live server.

After a group's rounds, one more load is replayed against a variant while ``py-spy
record --pid`` samples its worker (idle time is not sampled). Samples are attributed to the
package of their innermost Python frame (C extensions such as hiredis, msgpack and
httptools count for the Python function that called them), and the functions of
fastapi_tiered_cache are listed by inclusive share. Skipped when py-spy is missing or
cannot attach.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .mixedserver import cpu_seconds

RATE = 250  # samples per second

COMPONENTS = (  # py-spy shows paths relative to sys.path: "redis/asyncio/client.py"
    ("fastapi_tiered_cache/", "fastapi-tiered-cache"),
    ("redis/", "redis-py"),
    ("fastapi_cache/", "fastapi-cache2"),
    ("cashews/", "cashews"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("pydantic", "pydantic"),
    ("uvicorn/", "uvicorn (with httptools)"),
    ("asyncio/", "asyncio and uvloop (event loop, sockets)"),
    ("cachetools/", "cachetools"),
    ("benchlib/", "the app's endpoints"),
)


def _component(frame: str) -> str:
    path = "/" + frame.partition(" (")[2]
    for marker, name in COMPONENTS:
        if "/" + marker in path:
            return name
    module = frame.partition(" (")[2].rpartition(":")[0].split("/")[0]
    return f"other: {module or frame}"


def _short(frame: str) -> str:
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "fastapi_tiered_cache/", "benchlib/"):
        if marker in path:
            path = (marker if marker != "site-packages/" else "") + path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def profile(server: Any, wrk: Any, stream: Path, offset: int, seconds: int) -> dict[str, Any]:
    """One more load on ``server`` while py-spy samples its (first) worker."""
    pids = server.worker_pids()
    if not pids:
        return {"skipped": "no worker pid"}
    started = record(pids[0], seconds)
    if isinstance(started, str):
        return {"skipped": started}
    cpu_before = cpu_seconds(pids[0])
    result = wrk.run(server.port, stream, offset, seconds)
    cpu_after = cpu_seconds(pids[0])
    out = collect(*started, timeout=seconds + 30)
    out["rps_while_profiled"] = result.get("rps")
    requests = result.get("requests")
    if requests and cpu_before is not None and cpu_after is not None:
        # py-spy's sample counts overstate CPU on a busy machine (a runnable thread waiting
        # for a core is sampled too): the shares are scaled by the CPU time really used.
        out["cpu_us_per_request"] = (cpu_after - cpu_before) * 1e6 / requests
    return out


def record(pid: int, seconds: int) -> tuple[subprocess.Popen[str], Path] | str:
    """Start py-spy on ``pid`` for ``seconds``; the process and its output, or why not."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy not installed (pip install py-spy)"
    out = Path(tempfile.mkdtemp(prefix="mixed-pyspy-")) / "stacks.txt"
    cmd = [
        spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE),
        "--format", "raw", "--nonblocking", "-o", str(out),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out


def collect(proc: subprocess.Popen[str], out: Path, timeout: float) -> dict[str, Any]:
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
    try:
        text = out.read_text()
    except OSError:
        return {"skipped": f"py-spy failed: {log.strip()[-300:]}"}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return summarize(text)


def summarize(text: str) -> dict[str, Any]:
    """Own samples by component and leaf function; inclusive share of our functions."""
    own: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "bench-control" in stack or "serve_forever" in stack:
            continue  # the control thread is not the workload
        frames = stack.split(";")
        n = int(count)
        total += n
        own[_component(frames[-1])] += n
        leaves[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames if "fastapi_tiered_cache/" in f}:
            ours[frame] += n
    if not total:
        return {"skipped": "no samples"}
    return {
        "samples": total,
        "components": [(name, n / total) for name, n in own.most_common(14)],
        "leaves": [(name, n / total) for name, n in leaves.most_common(20)],
        "ours_inclusive": [(name, n / total) for name, n in ours.most_common(25)],
    }


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _per_request(profile: dict[str, Any], share: float) -> str:
    """A component's CPU µs per request: its share of the samples x the worker's CPU time
    per request during the profiled load (from /proc, not from the sample counts)."""
    cpu = profile.get("cpu_us_per_request")
    return "–" if cpu is None else f"{share * cpu:,.0f}"


def markdown(profile: dict[str, Any] | None, where: str) -> list[str]:
    if not profile:
        return []
    if "skipped" in profile:
        return [f"Profile ({where}): skipped, {profile['skipped']}.", ""]
    return [
        f"### Where the worker's CPU went ({where})",
        "",
        f"py-spy, {profile['samples']:,} samples of the worker during one more load "
        f"({_num(profile.get('rps_while_profiled'))} req/s and "
        f"{_num(profile.get('cpu_us_per_request'))} CPU µs per request while sampled; "
        "innermost Python "
        "frame, C extensions counted for their caller; idle time not sampled).",
        "",
        "| component (own time) | share | ≈ µs per request |",
        "|---|---|---|",
        *[
            f"| {name} | {share:.1%} | {_per_request(profile, share)} |"
            for name, share in profile["components"]
        ],
        "",
        *(
            [
                "Inclusive shares count only what runs under a function's own frames: the "
                "work of the tasks the cache starts (one per Redis command, the repeated purge "
                "after a write) is not under the request's frames, so the component "
                "table above is the complete account.",
                "",
                "| fastapi-tiered-cache function (inclusive) | share |",
                "|---|---|",
                *[f"| `{name}` | {share:.1%} |" for name, share in profile["ours_inclusive"]],
                "",
            ]
            if profile["ours_inclusive"]
            else []
        ),
        "| leaf function (own) | share |",
        "|---|---|",
        *[f"| `{name}` | {share:.1%} |" for name, share in profile["leaves"]],
        "",
    ]
