"""The dashboard's token rule: pure decisions, and the ASGI middleware that applies them.

With no token configured (loopback only, see ``_address``) every GET is served
and every POST is refused (403: read-only). With a token, every request must
carry it: an ``Authorization: Bearer`` header (scripts, Prometheus), or the
cookie a browser gets by opening any page once with ``?token=...`` (it is then
redirected to the same page without the token in the address). A POST sent
with the cookie must also carry the page's ``csrf`` form field (derived from
the token), so another site cannot make a logged-in browser cancel jobs.
Tokens are compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "casparian_token"
QUERY = "token"
_CSRF_CONTEXT = b"casparian-dashboard-csrf"


class Auth(enum.Enum):
    """How a request proved it holds the token (``scope["state"]["auth"]``)."""

    OPEN = "open"  # no token configured: read-only
    BEARER = "bearer"
    COOKIE = "cookie"


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison; None never matches."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def csrf_value(token: str) -> str:
    """The form field a cookie-authenticated POST must carry (not the token itself)."""
    return hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def judge(
    token: str | None, *, bearer: str | None, cookie: str | None, query: str | None
) -> Auth | None:
    """How a request is authenticated, or None: refuse it (401)."""
    if token is None:
        return Auth.OPEN
    if same_token(token, bearer):
        return Auth.BEARER
    if same_token(token, cookie) or same_token(token, query):
        return Auth.COOKIE
    return None


def may_steer(token: str | None, auth: Auth, csrf: str | None) -> tuple[int, str] | None:
    """None when a POST may change a job, else (HTTP status, the reason to show)."""
    if token is None:
        return 403, (
            "the dashboard is read-only: start the sentinel with --http-token to allow "
            "cancel and retry (or use `casparian-trio cancel` / `retry`)"
        )
    if auth is Auth.BEARER or (auth is Auth.COOKIE and same_token(csrf_value(token), csrf)):
        return None
    return 403, "the form's csrf field is missing or wrong; reload the page and try again"


UNAUTHORIZED = (
    "<!doctype html><title>401 token required</title><h1>401: token required</h1>"
    "<p>This dashboard needs its token: open it once as <code>/?token=TOKEN</code>, or send "
    "<code>Authorization: Bearer TOKEN</code>.</p>"
)


class TokenGuard:
    """ASGI middleware: every HTTP request is judged before the app sees it."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query = request.query_params.get(QUERY)
        auth = judge(
            self.token,
            bearer=bearer_of(request.headers.get("authorization")),
            cookie=request.cookies.get(COOKIE),
            query=query,
        )
        if auth is None:
            response: Response = HTMLResponse(
                UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        if query is not None and self.token is not None and request.method == "GET":
            await self._to_cookie(request)(scope, receive, send)
            return
        scope.setdefault("state", {})["auth"] = auth
        await self.app(scope, receive, send)

    def _to_cookie(self, request: Request) -> Response:
        """The same page without ``?token=`` in the address; the token moves to a cookie."""
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != QUERY]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        assert self.token is not None
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response
