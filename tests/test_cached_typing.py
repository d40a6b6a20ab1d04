"""``@cached`` keeps the decorated function's signature for type checkers (``ParamSpec``):
mypy --strict sees the parameters and the return type of ``f``, ``f.refresh`` and
``f.invalidate``, and rejects wrong arguments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SNIPPET = """
from datetime import timedelta

from pydantic import BaseModel

from fastapi_tiered_cache import CachedFunction, cached


class Product(BaseModel):
    id: int


@cached(ttl=timedelta(minutes=1), tags=["product:{product_id}"])
async def load(product_id: int, lang: str = "en") -> list[Product]:
    return [Product(id=product_id)]


async def use() -> None:
    products: list[Product] = await load(1, lang="fr")
    fresh: list[Product] = await load.refresh(product_id=2)
    await load.invalidate(3)
    wrapped: CachedFunction[[int, str], list[Product]] = load
    await load("one")
    await load(1, colour="red")
    wrong: str = await load(1)
"""


def test_mypy_sees_the_signature_through_the_decorator(tmp_path: Path, mypy_cache: Path) -> None:
    source = tmp_path / "cached_snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))

    out, _, status = mypy_api.run(["--strict", "--cache-dir", str(mypy_cache), str(source)])
    # What the user's code is told; the package itself is type-checked by `tox -e typecheck`
    # (here its third-party stubs may be missing, which says nothing of the signatures).
    errors = [
        line for line in out.splitlines() if line.startswith(f"{source}:") and ": error:" in line
    ]

    assert status == 1, out
    assert len(errors) == 3, out
    assert 'Argument 1 to "__call__" of "CachedFunction" has incompatible type "str"' in errors[0]
    assert 'Unexpected keyword argument "colour"' in errors[1]
    assert 'Incompatible types in assignment (expression has type "list[Product]"' in errors[2]
