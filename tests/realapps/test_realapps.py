"""Every realistic app test, in every environment: the cache off, on with L1 only, and on
with Redis; through ``TestClient`` and ``httpx.ASGITransport``; on asyncio and trio; with
the ASGI lifespan and without. With the cache on, each test must see exactly what it saw
with the cache off (see ``harness.py``), unless it counts origin calls itself."""

from __future__ import annotations

from typing import Any

import pytest

from .apps import basics, dependencies, errors, files, state, streaming, subapps
from .harness import ENVS, Check, checks_of, run_check

MODULES = [basics, dependencies, errors, files, state, streaming, subapps]
CHECKS = [found for module in MODULES for found in checks_of(module)]


# Where the cache is not yet invisible: each a defect, reported, failing until fixed.
KNOWN = {}


def _param(found: Check) -> object:
    marks = (
        [pytest.mark.xfail(strict=True, reason=KNOWN[found.name])] if found.name in KNOWN else []
    )
    return pytest.param(found, id=found.name, marks=marks)


@pytest.mark.parametrize("check", [_param(found) for found in CHECKS])
def test_the_app_cannot_tell_the_cache_is_there(check: Check, redis_url: str) -> None:
    transcripts = {}
    for number, env in enumerate(ENVS):
        if env.transport not in check.transports:
            continue
        try:
            client = run_check(check, env, redis_url, namespace=f"ra{number}")
        except Exception as exc:
            raise AssertionError(f"{check.name} failed in {env}: {exc!r}") from exc
        transcripts[env] = client.transcript
        if env.cached and not check.counts_origin:
            expected = _normal(transcripts[env.baseline])
            assert _normal(client.transcript) == expected, f"{check.name}: {env}"


def _normal(transcript: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A stored body is replayed whole, with its length: a streamed response's missing
    ``Content-Length`` is not a difference when it is the body's true length."""
    normal = []
    for exchange in transcript:
        if len(exchange) == 5 and isinstance(exchange[3], bytes):
            length = ("content-length", str(len(exchange[3])))
            exchange = (*exchange[:4], tuple(h for h in exchange[4] if h != length))
        normal.append(exchange)
    return normal


def test_every_environment_is_exercised() -> None:
    assert len(ENVS) == 24
    assert {env.cache for env in ENVS} == {"off", "l1", "redis"}
    assert len(CHECKS) >= 20
