"""Per-route rules: path patterns compiled once, matched against the routed path.

Rules match the path the router routes on: percent-decoded (otherwise ``/%61dmin`` would
slip past a rule written for ``/admin``) and without the ``root_path`` (behind
``uvicorn --root-path /api``, ``/api/admin`` is ``/admin`` to the router and to rules).
The first matching rule wins, in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .fields import Plugin, Seconds, check_key_builder, header_names

__all__ = ["RouteRule", "RuleSet", "compile_pattern"]

_TOKEN = re.compile(r"\*\*|\*|\{[^{}/]+\}")


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` one segment, ``**`` any number of segments (zero too: ``/admin/**`` matches
    ``/admin``), ``{name}`` one non-empty segment, ``{name:path}`` the rest of the path."""
    parts, pos = [], 0
    for match in _TOKEN.finditer(pattern):
        literal = pattern[pos : match.start()]
        token = match.group()
        if token == "**" and literal.endswith("/"):
            parts.append(re.escape(literal[:-1]))
            parts.append("(?:/.*)?")  # the segment's slash and what follows, or nothing
            pos = match.end()
            continue
        parts.append(re.escape(literal))
        if token.endswith(":path}"):
            parts.append(f"(?P<{token[1:].split(':')[0]}>.*)")
        elif token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        else:
            parts.append(f"(?P<{token[1:-1]}>[^/]+)")
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    # ``$``, as Starlette's route patterns end: it also matches before a final newline,
    # so ``/admin%0A`` (routed to ``/admin``) is covered by the rules of ``/admin``.
    return re.compile("".join(parts) + "$", re.DOTALL)


class RouteRule(BaseModel):
    """A per-route policy: which requests it covers and how they are cached.

    ``path`` is a pattern over the request path as the router sees it: ``*`` matches
    one segment, ``**`` any number, ``{name}`` one segment; ``route`` names a route
    instead (its endpoint's name). Example from the environment::

        TIERED_CACHE_RULES='[{"path": "/products/*", "ttl": 300},
                             {"path": "/admin/**", "cache": false}]'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        default=None,
        description="Path pattern: `*` one segment, `**` any, `{name}` one segment.",
    )
    route: str | None = Field(
        default=None, description="Route name (the endpoint's name), instead of a path."
    )
    ttl: Seconds | None = Field(
        default=None, ge=0, description="Seconds (or `5m`, `1h`); overrides the default TTL."
    )
    cache: bool = Field(default=True, description="False turns caching off for matching requests.")
    statuses: list[int] | None = Field(
        default=None, description="Cacheable statuses for this route."
    )
    vary: list[str] = Field(default_factory=list, description="Request headers added to the key.")
    tags: list[str] = Field(
        default_factory=list,
        description="Tags of stored responses; `{param}` is filled from the path (`product:{id}`).",
    )
    invalidates: list[str] = Field(
        default_factory=list,
        description="Tags purged when a write (POST/PUT/PATCH/DELETE) to this route succeeds.",
    )
    invalidate_parents: bool | None = Field(
        default=None, description="Whether a write also purges its parent collection paths."
    )
    stale_while_revalidate: Seconds | None = Field(
        default=None, ge=0, description="Seconds a stale entry may be served while it is refreshed."
    )
    stale_if_error: Seconds | None = Field(
        default=None, ge=0, description="Seconds a stale entry may be served when the origin fails."
    )
    cache_control: str | None = Field(
        default=None, description="Cache-Control sent to clients for this route's cached responses."
    )
    query_allow: list[str] | None = Field(
        default=None,
        description="Only these query parameters join the key (`*` wildcards allowed); those"
        " the route declares or named like credentials always do.",
    )
    query_deny: list[str] = Field(
        default_factory=list,
        description="Query parameters left out of the key (`utm_*`), except those the route"
        " declares or named like credentials.",
    )
    cache_private: bool | None = Field(
        default=None,
        description="Store `Cache-Control: private` responses in the requesting identity's"
        " own scope (default: TIERED_CACHE_CACHE_PRIVATE).",
    )
    key_builder: Plugin = Field(
        default=None,
        description="Dotted path of a key builder (`myapp.keys:by_region`) computing this"
        " route's digest instead of TIERED_CACHE_KEY_BUILDER or the default; tenant and"
        " identity scope are still added.",
    )

    @model_validator(mode="after")
    def _one_selector(self) -> RouteRule:
        if (self.path is None) == (self.route is None):
            raise ValueError("a rule names exactly one of `path` and `route`")
        return self

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("a rule path must start with '/'")
        try:
            compile_pattern(value)
        except re.error as exc:
            raise ValueError(f"invalid path pattern: {exc}") from None
        return value

    @field_validator("vary")
    @classmethod
    def _vary_names(cls, value: list[str]) -> list[str]:
        return header_names(value)

    @field_validator("key_builder")
    @classmethod
    def _key_builder(cls, value: Callable[..., Any] | None) -> Callable[..., Any] | None:
        return None if value is None else check_key_builder(value)


class RuleSet:
    """Ordered rules with their compiled patterns; ``match`` returns the first that applies."""

    def __init__(self, rules: Sequence[RouteRule]) -> None:
        self.rules = tuple(rules)
        self._compiled = tuple(
            (compile_pattern(rule.path) if rule.path is not None else None, rule)
            for rule in self.rules
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, path: str, route_name: str = "") -> RouteRule | None:
        """The first rule whose path pattern matches ``path`` or that names ``route_name``."""
        for pattern, rule in self._compiled:
            if pattern is None:
                if route_name and rule.route == route_name:
                    return rule
            elif pattern.match(path):
                return rule
        return None
