"""``CachedResponse``: a stored response, and how it is replayed to a client.

An entry is immutable and holds everything needed to answer without the origin: the
status, the headers worth replaying (already filtered at store time), the body, and the
clock values from which ``Age`` and remaining freshness are computed on every hit
(RFC 9111 §4.2.3). Wall-clock time is used because entries are shared across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .keys import VaryValues

__all__ = ["CachedResponse", "VaryPointer"]

RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored response.

    - ``headers``: replayable headers, including ``content-length`` and ``etag``.
    - ``stored_at``: Unix time the response was received (RFC 9111 ``response_time``).
    - ``initial_age``: seconds old it already was then (``corrected_initial_age``).
    - ``fresh_for``: freshness lifetime in seconds.
    - ``etag`` / ``last_modified``: the origin's own validators ("" / None when it sent none).
    - ``vary``: the request header values it was selected by.
    - ``revalidate``: reuse only after revalidation (``no-cache``).
    - ``stale_for``: seconds it is kept past freshness (for revalidation and stale serving).
    - ``stale_while_revalidate`` / ``stale_if_error``: the origin's RFC 5861 windows, seconds.
    - ``tags``: surrogate keys it can be purged by; ``route``: its route template (a label).
    """

    status: int
    headers: RawHeaders
    body: bytes
    stored_at: float
    fresh_for: float
    initial_age: float = 0.0
    etag: str = ""
    last_modified: float | None = None
    vary: VaryValues = ()
    revalidate: bool = False
    tags: tuple[str, ...] = ()
    stale_for: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    route: str = ""
    size: int = field(default=0, compare=False)
    served_etag: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.size:
            # Python object overhead measured with tracemalloc: ~850 bytes per entry (with
            # L1's lookup dict) and ~130 per header on top of the raw bytes (benchmarks/
            # "L1 memory per entry").
            weight = len(self.body) + sum(len(k) + len(v) + 130 for k, v in self.headers)
            object.__setattr__(self, "size", weight + 850)
        if not self.served_etag:
            for name, value in self.headers:
                if name == b"etag":
                    object.__setattr__(self, "served_etag", value)
                    break

    @property
    def can_revalidate(self) -> bool:
        """Whether the origin gave a validator it can check (our own ETag means nothing to it)."""
        return bool(self.etag) or self.last_modified is not None

    def age(self, now: float) -> float:
        """Current age in seconds (never negative, even if clocks disagree)."""
        return max(0.0, self.initial_age + now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds; zero or less means stale."""
        return self.fresh_for - self.age(now)

    def remaining_life(self, now: float) -> float:
        """Seconds until the entry must leave every tier."""
        return self.fresh_for + self.stale_for - self.age(now)

    def is_fresh(self, now: float) -> bool:
        return not self.revalidate and self.ttl(now) > 0

    def matches(self, vary: VaryValues) -> bool:
        """Whether a request with these header values may be served this entry (RFC 9111 §4.1)."""
        return self.vary == vary


@dataclass(frozen=True, slots=True)
class VaryPointer:
    """Stored at a URL's primary key when its responses vary: the header names to add."""

    names: tuple[str, ...]
    size: int = field(default=128, compare=False)


Record = CachedResponse | VaryPointer
