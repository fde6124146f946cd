"""Who is asking: the core API's JWT, from a header, a cookie or the query.

Native ``EventSource`` cannot send headers, so a browser passes the token as
``?token=`` or as a cookie; the access log never records the query string
(see :mod:`sse_service.logs`), and no message here ever includes a token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt
from aiohttp import web
from jwt.types import Options

from sse_service.errors import AuthError
from sse_service.logs import RateLimited
from sse_service.notification import MAX_USER_ID_LENGTH
from sse_service.settings import Settings

log = logging.getLogger("sse_service.auth")

MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, and until when the token says so (epoch seconds)."""

    user_id: str
    expires_at: float


def token_from_request(request: web.BaseRequest, cookie_name: str) -> str:
    """The bearer token: ``Authorization: Bearer`` header, else ``token`` query, else cookie.

    Explicit before ambient: the documented recovery from ``auth:expired`` opens
    a new stream with ``?token=<new>`` while the browser may still send a stale
    cookie, so the cookie counts only when the request names no token itself.
    The first token found is the one checked: an invalid ``?token=`` is refused
    even if the cookie holds a valid one. An ``Authorization`` header of another
    scheme (a proxy's Basic auth, say) is not ours and hides nothing.
    """
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer":
        if not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
    else:
        token = request.query.get("token") or request.cookies.get(cookie_name) or ""
        if not token:
            raise AuthError("no token: send Authorization: Bearer, a cookie or ?token=",
                            missing=True)
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError("token too long")
    return token


class TokenVerifier:
    """Checks signatures and claims with the settings' keys and rules."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_key
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        self._claim = settings.jwt_user_claim
        required = ["exp", self._claim]
        if self._audience is not None:
            required.append("aud")
        if self._issuer is not None:
            required.append("iss")
        self._options: Options = {"require": required}
        self._unexpected_aud = RateLimited(log, interval=60.0)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`AuthError` for anything else."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=self._algorithms, audience=self._audience,
                issuer=self._issuer, leeway=self._leeway, options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            if self._audience is None:
                # RFC 7519 4.1.3: a token for named audiences is refused by a
                # service that is not one of them, and this one names none.
                self._unexpected_aud.warning(
                    "aud", "refused a token that carries an audience (aud): set "
                    "SSE_JWT_AUDIENCE to the core API's audience to accept such tokens")
                raise AuthError("invalid token: it names an audience, "
                                "and this service is configured with none") from None
            raise AuthError("invalid token: wrong audience") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError) as exc:
            # Never echo the token; the exception text names only the failed check.
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        user = claims.get(self._claim)
        if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_ID_LENGTH:
            raise AuthError(f"invalid token: claim {self._claim!r} must be a non-empty string")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AuthError("invalid token: exp must be a number")
        return Principal(user_id=user, expires_at=float(exp))

    def authenticate(self, request: web.BaseRequest, cookie_name: str) -> Principal:
        return self.verify(token_from_request(request, cookie_name))
