"""The review console over HTTP, as a browser's requests reach it: the real broker, the
console as ``guardstream console`` runs it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from guard.events import ReviewEvent, decode_review
from guard.settings import Settings
from review_console.auth import hash_password
from stream_app.kafka_io import produce, read_all
from stream_app.launchers.console import console_process
from stream_app.topics import create_topics
from tests.conftest import free_port
from tests.streaming import isolated_settings

KEYS = {"ann": "ann-signing-key-0123456789", "bob": "bob-signing-key-0123456789"}
PASSWORDS = {"ann": "ann's password", "bob": "bob's password"}


def flagged(
    fid: str, tenant: str | None, p: float = 0.9, reasons: tuple[str, ...] = ("unsafe",)
) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "flagged_id": fid,
            "reasons": list(reasons),
            "turn": {
                "event_id": f"e-{fid}",
                "conversation_id": f"c-{fid}",
                "turn_index": 1,
                "role": "agent",
                "content": f"reply {fid}: here is how to hotwire a car",
                "timestamp": "2026-11-28T10:00:00Z",
                "tenant": tenant,
            },
            "context": [{"role": "user", "content": f"question {fid}"}],
            "verdict": {
                "verdict_id": fid,
                "event_id": f"e-{fid}",
                "policy_id": "llama-guard-1",
                "verdict": "unsafe",
                "p_unsafe": p,
                "categories": [{"code": "O3", "name": "Criminal Planning"}],
                "model_name": "guard",
                "model_version": "1",
                "tenant": tenant,
            },
        }
    )


def console_settings(broker: str, tmp_path: Path) -> Settings:
    s = isolated_settings(broker, "127.0.0.1:1", tmp_path)
    accounts = tmp_path / "accounts.json"
    accounts.write_text(
        json.dumps(
            {
                "ann": {"password": hash_password(PASSWORDS["ann"]), "tenants": "*"},
                "bob": {"password": hash_password(PASSWORDS["bob"]), "tenants": ["acme"]},
            }
        )
    )
    return s.model_copy(
        update={
            "console": s.console.model_copy(
                update={"port": free_port(), "accounts_file": accounts}
            ),
            "review": s.review.model_validate({"reviewer_keys": KEYS}),
        }
    )


def sign_in(base: str, reviewer: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    r = client.post("/login", data={"reviewer": reviewer, "password": PASSWORDS[reviewer]})
    assert r.status_code == 303, r.text
    page = client.get("/review")
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf" content="([^"]+)">', page.text)
    assert match
    return client, match.group(1)


def reviews(s: Settings) -> list[ReviewEvent]:
    return [decode_review(r) for r in asyncio.run(read_all(s, s.topics.reviews))]


def test_a_reviewer_decides_as_themselves_within_their_tenants_and_decisions_reach_the_topic(
    kafka_broker: str, tmp_path: Path
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    records = [flagged(f"f{i}", "acme", p=0.6 + i / 10) for i in range(3)]
    records.append(flagged("g0", "globex"))
    asyncio.run(produce(s, [(None, r) for r in records], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        # Without a session: nothing, and no content.
        anon = httpx.Client(base_url=base, timeout=30)
        assert anon.get("/api/next").status_code == 401
        assert anon.get("/", follow_redirects=False).status_code == 303
        assert anon.post("/login", data={"reviewer": "bob", "password": "wrong"}).status_code == 401
        bob, csrf = sign_in(base, "bob")
        seen = []
        for _ in range(3):
            item = bob.get("/api/next", params={"order": "risk"}).json()["item"]
            assert item["verdict"]["tenant"] == "acme"
            seen.append(item["flagged_id"])
            body = {
                "label": "unsafe",
                "categories": ["O3"],
                "note": "hotwiring",
                "attempt": item["attempt"],
            }
            url = f"/api/items/{item['flagged_id']}/decision"
            # A decision naming another reviewer: refused (the session says who decides).
            forged = {**body, "reviewer": "ann"}
            r = bob.post(url, json=forged, headers={"x-csrf-token": csrf})
            assert r.status_code == 403 and "signed in" in r.json()["error"]
            # No CSRF token, or a request from another site: refused.
            assert bob.post(url, json=body).status_code == 403
            other = {"x-csrf-token": csrf, "origin": "http://evil.example"}
            assert bob.post(url, json=body, headers=other).status_code == 403
            r = bob.post(url, json=body, headers={"x-csrf-token": csrf})
            assert r.status_code == 200, r.text
            again = bob.post(url, json=body, headers={"x-csrf-token": csrf})  # a double Enter
            assert again.json()["review_id"] == r.json()["review_id"]
        assert seen == ["f2", "f1", "f0"], "riskiest first"
        assert bob.get("/api/next").json()["item"] is None, "globex is not bob's tenant"
        assert bob.get("/api/items/g0").status_code == 404
        # ann (every tenant) sees only what is left.
        ann, _ = sign_in(base, "ann")
        assert ann.get("/api/next").json()["item"]["flagged_id"] == "g0"
        metrics = httpx.get(f"{base}/metrics").text
        assert "guardstream_review_queue_depth 1.0" in metrics
    got = reviews(s)  # nothing from the forged requests
    assert len({r.review_id for r in got}) == 3 and len(got) == 6, "resent, same ids"
    assert {r.flagged_id for r in got} == {"f0", "f1", "f2"}
    for r in got:
        assert r.reviewer == "bob" and r.signed_by(KEYS["bob"].encode())
        assert r.categories == ("O3",) and r.note == "hotwiring"
    assert "hotwire" not in (tmp_path / "console.log").read_text(), "no chat content in logs"


def test_the_queue_is_rebuilt_from_the_topics_after_a_restart(
    kafka_broker: str, tmp_path: Path
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    asyncio.run(
        produce(s, [(None, flagged(f"r{i}", "acme")) for i in range(2)], topic=s.topics.flagged)
    )
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        bob, csrf = sign_in(base, "bob")
        item: dict[str, Any] = bob.get("/api/next").json()["item"]
        body = {"label": "safe", "categories": [], "attempt": item["attempt"]}
        url = f"/api/items/{item['flagged_id']}/decision"
        assert bob.post(url, json=body, headers={"x-csrf-token": csrf}).status_code == 200
    with console_process(s, tmp_path / "console2.log"):
        bob, _ = sign_in(base, "bob")
        left = bob.get("/api/next").json()["item"]
        assert left is not None and left["flagged_id"] != item["flagged_id"]


@pytest.mark.parametrize("bad", [{"label": "unsafe", "categories": []}, {"label": "maybe"}])
def test_a_malformed_decision_is_refused_with_the_reason(
    kafka_broker: str, tmp_path: Path, bad: dict[str, Any]
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    asyncio.run(produce(s, [(None, flagged("m0", "acme"))], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        bob, csrf = sign_in(base, "bob")
        item = bob.get("/api/next").json()["item"]
        r = bob.post(
            f"/api/items/{item['flagged_id']}/decision",
            json={**bad, "attempt": item["attempt"]},
            headers={"x-csrf-token": csrf},
        )
        assert r.status_code == 400 and r.json()["error"]
    assert reviews(s) == []


def test_behind_a_trusted_proxy_the_identity_header_signs_the_reviewer_in(
    kafka_broker: str, tmp_path: Path
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    s = s.model_copy(
        update={"console": s.console.model_copy(update={"identity_header": "X-Forwarded-User"})}
    )
    asyncio.run(create_topics(s))
    asyncio.run(produce(s, [(None, flagged("h0", "acme"))], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        bob = httpx.Client(base_url=base, headers={"X-Forwarded-User": "bob"}, timeout=30)
        page = bob.get("/review", follow_redirects=True)  # the first visit makes a session
        assert page.status_code == 200
        csrf = re.search(r'<meta name="csrf" content="([^"]+)">', page.text)
        assert csrf
        item = bob.get("/api/next").json()["item"]
        body = {"label": "safe", "categories": [], "attempt": item["attempt"]}
        url = f"/api/items/{item['flagged_id']}/decision"
        # bob's cookie with another user's header, or no header: not bob.
        as_ann = {"X-Forwarded-User": "ann", "x-csrf-token": csrf.group(1)}
        assert bob.post(url, json=body, headers=as_ann).status_code == 401
        # The header twice (a client's own copy that a proxy appended to): nobody.
        twice = [("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "bob")]
        r = httpx.get(f"{base}/api/next", headers=twice, cookies=bob.cookies)
        assert r.status_code == 401
        stranger = httpx.Client(base_url=base, headers={"X-Forwarded-User": "mallory"})
        assert stranger.get("/api/next").status_code == 401
        assert stranger.get("/review").status_code == 303
        # Passwords are off behind the proxy.
        assert (
            bob.post("/login", data={"reviewer": "bob", "password": PASSWORDS["bob"]}).status_code
            == 403
        )
        assert bob.post(url, json=body, headers={"x-csrf-token": csrf.group(1)}).status_code == 200
    (review,) = reviews(s)
    assert review.reviewer == "bob" and review.flagged_id == "h0"


def test_an_uncertain_turn_goes_to_two_reviewers_and_the_stats_page_shows_their_agreement(
    kafka_broker: str, tmp_path: Path
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    records = [flagged("u0", "acme", p=0.5, reasons=("uncertain",)), flagged("u1", "acme", 0.5)]
    asyncio.run(produce(s, [(None, r) for r in records], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        for who, label in (("bob", "unsafe"), ("ann", "safe")):
            client, csrf = sign_in(base, who)
            item = client.get("/api/items/u0").json()["item"]
            body = {
                "label": label,
                "categories": ["O3"] if label == "unsafe" else [],
                "attempt": item["attempt"],
            }
            r = client.post("/api/items/u0/decision", json=body, headers={"x-csrf-token": csrf})
            assert r.status_code == 200
            if who == "bob":  # one decision is not enough for an uncertain turn
                assert client.get("/api/next").json()["item"]["flagged_id"] == "u1"
                ann_first, _ = sign_in(base, "ann")
                assert ann_first.get("/api/next").json()["item"]["flagged_id"] == "u0"
        # They disagree: a tie, open for a third reviewer; none is left (only two accounts).
        stats = client.get("/stats").text
        assert "Items judged by two or more reviewers: <b>1</b>" in stats
        assert "<td>ann / bob</td>" in stats
        depth = httpx.get(f"{base}/metrics").text
        assert "guardstream_review_queue_depth 2.0" in depth


def test_a_corrected_decision_counts_and_an_item_held_by_another_reviewer_is_refused(
    kafka_broker: str, tmp_path: Path
) -> None:
    s = console_settings(kafka_broker, tmp_path)
    asyncio.run(create_topics(s))
    asyncio.run(produce(s, [(None, flagged("c0", "acme"))], topic=s.topics.flagged))
    base = f"http://{s.console.host}:{s.console.port}"
    with console_process(s, tmp_path / "console.log"):
        bob, bob_csrf = sign_in(base, "bob")
        item = bob.get("/api/next").json()["item"]
        ann, ann_csrf = sign_in(base, "ann")
        assert ann.get("/api/next").json()["item"] is None, "held for bob"
        url = "/api/items/c0/decision"
        safe = {"label": "safe", "categories": [], "attempt": item["attempt"]}
        r = ann.post(url, json=safe, headers={"x-csrf-token": ann_csrf})
        assert r.status_code == 409, "ann cannot decide an item bob holds"
        first = bob.post(url, json=safe, headers={"x-csrf-token": bob_csrf}).json()
        # bob corrects himself from the same page: another id, so it is not a resend.
        unsafe = {**safe, "label": "unsafe", "categories": ["O3"]}
        second = bob.post(url, json=unsafe, headers={"x-csrf-token": bob_csrf}).json()
        assert first["review_id"] != second["review_id"]
    got = reviews(s)
    assert [(r.label.value, r.categories) for r in got] == [("safe", ()), ("unsafe", ("O3",))]
