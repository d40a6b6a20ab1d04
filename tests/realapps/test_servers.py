"""The cache under real ASGI servers, each in a process of its own on a free loopback port:
uvicorn (h11 and httptools), hypercorn and granian."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

APP = "tests.realapps.server_app:app"
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command(server: str, port: int) -> list[str]:
    python = sys.executable
    if server.startswith("uvicorn-"):
        http = server.removeprefix("uvicorn-")
        return [python, "-m", "uvicorn", APP, "--port", str(port), "--http", http]
    if server == "hypercorn":
        return [python, "-m", "hypercorn", APP, "--bind", f"127.0.0.1:{port}"]
    granian = shutil.which("granian", path=str(Path(python).parent)) or "granian"
    return [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), APP]


NEEDS = {"uvicorn-h11": "h11", "uvicorn-httptools": "httptools", "hypercorn": "hypercorn"}


@pytest.mark.parametrize("server", ["uvicorn-h11", "uvicorn-httptools", "hypercorn", "granian"])
def test_hits_through_a_real_server(server: str) -> None:
    module = NEEDS.get(server, "granian")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    port = _free_port()
    process = subprocess.Popen(
        _command(server, port), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}/data"
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(url, timeout=2, verify=False)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, f"{server} did not start"
                time.sleep(0.1)
        second = httpx.get(url, timeout=2, verify=False)
        assert first.json() == second.json() == {"ok": True}
        assert [first.headers["x-cache"], second.headers["x-cache"]] == ["MISS", "HIT"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
