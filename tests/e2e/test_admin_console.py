"""The admin console in a real browser (Playwright driving Debian's Chromium) against a
real ``tlsgate serve --admin``: log in, add a source exception, apply, see the member
Synced, see a client-certificate tunnel made by a real ``curl --cert`` appear in the
live log, forget the learned server.  A screenshot of each page is saved under
tests/e2e/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.e2e.conftest import curl
from tests.peers.ports import free_port, wait_for_port
from tests.peers.tlsgate import TlsgateProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
PASSWORD = "console-test-password"
CLIENT_CERT_REASON = "server requested a client certificate"


@pytest.fixture(scope="module")
def gate(pki, peer_ports, tmp_path_factory) -> Iterator[tuple[TlsgateProcess, str]]:
    home = tmp_path_factory.mktemp("admin-console")
    admin_port = free_port()
    p = TlsgateProcess(
        home,
        upstream_ca=pki.ca_cert,
        connect_ports=peer_ports,
        member="console-member",
        extra_args=["--admin", f"127.0.0.1:{admin_port}"],
    )
    r = p.cli("admin", "add-user", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    p.start()
    try:
        wait_for_port("127.0.0.1", admin_port, 15)
        yield p, f"http://127.0.0.1:{admin_port}"
    finally:
        p.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[BrowserContext]:
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_admin_console_end_to_end(gate, browser, nginx, client_cert, pki):
    proxy, console = gate
    page = browser.new_page()

    # The proxy refuses to reach its own console.
    r = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"{console}/login", proxy=proxy)
    assert r.stdout == b"403", r.stdout

    page.goto(f"{console}/")
    expect(page).to_have_url(f"{console}/login")
    shot(page, "login")
    page.get_by_label("User").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{console}/")
    expect(page.locator("body")).to_have_attribute("data-stats-loaded", "yes")
    expect(page.locator("#total-requests")).to_be_visible()

    # Add a source exception: staged, with the banner on every page.
    page.goto(f"{console}/inspection")
    page.get_by_label("new source exception").fill("10.9.8.0/24")
    page.locator("#add-source").click()
    expect(page.locator("#banner")).to_contain_text("1 change not applied")
    expect(page.locator("#source-exceptions")).to_contain_text("10.9.8.0/24")
    expect(page.locator("#source-exceptions")).to_contain_text("staged")

    # Apply it and watch the member load it.
    page.goto(f"{console}/configuration")
    expect(page.locator("#banner")).to_contain_text("1 change not applied")
    expect(page.locator("pre.diff")).to_contain_text("10.9.8.0/24")
    shot(page, "configuration-staged")
    page.get_by_label("apply message").fill("dirsync agent network")
    page.locator("#apply").click()
    # (revision 2 is the --config the test member starts with)
    expect(page.locator("#flash")).to_contain_text("Applied revision 3")
    expect(page.locator("#banner")).to_have_count(0)
    member = page.locator('tr[data-member="console-member"]')
    expect(member).to_contain_text("Synced", timeout=20_000)
    expect(member.locator("td").nth(2)).to_have_text("3")
    expect(page.locator("#history")).to_contain_text("dirsync agent network")
    shot(page, "configuration")
    applied = proxy.cli("inspection", "except", "source", "list")
    assert "10.9.8.0/24" in applied.stdout and "staged" not in applied.stdout

    # A real client-certificate connection through the proxy appears in the live log.
    page.goto(f"{console}/log")
    bundle = proxy.home / "both.pem"
    bundle.write_bytes(proxy.ca_cert.read_bytes() + pki.ca_cert.read_bytes())
    url = nginx.url("mtls_tls13", "/echo")
    r = curl(
        "--cert",
        str(client_cert.cert),
        "--key",
        str(client_cert.key),
        "--cacert",
        str(bundle),
        url,
        proxy=proxy,
    )
    assert r.returncode == 0, r.stderr
    port = nginx.port("mtls_tls13")
    tunnel = page.locator("#log-rows tr", has_text=CLIENT_CERT_REASON).filter(has_text=f":{port}")
    expect(tunnel.first).to_be_visible(timeout=20_000)
    shot(page, "log")
    tunnel.first.locator("a").click()
    expect(page.locator("#detail")).to_contain_text(f"Inspection: tunnel ({CLIENT_CERT_REASON})")
    shot(page, "log-detail")

    # The dashboard counts it among the recent client-certificate tunnels.
    page.goto(f"{console}/")
    expect(page.locator("#cert-tunnels")).to_contain_text(f":{port}")
    shot(page, "dashboard")

    # The server was learned; forget it from the console.
    page.goto(f"{console}/inspection")
    learned = page.locator(f'#learned tr[data-server$=":{port}"]')
    expect(learned).to_have_count(1)
    shot(page, "inspection")
    learned.get_by_role("button", name="Forget").click()
    expect(page.locator("#flash")).to_contain_text(re.compile(rf"Forgot .*:{port}"))
    expect(page.locator(f'#learned tr[data-server$=":{port}"]')).to_have_count(0)
    listed = proxy.cli("inspection", "learned", "list")
    assert f":{port}" not in listed.stdout, listed.stdout

    for path, name in (("/rules", "rules"), ("/ca", "ca")):
        page.goto(f"{console}{path}")
        expect(page.locator("h1")).to_be_visible()
        shot(page, name)
    download = page.locator("a", has_text="Download PEM")
    expect(download).to_have_attribute("href", "/api/ca.pem")
    page.close()
