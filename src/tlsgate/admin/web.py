"""The web console: server-rendered pages (Jinja2) made live with htmx.

Pages read through the same functions as the API (:mod:`.actions`); buttons post small
htmx requests carrying the session's CSRF token (``hx-headers`` on ``<body>``).  A
change answers ``HX-Refresh`` so the page, and its "N changes not applied" banner,
reloads; a refused change answers with the error in the page's message area.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from tlsgate.admin import actions
from tlsgate.admin.api import (
    ApiError,
    log_query,
    login_session,
    login_user,
    set_session_cookie,
    state_of,
)
from tlsgate.admin.sessions import COOKIE, Session
from tlsgate.admin.users import ADD_USER_HINT, has_users
from tlsgate.errors import TlsgateError, UsageError
from tlsgate.log.formats import render_detail, status_text
from tlsgate.log.query import find_request, run_query
from tlsgate.policy import edit
from tlsgate.store import ChangeOp, Store

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)

PAGES = [
    ("/", "Dashboard"),
    ("/inspection", "HTTPS inspection"),
    ("/rules", "Rules"),
    ("/log", "Log"),
    ("/configuration", "Configuration"),
    ("/ca", "CA"),
]


def refused(request: Request, exc: ApiError) -> Response:
    """Not logged in (or no admin exists) on a console URL: go to the login page; a
    missing CSRF token is refused outright."""
    if exc.status == 403:
        return Response(f"refused: {exc.message}", status_code=403, media_type="text/plain")
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    return RedirectResponse("/login", status_code=303)


async def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    session = await login_session(request)
    st = state_of(request)
    count = await st.with_store(lambda s: len(s.staged()))
    flash, session.flash = session.flash, []
    return templates.TemplateResponse(
        request,
        template,
        {
            "user": session.user,
            "csrf": session.csrf,
            "staged_count": count,
            "pages": PAGES,
            "path": request.url.path,
            "flash": flash,
            **context,
        },
    )


def _fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)


async def _change(
    request: Request, work: Callable[[Session, dict[str, str]], Awaitable[str]]
) -> Response:
    """A state-changing console request: session + CSRF, then ``work``; the page reloads
    with ``work``'s message, or the error shows in the message area."""
    st = state_of(request)
    session = await login_session(request)
    if not st.csrf_valid(request, session):
        raise ApiError(403, "missing or wrong CSRF token")
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        message = await work(session, form)
    except TlsgateError as exc:
        return HTMLResponse(
            f'<div class="error">{_escape(exc.one_line())}</div>',
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    session.flash.append(message)
    return Response(status_code=204, headers={"HX-Refresh": "true"})


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _stage_ops(request: Request, ops: list[ChangeOp]) -> Callable[[Session], Awaitable[int]]:
    async def run(session: Session) -> int:
        author = actions.console_author(session.user)
        return await state_of(request).with_store(lambda s: actions.stage(s, ops, author))

    return run


def _staged_message(count: int) -> str:
    return f"Staged. {count} change(s) not applied yet: review and apply them on Configuration."


# -- login -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    users = await state_of(request).with_credentials(has_users)
    return _fragment(
        request, "login.html", no_users=not users, hint=ADD_USER_HINT, error=None, name=""
    )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    form = await request.form()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    users = await state_of(request).with_credentials(has_users)
    error = None
    if not _same_origin(request):
        error = "refused: the login form was posted from another site"
    else:
        try:
            token, _ = await login_user(request, name, password)
        except ApiError as exc:
            error = exc.one_line()
        else:
            response = RedirectResponse("/", status_code=303)
            set_session_cookie(response, state_of(request), token)
            return response
    page = _fragment(
        request, "login.html", no_users=not users, hint=ADD_USER_HINT, error=error, name=name
    )
    page.status_code = 401
    return page


@router.post("/logout")
async def logout(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        state_of(request).sessions.end(request.cookies.get(COOKIE))
        return "logged out"

    return await _change(request, work)


# -- dashboard ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    return await _page(request, "dashboard.html", title="Dashboard")


# -- inspection --------------------------------------------------------------------------------


def _merged(applied: list[str], staged: list[str]) -> list[tuple[str, str]]:
    """Entries with their state: applied, staged (to be added) or removal staged."""
    out = [(e, "applied" if e in staged else "removal staged") for e in applied]
    out += [(e, "staged") for e in staged if e not in applied]
    return out


@router.get("/inspection", response_class=HTMLResponse)
async def inspection_page(request: Request) -> HTMLResponse:
    def read(store: Store) -> dict[str, Any]:
        view = actions.inspection_view(store)
        return {"view": view, "learned": actions.learned_view(store)}

    data = await state_of(request).with_store(read)
    view = data["view"]
    return await _page(
        request,
        "inspection.html",
        title="HTTPS inspection",
        applied=view["applied"],
        staged=view["staged"],
        sources=_merged(view["applied"]["source_exceptions"], view["staged"]["source_exceptions"]),
        destinations=_merged(
            view["applied"]["destination_exceptions"], view["staged"]["destination_exceptions"]
        ),
        learned=data["learned"],
    )


@router.post("/ui/inspection/exception")
async def ui_exception(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        kind = form.get("kind", "")
        action = form.get("action", "")
        if kind not in ("source", "destination") or action not in ("add", "remove"):
            raise UsageError("kind must be source or destination, action add or remove")
        op = actions.exception_op(kind, action, form.get("value", ""))  # type: ignore[arg-type]
        return _staged_message(await _stage_ops(request, [op])(session))

    return await _change(request, work)


@router.post("/ui/inspection/settings")
async def ui_settings(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        ops = []
        if "enabled" in form:
            ops.append(actions.enabled_op(form["enabled"] == "true"))
        if "on_client_certificate" in form:
            value = form["on_client_certificate"]
            if value not in ("tunnel", "deny"):
                raise UsageError("on client certificate must be tunnel or deny")
            ops.append(actions.on_client_certificate_op(value))  # type: ignore[arg-type]
        return _staged_message(await _stage_ops(request, ops)(session))

    return await _change(request, work)


def _server(form: dict[str, str]) -> tuple[str, int]:
    try:
        return form["host"], int(form["port"])
    except (KeyError, ValueError):
        raise UsageError("host and port are required") from None


@router.post("/ui/learned/forget")
async def ui_forget(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        host, port = _server(form)
        await state_of(request).with_store(lambda s: actions.forget(s, host, port))
        return f"Forgot {host}:{port}; members probe it again on its next connection."

    return await _change(request, work)


@router.post("/ui/learned/permanent")
async def ui_permanent(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        host, port = _server(form)
        author = actions.console_author(session.user)
        count = await state_of(request).with_store(
            lambda s: actions.make_permanent(s, host, port, author)
        )
        return _staged_message(count)

    return await _change(request, work)


# -- rules -------------------------------------------------------------------------------------


@router.get("/rules", response_class=HTMLResponse)
async def rules_page(request: Request) -> HTMLResponse:
    def read(store: Store) -> dict[str, Any]:
        return {"rules": actions.rules_view(store), "sets": actions.sets_view(store)}

    data = await state_of(request).with_store(read)
    applied_names = {r["name"] for r in data["rules"]["applied"]}
    return await _page(
        request,
        "rules.html",
        title="Rules",
        rules=data["rules"]["staged"],
        applied_names=applied_names,
        applied=data["rules"]["applied"],
        sets=data["sets"],
    )


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


@router.post("/ui/rules/{operation}")
async def ui_rules(request: Request, operation: str) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        name = form.get("name", "").strip()
        change: actions.PolicyChange
        if operation == "add":
            rule: dict[str, Any] = {
                "name": name,
                "action": form.get("action", "allow"),
                "sources": _split(form.get("sources", "")),
                "destinations": _split(form.get("destinations", "")),
                "enabled": True,
            }
            if form.get("connect_ports"):
                try:
                    rule["connect_ports"] = [int(p) for p in _split(form["connect_ports"])]
                except ValueError:
                    raise UsageError("CONNECT ports must be numbers") from None
            change = lambda c: edit.add_rule(c, rule)  # noqa: E731
        elif operation == "remove":
            change = lambda c: edit.remove_rule(c, name)  # noqa: E731
        elif operation in ("enable", "disable"):
            on = operation == "enable"
            change = lambda c: edit.set_rule_enabled(c, name, on)  # noqa: E731
        elif operation == "move":
            try:
                position = int(form.get("position", ""))
            except ValueError:
                raise UsageError("position must be a number") from None
            change = lambda c: edit.move_rule(c, name, position=position)  # noqa: E731
        else:
            raise UsageError(f"unknown rule operation {operation!r}")
        author = actions.console_author(session.user)
        count = await state_of(request).with_store(
            lambda s: actions.stage_policy(s, change, author)
        )
        return _staged_message(count)

    return await _change(request, work)


# -- log ---------------------------------------------------------------------------------------


@router.get("/log", response_class=HTMLResponse)
async def log_page(request: Request) -> HTMLResponse:
    return await _page(request, "log.html", title="Log", filters=dict(request.query_params))


@router.get("/ui/log/rows", response_class=HTMLResponse)
async def log_rows(request: Request) -> HTMLResponse:
    await login_session(request)
    p = request.query_params
    try:
        q = log_query(
            p.get("status"),
            p.get("source"),
            p.get("host"),
            p.get("rule"),
            p.get("user"),
            p.get("since"),
            p.get("until"),
            100,
        )
        records = await asyncio.to_thread(run_query, state_of(request).log(), q)
        error = None
    except TlsgateError as exc:
        records, error = [], exc.one_line()
    return _fragment(
        request,
        "log_rows.html",
        records=list(reversed(records)),
        error=error,
        status_text=status_text,
    )


@router.get("/log/{request_id}", response_class=HTMLResponse)
async def log_detail(request: Request, request_id: str) -> HTMLResponse:
    rec = await asyncio.to_thread(find_request, state_of(request).log(), request_id)
    return await _page(
        request,
        "log_detail.html",
        title=f"Request {request_id}",
        request_id=request_id,
        detail=render_detail(rec) if rec is not None else None,
    )


# -- configuration -----------------------------------------------------------------------------


@router.get("/configuration", response_class=HTMLResponse)
async def configuration_page(request: Request) -> HTMLResponse:
    def read(store: Store) -> dict[str, Any]:
        return {
            "staged": actions.staged_view(store),
            "history": [actions.revision_view(r) for r in store.history(20)],
            "members": actions.members_view(store),
        }

    data = await state_of(request).with_store(read)
    return await _page(request, "configuration.html", title="Configuration", **data)


@router.get("/ui/members", response_class=HTMLResponse)
async def members_fragment(request: Request) -> HTMLResponse:
    await login_session(request)
    members = await state_of(request).with_store(actions.members_view)
    return _fragment(request, "members.html", members=members)


@router.post("/ui/apply")
async def ui_apply(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        expected = int(form["expected_revision"]) if form.get("expected_revision") else None
        author = actions.console_author(session.user)
        message = form.get("message", "")
        rev = await state_of(request).with_store(
            lambda s: actions.apply(s, message, author, expected)
        )
        return f"Applied revision {rev.number}; members load it within seconds."

    return await _change(request, work)


@router.post("/ui/discard")
async def ui_discard(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        n = await state_of(request).with_store(lambda s: s.discard())
        return f"Discarded {n} staged change(s)."

    return await _change(request, work)


@router.post("/ui/rollback")
async def ui_rollback(request: Request) -> Response:
    async def work(session: Session, form: dict[str, str]) -> str:
        try:
            number = int(form.get("revision", ""))
        except ValueError:
            raise UsageError("revision must be a number") from None
        author = actions.console_author(session.user)
        rev = await state_of(request).with_store(
            lambda s: actions.rollback(s, number, f"rollback to revision {number}", author)
        )
        return f"Applied revision {rev.number} with the content of revision {number}."

    return await _change(request, work)


# -- CA ----------------------------------------------------------------------------------------


@router.get("/ca", response_class=HTMLResponse)
async def ca_page(request: Request) -> HTMLResponse:
    return await _page(request, "ca.html", title="CA")
