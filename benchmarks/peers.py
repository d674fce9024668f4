"""The processes a benchmark runs on loopback: the nginx upstream and the proxies.

``Upstream`` is the test suite's nginx peer (tests/peers/nginx.py) with limits raised for
10,000 connections, access logging off and long keep-alive.  Each proxy kind
(``Squid``, ``Mitmproxy``, ``ProxyPy``, ``Tlsgate``) starts one process in ``inspect``
mode (TLS interception with its own CA, trusting the test CA upstream) or ``tunnel``
mode (CONNECT passed through unopened) and hands back a ``ProxyProcess``: its port,
the CA a client must trust through it, and its process tree for RSS and CPU.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI
from tests.peers.ports import free_port, wait_for_port

from benchmarks.system import command_version, die_with_parent, tree_pids

ROOT = Path(__file__).resolve().parent.parent

Mode = Literal["inspect", "tunnel"]
HOST = "127.0.0.1"
UPSTREAM_NAME = "localhost"
VENV_BIN = Path(__file__).resolve().parent / ".venv" / "bin"
# Long idle timeouts everywhere: the memory workload holds connections idle for up to
# a few minutes while it opens 10,000; the timeouts do not change memory per connection.
IDLE_SECONDS = 900


def _nofile() -> int:
    """The descriptor limit the peers inherit (raised by the harness where allowed)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class PeerError(RuntimeError):
    """A peer is missing or did not start; the message says which and how to fix it."""


def find_program(name: str) -> str | None:
    """``name`` from benchmarks/.venv (mitmdump, proxy) or else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


# -- the upstream ------------------------------------------------------------------------


class Upstream(NginxServer):
    """nginx with a plain and a TLS block, 1 KiB and 10 MiB files, room for 10k clients."""

    def render(self) -> str:
        text = super().render()
        # The test peer is sized for tests; the memory workload holds 10,000 upstream
        # connections open at once through each proxy.
        text = text.replace("worker_connections 8192;", "worker_connections 65536;")
        return text.replace("worker_rlimit_nofile 16384;", "worker_rlimit_nofile 140000;")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def start_upstream(directory: Path, pki: TestPKI) -> Upstream:
    """nginx with blocks ``plain`` and ``tls``, reached by the name ``localhost``.

    A name, not 127.0.0.1: Squid bumping at step 2 names its forged certificate after
    the CONNECT target, and for an IP address it puts it in the CN only, which curl
    rejects. Where /etc/hosts also maps localhost to ::1, nginx listens there too, so
    every proxy reaches it whichever address it tries first.
    """
    server = Upstream(directory, big_files=True)
    v6 = _ipv6_loopback()
    for name, tls in (("plain", None), ("tls", pki.valid())):
        port = free_port()
        extra = f"        access_log off;\n        keepalive_timeout {IDLE_SECONDS}s;"
        if v6:
            extra += f"\n        listen [::1]:{port}{' ssl' if tls else ''};"
        server.add_server(name, tls=tls, port=port, extra=extra)
    server.start()
    return server


def upstream_url(upstream: Upstream, block: str, path: str) -> str:
    b = upstream.block(block)
    return f"{b.scheme}://{UPSTREAM_NAME}:{b.port}{path}"


# -- proxies -----------------------------------------------------------------------------


@dataclass
class ProxyProcess:
    """A running proxy: where it listens and what a client must trust through it."""

    name: str
    mode: Mode
    port: int
    client_ca: Path
    """CA file for the client's ``--cacert``: the proxy's CA when inspecting, the
    upstream's test CA when tunnelling."""
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        # Helpers (Squid's certgen, proxy.py's workers) live in the same process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass(frozen=True)
class Setting:
    """What every proxy needs to know: the upstream's CA and ports, the work directory."""

    pki: TestPKI
    upstream: Upstream
    workdir: Path
    tlsgate_config: Callable[[Path], Path | None]
    """Writes tlsgate's config file into the given directory (or returns None)."""


def _launch(
    name: str,
    mode: Mode,
    args: list[str],
    directory: Path,
    port: int,
    client_ca: Path | Callable[[], Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> ProxyProcess:
    log = directory / f"{name}-{mode}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    started = ProxyProcess(name, mode, port, Path(), proc, log)
    try:
        wait_for_port(HOST, port, timeout=timeout, alive=started.alive)
        started.client_ca = client_ca() if callable(client_ca) else client_ca
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        started.stop()
        raise PeerError(f"{name} ({mode}) did not start: {exc}\n{started.tail()}") from exc
    return started


def _wait_for_file(path: Path, proxy_alive: Callable[[], bool], timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size == 0:
        if time.monotonic() > deadline or not proxy_alive():
            raise FileNotFoundError(f"{path} was not created")
        time.sleep(0.05)
    return path


class ProxyKind:
    """One proxy product; subclasses know its command line."""

    name = ""
    program = ""
    memory = True
    """Measured in the memory workload (a variant that cannot differ there is not)."""
    workloads: frozenset[str] | None = None
    """The rate workloads it can serve (None: all of them)."""

    def missing(self) -> str | None:
        """Why it cannot run here (None when it can)."""
        if find_program(self.program) is None:
            return f"{self.program} not found: run scripts/bench.sh, which installs it"
        return None

    def version(self) -> str:
        raise NotImplementedError

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        raise NotImplementedError

    def _dir(self, setting: Setting, mode: Mode) -> Path:
        # A fresh directory per start: the memory workload restarts proxies.
        base = setting.workdir / f"{self.name}-{mode}"
        n = 0
        while (d := base.with_name(f"{base.name}-{n}")).exists():
            n += 1
        d.mkdir(parents=True)
        return d


class Squid(ProxyKind):
    """Squid 5.7 (Debian ``squid-openssl``): peek at step 1 then bump, or peek then
    splice for the tunnel; its own CA; the test CA upstream; its own hosts file."""

    name = "squid"
    program = "squid"
    certgen = "/usr/lib/squid/security_file_certgen"

    def missing(self) -> str | None:
        if find_program("squid") is None or not Path(self.certgen).exists():
            return "squid (squid-openssl) not installed: run scripts/bench.sh"
        return None

    def version(self) -> str:
        return command_version([find_program("squid") or "squid", "-v"], line_with="Version")

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        d = self._dir(setting, mode)
        d.chmod(0o755)
        ca = TestPKI(d / "ca")  # Squid's own CA (only its ca_cert/ca_key are used)
        port = free_port()
        hosts = d / "hosts"
        hosts.write_text("127.0.0.1 localhost\n")
        db = d / "ssl_db"
        subprocess.run(
            [self.certgen, "-c", "-s", str(db), "-M", "16MB"], check=True, capture_output=True
        )
        rules = (
            "ssl_bump peek step1\nssl_bump bump all"
            if mode == "inspect"
            else "ssl_bump peek step1\nssl_bump splice all"
        )
        conf = d / "squid.conf"
        conf.write_text(
            f"""# generated by benchmarks/peers.py
http_port {HOST}:{port} ssl-bump tls-cert={ca.ca_cert} tls-key={ca.ca_key} \
generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program {self.certgen} -s {db} -M 16MB
sslcrtd_children 5 startup=1 idle=1
acl step1 at_step SslBump1
{rules}
tls_outgoing_options cafile={setting.pki.ca_cert}
acl localnet src 127.0.0.0/8
http_access allow localnet
http_access deny all
hosts_file {hosts}
cache deny all
cache_mem 8 MB
access_log daemon:{d}/access.log squid
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
max_filedescriptors {_nofile()}
client_idle_pconn_timeout {IDLE_SECONDS} seconds
pconn_timeout {IDLE_SECONDS} seconds
read_timeout {IDLE_SECONDS} seconds
shutdown_lifetime 1 seconds
pinger_enable off
visible_hostname bench
via on
"""
        )
        # Squid drops root for its effective user; it must read and write its tree.
        user = pwd.getpwnam("proxy")
        for path in [d, *d.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        squid = find_program("squid") or "squid"
        return _launch(self.name, mode, [squid, "-N", "-f", str(conf)], d, port,
                       ca.ca_cert if mode == "inspect" else setting.pki.ca_cert)


class Mitmproxy(ProxyKind):
    """mitmdump, quiet; tunnel mode ignores every host (``--ignore-hosts '.*'``)."""

    name = "mitmproxy"
    program = "mitmdump"

    def version(self) -> str:
        return command_version([find_program("mitmdump") or "mitmdump", "--version"],
                               line_with="Mitmproxy")

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        d = self._dir(setting, mode)
        port = free_port()
        args = [
            find_program("mitmdump") or "mitmdump",
            "-q",
            "--set", f"confdir={d}",
            "--set", f"ssl_verify_upstream_trusted_ca={setting.pki.ca_cert}",
            "--listen-host", HOST,
            "--listen-port", str(port),
        ]
        if mode == "tunnel":
            args += ["--ignore-hosts", ".*"]
        ca_file = d / "mitmproxy-ca-cert.pem"

        def client_ca() -> Path:
            if mode == "tunnel":
                return setting.pki.ca_cert
            return _wait_for_file(ca_file, lambda: True)

        return _launch(self.name, mode, args, d, port, client_ca)


class ProxyPy(ProxyKind):
    """proxy.py with one worker and one acceptor (faster than its default on 2 cores);
    interception with ``--ca-*`` files in inspect mode, none in tunnel mode."""

    name = "proxy.py"
    program = "proxy"

    def version(self) -> str:
        return "proxy.py " + command_version([find_program("proxy") or "proxy", "--version"])

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        d = self._dir(setting, mode)
        port = free_port()
        args = [
            find_program("proxy") or "proxy",
            "--hostname", HOST,
            "--port", str(port),
            "--num-workers", "1",
            "--num-acceptors", "1",
            "--open-file-limit", str(_nofile()),
            "--backlog", "1024",
            "--timeout", str(IDLE_SECONDS),
            "--log-level", "ERROR",
        ]
        client_ca = setting.pki.ca_cert
        if mode == "inspect":
            ca = TestPKI(d / "ca")
            (d / "certs").mkdir()
            args += [
                "--ca-key-file", str(ca.ca_key),
                "--ca-cert-file", str(ca.ca_cert),
                "--ca-signing-key-file", str(ca.ca_key),
                "--ca-file", str(setting.pki.ca_cert),
                "--ca-cert-dir", str(d / "certs"),
            ]
            client_ca = ca.ca_cert
        return _launch(self.name, mode, args, d, port, client_ca)


ALT_PYTHON = "TLSGATE_BENCH_ALT_PYTHON"


class Tlsgate(ProxyKind):
    """``tlsgate serve`` with a fresh home, the test CA upstream, logging on (its
    default SQLite Web Proxy log); ``--no-inspect`` for the tunnel.  ``workers`` > 1:
    ``serve --workers N`` (named ``tlsgate-Nw`` in the tables).  ``log=False``: the
    same with ``[log] enabled = false`` (``tlsgate-nolog``), measured beside it so that
    each run tells what the Web Proxy log costs (issue 6: < 5 %); an idle connection
    has no log record, so it is left out of the memory workload.  ``pure=True``: the
    same sources run as pure Python (``tlsgate-pure``), from a copy of ``src/`` without
    the compiled modules, so that each run shows what compiling with mypyc gains.
    ``loop="asyncio"``: ``--event-loop asyncio`` instead of the default uvloop
    (``tlsgate-asyncio``), to show what the event loop in C gains.  ``malloc="default"``:
    ``--malloc default`` (``tlsgate-stockmalloc``): glibc's allocator as it is, to show
    what keeping freed memory for the next buffer gains (src/tlsgate/malloc.py).
    ``alt_python=True``: run on the interpreter ``TLSGATE_BENCH_ALT_PYTHON`` names
    (``tlsgate-altpython``; scripts/bench.sh sets it to the python3 on PATH when that is
    not the interpreter the harness runs on), to show what the Python build costs."""

    program = "tlsgate"

    def __init__(
        self,
        workers: int = 1,
        *,
        log: bool = True,
        pure: bool = False,
        loop: str = "auto",
        malloc: str = "tuned",
        alt_python: bool = False,
    ) -> None:
        self.alt_python = alt_python
        self.workers = workers
        self.log = log
        self.pure = pure
        self.loop = loop
        self.malloc = malloc
        self.memory = log and not pure and loop == "auto" and malloc == "tuned" and not alt_python
        name = "tlsgate" if workers == 1 else f"tlsgate-{workers}w"
        name = name if log else f"{name}-nolog"
        name = f"{name}-pure" if pure else name
        name = name if malloc == "tuned" else f"{name}-stockmalloc"
        name = name if loop == "auto" else f"{name}-{loop}"
        self.name = f"{name}-altpython" if alt_python else name

    @property
    def python(self) -> str:
        """The interpreter this kind runs tlsgate on."""
        if self.alt_python:
            return os.environ.get(ALT_PYTHON, "")
        return sys.executable

    def missing(self) -> str | None:
        if self.alt_python:
            alt = self.python
            if not alt:
                return f"{ALT_PYTHON} is not set (scripts/bench.sh sets it)"
            if command_version([alt, "-c", "import tlsgate; print('ok')"]) != "ok":
                return f"tlsgate is not installed for {alt}: {alt} -m pip install -e ."
            return None
        try:
            import tlsgate  # noqa: F401
        except ImportError:
            return "tlsgate is not installed: pip install -e . (scripts/bench.sh does)"
        return None

    def _pure_source(self, directory: Path) -> Path:
        """A copy of ``src/`` without compiled modules, for ``PYTHONPATH``."""
        copy = directory / "pure-src"
        if not copy.exists():
            ignore = shutil.ignore_patterns("*.so", "__pycache__")
            shutil.copytree(ROOT / "src", copy, ignore=ignore)
        return copy

    def version(self) -> str:
        ask = (
            "import tlsgate, tlsgate.build as b, tlsgate.eventloop as e, tlsgate.malloc as m; "
            f"print(tlsgate.__version__, b.describe() + ', ' + e.choose({self.loop!r}).describe()"
            f" + ', ' + m.tune({self.malloc!r}) + ', ' + b.interpreter())"
        )
        with tempfile.TemporaryDirectory() as tmp:
            env = None
            if self.pure:  # asked of the copy the pure kind runs from
                env = {**os.environ, "PYTHONPATH": str(self._pure_source(Path(tmp)))}
            version = command_version([self.python, "-c", ask], env=env)
        commit = command_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = command_version(["git", "-C", str(ROOT), "status", "--porcelain", "src"])
        changes = ", with uncommitted changes in src/" if dirty not in ("", "unknown") else ""
        number, _, build = version.partition(" ")
        return f"tlsgate {number} ({build}, commit {commit}{changes})"

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        d = self._dir(setting, mode)
        home = d / "home"
        port = free_port()
        args = [
            self.python, "-m", "tlsgate.cli", "serve",
            "--listen", f"{HOST}:{port}",
            "--home", str(home),
            "--upstream-ca", str(setting.pki.ca_cert),
            "--log-level", "warning",
            "--event-loop", self.loop,
            "--malloc", self.malloc,
        ]
        config = setting.tlsgate_config(d)
        if config is not None:
            if not self.log:
                with config.open("a") as f:
                    f.write("\n[log]\nenabled = false\n")
            args += ["--config", str(config)]
        if mode == "tunnel":
            args.append("--no-inspect")
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        env = {k: v for k, v in os.environ.items() if k not in ("TLSGATE_HOME", "TLSGATE_STORE")}
        if self.pure:
            env["PYTHONPATH"] = str(self._pure_source(d))

        def client_ca() -> Path:
            if mode == "tunnel":
                return setting.pki.ca_cert
            return _wait_for_file(home / "ca" / "ca.pem", lambda: True)

        return _launch(self.name, mode, args, d, port, client_ca, env=env)


class FloorRelay(ProxyKind):
    """The minimal relay of ``benchmarks.floor`` (its ``raw`` stage: TLS through memory
    BIOs, httptools, heads rebuilt, pooled upstream connections, nothing else) run as
    a proxy process: a measuring stick beside Squid in the same run, not a proxy.  It
    serves CONNECT and keep-alive HTTPS only, so it takes the keep-alive workloads: in
    every run, they show what a Python relay with none of tlsgate's features reaches on
    the machine at hand."""

    name = "relay-raw"
    memory = False
    workloads = frozenset({"keepalive8", "keepalive64"})

    def missing(self) -> str | None:
        return Tlsgate().missing()  # it is built from tlsgate's CA and config modules

    def version(self) -> str:
        ask = "import tlsgate.eventloop as e; print(e.choose('auto').describe())"
        loop = command_version([sys.executable, "-c", ask])
        python = ".".join(map(str, sys.version_info[:3]))
        return f"benchmarks.floor raw stage (Python {python}, {loop})"

    def start(self, mode: Mode, setting: Setting) -> ProxyProcess:
        if mode != "inspect":
            raise PeerError(f"{self.name} inspects only; it has no {mode} mode")
        d = self._dir(setting, mode)
        port = free_port()
        args = [
            sys.executable, "-m", "benchmarks.floor",
            "--serve", f"{HOST}:{port}",
            "--home", str(d / "home"),
            "--upstream-ca", str(setting.pki.ca_cert),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ca = d / "home" / "ca" / "ca.pem"

        def client_ca() -> Path:
            return _wait_for_file(ca, lambda: True)

        return _launch(self.name, mode, args, d, port, client_ca, env=env)


KINDS: dict[str, ProxyKind] = {
    k.name: k
    for k in (
        Squid(),
        Mitmproxy(),
        ProxyPy(),
        Tlsgate(),
        Tlsgate(log=False),
        Tlsgate(pure=True),
        Tlsgate(loop="asyncio"),
        Tlsgate(malloc="default"),
        Tlsgate(workers=2),
        *((Tlsgate(alt_python=True),) if os.environ.get(ALT_PYTHON) else ()),
        FloorRelay(),
    )
}
"""The proxies a run measures unless told otherwise, in table order (Squid first: ratios
are to Squid).  Each runs the workloads it takes (``ProxyKind.workloads``); its other
cells stay empty."""

EXTRA_KINDS: dict[str, ProxyKind] = {
    k.name: k for k in (Tlsgate(alt_python=True),) if k.name not in KINDS
}
"""Only when named (``--proxies squid,tlsgate,tlsgate-altpython``)."""

ALL_KINDS: dict[str, ProxyKind] = {**KINDS, **EXTRA_KINDS}
