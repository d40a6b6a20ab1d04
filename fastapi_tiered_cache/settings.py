"""Settings, read from ``TIERED_CACHE_*`` environment variables (and ``.env``).

Every option has a safe default, so ``CacheSettings()`` with an empty environment gives a
working in-process (L1-only) cache. Plug-ins are dotted paths, as Django's ``KEY_FUNCTION``:
``TIERED_CACHE_IDENTITY_RESOLVER=myapp.auth:principal``. Code may pass objects instead.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ImportString,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from .exceptions import ConfigurationError

__all__ = ["CacheSettings", "RouteRule", "load_settings"]

ENV_PREFIX = "TIERED_CACHE_"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")


def split_csv(value: Any) -> Any:
    """Accept ``a,b,c`` or a JSON list from the environment; pass other values through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _header_names(values: list[str]) -> list[str]:
    names = [value.strip().lower() for value in values]
    for name in names:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
    return sorted(set(names))


CsvList = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
CsvInts = Annotated[list[int], NoDecode, BeforeValidator(split_csv)]
Plugin = ImportString[Callable[..., Any]] | None


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
    ttl: int | None = Field(default=None, ge=0, description="Seconds; overrides the default TTL.")
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
    stale_while_revalidate: int | None = Field(
        default=None, ge=0, description="Seconds a stale entry may be served while it is refreshed."
    )
    stale_if_error: int | None = Field(
        default=None, ge=0, description="Seconds a stale entry may be served when the origin fails."
    )
    cache_control: str | None = Field(
        default=None, description="Cache-Control sent to clients for this route's cached responses."
    )
    query_allow: list[str] | None = Field(
        default=None,
        description="Only these query parameters join the key (`*` wildcards allowed).",
    )
    query_deny: list[str] = Field(
        default_factory=list, description="Query parameters left out of the key (`utm_*`)."
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
        from .rules import compile_pattern  # rules imports this module

        try:
            compile_pattern(value)
        except re.error as exc:
            raise ValueError(f"invalid path pattern: {exc}") from None
        return value

    @field_validator("vary")
    @classmethod
    def _vary_names(cls, value: list[str]) -> list[str]:
        return _header_names(value)


class CacheSettings(BaseSettings):
    """All options of the cache; each field is the variable ``TIERED_CACHE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    enabled: bool = Field(
        default=True, description="Master switch; false passes every request through."
    )
    placement: Literal["outermost", "middleware"] = Field(
        default="outermost",
        description="Where install() puts the cache: `outermost` where app.add_middleware would,"
        " but in front of FastAPI's own middleware too, answering repeated requests before"
        " FastAPI runs when no middleware was added after install() (fastest); `middleware`:"
        " exactly app.add_middleware.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL for L2 (cluster/sentinel: comma-separated seeds or sentinels)."
        " Unset: L1 only (said once in the log at start-up).",
    )
    redis_connect_timeout: float = Field(
        default=1.0, gt=0, description="Seconds to open a connection."
    )
    redis_timeout: float = Field(
        default=0.05, gt=0, description="Seconds allowed per Redis operation on the request path."
    )
    namespace: str = Field(
        default="ftc", description="Prefix of every Redis key (letters, digits, _.-)."
    )
    default_ttl: int = Field(
        default=60, ge=0, description="Seconds a response is fresh when the origin says nothing."
    )
    l1_max_entries: int = Field(default=10_000, ge=0, description="L1 entry bound; 0 disables L1.")
    l1_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="L1 size bound in bytes.")
    l1_max_ttl: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an entry may live in L1; bounds cross-worker staleness.",
    )
    keep_stale: int = Field(
        default=300,
        ge=0,
        description="Seconds a stale entry with validators is kept for revalidation.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Largest body stored, in bytes."
    )
    methods: CsvList = Field(
        default=["GET", "HEAD"], description="Cacheable methods (HEAD reuses GET)."
    )
    statuses: CsvInts = Field(default=[200], description="Cacheable response statuses.")
    rules: list[RouteRule] = Field(default_factory=list, description="Per-route rules (JSON list).")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key of the keyed hashes; required to cache authenticated responses.",
    )
    cache_authenticated: bool | None = Field(
        default=None,
        description="Cache responses to requests with credentials, scoped per identity. "
        "Default: on when SECRET_KEY is set.",
    )
    identity_headers: CsvList = Field(
        default=["authorization", "proxy-authorization", "x-api-key", "x-auth-token"],
        description="Request headers that carry credentials.",
    )
    identity_cookies: CsvList = Field(
        default=[
            "session",
            "sessionid",
            "session_id",
            "sid",
            "connect.sid",
            "phpsessid",
            "jsessionid",
            "access_token",
            "auth_token",
            "token",
            "jwt",
            "remember_token",
        ],
        description="Cookies that carry credentials (names compared case-insensitively).",
    )
    tenant_header: str | None = Field(
        default="x-tenant-id", description="Header naming the tenant."
    )
    identity_resolver: Plugin = Field(
        default=None, description="Dotted path of a callable(request) -> principal | None | BYPASS."
    )
    tenant_resolver: Plugin = Field(
        default=None, description="Dotted path of a callable(request) -> tenant | None | BYPASS."
    )
    key_builder: Plugin = Field(
        default=None, description="Dotted path of a KeyBuilder replacing the default."
    )
    vary_on: CsvList = Field(default=[], description="Request headers always added to the key.")
    cache_status_name: str = Field(
        default="fastapi-tiered-cache", description="Cache name used in the Cache-Status header."
    )
    x_cache_header: bool = Field(default=True, description="Add the human-readable X-Cache header.")
    honour_request_cache_control: bool = Field(
        default=False,
        description="Obey clients' Cache-Control (no-cache, max-age, min-fresh, only-if-cached);"
        " off, so no client can make the origin recompute.",
    )
    targeted_headers: CsvList = Field(
        default=["cdn-cache-control"],
        description="Targeted Cache-Control fields (RFC 9213) obeyed instead of Cache-Control,"
        " first present wins; put your own name first.",
    )
    forward_targeted_headers: bool = Field(
        default=False, description="Pass the targeted Cache-Control fields on to the client."
    )
    heuristic_freshness: bool = Field(
        default=False,
        description="Without explicit freshness, reuse for 10% of the time since Last-Modified.",
    )
    negative_ttl: int = Field(
        default=0, ge=0, description="Seconds 404 and 410 responses are cached; 0 never."
    )

    # Invalidation and coherence.
    invalidate_on_write: bool = Field(
        default=True, description="A successful POST/PUT/PATCH/DELETE purges the paths it changed."
    )
    invalidate_parents: bool = Field(
        default=True,
        description="Writes also purge their parent collection (`/heroes/2` -> `/heroes`).",
    )
    surrogate_key_headers: CsvList = Field(
        default=["surrogate-key", "cache-tag"],
        description="Response headers whose values tag the stored response.",
    )
    forward_surrogate_keys: bool = Field(
        default=False, description="Pass the surrogate-key headers on to the client."
    )
    bus_heartbeat: float = Field(
        default=1.0, gt=0, description="Seconds between heartbeats on the invalidation bus."
    )

    # Stampede protection and stale serving.
    coalesce: bool = Field(
        default=True,
        description="One origin call per key for concurrent misses, in-process and fleet-wide.",
    )
    lease_ttl: float = Field(
        default=3.0, gt=0, description="Seconds a fleet-wide compute lease lives unless renewed."
    )
    coalesce_wait: float = Field(
        default=5.0, ge=0, description="Most seconds a request waits for another's origin call."
    )
    stale_while_revalidate: int = Field(
        default=0,
        ge=0,
        description="Default seconds a stale entry is served while one refresh runs.",
    )
    stale_if_error: int = Field(
        default=0,
        ge=0,
        description="Default seconds a stale entry is served when the origin fails.",
    )
    origin_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which a stale entry is served instead (with SIE).",
    )
    hit_for_miss_ttl: float = Field(
        default=5.0, ge=0, description="Seconds an uncacheable key skips coalescing."
    )
    early_refresh: float = Field(
        default=0.0,
        ge=0,
        description="XFetch beta for probabilistic refresh before expiry; 0 is off.",
    )
    max_background_refreshes: int = Field(
        default=16, ge=1, description="Most background refreshes in flight per process."
    )

    # Resilience.
    breaker_threshold: int = Field(
        default=5, ge=1, description="Consecutive Redis failures that open the circuit breaker."
    )
    breaker_cooldown: float = Field(
        default=5.0, gt=0, description="Seconds the breaker stays open before probing Redis again."
    )
    redis_max_connections: int = Field(
        default=100, ge=1, description="Most connections in the Redis pool of each process."
    )
    l1_tenant_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Largest share of L1 (entries and bytes) one named tenant may hold.",
    )

    # Scale out.
    redis_mode: Literal["standalone", "cluster", "sentinel"] = Field(
        default="standalone", description="standalone, cluster (URL lists seed nodes) or sentinel."
    )
    sentinel_service: str | None = Field(
        default=None, description="Name of the master monitored by the sentinels (sentinel mode)."
    )

    # Operations.
    admin_enabled: bool = Field(
        default=False, description="Mount the admin router (needs ADMIN_TOKEN)."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token that protects the admin router."
    )
    admin_path: str = Field(default="/_cache", description="Path prefix of the admin router.")
    prometheus_enabled: bool = Field(
        default=False, description="Export metrics with prometheus-client (the `prometheus` extra)."
    )
    metrics_path: str | None = Field(
        default="/metrics",
        description="Where Prometheus metrics are served; unset to use your own.",
    )
    metrics_tenants: CsvList = Field(
        default=[],
        description="Tenants labelled by name in metrics; others are counted as `other`.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError("use 1-32 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        methods = sorted({m.strip().upper() for m in value})
        unsafe = set(methods) - {"GET", "HEAD"}
        if unsafe:
            raise ValueError(f"only GET and HEAD can be cached, not {', '.join(sorted(unsafe))}")
        return methods

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if status == 206 or not 200 <= status <= 599:
                raise ValueError(f"{status} is not a cacheable status")
        return sorted(set(value))

    @field_validator("targeted_headers")
    @classmethod
    def _ordered_names(cls, value: list[str]) -> list[str]:
        checked = _header_names(value)  # validates; precedence keeps the given order
        return list(
            dict.fromkeys(
                name.strip().lower()
                for name in value
                if name.strip() in checked or name.strip().lower() in checked
            )
        )

    @field_validator("identity_headers", "vary_on")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _header_names(value)

    @field_validator("identity_cookies")
    @classmethod
    def _cookies(cls, value: list[str]) -> list[str]:
        return sorted({name.strip().lower() for name in value if name.strip()})

    @field_validator("tenant_header")
    @classmethod
    def _tenant_header(cls, value: str | None) -> str | None:
        return _header_names([value])[0] if value else None

    @model_validator(mode="after")
    def _consistent(self) -> CacheSettings:
        if self.redis_mode != "standalone" and self.redis_url is None:
            raise ValueError(f"TIERED_CACHE_REDIS_URL is required in {self.redis_mode} mode")
        if self.redis_mode == "sentinel" and not self.sentinel_service:
            raise ValueError("TIERED_CACHE_SENTINEL_SERVICE is required in sentinel mode")
        if self.admin_enabled and self.admin_token is None:
            raise ValueError(
                "TIERED_CACHE_ADMIN_TOKEN is required when the admin router is enabled"
            )
        return self

    @model_validator(mode="after")
    def _secret_when_caching_identities(self) -> CacheSettings:
        if self.cache_authenticated and self.secret_key is None:
            raise ValueError(
                "TIERED_CACHE_SECRET_KEY is required when TIERED_CACHE_CACHE_AUTHENTICATED is true"
            )
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("TIERED_CACHE_SECRET_KEY must be at least 16 characters")
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("TIERED_CACHE_ADMIN_TOKEN must be at least 16 characters")
        return self

    @property
    def caches_identities(self) -> bool:
        """Whether responses to credentialed requests are cached (in their identity's scope)."""
        if self.cache_authenticated is None:
            return self.secret_key is not None
        return self.cache_authenticated


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


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = [str(part) for part in item["loc"]]
        if not where:
            lines.append(item["msg"].removeprefix("Value error, "))
            continue
        detail = ".".join(where[1:])
        variable = ENV_PREFIX + where[0].upper() + (f"[{detail}]" if detail else "")
        lines.append(f"{variable}: {item['msg']}")
    return "; ".join(lines)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> CacheSettings:
    """Build settings from the environment plus ``overrides``; raise one clear error if invalid."""
    problems = unknown_variables(os.environ if environ is None else environ)
    if problems:
        raise ConfigurationError("invalid cache settings: " + "; ".join(problems))
    try:
        return CacheSettings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError("invalid cache settings: " + _describe(exc)) from None
    except SettingsError as exc:  # a value that is not even JSON, for a JSON-typed field
        field = re.search(r'field "([^"]+)"', str(exc))
        variable = ENV_PREFIX + field.group(1).upper() if field else "a TIERED_CACHE_ variable"
        raise ConfigurationError(f"invalid cache settings: {variable}: not valid JSON") from None
