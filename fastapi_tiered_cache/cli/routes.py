"""``routes APP``: import an app, as uvicorn does, and show what the cache does for each of
its routes (rule, TTL, key inputs), without connecting to Redis."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ..cache import TieredCache
from ..explain import explain
from .connect import read_settings
from .errors import USAGE, UserError
from .output import print_table

__all__ = ["command_routes", "installed_cache", "load_app"]


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


def command_routes(args: argparse.Namespace) -> int:
    target = load_app(args.app)
    cache = installed_cache(target)
    if cache is None:
        # Only the rules and settings are read: no Redis connection is made.
        cache = TieredCache(read_settings().model_copy(update={"redis_url": None}))
    explanation = explain(target, cache)
    if explanation is None:
        raise UserError(f"error: {args.app!r} is not a Starlette or FastAPI application")
    if explanation.blind:
        print(explanation.blind)
        if explanation.rules:
            print()
            print_table(("RULE", "CACHED"), explanation.rules)
        return 0
    print_table(("METHODS", "PATH", "NAME", "CACHED", "TTL", "RULE", "KEY"), explanation.rows)
    for note in explanation.notes:
        print()
        print(note)
    return 0
