"""The Web Proxy log end to end: real requests through tlsgate, read back with `tlsgate log`."""

from __future__ import annotations

import socket

from tests.e2e.conftest import curl, records
from tests.peers.tlsgate import TlsgateProcess


def test_plain_http_record(proxy, nginx):
    url = nginx.url("plain", "/1k.bin?log-plain")
    assert curl("-A", "log-test-agent", url, proxy=proxy).returncode == 0
    rows = records(proxy, "--host", "127.0.0.1", "--status", "200")
    [rec] = [r for r in rows if r["url"] == url]
    assert rec["protocol"] == "http" and rec["method"] == "GET" and rec["status"] == 200
    assert rec["agent"] == "log-test-agent" and rec["client_ip"] == "127.0.0.1"
    assert rec["bytes_sent"] == 1024 and rec["mime_type"] == "application/octet-stream"
    assert rec["dest_port"] == nginx.port("plain") and rec["action"] == "Allowed"


def test_inspected_and_tunnel_and_failure_records(proxy, nginx, client_cert, trust_both):
    https_url = nginx.url("tls", "/1k.bin?log-inspect")
    assert curl("--cacert", str(proxy.ca_cert), https_url, proxy=proxy).returncode == 0
    mtls = nginx.url("mtls_tls13", "/echo")
    assert (
        curl(
            "--cert",
            str(client_cert.cert),
            "--key",
            str(client_cert.key),
            "--cacert",
            str(trust_both),
            mtls,
            proxy=proxy,
        ).returncode
        == 0
    )
    expired = nginx.url("expired", "/1k.bin?log-expired")
    curl("--cacert", str(proxy.ca_cert), expired, proxy=proxy)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    curl(f"http://127.0.0.1:{closed}/log-refused", proxy=proxy)

    def find(pred):
        hits = records(proxy, matching=pred)
        assert hits, "record not found"
        return hits[-1]

    rec = find(lambda r: r["url"].endswith("/1k.bin?log-inspect"))
    assert rec["protocol"] == "https-inspect" and rec["status"] == 200
    assert rec["inspection"] == "inspect" and rec["tls_version"].startswith("TLSv1.")
    assert "localhost" in rec["upstream_cert_subject"] or rec["upstream_cert_subject"]

    tun = find(
        lambda r: r["protocol"] == "SSL-tunnel" and r["dest_port"] == nginx.port("mtls_tls13")
    )
    assert tun["inspection"] == "tunnel"
    assert tun["inspection_reason"] == "server requested a client certificate"
    assert tun["bytes_sent"] > 0 and tun["bytes_received"] > 0

    bad = find(lambda r: r["url"].endswith("log-expired"))
    assert bad["status"] == 12225 and bad["action"] == "Failed"

    refused = find(lambda r: r["url"].endswith("/log-refused"))
    assert refused["status"] == 10061 and "refused" in refused["error_info"]


def test_log_show_and_records_survive_graceful_restart(pki, nginx, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    p = TlsgateProcess(home, upstream_ca=pki.ca_cert).start()
    for i in range(20):
        assert curl(nginx.url("plain", f"/1k.bin?n={i}"), proxy=p).returncode == 0
    assert p.stop() == 0  # SIGTERM: flushes the log
    rows = records(p, want=20, timeout=1)
    assert len([r for r in rows if "/1k.bin?n=" in r["url"]]) == 20
    shown = p.cli("log", "show", rows[-1]["request_id"])
    assert shown.returncode == 0
    assert "Web Proxy (Forward)" in shown.stdout and "Processing time" in shown.stdout
