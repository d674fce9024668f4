"""The JSON API under ``/api`` (OpenAPI document: ``/api/openapi.json``).

Reads need a session (``POST /api/login``) or an API token (``Authorization: Bearer
TOKEN``, from ``tlsgate admin add-token``); changes made with a session also need its
CSRF token in ``X-CSRF-Token``.  Every change is staged like the CLI stages it; ``POST /api/apply``
makes the staged changes a revision (409 when ``expected_revision`` is no longer the
newest).  Errors are ``{"error": ..., "fix": ...}``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from tlsgate.admin import actions
from tlsgate.admin.sessions import COOKIE, Session
from tlsgate.admin.state import AdminState, client_address
from tlsgate.admin.stats import dashboard_stats
from tlsgate.admin.users import (
    ADD_TOKEN_HINT,
    ADD_USER_HINT,
    check_password,
    check_token,
    has_users,
    user_exists,
)
from tlsgate.errors import ConfigError, ConflictError, StoreError, TlsgateError, UsageError
from tlsgate.log.formats import render_detail, to_dict
from tlsgate.log.query import LogQuery, find_request, parse_since, parse_source, run_query
from tlsgate.policy import edit
from tlsgate.store import ChangeOp
from tlsgate.tls.ca import export_ca, load_or_create_ca

JSONDict = dict[str, Any]


class ApiError(TlsgateError):
    """An HTTP-level refusal (not logged in, no CSRF token, rate limited)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.headers = headers or {}


def state_of(request: Request) -> AdminState:
    st: AdminState = request.app.state.admin
    return st


NOT_LOGGED_IN_FIX = "POST /api/login with name and password, or send Authorization: Bearer TOKEN"
_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tlsgate admin"'}


async def _token_session(st: AdminState, header: str) -> Session:
    """``Authorization: Bearer TOKEN``: an API client, authenticated without a session.

    No CSRF token is needed: a browser never adds this header by itself (unlike a
    cookie), so a cross-site page cannot make a request carrying it.
    """
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "the Authorization header is not 'Bearer TOKEN'",
            fix=f"send an API token from '{ADD_TOKEN_HINT}' as 'Authorization: Bearer TOKEN'",
            headers=_BEARER_CHALLENGE,
        )
    name = await st.with_credentials(lambda s: check_token(s, token.strip()))
    if name is None:
        raise ApiError(
            401,
            "unknown or removed API token",
            fix=f"create a token with '{ADD_TOKEN_HINT}' (see 'tlsgate admin list')",
            headers=_BEARER_CHALLENGE,
        )
    return Session(name, csrf="", expires=math.inf, via="API token")


async def authenticate(request: Request) -> Session:
    """The request's API token, else its login session; 401 if neither."""
    header = request.headers.get("authorization")
    if header is not None:
        return await _token_session(state_of(request), header)
    return await login_session(request)


async def login_session(request: Request) -> Session:
    """The request's login session, whose user must still exist (the console's pages
    accept nothing else); 401 otherwise."""
    st = state_of(request)
    session = st.session(request)
    if session is None:
        if not await st.with_credentials(has_users):
            raise ApiError(401, "no admin user exists", fix=f"create one with '{ADD_USER_HINT}'")
        raise ApiError(401, "not logged in", fix=NOT_LOGGED_IN_FIX)
    user = session.user
    if not await st.with_credentials(lambda s: user_exists(s, user)):
        # Removed with 'tlsgate admin remove-user' (maybe on another member's host).
        st.sessions.end(request.cookies.get(COOKIE))
        raise ApiError(401, f"admin user {user!r} no longer exists", fix=NOT_LOGGED_IN_FIX)
    return session


async def _require(request: Request, *, change: bool) -> Session:
    session = await authenticate(request)
    if change and session.via != "API token" and not state_of(request).csrf_valid(request, session):
        raise ApiError(
            403,
            "missing or wrong CSRF token",
            fix="send the session's csrf_token (from /api/login or /api/session) in X-CSRF-Token",
        )
    return session


# Declared for the OpenAPI document only (authenticate() reads the headers itself).
_token_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description=f"An API token from '{ADD_TOKEN_HINT}'; no CSRF token needed.",
)
_cookie_scheme = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The session cookie from POST /api/login; changes also need X-CSRF-Token.",
)


async def reader(
    request: Request,
    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_scheme)],
    _cookie: Annotated[str | None, Depends(_cookie_scheme)],
) -> Session:
    return await _require(request, change=False)


async def changer(
    request: Request,
    _token: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_scheme)],
    _cookie: Annotated[str | None, Depends(_cookie_scheme)],
) -> Session:
    return await _require(request, change=True)


Reader = Annotated[Session, Depends(reader)]
Changer = Annotated[Session, Depends(changer)]


class ErrorBody(BaseModel):
    error: str
    fix: str | None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Refused: the change is not valid"},
    401: {"model": ErrorBody, "description": "Not logged in, or no admin user exists"},
    403: {"model": ErrorBody, "description": "Missing or wrong CSRF token"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Another revision was applied meanwhile"},
    429: {"model": ErrorBody, "description": "Too many failed logins"},
    503: {"model": ErrorBody, "description": "The configuration or log store is unreachable"},
}
router = APIRouter(prefix="/api", responses=_ERRORS)


# -- session ---------------------------------------------------------------------------


class Login(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    user: str
    csrf_token: str


def set_session_cookie(response: Response, st: AdminState, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=st.tls,
        path="/",
    )


async def login_user(request: Request, name: str, password: str) -> tuple[str, Session]:
    """Check the password (rate-limited per client address) and open a session."""
    st = state_of(request)
    address = client_address(request)
    wait = st.sessions.limiter.retry_after(address)
    if wait:
        raise ApiError(
            429,
            "too many failed logins from this address",
            fix=f"try again in {int(wait) + 1} s",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    if not await st.with_credentials(has_users):
        raise ApiError(401, "no admin user exists", fix=f"create one with '{ADD_USER_HINT}'")
    user = await st.with_credentials(lambda s: check_password(s, name, password))
    if user is None:
        st.sessions.limiter.failure(address)
        raise ApiError(401, "wrong user name or password")
    st.sessions.limiter.success(address)
    return st.sessions.create(user.name)


@router.post("/login", response_model=SessionInfo, tags=["session"])
async def login(body: Login, request: Request, response: Response) -> SessionInfo:
    """Log in; the session cookie is set and the CSRF token returned."""
    token, session = await login_user(request, body.name, body.password)
    set_session_cookie(response, state_of(request), token)
    return SessionInfo(user=session.user, csrf_token=session.csrf)


@router.post("/logout", tags=["session"])
async def logout(request: Request, session: Changer, response: Response) -> JSONDict:
    state_of(request).sessions.end(request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/")
    return {"ok": True}


@router.get("/session", response_model=SessionInfo, tags=["session"])
async def session_info(session: Reader) -> SessionInfo:
    return SessionInfo(user=session.user, csrf_token=session.csrf)


# -- inspection --------------------------------------------------------------------------


class ExceptionValue(BaseModel):
    value: str = Field(min_length=1, max_length=300)


class Enabled(BaseModel):
    enabled: bool


class OnClientCertificate(BaseModel):
    action: Literal["tunnel", "deny"]


class Staged(BaseModel):
    staged: int
    """Number of staged changes after this one."""


async def _stage(request: Request, session: Session, ops: list[ChangeOp]) -> Staged:
    author = actions.console_author(session.user, session.via)
    count = await state_of(request).with_store(lambda s: actions.stage(s, ops, author))
    return Staged(staged=count)


@router.get("/inspection", tags=["inspection"])
async def inspection(request: Request, _: Reader) -> JSONDict:
    """Inspection settings: applied and staged (with the exceptions)."""
    return await state_of(request).with_store(actions.inspection_view)


@router.put("/inspection/enabled", response_model=Staged, tags=["inspection"])
async def set_enabled(body: Enabled, request: Request, session: Changer) -> Staged:
    return await _stage(request, session, [actions.enabled_op(body.enabled)])


@router.put("/inspection/on-client-certificate", response_model=Staged, tags=["inspection"])
async def set_on_client_certificate(
    body: OnClientCertificate, request: Request, session: Changer
) -> Staged:
    return await _stage(request, session, [actions.on_client_certificate_op(body.action)])


@router.post("/inspection/exceptions/{kind}", response_model=Staged, tags=["inspection"])
async def add_exception(
    kind: actions.ExceptionKind, body: ExceptionValue, request: Request, session: Changer
) -> Staged:
    """Stage a source (IP/CIDR) or destination (host, *.domain) exception."""
    return await _stage(request, session, [actions.exception_op(kind, "add", body.value)])


@router.delete("/inspection/exceptions/{kind}", response_model=Staged, tags=["inspection"])
async def remove_exception(
    kind: actions.ExceptionKind,
    request: Request,
    session: Changer,
    value: Annotated[str, Query(min_length=1, max_length=300)],
) -> Staged:
    return await _stage(request, session, [actions.exception_op(kind, "remove", value)])


class Server(BaseModel):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


@router.get("/learned", tags=["inspection"])
async def learned(request: Request, _: Reader) -> list[JSONDict]:
    """Servers learned to need a client certificate (not expired)."""
    return await state_of(request).with_store(actions.learned_view)


@router.post("/learned/forget", tags=["inspection"])
async def forget(body: Server, request: Request, _: Changer) -> JSONDict:
    """Forget a learned server now (members probe it again on its next connection)."""
    await state_of(request).with_store(lambda s: actions.forget(s, body.host, body.port))
    return {"forgotten": f"{body.host}:{body.port}"}


@router.post("/learned/make-permanent", response_model=Staged, tags=["inspection"])
async def make_permanent(body: Server, request: Request, session: Changer) -> Staged:
    """Stage the learned server's host as a destination exception."""
    author = actions.console_author(session.user, session.via)
    count = await state_of(request).with_store(
        lambda s: actions.make_permanent(s, body.host, body.port, author)
    )
    return Staged(staged=count)


# -- rules -----------------------------------------------------------------------------------


class Rule(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    action: Literal["allow", "deny"]
    sources: list[str] = Field(min_length=1)
    destinations: list[str] = Field(min_length=1)
    protocols: list[Literal["http", "https"]] | None = None
    connect_ports: list[int] | None = None
    methods: list[str] = []
    users: list[str] = []
    enabled: bool = True
    description: str = ""


class NewRule(BaseModel):
    rule: Rule
    position: int | None = Field(default=None, ge=1)
    before: str | None = None


class Move(BaseModel):
    position: int | None = Field(default=None, ge=1)
    before: str | None = None


async def _stage_policy(request: Request, session: Session, change: actions.PolicyChange) -> Staged:
    author = actions.console_author(session.user, session.via)
    count = await state_of(request).with_store(lambda s: actions.stage_policy(s, change, author))
    return Staged(staged=count)


@router.get("/rules", tags=["rules"])
async def rules(request: Request, _: Reader) -> JSONDict:
    """Ordered access rules, applied and staged (the built-in Default rule is last)."""
    return await state_of(request).with_store(actions.rules_view)


@router.post("/rules", response_model=Staged, tags=["rules"])
async def add_rule(body: NewRule, request: Request, session: Changer) -> Staged:
    rule = body.rule.model_dump(exclude_none=True)
    return await _stage_policy(
        request,
        session,
        lambda c: edit.add_rule(c, rule, position=body.position, before=body.before),
    )


@router.delete("/rules/{name}", response_model=Staged, tags=["rules"])
async def remove_rule(name: str, request: Request, session: Changer) -> Staged:
    return await _stage_policy(request, session, lambda c: edit.remove_rule(c, name))


@router.post("/rules/{name}/move", response_model=Staged, tags=["rules"])
async def move_rule(name: str, body: Move, request: Request, session: Changer) -> Staged:
    if body.position is None and body.before is None:
        raise UsageError("give position or before")
    return await _stage_policy(
        request,
        session,
        lambda c: edit.move_rule(c, name, position=body.position, before=body.before),
    )


@router.post("/rules/{name}/enable", response_model=Staged, tags=["rules"])
async def enable_rule(name: str, request: Request, session: Changer) -> Staged:
    return await _stage_policy(request, session, lambda c: edit.set_rule_enabled(c, name, True))


@router.post("/rules/{name}/disable", response_model=Staged, tags=["rules"])
async def disable_rule(name: str, request: Request, session: Changer) -> Staged:
    return await _stage_policy(request, session, lambda c: edit.set_rule_enabled(c, name, False))


@router.get("/sets", tags=["rules"])
async def sets(request: Request, _: Reader) -> list[JSONDict]:
    """Networks and sets (staged configuration)."""
    return await state_of(request).with_store(actions.sets_view)


# -- configuration -------------------------------------------------------------------------


class Apply(BaseModel):
    message: str = Field(default="", max_length=500)
    expected_revision: int | None = Field(default=None, ge=1)


class Rollback(BaseModel):
    revision: int = Field(ge=1)
    message: str = Field(default="", max_length=500)


@router.get("/staged", tags=["configuration"])
async def staged(request: Request, _: Reader) -> JSONDict:
    """Staged changes and their diff against the applied revision."""
    return await state_of(request).with_store(actions.staged_view)


@router.post("/apply", tags=["configuration"])
async def apply(body: Apply, request: Request, session: Changer) -> JSONDict:
    """Staged changes → a new revision; 409 when ``expected_revision`` is stale."""
    author = actions.console_author(session.user, session.via)
    rev = await state_of(request).with_store(
        lambda s: actions.apply(s, body.message, author, body.expected_revision)
    )
    return actions.revision_view(rev)


@router.post("/discard", tags=["configuration"])
async def discard(request: Request, _: Changer) -> JSONDict:
    return {"discarded": await state_of(request).with_store(lambda s: s.discard())}


@router.get("/history", tags=["configuration"])
async def history(
    request: Request, _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[JSONDict]:
    revs = await state_of(request).with_store(lambda s: s.history(limit))
    return [actions.revision_view(r) for r in revs]


@router.post("/rollback", tags=["configuration"])
async def rollback(body: Rollback, request: Request, session: Changer) -> JSONDict:
    """A new revision with the content of an older one (staged changes stay)."""
    author = actions.console_author(session.user, session.via)
    message = body.message or f"rollback to revision {body.revision}"
    rev = await state_of(request).with_store(
        lambda s: actions.rollback(s, body.revision, message, author)
    )
    return actions.revision_view(rev)


@router.get("/members", tags=["configuration"])
async def members(request: Request, _: Reader) -> JSONDict:
    """Every member: Synced / Pending / Error / Unreachable with a description."""
    return await state_of(request).with_store(actions.members_view)


# -- log -------------------------------------------------------------------------------------


def log_query(
    status: str | None = None,
    source: str | None = None,
    host: str | None = None,
    rule: str | None = None,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 100,
) -> LogQuery:
    """Filters as ``tlsgate log`` takes them (status: comma-separated codes)."""
    codes: tuple[int, ...] = ()
    if status and status.strip():
        try:
            codes = tuple(int(x) for x in status.split(",") if x.strip())
        except ValueError:
            raise UsageError(
                f"{status!r} is not a list of status codes such as 200,12229"
            ) from None
    return LogQuery(
        status=codes,
        source=parse_source(source) if source and source.strip() else None,
        host=host.strip() or None if host else None,
        rule=rule or None,
        user=user or None,
        since=parse_since(since) if since and since.strip() else None,
        until=parse_since(until) if until and until.strip() else None,
        limit=limit,
    )


@router.get("/log", tags=["log"])
async def log_records(
    request: Request,
    _: Reader,
    status: str | None = None,
    source: str | None = None,
    host: str | None = None,
    rule: str | None = None,
    user: str | None = None,
    since: Annotated[str | None, Query(description="10m, 2h, 3d or an ISO time")] = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JSONDict]:
    """The newest matching records, newest first."""
    q = log_query(status, source, host, rule, user, since, until, limit)
    records = await asyncio.to_thread(run_query, state_of(request).log(), q)
    return [to_dict(r) for r in reversed(records)]


@router.get("/log/{request_id}", tags=["log"])
async def log_record(request_id: str, request: Request, _: Reader) -> JSONDict:
    rec = await asyncio.to_thread(find_request, state_of(request).log(), request_id)
    if rec is None:
        raise ApiError(404, f"no log record with request id {request_id!r}")
    return {"record": to_dict(rec), "detail": render_detail(rec)}


@router.get("/stats", tags=["log"])
async def stats(
    request: Request, _: Reader, minutes: Annotated[int, Query(ge=1, le=1440)] = 60
) -> JSONDict:
    """Dashboard figures per minute over the last ``minutes``."""
    return await asyncio.to_thread(dashboard_stats, state_of(request).log(), minutes)


# -- CA ----------------------------------------------------------------------------------------


async def ca_bytes(request: Request, fmt: Literal["pem", "der"]) -> bytes:
    ca = await asyncio.to_thread(load_or_create_ca, state_of(request).home)
    return export_ca(ca, fmt)


@router.get("/ca.pem", tags=["ca"], response_class=Response)
async def ca_pem(request: Request, _: Reader) -> Response:
    """The CA certificate to install in clients (PEM)."""
    return Response(
        await ca_bytes(request, "pem"),
        media_type="application/x-pem-file",
        headers={"Content-Disposition": 'attachment; filename="tlsgate-ca.pem"'},
    )


@router.get("/ca.der", tags=["ca"], response_class=Response)
async def ca_der(request: Request, _: Reader) -> Response:
    """The CA certificate (DER, for Windows and Android)."""
    return Response(
        await ca_bytes(request, "der"),
        media_type="application/x-x509-ca-cert",
        headers={"Content-Disposition": 'attachment; filename="tlsgate-ca.der"'},
    )


def error_response(exc: TlsgateError) -> JSONResponse:
    if isinstance(exc, ApiError):
        status, headers = exc.status, exc.headers
    elif isinstance(exc, ConflictError):
        status, headers = 409, {}
    elif isinstance(exc, UsageError | ConfigError):
        status, headers = 400, {}
    elif isinstance(exc, StoreError):
        status, headers = 503, {}
    else:
        status, headers = 500, {}
    return JSONResponse({"error": exc.message, "fix": exc.fix}, status_code=status, headers=headers)
