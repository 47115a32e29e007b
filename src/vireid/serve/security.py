"""Access control for the search service.

Rules (see the README section on ``vireid serve``):

* The service listens on a loopback address (127.0.0.1) unless told otherwise; binding to any
  other address is refused without an access token (:func:`check_bind_address`).
* With a token, every route needs it. Programs send ``Authorization: Bearer <token>``; a browser
  opens ``/?token=<token>`` once, the server answers with an ``HttpOnly; SameSite=Strict`` cookie
  and redirects to ``/`` so the token does not stay in the address bar or in the history. The
  JSON API accepts the header or the cookie, never a query parameter (those end up in logs).
* Tokens are at least 8 characters of ``A-Z a-z 0-9 . _ ~ -`` (safe in a URL and a cookie as
  they are; ``secrets.token_urlsafe()`` makes good ones).
* Tokens are compared in constant time (:func:`hmac.compare_digest` on SHA-256 digests, so the
  comparison time does not depend on the token length either).
* When bound to loopback without a token, requests whose ``Host`` header is not a loopback name
  are refused, so a web page on another site cannot reach the service through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re

from vireid.errors import VireidError

#: Name of the cookie that carries the token for the web page.
TOKEN_COOKIE = "vireid_token"
#: Environment variable read by ``vireid serve`` when ``--token`` is not given.
TOKEN_ENV = "VIREID_TOKEN"
#: ``Host`` header names accepted when the service is bound to loopback without a token.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
#: Shortest token accepted (a guessable token is no protection on a network).
MIN_TOKEN_LENGTH = 8
#: Tokens use URL- and cookie-safe characters only, so ``/?token=`` and the cookie carry them verbatim.
_TOKEN_RE = re.compile(rf"[A-Za-z0-9._~-]{{{MIN_TOKEN_LENGTH},}}")


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(token: str | None) -> str | None:
    """The token from ``--token``, else from ``$VIREID_TOKEN``, else None; rejects short tokens."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise VireidError(
            f"the access token must be at least {MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 . _ ~ -; "
            "make one with `python -c \"import secrets; print(secrets.token_urlsafe())\"`"
        )
    return token


def check_bind_address(host: str, token: str | None) -> None:
    """Refuse to listen on a non-loopback address without an access token."""
    if not is_loopback(host) and not token:
        raise VireidError(
            f"refusing to listen on {host} without an access token; pass --token T or set {TOKEN_ENV}, "
            "or bind to 127.0.0.1"
        )


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if not given:
        return False
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
