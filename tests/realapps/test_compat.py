"""The libraries FastAPI apps run with, each installed before and after ``install(app)``:
requests are answered as without the cache, and each library's own feature still works
(on hits too where it wraps the cache). See docs/compatibility.md."""

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fastapi_tiered_cache import CacheSettings, install

from .harness import CACHE_HEADERS, SECRET

ORDERS = ["library-first", "cache-first"]
Setup = Callable[[FastAPI], Any]


def _app(setup: Setup, order: str | None) -> FastAPI:
    app = FastAPI()

    @app.get("/data")
    def data() -> dict[str, str]:
        return {"payload": "x" * 600}

    if order == "cache-first":
        install(app, CacheSettings(secret_key=SECRET))
    setup(app)
    if order == "library-first":
        install(app, CacheSettings(secret_key=SECRET))
    return app


def _seen(response: Any) -> tuple[Any, ...]:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in CACHE_HEADERS)
    return response.status_code, response.content, tuple(headers)


MIDDLEWARE: dict[str, Setup] = {
    "gzip": lambda app: app.add_middleware(GZipMiddleware, minimum_size=100),
    "cors": lambda app: app.add_middleware(
        CORSMiddleware, allow_origins=["https://ok.example"], allow_methods=["GET"]
    ),
    "trusted-host": lambda app: app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=["testserver"]
    ),
    "session": lambda app: app.add_middleware(SessionMiddleware, secret_key="s" * 32),
}
REQUESTS: list[dict[str, Any]] = [
    {"headers": {"accept-encoding": "gzip"}},
    {"headers": {"accept-encoding": "identity"}},
    {"headers": {"origin": "https://ok.example"}},
    {"headers": {"origin": "https://evil.example"}},
    {"headers": {"host": "evil.example"}},
    {},
]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(MIDDLEWARE))
def test_starlette_middleware_answers_as_without_the_cache(name: str, order: str) -> None:
    # Each request first in turn: whichever comes first, its stored answer must not be
    # replayed to a request the middleware would answer differently.
    for first in range(len(REQUESTS)):
        requests = REQUESTS[first:] + REQUESTS[:first]
        plain = TestClient(_app(MIDDLEWARE[name], None))
        cached = TestClient(_app(MIDDLEWARE[name], order))
        for _ in range(2):  # the second round is answered by the cache where it may
            for options in requests:
                seen = _seen(cached.get("/data", **options))
                assert seen == _seen(plain.get("/data", **options)), options
    compressed = cached.get("/data", headers={"accept-encoding": "gzip"})
    if name == "gzip":
        assert compressed.headers["content-encoding"] == "gzip"
        assert compressed.json() == {"payload": "x" * 600}  # httpx decoded it
    if name == "trusted-host":
        assert cached.get("/data", headers={"host": "evil.example"}).status_code == 400


def test_prometheus_instrumentator_counts_hits_when_it_wraps_the_cache() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    counts = {}
    for order in ORDERS:
        registry = CollectorRegistry()

        def setup(app: FastAPI, registry: CollectorRegistry = registry) -> None:
            Instrumentator(registry=registry).instrument(app).expose(app)

        client = TestClient(_app(setup, order))
        answers = [client.get("/data") for _ in range(3)]
        assert all(answer.status_code == 200 for answer in answers)
        assert answers[-1].headers["x-cache"] == "HIT"
        metrics = client.get("/metrics").text
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("http_requests_total{") and 'handler="/data"' in line
        )
        counts[order] = float(line.rsplit(" ", 1)[1])
    assert counts["cache-first"] == 3  # added after install(): it sees the hits too
    assert counts["library-first"] == 1  # inside the cache: misses only


def _otel_server_spans(order: str) -> int:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def setup(app: FastAPI) -> None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    app = _app(setup, order)
    client = TestClient(app)
    answers = [client.get("/data") for _ in range(3)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    FastAPIInstrumentor.uninstrument_app(app)
    return len([s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"])


def test_opentelemetry_instrumented_before_install_traces_hits_too() -> None:
    # instrument_app() rebuilds the whole stack around whatever builds it, so the cache is
    # inside its middleware in either order, and the front memo steps aside.
    assert _otel_server_spans("library-first") == 3


def test_opentelemetry_instrumented_after_install_traces_hits_too() -> None:
    assert _otel_server_spans("cache-first") == 3


def test_slowapi_limits_requests_as_documented() -> None:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIMiddleware
    from slowapi.util import get_remote_address

    for order in ORDERS:
        limiter = Limiter(key_func=get_remote_address, default_limits=["2/minute"])

        def setup(app: FastAPI, limiter: Limiter = limiter) -> None:
            app.state.limiter = limiter
            app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
            app.add_middleware(SlowAPIMiddleware)

            @app.get("/limited")
            @limiter.limit("1/minute")
            def limited(request: Request) -> dict[str, bool]:
                return {"ok": True}

        client = TestClient(_app(setup, order))
        answers = [client.get("/data") for _ in range(3)]
        # Wrapping the cache, the limiter limits hits too; inside it, it answers by the
        # client's address, which the cache cannot see it read: every request bypasses.
        assert [answer.status_code for answer in answers] == [200, 200, 429]
        if order == "library-first":
            assert answers[0].headers["cache-status"].endswith("detail=opaque-middleware")
        # A decorated endpoint takes the raw Request: the cache bypasses it, so it always
        # runs, and so does its limit.
        limited = [client.get("/limited") for _ in range(2)]
        assert [r.status_code for r in limited] == [200, 429]
        assert limited[0].headers["x-cache"] == "BYPASS"


@pytest.fixture
def postgres_table() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = os.environ.get(
        "TIERED_CACHE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except Exception as exc:  # pragma: no cover - no PostgreSQL here
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"ftc_heroes_{uuid.uuid4().hex[:8]}"
    yield f"{url}#{name}"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'drop table if exists "{name}"'))
    engine.dispose()


def test_sqlalchemy_session_dependency_reads_and_writes(postgres_table: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    url, table = postgres_table.split("#")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f'create table "{table}" (id serial primary key, name text)'))

    def session() -> Iterator[Session]:
        with Session(engine) as db:
            yield db

    def setup(app: FastAPI) -> None:
        @app.get("/heroes")
        def heroes(db: Annotated[Session, Depends(session)]) -> list[str]:
            return list(db.scalars(text(f'select name from "{table}" order by id')))

        @app.post("/heroes")
        def add(name: str, db: Annotated[Session, Depends(session)]) -> dict[str, str]:
            db.execute(text(f'insert into "{table}" (name) values (:name)'), {"name": name})
            db.commit()
            return {"added": name}

    try:
        for order in ORDERS:
            with TestClient(_app(setup, order)) as client:
                before = client.get("/heroes").json()
                assert client.get("/heroes").headers["x-cache"] == "HIT"
                client.post(f"/heroes?name={order}")
                after = client.get("/heroes")  # the write purged the collection
                assert after.json() == [*before, order]
                assert after.headers["x-cache"] == "MISS"
    finally:
        engine.dispose()


def test_sentry_captures_errors_and_hits_are_served(tmp_path: Path) -> None:
    """In a process of its own: sentry-sdk patches Starlette and FastAPI for good."""
    pytest.importorskip("sentry_sdk")
    script = tmp_path / "sentry_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import sentry_sdk
            from fastapi import FastAPI
            from fastapi.testclient import TestClient
            from fastapi_tiered_cache import CacheSettings, install

            events = []
            sentry_sdk.init(
                dsn="https://key@sentry.invalid/1",
                before_send=lambda event, hint: events.append(event),  # and drop it
                traces_sample_rate=0.0,
            )
            for order in ("library-first", "cache-first"):
                events.clear()
                app = FastAPI()

                @app.get("/data")
                def data():
                    return {"ok": True}

                @app.get("/boom")
                def boom():
                    raise RuntimeError("boom for sentry")

                install(app, CacheSettings(secret_key="sentry-secret-0123456789abcdef"))
                client = TestClient(app, raise_server_exceptions=False)
                caches = [client.get("/data").headers["x-cache"] for _ in range(2)]
                assert caches == ["MISS", "HIT"], caches
                assert client.get("/boom").status_code == 500
                sentry_sdk.flush()
                errors = [e for e in events if "boom for sentry" in str(e)]
                assert errors, order
            print("ok")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
