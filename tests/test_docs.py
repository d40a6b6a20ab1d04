"""The docs show only tested code, and the generated pages match the code they describe."""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import httpx
import jwt
import pytest
from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, RouteRule, TieredCache, get_cache
from fastapi_tiered_cache.policy import Reason
from fastapi_tiered_cache.stores import Tier
from fastapi_tiered_cache.verdicts import Refusal

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SECRET = "docs-secret-key-0123456789"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def load(path: Path) -> ModuleType:
    """Import a file as a fresh module (examples read the environment when imported)."""
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as client:
        yield client


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# Generated pages.


def test_configuration_page_is_up_to_date() -> None:
    generator = load(DOCS / "gen_config.py")
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")

    assert committed == generator.render(), "run: python docs/gen_config.py"


def test_configuration_page_names_every_active_setting() -> None:
    generator = load(DOCS / "gen_config.py")
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")

    for name in CacheSettings.model_fields:
        documented = f"| `TIERED_CACHE_{name.upper()}` |" in page
        assert documented is (name not in generator.INACTIVE_SETTINGS), name
    for name in RouteRule.model_fields:
        documented = f"| `{name}` |" in page
        assert documented is (name not in generator.INACTIVE_RULE_FIELDS), name


def test_settings_left_out_of_the_reference_are_really_unused() -> None:
    """A setting leaves the inactive list (and enters the docs) once the package reads it."""
    generator = load(DOCS / "gen_config.py")
    package = ROOT / "fastapi_tiered_cache"
    sources = {
        path.name: path.read_text(encoding="utf-8")
        for path in package.rglob("*.py")
        if path.name not in ("settings.py", "demo.py")
    }
    checks = [
        (generator.INACTIVE_SETTINGS, CacheSettings.model_fields, r"(?:settings|\bs)\.{}\b"),
        (generator.INACTIVE_RULE_FIELDS, RouteRule.model_fields, r"\brule\.{}\b"),
    ]
    for inactive, fields, pattern in checks:
        for name in inactive:
            assert name in fields, f"{name} is no longer a field: drop it from gen_config.py"
            for module, text in sources.items():
                used = re.search(pattern.format(name), text)
                assert used is None, f"{module} reads {name}: drop it from the inactive list"


def test_http_page_lists_exactly_the_cache_status_details() -> None:
    page = (DOCS / "http.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`detail=([a-z0-9-]+)`", page))
    # "cacheable" is never shown (a stored response says "stored"), nor "disabled" (a
    # disabled cache adds no header); a hit names its tier; and the middleware writes a
    # few details of its own as literals (such as "only-if-cached"), anywhere in the package.
    package = ROOT / "fastapi_tiered_cache"
    pipeline = "".join(path.read_text(encoding="utf-8") for path in package.rglob("*.py"))
    literals = set(re.findall(r'"detail=([a-z0-9-]+)"', pipeline))
    tiers = {str(tier) for tier in Tier}
    refusals = {str(refusal) for refusal in Refusal}
    emitted = {str(reason) for reason in Reason} - {"cacheable", "disabled"} | tiers | literals
    emitted |= refusals

    assert documented == emitted


# Every Python snippet in the docs is an example file, and every example is shown.


def test_docs_python_blocks_are_only_snippet_includes() -> None:
    for page in pages():  # README.md: see test_readme_quickstart_is_the_example
        for block in PYTHON_BLOCK.findall(page.read_text(encoding="utf-8")):
            assert SNIPPET.fullmatch(block.strip()), f"untested Python in {page.name}"


def test_snippets_exist_and_every_example_is_shown() -> None:
    included = {
        name for page in pages() for name in SNIPPET.findall(page.read_text(encoding="utf-8"))
    }

    assert included, "no snippets found"
    for name in included:
        assert (ROOT / name).is_file(), name
    shown = {str(path.relative_to(ROOT)) for path in EXAMPLES.glob("*.py")}
    assert shown <= included


def test_readme_quickstart_is_the_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = PYTHON_BLOCK.findall(readme)
    example = (EXAMPLES / "quickstart.py").read_text(encoding="utf-8")

    def code_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    assert code_lines(block) == code_lines(example)


def test_readme_has_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    demo = (
        "python3 -m venv .venv && .venv/bin/pip install -q -c requirements/constraints.txt"
        ' -e ".[demo]" && .venv/bin/python -m fastapi_tiered_cache.demo'
    )
    tests = (
        "python3 -m venv .venv && .venv/bin/pip install -q -c requirements/constraints.txt"
        " tox && .venv/bin/tox run-parallel --parallel-no-spinner"
    )
    assert demo in lines
    assert tests in lines
    # CI runs exactly the README's test command.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"cmd='{tests}'" in ci


def test_docs_link_only_to_pages_that_exist() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in pages():
        assert page.name in nav, f"{page.name} is not in the mkdocs nav"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


# The examples run.


async def test_quickstart_caches_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TTL", "30")
    app = load(EXAMPLES / "quickstart.py").app

    async with client_for(app) as client:
        first = await client.get("/products")
        second = await client.get("/products")

    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert re.search(r"; ttl=(29|30); detail=l1$", second.headers["cache-status"])
    assert second.json() == first.json() == [{"id": 1, "name": "Laptop", "price": 999.99}]


async def test_identity_resolver_example_keeps_users_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERED_CACHE_SECRET_KEY", SECRET)
    app = load(EXAMPLES / "identity_resolver.py").app

    def as_user(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async with client_for(app) as client:
        alice = [await client.get("/me", headers=as_user("alice-token")) for _ in range(2)]
        bob = [await client.get("/me", headers=as_user("bob-token")) for _ in range(2)]
        stranger = await client.get("/me", headers=as_user("forged-token"))
        anonymous = [await client.get("/me") for _ in range(2)]

    for responses, user in ((alice, "alice"), (bob, "bob"), (anonymous, None)):
        assert [r.headers["x-cache"] for r in responses] == ["MISS", "HIT"]
        assert [r.json()["user"] for r in responses] == [user, user]
    assert stranger.headers["x-cache"] == "BYPASS"
    assert stranger.headers["cache-status"].endswith("fwd=bypass; detail=resolver")
    assert stranger.json() == {"user": None}


async def test_settings_in_code_example_applies_its_rules() -> None:
    module = load(EXAMPLES / "settings_in_code.py")

    async with client_for(module.app) as client:
        await client.get("/products/7", headers={"accept-language": "en"})
        product = await client.get("/products/7", headers={"accept-language": "en"})
        other_language = await client.get("/products/7", headers={"accept-language": "fr"})
        admin = [await client.get("/admin/health") for _ in range(2)]

    assert product.headers["x-cache"] == "HIT"
    assert re.search(r"; ttl=(299|300);", product.headers["cache-status"])
    assert other_language.headers["x-cache"] == "MISS"
    for response in admin:
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=rule")
    assert module.cache is module.app.state.tiered_cache
    assert module.cache.settings.default_ttl == 30


async def test_invalidate_on_update_example_purges_what_changed() -> None:
    module = load(EXAMPLES / "invalidate_on_update.py")

    async with client_for(module.app) as client:
        for url in ("/products", "/products/1", "/products/2"):
            await client.get(url)
        listing = await client.get("/products")
        delivered = await client.post("/deliveries", json={"product_id": 1, "quantity": 5})
        restocked = await client.get("/products/1")
        relisted = await client.get("/products")
        untouched = await client.get("/products/2")
        changed = await client.put("/products/2", json={"price": 19.5})
        repriced = await client.get("/products/2")
        listed_after_put = await client.get("/products")
        await module.apply_price_feed({1: 899.0})
        fed = await client.get("/products/1")

    assert listing.headers["x-cache"] == "HIT"
    assert "surrogate-key" not in listing.headers
    assert delivered.status_code == 201
    assert delivered.json() == {"purged": 2}  # /products/1 and the list
    assert delivered.headers["cache-status"].endswith("fwd=bypass; detail=method")
    assert (restocked.headers["x-cache"], restocked.json()["stock"]) == ("MISS", 8)
    assert relisted.headers["x-cache"] == "MISS"
    assert untouched.headers["x-cache"] == "HIT"
    assert changed.status_code == 200
    assert (repriced.headers["x-cache"], repriced.json()["price"]) == ("MISS", 19.5)
    assert listed_after_put.headers["x-cache"] == "MISS"  # the parent collection
    assert (fed.headers["x-cache"], fed.json()["price"]) == ("MISS", 899.0)
    assert module.app.state.tiered_cache.bus is None  # L1 only: no bus without Redis


async def test_route_policies_example_keys_on_what_routes_declare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERED_CACHE_SECRET_KEY", SECRET)
    module = load(EXAMPLES / "route_policies.py")

    async def twice(
        client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        return [await client.get(url, headers=headers) for _ in range(2)]

    async with client_for(module.app) as client:
        french = await twice(client, "/greeting", headers={"accept-language": "fr-FR"})
        english = await twice(client, "/greeting", headers={"accept-language": "en"})
        dark = await twice(client, "/home", headers={"cookie": "theme=dark"})
        dark_other_cookie = await client.get("/home", headers={"cookie": "_ga=1; theme=dark"})
        light = await client.get("/home")
        acme = await twice(client, "/partner/prices", headers={"x-partner-key": "acme-key"})
        globex = await twice(client, "/partner/prices", headers={"x-partner-key": "globex-key"})
        agent_a = await twice(client, "/client-info", headers={"user-agent": "a"})
        agent_b = await client.get("/client-info", headers={"user-agent": "b"})
        debug = await twice(client, "/debug/headers")
        product = await twice(client, "/products/7")
        await module.app.state.tiered_cache.invalidate_tags("product:7")
        purged = await client.get("/products/7")
        clock = await twice(client, "/clock")

    def outcomes(responses: list[httpx.Response]) -> list[str]:
        return [response.headers["x-cache"] for response in responses]

    for pair in (french, english, dark, acme, globex, agent_a, product):
        assert outcomes(pair) == ["MISS", "HIT"]
    assert [r.json()["text"] for r in (*french, *english)] == ["Bonjour"] * 2 + ["Hello"] * 2
    assert dark_other_cookie.headers["x-cache"] == "HIT"
    assert (light.headers["x-cache"], light.json()) == ("MISS", {"theme": "light"})
    assert [r.json()["partner"] for r in (*acme, *globex)] == ["acme"] * 2 + ["globex"] * 2
    assert re.search(r"; ttl=(299|300); detail=l1$", agent_a[1].headers["cache-status"])
    assert (agent_b.headers["x-cache"], agent_b.json()) == ("MISS", {"agent": "b"})
    for response in debug:
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=request-object")
    assert product[1].headers["cache-control"] == "public, max-age=60"
    assert "expires" in product[1].headers
    assert purged.headers["x-cache"] == "MISS"
    for response in clock:
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=rule")


async def test_route_policies_example_bypasses_credentials_without_a_secret_key() -> None:
    module = load(EXAMPLES / "route_policies.py")

    async with client_for(module.app) as client:
        response = await client.get("/partner/prices", headers={"x-partner-key": "acme-key"})

    assert response.headers["cache-status"].endswith("fwd=bypass; detail=authenticated")


class FakeClock:
    """Wall-clock seconds, advanced by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def use_clock(cache: TieredCache, clock: FakeClock) -> None:
    """Make an installed cache tell the age of its entries by ``clock``."""
    cache.clock = clock
    cache.store.clock = clock
    cache.invalidator.clock = clock


async def settled(cache: TieredCache) -> None:
    """Wait for the background refreshes to finish."""
    for _ in range(200):
        if not cache.refreshing:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background refresh still running")


async def test_stale_serving_example_serves_stale_while_refreshing_and_on_errors() -> None:
    module = load(EXAMPLES / "stale_serving.py")
    clock = FakeClock()
    use_clock(module.cache, clock)

    async with client_for(module.app) as client:
        first = await client.get("/prices")
        clock.now += 15  # 5 s past freshness: within stale-while-revalidate (60 s)
        stale = await client.get("/prices")
        await settled(module.cache)
        refreshed = await client.get("/prices")
        module.prices.down = True
        clock.now += 100  # 90 s past freshness: past SWR, within stale-if-error (600 s)
        on_error = await client.get("/prices")
        clock.now += 1000  # past both windows: the error reaches the client
        late = await client.get("/prices")

        rates = await client.get("/rates")
        module.rates.down = True
        clock.now += 120  # 60 s past freshness, within the policy's stale-if-error
        rates_on_error = await client.get("/rates")

    assert (first.headers["x-cache"], first.json()["version"]) == ("MISS", 1)
    assert (stale.headers["x-cache"], stale.json()["version"]) == ("STALE", 1)
    assert stale.headers["cache-status"] == "fastapi-tiered-cache; hit; fwd=stale; ttl=-5"
    assert (refreshed.headers["x-cache"], refreshed.json()["version"]) == ("HIT", 2)
    assert (on_error.status_code, on_error.json()["version"]) == (200, 2)
    assert on_error.headers["x-cache"] == "STALE"
    assert on_error.headers["cache-status"].endswith("; ttl=-90; detail=stale-if-error")
    assert late.status_code == 502
    assert module.prices.version == 4  # two fetches, two failures
    assert rates.headers["x-cache"] == "MISS"
    assert (rates_on_error.status_code, rates_on_error.headers["x-cache"]) == (200, "STALE")
    assert rates_on_error.json() == rates.json()
    assert "detail=stale-if-error" in rates_on_error.headers["cache-status"]


async def test_saas_jwt_example_keys_on_tenant_and_verified_subject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERED_CACHE_SECRET_KEY", SECRET)
    module = load(EXAMPLES / "saas_jwt.py")
    acme, globex = "http://acme.example.com", "http://globex.example.com"

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    alice = module.issue_token("alice", "acme")
    alice_again = module.issue_token("alice", "acme", ttl=60)  # another token, same user
    bob = module.issue_token("bob", "acme")
    header, _, signature = alice.split(".")
    claims = base64.urlsafe_b64encode(b'{"sub": "bob", "tenant": "acme", "exp": 9999999999}')
    forged = (
        f"{header}.{claims.rstrip(b'=').decode()}.{signature}"  # bob's claims, alice's signature
    )
    none_alg = jwt.encode({"sub": "bob", "tenant": "acme", "exp": 9999999999}, None, "none")
    expired = module.issue_token("alice", "acme", ttl=-1)

    async with client_for(module.app) as client:
        plans = [await client.get(f"{base}/plans") for base in (acme, acme, globex, globex)]
        as_alice = await client.get(f"{acme}/me", headers=bearer(alice))
        as_alice_again = await client.get(f"{acme}/me", headers=bearer(alice_again))
        as_bob = [await client.get(f"{acme}/me", headers=bearer(bob)) for _ in range(2)]
        wrong_tenant = await client.get(f"{globex}/me", headers=bearer(alice))
        refused = [
            await client.get(f"{acme}/me", headers=bearer(token))
            for token in (forged, expired, none_alg)
        ]

    assert [r.headers["x-cache"] for r in plans] == ["MISS", "HIT", "MISS", "HIT"]
    assert [r.json()["tenant"] for r in plans] == ["acme", "acme", "globex", "globex"]
    assert alice != alice_again
    assert (as_alice.headers["x-cache"], as_alice_again.headers["x-cache"]) == ("MISS", "HIT")
    assert as_alice_again.json() == {"tenant": "acme", "user": "alice"}
    assert [r.headers["x-cache"] for r in as_bob] == ["MISS", "HIT"]
    assert as_bob[1].json() == {"tenant": "acme", "user": "bob"}
    for response in (wrong_tenant, *refused):
        assert response.status_code == 401
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=resolver")
    assert module.verify_token("not.a.token") is None
    assert module.verify_token("") is None


async def test_prometheus_example_serves_metrics() -> None:
    pytest.importorskip("prometheus_client")
    module = load(EXAMPLES / "prometheus_app.py")

    async with client_for(module.app) as client:
        for tenant in ("acme", "acme", "initech", "initech"):
            await client.get("/products/1", headers={"x-tenant-id": tenant})
        metrics = await client.get("/metrics")

    assert metrics.status_code == 200
    assert metrics.headers["cache-status"].endswith("fwd=bypass; detail=rule")
    lines = metrics.text.splitlines()
    route = 'route="/products/{product_id}"'
    for tenant in ("acme", "other"):  # initech is not listed: counted as "other"
        assert f'tiered_cache_hits_total{{{route},tenant="{tenant}",tier="l1"}} 1.0' in lines
    assert "tiered_cache_l1_entries 2.0" in lines


def test_the_version_lives_in_one_place_and_the_changelog_has_its_sections() -> None:
    """``__init__.__version__`` is the only version (pyproject reads it); the changelog has
    an Unreleased section, and every released version a dated one (the release workflow
    refuses a tag without it)."""
    import fastapi_tiered_cache

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert 'path = "fastapi_tiered_cache/__init__.py"' in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert sections[0] == ("Unreleased", "")
    released = dict(sections[1:])
    assert fastapi_tiered_cache.__version__ in released
    assert all(released.values()), "every released section carries its date"
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert "twine check --strict" in workflow


@pytest.fixture
def fresh_process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process cache left by another test: the example builds its own."""
    module = importlib.import_module("fastapi_tiered_cache.install")
    monkeypatch.setattr(module, "_process_cache", None)
    monkeypatch.setattr(module, "_process_installed", False)


@pytest.mark.usefixtures("fresh_process_cache")
async def test_cached_data_example_caches_results_and_purges_them_by_tag() -> None:
    module = load(EXAMPLES / "cached_data.py")
    cache = module.app.state.tiered_cache

    first = await module.load_product(1)
    first.stock = 0  # the caller's own copy
    again = await module.load_product(product_id=1)
    async with client_for(module.app) as client:
        page = await client.get("/products/1/price")
        sold = await client.post("/products/1/sale")
    after_sale = await module.load_product(1)
    rate = await module.exchange_rate("EUR")

    assert cache is get_cache()
    assert (again.stock, page.json()) == (3, {"price": 999.0})
    assert sold.json() == {"stock": 2}
    assert (after_sale.stock, module.queries) == (2, 2)
    assert rate == 0.92 == await cache.get("rate:EUR")
    await cache.close()


@pytest.mark.usefixtures("fresh_process_cache")
async def test_worker_script_example_uses_the_process_cache() -> None:
    module = load(EXAMPLES / "worker_script.py")

    first, again, stored = await module.main()

    assert first == again == stored == module.Report(day="2024-05-01", orders=42)
    assert module.runs == 1


async def test_choose_what_is_cached_example_applies_its_typed_policies() -> None:
    module = load(EXAMPLES / "choose_what_is_cached.py")

    async with client_for(module.app) as client:
        await client.get("/products/7")
        product = await client.get("/products/7")
        await client.get("/products?page=2&utm_source=mail")
        listing = await client.get("/products?page=2&ref=home")
        other_page = await client.get("/products?page=3")
        health = [await client.get("/healthz") for _ in range(2)]
    schema = module.app.openapi()
    await module.app.state.tiered_cache.close()

    assert product.headers["x-cache"] == "HIT"
    assert re.search(r"; ttl=(599|600);", product.headers["cache-status"])
    assert (listing.headers["x-cache"], listing.json()["page"]) == ("HIT", 2)
    assert other_page.headers["x-cache"] == "MISS"
    for response in health:
        assert response.headers["cache-status"].endswith("fwd=bypass; detail=rule")
    operations = schema["paths"]
    assert operations["/products/{product_id}"]["get"]["x-cache"]["ttl"] == 600
    assert operations["/products"]["get"]["x-cache"]["key"][:2] == ["path", "query[page]"]
    assert operations["/healthz"]["get"]["x-cache"]["verdict"] == "no (rule)"


async def test_openapi_custom_example_keeps_its_own_schema_and_adds_the_cache() -> None:
    module = load(EXAMPLES / "openapi_custom.py")

    async with client_for(module.app) as client:
        served = (await client.get("/openapi.json")).json()
    await module.cache.close()

    assert served["info"]["x-logo"] == {"url": "https://example.com/logo.png"}
    assert served["paths"]["/products"]["get"]["x-cache"]["cached"] is True
    assert "304" in served["paths"]["/products"]["get"]["responses"]
