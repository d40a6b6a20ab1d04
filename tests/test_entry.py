"""Entries keep the dataclass behaviour their faster ``__init__`` (``direct_init``) replaces."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from fastapi_tiered_cache.entry import CachedResponse, DataEntry, direct_init


def _plain(cls: type) -> type:
    """The same fields under a dataclass-generated ``__init__``, to compare against."""
    return dataclasses.make_dataclass(
        f"Plain{cls.__name__}",
        [(f.name, f.type, field(default=f.default)) for f in dataclasses.fields(cls)],
        frozen=True,
    )


def test_every_field_set_positionally_and_by_name() -> None:
    by_name = CachedResponse(
        status=203,
        headers=((b"etag", b'"x"'), (b"content-type", b"text/plain")),
        body=b"abc",
        stored_at=10.0,
        fresh_for=5.0,
        initial_age=1.0,
        etag='"o"',
        last_modified=3.0,
        vary=(("accept", "a"),),
        revalidate=True,
        tags=("t",),
        stale_for=2.0,
        stale_while_revalidate=1.5,
        stale_if_error=0.5,
        route="/r",
    )
    values = [getattr(by_name, f.name) for f in dataclasses.fields(CachedResponse)]
    assert CachedResponse(*values) == by_name
    plain = _plain(CachedResponse)(
        **{f.name: getattr(by_name, f.name) for f in dataclasses.fields(CachedResponse)}
    )
    assert dataclasses.astuple(plain) == dataclasses.astuple(by_name)


def test_defaults_and_post_init() -> None:
    entry = CachedResponse(200, ((b"ETag", b"a"), (b"etag", b'"b"')), b"body", 1.0, 2.0)
    assert (entry.initial_age, entry.etag, entry.last_modified, entry.vary) == (0.0, "", None, ())
    assert (entry.tags, entry.route, entry.revalidate) == ((), "", False)
    assert entry.served_etag == b'"b"'  # the stored (lower-cased) etag field only
    assert entry.size == 4 + 850 + (4 + 1 + 130) + (4 + 3 + 130)
    varied = dataclasses.replace(entry, vary=(("accept-language", "fr"), ("x", None)), size=0)
    assert varied.size == entry.size + (15 + 2 + 130) + (1 + 0 + 130)


def test_data_entry_has_its_own_fields() -> None:
    entry = DataEntry(
        status=200, headers=(), body=b"v", stored_at=1.0, fresh_for=2.0, compute_seconds=0.25
    )
    assert (entry.compute_seconds, entry.shared, entry.size) == (0.25, None, 1 + 850)
    entry.share("adapter", 42)
    assert entry.shared == ("adapter", 42)
    assert entry == dataclasses.replace(entry)  # ``shared`` is not compared


def test_still_frozen_and_checked() -> None:
    entry = CachedResponse(200, (), b"", 1.0, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.status = 500  # type: ignore[misc]
    with pytest.raises(TypeError):
        CachedResponse(200, (), b"", 1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CachedResponse(200, (), b"", 1.0, 2.0, nonsense=1)  # type: ignore[call-arg]


def test_refuses_fields_it_cannot_copy() -> None:
    @dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = field(default_factory=list)

    with pytest.raises(TypeError, match="plain fields"):
        direct_init(WithFactory)
