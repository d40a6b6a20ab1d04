"""Shutdown never hangs, with real processes and signals (issue 21).

Every background task of the cache (bus and its pings, lease wake-ups and renewals,
refreshes, the L2 warm-up) ends within about a second of shutdown, whether Redis answers,
refuses, or silently swallows every packet. The demo, whose embedded fakeredis once kept
a bus task alive forever, exits when its port is taken.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .helpers import SECRET
from .support.fleet import HOST, ROOT, Fleet, ProxyProcess
from .support.redis_server import RedisServer

# Seconds from SIGTERM to exit: about one for the cache's tasks, the rest is uvicorn's.
EXIT_WITHIN = 3.0


def _env(cache_url: str, data_url: str) -> dict[str, str]:
    return {
        "TIERED_CACHE_REDIS_URL": cache_url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "TIERED_CACHE_COHERENCE_BOUND": "0.3",
        "FLEET_DATA_URL": data_url,
    }


def _terminate_and_time(fleet: Fleet) -> float:
    proc = fleet.procs[0]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit within 10 s of SIGTERM")
    return time.monotonic() - started


def _use(fleet: Fleet) -> None:
    """Requests that start the lease listener, a renewal timer and fills."""
    with httpx.Client(
        base_url=fleet.urls[0], headers={"host": "fleet.test"}, verify=False
    ) as client:
        for item in ("x", "y", "x"):
            assert client.get(f"/items/{item}").status_code == 200


@pytest.mark.parametrize("redis", ["answers", "blackholed", "gone"])
def test_sigterm_ends_a_process_promptly_whatever_redis_does(
    redis: str, fresh_redis_server: RedisServer, redis_url: str
) -> None:
    with ProxyProcess(fresh_redis_server.port) as proxy:
        fleet = Fleet(1, _env(proxy.url, redis_url)).start()
        try:
            _use(fleet)
            if redis == "blackholed":
                proxy.blackhole()
                time.sleep(0.5)  # connections now hang: the bus is lost, pings go nowhere
            elif redis == "gone":
                fresh_redis_server.stop()
                time.sleep(0.5)
            elapsed = _terminate_and_time(fleet)
        finally:
            fleet.stop()
    print(f"{redis}: {elapsed:.2f} s from SIGTERM to exit")
    assert elapsed < EXIT_WITHIN, f"{redis}: {elapsed:.2f} s from SIGTERM to exit"


def test_the_demo_exits_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "fastapi_tiered_cache.demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    elapsed = time.monotonic() - started
    assert "address already in use" in result.stderr
    assert "Application shutdown complete" in result.stderr
    assert result.returncode != 0
    assert elapsed < 15, elapsed  # imports included; it used to wait forever


def test_the_demo_stops_on_sigint() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastapi_tiered_cache.demo", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert elapsed < EXIT_WITHIN


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the demo exited"
        try:
            if (
                httpx.get(f"http://{HOST}:{port}/products/1", timeout=2, verify=False).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("the demo did not start")
