"""Settings: environment names, parsing, validation with clear messages."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fastapi_tiered_cache import CacheSettings, ConfigurationError, TieredCacheMiddleware
from fastapi_tiered_cache.identity import tenant_from_subdomain
from fastapi_tiered_cache.settings import load_settings, unknown_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_safe() -> None:
    settings = load_settings()
    assert settings.enabled and settings.redis_url is None
    assert settings.methods == ["GET", "HEAD"] and settings.statuses == [200]
    assert settings.caches_identities is False


def test_everyday_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TIERED_CACHE_ENABLED": "false",
        "TIERED_CACHE_REDIS_URL": "redis://:pw@127.0.0.1:6390/2",
        "TIERED_CACHE_DEFAULT_TTL": "120",
        "TIERED_CACHE_NAMESPACE": "shop",
        "TIERED_CACHE_SECRET_KEY": "s" * 32,
        "TIERED_CACHE_L1_MAX_ENTRIES": "50",
        "TIERED_CACHE_L1_MAX_BYTES": "4096",
        "TIERED_CACHE_MAX_BODY_BYTES": "1000",
        "TIERED_CACHE_RULES": (
            '[{"path": "/products/*", "ttl": 300}, {"path": "/admin/**", "cache": false}]'
        ),
        "TIERED_CACHE_TENANT_HEADER": "X-Org",
        "TIERED_CACHE_IDENTITY_COOKIES": "my_session, Other",
        "TIERED_CACHE_STATUSES": "200,404",
        "TIERED_CACHE_TENANT_RESOLVER": "fastapi_tiered_cache.identity:tenant_from_subdomain",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.enabled is False
    assert s.redis_url is not None and "pw" in s.redis_url.get_secret_value()
    assert "pw" not in repr(s) and "s" * 32 not in repr(s)
    assert (s.default_ttl, s.namespace, s.l1_max_entries, s.l1_max_bytes) == (120, "shop", 50, 4096)
    assert s.max_body_bytes == 1000
    assert [r.path for r in s.rules] == ["/products/*", "/admin/**"]
    assert s.rules[0].ttl == 300 and s.rules[1].cache is False
    assert s.tenant_header == "x-org"
    assert s.identity_cookies == ["my_session", "other"]
    assert s.statuses == [200, 404]
    assert s.tenant_resolver is tenant_from_subdomain
    assert s.caches_identities


def test_dotenv_file_is_read(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    Path(".env").write_text("TIERED_CACHE_DEFAULT_TTL=7\n")
    assert load_settings().default_ttl == 7


def test_unknown_variable_is_reported_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TLL", "5")
    expected = r"TIERED_CACHE_DEFAULT_TLL.*TIERED_CACHE_DEFAULT_TTL"
    with pytest.raises(ConfigurationError, match=expected):
        load_settings()
    assert unknown_variables({"TIERED_CACHE_ENABLED": "1", "OTHER": "x"}) == []


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TIERED_CACHE_DEFAULT_TTL", "soon", "TIERED_CACHE_DEFAULT_TTL"),
        ("TIERED_CACHE_DEFAULT_TTL", "-1", "TIERED_CACHE_DEFAULT_TTL"),
        ("TIERED_CACHE_NAMESPACE", "a:b", "TIERED_CACHE_NAMESPACE"),
        ("TIERED_CACHE_METHODS", "GET,POST", "POST"),
        ("TIERED_CACHE_STATUSES", "200,206", "206"),
        ("TIERED_CACHE_RULES", "not json", "TIERED_CACHE_RULES"),
        ("TIERED_CACHE_RULES", '[{"path": "no-slash"}]', "TIERED_CACHE_RULES"),
        ("TIERED_CACHE_RULES", '[{"path": "/a", "tll": 1}]', "tll"),
        ("TIERED_CACHE_IDENTITY_RESOLVER", "nope.missing:thing", "TIERED_CACHE_IDENTITY_RESOLVER"),
        ("TIERED_CACHE_SECRET_KEY", "short", "at least 16"),
        ("TIERED_CACHE_CACHE_AUTHENTICATED", "true", "TIERED_CACHE_SECRET_KEY is required"),
        ("TIERED_CACHE_TENANT_HEADER", "bad header", "TIERED_CACHE_TENANT_HEADER"),
    ],
)
def test_invalid_values_fail_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings()


def test_invalid_settings_fail_at_application_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TTL", "soon")
    app = FastAPI()
    app.add_middleware(TieredCacheMiddleware)
    with pytest.raises(ConfigurationError, match="TIERED_CACHE_DEFAULT_TTL"), TestClient(app):
        pass


def test_settings_object_needs_no_environment() -> None:
    settings = CacheSettings(default_ttl=5, rules=[{"path": "/x", "ttl": 1}])
    assert settings.rules[0].ttl == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("120s", 120),
        (" 5M ", 300),
    ],
)
def test_ttls_accept_durations_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: int
) -> None:
    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TTL", value)
    monkeypatch.setenv("TIERED_CACHE_RULES", json.dumps([{"path": "/p/**", "ttl": value}]))
    settings = load_settings()
    assert settings.default_ttl == seconds
    assert settings.rules[0].ttl == seconds


def test_fractional_durations_go_to_float_settings_only() -> None:
    assert load_settings(redis_timeout="50ms").redis_timeout == pytest.approx(0.05)
    assert load_settings(l1_max_ttl="1.5s").l1_max_ttl == pytest.approx(1.5)
    assert load_settings(lease_ttl=timedelta(seconds=2)).lease_ttl == 2.0
    with pytest.raises(ConfigurationError, match=r"TIERED_CACHE_DEFAULT_TTL: .*fractional"):
        load_settings(default_ttl="1.5s")


@pytest.mark.parametrize("value", ["5x", "m5", "1h-5m", "five minutes", "1e3s", "9" * 80 + "s"])
def test_a_malformed_duration_names_the_variable_and_the_accepted_forms(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(default_ttl=value)
    message = str(caught.value)
    assert message.startswith("invalid cache settings: TIERED_CACHE_DEFAULT_TTL")
