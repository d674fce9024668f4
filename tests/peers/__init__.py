"""Real peers for tests: a throwaway PKI, nginx and PostgreSQL on loopback.

Everything here starts real programs bound to 127.0.0.1 only; nothing is mocked.
The pytest fixtures that wrap these classes live in ``tests/conftest.py``.
"""
