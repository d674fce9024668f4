"""A real Apache httpd (Debian's apache2 with mod_ssl) that asks for a client
certificate late: ``SSLVerifyClient require`` inside ``<Location /secure>``.

Apache asks only when a request for /secure arrives on an established connection: by
renegotiation in TLS 1.2, by post-handshake authentication in TLS 1.3 (only when the
client offered it; otherwise it answers 403).  This is the IIS per-folder pattern the
TMG documentation describes.

Blocks: ``tls12`` (TLS 1.2 only) and ``tls13`` (TLS 1.3 only).  Each serves
``/public.txt`` ("public\\n") and ``/secure/secret.txt`` ("secret\\n").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.pki import CertPair
from tests.peers.ports import free_port, wait_for_port

MODULES = "/usr/lib/apache2/modules"
LOAD = ["mpm_event", "authz_core", "ssl", "socache_shmcb", "mime", "dir", "alias"]


@dataclass
class ApacheServer:
    directory: Path
    cert: CertPair
    client_ca: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    www: Path = field(init=False)
    """Served files live outside pytest's 0700 base directory: www-data must read them,
    and every pytest session start resets /tmp/pytest-of-root to 0700."""

    def url(self, block: str, path: str) -> str:
        return f"https://localhost:{self.ports[block]}{path}"

    def render(self) -> str:
        d = self.directory
        lines = [
            f"ServerRoot {d}",
            "ServerName localhost",
            f"PidFile {d}/httpd.pid",
            f"ErrorLog {d}/error.log",
            "LogLevel warn ssl:info",
            "User www-data",
            "Group www-data",
            f"DefaultRuntimeDir {self.www}/run",
            f"DocumentRoot {self.www}",
            "TypesConfig /etc/mime.types",
            f"SSLSessionCache shmcb:{self.www}/run/ssl_scache(512000)",
        ]
        lines += [f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in LOAD]
        lines += ["<Directory />", "  AllowOverride None", "</Directory>"]
        for block, proto in (("tls12", "TLSv1.2"), ("tls13", "TLSv1.3")):
            port = self.ports[block]
            lines += [
                f"Listen 127.0.0.1:{port}",
                f"<VirtualHost 127.0.0.1:{port}>",
                "  SSLEngine on",
                f"  SSLProtocol -all +{proto}",
                f"  SSLCertificateFile {self.cert.chain}",
                f"  SSLCertificateKeyFile {self.cert.key}",
                f"  SSLCACertificateFile {self.client_ca}",
                "  SSLSessionTickets off",
                f"  <Directory {self.www}>",
                "    AllowOverride None",
                "    Require all granted",
                "  </Directory>",
                "  <Location /secure>",
                "    SSLVerifyClient require",
                "    SSLVerifyDepth 2",
                "  </Location>",
                "</VirtualHost>",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> ApacheServer:
        d = self.directory
        self.www = Path(tempfile.mkdtemp(prefix="tlsgate-apache-www-"))
        (self.www / "run").mkdir()
        (self.www / "secure").mkdir()
        (self.www / "public.txt").write_text("public\n")
        (self.www / "secure/secret.txt").write_text("secret\n")
        for sub in (self.www, self.www / "secure"):
            os.chmod(sub, 0o755)
        for f in self.www.rglob("*.txt"):
            os.chmod(f, 0o644)
        shutil.chown(self.www / "run", "www-data")
        for block in ("tls12", "tls13"):
            self.ports.setdefault(block, free_port())
        conf = d / "httpd.conf"
        conf.write_text(self.render())
        env = dict(
            os.environ, APACHE_RUN_DIR=str(self.www / "run"), APACHE_LOCK_DIR=str(self.www / "run")
        )
        self.proc = subprocess.Popen(
            ["/usr/sbin/apache2", "-f", str(conf), "-D", "FOREGROUND"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for port in self.ports.values():
            wait_for_port(
                "127.0.0.1",
                port,
                timeout,
                alive=lambda: self.proc is not None and self.proc.poll() is None,
            )
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        shutil.rmtree(self.www, ignore_errors=True)

    def error_log(self) -> str:
        p = self.directory / "error.log"
        return p.read_text() if p.exists() else ""
