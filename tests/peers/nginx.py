"""A real nginx on 127.0.0.1 serving known content, plain and over TLS, for tests.

``NginxServer(directory)`` writes ``nginx.conf`` into ``directory`` (pid file, logs,
temp paths and document root live there too), and runs ``/usr/sbin/nginx`` as a child
process (``-p DIR -c DIR/nginx.conf -e DIR/error.log -g 'daemon off; master_process
on;'``). Add server blocks with ``add_server()`` before ``start()``; each block listens
on its own free port on 127.0.0.1.

Every block serves the same endpoints:

``/1k.bin``, ``/1m.bin`` (and ``/10m.bin`` when ``big_files=True``)
    Random bytes (1024, 1 MiB, 10 MiB), the same for every block; compare with
    ``server.content("/1k.bin")``. Sent with ``Content-Length``.
``/echo`` (any path below it too, any method)
    ``200 text/plain``: one ``key=value`` line per item, in this order::

        method=<$request_method>
        uri=<$request_uri>
        host=<$http_host>
        via=<$http_via>
        connection=<$http_connection>
        proxy_connection=<$http_proxy_connection>
        proxy_authorization=<$http_proxy_authorization>
        x_forwarded_for=<$http_x_forwarded_for>
        user_agent=<$http_user_agent>
        scheme=<$scheme>
        server_port=<$server_port>
        ssl_protocol=<$ssl_protocol>
        ssl_server_name=<$ssl_server_name>
        ssl_client_verify=<$ssl_client_verify>
        ssl_client_s_dn=<$ssl_client_s_dn>

    An absent header gives an empty value; on a plain block the ``ssl_*`` values are
    empty; ``ssl_client_verify`` is ``NONE``, ``SUCCESS`` or ``FAILED:<reason>`` on TLS
    blocks and ``ssl_client_s_dn`` looks like ``CN=tlsgate test client,O=tlsgate tests``.
    Parse it with ``parse_echo(text)``. The request body, if any, is read and discarded.
``/upload/<path>``
    WebDAV ``PUT`` (creates directories) and ``DELETE``, bodies up to 100 MiB; ``GET``
    returns what was stored. ``server.uploaded("/upload/x")`` reads the stored bytes.
``/status/<code>``
    An empty response with that status, for 200, 204, 301 (to ``/1k.bin``), 302 (to
    ``/1k.bin``), 304, 400, 403, 404, 500, 502, 503.
``/chunked`` and ``/chunked/<file>``
    ``/1m.bin`` (or the named file) sent with ``Transfer-Encoding: chunked`` (a
    ``sub_filter`` that never matches removes the length, so nginx must chunk).
``/slow`` and ``/slow/<file>``
    ``/1m.bin`` (or the named file) at 1 MiB/s (``limit_rate``).
``/close`` and ``/close/<file>``
    ``closed\\n`` (or the named file) with ``Connection: close`` (``keepalive_timeout 0``).

TLS blocks use the given ``CertPair`` chain, ``ssl_protocols``, ``ssl_verify_client``
(``on``, ``optional``, ``optional_no_ca`` or ``off``) with the test CA as
``ssl_client_certificate``, and no session cache or tickets (every connection does a
full handshake, so a CertificateRequest is always sent when asked for).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .pki import CertPair
from .ports import free_port, wait_for_port

NGINX = os.environ.get("TLSGATE_TEST_NGINX", "/usr/sbin/nginx")
HOST = "127.0.0.1"

ECHO_FIELDS = (
    ("method", "$request_method"),
    ("uri", "$request_uri"),
    ("host", "$http_host"),
    ("via", "$http_via"),
    ("connection", "$http_connection"),
    ("proxy_connection", "$http_proxy_connection"),
    ("proxy_authorization", "$http_proxy_authorization"),
    ("x_forwarded_for", "$http_x_forwarded_for"),
    ("user_agent", "$http_user_agent"),
    ("scheme", "$scheme"),
    ("server_port", "$server_port"),
    ("ssl_protocol", "$ssl_protocol"),
    ("ssl_server_name", "$ssl_server_name"),
    ("ssl_client_verify", "$ssl_client_verify"),
    ("ssl_client_s_dn", "$ssl_client_s_dn"),
)
STATUS_CODES = (200, 204, 301, 302, 304, 400, 403, 404, 500, 502, 503)
FILE_SIZES = {"/1k.bin": 1024, "/1m.bin": 1024 * 1024}
BIG_FILE_SIZES = {"/10m.bin": 10 * 1024 * 1024}
VERIFY_CLIENT = ("on", "optional", "optional_no_ca", "off")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM (nginx's fast shutdown) if pytest dies.

    Without it a killed test run leaves nginx running in its own session.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def parse_echo(text: str) -> dict[str, str]:
    """Turn an ``/echo`` body into a dict (``{"method": "GET", "via": "", ...}``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


@dataclass(frozen=True)
class ServerBlock:
    """One nginx ``server {}``: where it listens and how it speaks."""

    name: str
    host: str
    port: int
    tls: CertPair | None = None
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    verify_client: str = "off"
    extra: str = ""

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"


@dataclass
class NginxServer:
    """An nginx master process with the server blocks added before ``start()``."""

    directory: Path
    client_ca: Path | None = None
    big_files: bool = False
    blocks: dict[str, ServerBlock] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _files: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.docroot = self.directory / "html"
        self.uploadroot = self.directory / "uploads"
        self.conf = self.directory / "nginx.conf"
        self.error_log = self.directory / "error.log"
        self.access_log = self.directory / "access.log"
        self.stdio_log = self.directory / "stdio.log"

    # -- configuration ---------------------------------------------------------------

    def add_server(
        self,
        name: str,
        *,
        tls: CertPair | None = None,
        protocols: Iterable[str] = ("TLSv1.2", "TLSv1.3"),
        verify_client: str = "off",
        port: int | None = None,
        host: str = HOST,
        extra: str = "",
    ) -> ServerBlock:
        """Declare a server block; ``extra`` is raw nginx directives added inside it."""
        if self._process is not None:
            raise RuntimeError("add server blocks before start()")
        if name in self.blocks:
            raise ValueError(f"server block {name!r} already exists")
        if verify_client not in VERIFY_CLIENT:
            raise ValueError(f"verify_client must be one of {VERIFY_CLIENT}")
        if verify_client != "off" and (tls is None or self.client_ca is None):
            raise ValueError("client verification needs tls= and NginxServer(client_ca=...)")
        block = ServerBlock(
            name=name,
            host=host,
            port=port if port is not None else free_port(host),
            tls=tls,
            protocols=tuple(protocols),
            verify_client=verify_client,
            extra=extra,
        )
        self.blocks[name] = block
        return block

    def render(self) -> str:
        """The whole ``nginx.conf``."""
        user = "user root;\n" if os.geteuid() == 0 else ""
        d = self.directory
        servers = "\n".join(self._render_block(b) for b in self.blocks.values())
        return f"""# generated by tests/peers/nginx.py
{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} warn;
worker_rlimit_nofile 16384;

events {{
    worker_connections 8192;
}}

http {{
    types {{
        application/octet-stream bin;
        text/plain txt;
        text/html html;
    }}
    default_type application/octet-stream;
    log_format tlsgate_test '$server_port $remote_addr "$request" $status $body_bytes_sent '
                            '"$http_via" "$ssl_protocol" "$ssl_client_verify"';
    access_log {self.access_log} tlsgate_test;
    sendfile on;
    keepalive_requests 100000;
    server_tokens off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

{servers}
}}
"""

    def _render_block(self, block: ServerBlock) -> str:
        lines = ["    server {", "        server_name _;"]
        if block.tls is None:
            lines.append(f"        listen {block.host}:{block.port};")
        else:
            lines += [
                f"        listen {block.host}:{block.port} ssl;",
                f"        ssl_certificate {block.tls.chain};",
                f"        ssl_certificate_key {block.tls.key};",
                f"        ssl_protocols {' '.join(block.protocols)};",
                "        ssl_session_cache off;",
                "        ssl_session_tickets off;",
                f"        ssl_verify_client {block.verify_client};",
            ]
            if self.client_ca is not None:
                lines += [
                    f"        ssl_client_certificate {self.client_ca};",
                    "        ssl_verify_depth 2;",
                ]
        echo = "\\n".join(f"{key}={var}" for key, var in ECHO_FIELDS) + "\\n"
        statuses = "\n".join(
            f"        location = /status/{code} {{ return {code}"
            + (" /1k.bin" if code in (301, 302) else "")
            + "; }"
            for code in STATUS_CODES
        )
        lines += [
            f"        root {self.docroot};",
            "        location / { }",
            "        location /echo {",
            "            default_type text/plain;",
            "            client_max_body_size 100m;",
            f'            return 200 "{echo}";',
            "        }",
            "        location /upload/ {",
            f"            root {self.uploadroot};",
            "            dav_methods PUT DELETE;",
            "            create_full_put_path on;",
            "            dav_access user:rw group:r all:r;",
            "            client_max_body_size 100m;",
            "        }",
            statuses,
            # A sub_filter that can never match: nginx drops Content-Length and chunks.
            "        location = /chunked { rewrite ^ /chunked/1m.bin last; }",
            "        location /chunked/ {",
            f"            alias {self.docroot}/;",
            "            sub_filter_types *;",
            "            sub_filter '<never-matches-tlsgate-test>' '';",
            "            chunked_transfer_encoding on;",
            "        }",
            "        location = /slow { rewrite ^ /slow/1m.bin last; }",
            "        location /slow/ {",
            f"            alias {self.docroot}/;",
            "            limit_rate 1m;",
            "        }",
            "        location = /close {",
            "            keepalive_timeout 0;",
            "            default_type text/plain;",
            '            return 200 "closed\\n";',
            "        }",
            "        location /close/ {",
            f"            alias {self.docroot}/;",
            "            keepalive_timeout 0;",
            "        }",
        ]
        if block.extra:
            lines.append(block.extra)
        lines.append("    }")
        return "\n".join(lines)

    # -- content ---------------------------------------------------------------------

    def content(self, path: str) -> bytes:
        """The bytes of a served file, e.g. ``content("/1m.bin")``."""
        return self._files[path]

    def uploaded(self, path: str) -> bytes:
        """The bytes a ``PUT`` stored at ``path`` (e.g. ``"/upload/a/b.bin"``)."""
        return (self.uploadroot / path.lstrip("/")).read_bytes()

    def access_log_lines(self) -> list[str]:
        """Lines of the access log so far (``port addr "request" status bytes "via"
        "ssl_protocol" "ssl_client_verify"``)."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()

    # -- addresses -------------------------------------------------------------------

    def block(self, name: str) -> ServerBlock:
        return self.blocks[name]

    def url(self, name: str, path: str = "/") -> str:
        """``url("tls", "/1k.bin")`` → ``https://127.0.0.1:PORT/1k.bin``."""
        return self.blocks[name].url(path)

    def port(self, name: str) -> int:
        return self.blocks[name].port

    def host(self, name: str) -> str:
        return self.blocks[name].host

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        if self._process is not None:
            return
        if not self.blocks:
            raise RuntimeError("add at least one server block before start()")
        self._prepare_tree()
        self.conf.write_text(self.render())
        with self.stdio_log.open("ab") as stdio:
            # Own session: stop() can signal the master and its workers as one group.
            self._process = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(self.directory),
                    "-c",
                    str(self.conf),
                    "-e",
                    str(self.error_log),
                    "-g",
                    "daemon off; master_process on;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            for block in self.blocks.values():
                wait_for_port(block.host, block.port, timeout=timeout, alive=self._alive)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"nginx did not start: {exc}\n{self._logs()}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM); SIGKILL to the whole process group if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
                return  # the master waits for its workers before it exits
            except subprocess.TimeoutExpired:
                pass
        # Hung, or the master died on its own: workers outlive their master, so end
        # the whole process group (our child's own session, made in start()).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self._alive()

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _prepare_tree(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        self.docroot.mkdir(exist_ok=True)
        (self.uploadroot / "upload").mkdir(parents=True, exist_ok=True)
        sizes = dict(FILE_SIZES)
        if self.big_files:
            sizes.update(BIG_FILE_SIZES)
        for path, size in sizes.items():
            if path not in self._files:
                self._files[path] = os.urandom(size)
                (self.docroot / path.lstrip("/")).write_bytes(self._files[path])

    def _logs(self) -> str:
        parts = []
        for log in (self.stdio_log, self.error_log):
            if log.exists():
                parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
