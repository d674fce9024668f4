"""The home directory: the CA, the embedded store, the leaf-certificate cache and state.

Chosen by ``--home``, else ``TLSGATE_HOME``, else ``$XDG_DATA_HOME/tlsgate`` (by default
``~/.local/share/tlsgate``).  Every tlsgate command resolves it the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tlsgate.errors import ConfigError


def default_home() -> Path:
    env = os.environ.get("TLSGATE_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "tlsgate"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def leaf_key(self) -> Path:
        return self.ca_dir / "leaf.key"

    @property
    def leaf_cache(self) -> Path:
        return self.root / "leaf-cache"

    @property
    def store_path(self) -> Path:
        return self.root / "tlsgate.db"

    @property
    def config_file(self) -> Path:
        return self.root / "tlsgate.toml"

    def ensure(self) -> Home:
        """Create the directory tree (private to the user) or raise a clear error."""
        try:
            for d in (self.root, self.ca_dir, self.leaf_cache):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create home directory {self.root}: {exc.strerror}",
                fix="choose a writable directory with --home or TLSGATE_HOME",
            ) from None
        return self


def resolve_home(option: str | Path | None) -> Home:
    return Home(Path(option).expanduser() if option else default_home())
