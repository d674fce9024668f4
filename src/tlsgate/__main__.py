"""``python -m tlsgate``: the same as the ``tlsgate`` command."""

from tlsgate.cli import main

main()
