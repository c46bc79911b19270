"""``guardstream console``: the console wired to Kafka and served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette

from guard.settings import Settings
from guard.taxonomy import PolicyRegistry
from review_console.app import Console, build_app
from review_console.auth import Account, hash_password, parse_accounts
from review_console.queue import ReviewQueue
from review_console.topics import Follower, Publisher

log = logging.getLogger(__name__)


def read_accounts(path: Path | None) -> dict[str, Account]:
    if path is None:
        raise ValueError(
            "no reviewer accounts: set GUARDSTREAM_CONSOLE__ACCOUNTS_FILE"
            " (see docs/console.md; `guardstream up` makes a local one)"
        )
    return parse_accounts(json.loads(path.read_text()))


def local_account(path: Path, reviewer: str = "reviewer") -> str:
    """Write a one-account file for a local run (``up``) with a fresh password, kept
    readable by its owner only, and return the password."""
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({reviewer: {"password": hash_password(password), "tenants": "*"}}))
    path.chmod(0o600)
    return password


def make_app(s: Settings) -> Starlette:
    c = s.console
    keys = {r: k.get_secret_value().encode() for r, k in s.review.reviewer_keys.items()}
    accounts = read_accounts(c.accounts_file)
    unkeyed = sorted(set(accounts) - set(keys))
    if keys and unkeyed:
        raise ValueError(
            f"reviewers {', '.join(unkeyed)} have accounts but no signing key in"
            " GUARDSTREAM_REVIEW__REVIEWER_KEYS: their decisions would count nowhere"
        )
    publisher = Publisher(s)
    console = Console(
        queue=ReviewQueue(overlap=c.overlap, hold_s=c.hold_s),
        accounts=accounts,
        session_key=(
            c.session_key.get_secret_value().encode() if c.session_key else secrets.token_bytes(32)
        ),
        policies=PolicyRegistry.with_directory(s.policy.policy_dir),
        publish=publisher,
        signing_keys=keys,
        identity_header=c.identity_header,
        session_ttl_s=c.session_ttl_s,
        secure_cookies=c.secure_cookies,
    )
    follower = Follower(s, console.queue, keys)
    console.is_ready = follower.caught_up.is_set
    app = build_app(console)
    state: dict[str, asyncio.Task[None]] = {}
    console.is_alive = lambda: "task" in state and not state["task"].done()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        task = state["task"] = asyncio.create_task(follower.run())
        task.add_done_callback(_log_end)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await publisher.stop()

    app.router.lifespan_context = lifespan
    app.state.follower = follower
    return app


def _log_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the console stopped following the topics: %r", task.exception())


def serve(s: Settings) -> None:
    import uvicorn

    app = make_app(s)
    log.info("review console on http://%s:%d/", s.console.host, s.console.port)
    # Access logs carry paths with item ids only, never chat content.
    uvicorn.run(app, host=s.console.host, port=s.console.port, log_level="info")
