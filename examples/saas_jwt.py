"""A multi-tenant API: the tenant from the subdomain, the user from a signed token.

One function names the tenant, for the app and for the cache alike, so the cache keeps
apart exactly what the app keeps apart. The identity resolver verifies the token and
returns its subject, so every token of one user shares that user's entries, and a forged,
expired or other-tenant token makes the cache step aside (the app then answers 401).

The tokens are minimal JWTs (HS256) made with the standard library; use your JWT library
and your identity provider's keys instead. Run it, then mint a token:

    TIERED_CACHE_SECRET_KEY="$(openssl rand -hex 32)" uvicorn examples.saas_jwt:app
    python -m examples.saas_jwt alice acme
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastapi_tiered_cache import install

SIGNING_KEY = b"example-signing-key: load yours from a secret store"
PLANS = {"acme": ["starter", "enterprise"], "globex": ["starter"]}  # your database


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(signed: str) -> bytes:
    return hmac.new(SIGNING_KEY, signed.encode("ascii"), hashlib.sha256).digest()


def issue_token(sub: str, tenant: str, ttl: int = 3600) -> str:
    header = _encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "tenant": tenant, "exp": int(time.time()) + ttl}
    payload = _encode(json.dumps(claims).encode())
    return f"{header}.{payload}.{_encode(_sign(f'{header}.{payload}'))}"


def verify_token(token: str) -> dict[str, Any] | None:
    """The token's claims if its signature is good and it has not expired, else None."""
    try:
        header, payload, signature = token.split(".")
        if not hmac.compare_digest(_decode(signature), _sign(f"{header}.{payload}")):
            return None
        if json.loads(_decode(header)).get("alg") != "HS256":
            return None
        claims = json.loads(_decode(payload))
    except (ValueError, AttributeError):  # bad base64, JSON, UTF-8, or not an object
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        return None
    return claims


def tenant_of_host(host: str) -> str | None:
    """``acme.example.com`` -> ``acme``; a host with fewer than three labels has none."""
    labels = host.rsplit(":", 1)[0].strip().lower().split(".")
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
