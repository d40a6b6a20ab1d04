"""What the numbers were measured on: machine, OS, Python, and versions of everything."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = (
    "fastapi-tiered-cache",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-settings",
    "redis",
    "hiredis",
    "cachetools",
    "msgpack",
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi-cache2",
    "cashews",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _git() -> str:
    ref = os.environ.get("BENCH_PACKAGE_REF")
    if ref:
        return f"package exported from git ref {ref}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "fastapi_tiered_cache"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return commit + (" + uncommitted changes in fastapi_tiered_cache/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> dict[str, str]:
    out = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine(redis_version: str | None, wrk: str | None, loop: str) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _memory_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "event_loop": loop,
        "redis_server": redis_version or "n/a",
        "load_generator": wrk or "n/a",
        "git": _git(),
        "wrk_path": shutil.which("wrk") or "",
    }
