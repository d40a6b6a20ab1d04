"""Every answer equals what the app alone would answer to that request, for generated apps.

Hypothesis draws an app (``generated_apps.AppSpec``: auth styles, dependency trees, declared
parameters with aliases, routers, mounts, host routes) and a sequence of requests from
several users and tenants, with header case, repetition and whitespace variations, and
plays it against two copies of the app: one bare, one behind the cache. Every answer of
the cached copy must equal the bare one's (status and body), hit or miss. The routes the
cache can see through are also cached (``event`` shows how often), so the check runs on
hits, not only on bypasses.

Counterexamples hypothesis shrank along the way are kept as explicit examples.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware, install

from . import generated_apps as gen
from .helpers import SECRET

CREDENTIAL_HEADERS = ["x-acme-token", "x-user", "authorization", "x-session-id"]
PLAIN_HEADERS = ["x-acme", "x-client"]
HEADER_NAMES = ["x-lang", "x-region", "x_flag", "x-plan"]
COOKIE_NAMES = ["theme", "Theme", "pref"]
QUERY_NAMES = ["q", "page"]
VALUES = ["a", "b", "A", "a b", "a  b", " a", ""]
USERS = {"alice": "alice-token", "bob": "bob-token", "anonymous": None}
TENANTS = [None, "acme", "globex"]


@st.composite
def params(draw: st.DrawFn, prefix: str) -> tuple[gen.Param, ...]:
    found = []
    for index in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["header", "cookie", "query"]))
        pool = {"header": HEADER_NAMES, "cookie": COOKIE_NAMES, "query": QUERY_NAMES}[kind]
        request_name = draw(st.sampled_from(pool))
        how = draw(st.sampled_from(["name", "alias", "validation_alias"]))
        python_name = f"{prefix}{index}"
        if how == "name" and request_name.isidentifier() and kind != "header":
            python_name = request_name
        found.append(
            gen.Param(
                kind=kind,
                name=python_name
                if how != "name" or kind != "header"
                else request_name.replace("-", "_"),
                alias=request_name if how == "alias" else None,
                validation_alias=request_name if how == "validation_alias" else None,
                convert_underscores=draw(st.booleans()) if kind == "header" else True,
                as_list=kind == "header" and draw(st.booleans()),
            )
        )
    names = [p.name for p in found]
    return tuple(p for i, p in enumerate(found) if p.name not in names[:i])


@st.composite
def auths(draw: st.DrawFn) -> gen.Auth:
    style = draw(
        st.sampled_from(
            [
                "none",
                "bearer",
                "key-header",
                "key-cookie",
                "key-query",
                "subclass",
                "class",
                "middleware",
                "state",
            ]
        )
    )
    if style in ("key-header", "subclass", "class"):
        name = draw(st.sampled_from(CREDENTIAL_HEADERS + PLAIN_HEADERS))
    elif style in ("middleware", "state"):
        name = draw(st.sampled_from(CREDENTIAL_HEADERS))  # what the cache can recognise
    elif style == "key-cookie":
        name = draw(st.sampled_from(["acme_key", "Session"]))
    elif style == "key-query":
        name = "key"
    else:
        name = "authorization"
    return gen.Auth(style, name)


@st.composite
def app_specs(draw: st.DrawFn) -> gen.AppSpec:
    routes = []
    for index in range(draw(st.integers(1, 3))):
        routes.append(
            gen.RouteSpec(
                path=f"/r{index}",
                auth=draw(auths()),
                params=draw(params("p")),
                nested=draw(params("n")) if draw(st.booleans()) else (),
                in_class=draw(params("c")) if draw(st.booleans()) else (),
                place=draw(st.sampled_from(["app", "router", "guarded-router", "mount", "host"])),
                opt_in=draw(st.booleans()),
            )
        )
    return gen.AppSpec(tuple(routes))


@dataclass(frozen=True)
class Ask:
    route: int
    user: str
    tenant: str | None
    headers: tuple[tuple[bytes, bytes], ...]
    query: bytes


def _name_variant(name: str, upper: bool) -> bytes:
    return (name.title() if upper else name).encode()


@st.composite
def asks(draw: st.DrawFn, spec: gen.AppSpec) -> Ask:
    route = draw(st.integers(0, len(spec.routes) - 1))
    user = draw(st.sampled_from(sorted(USERS)))
    token = USERS[user]
    headers: list[tuple[bytes, bytes]] = []
    auth = spec.routes[route].auth
    if token is not None and auth.style != "none":
        if auth.style in ("bearer",) or auth.name == "authorization":
            headers.append((b"authorization", f"Bearer {token}".encode()))
        elif auth.style == "key-cookie":
            headers.append((b"cookie", f"{auth.name}={token}".encode()))
        elif auth.style != "key-query":
            headers.append((auth.name.encode(), token.encode()))
    for name in draw(st.lists(st.sampled_from([*HEADER_NAMES, "x-team"]), max_size=3)):
        value = draw(st.sampled_from([*VALUES, "blocked"])).encode()
        upper = draw(st.booleans()) and draw(st.booleans())
        for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
            headers.append((_name_variant(name, upper), value))
    if draw(st.booleans()):
        cookies = draw(st.lists(st.sampled_from(COOKIE_NAMES), max_size=2))
        jar = "; ".join(f"{c}={draw(st.sampled_from(VALUES[:3]))}" for c in cookies)
        if jar:
            headers.append((b"cookie", jar.encode()))
    query = []
    if auth.style == "key-query" and token is not None:
        query.append(f"key={token}")
    for name in draw(st.lists(st.sampled_from([*QUERY_NAMES, "%71"]), max_size=3)):
        query.append(f"{name}={draw(st.sampled_from(['1', '2']))}")
    tenant = draw(st.sampled_from(TENANTS))
    if tenant is not None:
        headers.append((b"x-tenant-id", tenant.encode()))
    return Ask(route, user, tenant, tuple(headers), "&".join(query).encode())


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[gen.AppSpec, list[Ask], str, bool]:
    spec = draw(app_specs())
    pool = draw(st.lists(asks(spec), min_size=1, max_size=6))
    script = draw(st.lists(st.sampled_from(pool), min_size=4, max_size=14))
    return spec, script, draw(st.sampled_from(["install", "outside"])), draw(st.booleans())


class Reply:
    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.x_cache = b""

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = dict(message.get("headers", ()))
            self.x_cache = headers.get(b"x-cache", b"")
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def call(app: Any, spec: gen.AppSpec, ask: Ask) -> Reply:
    path, host = gen.url_of(spec, ask.route)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": ask.query,
        "headers": [(b"host", host.encode()), *ask.headers],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    reply = Reply()

    sent = False

    async def receive() -> dict[str, Any]:  # the body once, then nothing
        nonlocal sent
        if sent:  # as a server does: nothing more until the client goes
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, receive, reply.send)
    return reply


async def play(spec: gen.AppSpec, script: list[Ask], how: str, secret: bool) -> int:
    options: dict[str, Any] = {"default_ttl": 60}
    if secret:
        options["secret_key"] = SECRET
    bare = gen.build(spec)
    app = gen.build(spec)
    if how == "install":
        cache = install(app, CacheSettings(**options))
        served: Any = app
    else:
        cache = TieredCache(CacheSettings(**options))
        served = TieredCacheMiddleware(app, cache=cache)
    hits = 0
    try:
        for ask in script:
            expected = await call(bare, spec, ask)
            got = await call(served, spec, ask)
            assert (got.status, got.body) == (expected.status, expected.body), (ask, got.x_cache)
            hits += got.x_cache == b"HIT"
    finally:
        await cache.close()
    return hits


APPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@APPS
@given(scenarios())
@example(
    # Shrunk on eb06c06: a host route's nested dependency reads a cookie; keyed by URL.
    (
        gen.AppSpec(
            (
                gen.RouteSpec("/r0", nested=(gen.Param("cookie", "theme"),), place="host"),
                gen.RouteSpec("/r1"),
            )
        ),
        [
            Ask(0, "alice", "acme", ((b"x-tenant-id", b"acme"),), b"page=2"),
            Ask(0, "alice", "acme", ((b"x-tenant-id", b"acme"),), b"page=2"),
            Ask(0, "alice", "acme", ((b"cookie", b"theme=a"), (b"x-tenant-id", b"acme")), b""),
            Ask(0, "alice", "acme", ((b"cookie", b"theme=a"), (b"x-tenant-id", b"acme")), b""),
        ],
        "install",
        False,
    )
)
@example(
    # A cookie declared as "Theme" and a client sending "theme": the app sees none.
    (
        gen.AppSpec((gen.RouteSpec("/r0", params=(gen.Param("cookie", "p0", alias="Theme"),)),)),
        [
            Ask(0, "anonymous", None, ((b"cookie", b"theme=a"),), b""),
            Ask(0, "anonymous", None, ((b"cookie", b"Theme=a"),), b""),
            Ask(0, "anonymous", None, ((b"cookie", b"theme=a"),), b""),
        ],
        "outside",
        True,
    )
)
@example(
    # A header read through validation_alias, and a list header sent twice.
    (
        gen.AppSpec(
            (
                gen.RouteSpec(
                    "/r0",
                    params=(
                        gen.Param("header", "p0", validation_alias="x-plan"),
                        gen.Param("header", "x_lang", as_list=True),
                    ),
                ),
            )
        ),
        [
            Ask(0, "anonymous", None, ((b"x-plan", b"a"), (b"x-lang", b"a")), b""),
            Ask(0, "anonymous", None, ((b"x-plan", b"b"), (b"x-lang", b"a")), b""),
            Ask(0, "anonymous", None, ((b"x-lang", b"a"), (b"x-lang", b"b")), b""),
            Ask(0, "anonymous", None, ((b"x-lang", b"a, b"),), b""),
        ],
        "install",
        True,
    )
)
@example(
    # Shrunk: a router-level guard reads X-Team; a request with the field twice.
    (
        gen.AppSpec((gen.RouteSpec("/r0", place="guarded-router"),)),
        [
            Ask(0, "anonymous", None, ((b"x-team", b"a"), (b"x-team", b"blocked")), b""),
            Ask(0, "anonymous", None, ((b"x-team", b"a"),), b""),
            Ask(0, "anonymous", None, ((b"x-team", b"a"), (b"x-team", b"blocked")), b""),
        ],
        "install",
        True,
    )
)
def test_generated_apps_answer_as_the_app_alone(
    scenario: tuple[gen.AppSpec, list[Ask], str, bool],
) -> None:
    spec, script, how, secret = scenario
    hits = asyncio.run(play(spec, script, how, secret))
    event(f"hits: {min(hits, 3)}{'+' if hits >= 3 else ''}")


def test_a_plain_generated_app_is_cached() -> None:
    """The property is checked on hits too: a visible app must produce them."""
    spec = gen.AppSpec(
        (
            gen.RouteSpec(
                "/r0",
                auth=gen.Auth("bearer"),
                params=(gen.Param("header", "x_lang"), gen.Param("cookie", "theme")),
                place="router",
            ),
        )
    )
    ask = Ask(0, "alice", "acme", ((b"authorization", b"Bearer alice-token"),), b"q=1")
    assert asyncio.run(play(spec, [ask, ask, ask], "install", True)) == 2
