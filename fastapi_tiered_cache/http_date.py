"""HTTP-date (RFC 9110 §5.6.7): one strict, bounded parser for every date field.

Only the three forms HTTP defines are accepted: IMF-fixdate (``Sun, 06 Nov 1994 08:49:37
GMT``), and the obsolete RFC 850 (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime (``Sun Nov
6 08:49:37 1994``) forms. Anything else (a zone other than GMT, a two-digit year outside RFC
850, a missing comma, doubled spaces, dashes in IMF-fixdate, ``.`` between time fields, a
one-digit hour, a list of dates) is not an HTTP-date, and the caller decides what that
means: an invalid ``Expires`` is "already expired" (RFC 9111 §5.3), an invalid
``If-Modified-Since`` is ignored (RFC 9110 §13.1.3).

Day and month names and ``GMT`` are matched case-insensitively: the grammar leaves no other
reading of ``THU`` or ``gMT``, and RFC 9110 §5.6.7 asks recipients to be robust in parsing
timestamps. The weekday is not checked against the date, as no common implementation does.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["format_http_date", "parse_http_date"]

# The longest valid form, an RFC 850 date with "Wednesday", is 33 characters.
MAX_HTTP_DATE_LENGTH = 40

_DAYS = "mon|tue|wed|thu|fri|sat|sun"
_LONG_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = "|".join(_MONTH_NAMES)
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAYS}), (?P<day>[0-9]{{2}}) (?P<month>{_MONTHS}) (?P<year>[0-9]{{4}}) {_TIME} gmt",
    re.IGNORECASE | re.ASCII,
)
_RFC850 = re.compile(
    rf"(?:{_LONG_DAYS}), (?P<day>[0-9]{{2}})-(?P<month>{_MONTHS})-(?P<year>[0-9]{{2}}) {_TIME} gmt",
    re.IGNORECASE | re.ASCII,
)
_ASCTIME = re.compile(
    rf"(?:{_DAYS}) (?P<month>{_MONTHS}) (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})",
    re.IGNORECASE | re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_OWS = " \t"
_FIFTY_YEARS = 50 * 365.2425 * 86400


def parse_http_date(value: str | None, *, now: float) -> float | None:
    """The Unix time of an HTTP-date, or None when ``value`` is absent or not one.

    ``now`` resolves the two-digit year of an RFC 850 date: a date more than 50 years in
    the future means the most recent past year with those digits (RFC 9110 §5.6.7).
    Never raises.
    """
    if not value or len(value) > MAX_HTTP_DATE_LENGTH + 8:
        return None
    text = value.strip(_OWS)
    if len(text) > MAX_HTTP_DATE_LENGTH:
        return None
    match = _IMF_FIXDATE.fullmatch(text) or _ASCTIME.fullmatch(text)
    two_digit_year = False
    if match is None:
        match = _RFC850.fullmatch(text)
        if match is None:
            return None
        two_digit_year = True
    fields = [int(match[name]) for name in ("day", "hour", "minute", "second")]
    month = _MONTH_NAMES.index(match["month"].lower()) + 1
    if not two_digit_year:
        return _timestamp(int(match["year"]), month, *fields)
    # RFC 9110 §5.6.7: the year with those two digits that is not more than 50 years ahead.
    limit = now + _FIFTY_YEARS
    century = _year_of(now) // 100 * 100
    best = None
    for year in (century - 100, century, century + 100):
        stamp = _timestamp(year + int(match["year"]), month, *fields)
        if stamp is not None and stamp <= limit:
            best = stamp
    return best


def _year_of(now: float) -> int:
    try:
        return datetime.fromtimestamp(now, tz=timezone.utc).year
    except (OverflowError, OSError, ValueError):
        return 1970


def _timestamp(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> float | None:
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        # second = 60 is a leap second (RFC 5322 §3.3): one second past :59.
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc)
    except ValueError:  # year 0, 31 Feb, ...
        return None
    return (moment - _EPOCH).total_seconds() + (1 if second == 60 else 0)


def format_http_date(timestamp: float) -> str:
    """``timestamp`` as an IMF-fixdate, the form every sender must use (RFC 9110 §5.6.7)."""
    moment = _EPOCH + timedelta(seconds=int(timestamp))
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = _MONTH_NAMES[moment.month - 1].capitalize()
    return f"{day}, {moment.day:02d} {month} {moment.year:04d} {moment:%H:%M:%S} GMT"
