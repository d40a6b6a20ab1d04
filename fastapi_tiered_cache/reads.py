"""What a FastAPI dependency tree reads from a request, or why the cache cannot tell.

FastAPI declares, per route, every header, cookie, query parameter and security scheme the
endpoint and its dependencies read. This module walks those declarations (following the
``dependency_overrides`` in force, as FastAPI does at request time) and answers with the
names to key on, or with a ``Refusal`` when something in the tree could read more than it
declares. It trusts only what it can prove:

- a security scheme is understood only when its class is *exactly* a stock FastAPI one
  (then its ``__call__`` is too): any subclass could read anything;
- a dependency (function, callable class, endpoint) that takes the ``Request``, the
  ``HTTPConnection`` or the ``WebSocket`` could read anything;
- a parameter's names are every name FastAPI may read it under (its name, ``alias``,
  ``validation_alias`` and alias choices, with and without ``_`` -> ``-``): keying on a
  superset only splits entries; an ``AliasPath``, a header or cookie model that allows or
  forbids extra fields, or a model FastAPI would read in a way not modelled here, cannot
  be keyed exactly and is refused.

Policy only: values in, values out; nothing here touches a store or the clock.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel

from .verdicts import Refusal

__all__ = ["SAFE_ATTRIBUTE", "Reads", "mark_safe", "reads_of"]

SAFE_ATTRIBUTE = "__tiered_cache_policy__safe"


def mark_safe(call: Callable[..., Any]) -> None:
    """Mark one of our own dependencies as reading nothing from the request."""
    setattr(call, SAFE_ATTRIBUTE, True)


@dataclass(slots=True)
class Reads:
    """What a dependency tree reads; ``refusal`` set when the cache cannot tell."""

    headers: set[str] = field(default_factory=set)  # lower-case, read exactly
    cookies: set[str] = field(default_factory=set)  # case-sensitive
    query: set[str] = field(default_factory=set)  # decoded names
    query_all: bool = False
    credential_headers: set[str] = field(default_factory=set)
    credential_cookies: set[str] = field(default_factory=set)
    refusal: Refusal | None = None
    why: str = ""

    def refuse(self, refusal: Refusal, why: str) -> None:
        if self.refusal is None:  # the first reason found is the one reported
            self.refusal, self.why = refusal, why


def _name_of(call: Any) -> str:
    target = call if callable(call) and hasattr(call, "__qualname__") else type(call)
    return str(getattr(target, "__qualname__", repr(target)))


def _stock_schemes() -> dict[type, str]:
    """Stock security scheme classes -> where they read the credential."""
    from fastapi.security import (
        APIKeyCookie,
        APIKeyHeader,
        APIKeyQuery,
        HTTPBasic,
        HTTPBearer,
        HTTPDigest,
        OAuth2,
        OAuth2AuthorizationCodeBearer,
        OAuth2PasswordBearer,
        OpenIdConnect,
    )
    from fastapi.security.http import HTTPBase

    schemes: dict[type, str] = {APIKeyHeader: "header", APIKeyCookie: "cookie"}
    schemes[APIKeyQuery] = "query"
    for scheme in (
        HTTPBase,
        HTTPBasic,
        HTTPBearer,
        HTTPDigest,
        OAuth2,
        OAuth2AuthorizationCodeBearer,
        OAuth2PasswordBearer,
        OpenIdConnect,
    ):
        schemes[scheme] = "authorization"
    return schemes


_SCHEMES: dict[type, str] | None = None


def _scheme(call: Any, reads: Reads) -> bool:
    """Record a security scheme's credential; True when ``call`` is a scheme at all."""
    from fastapi.security.base import SecurityBase

    global _SCHEMES
    if not isinstance(call, SecurityBase):
        return False
    if _SCHEMES is None:
        _SCHEMES = _stock_schemes()
    where = _SCHEMES.get(type(call))
    if where is None:
        reads.refuse(
            Refusal.OPAQUE_DEPENDENCY,
            f"{type(call).__qualname__} is not a stock FastAPI security scheme",
        )
        return True
    name = str(getattr(getattr(call, "model", None), "name", "") or "")
    if where == "header":
        reads.credential_headers.add(name.lower())
    elif where == "cookie":
        reads.credential_cookies.add(name)
    elif where == "query":
        reads.query.add(name)  # the query is in the key; never filtered out
    else:
        reads.credential_headers.add("authorization")
    return True


def _is_model(annotation: Any) -> bool:
    # ``list[str]`` passes ``isinstance(..., type)`` on Python 3.10 but not ``issubclass``.
    try:
        return isinstance(annotation, type) and issubclass(annotation, BaseModel)
    except TypeError:
        return False


def _models(annotation: Any) -> list[Any]:
    """Every pydantic model class inside an annotation (``X | None``, ``list[X]``...)."""
    if _is_model(annotation):
        return [annotation]
    found: list[Any] = []
    for arg in typing.get_args(annotation):
        found.extend(_models(arg))
    return found


def _is_optional_of(annotation: Any, model: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is not typing.Union and origin is not getattr(types, "UnionType", None):
        return False
    return all(arg is model or arg is type(None) for arg in typing.get_args(annotation))


def _aliases(name: str, info: Any, *, convert: bool, lower: bool) -> list[str] | None:
    """Every request name FastAPI may read a field under (None: an ``AliasPath``).

    A superset on purpose: the parameter's name (``_`` -> ``-`` for headers that convert),
    its ``alias``, its ``validation_alias`` (or each alias choice) as written and
    converted. FastAPI versions differ in which of these win; keying on all of them only
    ever splits entries.
    """
    names = [name.replace("_", "-") if convert else name]
    alias = getattr(info, "alias", None)
    if isinstance(alias, str):
        names.append(alias)
    validation = getattr(info, "validation_alias", None)
    if isinstance(validation, str):
        names.append(validation)
    elif isinstance(validation, AliasChoices):
        for choice in validation.choices:
            if not isinstance(choice, str):
                return None
            names.append(choice)
    elif isinstance(validation, AliasPath):
        return None
    if convert:
        names.extend([n.replace("_", "-") for n in names[1:]])
    if lower:
        names = [n.lower() for n in names]
    return sorted(set(names))


def _field_names(param: Any, *, header: bool, reads: Reads, kind: str) -> list[str] | None:
    """The request names one declared parameter reads, or None (refused, noted)."""
    info = getattr(param, "field_info", None)
    convert = header and bool(getattr(info, "convert_underscores", True))
    annotation = getattr(info, "annotation", None)
    models = _models(annotation)
    if not models:
        names = _aliases(str(param.name), info, convert=convert, lower=header)
        if names is None:
            reads.refuse(Refusal.OPAQUE_INPUT, f"{kind} parameter {param.name!r} uses an AliasPath")
        return names
    model = models[0]
    if len(models) > 1 or not (annotation is model or _is_optional_of(annotation, model)):
        reads.refuse(Refusal.OPAQUE_INPUT, f"{kind} parameter {param.name!r} nests models")
        return None
    if model.model_config.get("extra") in ("allow", "forbid"):
        if kind == "query":
            reads.query_all = True
            return []
        reads.refuse(
            Refusal.OPAQUE_INPUT,
            f"{kind} model {model.__qualname__} accepts or forbids extra fields: it reads them all",
        )
        return None
    names = []
    for field_name, field_info in model.model_fields.items():
        found = _aliases(field_name, field_info, convert=convert, lower=header)
        if found is None:
            why = f"{kind} model field {field_name!r} uses an AliasPath"
            reads.refuse(Refusal.OPAQUE_INPUT, why)
            return None
        names.extend(found)
    return names


def _params(node: Any, reads: Reads) -> None:
    for param in getattr(node, "header_params", ()):
        names = _field_names(param, header=True, reads=reads, kind="header")
        reads.headers.update(names or ())
    for param in getattr(node, "cookie_params", ()):
        names = _field_names(param, header=False, reads=reads, kind="cookie")
        reads.cookies.update(names or ())
    for param in getattr(node, "query_params", ()):
        names = _field_names(param, header=False, reads=reads, kind="query")
        reads.query.update(names or ())


def _overridden(node: Any, overrides: Mapping[Any, Any]) -> Any:
    """The node FastAPI will solve instead of ``node`` under the overrides in force."""
    call = node.call
    if call is None:
        return node
    replacement: Callable[..., Any] = overrides.get(call, call)
    if replacement is call:
        return node
    from fastapi.dependencies.utils import get_dependant

    return get_dependant(path=node.path or "", call=replacement, name=node.name)


def reads_of(dependant: Any, overrides: Mapping[Any, Any] | None = None) -> Reads:
    """Walk a route's dependency tree (the endpoint first) and collect what it reads."""
    reads = Reads()
    stack = [dependant]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if overrides and node is not dependant:  # FastAPI never overrides the endpoint
            try:
                node = _overridden(node, overrides)
            except Exception as exc:  # an override FastAPI itself could not analyse
                reads.refuse(Refusal.OPAQUE_DEPENDENCY, f"override not analysable: {exc}")
                continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        call = node.call
        if call is not None and getattr(call, SAFE_ATTRIBUTE, False):
            continue  # our own dependencies (get_cache) read nothing from the request
        if _scheme(call, reads):
            continue  # a stock scheme's own parameters are the connection: known above
        if node.request_param_name or getattr(node, "http_connection_param_name", None):
            reads.refuse(Refusal.REQUEST_OBJECT, f"{_name_of(call)} takes the Request")
        if getattr(node, "websocket_param_name", None):
            reads.refuse(Refusal.REQUEST_OBJECT, f"{_name_of(call)} takes the WebSocket")
        if getattr(node, "body_params", None):  # HTTP/2 may send a GET body unannounced
            reads.refuse(Refusal.OPAQUE_INPUT, f"{_name_of(call)} reads the request body")
        _params(node, reads)
        stack.extend(node.dependencies)
    return reads
