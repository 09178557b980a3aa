"""The rules every request to the review page passes, apart from what it asks for.

- **Host.** The ``Host`` header must name the address the page listens on,
  a loopback name when it listens on loopback, or a host configured in
  ``review.allowed_hosts``, with the right port.  A page of another site
  whose name was made to resolve to this machine (DNS rebinding) sends its
  own name and is refused.
- **Token.** Any address but loopback needs a token: given once in the URL
  (``?token=``, which is then kept in an HttpOnly, SameSite=Strict cookie
  and dropped from the address) or as ``Authorization: Bearer``.
- **CSRF.** Every POST carries the page's CSRF token (a hidden form field,
  or the ``X-CSRF-Token`` header), and an ``Origin`` header, when sent, must
  be the page's own.
- **Headers.** A content security policy that allows only the page's own
  scripts, styles and images, no framing, no sniffing, no referrer to another site.

File names are escaped by Jinja's autoescaping in the templates.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dedupd.errors import ConfigError

TOKEN_COOKIE = "dedupd_review_token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: the least a token may have; a generated one has 43
MIN_TOKEN = 16

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send "Origin: null" with a form
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Is ``host`` (an address or ``localhost``) only reachable from this machine?"""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Guard:
    """What a request is checked against: the address served, the token, the CSRF token."""

    host: str
    port: int
    token: str | None
    allowed_hosts: tuple[str, ...] = ()
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def names(self) -> frozenset[str]:
        """Host names (without port) a request may give."""
        names = {self.host.lower(), *(h.lower() for h in self.allowed_hosts)}
        if is_loopback(self.host) or is_wildcard(self.host):
            names |= {"localhost", "127.0.0.1", "::1"}
        if is_wildcard(self.host):
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names)

    def host_allowed(self, header: str | None) -> bool:
        """Does a ``Host`` header name this page (DNS rebinding sends another name)?"""
        if not header:
            return False
        text = header.strip().lower()
        if text.startswith("["):  # [v6]:port
            name, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            name, sep, port_text = text.rpartition(":")
            if not sep:
                name, port_text = text, ""
        port = int(port_text) if port_text.isdigit() else (80 if not port_text else -1)
        if port != self.port:
            return False
        if name in self.names():
            return True
        # listening on every address: any address literal of this machine (a
        # literal cannot be rebound; a name can)
        if is_wildcard(self.host):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False

    def origin_allowed(self, origin: str | None) -> bool:
        """An ``Origin`` header, when a browser sends one, must be this page's."""
        if origin is None:
            return True
        scheme, sep, rest = origin.partition("://")
        return bool(sep) and scheme == "http" and self.host_allowed(rest)

    def token_ok(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def read_token_file(path: Path) -> str:
    """The token in the first line of ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file: {exc}", source=path) from exc
    token = (text.splitlines() or [""])[0].strip()
    if len(token) < MIN_TOKEN:
        raise ConfigError(f"the token in its first line must have at least {MIN_TOKEN} characters", source=path)
    return token


def choose_token(host: str, *, given: str | None, token_file: Path | None) -> tuple[str | None, bool]:
    """The token the page requires, and whether it was made up here (then it is printed).

    A token from a file or the config is required on any address; on
    loopback with none given, none is required; elsewhere one is made up.
    """
    if token_file is not None:
        return read_token_file(token_file), False
    if given is not None:
        return given, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(32), True
