"""Over HTTP: each variant in its own uvicorn process (1 worker) on 127.0.0.1:<free port>.

All servers start first; then rounds run one bounded load of every variant in a shuffled
order (``wrk`` when installed, else ``loadgen.py`` in its own process). Before and after
each load the origin call counter and our cache's outcome counters are read through each
server's side channel (see ``server.py``), so a "hit" variant that reached its origin, or
was served from the wrong tier, is flagged instead of silently reported.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .apps import LABELS, PATH, Spec, payload
from .driver import BASE_HEADERS
from .redis_proc import free_port

BENCH_DIR = Path(__file__).resolve().parents[1]
Log = Callable[[str], None]

_REQID_LUA = """
local counter = 0
local salt = "0"
init = function(args) salt = args[1] or "0" end
request = function()
  counter = counter + 1
  wrk.headers["X-Request-ID"] = salt .. "-" .. counter
  return wrk.format(nil, "/items")
end
"""

_MISS_LUA = """
local counter = 0
local salt = "0"
init = function(args) salt = args[1] or "0" end
request = function()
  counter = counter + 1
  return wrk.format(nil, "/items?n=" .. salt .. "-" .. counter)
end
"""


_TAKEN: set[int] = set()


def _port() -> int:
    """A free loopback port not yet handed to another server of this run."""
    for _ in range(100):
        port = free_port()
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port
    raise RuntimeError("no free port")


class Server:
    def __init__(self, spec: Spec, name: str, group: dict[str, Any], loop: str, http: str) -> None:
        self.spec = spec
        self.name = name
        self.group = group
        self.label = LABELS[spec.kind]
        self.loop = loop
        self.http = http
        self.port = 0
        self.control_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: Any = None
        self.runs: list[dict[str, Any]] = []
        self.outcome_totals: dict[str, int] = {}
        self.problems: list[str] = []

    def start(self, log_dir: Path) -> None:
        self.port = _port()
        self.control_port = _port()
        env = dict(
            os.environ, BENCH_SPEC=self.spec.to_json(), BENCH_CONTROL_PORT=str(self.control_port)
        )
        self.log_file = open(log_dir / f"{self.name.replace('/', '_')}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchlib.server:create",
                "--factory",
                "--app-dir",
                str(BENCH_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--loop",
                self.loop,
                "--http",
                self.http,
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                self.control("/calls")
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return False

    def control(self, path: str) -> bytes:
        """Read a counter from the side channel (never through the app under test)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise ValueError(f"control {path}: HTTP {response.status}")
            return body
        finally:
            conn.close()

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()

    def calls(self) -> int | None:
        if self.spec.kind in ("raw", "stack"):
            return None
        try:
            return int(self.control("/calls"))
        except (OSError, ValueError):
            return None

    def outcomes(self) -> dict[str, int]:
        if not self.spec.kind.startswith("ours-"):
            return {}
        try:
            return dict(json.loads(self.control("/outcomes")))
        except (OSError, ValueError):
            return {}

    def log_tail(self) -> str:
        if self.log_file is None:
            return ""
        self.log_file.flush()
        try:
            text = Path(self.log_file.name).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def _headers(spec: Spec) -> list[tuple[str, str]]:
    base = [(k.decode(), v.decode()) for k, v in BASE_HEADERS if k not in (b"host", b"connection")]
    return base + list(spec.request_headers)


_UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["rps"] = float(match.group(1)) if match else 0.0
    match = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if match:
        result["requests"] = int(match.group(1))
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.MULTILINE)
        if match:
            result[f"p{pct}_us"] = _duration_us(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors:(.*)", output)
    result["socket_errors"] = match.group(1).strip() if match else ""
    return result


class LoadGen:
    def __init__(self, connections: int, tmp: Path) -> None:
        self.connections = connections
        self.wrk = shutil.which("wrk")
        self.tool = "wrk" if self.wrk else "loadgen.py (asyncio, wrk not installed)"
        self.miss_script = tmp / "miss.lua"
        self.miss_script.write_text(_MISS_LUA)
        self.reqid_script = tmp / "reqid.lua"
        self.reqid_script.write_text(_REQID_LUA)

    def version(self) -> str:
        if not self.wrk:
            return self.tool
        out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True).stdout
        return out.strip().splitlines()[0] if out.strip() else "wrk"

    def run(self, server: Server, seconds: float) -> dict[str, Any]:
        spec = server.spec
        if self.wrk:
            # wrk takes whole seconds only ("1.5s" is rejected)
            cmd = [
                self.wrk,
                "-t1",
                f"-c{self.connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
            ]
            for k, v in _headers(spec):
                cmd += ["-H", f"{k}: {v}"]
            script = (
                self.miss_script if spec.unique_urls
                else self.reqid_script if spec.unique_header
                else None
            )  # fmt: skip
            if script is not None:
                cmd += ["-s", str(script)]
            cmd.append(f"http://127.0.0.1:{server.port}{PATH}")
            if script is not None:
                cmd += ["--", str(random.randrange(1 << 30))]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
            result = parse_wrk(done.stdout)
            if "Requests/sec" not in done.stdout:
                result["error"] = (done.stderr or done.stdout).strip()[-200:] or "wrk failed"
            return result
        cmd = [
            sys.executable, str(Path(__file__).with_name("loadgen.py")),
            "--port", str(server.port), "--path", PATH,
            "--connections", str(self.connections), "--duration", str(seconds),
        ]  # fmt: skip
        for k, v in _headers(spec):
            cmd += ["--header", f"{k}: {v}"]
        if spec.unique_urls:
            cmd.append("--unique")
        if spec.unique_header:
            cmd += ["--unique-header", spec.unique_header]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        return json.loads(done.stdout.strip().splitlines()[-1])


def http_specs(redis: Any, quick: bool) -> list[tuple[str, Spec, dict[str, Any]]]:
    out = []
    for size in (1024, 100 * 1024):
        tag = "1k" if size == 1024 else "100k"
        kinds = ["raw", "stack", "bare", "ours-l1", "ours-l1-outer", "ours-l1-ident"]
        kinds += ["ours-l1-reqid", "ours-l2"]
        kinds += ["fc2-mem", "fc2-redis", "cashews-mem", "cashews-redis"]
        if size != 1024 and quick:
            kinds = ["raw", "ours-l1"]
        for kind in kinds:
            url = redis.url if kind.startswith("ours-") or kind.endswith("redis") else None
            spec = Spec(kind, size, redis_url=url, namespace=f"h-{kind}-{tag}"[:32])
            out.append(
                (
                    f"{kind}/{tag}",
                    spec,
                    {"size": size, "origin_ms": 0.0 if kind == "bare" else None},
                )
            )
    for origin_ms in (0.0, 2.0) if not quick else ():  # misses: in-process only in --quick
        group = {"size": 1024, "origin_ms": origin_ms}
        if origin_ms:
            out.append((f"bare/1k/{origin_ms:g}ms", Spec("bare", 1024, origin_ms=origin_ms), group))
        spec = Spec(
            "ours-miss",
            1024,
            origin_ms=origin_ms,
            redis_url=redis.url_db(1),
            namespace=f"h-miss-{origin_ms:g}",
        )
        out.append((f"ours-miss/1k/{origin_ms:g}ms", spec, group))
    return out


def run_http(
    redis: Any, cfg: dict[str, Any], log: Log, peers: dict[str, str], loop: str
) -> dict[str, Any]:
    import redis as redis_sync

    quick = cfg["quick"]
    http_impl = "httptools" if _importable("httptools") else "h11"
    uv_loop = "uvloop" if loop == "uvloop" else "asyncio"
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    loadgen = LoadGen(cfg["http_connections"], tmp)
    servers: list[Server] = []
    failed: list[dict[str, Any]] = []
    for name, spec, group in http_specs(redis, quick):
        peer = (
            "fastapi-cache2"
            if spec.kind.startswith("fc2")
            else "cashews"
            if spec.kind.startswith("cashews")
            else None
        )
        if peer and peers.get(peer) != "ok":
            failed.append({"name": name, "label": LABELS[spec.kind], **group, "error": peers[peer]})
            continue
        servers.append(Server(spec, name, group, uv_loop, http_impl))
    flusher = redis_sync.Redis.from_url(redis.url_db(1))
    try:
        for server in servers:
            server.start(tmp)
        ready = []
        for server in servers:
            ok = server.wait_ready()
            if not ok and "Address already in use" in server.log_tail():
                server.stop()  # lost a port race: once more on other ports
                server.start(tmp)
                ok = server.wait_ready()
            if ok:
                ready.append(server)
            else:
                failed.append(
                    {
                        "name": server.name,
                        "label": server.label,
                        **server.group,
                        "error": f"server did not start: {server.log_tail()}",
                    }
                )
                server.stop()
        log(f"  {len(ready)} uvicorn servers up ({loadgen.tool}, {http_impl}, {uv_loop})")
        for server in ready:  # warm up (stores the entries of the hit variants) and check
            for attempt in (1, 2):  # a second warm-up if the first left no hit (cold start)
                loadgen.run(server, cfg["http_warmup"])
                flusher.flushdb()
                problem = _check_headers(server)
                if problem is None:
                    break
                if attempt == 2:
                    _note(server, problem)
        t0 = time.monotonic()
        rng = random.Random(9)
        for r in range(cfg["http_rounds"]):
            order = list(ready)
            rng.shuffle(order)
            for server in order:
                before = server.calls()
                outcomes_before = server.outcomes()
                result = loadgen.run(server, cfg["http_seconds"])
                after = server.calls()
                for name, count in server.outcomes().items():
                    delta = count - outcomes_before.get(name, 0)
                    if delta:
                        server.outcome_totals[name] = server.outcome_totals.get(name, 0) + delta
                if before is not None and after is not None:
                    result["origin_calls"] = after - before
                    _check_calls(server, result)
                if result.get("non2xx"):
                    _note(server, f"{result['non2xx']} non-2xx responses")
                if result.get("error"):
                    _note(server, f"load generator: {result['error']}")
                    continue
                server.runs.append(result)
                if server.spec.unique_urls:
                    flusher.flushdb()
            log(f"  http round {r + 1}/{cfg['http_rounds']} ({time.monotonic() - t0:.0f}s)")
        rows = []
        for server in ready:
            row: dict[str, Any] = {
                "section": "http",
                "name": server.name,
                "label": server.label,
                **server.group,
                "problems": server.problems,
                "outcomes": server.outcome_totals,
            }
            if server.runs:
                for key in ("rps", "p50_us", "p90_us", "p99_us"):
                    values = [run[key] for run in server.runs if key in run]
                    if values:
                        row[key] = statistics.median(values)
                row["rounds"] = len(server.runs)
                row["requests"] = sum(run.get("requests", 0) for run in server.runs)
            rows.append(row)
        return {
            "rows": rows,
            "failed": failed,
            "tool": loadgen.version(),
            "server": f"uvicorn 1 worker, --loop {uv_loop} --http {http_impl}",
            "connections": cfg["http_connections"],
            "seconds": cfg["http_seconds"],
        }
    finally:
        for server in servers:
            server.stop()
        flusher.flushdb()
        flusher.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _note(server: Server, problem: str) -> None:
    if problem not in server.problems:
        server.problems.append(problem)


def _check_calls(server: Server, result: dict[str, Any]) -> None:
    calls, requests = result["origin_calls"], result.get("requests", 0)
    kind = server.spec.kind
    if kind in ("bare", "ours-miss"):
        if kind == "ours-miss" and calls < requests:
            _note(
                server, f"only {calls} origin calls for {requests} requests (expected all misses)"
            )
    elif calls:
        _note(server, f"origin called {calls}x during a load of {requests}: not all hits")


def _check_headers(server: Server) -> str | None:
    spec = server.spec
    try:
        status, headers, body = server.get(PATH, dict(_headers(spec)))
    except OSError as exc:
        return f"check request failed: {exc}"
    if status != 200 or len(body) != len(payload(spec.size)[1]):
        return f"check: status {status}, {len(body)} bytes"
    if spec.kind.startswith("ours-") and spec.kind != "ours-miss":
        tier = "l2" if spec.kind == "ours-l2" else "l1"
        cache_status = headers.get("cache-status", "")
        if "hit" not in cache_status or tier not in cache_status:
            return f"check after warm-up: Cache-Status {cache_status!r}, expected an {tier} hit"
    return None


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
