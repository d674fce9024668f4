"""The IO layer: the only code in tlsgate that reads and writes sockets."""
