"""The demo app: what its root page promises must be what it does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest
from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings
from fastapi_tiered_cache.demo import (
    INSTALL_HINT,
    Catalogue,
    build_app,
    demo_settings,
    describe_tiers,
    landing_page,
    main,
    mask_url,
)

SECRET = "test-secret-key-0123456789"
ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


@pytest.fixture
def app(redis: fakeredis.FakeAsyncRedis) -> FastAPI:
    return build_app(CacheSettings(secret_key=SECRET), redis=redis, delay=0)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as client:
        yield client


def catalogue_of(app: FastAPI) -> Catalogue:
    catalogue = app.state.catalogue
    assert isinstance(catalogue, Catalogue)
    return catalogue


async def test_second_list_is_a_hit_and_the_slow_read_ran_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await client.get("/products")
    second = await client.get("/products")

    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["cache-status"] == "fastapi-tiered-cache; fwd=miss; stored"
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["cache-status"].startswith("fastapi-tiered-cache; hit; ttl=")
    # Served without lifespan events, the cache starts its bus on the first request; once
    # the bus is heard it drops what L1 held before (purges may have gone unheard), so on a
    # fast machine the second request may come from L2.
    assert second.headers["cache-status"].endswith(("; detail=l1", "; detail=l2"))
    assert second.headers["age"] == "0"
    assert second.headers["etag"] == first.headers["etag"]
    assert second.json() == first.json()
    assert first.json()["count"] == 3
    assert catalogue_of(app).reads["list"] == 1


async def test_another_worker_hits_the_shared_l2(
    app: FastAPI, client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    await client.get("/products/2")
    other = build_app(CacheSettings(secret_key=SECRET), redis=redis, delay=0)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as second:
        response = await second.get("/products/2")

    assert response.headers["x-cache"] == "HIT"
    assert response.headers["cache-status"].endswith("; detail=l2")
    assert response.json()["name"] == "Smartphone"
    assert catalogue_of(other).reads["detail"] == 0


async def test_if_none_match_gets_304_from_the_cache(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    etag = (await client.get("/products")).headers["etag"]
    response = await client.get("/products", headers={"if-none-match": etag})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["x-cache"] == "HIT"
    assert catalogue_of(app).reads["list"] == 1


@pytest.mark.parametrize(
    ("headers", "user"), [(ALICE, "alice"), (BOB, "bob")], ids=["alice", "bob"]
)
async def test_me_is_cached_per_identity(
    client: httpx.AsyncClient, headers: dict[str, str], user: str
) -> None:
    other = BOB if headers is ALICE else ALICE
    await client.get("/me", headers=other)  # the other user's entry is in the cache first
    first = await client.get("/me", headers=headers)
    second = await client.get("/me", headers=headers)

    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.json()["user"] == second.json()["user"] == user
    assert second.headers["cache-control"] == "private"


async def test_me_without_a_valid_token_is_401_and_not_cached(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"authorization": "Bearer nobody-token"}):
        for _ in range(2):
            response = await client.get("/me", headers=headers)
            assert response.status_code == 401
            assert response.headers["x-cache"] == "MISS"
            assert response.headers["cache-status"].endswith("detail=status")


async def test_stats_are_never_cached(client: httpx.AsyncClient) -> None:
    await client.get("/products")
    await client.get("/products")
    first = await client.get("/stats")
    second = await client.get("/stats")

    for response in (first, second):
        assert response.headers["x-cache"] == "BYPASS"
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=rule")
        assert response.headers["cache-control"] == "no-store"
    stats = first.json()
    assert stats["tiers"] == "L1 + L2 (embedded fakeredis)"
    assert stats["hit_ratio"] == 0.5  # one miss, one hit; /stats itself is no lookup
    assert sum(stats["counts"]["hit"].values()) == 1
    assert second.json() != stats  # the first /stats was counted: a cached copy would not be


async def test_unknown_product_is_404_and_not_cached(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    responses = [await client.get("/products/999") for _ in range(2)]

    for response in responses:
        assert response.status_code == 404
        assert response.headers["x-cache"] == "MISS"
        assert response.headers["cache-status"] == "fastapi-tiered-cache; fwd=miss; detail=status"
    assert catalogue_of(app).reads["detail"] == 2


async def test_writes_bypass_the_cache(client: httpx.AsyncClient) -> None:
    product = {"name": "Keyboard", "price": 49.5, "stock": 3}
    created = await client.post("/products", json=product)
    replaced = await client.put(f"/products/{created.json()['id']}", json={**product, "stock": 0})
    deleted = await client.delete("/products/1")

    assert (created.status_code, replaced.status_code, deleted.status_code) == (201, 200, 204)
    for response in (created, replaced, deleted):
        assert response.headers["x-cache"] == "BYPASS"
        assert response.headers["cache-status"].endswith("detail=method")
    listed = (await client.get("/products")).json()
    assert [p["name"] for p in listed["products"]] == ["Smartphone", "Headphones", "Keyboard"]
    assert listed["products"][-1]["stock"] == 0


async def test_root_page_explains_how_to_try_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for needle in ("alice-token", "bob-token", "X-Cache", "Cache-Status", "/stats"):
        assert needle in page
    assert "curl -si http://demo.test/products" in page
    assert "<etag" not in page  # commands are HTML-escaped


def test_landing_page_escapes_the_url() -> None:
    page = landing_page('http://evil.test/"><script>alert(1)</script>')

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/stats" in page
    assert 'href="http://evil.test/&quot;&gt;&lt;script&gt;' in page


def test_demo_settings_generate_a_secret_only_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, generated = demo_settings()
    assert generated
    assert settings.secret_key is not None
    assert len(settings.secret_key.get_secret_value()) >= 32
    assert settings.caches_identities

    monkeypatch.setenv("TIERED_CACHE_SECRET_KEY", SECRET)
    settings, generated = demo_settings()
    assert not generated
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == SECRET


def test_the_demo_shows_the_cache_in_its_docs_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenAPI is off by default (an app's schema is its contract); the demo turns it on."""
    assert CacheSettings(secret_key=SECRET).openapi is False
    settings, _ = demo_settings()
    assert settings.openapi is True
    monkeypatch.setenv("TIERED_CACHE_OPENAPI", "false")
    settings, _ = demo_settings()
    assert settings.openapi is False


def test_stats_rule_comes_before_the_users_rules(redis: fakeredis.FakeAsyncRedis) -> None:
    settings = CacheSettings.model_validate({"rules": [{"path": "/**", "ttl": 5}]})
    app = build_app(settings, redis=redis)

    rules = app.state.tiered_cache.settings.rules
    assert [(rule.path, rule.cache) for rule in rules] == [("/stats", False), ("/**", True)]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:hunter2@cache.internal:6380", "rediss://user:***@cache.internal:6380"),
        ("redis://127.0.0.1:6379/0?password=hunter2", "redis://127.0.0.1:6379/0"),
    ],
    ids=["no-password", "password", "user-and-password", "password-in-query"],
)
def test_mask_url_hides_passwords(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_banner_names_a_real_redis_without_its_password() -> None:
    settings = CacheSettings(redis_url="redis://:hunter2@127.0.0.1:6399/1", secret_key=SECRET)
    app = build_app(settings)  # lazy client: nothing connects

    assert describe_tiers(app.state.tiered_cache) == "L1 + L2 (redis://:***@127.0.0.1:6399/1)"


@pytest.mark.parametrize("missing", ["uvicorn", "fakeredis"])
def test_main_without_the_demo_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail

    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "1"])
    assert exit_info.value.code == INSTALL_HINT
    assert "pip install 'fastapi-tiered-cache[demo]'" in INSTALL_HINT


def test_main_reports_invalid_settings_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TTL", "soon")

    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "1"])
    message = str(exit_info.value.code)
    assert message.startswith("error: invalid cache settings: TIERED_CACHE_DEFAULT_TTL")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "described"),
    [
        ({"l1_max_entries": 0}, "L2 (embedded fakeredis)"),
        (
            {"enabled": False},
            "disabled (TIERED_CACHE_ENABLED=false): every request goes to the app",
        ),
    ],
    ids=["l2-only", "disabled"],
)
def test_banner_describes_other_configurations(
    redis: fakeredis.FakeAsyncRedis, overrides: dict[str, object], described: str
) -> None:
    app = build_app(CacheSettings.model_validate(overrides), redis=redis)

    assert describe_tiers(app.state.tiered_cache) == described


# The real thing: `python -m fastapi_tiered_cache.demo` in a subprocess.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIERED_CACHE_")}
    output = tmp_path / "demo.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastapi_tiered_cache.demo", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        yield f"http://127.0.0.1:{port}", output
    finally:
        process.terminate()  # SIGTERM to this pid: uvicorn shuts down cleanly
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_up(client: httpx.Client, output: Path, deadline_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            client.get("/")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"demo did not answer within {deadline_seconds} s:\n{output.read_text()}")


def test_demo_process_serves_a_miss_then_a_hit(demo_process: tuple[str, Path]) -> None:
    base_url, output = demo_process
    with httpx.Client(base_url=base_url, timeout=5, trust_env=False) as client:
        wait_until_up(client, output)
        first = client.get("/products")
        second = client.get("/products")

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    banner = output.read_text()
    assert f"demo on {base_url}/" in banner
    assert "cache tiers: L1 + L2 (embedded fakeredis)" in banner
    assert "TIERED_CACHE_SECRET_KEY is not set" in banner
