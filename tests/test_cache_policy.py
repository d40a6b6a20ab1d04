"""``@cache_policy`` and ``@no_cache``: a typed signature with every rule field, durations
in every form, one-line errors at import time, and mypy --strict checking the calls."""

from __future__ import annotations

import inspect
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_tiered_cache import ConfigurationError, RouteRule, cache_policy, no_cache
from fastapi_tiered_cache.route_policy import POLICY_ATTRIBUTE, policy_of

mypy_api = pytest.importorskip("mypy.api")


def test_the_signature_has_every_rule_field_with_its_default() -> None:
    parameters = inspect.signature(cache_policy).parameters
    selectors = ("path", "route")  # the endpoint is the selector
    fields = {name: f for name, f in RouteRule.model_fields.items() if name not in selectors}

    assert list(parameters) == list(fields)
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        default = fields[name].get_default(call_default_factory=True)
        given = parameter.default
        assert (list(given) if isinstance(given, tuple) else given) == default, name


def test_the_decorator_attaches_the_rule_and_returns_the_endpoint() -> None:
    async def endpoint(product_id: int) -> dict[str, int]:
        return {"id": product_id}

    decorated = cache_policy(ttl=30, vary=("X-Region",), tags=["product:{product_id}"])(endpoint)

    assert decorated is endpoint
    rule = policy_of(endpoint)
    assert rule is not None
    assert (rule.ttl, rule.vary, rule.tags) == (30, ["x-region"], ["product:{product_id}"])
    assert getattr(endpoint, POLICY_ATTRIBUTE) is rule


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (300, 300),
        (300.0, 300),
        (timedelta(minutes=5), 300),
        ("5m", 300),
        ("1h30m", 5400),
        ("90", 90),
    ],
    ids=["int", "whole-float", "timedelta", "5m", "1h30m", "digits"],
)
def test_durations_in_every_form(given: Any, seconds: int) -> None:
    @cache_policy(ttl=given, stale_while_revalidate=given, stale_if_error=given)
    async def endpoint() -> None: ...

    rule = policy_of(endpoint)
    assert rule is not None
    assert (rule.ttl, rule.stale_while_revalidate, rule.stale_if_error) == (seconds,) * 3


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"ttl": 1.5}, "invalid @cache_policy: ttl: Input should be a valid integer"),
        ({"ttl": "5 minutes"}, "invalid @cache_policy: ttl: '5 minutes' is not a duration"),
        ({"ttl": -1}, "invalid @cache_policy: ttl: Input should be greater than or equal to 0"),
        ({"vary": "x-region"}, "invalid @cache_policy: vary: Input should be a valid list"),
        ({"vary": ["bad header"]}, "invalid @cache_policy: vary: 'bad header' is not a valid"),
        ({"key_builder": "nowhere.at_all:f"}, "invalid @cache_policy: key_builder: Invalid python"),
    ],
    ids=["fractional-ttl", "not-a-duration", "negative", "str-for-list", "bad-name", "no-module"],
)
def test_a_bad_option_is_one_line_naming_it(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cache_policy(**options)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_an_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'tll'"):
        cache_policy(tll=5)  # type: ignore[call-arg]


def test_no_cache_keeps_the_endpoint_and_turns_caching_off() -> None:
    app = FastAPI()

    @app.get("/clock")
    @no_cache
    async def clock() -> dict[str, float]:
        return {"now": 0.0}

    rule = policy_of(clock)
    assert rule is not None
    assert rule.cache is False
    assert clock.__name__ == "clock"


SNIPPET = """
from datetime import timedelta

from fastapi_tiered_cache import cache_policy, no_cache
from fastapi_tiered_cache.keys import VaryValues
from fastapi_tiered_cache.request import RequestInfo


def by_region(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    return "eu"


@cache_policy(
    ttl="5m",
    stale_while_revalidate=timedelta(seconds=30),
    stale_if_error=600.0,
    vary=["x-region"],
    tags=("product:{product_id}",),
    query_allow=["page"],
    cache_private=True,
    key_builder=by_region,
)
async def product(product_id: int) -> dict[str, int]:
    return {"id": product_id}


@cache_policy(key_builder="myapp.keys:by_region")
async def by_path() -> None: ...


@no_cache
async def clock() -> float:
    return 0.0


async def use() -> None:
    found: dict[str, int] = await product(1)
    now: float = await clock()
    await product("one")
    wrong: str = await clock()


@cache_policy(ttl=[5])
async def bad_ttl() -> None: ...


@cache_policy(tll=5)
async def misspelt() -> None: ...


@cache_policy(vary="x-region", cache="no")
async def bad_kinds() -> None: ...


def one_argument(info: RequestInfo) -> str:
    return ""


@cache_policy(key_builder=one_argument)
async def bad_builder() -> None: ...
"""


def test_mypy_checks_the_decorators(tmp_path: Path, mypy_cache: Path) -> None:
    source = tmp_path / "policy_snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))

    out, _, status = mypy_api.run(["--strict", "--cache-dir", str(mypy_cache), str(source)])
    # What the user's code is told; the package itself is type-checked by `tox -e typecheck`
    # (here its third-party stubs may be missing, which says nothing of the signatures).
    errors = [
        line for line in out.splitlines() if line.startswith(f"{source}:") and ": error:" in line
    ]

    assert status == 1, out
    expected = [
        'Argument 1 to "product" has incompatible type "str"; expected "int"',
        'Incompatible types in assignment (expression has type "float", variable has type "str")',
        'Argument "ttl" to "cache_policy" has incompatible type "list[int]"',
        'Unexpected keyword argument "tll" for "cache_policy"',
        'Argument "cache" to "cache_policy" has incompatible type "str"; expected "bool"',
        'Argument "key_builder" to "cache_policy" has incompatible type',
    ]
    for message, error in zip(expected, errors, strict=True):
        assert message in error, out
