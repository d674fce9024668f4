"""Benchmarks: tlsgate side by side with Squid, mitmproxy and proxy.py (``python -m
benchmarks.run``; ``scripts/bench.sh`` installs the peers first). See BENCHMARKS.md."""
