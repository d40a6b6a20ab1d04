"""``stats``: the fleet's counters, asked of a running app's admin router over HTTP, or
with ``--redis`` summed from what every process writes to Redis (no app needed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

from ..exceptions import StoreUnavailable
from ..fleet import read_fleet
from ..settings import ENV_PREFIX, CacheSettings
from .connect import cache_for, ping, read_settings
from .errors import USAGE, UserError
from .output import print_counts

__all__ = ["command_stats", "fetch_stats"]


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
    if args.redis:
        settings = read_settings()
        if settings.redis_url is None:
            raise UserError("error: --redis needs TIERED_CACHE_REDIS_URL", USAGE)
        data: dict[str, Any] = {"fleet": asyncio.run(_fleet(settings))}
    else:
        token = args.token or os.environ.get(ENV_PREFIX + "ADMIN_TOKEN")
        data = fetch_stats(args.url, token, args.timeout)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    fleet = data.get("fleet")
    if isinstance(fleet, dict):
        print(f"fleet: {fleet.get('processes', 0)} processes (summed through Redis)")
        print_counts(fleet, "  ")
    elif "fleet" in data:
        print("fleet: unknown (the app could not read Redis)")
    if "tiers" not in data:
        return 0
    if "fleet" in data:
        print("this process:")
    tiers = data.get("tiers") or {}
    print(f"tiers: {' + '.join(t.upper() for t, on in tiers.items() if on) or 'none'}")
    print(f"L2 faults: {data.get('l2_faults', 0)}; breaker: {data.get('breaker') or '-'}")
    print_counts(data, "")
    return 0


async def _fleet(settings: CacheSettings) -> dict[str, Any]:
    """Every process's counters, summed, read from Redis directly (no app needed)."""
    if settings.stats_interval <= 0:
        raise UserError("error: the processes do not report (TIERED_CACHE_STATS_INTERVAL=0)")
    cache = cache_for(settings)
    try:
        await ping(cache, settings.redis_connect_timeout)
        client = getattr(cache.store.l2, "client", None)
        run = cache.store.run_unguarded
        return await read_fleet(client, settings.namespace, run, settings.stats_interval)
    except StoreUnavailable as exc:
        raise UserError(f"error: cannot read the fleet's stats: {exc}") from None
    finally:
        await cache.close()
