"""Cache per user with your own identity resolver.

The resolver names the principal of a request. The cache keys the response on a keyed hash
of that name (TIERED_CACHE_SECRET_KEY must be set), so one user's hit is never another's.
Returning None for a request that carries credentials makes the cache step aside: it fails
closed. From the environment: TIERED_CACHE_IDENTITY_RESOLVER=myapp.auth:principal
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastapi_tiered_cache import install

TOKENS = {"alice-token": "alice", "bob-token": "bob"}  # your real token check goes here


def principal(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None  # no credentials: the response may be shared by every anonymous client
    return TOKENS.get(token)  # None for an unknown token: the cache is bypassed


app = FastAPI()
install(app, identity_resolver=principal)


bearer = HTTPBearer(auto_error=False)


@app.get("/me")
async def me(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> dict[str, str | None]:
    return {"user": TOKENS.get(credentials.credentials) if credentials else None}
