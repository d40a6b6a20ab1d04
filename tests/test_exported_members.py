"""The public surface: everything in __all__ exists, is sorted, and nothing public is missed."""

from __future__ import annotations

import fastapi_tiered_cache


def test_all_is_sorted_and_complete() -> None:
    exported = fastapi_tiered_cache.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(fastapi_tiered_cache, name), name
    public = {
        name
        for name, value in vars(fastapi_tiered_cache).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("fastapi_tiered_cache")
    }
    assert public <= set(exported)
