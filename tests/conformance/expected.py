"""The cases that do not pass in strict mode, and why. Every other required and optional
case must pass; ``test_conformance`` fails when a case leaves or joins this table."""

from __future__ import annotations

_VARY = (
    "by design: order and Content-Language selection may change the app's answer, so "
    "reordered lists are never merged"
)
_PARTIAL = "a 206 is never stored: partial responses are not combined (RFC 9111 §3.4, optional)"

KNOWN: dict[str, tuple[str, str]] = {
    # Never stored, by design (security): the engine reports these as untested.
    "headers-store-Set-Cookie": ("setup", "a response that sets a cookie is never stored"),
    "headers-store-Content-Range": ("setup", _PARTIAL),
    "other-set-cookie": ("fail", "a response that sets a cookie is never stored"),
    # RFC 9110 §13.1.3: the stored Date is later than If-Modified-Since, so 200 is right.
    "conditional-lm-fresh-no-lm": ("fail", "the case expects 304 where RFC 9110 §13.1.3 says 200"),
    "vary-normalise-lang-order": ("fail", _VARY),
    "vary-normalise-lang-select": ("fail", _VARY),
    "vary-normalise-space": ("fail", "an unknown header may be read raw: never normalised"),
    "vary-normalise-combine": (
        "fail",
        "an unknown header may be read line by line (Starlette's headers[name] is the first"
        " line): two lines are never keyed as their comma-joined value",
    ),
    "partial-store-partial-reuse-partial": ("fail", _PARTIAL),
    "partial-store-partial-reuse-partial-byterange": ("fail", _PARTIAL),
    "partial-store-partial-reuse-partial-absent": ("fail", _PARTIAL),
    "partial-store-partial-reuse-partial-suffix": ("fail", _PARTIAL),
    "partial-store-partial-complete": ("fail", _PARTIAL),
}

# Not ported: they need what an in-process ASGI call cannot do, or target browsers.
NOT_PORTED = {
    "interim-102": "1xx responses cannot be relayed through ASGI",
    "interim-103": "1xx responses cannot be relayed through ASGI",
    "interim-no-header-reuse": "1xx responses cannot be relayed through ASGI",
    "interim-not-cached": "1xx responses cannot be relayed through ASGI",
    "other-age-delay": "needs a real delay inside the origin (response_pause)",
    "cc-resp-private-private": "browser caches only",
    "cc-resp-immutable-fresh": "browser caches only",
    "cc-resp-immutable-stale": "browser caches only",
    "freshness-max-age-s-maxage-private": "browser caches only",
    "freshness-max-age-s-maxage-private-multiple": "browser caches only",
}
