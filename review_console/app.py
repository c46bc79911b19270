"""The review console's HTTP side: a small ASGI app (Starlette).

Thin: who is asking comes from :mod:`review_console.auth`, what they may see and take
from :mod:`review_console.queue`; a decision becomes a :class:`ReviewEvent` whose
reviewer is the session's (never a form field), signed with that reviewer's key when
the deployment has one, and is written to the reviews topic before the answer says so.

Pages: ``/login``, ``/`` (the queue), ``/review`` (one item at a time, keyboard first),
``/stats``. JSON under ``/api``. ``/metrics`` (Prometheus) and ``/healthz`` are open;
everything else needs a session, and every POST the session's CSRF token and a
same-origin request.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from guard.errors import InvalidInput
from guard.events import Decision, ReviewEvent, now_rfc3339
from guard.taxonomy import PolicyRegistry
from review_console import pages
from review_console.agreement import krippendorff_alpha, pairwise_kappa, throughput
from review_console.auth import (
    DUMMY_HASH,
    Account,
    Session,
    check_password,
    csrf_ok,
    issue,
    review_id,
    verify,
)
from review_console.queue import Filters, Item, Order, ReviewQueue

log = logging.getLogger(__name__)

COOKIE = "guardstream_console"
MAX_NOTE = 2000


@dataclass
class Console:
    """What the app needs; ``publish`` writes a review to the reviews topic and returns
    once the broker has it."""

    queue: ReviewQueue
    accounts: Mapping[str, Account]
    session_key: bytes
    policies: PolicyRegistry
    publish: Callable[[ReviewEvent], Awaitable[None]]
    #: reviewer -> signing key (the deployment's reviewer keys); unset: unsigned reviews.
    signing_keys: Mapping[str, bytes] = field(default_factory=dict)
    #: A header a trusted proxy sets to the signed-in user (OIDC in front); None: passwords.
    identity_header: str | None = None
    session_ttl_s: float = 8 * 3600
    secure_cookies: bool = False
    clock: Callable[[], float] = time.time
    #: Whether the queue has read what the topics held at start (``/readyz``), and
    #: whether it still follows them (``/healthz``: a console that stopped following
    #: them would serve a stale queue).
    is_ready: Callable[[], bool] = lambda: True
    is_alive: Callable[[], bool] = lambda: True
    #: reviewer -> the items they decided, latest last (for undo).
    decided: dict[str, list[str]] = field(default_factory=dict)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.depth = Gauge(
            "guardstream_review_queue_depth",
            "Open items in the review queue",
            registry=self.registry,
        )
        self.age = Gauge(
            "guardstream_review_queue_oldest_age_seconds",
            "Age of the oldest open item",
            registry=self.registry,
        )
        self.submitted = Counter(
            "guardstream_review_decisions_total",
            "Decisions written to the reviews topic",
            ["label"],
            registry=self.registry,
        )


def build_app(console: Console) -> Starlette:
    c = console

    def session_of(request: Request) -> Session | None:
        s = verify(request.cookies.get(COOKIE), c.session_key, c.clock())
        if c.identity_header is None:
            return s if s is not None and s.reviewer in c.accounts else None
        user = proxy_user(request)
        if not user or user not in c.accounts:
            return None
        return s if s is not None and s.reviewer == user else None

    def proxy_user(request: Request) -> str | None:
        """The trusted proxy's header, when it is there exactly once (a proxy that
        appends to a header the client sent would leave the client's copy first)."""
        assert c.identity_header is not None
        values = request.headers.getlist(c.identity_header)
        return values[0] if len(values) == 1 else None

    def with_cookie(response: Response, cookie: str) -> Response:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(c.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=c.secure_cookies,
        )
        return response

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser's cross-site form or fetch (they send Origin)
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    async def page_session(request: Request) -> Session | Response:
        """The session of a page request; with a trusted identity header, one is made
        on first sight; else the sign-in page."""
        s = session_of(request)
        if s is not None:
            return s
        user = proxy_user(request) if c.identity_header else None
        if user and user in c.accounts:
            cookie, s = issue(user, c.session_key, c.clock(), c.session_ttl_s)
            return with_cookie(RedirectResponse(str(request.url), 303), cookie)
        return RedirectResponse("/login", 303)

    def api_session(request: Request, post: bool) -> Session | Response:
        s = session_of(request)
        if s is None:
            return JSONResponse({"error": "sign in first"}, 401)
        if post and not (same_origin(request) and csrf_ok(s, request.headers.get("x-csrf-token"))):
            return JSONResponse({"error": "missing or wrong CSRF token"}, 403)
        return s

    async def login_page(request: Request) -> Response:
        if c.identity_header:
            return HTMLResponse(pages.message("Sign-in is by your organisation's proxy."), 403)
        return HTMLResponse(pages.login(error=None))

    async def login(request: Request) -> Response:
        if c.identity_header or not same_origin(request):
            return HTMLResponse(pages.message("Refused."), 403)
        form = await request.form()
        user, password = str(form.get("reviewer", "")), str(form.get("password", ""))
        account = c.accounts.get(user)
        stored = account.password_hash if account is not None else DUMMY_HASH
        ok = await run_in_threadpool(check_password, stored, password)  # ~0.1 s of CPU
        if account is None or not ok:
            log.info("console: failed sign-in")
            return HTMLResponse(pages.login(error="Unknown reviewer or wrong password."), 401)
        cookie, _ = issue(user, c.session_key, c.clock(), c.session_ttl_s)
        log.info("console: %s signed in", user)
        return with_cookie(RedirectResponse("/", 303), cookie)

    async def logout(request: Request) -> Response:
        s = api_session(request, post=True)
        if isinstance(s, Response):
            return s
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    def filters_of(request: Request) -> tuple[Filters, Order]:
        q = request.query_params
        order: Order = "risk" if q.get("order") == "risk" else "oldest"
        return (
            Filters(
                tenant=q.get("tenant") or None,
                category=q.get("category") or None,
                reason=q.get("reason") or None,
                model_version=q.get("model_version") or None,
            ),
            order,
        )

    async def queue_page(request: Request) -> Response:
        s = await page_session(request)
        if isinstance(s, Response):
            return s
        scope = c.accounts[s.reviewer].scope
        filters, order = filters_of(request)
        items = c.queue.available(s.reviewer, scope, c.clock(), filters, order)
        return HTMLResponse(pages.queue(s, items, filters, order, c.clock(), request.url.query))

    async def review_page(request: Request) -> Response:
        s = await page_session(request)
        if isinstance(s, Response):
            return s
        return HTMLResponse(pages.review(s, request.url.query))

    async def stats_page(request: Request) -> Response:
        s = await page_session(request)
        if isinstance(s, Response):
            return s
        return HTMLResponse(pages.stats(s, stats_of(c.accounts[s.reviewer])))

    def stats_of(account: Account) -> dict[str, Any]:
        labels: dict[str, dict[str, str]] = {}
        times: dict[str, list[float]] = {}
        for item in c.queue.items.values():
            if c.queue.get(item.flagged_id, account.scope) is None:
                continue
            for reviewer, r in item.decisions.items():
                labels.setdefault(item.flagged_id, {})[reviewer] = r.label.value
                times.setdefault(reviewer, []).append(c.queue.review_times.get(r.review_id, 0.0))
        overlap = {k: v for k, v in labels.items() if len(v) >= 2}
        return {
            "items_with_overlap": len(overlap),
            "alpha": krippendorff_alpha([list(v.values()) for v in overlap.values()]),
            "kappa": {f"{a} / {b}": k for (a, b), k in pairwise_kappa(overlap).items()},
            "reviewers": [
                {"reviewer": t.reviewer, "reviews": t.reviews, "per_hour": t.per_hour}
                for t in throughput(times)
            ],
        }

    def item_json(item: Item, s: Session) -> dict[str, Any]:
        record = item.record
        verdict = item.verdict
        mine = item.decisions.get(s.reviewer)
        return {
            "flagged_id": item.flagged_id,
            "reasons": list(item.reasons),
            "context": record.get("context", []),
            "turn": {
                "role": record.get("turn", {}).get("role"),
                "content": record.get("turn", {}).get("content"),
            },
            "content_truncated": "content_truncated" in record,
            "detail": record.get("detail"),
            "verdict": {
                k: verdict.get(k)
                for k in (
                    "verdict",
                    "p_unsafe",
                    "categories",
                    "policy_id",
                    "model_name",
                    "model_version",
                    "tenant",
                    "fail_closed",
                    "decided_at",
                )
            },
            "policy_categories": item_categories(item),
            "attempt": secrets.token_urlsafe(12),
            "your_decision": None
            if mine is None
            else {"label": mine.label.value, "categories": list(mine.categories)},
        }

    async def next_item(request: Request) -> Response:
        s = api_session(request, post=False)
        if isinstance(s, Response):
            return s
        filters, order = filters_of(request)
        item = c.queue.take(s.reviewer, c.accounts[s.reviewer].scope, c.clock(), filters, order)
        if item is None:
            return JSONResponse({"item": None})
        return JSONResponse({"item": item_json(item, s)})

    async def get_item(request: Request) -> Response:
        s = api_session(request, post=False)
        if isinstance(s, Response):
            return s
        item = c.queue.get(request.path_params["fid"], c.accounts[s.reviewer].scope)
        if item is None:
            return JSONResponse({"error": "no such item"}, 404)
        return JSONResponse({"item": item_json(item, s)})

    async def decide(request: Request) -> Response:
        s = api_session(request, post=True)
        if isinstance(s, Response):
            return s
        item = c.queue.get(request.path_params["fid"], c.accounts[s.reviewer].scope)
        if item is None:
            return JSONResponse({"error": "no such item"}, 404)
        if not c.queue.may_decide(item, s.reviewer, c.clock()):
            return JSONResponse({"error": "decided already, or held by other reviewers"}, 409)
        try:
            body = await request.json()
            if isinstance(body, dict) and body.get("reviewer", s.reviewer) != s.reviewer:
                log.warning("console: %s sent a decision naming another reviewer", s.reviewer)
                return JSONResponse({"error": "the reviewer is who is signed in"}, 403)
            review = decision_of(body, item, s.reviewer)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        key = c.signing_keys.get(s.reviewer)
        if key is not None:
            review = review.signed(key)
        elif c.signing_keys:  # it would close the item here and count nowhere else
            return JSONResponse({"error": f"no signing key for reviewer {s.reviewer}"}, 403)
        await c.publish(review)  # at least once; the id makes a resend harmless
        c.queue.add_review(review, c.clock())
        stack = c.decided.setdefault(s.reviewer, [])
        stack.append(item.flagged_id)
        del stack[:-50]
        c.submitted.labels(review.label.value).inc()
        return JSONResponse({"review_id": review.review_id})

    def decision_of(body: Any, item: Item, reviewer: str) -> ReviewEvent:
        if not isinstance(body, dict):
            raise ValueError("a JSON object is expected")
        label = Decision(str(body.get("label")))
        cats = body.get("categories") or []
        if not isinstance(cats, list) or not all(isinstance(x, str) for x in cats):
            raise ValueError("categories must be a list of codes")
        codes = {x["code"] for x in item_categories(item)}
        if label is Decision.UNSAFE and not cats:
            raise ValueError("an unsafe decision needs at least one category")
        if label is Decision.SAFE and cats:
            raise ValueError("a safe decision takes no categories")
        unknown = [x for x in cats if x not in codes]
        if unknown:
            raise ValueError(f"not in the policy: {', '.join(unknown)[:200]}")
        note = str(body.get("note") or "")[:MAX_NOTE]
        attempt = str(body.get("attempt") or "")[:64]
        if not attempt:
            raise ValueError("attempt is required (the page's token)")
        decided = orjson.dumps([label.value, sorted(set(cats)), note])
        return ReviewEvent(
            review_id=review_id(reviewer, item.flagged_id, attempt, decided),
            flagged_id=item.flagged_id,
            label=label,
            categories=tuple(sorted(set(cats))),
            reviewer=reviewer,
            reviewed_at=now_rfc3339(),
            note=note,
        )

    def item_categories(item: Item) -> list[dict[str, str]]:
        """The categories of the item's policy; none for an unknown policy (the reviewer
        sees the item and cannot pick codes)."""
        try:
            policy = c.policies.get(str(item.verdict.get("policy_id", "")))
        except InvalidInput:
            return []
        return [{"code": x.code, "name": x.name} for x in policy.categories]

    async def skip(request: Request) -> Response:
        s = api_session(request, post=True)
        if isinstance(s, Response):
            return s
        c.queue.skip(request.path_params["fid"], s.reviewer, c.clock())
        return JSONResponse({"skipped": request.path_params["fid"]})

    async def undo(request: Request) -> Response:
        """The reviewer's last decided item, to decide again (their new decision
        replaces the old: each reviewer's latest counts)."""
        s = api_session(request, post=True)
        if isinstance(s, Response):
            return s
        stack = c.decided.get(s.reviewer) or []
        if not stack:
            return JSONResponse({"item": None})
        fid = stack.pop()
        item = c.queue.get(fid, c.accounts[s.reviewer].scope)
        return JSONResponse({"item": None if item is None else item_json(item, s)})

    async def metrics(request: Request) -> Response:
        depth, age = c.queue.depth_and_age(c.clock())
        c.depth.set(depth)
        c.age.set(age)
        return Response(generate_latest(c.registry), media_type="text/plain")

    async def healthz(request: Request) -> Response:
        if not c.is_alive():
            return JSONResponse({"status": "not following the topics"}, 503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = c.is_ready()
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    return Starlette(
        routes=[
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", queue_page, methods=["GET"]),
            Route("/review", review_page, methods=["GET"]),
            Route("/stats", stats_page, methods=["GET"]),
            Route("/api/next", next_item, methods=["GET"]),
            Route("/api/items/{fid}", get_item, methods=["GET"]),
            Route("/api/items/{fid}/decision", decide, methods=["POST"]),
            Route("/api/items/{fid}/skip", skip, methods=["POST"]),
            Route("/api/undo", undo, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )
