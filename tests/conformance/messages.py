"""HTTP pieces shared by the runner and the checks: header fix-ups (dates relative to the
server's clock, full locations) and a response as the client sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

Case = Mapping[str, Any]
Request = Mapping[str, Any]
NO_BODY_STATUSES = frozenset({204, 304})
DATE_HEADERS = frozenset({"date", "expires", "last-modified", "if-modified-since"})
LOCATION_HEADERS = frozenset({"location", "content-location"})
BASE_URL = "http://cache.test"
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, from the standard library: an oracle independent of the cache's own."""
    return formatdate(timestamp, usegmt=True)


def rfc850(timestamp: float) -> str:
    imf = format_http_date(timestamp)  # "Sun, 06 Nov 1994 08:49:37 GMT"
    day, rest = imf.split(", ", 1)
    date, time, _ = rest.rsplit(" ", 2)
    mday, month, year = date.split(" ")
    long_day = next(name for name in _LONG_DAYS if name.startswith(day))
    return f"{long_day}, {mday}-{month}-{year[2:]} {time} GMT"


def fixup(header: Sequence[Any], server_now: float, base_url: str, request: Request) -> str:
    """A header value as sent: integers in date fields are seconds from the server's now,
    and with ``magic_locations`` a location is a full URL (``header-fixup.mjs``)."""
    name, value = header[0].lower(), header[1]
    if name in DATE_HEADERS and isinstance(value, int) and not isinstance(value, bool):
        if name in request.get("rfc850date", ()):
            return rfc850(server_now + value)
        return format_http_date(server_now + value)
    if name in LOCATION_HEADERS and request.get("magic_locations"):
        return f"{base_url}/{value}" if value else base_url
    return str(value)


@dataclass
class Response:
    status: int
    lines: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        """As ``Headers.get`` in fetch: every line of the field joined with ", "."""
        values = [v for k, v in self.lines if k == name.lower()]
        return ", ".join(values) if values else None

    def has(self, name: str) -> bool:
        return any(k == name.lower() for k, _ in self.lines)
