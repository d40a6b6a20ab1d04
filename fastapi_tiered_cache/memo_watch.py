"""What the memo watches: which request headers go into a memo key (picked), which are
left out (skipped: standard headers that select nothing), which are screened for a
credential's shape, and which requests a memo may answer at all.

Kept apart from ``memo.py`` because it is knowledge about headers, not about the memo's
mappings and budget: every header the key, the identity, the tenant, the request checks
and the conditional logic may read must be watched, or two requests with the same memo
key could have different cache keys.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from .keys import COOKIE, HEADER, KEY_HEADERS, SYNTHETIC
from .policy import METHOD_OVERRIDE_HEADERS
from .request import RequestInfo
from .settings import CacheSettings, RouteRule

if TYPE_CHECKING:
    from .cache import TieredCache

__all__ = [
    "CONDITIONAL_NAMES",
    "FULL",
    "NOT_PLAIN",
    "PICK",
    "SCHEME_STARTS",
    "SCREEN",
    "SKIP",
    "SPACES",
    "header_of",
    "is_plain",
    "watched_names",
]

CONDITIONAL_NAMES = (
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
)
# Requests the memo leaves to the full path: validators and ranges change the answer.
NOT_PLAIN = ("if-none-match", "if-modified-since", "range", "if-range")

# What a credential-shaped value (``credentials.looks_like_credential``) starts with: the
# first three letters of a scheme in any case, or whitespace; else it holds "eyJ".
SCHEME_STARTS = frozenset(
    bytes(letters)
    for word in (b"bea", b"bas", b"dig", b"tok", b"jwt", b"api")
    for letters in itertools.product(*((c, c ^ 0x20) for c in word))
)
SPACES = frozenset(bytes([c]) for c in b" \t\n\r\x0b\x0c")
# What the memo does with a header: pick it into the key, skip it, screen its value for a
# credential's shape, or (a name it cannot read alike) leave the request to the full path.
PICK, SKIP, SCREEN, FULL = "pick", "skip", "screen", "full"


def watched_names(settings: CacheSettings) -> frozenset[bytes]:
    """The headers always watched, whatever routes and responses later add."""
    names = {
        "host",
        "cookie",
        "content-length",
        "transfer-encoding",
        "cache-control",
        "pragma",
        *KEY_HEADERS,
        *METHOD_OVERRIDE_HEADERS,
        *NOT_PLAIN,
        *(CONDITIONAL_NAMES),
        *settings.identity_headers,
        *settings.vary_on,
        *(name for rule in settings.rules for name in rule.vary),
    }
    if settings.tenant_header:
        names.add(settings.tenant_header)
    return frozenset(header_of(name).encode("latin-1") for name in names)


def header_of(name: str) -> str:
    """The header a key input reads: ``cookie:<name>`` is the Cookie header, a marker none
    (the Cookie header, always watched, stands in)."""
    if name.startswith((COOKIE, SYNTHETIC)):
        return "cookie"
    if name.startswith(HEADER):
        return name[len(HEADER) :].lower()
    return name.lower()


def is_plain(info: RequestInfo, rule: RouteRule | None, cache: TieredCache) -> bool:
    """Whether a request's hit can be replayed by the memo (see ``Memo``)."""
    headers = info.headers
    if any(name in headers for name in NOT_PLAIN):
        return False
    if cache.settings.honour_request_cache_control and "cache-control" in headers:
        return False
    return rule is None or not (rule.cache_control or rule.key_builder)
