"""Who may use the app: one place for `tunelab app` and `python -m app`. Light (no gradio): the CLI checks
the options in one line before the app loads.

On a loopback address the app needs no login (as today). On any other address it needs one of:
``--auth user:password`` ($TUNELAB_AUTH), ``--auth-file FILE`` (``user:pbkdf2_sha256$...`` lines, made
by ``tunelab app --hash-password``), or an access token (``--token``, $TUNELAB_TOKEN; without any of
them one is generated and printed once as a URL, as Jupyter does). ``--no-auth`` opens it to anyone who
reaches the port, with a warning.

The token is checked by ``TokenGate``, an ASGI middleware in front of every route: ``?token=`` (which
then sets an HttpOnly cookie and redirects to the same page without it), the cookie, or an
``Authorization: Bearer`` header (``gradio_client.Client(url, headers=...)``). ``/healthz`` answers
without it, for container health checks, and says nothing else; gradio's own startup call passes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "tunelab_token"
HEALTH_PATH = "/healthz"
# gradio's launch() calls this on itself, without the token; it only runs the startup events, once
STARTUP_PATH = "/gradio_api/startup-events"
HASH_ITERATIONS = 600_000  # PBKDF2-SHA256, OWASP's 2023 figure


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """("user", "password") from "user:password" (else $TUNELAB_AUTH); None for no login."""
    value = value or os.environ.get("TUNELAB_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must be user:password (or set TUNELAB_AUTH=user:password)")
    return user, password


def hash_password(password: str, salt: str | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """'pbkdf2_sha256$ITERATIONS$SALT$HEX' of ``password`` (a new random salt unless given)."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def check_password(stored: str, given: str) -> bool:
    """Whether ``given`` is the password of ``stored`` (a hash_password line), in constant time."""
    scheme, _, rest = stored.partition("$")
    iterations, _, rest = rest.partition("$")
    salt, _, _ = rest.partition("$")
    if scheme != "pbkdf2_sha256" or not iterations.isdigit():
        return False
    return hmac.compare_digest(hash_password(given, salt, int(iterations)), stored)


def read_auth_file(path: str | Path) -> dict[str, str]:
    """{user: hash} from lines 'user:pbkdf2_sha256$...' (blank lines and # comments skipped)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"--auth-file {path}: cannot read it ({e.strerror}).") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored.startswith("pbkdf2_sha256$") or stored.count("$") != 3:
            raise ConfigError(
                f"--auth-file {path}: line {number} is not user:pbkdf2_sha256$... (make one with "
                "`tunelab app --hash-password`)."
            )
        users[user.strip()] = stored
    if not users:
        raise ConfigError(f"--auth-file {path}: no users in it.")
    return users


@dataclass
class Access:
    """How the app is protected: logins (user -> password hash), an access token, or nothing."""

    host: str
    users: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    token_generated: bool = False
    open_to_all: bool = False  # --no-auth beyond loopback

    @property
    def remote(self) -> bool:
        """Served beyond loopback: what a browser may reach is limited (see AppState)."""
        return not is_loopback(self.host)

    def login(self) -> Callable[[str, str], bool] | None:
        """gradio's ``auth`` callable for the logins, or None."""
        if not self.users:
            return None
        users = self.users
        return lambda user, password: user in users and check_password(users[user], password)

    def urls(self, port: int) -> list[str]:
        """Where to open the app (with the token, when there is one)."""
        query = f"?token={self.token}" if self.token else ""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return [f"http://{host}:{port}/{query}"]


def resolve_access(
    host: str,
    auth: str | None = None,
    auth_file: str | None = None,
    token: str | None = None,
    no_auth: bool = False,
) -> Access:
    """The app's protection from its options and $TUNELAB_AUTH / $TUNELAB_TOKEN; beyond loopback with
    none given, a generated token."""
    login = parse_auth(auth)
    token = token or os.environ.get("TUNELAB_TOKEN") or None
    chosen = [
        name for name, given in (("--auth", login), ("--auth-file", auth_file), ("--token", token)) if given
    ]
    if no_auth and chosen:
        raise ConfigError(f"--no-auth contradicts {', '.join(chosen)}; give one or the other.")
    if len(chosen) > 1:
        raise ConfigError(f"choose one way to log in, not {' and '.join(chosen)}.")
    access = Access(host)
    if login:
        access.users = {login[0]: hash_password(login[1], iterations=1_000)}  # held in memory only
    elif auth_file:
        access.users = read_auth_file(auth_file)
    elif token:
        if len(token) < 16:
            raise ConfigError("--token must be at least 16 characters (or leave it out for a generated one).")
        access.token = token
    elif access.remote and not no_auth:
        access.token, access.token_generated = secrets.token_urlsafe(24), True
    access.open_to_all = access.remote and no_auth
    return access


@dataclass(frozen=True)
class Reach:
    """What a browser may name beyond the app's own runs and data. On loopback: anything, as before;
    beyond it only what the admin allows (``Reach.of``)."""

    server_hub_token: bool = True  # the Hub tab may fall back to HF_TOKEN / the saved `hf auth login`
    model_roots: tuple[Path, ...] | None = None  # folders models may be loaded from (None: any)
    hub_models: bool = True  # Hub ids may be typed as models

    @classmethod
    def of(
        cls,
        access: Access,
        allow_server_hub_token: bool = False,
        model_dirs: tuple[str, ...] | list[str] = (),
        allow_hub_models: bool = False,
    ) -> Reach:
        if not access.remote:
            return cls()
        roots = tuple(Path(d).expanduser().resolve() for d in model_dirs)
        return cls(allow_server_hub_token, roots, allow_hub_models)


class TokenGate:
    """ASGI middleware: every request needs the access token (query, cookie or bearer header), except
    ``/healthz``; a valid ``?token=`` sets the cookie and redirects to the page without it."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    def _valid(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        from starlette.requests import HTTPConnection
        from starlette.responses import PlainTextResponse, RedirectResponse

        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            return await PlainTextResponse("ok")(scope, receive, send)
        if self.token is None or scope["type"] == "http" and scope["path"] == STARTUP_PATH:
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        query = conn.query_params.get("token")
        bearer = conn.headers.get("authorization", "")
        bearer = bearer[7:] if bearer.lower().startswith("bearer ") else None
        if self._valid(query) and scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            rest = "&".join(f"{k}={v}" for k, v in conn.query_params.multi_items() if k != "token")
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(
                TOKEN_COOKIE, self.token, httponly=True, samesite="strict", max_age=30 * 24 * 3600
            )
            return await response(scope, receive, send)
        if self._valid(conn.cookies.get(TOKEN_COOKIE)) or self._valid(bearer) or self._valid(query):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        message = (
            "This TuneLab app needs its access token: open the URL `tunelab app` printed when it started "
            "(http://HOST:PORT/?token=...), or send the header 'Authorization: Bearer TOKEN'.\n"
        )
        return await PlainTextResponse(message, status_code=401)(scope, receive, send)
