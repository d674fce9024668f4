"""tlsgate: a forward web proxy that inspects HTTPS and knows when it must not."""

__version__ = "0.1.0"
