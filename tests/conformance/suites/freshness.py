"""``cc-freshness``, ``cc-parse`` and ``age-parse``: lifetimes from ``Cache-Control`` and
``Age`` (RFC 9111 §4.2, §5.1, §5.2.2.1, §5.2.2.10)."""

from __future__ import annotations

from typing import Any

from ..templates import become_stale

Case = dict[str, Any]


def _reuse(
    case_id: str,
    headers: list[tuple[Any, ...]],
    expected: str,
    kind: str = "required",
    depends: tuple[str, ...] = ("freshness-none",),
    pause: bool = True,
) -> Case:
    first: dict[str, Any] = {"response_headers": headers, "setup": True}
    if pause:
        first["pause_after"] = True
    return {
        "id": case_id,
        "kind": kind,
        "depends_on": list(depends),
        "requests": [first, {"expected_type": expected}],
    }


CC_FRESHNESS: list[Case] = [
    {
        "id": "freshness-none",
        "kind": "check",
        "requests": [{"setup": True, "pause_after": True}, {"expected_type": "not_cached"}],
    },
    _reuse("freshness-max-age", [("Cache-Control", "max-age=3600")], "cached", "optimal"),
    {
        "id": "freshness-max-age-stale",
        "depends_on": ["freshness-max-age"],
        "requests": [become_stale(), {"expected_type": "not_cached"}],
    },
    _reuse("freshness-max-age-0", [("Cache-Control", "max-age=0")], "not_cached"),
    *(
        _reuse(
            f"freshness-max-age-{suffix}",
            [("Cache-Control", f"max-age={value}")],
            "cached",
            "optimal",
        )
        for suffix, value in (
            ("max-minus-1", "2147483647"),
            ("max", "2147483648"),
            ("max-plus-1", "2147483649"),
            ("max-plus", "99999999999"),
        )
    ),
    _reuse(
        "freshness-max-age-age",
        [("Date", 0), ("Cache-Control", "max-age=3600"), ("Age", "7200")],
        "not_cached",
        depends=("freshness-max-age",),
    ),
    _reuse(
        "freshness-max-age-date",
        [("Date", -7200), ("Cache-Control", "max-age=3600")],
        "not_cached",
        "check",
        depends=("freshness-max-age",),
    ),
    _reuse(
        "freshness-max-age-expires",
        [("Cache-Control", "max-age=3600"), ("Expires", -7200), ("Date", 0)],
        "cached",
        "optimal",
        depends=("freshness-max-age",),
    ),
    _reuse(
        "freshness-max-age-expires-invalid",
        [("Cache-Control", "max-age=3600"), ("Expires", "0", False), ("Date", 0)],
        "cached",
        "optimal",
        depends=("freshness-max-age",),
    ),
    _reuse(
        "freshness-max-age-0-expires",
        [("Expires", 3600), ("Cache-Control", "max-age=0"), ("Date", 0)],
        "not_cached",
    ),
    _reuse(
        "freshness-max-age-extension",
        [("Cache-Control", "foobar, max-age=3600")],
        "cached",
        "optimal",
        depends=("freshness-max-age",),
    ),
    _reuse(
        "freshness-max-age-case-insenstive",
        [("Cache-Control", "MaX-aGe=3600")],
        "cached",
        "optimal",
        depends=("freshness-max-age",),
    ),
    _reuse("freshness-max-age-negative", [("Cache-Control", "max-age=-3600")], "not_cached"),
    _reuse("freshness-s-maxage-shared", [("Cache-Control", "s-maxage=3600")], "cached"),
    *(
        _reuse(case_id, headers, "not_cached", depends=("freshness-s-maxage-shared",))
        for case_id, headers in (
            (
                "freshness-max-age-s-maxage-shared-longer",
                [("Cache-Control", "max-age=3600, s-maxage=1")],
            ),
            (
                "freshness-max-age-s-maxage-shared-longer-reversed",
                [("Cache-Control", "s-maxage=1, max-age=3600")],
            ),
            (
                "freshness-max-age-s-maxage-shared-longer-multiple",
                [("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")],
            ),
        )
    ),
    _reuse(
        "freshness-max-age-s-maxage-shared-shorter",
        [("Cache-Control", "max-age=1, s-maxage=3600")],
        "cached",
        "optimal",
        depends=("freshness-s-maxage-shared",),
    ),
    _reuse(
        "freshness-max-age-s-maxage-shared-shorter-expires",
        [("Expires", -10), ("Cache-Control", "max-age=0, s-maxage=3600")],
        "cached",
        "optimal",
        depends=("freshness-s-maxage-shared",),
    ),
]

CC_PARSE: list[Case] = [
    *(
        _reuse(case_id, headers, expected, kind, depends=depends)
        for case_id, headers, expected, kind, depends in (
            (
                "freshness-max-age-two-fresh-stale-sameline",
                [("Cache-Control", "max-age=1800, max-age=1", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-two-fresh-stale-sepline",
                [("Cache-Control", "max-age=1800", False), ("Cache-Control", "max-age=1", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-two-stale-fresh-sameline",
                [("Cache-Control", "max-age=1, max-age=1800", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-two-stale-fresh-sepline",
                [("Cache-Control", "max-age=1", False), ("Cache-Control", "max-age=1800", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-quoted",
                [("Cache-Control", 'max-age="3600"', False)],
                "cached",
                "check",
                ("freshness-max-age",),
            ),
            (
                "freshness-max-age-ignore-quoted",
                [("Cache-Control", 'extension="max-age=3600", max-age=1', False)],
                "not_cached",
                "required",
                ("freshness-max-age",),
            ),
            (
                "freshness-max-age-ignore-quoted-rev",
                [("Cache-Control", 'max-age=1, extension="max-age=3600"', False)],
                "not_cached",
                "required",
                ("freshness-max-age",),
            ),
            (
                "freshness-max-age-space-before-equals",
                [("Cache-Control", "max-age =3600", False)],
                "not_cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-space-after-equals",
                [("Cache-Control", "max-age= 3600", False)],
                "not_cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-leading-zero",
                [("Cache-Control", "max-age=003600", False)],
                "cached",
                "required",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-single-quoted",
                [("Cache-Control", "max-age='3600'", False)],
                "not_cached",
                "required",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-decimal-zero",
                [("Cache-Control", "max-age=3600.0", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-decimal-five",
                [("Cache-Control", "max-age=3600.5", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-a100",
                [("Cache-Control", "max-age=a3600", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
            (
                "freshness-max-age-100a",
                [("Cache-Control", "max-age=3600a", False)],
                "cached",
                "check",
                ("freshness-none",),
            ),
        )
    )
]


def _age(
    case_id: str, ages: list[str], expected: str, kind: str = "required", max_age: int = 3600
) -> Case:
    headers: list[tuple[Any, ...]] = [("Date", 0), ("Cache-Control", f"max-age={max_age}")]
    headers += [("Age", age, False) for age in ages]
    return _reuse(case_id, headers, expected, kind, depends=("freshness-max-age-age",))


AGE_PARSE: list[Case] = [
    _age("age-parse-nonnumeric", ["abc"], "cached"),
    _age("age-parse-negative", ["-7200"], "cached"),
    _age("age-parse-float", ["7200.0"], "cached"),
    _age("age-parse-large-minus-one", ["2147483647"], "not_cached"),
    _age("age-parse-large", ["2147483648"], "not_cached"),
    _age("age-parse-larger", ["2147483649"], "not_cached"),
    _age("age-parse-suffix", ["7200, 0"], "not_cached"),
    _age("age-parse-prefix", ["0, 7200"], "cached"),
    _age("age-parse-suffix-twoline", ["7200", "0"], "not_cached"),
    _age("age-parse-prefix-twoline", ["0", "7200"], "cached"),
    _age("age-parse-dup-0", ["0, 0"], "cached"),
    _age("age-parse-dup-0-twoline", ["0", "0"], "cached"),
    _age("age-parse-dup-old", ["3600", "3600"], "cached", max_age=10000),
    _age("age-parse-parameter", ["7200;foo=bar"], "not_cached", "check"),
    _age("age-parse-numeric-parameter", ["7200;foo=111"], "not_cached", "check"),
]

CASES = [*CC_FRESHNESS, *CC_PARSE, *AGE_PARSE]
