"""The console script: run for real (``python -m fastapi_tiered_cache.cli`` in a subprocess)
where the process matters (the entry point, ``routes`` importing an app, ``stats`` against a
server, ``demo``), and ``main(argv)`` in this process for the rest (the same code, without
half a second of interpreter start-up per case)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, RouteRule, TieredCache
from fastapi_tiered_cache.cli import main, setting_sources
from fastapi_tiered_cache.explain import describe_route, iter_routes

from .cli_app import ADMIN_TOKEN
from .helpers import CATCH_ALL, SECRET, client_for
from .support.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "fastapi-tiered-cache"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only the given TIERED_CACHE_* variables, from ``cwd``."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIERED_CACHE_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastapi_tiered_cache.cli", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed run (never a traceback)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path  # no .env unless a test writes one


Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Invoke:
    """``main(argv)`` in this process (for the error matrices): (status, stdout, stderr)."""
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])  # `routes` adds the working directory

    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's own exits (--help, usage errors)
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err.strip()

    return invoke


# -- help and the entry point ----------------------------------------------------------


def test_help_lists_every_command(workdir: Path, cli: Invoke) -> None:
    result = run("--help", cwd=workdir)
    assert result.returncode == 0
    for command in ("config", "check", "routes", "stats", "purge", "demo"):
        assert command in result.stdout
    for command in ("config", "check", "routes", "stats", "purge"):
        status, out, _ = cli(command, "--help")
        assert status == 0
        assert out.startswith(f"usage: fastapi-tiered-cache {command}")


def test_console_script_is_installed_and_runs() -> None:
    assert SCRIPT.is_file()
    result = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: fastapi-tiered-cache")


def test_usage_errors_are_one_line_and_exit_2(workdir: Path, cli: Invoke) -> None:
    missing = run(cwd=workdir)
    assert missing.returncode == 2
    assert "required: COMMAND" in one_error_line(missing)
    status, _, err = cli("config", "--bogus")
    assert status == 2
    assert err == "fastapi-tiered-cache: error: unrecognized arguments: --bogus (see --help)"


def test_demo_forwards_its_arguments(workdir: Path) -> None:
    result = run("demo", "--help", cwd=workdir)
    assert result.returncode == 0
    assert "--port" in result.stdout
    # The usage names the program the user ran, not another one.
    assert result.stdout.startswith("usage: fastapi-tiered-cache demo ")


# -- config --------------------------------------------------------------------------


def config_rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        variable, source, value = line.split(None, 2)
        rows[variable] = (source, value)
    return rows


def test_config_shows_sources_and_masks_secrets(workdir: Path, cli: Invoke) -> None:
    (workdir / ".env").write_text("TIERED_CACHE_DEFAULT_TTL=42\nTIERED_CACHE_NAMESPACE=dotenv\n")
    env = {
        "TIERED_CACHE_NAMESPACE": "fromenv",
        "TIERED_CACHE_SECRET_KEY": "super-secret-key-0123456789",
        "TIERED_CACHE_REDIS_URL": "redis://:redis-password@127.0.0.1:6390/0",
        "TIERED_CACHE_ADMIN_TOKEN": "admin-token-value",
        "TIERED_CACHE_RULES": '[{"path": "/p/*", "ttl": 5}]',
    }
    status, out, err = cli("config", env=env)
    assert status == 0, err
    rows = config_rows(out)
    assert rows["TIERED_CACHE_NAMESPACE"] == ("env", "fromenv")  # env beats .env
    assert rows["TIERED_CACHE_DEFAULT_TTL"] == (".env", "42")
    assert rows["TIERED_CACHE_L1_MAX_TTL"] == ("default", "30.0")
    assert rows["TIERED_CACHE_SECRET_KEY"] == ("env", "**********")
    assert rows["TIERED_CACHE_REDIS_URL"] == ("env", "**********")
    assert rows["TIERED_CACHE_ADMIN_TOKEN"] == ("env", "**********")
    assert rows["TIERED_CACHE_IDENTITY_RESOLVER"] == ("default", "unset")
    assert json.loads(rows["TIERED_CACHE_RULES"][1])[0]["ttl"] == 5
    for secret in ("super-secret-key", "redis-password", "admin-token-value"):
        assert secret not in out + err


def test_setting_sources_count_nested_variables() -> None:
    sources = setting_sources({"tiered_cache_rules__0__path": "/x"}, None)
    assert sources["rules"] == "env"
    assert sources["namespace"] == "default"


def test_config_with_invalid_settings_exits_2(cli: Invoke) -> None:
    status, out, err = cli("config", env={"TIERED_CACHE_DEFAULT_TTL": "soon"})
    assert status == 2
    assert out == ""
    assert err.startswith("error: invalid cache settings: TIERED_CACHE_DEFAULT_TTL")


# -- check ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TIERED_CACHE_DEFAULT_TTL": "abc"}, "TIERED_CACHE_DEFAULT_TTL: 'abc' is not a duration"),
        ({"TIERED_CACHE_DEFAULT_TTLL": "5"}, "did you mean TIERED_CACHE_DEFAULT_TTL?"),
    ],
    ids=["bad-value", "unknown-variable"],
)
def test_check_rejects_bad_settings_with_exit_2(
    cli: Invoke, env: dict[str, str], expected: str
) -> None:
    status, out, err = cli("check", env=env)
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: invalid cache settings")
    assert expected in err
    assert out == ""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TIERED_CACHE_CACHE_AUTHENTICATED": "true"}, "TIERED_CACHE_SECRET_KEY is required"),
        ({"TIERED_CACHE_RULES": "not json"}, "TIERED_CACHE_RULES: not valid JSON"),
        ({"TIERED_CACHE_REDIS_URL": "nosuch://host"}, "error: "),
    ],
    ids=["inconsistent", "not-json", "bad-url-scheme"],
)
def test_check_reports_every_configuration_error_on_one_line(
    cli: Invoke, env: dict[str, str], expected: str
) -> None:
    status, out, err = cli("check", env=env)
    assert status == 2
    assert len(err.splitlines()) == 1
    assert expected in err
    assert out == ""  # one verdict: never an "ok" before the error


def test_check_without_redis_is_ok(cli: Invoke) -> None:
    status, out, err = cli("check")
    assert status == 0, err
    assert out.splitlines() == [
        "ok: the cache can start (L1)",
        "  settings: valid",
        "  L1: in process, 10000 entries, 67108864 B",
        "  L2: none (no TIERED_CACHE_REDIS_URL): L1 only",
    ]


def test_check_reports_unreachable_redis_with_exit_1(cli: Invoke) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    started = time.monotonic()
    status, out, err = cli(
        "check", env={"TIERED_CACHE_REDIS_URL": url, "TIERED_CACHE_REDIS_CONNECT_TIMEOUT": "2"}
    )
    assert status == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: Redis is unreachable")
    assert str(port) in err
    assert "hunter2" not in out + err
    assert time.monotonic() - started < 30


def test_check_pings_a_reachable_redis(cli: Invoke, redis_url: str) -> None:
    status, out, err = cli("check", env={"TIERED_CACHE_REDIS_URL": redis_url})
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "ok: the cache can start (L1 + L2)"
    assert lines[-1].startswith("  L2: Redis answered PING in ")
    assert err == ""


# -- routes ----------------------------------------------------------------------------


def routes_table(stdout: str) -> dict[tuple[str, str], list[str]]:
    lines = stdout.splitlines()
    header = lines[0].split()
    assert header == ["METHODS", "PATH", "NAME", "CACHED", "TTL", "RULE", "KEY"]
    starts = [lines[0].index(column) for column in header]
    table = {}
    for line in lines[1:]:
        if not line:
            break  # notes follow the table
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0], cells[1]] = cells[2:]
    return table


@pytest.mark.parametrize(
    ("options", "listed", "ruled"),
    [
        ({"default_ttl": 0}, "0s strict or heuristic", "300s strict"),
        ({"default_ttl": 0, "strict": False}, "0s", "300s"),
        ({"strict": True, "heuristic_freshness": False}, "60s strict", "300s strict"),
        ({}, "60s", "300s"),
    ],
)
def test_routes_shows_the_lifetime_the_middleware_gives(
    options: dict[str, Any], listed: str, ruled: str
) -> None:
    """The CLI reads the same strict-mode property and lifetime rule as the pipeline."""
    app = FastAPI()

    @app.get("/products")
    async def products() -> list[int]:
        return []

    @app.get("/products/{product_id}")
    async def product(product_id: int) -> int:
        return product_id

    rules = [RouteRule(path="/products/*", ttl=300)]
    cache = TieredCache(CacheSettings(secret_key=SECRET, rules=rules, **options))
    ttls = {
        path: describe_route(cache, methods, path, owner)[1]
        for methods, path, _, owner in iter_routes(app.routes)
    }
    assert ttls["/products"] == listed
    assert ttls["/products/{product_id}"] == ruled


def test_routes_lists_each_route_with_its_rule(workdir: Path) -> None:
    result = run("routes", "tests.cli_app:app", cwd=workdir)
    assert result.returncode == 0, result.stderr
    table = routes_table(result.stdout)
    assert table["GET", "/products"][:4] == ["list_products", "yes", "60s", "-"]
    name, cached, ttl, rule, key = table["GET", "/products/{product_id}"]
    assert (name, cached, ttl, rule) == ("get_product", "yes", "300s", "/products/*")
    assert "h:accept-language" in key
    assert "identity" in key
    assert table["POST", "/products"][:2] == ["create_product", "no (method)"]
    assert table["GET", "/account/me"][1:4] == ["no (rule)", "-", "/account/**"]
    assert table["WS", "/ws"][:2] == ["live", "no (websocket)"]
    assert table["GET", "/catalog/{section}"] == [
        "catalog",
        "yes",
        "120s",
        "@cache_policy",
        "path query[page] h:x-region tenant identity",
    ]
    # Starlette routes (and everything under a Mount) may read anything: not cached.
    assert table["GET,HEAD", "/ops/health"][:2] == ["health", "no (opaque-route)"]
    assert "a Mount of Router" in table["GET,HEAD", "/ops/health"][4]
    assert table["GET,HEAD", "/openapi.json"][1] == "no (opaque-route)"
    assert table["GET", "/debug"][1] == "no (request-object)"
    assert "debug takes the Request" in table["GET", "/debug"][4]
    assert table["GET", "/orders"][1:3] == ["per user", "60s"]
    assert table["GET", "/_cache/stats"][1:4] == ["no (rule)", "-", "/_cache/**"]
    # Audit sits between the cache and the routes, vouched for: no note.
    assert "cannot see what these middleware read" not in result.stdout


def test_routes_under_middleware_the_cache_cannot_see_through_are_not_cached(
    workdir: Path,
) -> None:
    result = run("routes", "tests.cli_app:gated", cwd=workdir)
    assert result.returncode == 0, result.stderr
    table = routes_table(result.stdout)
    assert table["GET", "/news"][1] == "no (opaque-middleware)"
    assert "under tests.cli_app.TeamGate" in table["GET", "/news"][4]
    assert table["GET", "/declared"][1:4] == ["yes", "30s", "@cache_policy"]
    assert "cannot see what these middleware read" in result.stdout
    assert "tests.cli_app.TeamGate" in result.stdout


def test_routes_says_when_the_cache_cannot_see_the_routes(workdir: Path) -> None:
    result = run("routes", "tests.cli_app:blind", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "The cache wraps Shim, whose routes it cannot see" in result.stdout
    assert "detail=opaque-app" in result.stdout
    assert "/static/**" in result.stdout


def test_routes_import_error_is_one_line(workdir: Path) -> None:
    result = run("routes", "tests.no_such_module:app", cwd=workdir)
    assert result.returncode == 1
    assert "cannot import 'tests.no_such_module'" in one_error_line(result)


@pytest.mark.parametrize(
    ("target", "status", "expected"),
    [
        ("tests.cli_app", 2, "must look like 'module:app'"),
        ("tests.cli_app:nothing", 1, "has no attribute 'nothing'"),
        ("tests.cli_app:ADMIN_TOKEN", 1, "not a Starlette or FastAPI application"),
    ],
    ids=["no-colon", "no-attribute", "not-an-app"],
)
def test_routes_errors_are_one_line(cli: Invoke, target: str, status: int, expected: str) -> None:
    code, _, err = cli("routes", target)
    assert code == status
    assert expected in err
    assert len(err.splitlines()) == 1


# -- stats -----------------------------------------------------------------------------


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[str]:
    """tests.cli_app:app served by uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIERED_CACHE_")}
    environ["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "uvicorn", "tests.cli_app:app", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        env=environ,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_stats_reads_a_running_admin_router(workdir: Path, served_app: str) -> None:
    for _ in range(2):
        with urllib.request.urlopen(f"{served_app}/products/1", timeout=5) as response:
            assert response.status == 200
    url = f"{served_app}/_cache"
    text = run("stats", "--url", url, "--token", ADMIN_TOKEN, cwd=workdir)
    token_env = {"TIERED_CACHE_ADMIN_TOKEN": ADMIN_TOKEN}
    raw = run("stats", "--url", url, "--json", env=token_env, cwd=workdir)
    assert text.returncode == 0, text.stderr
    assert "tiers: L1" in text.stdout
    assert "hit ratio: 50.0%, l1 50.0%" in text.stdout
    assert "L1: 1 entries" in text.stdout
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["counts"]["hit"] == {"l1": 1}


def test_stats_with_a_wrong_token_exits_1(workdir: Path, served_app: str) -> None:
    result = run("stats", "--url", f"{served_app}/_cache", "--token", "nope", cwd=workdir)
    assert result.returncode == 1
    assert "answered 401" in one_error_line(result)


def test_stats_without_an_admin_router_is_one_error_line(workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/_cache"  # nothing listens there
    result = run("stats", "--url", url, "--token", "t", cwd=workdir)
    assert result.returncode == 1
    assert "cannot reach the admin router" in one_error_line(result)


def test_stats_refuses_other_schemes(cli: Invoke) -> None:
    status, _, err = cli("stats", "--url", "file:///etc/passwd")
    assert status == 2
    assert "must be an http(s) URL" in err


# -- purge -----------------------------------------------------------------------------


async def tagged_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Responses tagged ``x`` under /x/, ``y`` elsewhere."""
    tag = b"x" if scope["path"].startswith("/x/") else b"y"
    headers = [(b"content-type", b"text/plain"), (b"surrogate-key", tag)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def purge_with_cli(
    redis_url: str, *args: str, invoke: Invoke | None = None, settle: str | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Store /x/1, /x/2 and /y through the middleware, purge with the CLI, then look again.

    The CLI runs as a subprocess, or with ``invoke`` in this process (in a worker thread).
    A purge by generation reaches a running worker over the bus: ``settle`` names a path
    to watch until that has happened.
    """
    client = aioredis.Redis.from_url(redis_url)
    # L2 only, on the real clocks: as a worker of the running app would be.
    settings = CacheSettings(
        secret_key=SECRET, l1_max_entries=0, redis_timeout=1.0, rules=[CATCH_ALL]
    )
    cache = TieredCache(settings, redis=client)
    paths = ["/x/1", "/x/2", "/y"]
    try:
        async with client_for(tagged_origin, cache) as http:
            for path in paths:
                await http.get(path)
            assert [(await http.get(p)).headers["x-cache"] for p in paths] == ["HIT"] * 3
            env = {"TIERED_CACHE_REDIS_URL": redis_url, "TIERED_CACHE_SECRET_KEY": SECRET}
            if invoke is None:
                result = await asyncio.to_thread(run, "purge", *args, env=env)
            else:
                status, out, err = await asyncio.to_thread(invoke, "purge", *args, env=env)
                result = subprocess.CompletedProcess(args, status, out, err)
            after = {}
            if settle is not None:
                after[settle] = await first_miss(http, settle)
            after.update({p: (await http.get(p)).headers["x-cache"] for p in paths if p != settle})
    finally:
        await cache.close()
        await client.aclose()
    return result, after


async def first_miss(http: httpx.AsyncClient, path: str, wait: float = 5.0) -> str:
    """Ask for ``path`` until it is a MISS (or ``wait`` seconds passed); the last X-Cache."""
    deadline = time.monotonic() + wait
    while True:
        served = (await http.get(path)).headers["x-cache"]
        if served == "MISS" or time.monotonic() > deadline:
            return str(served)
        await asyncio.sleep(0.02)


async def test_purge_tag_against_redis(redis_url: str) -> None:
    result, after = await purge_with_cli(redis_url, "--tag", "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: purged tags x: 2 entries"
    assert after == {"/x/1": "MISS", "/x/2": "MISS", "/y": "HIT"}


@pytest.mark.parametrize(
    ("args", "missed"),
    [
        (["--path", "/x/1"], ["/x/1"]),
        (["--prefix", "/x"], ["/x/1", "/x/2"]),
        (["--tag", "x", "--tag", "y"], ["/x/1", "/x/2", "/y"]),
        (["--url", "http://test/y"], ["/y"]),
        (["--all"], ["/x/1", "/x/2", "/y"]),
        (["--tenant", "acme"], []),
        (["--identity-principal", "alice"], []),
    ],
    ids=["path", "prefix", "two-tags", "url", "all", "other-tenant", "other-identity"],
)
async def test_purge_selectors_against_redis(
    redis_url: str, cli: Invoke, args: list[str], missed: list[str]
) -> None:
    settle = missed[0] if missed else None
    result, after = await purge_with_cli(redis_url, *args, invoke=cli, settle=settle)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: purged ")
    assert after == {p: "MISS" if p in missed else "HIT" for p in after}


@pytest.mark.parametrize(
    ("args", "missed", "said"),
    [
        (["--path", "/x/1", "--soft"], ["/x/1"], "ok: purged path /x/1 (soft): 1 entries"),
        (["--prefix", "/x", "--soft"], ["/x/1", "/x/2"], "ok: purged prefix /x (soft): 2 entries"),
        (["--tag", "y", "--soft"], ["/y"], "ok: purged tags y (soft): 1 entries"),
    ],
    ids=["path", "prefix", "tag"],
)
async def test_soft_purges_mark_stale_and_the_next_request_asks_the_origin(
    redis_url: str, cli: Invoke, args: list[str], missed: list[str], said: str
) -> None:
    """As ``invalidate_path/prefix/tags(soft=True)``: the entries stay, marked stale, and
    are revalidated with the origin before they are served again (never served as they
    were, never served stale while revalidating)."""
    result, after = await purge_with_cli(redis_url, *args, invoke=cli, settle=missed[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == said
    assert after == {p: "MISS" if p in missed else "HIT" for p in after}


async def validating_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A response with a validator; a request that presents it is answered 304."""
    asked = dict(scope["headers"]).get(b"if-none-match")
    headers = [(b"etag", b'"v1"'), (b"cache-control", b"max-age=60")]
    if asked == b'"v1"':
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers.append((b"content-type", b"text/plain"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"document"})


@pytest.mark.parametrize(
    ("soft", "then"), [(True, "REVALIDATED"), (False, "MISS")], ids=["soft", "hard"]
)
async def test_a_soft_purge_keeps_the_entry_for_revalidation(
    redis_url: str, cli: Invoke, soft: bool, then: str
) -> None:
    """Soft: the entry stays, marked stale, and the next request revalidates it with the
    origin (a 304, the body kept); hard: it is gone, and the next request fetches anew."""
    client = aioredis.Redis.from_url(redis_url)
    settings = CacheSettings(
        secret_key=SECRET, l1_max_entries=0, redis_timeout=1.0, rules=[CATCH_ALL], namespace="soft"
    )
    cache = TieredCache(settings, redis=client)
    env = {
        "TIERED_CACHE_REDIS_URL": redis_url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "TIERED_CACHE_NAMESPACE": "soft",
    }
    try:
        async with client_for(validating_origin, cache) as http:
            await http.get("/doc")
            assert (await http.get("/doc")).headers["x-cache"] == "HIT"
            args = ["purge", "--path", "/doc", *(["--soft"] if soft else [])]
            status, out, err = await asyncio.to_thread(cli, *args, env=env)
            after = await http.get("/doc")
    finally:
        await cache.close()
        await client.aclose()
    assert status == 0, err
    assert out.strip() == f"ok: purged path /doc{' (soft)' if soft else ''}: 1 entries"
    assert after.headers["x-cache"] == then
    assert (after.status_code, after.content) == (200, b"document")


async def test_a_soft_purge_that_matched_nothing_says_not_cached(
    redis_url: str, cli: Invoke
) -> None:
    result, after = await purge_with_cli(redis_url, "--path", "/z", "--soft", invoke=cli)
    assert result.returncode == 1
    assert result.stderr.strip() == "not cached: path /z (soft): nothing was purged"
    assert set(after.values()) == {"HIT"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "choose one of --path"),
        (["--path", "/a", "--tag", "x"], "not allowed with argument"),
        (["--url", "/a", "--soft"], "--soft goes with --path, --prefix or --tag"),
        (["--all", "--soft"], "--soft goes with --path, --prefix or --tag"),
        (["--tenant", "acme", "--soft"], "--soft goes with --path, --prefix or --tag"),
        (["--prefix", "/", "--soft"], "soft does not apply to the prefix /"),
        (["--path", "/a", "--header", "a: b"], "--method and --header go with --url"),
        (["--url", "/a", "--header", "nocolon"], "--header must be 'Name: value'"),
        (["--url", "/a", "--method", "G T"], "pattern"),
        (["--tag", ""], "at least 1 character"),
    ],
    ids=[
        "none",
        "two",
        "soft-url",
        "soft-all",
        "soft-tenant",
        "soft-root-prefix",
        "header-without-url",
        "bad-header",
        "bad-method",
        "empty-tag",
    ],
)
def test_purge_usage_errors_exit_2(cli: Invoke, args: list[str], expected: str) -> None:
    status, _, err = cli("purge", *args, env={"TIERED_CACHE_REDIS_URL": "redis://127.0.0.1:1"})
    assert status == 2
    assert expected in err
    assert len(err.splitlines()) == 1


def test_purge_needs_redis(cli: Invoke) -> None:
    status, _, err = cli("purge", "--all")
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "TIERED_CACHE_REDIS_URL is not set" in err


def test_purge_with_unreachable_redis_exits_1(cli: Invoke) -> None:
    env = {"TIERED_CACHE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    status, _, err = cli("purge", "--tag", "x", env=env)
    assert status == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: Redis is unreachable")


async def test_purge_of_a_relative_url_resolves_it_against_the_origins_stored(
    redis_url: str, cli: Invoke
) -> None:
    result, after = await purge_with_cli(redis_url, "--url", "/y", invoke=cli, settle="/y")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "ok: purged request GET /y: 1 entries (tried http://test/y, /y)"
    )
    assert after == {"/y": "MISS", "/x/1": "HIT", "/x/2": "HIT"}


@pytest.mark.parametrize(
    "args",
    [["--url", "/nothing"], ["--url", "http://test/nothing"], ["--path", "/z"], ["--tag", "z"]],
    ids=["relative-url", "absolute-url", "path", "tag"],
)
async def test_a_purge_that_matched_nothing_says_not_cached_and_exits_1(
    redis_url: str, cli: Invoke, args: list[str]
) -> None:
    result, after = await purge_with_cli(redis_url, *args, invoke=cli)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("not cached: ")
    assert len(result.stderr.splitlines()) == 1
    assert set(after.values()) == {"HIT"}


async def test_stats_from_redis_sum_the_fleet(redis_url: str, cli: Invoke) -> None:
    caches = [
        TieredCache(
            # A raw ASGI origin: its routes cannot be seen, so a rule opts it in.
            CacheSettings(secret_key=SECRET, redis_timeout=1.0, rules=[CATCH_ALL]),
            redis=aioredis.Redis.from_url(redis_url),
        )
        for _ in range(3)
    ]
    try:
        for cache in caches:
            async with client_for(tagged_origin, cache) as http:
                await http.get("/x/1")  # a miss in the first, an L2 hit in the others,
                await http.get("/x/1")  # then an L1 hit in each
                assert cache.reporter is not None
                await cache.reporter.report()
        env = {"TIERED_CACHE_REDIS_URL": redis_url}
        status, out, err = await asyncio.to_thread(cli, "stats", "--redis", "--json", env=env)
        assert status == 0, err
        fleet = json.loads(out)["fleet"]
        assert fleet["processes"] == 3
        assert fleet["counts"]["hit"] == {"l1": 3, "l2": 2}
        assert fleet["counts"]["miss"] == {"miss": 1}
        assert fleet["hit_ratio"] == round(5 / 6, 4)
        status, out, err = await asyncio.to_thread(cli, "stats", "--redis", env=env)
        assert status == 0, err
        assert out.startswith("fleet: 3 processes (summed through Redis)\n")
    finally:
        for cache in caches:
            await cache.close()
            await cache.store.l2.client.aclose()  # type: ignore[union-attr]
