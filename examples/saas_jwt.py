"""A multi-tenant API: the tenant from the subdomain, the user from a signed token.

One function names the tenant, for the app and for the cache alike, so the cache keeps
apart exactly what the app keeps apart. The identity resolver verifies the token and
returns its subject, so every token of one user shares that user's entries, and a forged,
expired or other-tenant token makes the cache step aside (the app then answers 401).

Tokens are JWTs checked with PyJWT (`pip install pyjwt`); in production, verify your
identity provider's tokens with its keys (RS256/ES256 through a JWKS). Run it, then mint a
token:

    TIERED_CACHE_SECRET_KEY="$(openssl rand -hex 32)" uvicorn examples.saas_jwt:app
    python -m examples.saas_jwt alice acme
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastapi_tiered_cache import install

SIGNING_KEY = "example-signing-key: load yours from a secret store"
ALGORITHMS = ["HS256"]  # never let the token choose its own algorithm
PLANS = {"acme": ["starter", "enterprise"], "globex": ["starter"]}  # your database


def issue_token(sub: str, tenant: str, ttl: int = 3600) -> str:
    claims = {"sub": sub, "tenant": tenant, "exp": int(time.time()) + ttl}
    return jwt.encode(claims, SIGNING_KEY, algorithm=ALGORITHMS[0])


def verify_token(token: str) -> dict[str, Any] | None:
    """The token's claims if its signature is good and it has not expired, else None."""
    try:
        claims = jwt.decode(
            token, SIGNING_KEY, algorithms=ALGORITHMS, options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:  # bad signature, expired, malformed, missing claims, ...
        return None
    return claims if isinstance(claims.get("sub"), str) else None


def tenant_of_host(host: str) -> str | None:
    """``acme.example.com`` -> ``acme``; a host with fewer than three labels has none."""
    labels = host.rsplit(":", 1)[0].strip().lower().removesuffix(".").split(".")
    return labels[0] if len(labels) >= 3 and all(labels) else None


def tenant_resolver(request: Request) -> str | None:
    return tenant_of_host(request.headers.get("host", ""))


def identity_resolver(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None  # anonymous, unless other credentials are present (then: bypass)
    claims = verify_token(token)
    if claims is None or claims.get("tenant") != tenant_resolver(request):
        return None  # a request with credentials but no principal bypasses the cache
    return str(claims["sub"])


app = FastAPI()
install(app, tenant_resolver=tenant_resolver, identity_resolver=identity_resolver)
bearer = HTTPBearer(auto_error=False)


def current_tenant(host: Annotated[str, Header()]) -> str:
    name = tenant_of_host(host)
    if name not in PLANS:
        raise HTTPException(status_code=404, detail="no such tenant")
    return name


def current_user(
    tenant: Annotated[str, Depends(current_tenant)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    claims = verify_token(credentials.credentials) if credentials else None
    if claims is None or claims.get("tenant") != tenant:
        raise HTTPException(status_code=401, detail="invalid token")
    return str(claims["sub"])


@app.get("/plans")
async def plans(tenant: Annotated[str, Depends(current_tenant)]) -> dict[str, object]:
    return {"tenant": tenant, "plans": PLANS[tenant]}  # shared by the tenant's visitors


@app.get("/me")
async def me(
    tenant: Annotated[str, Depends(current_tenant)],
    user: Annotated[str, Depends(current_user)],
) -> dict[str, str]:
    return {"tenant": tenant, "user": user}  # cached in this user's own scope


if __name__ == "__main__":  # python -m examples.saas_jwt USER TENANT
    print(issue_token(sys.argv[1], sys.argv[2]))
