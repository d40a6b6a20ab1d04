"""``purge``: invalidate directly in Redis, through the same ``purge`` module the admin
router uses (options validated as its JSON body is); running workers drop their L1
copies when the invalidation bus tells them."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pydantic import ValidationError

from ..exceptions import StoreUnavailable
from ..purge import ManagedCache, PurgeRequest, describe_purge, run_purge, split_header
from ..settings import CacheSettings
from .connect import cache_for, ping, read_settings
from .errors import USAGE, UserError

__all__ = ["PURGE_SELECTORS", "command_purge", "purge_request"]

PURGE_SELECTORS = "--path, --prefix, --tag, --identity-principal, --all, --url"


def purge_request(args: argparse.Namespace) -> PurgeRequest:
    """The ``PurgeRequest`` the options describe (validated as the admin router does)."""
    selectors = (args.path, args.prefix, args.tag, args.identity_principal, args.url)
    if all(value is None for value in selectors) and not args.all and args.tenant is None:
        raise UserError(f"error: choose one of {PURGE_SELECTORS}, or --tenant alone", USAGE)
    if args.soft and not (args.tag or args.path is not None or args.prefix is not None):
        raise UserError("error: --soft goes with --path, --prefix or --tag", USAGE)
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
    """Run ``purge``; what to print, or ``UserError`` when it failed or matched nothing."""
    cache = cache_for(settings)
    managed: ManagedCache = cache
    try:
        await ping(cache, settings.redis_connect_timeout)
        outcome = await run_purge(managed, purge)
    except StoreUnavailable as exc:
        raise UserError(f"error: purge failed: {exc}") from None
    finally:
        await cache.close()
    what = describe_purge(purge, cache.secret)
    tried = f" (tried {', '.join(outcome.urls)})" if outcome.urls else ""
    if not outcome.matched:
        raise UserError(f"not cached: {what}: nothing was purged{tried}")
    count = "" if outcome.purged is None else f": {outcome.purged} entries"
    return f"ok: purged {what}{count}{tried}"


def command_purge(args: argparse.Namespace) -> int:
    purge = purge_request(args)
    settings = read_settings()
    if settings.redis_url is None:
        raise UserError(
            "error: TIERED_CACHE_REDIS_URL is not set: the CLI purges the shared tier only",
            USAGE,
        )
    print(asyncio.run(_purge(settings, purge)))
    return 0
