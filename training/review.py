"""Human review of flagged turns (``guardstream review``).

The logic is plain functions (pending turns, parsing a decision, making the
review event), so that a web console can reuse it; the terminal loop is a
thin shell around them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from guard.errors import InvalidInput
from guard.events import Decision, EventError, ReviewEvent, decode_review, now_rfc3339
from guard.taxonomy import Policy


def pending(flagged: Iterable[bytes], reviews: Iterable[bytes]) -> list[dict[str, Any]]:
    """Flagged turns that have no review yet, oldest first, each once."""
    done = set()
    for raw in reviews:
        try:
            done.add(decode_review(raw).flagged_id)
        except EventError:
            continue
    out, seen = [], set()
    for raw in flagged:
        try:
            event = orjson.loads(raw)
            fid = str(event["flagged_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if fid not in done and fid not in seen:
            seen.add(fid)
            out.append(event)
    return out


def parse_decision(answer: str, policy: Policy) -> tuple[Decision, tuple[str, ...]]:
    """``safe`` / ``s``, or ``unsafe O3,O5`` / ``u O3``; ValueError says what is wrong."""
    words = answer.strip().split(maxsplit=1)
    if not words:
        raise ValueError("type s (safe), u CODES (unsafe), k (skip) or q (quit)")
    head = words[0].lower()
    if head in ("s", "safe"):
        if len(words) > 1:
            raise ValueError("a safe decision takes no categories")
        return Decision.SAFE, ()
    if head in ("u", "unsafe"):
        codes = tuple(
            c.strip() for c in (words[1] if len(words) > 1 else "").split(",") if c.strip()
        )
        if not codes:
            raise ValueError(f"name the violated categories, e.g. 'u {policy.codes[0]}'")
        unknown = [c for c in codes if c not in policy.codes]
        if unknown:
            raise ValueError(
                f"unknown categories {', '.join(unknown)}; "
                f"{policy.ref} has {', '.join(policy.codes)}"
            )
        return Decision.UNSAFE, codes
    raise ValueError(f"not understood: {head!r}")


def make_review(
    flagged_id: str, decision: Decision, codes: tuple[str, ...], reviewer: str, note: str = ""
) -> ReviewEvent:
    return ReviewEvent(
        str(uuid.uuid4()), flagged_id, decision, codes, reviewer, now_rfc3339(), note
    )


def render(event: dict[str, Any], policy: Policy) -> str:
    v = event["verdict"]
    lines = [
        f"--- flagged {event['flagged_id']} ({', '.join(event['reasons'])}); "
        f"model said {v['verdict']} p={v['p_unsafe']:.3f} "
        f"{[c['code'] for c in v['categories']]}"
    ]
    for t in [*event.get("context", []), event["turn"]]:
        lines.append(f"  {t['role']:>5}: {t['content']}")
    lines.append("  categories: " + "; ".join(f"{c.code} {c.name}" for c in policy.categories))
    return "\n".join(lines)


def review_loop(
    items: list[dict[str, Any]],
    policy_for: Callable[[str], Policy],
    reviewer: str,
    ask: Callable[[str], str],
    say: Callable[[str], None],
    record: Callable[[ReviewEvent], None],
) -> int:
    """Ask about each item and record each decision at once; stops at 'q' or EOF.

    Returns the number of decisions recorded.
    """
    out = 0
    for event in items:
        try:
            policy = policy_for(str(event["verdict"]["policy_id"]))
        except InvalidInput as exc:  # e.g. a turn that failed closed on an unknown policy
            say(f"--- flagged {event['flagged_id']}: skipped, {exc}")
            continue
        say(render(event, policy))
        while True:
            try:
                answer = ask("decision [s | u CODES | k skip | q quit]> ").strip()
            except EOFError:
                return out
            if answer.lower() in ("q", "quit"):
                return out
            if answer.lower() in ("k", "skip"):
                break
            try:
                decision, codes = parse_decision(answer, policy)
            except ValueError as exc:
                say(f"  {exc}")
                continue
            record(make_review(str(event["flagged_id"]), decision, codes, reviewer))
            out += 1
            break
    return out
