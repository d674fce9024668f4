"""The configuration a diagnostic command evaluates: a file, the applied revision, or defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlsgate.config.home import Home
from tlsgate.config.loader import load_config_file
from tlsgate.config.model import TlsgateConfig
from tlsgate.policy.inspection import LearnedEntry


@dataclass
class Effective:
    config: TlsgateConfig
    source: str
    """Where the configuration came from, for the user: a file, a revision, defaults."""
    learned_entries: dict[tuple[str, int], LearnedEntry] = field(default_factory=dict)

    def learned(self, host: str, port: int) -> LearnedEntry | None:
        return self.learned_entries.get((host, port))


def effective_config(home: Home, store_url: str | None, config_file: Path | None) -> Effective:
    if config_file is not None:
        return Effective(load_config_file(config_file), str(config_file))
    return Effective(TlsgateConfig(), "built-in defaults")
