"""The console's page, its static files (no build step, nothing from elsewhere) and who the caller is.

Files are served from `static/` by name only (no sub-paths, so no way out of it), with a strict
Content-Security-Policy: scripts, styles and connections to this origin only, no inline script, no
form that could put the token in a URL. They are not part of the API's contract (`include_in_schema`).
"""
import hashlib
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from infra.adapters.http.deps import Caller, is_ops_admin
from infra.adapters.http.errors import Refused
from queries.console.grants import grants

router = APIRouter(tags=["console"])
STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache"}


@cache
def asset(name: str) -> tuple[bytes, str, str] | None:
    """A static file's bytes, content type and ETag; None for a name that is not one of them."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        return None
    body = path.read_bytes()
    return body, TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def served(name: str, request: Request) -> Response:
    found = asset(name)
    if found is None:
        raise Refused(404, "not_found", f"the console has no file {name[:60]!r}")
    body, media_type, etag = found
    headers = {**HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/console", include_in_schema=False)
@router.get("/console/", include_in_schema=False)
async def page(request: Request) -> Response:
    return served("index.html", request)


@router.get("/console/{name}", include_in_schema=False)
async def static_file(name: str, request: Request) -> Response:
    return served(name, request)


@router.get("/v1/console/session", summary="Who the token speaks for, and which console views its roles open")
async def session(principal: Caller, request: Request) -> dict:
    """`views`: approvals, runs, timeline, evidence (the tenant's) and ops (platform-wide: an admin of the ops
    tenant). What each needs is what the API's own routes need (queries/console/grants.py)."""
    return grants(principal, is_ops_admin(principal, request.app.state.settings))
