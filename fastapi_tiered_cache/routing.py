"""What the cache does for a request's route: its rule, what it reads, and its key.

The *route* and *key* phases of the pipeline (the *identify* phase is
``identity.Identifier``): which rule governs a request (environment rules win over
``@cache_policy``), what the route that will answer it reads (``visibility``, ``routes``),
which request parts therefore join the key, and the key itself,
``{namespace}:g{generations}:{tenant}:{scope}:{digest}``. A key builder plug-in computes
only the digest, so none can drop the tenant or the identity scope from a key.

Policy only: nothing here touches a store or reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .credentials import CredentialRules
from .custom_keys import KeyedRequest, digest_with
from .identity import Identity, keyed_hash
from .keys import KeyBuilder, VaryValues, filter_query
from .request import RequestInfo
from .routes import BLIND, NOT_FOUND, RouteInputs, under_middleware
from .rules import RuleSet
from .settings import RouteRule
from .visibility import Visibility

__all__ = ["Routing"]

_MAX_VARY_SETS = 4096  # distinct (rule, route) Vary combinations remembered


class Routing:
    """The rules, route tables and key format of one cache.

    - ``rules``: the environment's rules; ``visibility``: the route tables of the apps seen.
    - ``credentials``: credential names (never filtered out of a key's query).
    - ``key_builder``: computes a request's digest; ``secret``: the key of the hashes.
    - ``namespace``, ``vary_on``, ``cache_private``: from the settings.
    """

    def __init__(
        self,
        rules: RuleSet,
        visibility: Visibility,
        credentials: CredentialRules,
        key_builder: KeyBuilder,
        *,
        secret: bytes,
        namespace: str,
        vary_on: Sequence[str] = (),
        cache_private: bool = False,
    ) -> None:
        self.rules = rules
        self.visibility = visibility
        self.credentials = credentials
        self.key_builder = key_builder
        self.secret = secret
        self.namespace = namespace
        self.vary_on = tuple(vary_on)
        self.cache_private = cache_private
        self._vary_names: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}

    def route_inputs(self, info: RequestInfo, wrapped: Any = None) -> RouteInputs:
        """What the route that will answer the request reads (see ``visibility.py``).

        ``wrapped`` is the app the middleware wraps; without one (a URL purged or looked up
        from code), the app most recently seen.
        """
        if wrapped is None:
            table, hidden = self.visibility.last, ""
        else:
            sight = self.visibility.sight(info.scope, wrapped)
            table, hidden = sight.table, sight.hidden
        if table is None:
            return BLIND
        return under_middleware(table.find(info), hidden)

    def policy_for(
        self, info: RequestInfo, app: Any = None
    ) -> tuple[RouteRule | None, RouteInputs]:
        """The rule governing a request (environment rules win over ``@cache_policy``),
        and what its route reads."""
        inputs = self.route_inputs(info, app)
        rule = self.rules.match(info.path, inputs.name) if self.rules else None
        return (rule if rule is not None else inputs.policy), inputs

    def vary_names(
        self, rule: RouteRule | None, inputs: RouteInputs = NOT_FOUND
    ) -> tuple[str, ...]:
        """Request parts always in the key: ``vary_on``, the rule's, and what the route reads."""
        extra = tuple(rule.vary) if rule is not None else ()
        memo = (extra, inputs.vary)
        names = self._vary_names.get(memo)
        if names is None:
            names = tuple(sorted({*self.vary_on, *extra, *inputs.vary}))
            if len(self._vary_names) >= _MAX_VARY_SETS:  # override markers make new ones
                self._vary_names.clear()
            self._vary_names[memo] = names
        return names

    def private_allowed(self, rule: RouteRule | None) -> bool:
        """Whether ``Cache-Control: private`` responses may be stored in their identity's own
        scope (RFC 9111 §5.2.2.7 forbids a shared cache to; off by default)."""
        if rule is not None and rule.cache_private is not None:
            return rule.cache_private
        return self.cache_private

    def keyed_request(
        self, info: RequestInfo, rule: RouteRule | None, inputs: RouteInputs = NOT_FOUND
    ) -> RequestInfo:
        """The request as its key sees it: the rule's query allow/deny-list applied, never
        to a parameter the route declares or one named like a credential, and the rule's
        key builder attached (``KeyedRequest``: every key of this request uses it)."""
        if rule is not None and rule.key_builder is not None:
            info = KeyedRequest.of(info, rule.key_builder)
        if rule is None or (rule.query_allow is None and not rule.query_deny):
            return info
        if inputs.query_all:
            return info
        declared = frozenset(inputs.query)
        guessed = self.credentials.guessed

        def keep(name: str) -> bool:
            return name in declared or guessed(name.lower())

        return replace(
            info, query=filter_query(info.query, rule.query_allow, rule.query_deny, keep)
        )

    def key_for(
        self, info: RequestInfo, identity: Identity, vary: VaryValues, generation: str | None
    ) -> str:
        """The storage key of a request in a scope, with the given Vary values.

        ``generation`` None (counters unknown, Redis unreachable) gives a key that is only
        ever used in this process's L1.
        """
        builder = self.key_builder
        if isinstance(info, KeyedRequest) and info.key_builder is not None:
            builder = info.key_builder  # the rule's, for this route
        digest = digest_with(builder, info, vary, self.secret)
        if len(digest) > 64 or not digest.isalnum():  # a plug-in's digest, kept bounded
            digest = keyed_hash(self.secret, "key", digest, size=20)
        gen = generation or "gx"
        return f"{self.namespace}:{gen}:{identity.tenant}:{identity.scope}:{digest}"
