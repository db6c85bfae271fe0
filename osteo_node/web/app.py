"""The FLS web application (Starlette, Jinja2 templates, assets served by the node).

Every page but ``/healthz`` needs a signed-in user (``web_users``; roles viewer < editor <
admin). Sessions are signed cookies (itsdangerous) that expire after ``session_seconds``;
every form carries a per-session CSRF token; a status change needs the editor role; the node
status page and ``/metrics`` need admin. Each sign-in, view of a patient's page and status
change is recorded with the user and the row id (``web_audit`` table, shown on the status page;
``web_row_viewed`` in the log), never the patient's name or ID. Bad input (unknown row, bad
filter values, a body over ``MAX_BODY_BYTES``) gets a 4xx page, never a traceback.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from osteo_node import DISCLAIMER
from osteo_node.web import audit, display, users
from osteo_node.web.node_state import prometheus_text, read_state
from osteo_node.web.queries import (
    QueryError,
    WorklistQuery,
    all_rows,
    get_row,
    sc_files,
    worklist_page,
)
from osteo_node.worklist import assessments
from osteo_node.worklist import store as worklist_store
from osteo_node.worklist.rules import load_rules

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class WebContext:
    engine: Engine
    spool_dir: Path | None = None
    outbox_dir: Path | None = None  # where the SC overlays the node made are
    #: link to open a study in the hospital's viewer, "{study_uid}" replaced (None: no link)
    viewer_url: str | None = None
    #: the hospital's patient-identifier system for the FHIR export (None: no FHIR export)
    patient_identifier_system: str | None = None
    #: sign-in by a trusted reverse proxy: the header holding the user name, and the proxies'
    #: addresses (a request from anywhere else is not believed)
    trusted_user_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    session_seconds: int = 8 * 3600
    https_only: bool = False


def _user(request: Request, ctx: WebContext) -> users.User | None:
    """The signed-in user: from the trusted proxy's header when configured and the request
    comes from the proxy, else from the session."""
    if ctx.trusted_user_header:
        peer = request.client.host if request.client else ""
        name = request.headers.get(ctx.trusted_user_header)
        if name and peer in ctx.trusted_proxies:
            return users.get_user(ctx.engine, name.strip())
    name = request.session.get("user")
    return users.get_user(ctx.engine, name) if isinstance(name, str) else None


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def _form(request: Request) -> dict[str, str]:
    length = int(request.headers.get("content-length") or 0)
    if length > MAX_BODY_BYTES:
        raise HTTPException(413, "request too large")
    form = await request.form()
    sent = str(form.get("csrf") or "")
    if not hmac.compare_digest(sent, str(request.session.get("csrf") or "-")):
        raise HTTPException(403, "the form expired or did not come from this site (CSRF)")
    return {k: str(v) for k, v in form.items()}


class Handlers:
    """The request handlers, on one node database."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(display.template_globals())
        self.rules = load_rules()
        self.statuses = tuple(self.rules.statuses)

    def page(self, request: Request, name: str, status: int = 200, **values: Any) -> Response:
        return self.templates.TemplateResponse(request, name, {
            "user": _user(request, self.ctx), "csrf": _csrf(request),
            "disclaimer": DISCLAIMER, **values}, status_code=status)

    def require(self, request: Request, role: str) -> users.User:
        user = _user(request, self.ctx)
        if user is None:
            raise HTTPException(401, "sign in first")
        if not user.can(role):
            raise HTTPException(403, f"needs the {role} role")
        return user

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        problems = []
        try:
            with self.ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 (any database error means not ready)
            problems.append(f"database: {type(exc).__name__}")
        if self.ctx.spool_dir is not None:
            probe = self.ctx.spool_dir / f".readyz-{secrets.token_hex(4)}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                problems.append(f"spool not writable: {exc.strerror}")
        if problems:
            return PlainTextResponse("not ready: " + "; ".join(problems) + "\n", 503)
        return PlainTextResponse("ready\n")

    async def metrics(self, request: Request) -> Response:
        self.require(request, "admin")
        return PlainTextResponse(prometheus_text(read_state(self.ctx.engine)),
                                 media_type="text/plain; version=0.0.4")

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request, "login.html")
        form = await _form(request)
        user = users.authenticate(self.ctx.engine, form.get("name", ""),
                                  form.get("password", ""))
        if user is None:
            log.warning("web_login_failed")
            return self.page(request, "login.html", 401,
                             error="Unknown user or wrong password.")
        request.session.clear()
        request.session["user"] = user.name
        log.info("web_login", user=user.name, role=user.role)
        audit.record(self.ctx.engine, user.name, "login")
        return RedirectResponse("/", 303)

    async def logout(self, request: Request) -> Response:
        await _form(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def worklist(self, request: Request) -> Response:
        self.require(request, "viewer")
        try:
            query = WorklistQuery.parse(request.query_params, self.statuses)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from exc
        result = worklist_page(self.ctx.engine, query)
        risks = assessments.risk_categories(self.ctx.engine,
                                            [r.study_instance_uid for r in result.rows])
        return self.page(request, "worklist.html", result=result, statuses=self.statuses,
                         params=dict(request.query_params), risks=risks)

    async def row_page(self, request: Request) -> Response:
        user = self.require(request, "viewer")
        row_id = _row_id(request)
        row = get_row(self.ctx.engine, row_id)
        if row is None:
            raise HTTPException(404, f"no worklist row {row_id}")
        log.info("web_row_viewed", user=user.name, row_id=row_id,
                 study_uid=row.study_instance_uid)
        audit.record(self.ctx.engine, user.name, "view_row", row_id)
        has_sc = self.ctx.outbox_dir is not None and bool(
            sc_files(self.ctx.engine, self.ctx.outbox_dir, row))
        stored = assessments.latest(self.ctx.engine, [row.study_instance_uid])
        return self.page(request, "row.html", row=row,
                         assessment=stored.get(row.study_instance_uid),
                         vertebrae=json.loads(row.vertebrae_json or "[]"),
                         statuses=self.statuses, can_edit=user.can("editor"), has_sc=has_sc,
                         viewer_link=(self.ctx.viewer_url.replace("{study_uid}",
                                                                  row.study_instance_uid)
                                      if self.ctx.viewer_url else None))

    async def row_image(self, request: Request) -> Response:
        """The row's SC overlay (the one the node sent to PACS) as PNG."""
        self.require(request, "viewer")
        row = get_row(self.ctx.engine, _row_id(request))
        files = (sc_files(self.ctx.engine, self.ctx.outbox_dir, row)
                 if row is not None and self.ctx.outbox_dir is not None else [])
        if not files:
            raise HTTPException(404, "no overlay image for this study")
        return Response(sc_png(files[0]), media_type="image/png",
                        headers={"Cache-Control": "private, no-store"})

    async def set_status(self, request: Request) -> Response:
        user = self.require(request, "editor")
        row_id = _row_id(request)
        form = await _form(request)
        try:
            worklist_store.set_status(self.ctx.engine, row_id, form.get("status", ""),
                                      changed_by=user.name, note=form.get("note") or None,
                                      rules=self.rules)
        except worklist_store.WorklistError as exc:
            code = 404 if "no worklist row" in str(exc) else 400
            raise HTTPException(code, str(exc)) from exc
        audit.record(self.ctx.engine, user.name, "set_status", row_id, form.get("status"))
        return RedirectResponse(f"/rows/{row_id}", 303)

    async def export(self, request: Request) -> Response:
        """The filtered worklist as CSV or FHIR R4 (the CLI's exporters); editor role: it is
        the FLS's contact list and holds patient data."""
        from osteo_node.worklist import export_csv, fhir

        user = self.require(request, "editor")
        fmt = request.path_params["fmt"]
        if fmt not in ("csv", "fhir"):
            raise HTTPException(404, "export formats: csv, fhir")
        try:
            query = WorklistQuery.parse(request.query_params, self.statuses)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from exc
        rows = all_rows(self.ctx.engine, query)
        if fmt == "csv":
            body, media = export_csv.to_csv(rows), "text/csv; charset=utf-8"
        else:
            try:
                body = fhir.bundle_json(
                    rows, patient_system=self.ctx.patient_identifier_system)
            except fhir.FhirExportError as exc:
                raise HTTPException(409, str(exc)) from exc
            media = "application/fhir+json"
        audit.record(self.ctx.engine, user.name, "export", None, f"{fmt}: {len(rows)} rows")
        log.info("web_export", user=user.name, format=fmt, rows=len(rows))
        name = "fls-worklist.csv" if fmt == "csv" else "fls-worklist.fhir.json"
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store"})

    async def status_page(self, request: Request) -> Response:
        self.require(request, "admin")
        return self.page(request, "status.html", state=read_state(self.ctx.engine),
                         audit=audit.recent(self.ctx.engine))

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 401 and request.method == "GET":
            return RedirectResponse("/login", 303)
        return self.page(request, "error.html", exc.status_code, message=exc.detail)


def create_app(ctx: WebContext, *, secret_key: str | None = None) -> Starlette:
    """The application on the node's database (``ctx.engine``). ``secret_key`` signs the
    session cookies (None: a random key, so sessions end when the node restarts)."""
    h = Handlers(ctx)
    routes = [
        Route("/healthz", h.healthz), Route("/readyz", h.readyz), Route("/metrics", h.metrics),
        Route("/login", h.login, methods=["GET", "POST"]),
        Route("/logout", h.logout, methods=["POST"]),
        Route("/", h.worklist), Route("/rows/{row_id}", h.row_page),
        Route("/rows/{row_id}/status", h.set_status, methods=["POST"]),
        Route("/rows/{row_id}/overlay.png", h.row_image),
        Route("/export/{fmt}", h.export),
        Route("/status", h.status_page),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(
        SessionMiddleware, secret_key=secret_key or secrets.token_urlsafe(32),
        session_cookie="osteo_node_session", max_age=ctx.session_seconds, same_site="strict",
        https_only=ctx.https_only)]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: h.http_error})


def sc_png(path: Path) -> bytes:
    """PNG of a Secondary Capture's RGB pixels."""
    import io

    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, format="PNG")
    return buf.getvalue()


def _row_id(request: Request) -> int:
    try:
        value = int(request.path_params["row_id"])
    except ValueError as exc:
        raise HTTPException(404, "no such worklist row") from exc
    return value
