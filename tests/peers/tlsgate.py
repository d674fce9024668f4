"""Run real ``tlsgate`` processes for end-to-end tests.

``TlsgateProcess`` starts ``tlsgate serve`` on a free loopback port with its own home,
waits until it listens and stops it with SIGTERM (graceful) at the end.  ``cli`` runs
any other tlsgate command against the same home and returns the completed process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.ports import free_port, wait_for_port

TLSGATE = [sys.executable, "-m", "tlsgate.cli"]


def cli(
    home: Path, *args: str, store: str | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``tlsgate ARGS --home HOME`` and return the result (never raises on exit code)."""
    env = dict(os.environ, TLSGATE_HOME=str(home))
    if store:
        env["TLSGATE_STORE"] = store
    return subprocess.run(
        [*TLSGATE, *args], env=env, input=input, capture_output=True, text=True, timeout=timeout
    )


def allow_ports_toml(ports: list[int]) -> str:
    """The default "Allow web access" rule, with CONNECT allowed to ``ports`` too."""
    if not ports:
        return ""
    allowed = ", ".join(str(p) for p in sorted({443, *ports}))
    return (
        '\n[[rules]]\nname = "Allow web access"\naction = "allow"\nsources = ["Internal"]\n'
        f'destinations = ["any"]\nconnect_ports = [{allowed}]\n'
    )


@dataclass
class TlsgateProcess:
    home: Path
    upstream_ca: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    store: str | None = None
    member: str | None = None
    config: str = ""
    """tlsgate.toml text to start with (written to the home directory)."""
    connect_ports: list[int] = field(default_factory=list)
    """Ports CONNECT may reach besides 443 (the default policy allows 443 only)."""
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.home / "ca" / "ca.pem"

    def start(self, timeout: float = 30.0) -> TlsgateProcess:
        if not self.port:
            self.port = free_port()
        args = [
            *TLSGATE,
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--home",
            str(self.home),
            "--log-level",
            "debug",
        ]
        if self.upstream_ca is not None:
            args += ["--upstream-ca", str(self.upstream_ca)]
        if self.member:
            args += ["--member", self.member]
        args += self.extra_args
        if self.config or self.connect_ports:
            cfg = self.home / "tlsgate.toml"
            cfg.write_text(self.config + allow_ports_toml(self.connect_ports))
            args += ["--config", str(cfg)]
        env = dict(os.environ)
        if self.store:
            env["TLSGATE_STORE"] = self.store
        self.log_path = self.home / f"serve-{self.port}.log"
        logf = self.log_path.open("w")
        self.proc = subprocess.Popen(
            args, env=env, stdout=logf, stderr=subprocess.STDOUT, text=True
        )
        logf.close()
        try:
            wait_for_port(
                "127.0.0.1",
                self.port,
                timeout,
                alive=lambda: self.proc is not None and self.proc.poll() is None,
            )
        except Exception as exc:
            raise RuntimeError(f"tlsgate did not start: {exc}\n{self.output()}") from exc
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop with ``sig`` and return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def cli(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, store=self.store, **kw)  # type: ignore[arg-type]

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in tlsgate output:\n{self.output()}")

    def __enter__(self) -> TlsgateProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
