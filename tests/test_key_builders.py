"""Key builders: per route (a rule's ``key_builder``, ``@cache_policy(key_builder=...)``) and
for the whole cache (``TIERED_CACHE_KEY_BUILDER``).

A plug-in computes only the digest: the cache still adds namespace, generations, tenant and
identity scope, what a route is known to read still guards every hit, a key builder never
opts in a route the cache cannot see through (a rule does), and one that fails makes its
requests misses that nobody shares, never an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, Request

from fastapi_tiered_cache import (
    CacheSettings,
    ConfigurationError,
    RouteRule,
    TieredCache,
    cache_policy,
    install,
    load_settings,
)
from fastapi_tiered_cache.explain import describe_route, iter_routes
from fastapi_tiered_cache.keys import VaryValues
from fastapi_tiered_cache.request import RequestInfo

from .helpers import SECRET

ROOT = Path(__file__).resolve().parents[1]


# Key builders the tests name by dotted path (``tests.test_key_builders:...``).


def one_for_all(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    """The same digest for every request: only what the cache adds can keep them apart."""
    return "same"


def first_letter_of_path(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    """The first letter of the last path segment: ``/echo/apple`` and ``/echo/avocado``
    share an entry (a key builder may say that; the automatic key never would)."""
    return "p" + info.path.rsplit("/", 1)[-1][:1]


def failing(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    raise RuntimeError("no region database")


def not_a_string(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> Any:
    return 42


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def load_example() -> ModuleType:
    path = ROOT / "examples" / "key_builders.py"
    spec = importlib.util.spec_from_file_location("_example_key_builders", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    cache = app.state.tiered_cache
    assert isinstance(cache, TieredCache)
    await cache.close()


def echo_app(settings: CacheSettings, *, policy: dict[str, Any] | None = None, **options: Any):  # type: ignore[no-untyped-def]
    """An app whose ``/echo/...`` routes take the raw Request and answer with the path, the
    tenant and the credential they were asked with, and a call count."""
    app = FastAPI()
    calls = [0]

    async def echo(request: Request) -> dict[str, Any]:
        calls[0] += 1
        return {
            "path": request.url.path,
            "tenant": request.headers.get("x-tenant-id"),
            "auth": request.headers.get("authorization"),
            "calls": calls[0],
        }

    endpoint = cache_policy(**policy)(echo) if policy is not None else echo
    app.get("/echo/{name}")(endpoint)
    install(app, settings, **options)
    return app


# The example.


async def test_example_shares_one_entry_per_region_and_never_another_regions() -> None:
    app = load_example().app
    countries = ["DE", "FR", "US", "CA", "BR", "IT", "US"]
    async with client_for(app) as client:
        answers = [
            await client.get("/prices", headers={"cf-ipcountry": country}) for country in countries
        ]
        # Repeats go through the memo in front of the app (when it may answer): never the
        # entry of another region, whatever it remembered.
        repeats = []
        for country in ["DE", "DE", "DE", "US", "BR", "DE", "US"]:
            repeats.append(await client.get("/prices", headers={"cf-ipcountry": country}))

    assert [a.headers["x-cache"] for a in answers] == [
        "MISS",
        "HIT",
        "MISS",
        "HIT",
        "MISS",
        "HIT",
        "HIT",
    ]
    regions = [a.json()["region"] for a in answers]
    assert regions == ["eu", "eu", "us", "us", "other", "eu", "us"]
    assert [r.json()["region"] for r in repeats] == ["eu", "eu", "eu", "us", "other", "eu", "us"]
    assert {r.headers["x-cache"] for r in repeats} == {"HIT"}


async def test_example_reads_a_repeated_header_as_the_endpoint_does() -> None:
    app = load_example().app
    async with client_for(app) as client:
        await client.get("/prices", headers={"cf-ipcountry": "BR"})  # "other", stored
        both = await client.get("/prices", headers=[("cf-ipcountry", "DE"), ("cf-ipcountry", "US")])

    assert both.headers["x-cache"] == "MISS"  # the first field (DE): not "other"'s entry
    assert both.json()["region"] == "eu"


async def test_the_example_builder_as_tiered_cache_key_builder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same builder for every route, from the environment: a rule still opts in the
    route that reads the raw Request."""
    module = importlib.import_module("fastapi_tiered_cache.install")
    monkeypatch.setattr(module, "_process_cache", None)  # importing the example installs
    monkeypatch.setattr(module, "_process_installed", False)
    monkeypatch.setenv("TIERED_CACHE_KEY_BUILDER", "examples.key_builders:by_region")
    monkeypatch.setenv("TIERED_CACHE_RULES", '[{"path": "/prices", "ttl": "10m"}]')
    example = load_example()
    app = FastAPI()
    app.get("/prices")(example.prices)  # no decorator: the environment says it all
    install(app)
    async with client_for(app) as client:
        answers = [
            await client.get("/prices", headers={"cf-ipcountry": country})
            for country in ("DE", "FR", "US", "IT")
        ]
    await example.app.state.tiered_cache.close()

    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "MISS", "HIT"]
    assert [a.json()["region"] for a in answers] == ["eu", "eu", "us", "eu"]
    assert app.state.tiered_cache.routing.key_builder.__module__ == "examples.key_builders"


# Rules and decorators.


async def test_a_rule_names_a_key_builder_by_dotted_path() -> None:
    rule = {"path": "/echo/*", "key_builder": "tests.test_key_builders:first_letter_of_path"}
    app = echo_app(CacheSettings(secret_key=SECRET, rules=[RouteRule(**rule)]))
    async with client_for(app) as client:
        first = await client.get("/echo/apple")
        shared = await client.get("/echo/avocado")  # same first letter: the builder says so
        other = await client.get("/echo/banana")

    assert [first.headers["x-cache"], shared.headers["x-cache"]] == ["MISS", "HIT"]
    assert shared.json() == first.json()
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["path"] == "/echo/banana"


def test_a_rule_from_the_environment_imports_its_key_builder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = '[{"path": "/echo/*", "key_builder": "tests.test_key_builders:one_for_all"}]'
    monkeypatch.setenv("TIERED_CACHE_RULES", rules)
    settings = load_settings()

    assert settings.rules[0].key_builder is one_for_all


async def test_the_tenant_and_the_identity_scope_are_still_added() -> None:
    app = echo_app(CacheSettings(secret_key=SECRET), policy={"key_builder": one_for_all, "ttl": 60})
    askers: list[dict[str, str]] = [
        {},
        {"x-tenant-id": "acme"},
        {"x-tenant-id": "globex"},
        {"authorization": "Bearer alice-token"},
        {"authorization": "Bearer bob-token"},
        {"x-tenant-id": "acme", "authorization": "Bearer alice-token"},
    ]
    async with client_for(app) as client:
        first = [await client.get("/echo/a", headers=headers) for headers in askers]
        again = [await client.get("/echo/b", headers=headers) for headers in askers]

    assert {r.headers["x-cache"] for r in first} == {"MISS"}
    assert {r.headers["x-cache"] for r in again} == {"HIT"}  # "same" digest: one entry each
    for asker, before, after in zip(askers, first, again, strict=True):
        assert after.json() == before.json()
        assert before.json()["tenant"] == asker.get("x-tenant-id")
        assert before.json()["auth"] == asker.get("authorization")


async def test_what_a_route_reads_still_guards_every_hit() -> None:
    """A builder that ignores the route's declared header cannot serve one value's answer
    to another: the entry records the values it was stored for."""
    app = FastAPI()

    @app.get("/greeting")
    @cache_policy(key_builder=one_for_all)
    async def greeting(x_lang: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return {"text": "Bonjour" if x_lang == "fr" else "Hello"}

    install(app, CacheSettings(secret_key=SECRET))
    async with client_for(app) as client:
        english = [await client.get("/greeting", headers={"x-lang": "en"}) for _ in range(3)]
        french = await client.get("/greeting", headers={"x-lang": "fr"})
        english_again = await client.get("/greeting", headers={"x-lang": "en"})

    assert [r.headers["x-cache"] for r in english] == ["MISS", "HIT", "HIT"]
    assert french.json() == {"text": "Bonjour"}
    assert french.headers["x-cache"] == "MISS"
    assert english_again.json() == {"text": "Hello"}


async def test_a_key_builder_never_opts_in_a_route_the_cache_cannot_see_through() -> None:
    settings = CacheSettings(
        secret_key=SECRET, key_builder="tests.test_key_builders:first_letter_of_path"
    )
    async with client_for(echo_app(settings)) as client:
        answers = [await client.get("/echo/x") for _ in range(2)]
    for answer in answers:
        assert answer.headers["cache-status"].endswith("fwd=bypass; detail=request-object")

    opted_in = settings.model_copy(update={"rules": [RouteRule(path="/echo/*")]})
    async with client_for(echo_app(opted_in)) as client:
        first = await client.get("/echo/apple")
        shared = await client.get("/echo/avocado")
    assert (first.headers["x-cache"], shared.headers["x-cache"]) == ("MISS", "HIT")


async def test_the_route_builder_wins_over_the_global_one() -> None:
    settings = CacheSettings(secret_key=SECRET, key_builder="tests.test_key_builders:one_for_all")
    app = echo_app(settings, policy={"key_builder": first_letter_of_path})
    async with client_for(app) as client:
        await client.get("/echo/apple")
        other = await client.get("/echo/banana")  # "same" globally, "pb" for the route

    assert other.headers["x-cache"] == "MISS"
    assert other.json()["path"] == "/echo/banana"


@pytest.mark.parametrize("builder", [failing, not_a_string], ids=["raises", "not-a-str"])
async def test_a_failing_key_builder_answers_and_never_shares(
    builder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_tiered_cache")
    app = echo_app(CacheSettings(secret_key=SECRET), policy={"key_builder": builder})
    async with client_for(app) as client:
        answers = [await client.get("/echo/x") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS", "MISS"]
    assert [a.json()["calls"] for a in answers] == [1, 2, 3]
    logged = [r.getMessage() for r in caplog.records if "key builder" in r.getMessage()]
    assert len(logged) == 1, logged  # once per builder, not per request
    assert f"{__name__}:{builder.__name__}" in logged[0]


def wrong_signature(info: RequestInfo) -> str:
    return "x"


@pytest.mark.parametrize(
    "make",
    [
        lambda: RouteRule(path="/a", key_builder=wrong_signature),
        lambda: load_settings({}, key_builder=wrong_signature),
        lambda: cache_policy(key_builder=wrong_signature),  # type: ignore[arg-type]
    ],
    ids=["rule", "settings", "decorator"],
)
def test_a_key_builder_that_cannot_be_called_so_fails_at_start_up(make: Any) -> None:
    expected = (
        r"the key builder tests\.test_key_builders:wrong_signature\(info\) cannot be called"
        r" as \(info, vary, \*, secret\)"
    )
    with pytest.raises(ValueError, match=expected):
        make()


def test_a_bad_key_builder_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings({}, key_builder="tests.nothing_here:builder")

    assert str(raised.value).startswith("invalid cache settings: TIERED_CACHE_KEY_BUILDER: ")
    assert "\n" not in str(raised.value)


# Purges, the routes command, and a real Redis.


async def test_purging_one_request_uses_the_routes_key_builder() -> None:
    app = load_example().app
    cache: TieredCache = app.state.tiered_cache
    async with client_for(app) as client:
        await client.get("/prices", headers={"cf-ipcountry": "DE"})
        purged = await cache.invalidate_request(
            "GET", "http://test/prices", headers={"cf-ipcountry": "FR"}
        )
        after = await client.get("/prices", headers={"cf-ipcountry": "DE"})

    assert purged == 1  # France's request is keyed as Germany's: one entry for the region
    assert after.headers["x-cache"] == "MISS"


def test_routes_shows_the_key_builder() -> None:
    app = load_example().app
    cache: TieredCache = app.state.tiered_cache
    rows = {
        path: describe_route(cache, methods, path, owner)
        for methods, path, _, owner in iter_routes(app.routes)
    }

    cached, _, rule, key = rows["/prices"]
    assert (cached, rule) == ("yes", "@cache_policy")
    assert key.startswith("key_builder=_example_key_builders:by_region ")
    assert key.endswith(" tenant")


async def test_workers_share_one_regions_entry_through_redis(redis_url: str) -> None:
    """Two workers (two apps, two caches) on one real Redis: a region's entry stored by one
    is served by the other to another country of that region, never to another region."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    apps, caches = [], []
    for client in clients:
        module = load_example()
        settings = CacheSettings(secret_key=SECRET, redis_timeout=1.0, namespace="kb")
        app = FastAPI()
        app.get("/prices")(cache_policy(key_builder=module.by_region)(module.prices))
        caches.append(install(app, settings, redis=client))
        apps.append(app)
    try:
        async with client_for(apps[0]) as first, client_for(apps[1]) as second:
            stored = await first.get("/prices", headers={"cf-ipcountry": "DE"})
            shared = await second.get("/prices", headers={"cf-ipcountry": "FR"})
            other = await second.get("/prices", headers={"cf-ipcountry": "US"})
    finally:
        for cache in caches:  # its bus, started on first use, before the client it uses
            await cache.close()
        for client in clients:
            await client.aclose()

    assert stored.headers["x-cache"] == "MISS"
    assert shared.headers["x-cache"] == "HIT"
    assert shared.headers["cache-status"].endswith("detail=l2")
    assert shared.json() == stored.json()
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["region"] == "us"
