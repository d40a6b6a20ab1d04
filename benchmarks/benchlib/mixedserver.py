"""One variant of the mixed workload in its own uvicorn (1 or N workers), and its counters.

Each worker announces a control port in a private directory (see ``mixedapp``); the
harness sums what every worker reports, and reads each worker's CPU time from
``/proc/<pid>/stat`` (and redis-server's), so CPU per request is known even when other
processes share the machine.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .httpmode import _port

BENCH_DIR = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (None when it is gone or not on Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


class MixedServer:
    """``uvicorn benchlib.mixedapp:create --factory --workers N`` for one variant."""

    def __init__(
        self, variant: str, workers: int, spec: dict[str, Any], env: dict[str, str], loop: str
    ) -> None:
        self.variant = variant
        self.workers = workers
        self.spec = {**spec, "variant": variant}
        self.env = env
        self.loop = loop
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.control_dir = Path(tempfile.mkdtemp(prefix=f"bench-mixed-{variant}-"))
        self.log_path = self.control_dir / "uvicorn.log"

    def start(self) -> None:
        self.port = _port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_CACHE_")}
        env.update(self.env)
        env["BENCH_MIXED"] = json.dumps(self.spec)
        env["BENCH_CONTROL_DIR"] = str(self.control_dir)
        http_impl = "httptools" if _importable("httptools") else "h11"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "benchlib.mixedapp:create", "--factory",
                    "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers), "--loop", self.loop, "--http", http_impl,
                    "--log-level", "warning", "--no-access-log",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 90.0) -> str | None:
        """None once every worker has announced itself and the port accepts; else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return f"uvicorn exited: {self.log_tail()}"
            if len(self._ports()) >= self.workers:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                    self.counters()  # every control port answers
                    time.sleep(0.5)  # lifespans (our bus) complete after the factory
                    return None
                except (OSError, ValueError):
                    pass
            time.sleep(0.1)
        return f"not ready after {timeout:.0f}s: {self.log_tail()}"

    def worker_pids(self) -> list[int]:
        return sorted(self._ports())

    def _ports(self) -> dict[int, int]:
        ports = {}
        for path in self.control_dir.glob("*.port"):
            try:
                ports[int(path.stem)] = int(path.read_text())
            except (OSError, ValueError):
                continue
        return ports

    def counters(self) -> dict[str, Any]:
        """The sum over every worker: requests by method, origin calls, outcomes, CPU."""
        total: dict[str, Any] = {
            "requests": {}, "origin_get": 0, "origin_put": 0, "outcomes": {}, "cpu_s": 0.0,
            "gc_runs": [0, 0, 0], "gc_seconds": [0.0, 0.0, 0.0], "gc_longest": 0.0,
            "gc_tracked_objects": 0,
        }  # fmt: skip
        pids = self._ports()
        for port in pids.values():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/")
                snap = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            for method, n in snap["requests"].items():
                total["requests"][method] = total["requests"].get(method, 0) + n
            total["origin_get"] += snap["origin_get"]
            total["origin_put"] += snap["origin_put"]
            for name, n in snap["outcomes"].items():
                total["outcomes"][name] = total["outcomes"].get(name, 0) + n
            for generation in range(3):
                total["gc_runs"][generation] += snap.get("gc_runs", [0, 0, 0])[generation]
                total["gc_seconds"][generation] += snap.get("gc_seconds", [0, 0, 0])[generation]
            total["gc_longest"] = max(total["gc_longest"], snap.get("gc_longest", 0.0))
            total["gc_tracked_objects"] += snap.get("gc_tracked_objects", 0)
        # The workers, and uvicorn's supervisor when there is one (with 1 worker, uvicorn
        # serves in its own process, which is then also the only worker).
        for pid in {*pids, *([self.proc.pid] if self.proc else [])}:
            total["cpu_s"] += cpu_seconds(pid) or 0.0
        total["workers_seen"] = len(pids)
        return total

    def request(
        self, method: str, path: str, body: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # uvicorn's supervisor stops its workers
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: uvicorn and workers
                proc.wait(5)
        shutil.rmtree(self.control_dir, ignore_errors=True)


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What happened between two ``counters()`` readings."""
    out: dict[str, Any] = {
        "gets": after["requests"].get("GET", 0) - before["requests"].get("GET", 0),
        "puts": after["requests"].get("PUT", 0) - before["requests"].get("PUT", 0),
        "origin_get": after["origin_get"] - before["origin_get"],
        "origin_put": after["origin_put"] - before["origin_put"],
        "cpu_s": after["cpu_s"] - before["cpu_s"],
        "outcomes": {},
        # full (generation 2) collections: they walk every live object, cache entries too
        "gc_full_runs": after["gc_runs"][2] - before["gc_runs"][2],
        "gc_seconds": sum(after["gc_seconds"]) - sum(before["gc_seconds"]),
        "gc_longest": after["gc_longest"],  # since the reading before (see mixedapp)
        "gc_tracked_objects": after["gc_tracked_objects"],
    }
    for name, n in after["outcomes"].items():
        change = n - before["outcomes"].get(name, 0)
        if change:
            out["outcomes"][name] = change
    return out


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
