"""``CachedResponse``: a stored response, and how it is replayed to a client.

An entry is immutable and holds everything needed to answer without the origin: the
status, the headers worth replaying (already filtered at store time), the body, and the
clock values from which ``Age`` and remaining freshness are computed on every hit
(RFC 9111 §4.2.3). Wall-clock time is used because entries are shared across processes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Iterable
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, TypeVar

from .keys import VaryValues

__all__ = ["NOT_STORED", "CachedResponse", "DataEntry", "VaryPointer", "make_etag"]

RawHeaders = tuple[tuple[bytes, bytes], ...]

# Headers never replayed from a stored entry: hop-by-hop fields, and fields that only
# describe this one exchange (RFC 9111 §3.1).
NOT_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"set-cookie",
        b"content-length",
        b"age",
        b"x-cache",
        b"cache-status",
    }
)


def make_etag(body: bytes) -> bytes:
    """A strong ETag derived from the body only: ``"<22 base64url chars>"``.

    A hash of the body alone, so every worker, and every restart, gives the same one
    (unlike ``hash()``-based ETags, which differ per process).
    """
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return b'"' + base64.urlsafe_b64encode(digest).rstrip(b"=") + b'"'


_Entry = TypeVar("_Entry", bound=type)


def direct_init(cls: _Entry) -> _Entry:
    """Give a frozen, slotted dataclass an ``__init__`` that sets its slots directly.

    The ``__init__`` a frozen dataclass gets sets each field through
    ``object.__setattr__``: a global, an attribute and a call per field, about 6 µs for an
    entry's 19 fields on the benchmark machine, and every L2 hit decodes an entry. This
    one has the same signature and defaults and runs ``__post_init__`` the same way, but
    calls each slot's own setter: less than half the cost. Frozen still holds: assignment
    from outside goes through the class's ``__setattr__``, which refuses it.
    """
    env: dict[str, Any] = {}
    params: list[str] = []
    lines: list[str] = []
    for item in fields(cls):
        if not item.init or item.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{item.name}: only plain fields with plain defaults")
        slot = next(k.__dict__[item.name] for k in cls.__mro__ if item.name in k.__dict__)
        env[f"_set_{item.name}"] = slot.__set__
        if item.default is MISSING:
            params.append(item.name)
        else:
            env[f"_default_{item.name}"] = item.default
            params.append(f"{item.name}=_default_{item.name}")
        lines.append(f"    _set_{item.name}(self, {item.name})")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(source, env)  # built from the class's own field names only
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses a direct assignment
    return cls


def _kept(
    raw_headers: Iterable[tuple[bytes, bytes]], hidden: Collection[bytes]
) -> list[tuple[bytes, bytes]]:
    """The headers worth storing, lower-cased: not hop-by-hop (including any the response
    names in ``Connection``, RFC 9110 §7.6.1), not per-exchange, not hidden."""
    pairs = [(name.lower(), value) for name, value in raw_headers]
    named = {
        part.strip().lower().encode("latin-1")
        for name, value in pairs
        if name == b"connection"
        for part in value.decode("latin-1").split(",")
        if part.strip()
    }
    return [
        (name, value)
        for name, value in pairs
        if name not in NOT_STORED and name not in named and name not in hidden
    ]


@direct_init
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

    @classmethod
    def from_response(
        cls,
        status: int,
        raw_headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        *,
        stored_at: float,
        fresh_for: float,
        initial_age: float = 0.0,
        revalidate: bool = False,
        etag: str = "",
        last_modified: float | None = None,
        vary: VaryValues = (),
        stale_for: float = 0.0,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        tags: tuple[str, ...] = (),
        route: str = "",
        hidden: Collection[bytes] = (),
    ) -> CachedResponse:
        """The entry for a response the origin just sent: its storable headers, an exact
        ``Content-Length`` and, when the origin gave none, a generated ``ETag``."""
        headers = _kept(raw_headers, hidden)
        headers.append((b"content-length", str(len(body)).encode()))
        if not etag:
            headers.append((b"etag", make_etag(body)))
        return cls(
            status=status,
            headers=tuple(headers),
            body=body,
            stored_at=stored_at,
            fresh_for=fresh_for,
            initial_age=initial_age,
            etag=etag,
            last_modified=last_modified,
            vary=vary,
            revalidate=revalidate,
            stale_for=stale_for,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            tags=tags,
            route=route,
        )

    def updated_headers(
        self, raw_headers: Iterable[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """The stored headers updated by a ``304``'s (RFC 9111 §4.3.4): its fields replace
        the stored ones of the same name, but the validator, which must not change."""
        updates = dict(_kept(((k, v) for k, v in raw_headers if k.lower() != b"etag"), ()))
        headers = [(name, updates.pop(name, value)) for name, value in self.headers]
        headers.extend(updates.items())
        return headers

    def freshened(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        stored_at: float,
        fresh_for: float,
        initial_age: float,
        revalidate: bool,
    ) -> CachedResponse:
        """This entry, revalidated at ``stored_at``: new headers and freshness, same body,
        validators, tags and route."""
        return replace(
            self,
            headers=tuple(headers),
            stored_at=stored_at,
            fresh_for=fresh_for,
            initial_age=initial_age,
            revalidate=revalidate,
            size=0,
            served_etag=b"",
        )

    def __post_init__(self) -> None:
        if not self.size:
            # Python object overhead measured with tracemalloc: ~850 bytes per entry (with
            # L1's lookup dict) and ~130 per header on top of the raw bytes (benchmarks/
            # "L1 memory per entry").
            weight = len(self.body) + 850
            for name, value in self.headers:
                weight += len(name) + len(value) + 130
            # The request values it varies on (checked on a hit) are the client's: up to
            # 32 KiB a field, so they count too, or they could outgrow the byte budget.
            for field_name, varied in self.vary:
                weight += len(field_name) + len(varied or "") + 130
            object.__setattr__(self, "size", weight)
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


@direct_init
@dataclass(frozen=True, slots=True)
class DataEntry(CachedResponse):
    """A value stored through the data API (``cache.set``, ``@cached``), not a response.

    It is a ``CachedResponse`` (status 200, no headers, the value as its ``body``) so that
    everything entries share works on it unchanged: freshness and stale windows, L1
    lifetimes, tag indexes, purges (soft ones too). It is encoded as its own kind, and
    only ever stored under data keys, which no request can produce.

    - ``body``: the value as msgpack (see ``values.py``); each reader decodes its own copy,
      so no caller can change what the next one gets.
    - ``compute_seconds``: how long the value took to compute (for early refresh).
    - ``shared``: for a type known to be immutable, ``(adapter, value)`` decoded once and
      handed to every reader (set on first use, never stored).
    """

    compute_seconds: float = 0.0
    shared: tuple[object, object] | None = field(default=None, compare=False, repr=False)

    def share(self, adapter: object, value: object) -> None:
        """Remember the decoded value of an immutable type for the next readers."""
        object.__setattr__(self, "shared", (adapter, value))


@dataclass(frozen=True, slots=True)
class VaryPointer:
    """Stored at a URL's primary key when its responses vary: the header names to add."""

    names: tuple[str, ...]
    size: int = field(default=128, compare=False)


Record = CachedResponse | VaryPointer
