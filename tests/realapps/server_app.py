"""The app the server tests run in real server processes (``test_servers.py``)."""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, install

app = FastAPI()


@app.get("/data")
def data() -> dict[str, bool]:
    return {"ok": True}


install(app, CacheSettings(secret_key="server-secret-0123456789abcdef"))
