"""The admin console: an HTTP API (``/api``, OpenAPI at ``/api/openapi.json``) and a web
console served by ``tlsgate serve --admin HOST:PORT``.  See docs/admin.md.

Modules: :mod:`.users` (admin users and API tokens, in the configuration store),
:mod:`.sessions` (login sessions, CSRF, rate limit), :mod:`.tls` (the console's
certificates from tlsgate's CA), :mod:`.actions` (the operations the API and the
console share with the CLI's functions), :mod:`.stats` (dashboard figures from the
log), :mod:`.api` (JSON routes), :mod:`.web` (HTML pages), :mod:`.app` (the ASGI
application), :mod:`.server` (running it in the member's event loop).
"""
