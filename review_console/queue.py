"""The review queue, derived from the flagged and reviews topics (pure; no I/O).

:class:`ReviewQueue` is fed every flagged record and every review in the order the
broker holds them, and answers what a reviewer sees: the open items they may take,
oldest or riskiest first, filtered; the item a reviewer holds (reserved for them for a
while, so two reviewers do not judge the same turn at once); queue depth and age.

An item is **open** until it has as many reviewers as it needs (one; ``overlap`` for an
uncertain verdict) and their latest decisions give a label by the same rule retraining
uses (:func:`training.dataset.consensus`: a strict majority; a tie waits for a further
reviewer). A reviewer never gets an item twice, except to change their own decision.
Reviewers see only the tenants their account covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from guard.events import Decision, ReviewEvent, ReviewReason
from training.dataset import consensus

Order = Literal["oldest", "risk"]


@dataclass
class Item:
    """One flagged turn and what reviewers decided about it."""

    flagged_id: str
    #: The flagged record as the worker wrote it (the turn, its context, the verdict).
    record: dict[str, Any]
    #: When the broker took the flagged record (seconds since the epoch).
    flagged_at: float
    #: Each reviewer's latest decision.
    decisions: dict[str, ReviewEvent] = field(default_factory=dict)
    #: reviewer -> until when they hold it (seconds since the epoch).
    reserved: dict[str, float] = field(default_factory=dict)
    #: reviewer -> until when it is not offered to them again (they skipped it).
    skipped: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> dict[str, Any]:
        return dict(self.record.get("verdict", {}))

    @property
    def tenant(self) -> str | None:
        t = self.verdict.get("tenant")
        return None if t is None else str(t)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(str(r) for r in self.record.get("reasons", ()))

    @property
    def categories(self) -> tuple[str, ...]:
        """The codes of the categories the model named (``{"code", "name"}`` each)."""
        cats = self.verdict.get("categories", ())
        return tuple(str(c.get("code")) if isinstance(c, dict) else str(c) for c in cats)

    @property
    def model_version(self) -> str:
        return str(self.verdict.get("model_version", ""))

    @property
    def p_unsafe(self) -> float:
        try:
            return float(self.verdict.get("p_unsafe", 1.0))
        except (TypeError, ValueError):
            return 1.0

    def needed(self, overlap: int) -> int:
        """Reviewers this item needs: ``overlap`` for an uncertain verdict, else one."""
        return max(overlap, 1) if ReviewReason.UNCERTAIN.value in self.reasons else 1

    def label(self) -> tuple[Decision, tuple[str, ...]] | str | None:
        """The consensus of its reviewers' latest decisions; a reason when they tie;
        None before any decision."""
        if not self.decisions:
            return None
        return consensus(list(self.decisions.values()))

    def is_open(self, overlap: int) -> bool:
        return len(self.decisions) < self.needed(overlap) or isinstance(self.label(), str)

    def holders(self, now: float) -> set[str]:
        return {r for r, until in self.reserved.items() if until > now}

    def has_room(self, reviewer: str, now: float, overlap: int) -> bool:
        """Open, and not held by as many reviewers other than ``reviewer`` as it still
        needs (at least one more while it is open)."""
        if not self.is_open(overlap):
            return False
        others = self.holders(now) - {reviewer}
        return len(others) < max(self.needed(overlap) - len(self.decisions), 1)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a reviewer asked to see; None: anything."""

    tenant: str | None = None
    category: str | None = None
    reason: str | None = None
    model_version: str | None = None

    def match(self, item: Item) -> bool:
        return (
            (self.tenant is None or item.tenant == self.tenant)
            and (self.category is None or self.category in item.categories)
            and (self.reason is None or self.reason in item.reasons)
            and (self.model_version is None or item.model_version == self.model_version)
        )


#: A reviewer's tenant scope: every tenant, or these (None stands for turns without one).
Scope = Literal["*"] | frozenset[str | None]


def in_scope(scope: Scope, tenant: str | None) -> bool:
    return scope == "*" or tenant in scope


@dataclass
class ReviewQueue:
    """The queue's state; ``overlap``: reviewers per uncertain item, ``hold_s``: how long
    an item stays reserved for the reviewer who opened it."""

    overlap: int = 2
    hold_s: float = 600.0
    items: dict[str, Item] = field(default_factory=dict)
    #: Review ids already applied (a redelivered review counts once).
    seen_reviews: set[str] = field(default_factory=set)
    #: Reviews of turns not (yet) read: applied when their flagged record comes.
    orphans: dict[str, list[ReviewEvent]] = field(default_factory=dict)
    #: review id -> when the broker took it (seconds since the epoch), for throughput.
    review_times: dict[str, float] = field(default_factory=dict)

    def add_flagged(self, record: Mapping[str, Any], at: float) -> Item | None:
        """A flagged record (as decoded JSON) the broker took at ``at``; a record not of
        the worker's shape is ignored (the worker writes them; a bad one cannot be
        reviewed, and must not break the queue for the rest)."""
        if not well_formed(record):
            return None
        fid = str(record["flagged_id"])
        item = self.items.get(fid)
        if item is None:  # a redelivered record keeps what was decided about it
            item = self.items[fid] = Item(fid, dict(record), at)
        for review in self.orphans.pop(fid, []):
            item.decisions[review.reviewer] = review
        return item

    def add_review(self, review: ReviewEvent, at: float | None = None) -> None:
        """A review, in the order the broker holds them (taken at ``at``): each
        reviewer's latest counts."""
        if review.review_id in self.seen_reviews:
            return
        self.seen_reviews.add(review.review_id)
        if at is not None:
            self.review_times[review.review_id] = at
        item = self.items.get(review.flagged_id)
        if item is None:
            self.orphans.setdefault(review.flagged_id, []).append(review)
            return
        item.decisions[review.reviewer] = review
        item.reserved.pop(review.reviewer, None)

    def may_decide(self, item: Item, reviewer: str, now: float) -> bool:
        """Whether ``reviewer`` may record a decision on ``item`` now: a change of their
        own decision, or an open item not held by as many others as it still needs."""
        return reviewer in item.decisions or item.has_room(reviewer, now, self.overlap)

    def available(
        self,
        reviewer: str,
        scope: Scope,
        now: float,
        filters: Filters = Filters(),
        order: Order = "oldest",
    ) -> list[Item]:
        """The open items ``reviewer`` may take now, in ``order``: not yet decided by
        them, in their scope, and not held by as many others as the item still needs."""
        out = []
        for item in self.items.values():
            if not (in_scope(scope, item.tenant) and filters.match(item)):
                continue
            if reviewer in item.decisions or item.skipped.get(reviewer, 0.0) > now:
                continue
            if item.has_room(reviewer, now, self.overlap):
                out.append(item)
        if order == "risk":
            out.sort(key=lambda i: (-i.p_unsafe, i.flagged_at, i.flagged_id))
        else:
            out.sort(key=lambda i: (i.flagged_at, i.flagged_id))
        return out

    def take(
        self,
        reviewer: str,
        scope: Scope,
        now: float,
        filters: Filters = Filters(),
        order: Order = "oldest",
    ) -> Item | None:
        """The item ``reviewer`` should judge next, reserved for them: the one they
        already hold if it is still open, else the first available."""
        for item in self.items.values():
            if (
                reviewer in item.holders(now)
                and reviewer not in item.decisions
                and item.is_open(self.overlap)
                and in_scope(scope, item.tenant)
                and filters.match(item)
            ):
                return item
        first = next(iter(self.available(reviewer, scope, now, filters, order)), None)
        if first is not None:
            for item in self.items.values():  # one held item per reviewer
                item.reserved.pop(reviewer, None)
            first.reserved[reviewer] = now + self.hold_s
        return first

    def get(self, flagged_id: str, scope: Scope) -> Item | None:
        """An item by id, if the scope covers its tenant (else as if it did not exist)."""
        item = self.items.get(flagged_id)
        return item if item is not None and in_scope(scope, item.tenant) else None

    def skip(self, flagged_id: str, reviewer: str, now: float) -> None:
        """``reviewer`` skips the item: released, and not offered to them again for
        ``hold_s`` (others may take it)."""
        item = self.items.get(flagged_id)
        if item is not None:
            item.reserved.pop(reviewer, None)
            item.skipped[reviewer] = now + self.hold_s

    def open_items(self) -> list[Item]:
        return [i for i in self.items.values() if i.is_open(self.overlap)]

    def depth_and_age(self, now: float) -> tuple[int, float]:
        """Open items, and the age in seconds of the oldest (0 when none)."""
        open_ = self.open_items()
        return len(open_), max((now - i.flagged_at for i in open_), default=0.0)


def well_formed(record: Mapping[str, Any]) -> bool:
    """The shape :class:`Item` and the pages rely on: a flagged id, the turn and the
    verdict as objects, reasons and context as lists."""
    fid = record.get("flagged_id")
    return (
        isinstance(fid, str)
        and bool(fid)
        and isinstance(record.get("turn"), dict)
        and isinstance(record.get("verdict"), dict)
        and isinstance(record.get("reasons", []), list)
        and isinstance(record.get("context", []), list)
        and all(isinstance(t, dict) for t in record.get("context", []))
    )
