"""Check a built wheel as a user would meet it: its metadata, then ``pip install
"fastapi-tiered-cache[all]"`` from it in a fresh virtualenv, and the installed package run.

``tox -e package`` runs it after building (``python requirements/check_wheel.py DIST``).
The install takes the releases of ``constraints.txt`` (``PIP_CONSTRAINT``), as CI does, so
it tests the wheel and its declared dependencies, not a moving index.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
import tempfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "fastapi-tiered-cache"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# What `[all]` promises (pyproject.toml): each extra's module imports after the install.
ALL_MODULES = ("hiredis", "uvicorn", "fakeredis", "prometheus_client", "opentelemetry.trace")
SMOKE = """
import asyncio

import fastapi_tiered_cache as ftc
from fastapi import FastAPI

app = FastAPI()
ftc.install(app, ftc.CacheSettings(secret_key="wheel-check-secret-key", openapi=True))


@app.get("/items")
@ftc.cache_policy(ttl="5m")
async def items() -> list[int]:
    return [1, 2, 3]


async def get(path):
    sent = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"wheel.test")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return dict(sent[0]["headers"])[b"x-cache"]


answers = [asyncio.run(get("/items")) for _ in range(2)]
assert answers == [b"MISS", b"HIT"], answers
assert "x-cache" in app.openapi()["paths"]["/items"]["get"]
print(ftc.__version__)
"""


def fail(message: str) -> None:
    print(f"check_wheel: {message}", file=sys.stderr)
    raise SystemExit(1)


def version() -> str:
    text = (ROOT / "fastapi_tiered_cache" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'__version__ = "([^"]+)"', text)
    if found is None:
        fail("no __version__ in fastapi_tiered_cache/__init__.py")
    assert found is not None
    return found[1]


def metadata(wheel: Path) -> tuple[EmailMessage, str]:
    """The wheel's core metadata fields, and its long description (UTF-8, after them)."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        raw = archive.read(name)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message, raw.partition(b"\n\n")[2].decode("utf-8")


def check_metadata(wheel: Path) -> None:
    meta, description = metadata(wheel)
    expected = {"Name": NAME, "Version": version(), "Requires-Python": ">=3.10"}
    for field, value in expected.items():
        if meta[field] != value:
            fail(f"{field} is {meta[field]!r}, expected {value!r}")
    if meta["Description-Content-Type"] != "text/markdown":
        fail("the long description is not declared as Markdown")
    if description.strip() != (ROOT / "README.md").read_text(encoding="utf-8").strip():
        fail("the long description is not the README")
    classifiers = set(meta.get_all("Classifier") or [])
    wanted = {f"Programming Language :: Python :: {v}" for v in PYTHONS} | {"Typing :: Typed"}
    if wanted - classifiers:
        fail(f"classifiers missing: {sorted(wanted - classifiers)}")
    extras = set(meta.get_all("Provides-Extra") or [])
    if not {"all", "hiredis", "demo", "prometheus", "otel"} <= extras:
        fail(f"extras missing: {sorted(extras)}")
    if "License-Expression" not in meta and "License" not in meta:
        fail("no license in the metadata")


def check_install(wheel: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
        install = [str(python), "-m", "pip", "install", "-q", f"{wheel}[all]"]
        subprocess.run(install, check=True)
        imports = "; ".join(f"import {module}" for module in ALL_MODULES)
        subprocess.run([str(python), "-c", imports], check=True)
        ran = subprocess.run(
            [str(python), "-c", SMOKE], capture_output=True, text=True, cwd=scratch, check=False
        )
        if ran.returncode != 0:
            fail(f"the installed package does not serve an app:\n{ran.stderr}")
        if ran.stdout.strip() != version():
            fail(f"the installed package says {ran.stdout.strip()!r}")
        script = python.parent / "fastapi-tiered-cache"
        for args in (["--help"], ["check"], ["demo", "--help"]):
            done = subprocess.run(
                [str(script), *args], capture_output=True, text=True, cwd=scratch, check=False
            )
            if done.returncode != 0:
                fail(f"fastapi-tiered-cache {' '.join(args)} exited {done.returncode}")


def main(argv: list[str]) -> int:
    dist = Path(argv[0]) if argv else ROOT / "dist"
    wheels = sorted(dist.glob("fastapi_tiered_cache-*.whl"))
    if len(wheels) != 1:
        fail(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
    check_metadata(wheels[0])
    check_install(wheels[0])
    print(f"check_wheel: {wheels[0].name}: metadata ok; [all] installs and runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
