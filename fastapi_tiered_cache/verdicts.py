"""Why the cache refuses to share: the ``Cache-Status`` details of its fail-closed bypasses.

The cache shares an entry only when it can prove that everyone it serves it to gets the
same answer from the app. Each way that proof can fail has a name here; the name is the
``detail`` of ``Cache-Status``, a metrics label, and what ``fastapi-tiered-cache routes``
prints. ``policy.Reason`` holds the HTTP reasons (method, status, directives); these are
the reasons that come from not being able to see what the app reads.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Refusal"]


class Refusal(str, Enum):
    """Why a request bypasses the cache although HTTP would allow storing its answer."""

    #: A route type the cache cannot read: a ``Mount``, a ``Host``, a plain Starlette route,
    #: a frontend route group, a custom ``BaseRoute`` or ``APIRoute`` subclass, an unknown
    #: route type ahead of the matching route.
    OPAQUE_ROUTE = "opaque-route"
    #: A dependency the cache cannot see through: a security scheme that is not exactly a
    #: stock FastAPI one (a subclass, an overridden ``__call__``), or a class it cannot read.
    OPAQUE_DEPENDENCY = "opaque-dependency"
    #: The endpoint or a dependency takes the raw ``Request``/``HTTPConnection``/``WebSocket``.
    REQUEST_OBJECT = "request-object"
    #: A declared input whose reading the cache cannot replicate exactly: an ``AliasPath``,
    #: a header or cookie model that accepts or forbids extra fields (it reads every one).
    OPAQUE_INPUT = "opaque-input"
    #: The middleware cannot see the routes of the app it wraps (a raw ASGI app, a wrapper
    #: between it and FastAPI), and no rule covers the request.
    OPAQUE_APP = "opaque-app"
    #: Middleware between the cache and the routes that the cache cannot see through (a
    #: gate, auth or locale done in a plain middleware may read anything), and no rule or
    #: ``@cache_policy`` covers the request; ``TIERED_CACHE_TRUSTED_MIDDLEWARE`` vouches.
    OPAQUE_MIDDLEWARE = "opaque-middleware"
    #: A header, cookie, host, tenant or query beyond the cache's parsing bounds.
    OVERSIZED = "oversized-request"
    #: The route matching the path does not accept the method (a ``HEAD`` to a GET-only
    #: FastAPI route): the router answers 405, so no stored ``GET`` may answer it, whatever
    #: a rule says.
    METHOD_NOT_ALLOWED = "method-not-allowed"

    def __str__(self) -> str:
        return self.value
