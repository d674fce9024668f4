"""The admin ASGI application: the JSON API (:mod:`.api`), the console (:mod:`.web`),
the vendored static files, error mapping and security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.staticfiles import StaticFiles

from tlsgate import __version__
from tlsgate.admin import api, web
from tlsgate.admin.state import AdminState
from tlsgate.config.home import Home
from tlsgate.errors import TlsgateError

STATIC = Path(__file__).parent / "static"

# Scripts only from our own origin (htmx and Chart.js are vendored); htmx adds a small
# inline <style> for its indicators, hence 'unsafe-inline' for styles alone.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def create_app(home: Home, store_url: str | None, *, tls: bool = False) -> FastAPI:
    app = FastAPI(
        title="tlsgate admin API",
        version=__version__,
        description="Inspection settings, rules, staged changes, apply, members, the Web "
        "Proxy log and the CA of a tlsgate array. See docs/admin.md.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.admin = AdminState(home=home, store_url=store_url, tls=tls)

    @app.exception_handler(TlsgateError)
    async def tlsgate_error(request: Request, exc: TlsgateError) -> Response:
        if not request.url.path.startswith("/api/") and isinstance(exc, api.ApiError):
            return web.refused(request, exc)
        return api.error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own refusals (unparsable body, unknown path) in our error shape.
        return JSONResponse(
            {"error": str(exc.detail), "fix": None},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"error": f"invalid request: {problems}", "fix": None}, 422)

    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
    return app
