"""The command line itself: every command, option and help text, in one place, with
errors that are one line (usage is one ``--help`` away)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .errors import USAGE

__all__ = ["DEFAULT_ADMIN_URL", "build_parser"]

DEFAULT_ADMIN_URL = "http://127.0.0.1:8000/_cache"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


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
        help="show the fleet's cache stats (through a running app's admin router, or --redis)",
        description="GET /stats from the admin router of a running app: the fleet's counters"
        " summed through Redis, then that process's. With --redis, read the fleet from Redis.",
    )
    stats.add_argument("--url", default=DEFAULT_ADMIN_URL, help=f"default {DEFAULT_ADMIN_URL}")
    stats.add_argument("--token", help="admin token (default: $TIERED_CACHE_ADMIN_TOKEN)")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    stats.add_argument(
        "--redis",
        action="store_true",
        help="read the fleet's counters from Redis directly (TIERED_CACHE_REDIS_URL), no app",
    )
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
    purge.add_argument(
        "--soft",
        action="store_true",
        help="with --path, --prefix or --tag: mark stale (revalidated before reuse), not delete",
    )
