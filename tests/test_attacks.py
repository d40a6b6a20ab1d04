"""The attack corpus (issue 14): apps written the way real teams write them, attacked.

Each case is an app (built twice: one bare, one with the cache installed) and a script of
requests from several users, tenants and anonymous clients. Every answer of the cached app
must equal what the bare app answers to the very same request: a difference means the cache
served someone an answer meant for someone else (a leak) or planted a wrong one under
someone else's key (a poisoning). Endpoints that must never be cached answer with a call
counter, so a stored answer shows too. The outcome each case protects is in its table row.

Cases marked ``hits`` are styles the cache can see through: there, the cache must also
actually cache (it would be safe but useless to bypass everything).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import ASGIApp, Message

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware, install

from . import attack_apps as apps
from .helpers import SECRET

Headers = Sequence[tuple[str, str]]
ALICE_TOKEN, BOB_TOKEN = "alice-secret", "bob-secret"


@dataclass(frozen=True)
class Ask:
    """One request: raw header pairs (names as sent: case and repetition kept)."""

    who: str
    path: str = "/me"
    headers: Headers = ()
    query: str = ""
    host: str = "test"
    root_path: str = ""

    def scope(self) -> dict[str, Any]:
        raw = [(b"host", self.host.encode())]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.root_path + self.path,
            "raw_path": (self.root_path + self.path).encode(),
            "root_path": self.root_path,
            "query_string": self.query.encode(),
            "headers": raw,
            "server": ("test", 80),
            "client": ("127.0.0.1", 1234),
        }


@dataclass(frozen=True)
class Do:
    """An action between requests, on both apps (and the cache): ``act(app, cache)``."""

    act: Callable[[Any, TieredCache | None], Awaitable[None] | None]


Step = Ask | Do


@dataclass(frozen=True)
class Attack:
    id: str
    outcome: str
    build: Callable[[], Any]
    script: Sequence[Step]
    settings: dict[str, Any] = field(default_factory=dict)
    hits: bool = False  # the cache must cache something here (it can see through it)
    wrap: str = "install"  # install | outside | wrapper


class Reply:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.lower(): v for k, v in message.get("headers", ())}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


async def call(app: ASGIApp, ask: Ask) -> Reply:
    reply = Reply()

    sent = False

    async def receive() -> Message:  # the body once, then nothing
        nonlocal sent
        if sent:  # as a server does: nothing more until the client goes
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(ask.scope(), receive, reply.send)
    return reply


def cached(attack: Attack, secret: bool) -> tuple[Any, ASGIApp, TieredCache]:
    options: dict[str, Any] = {"default_ttl": 60, **attack.settings}
    if secret:
        options["secret_key"] = SECRET
    settings = CacheSettings(**options)
    app = attack.build()
    if attack.wrap == "install":
        return app, app, install(app, settings)
    cache = TieredCache(settings)
    target = app if attack.wrap == "outside" else apps.Wrapper(app)
    return app, TieredCacheMiddleware(target, cache=cache), cache


async def play(attack: Attack, secret: bool) -> int:
    bare = attack.build()
    app, served, cache = cached(attack, secret)
    hits = 0
    try:
        for step in attack.script:
            if isinstance(step, Do):
                for target, its_cache in ((bare, None), (app, cache)):
                    done = step.act(target, its_cache)
                    if done is not None:
                        await done
                continue
            expected = await call(bare, step)
            got = await call(served, step)
            where = f"{attack.outcome}: {step} got {got.body!r}, the app says {expected.body!r}"
            assert (got.status, got.body) == (expected.status, expected.body), where
            hits += got.headers.get(b"x-cache") == b"HIT"
    finally:
        await cache.close()
    return hits


def users(
    path: str,
    alice: Headers,
    bob: Headers,
    anon: Headers = (),
    **ask: Any,
) -> list[Step]:
    """Alice, again, Bob, again, anonymous, Alice, anonymous, Bob."""
    a = Ask("alice", path, alice, **ask)
    b = Ask("bob", path, bob, **ask)
    n = Ask("anonymous", path, anon, **ask)
    return [a, a, b, b, n, a, n, b]


def bearer(token: str) -> Headers:
    return [("authorization", f"Bearer {token}")]


def header(name: str, token: str) -> Headers:
    return [(name, token)]


def cookie(value: str) -> Headers:
    return [("cookie", value)]


LEAK = "neither Bob nor anonymous ever receives Alice's body"
POISON = "nobody is served an answer the app gives to another request"
NEVER = "a response that must not be stored is never served from the cache"
TENANT = "tenant B never receives tenant A's body"


async def new_acme_version(app: Any, cache: TieredCache | None) -> None:
    """Acme's data changes; the app purges the tenant, as the docs say to."""
    app.state.versions["acme"] = 2
    if cache is not None:
        await cache.invalidate_tenant("acme")


def overrides_later() -> list[Step]:
    a, b = (
        Ask("alice", "/me", header("x-who", ALICE_TOKEN)),
        Ask("bob", "/me", header("x-who", BOB_TOKEN)),
    )
    return [
        a,
        a,
        Do(lambda app, cache: apps.override_with_request(app)),
        a,
        b,
        a,
        Do(lambda app, cache: apps.clear_overrides(app)),
        a,
        b,
    ]


def overrides_constant() -> list[Step]:
    a = Ask("alice", "/me", header("x-user", ALICE_TOKEN))
    return [
        a,
        a,
        Do(lambda app, cache: apps.override_with_constant(app)),
        a,
        a,
        Do(lambda app, cache: apps.clear_overrides(app)),
        a,
    ]


ATTACKS = [
    # 1. Security schemes and dependencies the cache cannot see through.
    Attack(
        "oauth2-subclass-reading-a-cookie",
        LEAK,
        lambda: apps.oauth2_cookie("acme"),
        users("/me", cookie(f"acme={ALICE_TOKEN}"), cookie(f"acme={BOB_TOKEN}")),
    ),
    Attack(
        "oauth2-cookie-recipe-bearer-value",
        LEAK,
        lambda: apps.oauth2_cookie("acme"),
        users("/me", cookie(f'acme="Bearer {ALICE_TOKEN}"'), cookie(f'acme="Bearer {BOB_TOKEN}"')),
    ),
    Attack(
        "httpbearer-subclass-reading-x-acme-token",
        LEAK,
        lambda: apps.bearer_subclass("x-acme-token"),
        users("/me", header("x-acme-token", ALICE_TOKEN), header("x-acme-token", BOB_TOKEN)),
    ),
    Attack(
        "httpbearer-subclass-reading-a-plain-header",
        LEAK,
        lambda: apps.bearer_subclass("x-acme"),
        users("/me", header("x-acme", ALICE_TOKEN), header("x-acme", BOB_TOKEN)),
    ),
    Attack(
        "apikeyheader-subclass-declaring-another-header",
        LEAK,
        apps.api_key_subclass,
        users(
            "/me",
            [("x-api-key", "team"), ("x-acme-user", ALICE_TOKEN)],
            [("x-api-key", "team"), ("x-acme-user", BOB_TOKEN)],
            [("x-api-key", "team")],
        ),
    ),
    Attack(
        "callable-class-dependency-taking-request",
        LEAK,
        apps.class_dependency,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "nested-dependency-taking-httpconnection",
        LEAK,
        apps.nested_connection_dependency,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "router-level-guard-taking-request",
        LEAK,
        apps.router_guard,
        users("/team/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "app-level-dependency-taking-request",
        LEAK,
        apps.app_guard,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "dependency-override-reading-the-request",
        LEAK,
        apps.overridable,
        [
            Do(lambda app, cache: apps.override_with_request(app)),
            *users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
        ],
    ),
    Attack("dependency-override-set-after-requests", LEAK, apps.overridable, overrides_later()),
    Attack("dependency-override-then-cleared", POISON, apps.overridable, overrides_constant()),
    # 2. Routes the table cannot read, and apps the middleware cannot see into.
    Attack(
        "host-route",
        LEAK,
        apps.host_route,
        users(
            "/me",
            header("x-who", ALICE_TOKEN),
            header("x-who", BOB_TOKEN),
            host="api.example.com",
        ),
    ),
    Attack(
        "mounted-sub-app",
        LEAK,
        apps.mounted_app,
        users("/v2/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "custom-base-route-ahead",
        LEAK,
        apps.custom_route,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "plain-starlette-route",
        LEAK,
        apps.starlette_route,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "custom-apiroute-class",
        LEAK,
        apps.custom_route_class,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "outer-wrapper-between-cache-and-fastapi",
        LEAK,
        apps.header_app,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
        wrap="wrapper",
    ),
    Attack(
        "fastapi-wrapped-from-outside",
        LEAK,
        apps.header_app,
        users("/me", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
        wrap="outside",
        hits=True,
    ),
    # 3. Keys hold exactly what the app's parser reads.
    Attack(
        "cookie-name-case",
        POISON,
        apps.currency_cookie,
        [
            Ask("a", "/prices", cookie("CURRENCY=EUR")),
            Ask("b", "/prices", cookie("currency=EUR")),
            Ask("c", "/prices", cookie("currency=EUR")),
            Ask("d", "/prices", cookie("CURRENCY=EUR")),
        ],
        hits=True,
    ),
    Attack(
        "repeated-header-fields",
        POISON,
        apps.language_header,
        [
            Ask("two-fields", "/greeting", [("x-lang", "fr"), ("x-lang", "en")]),
            Ask("one-field", "/greeting", [("x-lang", "fr, en")]),
            Ask("one-field", "/greeting", [("x-lang", "fr, en")]),
            Ask("two-fields", "/greeting", [("x-lang", "fr"), ("x-lang", "en")]),
        ],
        hits=True,
    ),
    Attack(
        "whitespace-in-a-read-header",
        POISON,
        apps.language_header,
        [
            Ask("spaced", "/greeting", [("x-lang", "fr  CA")]),
            Ask("plain", "/greeting", [("x-lang", "fr CA")]),
            Ask("plain", "/greeting", [("x-lang", "fr CA")]),
        ],
        hits=True,
    ),
    Attack(
        "percent-encoded-query-name",
        POISON,
        apps.query_param,
        [
            Ask("first", "/search", query="q=1&%71=2"),
            Ask("second", "/search", query="%71=2&q=1"),
            Ask("first", "/search", query="q=1&%71=2"),
            Ask("reordered", "/search", query="x=0&q=1&%71=2"),
        ],
        hits=True,
    ),
    Attack(
        "cookie-validation-alias",
        POISON,
        apps.validation_aliases,
        [
            Ask("dark", "/cookie", cookie("ui_pref=dark")),
            Ask("light", "/cookie", cookie("ui_pref=light")),
            Ask("none", "/cookie"),
        ],
    ),
    Attack(
        "header-validation-alias",
        POISON,
        apps.validation_aliases,
        [
            Ask("gold", "/header", [("x-plan", "gold")]),
            Ask("free", "/header", [("x-plan", "free")]),
            Ask("none", "/header"),
        ],
    ),
    Attack(
        "header-model-allowing-extra",
        LEAK,
        apps.models_with_extra,
        users("/headers", header("x-who", ALICE_TOKEN), header("x-who", BOB_TOKEN)),
    ),
    Attack(
        "cookie-model-forbidding-extra",
        POISON,
        apps.models_with_extra,
        [
            Ask("plain", "/cookies", cookie("theme=dark")),
            Ask("extra", "/cookies", cookie("theme=dark; other=1")),
            Ask("plain", "/cookies", cookie("theme=dark")),
        ],
    ),
    # 4. Credentials the cache cannot see declared anywhere.
    Attack(
        "middleware-auth-token-header",
        LEAK,
        lambda: apps.middleware_auth("x-acme-token"),
        users("/me", header("x-acme-token", ALICE_TOKEN), header("x-acme-token", BOB_TOKEN)),
    ),
    Attack(
        "middleware-auth-bearer-value-in-a-plain-header",
        LEAK,
        lambda: apps.middleware_auth("x-acme"),
        users(
            "/me",
            header("x-acme", f"Bearer {ALICE_TOKEN}"),
            header("x-acme", f"Bearer {BOB_TOKEN}"),
        ),
    ),
    Attack(
        "middleware-auth-jwt-in-a-plain-cookie",
        LEAK,
        lambda: apps.middleware_auth("", cookie="acme"),
        users(
            "/me", cookie(f"acme={apps.jwt_for('alice')}"), cookie(f"acme={apps.jwt_for('bob')}")
        ),
    ),
    # 5. private responses.
    Attack(
        "private-response",
        NEVER,
        apps.private_me,
        users("/me", bearer(ALICE_TOKEN), bearer(BOB_TOKEN)),
    ),
    # 7. root_path: rules match what the router matches.
    Attack(
        "rule-behind-uvicorn-root-path",
        NEVER,
        apps.admin_app,
        [Ask("admin", "/admin/stats", root_path="/api")] * 3,
        settings={"rules": [{"path": "/admin/**", "cache": False}]},
    ),
    Attack(
        "rule-behind-fastapi-root-path",
        NEVER,
        lambda: apps.admin_app("/api"),
        [Ask("admin", "/api/admin/stats")] * 3 + [Ask("admin", "/admin/stats")] * 2,
        settings={"rules": [{"path": "/admin/**", "cache": False}]},
    ),
    # 9. Smaller ones.
    Attack(
        "admin-glob-matches-admin",
        NEVER,
        apps.admin_app,
        [Ask("admin", "/admin")] * 3,
        settings={"rules": [{"path": "/admin/**", "cache": False}]},
    ),
    Attack(
        "tenant-host-with-trailing-dot",
        TENANT,
        apps.tenant_pages,
        [
            Ask("acme", "/page", host="acme.example.com."),
            Ask("acme", "/page", host="acme.example.com."),
            Do(new_acme_version),
            Ask("acme", "/page", host="acme.example.com."),
            Ask("acme", "/page", host="acme.example.com"),
        ],
        settings={
            "tenant_resolver": "fastapi_tiered_cache.identity:tenant_from_subdomain",
            "rules": [{"path": "/page"}],
        },
        hits=True,
    ),
    # 8. Bounded parsing: no exception, the app's own answer.
    Attack(
        "oversized-requests",
        POISON,
        apps.public_page,
        [
            Ask("many-cookies", "/", cookie("; ".join(f"c{i}=v" for i in range(400)))),
            Ask("long-value", "/", [("x-long", "v" * 40_000)]),
            Ask("many-fields", "/", [(f"x-h{i}", "v") for i in range(300)]),
            Ask("long-tenant", "/", [("x-tenant-id", "t" * 5000)]),
            Ask("huge-number", "/", [("cookie", "n=" + "9" * 5000)]),
            Ask("plain", "/"),
            Ask("plain", "/"),
        ],
        hits=True,
    ),
    # Styles that work today, and must keep working (and caching).
    *[
        Attack(f"stock-{path[1:]}", LEAK, apps.stock_schemes, script, hits=True)
        for path, script in [
            ("/oauth2", users("/oauth2", bearer(ALICE_TOKEN), bearer(BOB_TOKEN))),
            (
                "/basic",
                users(
                    "/basic",
                    [("authorization", "Basic YWxpY2U6YWxpY2Utc2VjcmV0")],
                    [("authorization", "Basic Ym9iOmJvYi1zZWNyZXQ=")],
                ),
            ),
            (
                "/header-key",
                users(
                    "/header-key",
                    header("x-partner-key", ALICE_TOKEN),
                    header("x-partner-key", BOB_TOKEN),
                ),
            ),
            (
                "/cookie-key",
                users(
                    "/cookie-key",
                    cookie(f"partner_id={ALICE_TOKEN}"),
                    cookie(f"partner_id={BOB_TOKEN}"),
                ),
            ),
        ]
    ],
    Attack(
        "stock-query-key-per-user",
        LEAK,
        apps.stock_schemes,
        [
            Ask("alice", "/query-key", query=f"partner={ALICE_TOKEN}"),
            Ask("alice", "/query-key", query=f"partner={ALICE_TOKEN}"),
            Ask("bob", "/query-key", query=f"partner={BOB_TOKEN}"),
            Ask("anonymous", "/query-key"),
        ],
        hits=True,
    ),
    Attack(
        "request-state-from-middleware",
        LEAK,
        apps.request_state,
        users("/me", header("x-session-token", ALICE_TOKEN), header("x-session-token", BOB_TOKEN)),
    ),
    Attack(
        "jwt-read-from-request",
        LEAK,
        apps.jwt_from_request,
        users("/me", bearer(apps.jwt_for("alice")), bearer(apps.jwt_for("bob"))),
    ),
]


@pytest.mark.parametrize("secret", [True, False], ids=["secret", "no-secret"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack(attack: Attack, secret: bool) -> None:
    hits = asyncio.run(play(attack, secret))
    if attack.hits and secret:
        assert hits > 0, f"{attack.id}: the cache can see through this app, yet never hit"


def test_every_case_has_a_distinct_id() -> None:
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)


BROWSER_COOKIES = "; ".join(
    [
        "_ga=GA1.1.1234567890.1700000000",
        "_gid=GA1.1.987654321.1700000000",
        "_hjSessionUser_123=eyJpZCI6IjEyMyIsImNyZWF0ZWQiOjE3MDAwMDAwMDB9",
        "_hjSession_123=eyJpZCI6IjQ1NiIsImMiOjE3MDAwMDAwMDB9",
        "OptanonConsent=isGpcEnabled=0&datestamp=Mon+Jan+01+2024&groups=C0001%3A1%2CC0002%3A0",
        "CookieConsent={stamp:%27abc+def==%27%2Cnecessary:true%2Cver:1}",
        "cookieyes-consent=consentid:YWJjZGVm,consent:yes,action:yes",
        "euconsent-v2=CPxyzABCPxyzABAAAENCZCAAAAAAAAAAAAAAAAAAAA",
        "__stripe_mid=3f8a1c2e-1111-2222-3333-444455556666",
        "__stripe_sid=9b7c6d5e-7777-8888-9999-000011112222",
        "_uetsid=0123456789abcdef0123456789abcdef",
        "amp_abc123=eyJkZXZpY2VJZCI6ImFiYyIsInNlc3Npb25JZCI6MTcwMH0",
        "_fbp=fb.1.1700000000000.123456789",
    ]
)


def browser_headers(n: int) -> list[tuple[str, str]]:
    """What a browser sends for a page, with the per-request noise proxies and tracers add."""
    return [
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("cache-control", "max-age=0"),
        ("dnt", "1"),
        ("priority", "u=0, i"),
        ("referer", "https://www.example.com/"),
        ("sec-ch-ua", '"Chromium";v="128", "Not;A=Brand";v="24"'),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"macOS"'),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-user", "?1"),
        ("upgrade-insecure-requests", "1"),
        ("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/128.0 Safari/537"),
        ("x-request-id", f"{n:08x}-{n * 7919:04x}-4bad-beef-{n * 104729:012x}"),
        ("traceparent", f"00-{n:032x}-{n * 31:016x}-01"),
        ("tracestate", f"congo=t{n}"),
        ("x-amzn-trace-id", f"Root=1-{n:08x}-{n:024x}"),
        ("x-forwarded-for", f"203.0.113.{n % 250}"),
        ("cookie", BROWSER_COOKIES),
    ]


@pytest.mark.parametrize("secret", [True, False], ids=["secret", "no-secret"])
def test_browser_requests_still_share_a_public_page(secret: bool) -> None:
    """No false positives: browser, tracing and analytics headers and cookies (random per
    request or per visitor, but no credentials) must not split or bypass a public page."""
    attack = Attack(
        "browser",
        POISON,
        apps.public_page,
        [Ask(f"n{n}", "/", browser_headers(n)) for n in range(8)],
    )
    assert asyncio.run(play(attack, secret)) == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-acme-token", "abc"),
        ("x-forwarded-user", "alice"),
        ("x-goog-authenticated-user-email", "alice@example.com"),
        ("x-custom", "Bearer abc"),
        ("x-custom", "  basic YWxpY2U6cHc="),
        ("x-custom", apps.jwt_for("alice")),
        ("cookie", "sessionid=abc"),
        ("cookie", "XSRF-TOKEN=abc"),
        ("cookie", "wordpress_logged_in_0123=alice"),
        ("cookie", f"prefs={apps.jwt_for('alice')}"),
    ],
)
def test_credential_like_inputs_never_share_with_anonymous(name: str, value: str) -> None:
    """The other direction: anything shaped or named like a credential is never anonymous
    (its own scope with a secret key, a bypass without one)."""
    for secret in (True, False):
        attack = Attack(
            "credential",
            LEAK,
            apps.public_page,
            [Ask("anonymous", "/"), Ask("anonymous", "/"), Ask("credential", "/", [(name, value)])],
        )
        replies = asyncio.run(replies_of(attack, secret))
        assert [r.headers[b"x-cache"] for r in replies[:2]] == [b"MISS", b"HIT"]
        assert replies[2].headers[b"x-cache"] == (b"MISS" if secret else b"BYPASS")


async def replies_of(attack: Attack, secret: bool) -> list[Reply]:
    _, served, cache = cached(attack, secret)
    try:
        return [await call(served, ask) for ask in attack.script if isinstance(ask, Ask)]
    finally:
        await cache.close()
