"""End to end with real clients against ``fhir-server serve`` run as shipped (authorization on).

(a) A standalone launch in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright
for Python; never a browser download): a static page on another origin uses the SMART JavaScript
client (npm ``fhirclient`` 2.6, installed here with ``npm ci`` and served beside the page) to
discover the server, send the user to the login page, pick a patient, allow the scopes, redeem
the code with PKCE, read that patient's CarePlans, and be refused another patient's.

(b) A SMART Backend Services client: a JWT signed ES384 with a key of its registered JWKS, traded
for a token with ``client_credentials``, which then reads data.

Without Chromium, Playwright or npm these tests skip and say why; with ``FHIR_REQUIRE_BROWSER=1``
(set by ``.ci/run``) a missing piece fails them instead.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.postgres_cluster import free_port
from tests.server.process import BIN, RunningServer, start_server, stop_server

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "a long enough password"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.server


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if shutil.which("npm") is None:
        return "npm is not installed: the SMART JS client comes from the npm registry"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("FHIR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FHIR_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def cli(server_env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run([str(BIN / "fhir-server"), *args], env=server_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/fhir.sqlite"
    running = start_server(database_url, tmp_path / "server.log", auth=True)
    env = {**os.environ, "FHIR_DATABASE_URL": database_url}
    try:
        yield running, env
    finally:
        stop_server(running)


def seed(running: RunningServer, env: dict[str, str]) -> None:
    """Two patients with a care plan each, written by a backend client with a secret."""
    cli(env, "client", "add", "--client-id", "loader", "--type", "confidential-symmetric", "--secret",
        "loader secret 1", "--scope", "system/*.cruds")  # fmt: skip
    token = httpx.post(
        f"{running.base}/smart/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        auth=("loader", "loader secret 1"),
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    for resource in (
        {"resourceType": "Patient", "id": "peter", "name": [{"given": ["Peter"], "family": "Chalmers"}]},
        {"resourceType": "Patient", "id": "maria", "name": [{"given": ["Maria"], "family": "Rivera"}]},
        {"resourceType": "CarePlan", "id": "peters-plan", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/peter"}},
        {"resourceType": "CarePlan", "id": "other-plan", "status": "active", "intent": "plan",
         "subject": {"reference": "Patient/maria"}},
        {"resourceType": "Practitioner", "id": "dr-osei", "name": [{"family": "Osei"}]},
    ):  # fmt: skip
        url = f"{running.base}/fhir/{resource['resourceType']}/{resource['id']}"
        assert httpx.put(url, json=resource, headers=headers).status_code == 201


@pytest.fixture(scope="module")
def client_library() -> Path:
    """The fhirclient browser bundle, installed from the lock file."""
    reason = missing_browser()
    if reason is not None:
        skip_or_fail(reason)
    bundle = HERE / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
    if not bundle.exists():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True)
        if done.returncode != 0:
            skip_or_fail(f"npm ci failed: {done.stderr[-500:]}")
    return bundle


@pytest.fixture
def app_site(client_library: Path) -> Iterator[str]:
    """The SMART app's static pages on their own origin (another port)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            if path.split("?")[0] == "/fhir-client.js":
                return str(client_library)
            return super().translate_path(path)

        def log_message(self, format: str, *args: object) -> None:
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=HERE / "site"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def test_a_standalone_launch_in_chromium_reads_only_the_picked_patient(
    server: tuple[RunningServer, dict[str, str]], app_site: str
) -> None:
    from playwright.sync_api import sync_playwright

    running, env = server
    seed(running, env)
    cli(env, "client", "add", "--client-id", "care-plan-viewer", "--type", "public", "--redirect-uri",
        f"{app_site}/index.html", "--scope", "launch/patient openid fhirUser patient/*.rs")  # fmt: skip
    cli(env, "user", "add", "--username", "drosei", "--password", PASSWORD, "--fhir-user", "Practitioner/dr-osei")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{app_site}/launch.html?iss={running.base}/fhir")
            page.get_by_label("Username").fill("drosei")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_label("Peter Chalmers").check()
            page.get_by_role("button", name="Continue").click()
            assert page.get_by_text("patient/*.rs").is_visible()
            page.get_by_role("button", name="Allow").click()
            page.wait_for_function("document.getElementById('result')?.textContent !== 'waiting'", timeout=20_000)
            shown = page.locator("#result").text_content() or ""
        finally:
            browser.close()
    assert not shown.startswith("error"), shown + running.log()[-2000:]
    result = json.loads(shown)
    assert result["patient"] == "peter"
    assert result["plans"] == ["peters-plan"]
    assert result["other"] == "refused 404"


def test_a_backend_service_with_a_signed_assertion_reads_data(
    server: tuple[RunningServer, dict[str, str]], tmp_path: Path
) -> None:
    running, env = server
    seed(running, env)
    key = ECKey.generate_key("P-384", parameters={"kid": "backend-1"}, private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    cli(env, "client", "add", "--client-id", "analytics", "--type", "confidential-asymmetric",
        "--jwks-file", str(jwks), "--scope", "system/CarePlan.rs")  # fmt: skip
    discovery = httpx.get(f"{running.base}/fhir/.well-known/smart-configuration").json()
    token_url = discovery["token_endpoint"]
    claims = {"iss": "analytics", "sub": "analytics", "aud": token_url, "exp": int(time.time()) + 240,
              "jti": uuid.uuid4().hex}  # fmt: skip
    assertion = jwt.encode({"alg": "ES384", "kid": "backend-1", "typ": "JWT"}, claims, key, algorithms=["ES384"])
    answer = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/CarePlan.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    plans = httpx.get(f"{running.base}/fhir/CarePlan", headers=headers).json()
    assert sorted(e["resource"]["id"] for e in plans["entry"]) == ["other-plan", "peters-plan"]
    assert httpx.get(f"{running.base}/fhir/Patient/peter", headers=headers).status_code == 403
    assert httpx.get(f"{running.base}/fhir/CarePlan").status_code == 401
    log = running.log()
    assert answer.json()["access_token"] not in log and assertion not in log  # tokens are never logged
