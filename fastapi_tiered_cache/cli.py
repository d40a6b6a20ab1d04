"""The ``fastapi-tiered-cache`` console script.

Subcommands: ``config`` (effective settings, where each came from, secrets masked),
``check`` (validate the settings and reach Redis), ``routes APP`` (what the cache does for
each route of an app), ``stats`` (ask a running app's admin router), ``purge`` (invalidate
directly in Redis; running workers drop their L1 copies through the invalidation bus) and
``demo``. A user error is one line on stderr and a non-zero exit status: 2 for a usage or
configuration error, 1 when something could not be reached or done.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import SecretStr, ValidationError
from redis.exceptions import RedisError
from starlette.routing import Mount, WebSocketRoute

from .admin import (
    ManagedCache,
    PurgeRequest,
    describe_purge,
    format_ratio,
    run_purge,
    split_header,
)
from .cache import TieredCache
from .exceptions import ConfigurationError, StoreUnavailable
from .routes import RouteInputs, flatten_routes, inputs_of
from .settings import ENV_PREFIX, CacheSettings, RouteRule, load_settings

__all__ = ["main"]

MASK = "**********"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8000/_cache"
USAGE, FAILURE = 2, 1  # exit statuses
PURGE_SELECTORS = "--path, --prefix, --tag, --identity-principal, --all, --url"


class UserError(Exception):
    """A problem the user can fix, reported as one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = FAILURE) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- config ------------------------------------------------------------------------------


def setting_sources(environ: Mapping[str, str], env_file: Path | None) -> dict[str, str]:
    """Where each setting comes from: ``env``, ``.env`` or ``default``."""
    from dotenv import dotenv_values

    env = {name.upper() for name in environ}
    dotenv = (
        {name.upper() for name in dotenv_values(env_file)}
        if env_file is not None and env_file.is_file()
        else set()
    )

    def given(names: set[str], variable: str) -> bool:
        return variable in names or any(name.startswith(variable + "__") for name in names)

    sources = {}
    for field in CacheSettings.model_fields:
        variable = ENV_PREFIX + field.upper()
        sources[field] = (
            "env" if given(env, variable) else ".env" if given(dotenv, variable) else "default"
        )
    return sources


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def command_config(args: argparse.Namespace) -> int:
    settings = _settings()
    values = settings.model_dump(mode="json")
    env_file = settings.model_config.get("env_file")
    sources = setting_sources(os.environ, Path(str(env_file)) if env_file else None)
    rows = [
        (
            ENV_PREFIX + field.upper(),
            sources[field],
            MASK if isinstance(getattr(settings, field), SecretStr) else _shown(values[field]),
        )
        for field in CacheSettings.model_fields
    ]
    _print_table(("VARIABLE", "SOURCE", "VALUE"), rows)
    return 0


# -- check -------------------------------------------------------------------------------


def command_check(args: argparse.Namespace) -> int:
    settings = _settings()
    print("ok: settings are valid")
    if not settings.enabled:
        print("ok: the cache is disabled (TIERED_CACHE_ENABLED=false)")
    if settings.l1_max_entries > 0 and settings.l1_max_bytes > 0:
        print(f"ok: L1 in process: {settings.l1_max_entries} entries, {settings.l1_max_bytes} B")
    else:
        print("ok: L1 is off")
    if settings.redis_url is None:
        print("ok: no TIERED_CACHE_REDIS_URL: L1 only")
        return 0
    elapsed = asyncio.run(_ping_with(settings))
    print(f"ok: Redis answered PING in {elapsed * 1000:.1f} ms")
    return 0


async def _ping_with(settings: CacheSettings) -> float:
    cache = _cache(settings)
    try:
        return await ping(cache, settings.redis_connect_timeout)
    finally:
        await cache.close()


async def ping(cache: TieredCache, timeout: float) -> float:
    """PING the cache's L2 within ``timeout`` seconds; the seconds it took."""
    client = getattr(cache.store.l2, "client", None)
    if client is None:
        raise UserError("error: no Redis tier is configured", USAGE)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except asyncio.TimeoutError:
        raise UserError(f"error: Redis is unreachable: no answer within {timeout}s") from None
    except (RedisError, OSError) as exc:
        raise UserError(f"error: Redis is unreachable: {type(exc).__name__}: {exc}") from None
    return time.perf_counter() - started


# -- routes ------------------------------------------------------------------------------


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted), as uvicorn does."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"error: APP must look like 'module:app', not {target!r}", USAGE)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"error: cannot import {module_name!r}: {exc}") from None
    try:
        for part in attribute.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise UserError(f"error: {module_name!r} has no attribute {attribute!r}") from None
    return found


def installed_cache(app: Any) -> TieredCache | None:
    """The cache ``install(app)`` or ``add_middleware(TieredCacheMiddleware, cache=...)`` set."""
    cache = getattr(getattr(app, "state", None), "tiered_cache", None)
    if isinstance(cache, TieredCache):
        return cache
    for middleware in getattr(app, "user_middleware", ()):
        found = getattr(middleware, "kwargs", {}).get("cache")
        if isinstance(found, TieredCache):
            return found
    return None


def iter_routes(
    routes: Iterable[Any], prefix: str = "", owner: Any = None
) -> Iterator[tuple[str, str, str, Any]]:
    """``(methods, path template, name, owner)`` of every route, routers and mounts followed.

    ``owner`` is the route the middleware sees for it: itself, or the ``Mount`` it is under.
    """
    for route in flatten_routes(routes):
        original = getattr(route, "original_route", route)
        path = prefix + str(getattr(route, "path", "") or "")
        name = str(getattr(route, "name", "") or "")
        if isinstance(original, Mount) and original.routes:
            yield from iter_routes(original.routes, path, owner or route)
        elif isinstance(original, Mount):
            yield "*", path + "/...", name, owner or route
        elif isinstance(original, WebSocketRoute):
            yield "WS", path, name, owner or route
        else:
            methods = ",".join(sorted(getattr(route, "methods", None) or ["*"]))
            yield methods, path, name, owner or route


def describe_route(cache: TieredCache, methods: str, path: str, owner: Any) -> tuple[str, ...]:
    """``(cached, ttl, rule, key inputs)`` of a route, decided as the middleware decides."""
    settings = cache.settings
    inputs = inputs_of(owner)
    rule: RouteRule | None = cache.rules.match(path, inputs.name) if cache.rules else None
    origin = "-" if rule is None else (rule.path or f"route:{rule.route}")
    if rule is None and inputs.policy is not None:
        rule, origin = inputs.policy, "@cache_policy"
    if not settings.enabled:
        return "no (disabled)", "-", origin, "-"
    if methods == "WS":
        return "no (websocket)", "-", origin, "-"
    if not set(methods.split(",")) & cache.methods:
        return "no (method)", "-", origin, "-"
    if rule is not None and not rule.cache:
        return "no (rule)", "-", origin, "-"
    if inputs.raw_request and rule is None:
        return "no (reads Request)", "-", origin, "-"
    ttl = rule.ttl if rule is not None and rule.ttl is not None else settings.default_ttl
    return "yes", f"{ttl}s", origin, _key_inputs(cache, rule, inputs)


def _key_inputs(cache: TieredCache, rule: RouteRule | None, inputs: RouteInputs) -> str:
    parts = ["path"]
    if rule is not None and rule.query_allow is not None:
        parts.append(f"query[{','.join(rule.query_allow)}]")
    elif rule is not None and rule.query_deny:
        parts.append(f"query[-{',-'.join(rule.query_deny)}]")
    else:
        parts.append("query")
    for name in cache.vary_names(rule, inputs):
        parts.append(name if name.startswith("cookie:") else f"h:{name}")
    parts.append("tenant")
    if cache.settings.caches_identities:
        parts.append("identity")
    return " ".join(parts)


def command_routes(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    cache = installed_cache(app)
    if cache is None:
        # Only the rules and settings are read: no Redis connection is made.
        cache = TieredCache(_settings().model_copy(update={"redis_url": None}))
    routes = getattr(app, "routes", None)
    if routes is None:
        raise UserError(f"error: {args.app!r} is not a Starlette or FastAPI application")
    rows = [
        (methods, path, name, *describe_route(cache, methods, path, owner))
        for methods, path, name, owner in iter_routes(routes)
    ]
    _print_table(("METHODS", "PATH", "NAME", "CACHED", "TTL", "RULE", "KEY"), rows)
    return 0


# -- stats -------------------------------------------------------------------------------


def fetch_stats(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    """GET ``{url}/stats`` from a running admin router."""
    if not url.startswith(("http://", "https://")):
        raise UserError(f"error: --url must be an http(s) URL, not {url!r}", USAGE)
    request = urllib.request.Request(url.rstrip("/") + "/stats")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        hint = " (check --token or TIERED_CACHE_ADMIN_TOKEN)" if exc.code in (401, 403) else ""
        raise UserError(f"error: {url}/stats answered {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"error: cannot reach the admin router at {url}: {reason}") from None
    except ValueError:
        raise UserError(
            f"error: {url}/stats did not answer JSON; is it the admin router?"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"error: {url}/stats did not answer a JSON object")
    return data


def command_stats(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(ENV_PREFIX + "ADMIN_TOKEN")
    data = fetch_stats(args.url, token, args.timeout)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    tiers = data.get("tiers") or {}
    l1 = data.get("l1") or {}
    print(f"tiers: {' + '.join(t.upper() for t, on in tiers.items() if on) or 'none'}")
    print(f"hit ratio: {format_ratio(data.get('hit_ratio'))}", end="")
    by_tier = data.get("hit_ratio_by_tier") or {}
    print("".join(f", {tier} {format_ratio(value)}" for tier, value in sorted(by_tier.items())))
    if l1:
        print(f"L1: {l1.get('entries')} entries, {l1.get('bytes')} B")
    print(f"L2 faults: {data.get('l2_faults', 0)}; breaker: {data.get('breaker') or '-'}")
    for event, details in sorted((data.get("counts") or {}).items()):
        print(f"{event}: " + ", ".join(f"{k} {v}" for k, v in sorted(details.items())))
    routes = data.get("routes") or {}
    if routes:
        rows = [
            (route, format_ratio(c.get("hit_ratio")), str(c.get("hit", 0)), str(c.get("miss", 0)))
            for route, c in sorted(routes.items())
        ]
        _print_table(("ROUTE", "HIT RATIO", "HITS", "MISSES"), rows)
    return 0


# -- purge -------------------------------------------------------------------------------


def purge_request(args: argparse.Namespace) -> PurgeRequest:
    """The ``PurgeRequest`` the options describe (validated as the admin router does)."""
    selectors = (args.path, args.prefix, args.tag, args.identity_principal, args.url)
    if all(value is None for value in selectors) and not args.all and args.tenant is None:
        raise UserError(f"error: choose one of {PURGE_SELECTORS}, or --tenant alone", USAGE)
    if args.soft and not args.tag:
        raise UserError("error: --soft goes with --tag", USAGE)
    fields: dict[str, Any] = {"tenant": args.tenant, "soft": args.soft}
    if args.url is not None:
        headers = dict(_header(item) for item in args.header or ())
        fields["request"] = {"method": args.method, "url": args.url, "headers": headers}
    elif args.header or args.method != "GET":
        raise UserError("error: --method and --header go with --url", USAGE)
    fields.update(path=args.path, prefix=args.prefix, tags=args.tag, all=args.all)
    if args.identity_principal is not None:
        fields["identity"] = {"principal": args.identity_principal}
    try:
        return PurgeRequest.model_validate(fields)
    except ValidationError as exc:
        messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise UserError(f"error: {messages}", USAGE) from None


def _header(item: str) -> tuple[str, str]:
    pair = split_header(item)
    if pair is None:
        raise UserError(f"error: --header must be 'Name: value', not {item!r}", USAGE)
    return pair


async def _purge(settings: CacheSettings, purge: PurgeRequest) -> str:
    cache = _cache(settings)
    managed: ManagedCache = cache
    try:
        await ping(cache, settings.redis_connect_timeout)
        purged = await run_purge(managed, purge)
    except StoreUnavailable as exc:
        raise UserError(f"error: purge failed: {exc}") from None
    finally:
        await cache.close()
    what = describe_purge(purge, cache.secret)
    return f"ok: purged {what}" + ("" if purged is None else f": {purged} entries")


def command_purge(args: argparse.Namespace) -> int:
    purge = purge_request(args)
    settings = _settings()
    if settings.redis_url is None:
        raise UserError(
            "error: TIERED_CACHE_REDIS_URL is not set: the CLI purges the shared tier only",
            USAGE,
        )
    print(asyncio.run(_purge(settings, purge)))
    return 0


# -- demo and plumbing -------------------------------------------------------------------


def command_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(extra)


def _settings() -> CacheSettings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise UserError(f"error: {exc}", USAGE) from None


def _cache(settings: CacheSettings) -> TieredCache:
    try:
        return TieredCache(settings)
    except ValueError as exc:  # a ConfigurationError, or a Redis URL redis-py refuses
        raise UserError(f"error: {exc}", USAGE) from None


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastapi-tiered-cache",
        description="Inspect, check and operate fastapi-tiered-cache (TIERED_CACHE_* settings).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "config",
        help="show the effective settings and where each came from (secrets masked)",
        description="Show every setting, its value and its source: env, .env or default.",
    )
    commands.add_parser(
        "check",
        help="validate the settings and PING Redis (exit 2: bad settings, 1: unreachable)",
        description="Validate the settings, then PING Redis within the connect timeout.",
    )
    routes = commands.add_parser(
        "routes",
        help="list an app's routes with the cache rule, TTL and key inputs of each",
        description="Import APP and show what the cache does for each of its routes.",
    )
    routes.add_argument("app", metavar="APP", help="the application, as module:attribute")
    stats = commands.add_parser(
        "stats",
        help="show a running app's cache stats through its admin router",
        description="GET /stats from the admin router of a running app.",
    )
    stats.add_argument("--url", default=DEFAULT_ADMIN_URL, help=f"default {DEFAULT_ADMIN_URL}")
    stats.add_argument("--token", help="admin token (default: $TIERED_CACHE_ADMIN_TOKEN)")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    _purge_arguments(
        commands.add_parser(
            "purge",
            help="invalidate entries directly in Redis (workers drop L1 copies via the bus)",
            description="Purge entries from the shared tier. Choose one selector; --tenant "
            "alone purges that whole tenant, and narrows the other selectors to it.",
        )
    )
    commands.add_parser(
        "demo",
        help="run the demo app (options: --host, --port)",
        description="Run the demo app.",
        add_help=False,
    )
    return parser


def _purge_arguments(purge: argparse.ArgumentParser) -> None:
    group = purge.add_mutually_exclusive_group()
    group.add_argument("--path", help="every variant and identity stored for this path")
    group.add_argument("--prefix", help="this path and every path below it")
    group.add_argument("--tag", action="append", help="entries carrying this tag (repeatable)")
    group.add_argument("--identity-principal", metavar="PRINCIPAL", help="one identity's entries")
    group.add_argument("--all", action="store_true", help="everything (or all of --tenant)")
    group.add_argument("--url", help="the entry one request is served: GET of this URL")
    purge.add_argument("--method", default="GET", help="with --url (default GET)")
    purge.add_argument("--header", action="append", help="with --url: 'Name: value'")
    purge.add_argument("--tenant", help="the tenant to purge, or to narrow the selector to")
    purge.add_argument("--soft", action="store_true", help="with --tag: mark stale, not delete")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": command_config,
    "check": command_check,
    "routes": command_routes,
    "stats": command_stats,
    "purge": command_purge,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "demo":
            return command_demo(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
