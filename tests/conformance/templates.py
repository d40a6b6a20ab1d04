"""The shared request templates of the suite (``tests/lib/templates.mjs``): a template's
fields are merged into a request's, lists concatenated, other values replaced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Request = dict[str, Any]


def make_template(template: Request) -> Callable[..., Request]:
    def build(request: Request | None = None, **fields: Any) -> Request:
        merged: Request = {
            key: list(value) if isinstance(value, list) else value
            for key, value in template.items()
        }
        for key, value in {**(request or {}), **fields}.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = [*merged[key], *value]
            else:
                merged[key] = value
        return merged

    return build


fresh = make_template(
    {
        "response_headers": [("Cache-Control", "max-age=100000"), ("Date", 0)],
        "setup": True,
        "pause_after": True,
    }
)
stale = make_template(
    {
        "response_headers": [("Expires", -5000), ("Last-Modified", -100000), ("Date", 0)],
        "setup": True,
        "pause_after": True,
    }
)
become_stale = make_template(
    {
        "response_headers": [("Cache-Control", "max-age=2"), ("Date", 0), ("Template-A", "1")],
        "setup": True,
        "pause_after": True,
    }
)


def http_content(name: str) -> str:
    """A value unique to one test (``utils.httpContent``)."""
    return f"{name}-content"
