"""The start-up lines reach a newcomer's terminal under a server's default logging."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastapi_tiered_cache import logs

from .support.redis_server import HOST, free_port

APP = """
from fastapi import FastAPI
from fastapi_tiered_cache import install
app = FastAPI()
install(app)
"""


def test_uvicorn_default_logging_shows_which_tiers_run(tmp_path: Path) -> None:
    (tmp_path / "startup_app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_CACHE_")}
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "startup_app:app", "--host", HOST]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "Application startup complete" in line:
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # and close the pipe
    assert "INFO:     fastapi-tiered-cache: no TIERED_CACHE_REDIS_URL, running L1 only" in lines


def test_an_app_with_logging_configured_gets_the_line_through_its_handlers(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="fastapi_tiered_cache"):
        logs.announce("fastapi-tiered-cache: tiers %s", "L1")
    assert caplog.messages == ["fastapi-tiered-cache: tiers L1"]
    assert capsys.readouterr().err == ""


def test_without_any_handler_the_line_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logs._fallback, "handlers", [])
    logs.announce("fastapi-tiered-cache: tiers %s", "L1 + L2")
    assert capsys.readouterr().err == "INFO:     fastapi-tiered-cache: tiers L1 + L2\n"
