"""``CacheSettings``: every option of the cache, its default, its description and the
checks that span several options.

Each field is the variable ``TIERED_CACHE_<NAME>``; the checks of a single value live
with its type (``fields.py``); reading the environment and reporting a bad one at
start-up is ``settings.py``. Every option has a safe default, so ``CacheSettings()`` with
an empty environment gives a working in-process (L1-only) cache.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .fields import (
    CacheableMethods,
    CacheableStatuses,
    CsvList,
    DottedPaths,
    FloatSeconds,
    HeaderNames,
    IdentityHeaderNames,
    KeyBuilderPlugin,
    LowercaseNames,
    Namespace,
    OptionalHeaderName,
    OrderedHeaderNames,
    Plugin,
    PublicUrl,
    Seconds,
)
from .rules import RouteRule

__all__ = ["ENV_PREFIX", "CacheSettings"]

ENV_PREFIX = "TIERED_CACHE_"


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
        " but in front of the middleware added before install() too, answering repeated"
        " requests before FastAPI runs while nothing else wraps it (fastest); `middleware`:"
        " exactly app.add_middleware.",
    )
    opt_in: bool = Field(
        default=False,
        description="Cache only what a rule or `@cache_policy` names; everything else bypasses"
        " (`detail=not-opted-in`). Off: every cacheable GET/HEAD is cached.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL for L2 (cluster/sentinel: comma-separated seeds or sentinels)."
        " Unset: L1 only (said once in the log at start-up).",
    )
    redis_connect_timeout: FloatSeconds = Field(
        default=1.0, gt=0, description="Seconds to open a connection."
    )
    redis_timeout: FloatSeconds = Field(
        default=0.05, gt=0, description="Seconds allowed per Redis operation on the request path."
    )
    namespace: Namespace = Field(
        default="ftc", description="Prefix of every Redis key (letters, digits, _.-)."
    )
    default_ttl: Seconds = Field(
        default=60, ge=0, description="Seconds a response is fresh when the origin says nothing."
    )
    l1_max_entries: int = Field(default=10_000, ge=0, description="L1 entry bound; 0 disables L1.")
    l1_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="The cache's memory budget in bytes: L1 entries get 7/8 of it, the memo of"
        " repeated requests 1/16, route lookups 1/32 (the rest is headroom for indexes).",
    )
    l1_max_ttl: FloatSeconds = Field(
        default=30.0,
        gt=0,
        description="Seconds an entry may live in L1; bounds cross-worker staleness.",
    )
    keep_stale: Seconds = Field(
        default=300,
        ge=0,
        description="Seconds a stale entry with validators is kept for revalidation.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Largest body stored, in bytes."
    )
    methods: CacheableMethods = Field(
        default=["GET", "HEAD"], description="Cacheable methods (HEAD reuses GET)."
    )
    statuses: CacheableStatuses = Field(default=[200], description="Cacheable response statuses.")
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
    identity_headers: IdentityHeaderNames = Field(
        default=["authorization", "proxy-authorization", "x-api-key", "x-auth-token"],
        description="Request headers that carry credentials.",
    )
    trusted_middleware: DottedPaths = Field(
        default=[],
        description="Middleware between the cache and the routes that read nothing the key"
        " does not hold, by class path (`myapp.middleware.Timing`) or, for a function"
        " middleware, the function's path (`myapp.main.add_process_time`). Under any other"
        " middleware the cache cannot prove two requests get the same answer, so requests"
        " bypass it (`detail=opaque-middleware`) unless a rule or @cache_policy covers them.",
    )
    credential_name_parts: LowercaseNames = Field(
        default=[
            "auth",
            "token",
            "session",
            "sid",
            "jwt",
            "key",
            "secret",
            "passw",
            "credential",
            "principal",
            "user",
            "email",
            "identity",
            "login",
            "logged",
        ],
        description="A request header or cookie whose name contains one of these (any case)"
        " carries a credential, as do values shaped like `Bearer ...` or a JWT anywhere.",
    )
    credential_name_ignore: LowercaseNames = Field(
        default=[
            "user-agent",
            "sec-fetch-user",
            "sec-websocket-key",
            "_hj*",
            "__stripe_sid",
            "_uetsid",
            "intercom-session-*",
        ],
        description="Header and cookie names (`*` wildcards, any case) that are not"
        " credentials although they contain a part above: browser and analytics names.",
    )
    identity_cookies: LowercaseNames = Field(
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
    tenant_header: OptionalHeaderName = Field(
        default="x-tenant-id", description="Header naming the tenant."
    )
    cache_private: bool = Field(
        default=False,
        description="Store `Cache-Control: private` responses in the requesting identity's"
        " own scope; off, they are never stored (RFC 9111 §5.2.2.7).",
    )
    identity_resolver: Plugin = Field(
        default=None, description="Dotted path of a callable(request) -> principal | None | BYPASS."
    )
    tenant_resolver: Plugin = Field(
        default=None, description="Dotted path of a callable(request) -> tenant | None | BYPASS."
    )
    key_builder: KeyBuilderPlugin = Field(
        default=None,
        description="Dotted path of a key builder, `callable(info, vary, *, secret) -> str`,"
        " computing every key's digest instead of the default (see Recipes); the cache still"
        " adds namespace, generations, tenant and identity scope.",
    )
    vary_on: HeaderNames = Field(default=[], description="Request headers always added to the key.")
    cache_status_name: str = Field(
        default="fastapi-tiered-cache", description="Cache name used in the Cache-Status header."
    )
    x_cache_header: bool = Field(default=True, description="Add the human-readable X-Cache header.")
    honour_request_cache_control: bool = Field(
        default=False,
        description="Obey clients' Cache-Control (no-cache, max-age, min-fresh, only-if-cached);"
        " off, so no client can make the origin recompute.",
    )
    targeted_headers: OrderedHeaderNames = Field(
        default=["tiered-cache-control"],
        description="Targeted Cache-Control fields (RFC 9213) obeyed instead of Cache-Control,"
        " the first valid one present wins. Add `cdn-cache-control` only when this cache is"
        " the CDN: by default it is left to the CDN in front and forwarded untouched.",
    )
    forward_targeted_headers: bool = Field(
        default=False,
        description="Pass the targeted fields this cache obeys on to the client as well.",
    )
    strict: bool | None = Field(
        default=None,
        description="RFC 9111 strict mode: store any final status with explicit freshness,"
        " heuristic freshness, RFC 9111 §3.5 for Authorization. Default: on when DEFAULT_TTL=0.",
    )
    heuristic_freshness: bool | None = Field(
        default=None,
        description="Without explicit freshness, reuse for 10% of the time since Last-Modified."
        " Default: on in strict mode.",
    )
    heuristic_max_ttl: Seconds = Field(
        default=86_400, ge=0, description="Longest heuristic lifetime, in seconds."
    )
    negative_ttl: Seconds = Field(
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
    bus_heartbeat: FloatSeconds = Field(
        default=1.0,
        gt=0,
        description="Most seconds between heartbeats on the invalidation bus (they are sent"
        " every COHERENCE_BOUND / 3 seconds when that is shorter).",
    )
    coherence_bound: FloatSeconds = Field(
        default=1.0,
        gt=0,
        description="Most seconds any worker may serve an L1 entry after another worker's"
        " write, even when its bus connection dies silently. Each worker costs Redis one"
        " heartbeat per COHERENCE_BOUND / 3 seconds.",
    )

    # Stampede protection and stale serving.
    coalesce: bool = Field(
        default=True,
        description="One origin call per key for concurrent misses, in-process and fleet-wide.",
    )
    lease_ttl: FloatSeconds = Field(
        default=3.0, gt=0, description="Seconds a fleet-wide compute lease lives unless renewed."
    )
    coalesce_wait: FloatSeconds = Field(
        default=5.0, ge=0, description="Most seconds a request waits for another's origin call."
    )
    stale_while_revalidate: Seconds = Field(
        default=0,
        ge=0,
        description="Default seconds a stale entry is served while one refresh runs.",
    )
    stale_if_error: Seconds = Field(
        default=0,
        ge=0,
        description="Default seconds a stale entry is served when the origin fails.",
    )
    origin_timeout: FloatSeconds | None = Field(
        default=None,
        gt=0,
        description="Seconds after which a stale entry is served instead (with SIE).",
    )
    hit_for_miss_ttl: FloatSeconds = Field(
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
    breaker_cooldown: FloatSeconds = Field(
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
    public_url: PublicUrl = Field(
        default=None,
        description="Scheme and host the app sees its clients use (`http://api.example.com`):"
        " relative URLs given to `purge --url` and the admin lookup resolve against it."
        " Unset: against every origin whose responses were stored.",
    )
    openapi: bool = Field(
        default=False,
        description="Describe the cache in the app's OpenAPI schema (`/docs`): an `x-cache`"
        " extension on every operation (verdict, TTL, key, shared or per user), and on cached"
        " ones the headers the cache adds and its `304` answer. Off by default: the schema is"
        " part of the app's contract (snapshot tests, generated clients), which installing a"
        " cache must not change.",
    )
    prometheus_enabled: bool = Field(
        default=False, description="Export metrics with prometheus-client (the `prometheus` extra)."
    )
    metrics_path: str | None = Field(
        default="/metrics",
        description="Where Prometheus metrics are served; unset to use your own.",
    )
    stats_interval: float = Field(
        default=5.0,
        ge=0,
        description="Seconds between the counters each process writes to Redis, summed by the"
        " fleet-wide `stats` (admin router, CLI); 0 turns them off.",
    )
    metrics_tenants: CsvList = Field(
        default=[],
        description="Tenants labelled by name in metrics; others are counted as `other`.",
    )

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
    def is_strict(self) -> bool:
        """Strict RFC 9111 mode: ``strict`` when set, else on exactly when ``default_ttl`` is 0."""
        return self.default_ttl == 0 if self.strict is None else self.strict

    @property
    def uses_heuristic(self) -> bool:
        """Whether heuristic freshness (RFC 9111 §4.2.2) applies: as set, else in strict mode."""
        return self.is_strict if self.heuristic_freshness is None else self.heuristic_freshness

    @property
    def caches_identities(self) -> bool:
        """Whether responses to credentialed requests are cached (in their identity's scope)."""
        if self.cache_authenticated is None:
            return self.secret_key is not None
        return self.cache_authenticated
