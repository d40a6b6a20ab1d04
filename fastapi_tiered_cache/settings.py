"""Settings, read from ``TIERED_CACHE_*`` environment variables (and ``.env``).

``load_settings`` is how the cache reads them at start-up: unknown ``TIERED_CACHE_*``
variables (usually typos) and invalid values stop the application with one error message
that names the variable. The options themselves are ``CacheSettings`` (``cache_settings.py``);
per-route rules are ``RouteRule`` (``rules.py``). Plug-ins are dotted paths, as Django's
``KEY_FUNCTION``: ``TIERED_CACHE_IDENTITY_RESOLVER=myapp.auth:principal``. Code may pass
objects instead.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from .cache_settings import ENV_PREFIX as ENV_PREFIX
from .cache_settings import CacheSettings
from .exceptions import ConfigurationError
from .logs import brief_on_exit
from .rules import RouteRule

__all__ = ["CacheSettings", "RouteRule", "load_settings"]  # CacheSettings: cache_settings.py


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Return messages for ``TIERED_CACHE_*`` variables that match no setting (typos)."""
    fields = set(CacheSettings.model_fields)
    problems = []
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        field = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if field in fields:
            continue
        close = difflib.get_close_matches(field, fields, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
        problems.append(f"{name}: unknown setting{hint}")
    return sorted(problems)


def describe_errors(error: ValidationError) -> str:
    """A model's validation errors on one line: ``field: message; ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = [str(part) for part in item["loc"]]
        if not where:
            lines.append(item["msg"].removeprefix("Value error, "))
            continue
        detail = ".".join(where[1:])
        variable = ENV_PREFIX + where[0].upper() + (f"[{detail}]" if detail else "")
        lines.append(f"{variable}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> CacheSettings:
    """Build settings from the environment plus ``overrides``; raise one clear error if invalid."""
    problems = unknown_variables(os.environ if environ is None else environ)
    if problems:
        raise brief_on_exit(ConfigurationError("invalid cache settings: " + "; ".join(problems)))
    try:
        return CacheSettings(**overrides)
    except ValidationError as exc:
        error = ConfigurationError("invalid cache settings: " + _describe(exc))
    except SettingsError as exc:  # a value that is not even JSON, for a JSON-typed field
        field = re.search(r'field "([^"]+)"', str(exc))
        variable = ENV_PREFIX + field.group(1).upper() if field else "a TIERED_CACHE_ variable"
        error = ConfigurationError(f"invalid cache settings: {variable}: not valid JSON")
    raise brief_on_exit(error) from None
