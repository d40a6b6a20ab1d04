"""A bad setting under a real server is one line: the message and where the app raised it.

``uvicorn app:app`` imports the app inside its own command, so an uncaught configuration
error used to print some 40 lines of uvicorn's, click's and importlib's frames above the one
line that mattered. Each test starts uvicorn on a free loopback port and waits for it to
exit (or stops it by its pid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from .support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]

APP = """
from fastapi import FastAPI
from fastapi_tiered_cache import install

app = FastAPI()
install(app)


@app.get("/")
async def index() -> dict[str, str]:
    return {"hello": "world"}
"""

DECORATED = """
from fastapi import FastAPI
from fastapi_tiered_cache import cache_policy, install

app = FastAPI()
install(app)


@app.get("/")
@cache_policy(ttl="5 minutes")
async def index() -> dict[str, str]:
    return {"hello": "world"}
"""

BROKEN = """
from fastapi import FastAPI

app = FastAPI()
raise RuntimeError("the app's own bug")
"""


def write_app(directory: Path, source: str) -> None:
    (directory / "app.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")


def environment(**variables: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIERED_CACHE_")}
    environ.pop("PYTHONDEVMODE", None)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(variables)
    return environ


def uvicorn(directory: Path, *options: str, **variables: str) -> subprocess.Popen[str]:
    command = [sys.executable, *options, "-m", "uvicorn", "app:app"]
    command += ["--host", "127.0.0.1", "--port", str(free_port())]
    return subprocess.Popen(
        command,
        cwd=directory,
        env=environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("uvicorn did not exit")
    return process.returncode, err


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"TIERED_CACHE_DEFAULT_TTL": "abc"},
            "TIERED_CACHE_DEFAULT_TTL: 'abc' is not a duration",
        ),
        (
            {"TIERED_CACHE_DEFALT_TTL": "5"},
            "TIERED_CACHE_DEFALT_TTL: unknown setting; did you mean TIERED_CACHE_DEFAULT_TTL?",
        ),
        (
            {"TIERED_CACHE_ADMIN_ENABLED": "true"},
            "TIERED_CACHE_ADMIN_TOKEN is required when the admin router is enabled",
        ),
        (
            {"TIERED_CACHE_REDIS_URL": "http://127.0.0.1:6399"},
            "TIERED_CACHE_REDIS_URL: the URL: Redis URL must specify one of the following schemes",
        ),
        (
            {"TIERED_CACHE_RULES": '[{"path": "/a", "tll": 5}]'},
            "TIERED_CACHE_RULES[0.tll]: Extra inputs are not permitted",
        ),
    ],
    ids=["bad-duration", "typo", "admin-without-token", "redis-scheme", "bad-rule"],
)
def test_a_bad_setting_under_uvicorn_is_one_line(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    write_app(tmp_path, APP)
    status, err = finished(uvicorn(tmp_path, **variables))

    assert status == 1
    assert err.count("\n") == 1, err
    line = err.strip()
    assert line.startswith("app.py:5: ConfigurationError: invalid cache settings: "), line
    assert message in line


def test_a_bad_decorator_option_points_at_the_decorator(tmp_path: Path) -> None:
    write_app(tmp_path, DECORATED)
    status, err = finished(uvicorn(tmp_path))

    assert status == 1
    assert err.strip() == (
        "app.py:9: ConfigurationError: invalid @cache_policy: ttl: '5 minutes' is not a"
        " duration (examples: 30, 1.5, 500ms, 5m, 1h30m, 2d)"
    )


def test_the_app_s_own_errors_keep_their_traceback(tmp_path: Path) -> None:
    write_app(tmp_path, BROKEN)
    status, err = finished(uvicorn(tmp_path, TIERED_CACHE_DEFAULT_TTL="abc"))

    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert err.strip().endswith("RuntimeError: the app's own bug")


def test_python_dev_mode_shows_the_whole_traceback(tmp_path: Path) -> None:
    write_app(tmp_path, APP)
    status, err = finished(uvicorn(tmp_path, "-X", "dev", TIERED_CACHE_DEFAULT_TTL="abc"))

    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("fastapi_tiered_cache.exceptions.ConfigurationError: invalid cache settings: ")
    )


def test_a_good_setting_starts_and_serves(tmp_path: Path) -> None:
    write_app(tmp_path, APP)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env=environment(TIERED_CACHE_DEFAULT_TTL="5m"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answers = []
        deadline = time.monotonic() + 30
        while len(answers) < 2 and time.monotonic() < deadline:
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=2, verify=False))
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)

    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    assert "ConfigurationError" not in err
    assert "fastapi-tiered-cache: no TIERED_CACHE_REDIS_URL, running L1 only" in err
