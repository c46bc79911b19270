"""Who the reviewer is: accounts, passwords, signed sessions and CSRF tokens (pure).

* **Accounts** come from configuration (a Kubernetes Secret in the chart): reviewer
  id -> a PBKDF2-SHA256 password hash and the tenants they review (``"*"``: all).
* **Sessions** are a signed cookie: the reviewer id, an expiry and a CSRF token, with an
  HMAC over them under the console's session key. Nothing in a request body names the
  reviewer: the session does.
* **CSRF**: every state-changing request carries the session's CSRF token in a header
  (or a form field on the sign-in page's forms); a page of another site cannot read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from review_console.queue import Scope

ITERATIONS = 200_000


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``, as accounts store it."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join(
        ["pbkdf2_sha256", str(iterations), _b64(salt), _b64(digest)],
    )


def check_password(stored: str, password: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


@dataclass(frozen=True, slots=True)
class Account:
    reviewer: str
    password_hash: str
    scope: Scope


def parse_accounts(doc: Mapping[str, Any]) -> dict[str, Account]:
    """``{"ann": {"password": "<hash>", "tenants": ["acme"] | "*"}}``; a tenant of
    ``null`` stands for turns without one. Raises ValueError on a malformed entry."""
    out = {}
    for reviewer, entry in doc.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("password"), str):
            raise ValueError(f"account {reviewer!r}: needs a password hash")
        tenants = entry.get("tenants", "*")
        scope: Scope
        if tenants == "*":
            scope = "*"
        elif isinstance(tenants, list) and all(t is None or isinstance(t, str) for t in tenants):
            scope = frozenset(tenants)
        else:
            raise ValueError(f'account {reviewer!r}: tenants must be "*" or a list')
        out[str(reviewer)] = Account(str(reviewer), entry["password"], scope)
    return out


@dataclass(frozen=True, slots=True)
class Session:
    reviewer: str
    expires: float
    csrf: str


def issue(reviewer: str, key: bytes, now: float, ttl_s: float) -> tuple[str, Session]:
    """A new session for ``reviewer``: (the cookie's value, the session)."""
    session = Session(reviewer, now + ttl_s, secrets.token_urlsafe(24))
    body = _b64(orjson.dumps({"r": session.reviewer, "e": session.expires, "c": session.csrf}))
    return f"{body}.{_mac(key, body)}", session


def verify(cookie: str | None, key: bytes, now: float) -> Session | None:
    """The session a cookie carries, if its signature holds and it has not expired."""
    if not cookie or "." not in cookie:
        return None
    body, mac = cookie.rsplit(".", 1)
    if not hmac.compare_digest(mac.encode(), _mac(key, body).encode()):
        return None
    try:
        doc = orjson.loads(_unb64(body))
        session = Session(str(doc["r"]), float(doc["e"]), str(doc["c"]))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    return session if session.expires > now else None


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


def review_id(reviewer: str, flagged_id: str, attempt: str, decision: bytes) -> str:
    """A decision's id: the same when the same submission is sent again (a retry, a
    double Enter), so that it counts once; another when anything decided differs, so a
    corrected decision is never taken for a resend. ``attempt``: the random token of
    the page that submitted it; ``decision``: the label, categories and note."""
    raw = b"\x00".join([reviewer.encode(), flagged_id.encode(), attempt.encode(), decision])
    return "console-" + hashlib.sha256(raw).hexdigest()[:32]


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: Checked when an account does not exist, so that a wrong name costs what a wrong
#: password does (no telling which reviewer ids exist by the time an answer takes).
DUMMY_HASH = hash_password(secrets.token_urlsafe(12))
