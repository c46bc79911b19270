"""The review console's accounts, sessions and CSRF tokens."""

from __future__ import annotations

import pytest

from review_console.auth import (
    check_password,
    csrf_ok,
    hash_password,
    issue,
    parse_accounts,
    review_id,
    verify,
)

KEY = b"k" * 32


def test_passwords_are_stored_hashed_and_checked_in_constant_form() -> None:
    stored = hash_password("correct horse", iterations=1000)
    assert "correct horse" not in stored and stored.startswith("pbkdf2_sha256$1000$")
    assert check_password(stored, "correct horse")
    assert not check_password(stored, "correct horse ")
    assert not check_password("plain-text", "plain-text")
    assert not check_password("md5$1$x$y", "x")


def test_accounts_name_their_tenants() -> None:
    h = hash_password("pw", iterations=1000)
    accounts = parse_accounts(
        {"ann": {"password": h}, "bob": {"password": h, "tenants": ["acme", None]}}
    )
    assert accounts["ann"].scope == "*"
    assert accounts["bob"].scope == frozenset({"acme", None})
    with pytest.raises(ValueError, match="password"):
        parse_accounts({"cy": {"tenants": "*"}})
    with pytest.raises(ValueError, match="tenants"):
        parse_accounts({"cy": {"password": h, "tenants": "acme"}})


def test_a_session_cookie_cannot_be_forged_altered_or_used_after_it_expires() -> None:
    cookie, session = issue("ann", KEY, now=1000.0, ttl_s=60)
    assert verify(cookie, KEY, 1059.0) == session
    assert verify(cookie, KEY, 1061.0) is None, "expired"
    assert verify(cookie, b"x" * 32, 1001.0) is None, "another console's key"
    forged, _ = issue("bob", b"x" * 32, now=1000.0, ttl_s=60)
    body = forged.split(".")[0]
    assert verify(f"{body}.{cookie.split('.')[1]}", KEY, 1001.0) is None, "bob's body, ann's mac"
    assert verify("", KEY, 1001.0) is None and verify("garbage", KEY, 1001.0) is None


def test_csrf_tokens_and_review_ids() -> None:
    _, session = issue("ann", KEY, now=0.0, ttl_s=60)
    _, other = issue("ann", KEY, now=0.0, ttl_s=60)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, other.csrf) and not csrf_ok(session, None)
    # The same submission sent twice has one id; another reviewer's or page's, another.
    d = b"unsafe|O3|"
    assert review_id("ann", "f1", "p1", d) == review_id("ann", "f1", "p1", d)
    ids = {
        review_id("ann", "f1", "p1", d),
        review_id("bob", "f1", "p1", d),
        review_id("ann", "f1", "p2", d),
        review_id("ann", "f1", "p1", b"safe||"),  # a corrected decision, same page
    }
    assert len(ids) == 4
