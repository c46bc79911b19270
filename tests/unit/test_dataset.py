import dataclasses
from pathlib import Path

import orjson

from guard.conversation import Role, Turn
from guard.events import Decision, ReviewEvent
from guard.taxonomy import PolicyRegistry
from training.dataset import (
    Example,
    calibration_rows,
    join_reviews,
    read_rows,
    split_of,
    write_snapshot,
)


def flagged(
    fid: str, content: str = "how to hotwire a car", policy: str = "llama-guard-1"
) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "flagged_id": fid,
            "reasons": ["unsafe"],
            "turn": {
                "event_id": f"e-{fid}",
                "conversation_id": f"c-{fid}",
                "turn_index": 1,
                "role": "agent",
                "content": content,
                "timestamp": "2026-11-28T10:00:00Z",
            },
            "context": [{"role": "user", "content": "hi"}],
            "verdict": {
                "verdict_id": fid,
                "policy_id": policy,
                "verdict": "unsafe",
                "p_unsafe": 0.9,
                "categories": [{"code": "O3", "name": "Criminal Planning"}],
            },
        }
    )


KEY = b"test-split-key"


def review(
    fid: str, label: str, cats: list[str], at: str, rid: str = "", reviewer: str = "ann"
) -> bytes:
    return ReviewEvent(
        rid or f"r-{fid}-{at}-{reviewer}", fid, Decision(label), tuple(cats), reviewer, at
    ).to_json()


def test_a_reviewers_latest_decision_by_arrival_wins_and_the_conversation_is_rebuilt() -> None:
    examples, rejected = join_reviews(
        [flagged("f1"), flagged("f2")],
        [
            review("f1", "unsafe", ["O3"], "2026-11-28T10:00:00Z"),
            review("f1", "safe", [], "2026-11-28T11:00:00Z"),
            # Dated in the future, but received first: the later decision still wins.
            review("f2", "safe", [], "2999-01-01T00:00:00Z"),
            review("f2", "unsafe", ["O3"], "2026-11-28T08:00:00Z"),
        ],
        PolicyRegistry(),
    )
    assert rejected == []
    by_id = {e.id: e for e in examples}
    assert not by_id["f1"].unsafe and by_id["f2"].unsafe and by_id["f2"].categories == ("O3",)
    assert by_id["f1"].turns == (Turn(Role.USER, "hi"), Turn(Role.AGENT, "how to hotwire a car"))
    assert by_id["f1"].conversation_id == "c-f1"


def test_bad_reviews_are_rejected_with_their_reason() -> None:
    examples, rejected = join_reviews(
        [flagged("f1")],
        [
            b"not json",
            orjson.dumps(
                {
                    "schema_version": 1,
                    "review_id": "r-x",
                    "flagged_id": "f1",
                    "label": "maybe",
                    "categories": [],
                    "reviewer": "a",
                    "reviewed_at": "2026-11-28T10:00:00Z",
                }
            ),
            review("nope", "safe", [], "2026-11-28T10:00:00Z", rid="r-unknown"),
            review("f1", "unsafe", ["O9"], "2026-11-28T10:00:00Z", rid="r-badcat"),
            orjson.dumps(
                {
                    "schema_version": 1,
                    "review_id": "r-nocat",
                    "flagged_id": "f1",
                    "label": "unsafe",
                    "categories": [],
                    "reviewer": "a",
                    "reviewed_at": "2026-11-28T10:00:00Z",
                }
            ),
        ],
        PolicyRegistry(),
    )
    assert examples == []
    reasons = {r.ref: r.reason for r in rejected}
    assert "malformed review: not valid JSON" in reasons["?"]
    assert "field 'label' must be 'safe' or 'unsafe'" in reasons["r-x"]
    assert reasons["r-unknown"] == "unknown flagged turn 'nope'"
    assert reasons["r-badcat"] == "unknown categories for llama-guard-1@1: O9"
    assert "needs at least one category" in reasons["r-nocat"]


def test_a_truncated_turn_is_not_trained_on() -> None:
    """A turn too large to judge reaches review cut down; its label is about text
    that is not in the record, so it must not become a training example."""
    cut = orjson.loads(flagged("f1", content="how to"))
    cut["content_truncated"] = {"size": 900_000, "sha256": "0" * 64}
    examples, rejected = join_reviews(
        [orjson.dumps(cut), flagged("f2")],
        [
            review("f1", "unsafe", ["O3"], "2026-11-28T10:00:00Z", rid="r-cut"),
            review("f2", "unsafe", ["O3"], "2026-11-28T10:00:00Z"),
        ],
        PolicyRegistry(),
    )
    assert [e.id for e in examples] == ["f2"]
    assert [(r.ref, r.reason) for r in rejected] == [
        ("r-cut", "the flagged turn was truncated: not trainable")
    ]


def test_a_turn_that_failed_closed_is_not_trained_on() -> None:
    odd = orjson.loads(flagged("f1"))
    odd["verdict"]["fail_closed"] = "too_large"
    examples, rejected = join_reviews(
        [orjson.dumps(odd)],
        [review("f1", "unsafe", ["O3"], "2026-11-28T10:00:00Z", rid="r-fc")],
        PolicyRegistry(),
    )
    assert examples == []
    assert [(r.ref, r.reason) for r in rejected] == [
        ("r-fc", "the turn failed closed (too_large): not trainable")
    ]


def test_split_is_stable_by_conversation_and_roughly_the_fraction() -> None:
    ids = [f"conv-{i}" for i in range(2000)]
    first = [split_of(c, 0.2, KEY) for c in ids]
    assert first == [split_of(c, 0.2, KEY) for c in ids]
    share = first.count("validation") / len(ids)
    assert 0.17 < share < 0.23
    # Without the key, the split of a chosen id cannot be known: another key splits
    # differently (about a third of the ids change sides at this fraction).
    other = [split_of(c, 0.2, b"another-key") for c in ids]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 400


def test_the_calibration_split_is_cut_from_training_and_leaves_validation_alone() -> None:
    ids = [f"conv-{i}" for i in range(2000)]
    two = [split_of(c, 0.2, KEY) for c in ids]
    three = [split_of(c, 0.2, KEY, calibration_fraction=0.15) for c in ids]
    for a, b in zip(two, three, strict=True):
        assert (a == "validation") == (b == "validation")
    assert 0.12 < three.count("calibration") / len(ids) < 0.18


def test_a_side_with_too_few_safe_calibration_rows_trains_instead() -> None:
    def row(i: int, side: Role, unsafe: bool) -> Example:
        turns = (
            (Turn(Role.USER, "q"), Turn(Role.AGENT, "a"))
            if side is Role.AGENT
            else (Turn(Role.USER, "q"),)
        )
        return Example(f"{side.value}-{i}", f"c{i}", turns, unsafe, ("O1",) if unsafe else ())

    agent = [row(i, Role.AGENT, i % 4 == 0) for i in range(40)]  # 30 safe
    user = [row(i, Role.USER, i % 2 == 0) for i in range(40)]  # 20 safe
    held, spare = calibration_rows(agent + user, 30)
    assert held == agent and spare == user
    held, spare = calibration_rows(agent + user, 31)
    assert held == [] and spare == agent + user
    # Seed rows are not the deployment's traffic: they train, and do not count.
    seed = [dataclasses.replace(e, source="seed") for e in agent]
    held, spare = calibration_rows(seed + agent[:35], 30)
    assert held == [] and len(spare) == 75


def test_reviewers_who_disagree_wait_for_a_further_review() -> None:
    flagged_turns = [flagged("f1"), flagged("f2"), flagged("f3")]
    at = "2026-11-28T10:00:00Z"
    tie = [
        review("f1", "unsafe", ["O3"], at, reviewer="ann"),
        review("f1", "safe", [], at, reviewer="bob"),
    ]
    examples, rejected = join_reviews(flagged_turns, tie, PolicyRegistry())
    assert examples == []
    assert [(r.ref, r.reason) for r in rejected] == [
        ("f1", "reviewers disagree (1 safe, 1 unsafe): a further review decides")
    ]
    third = [review("f1", "unsafe", ["O3", "O4"], at, reviewer="cy")]
    majority = [  # categories: those most unsafe reviewers named
        review("f2", "unsafe", ["O3"], at, reviewer="ann"),
        review("f2", "unsafe", ["O3", "O1"], at, reviewer="bob"),
        review("f2", "unsafe", ["O3"], at, reviewer="cy"),
    ]
    # One reviewer changing their mind counts once.
    changed = [review("f3", "safe", [], at, reviewer="ann")] * 3 + [
        review("f3", "unsafe", ["O2"], at, rid="r-f3-ann-again", reviewer="ann"),
        review("f3", "unsafe", ["O2"], at, reviewer="bob"),
    ]
    examples, rejected = join_reviews(
        flagged_turns, tie + third + majority + changed, PolicyRegistry()
    )
    assert rejected == []
    assert {e.id: (e.unsafe, e.categories) for e in examples} == {
        "f1": (True, ("O3",)),
        "f2": (True, ("O3",)),
        "f3": (True, ("O2",)),
    }


def test_the_split_key_is_made_once_kept_private_and_configurable(tmp_path: Path) -> None:
    from training.dataset import split_key

    path = tmp_path / "repo" / ".guardstream" / "split.key"
    made = split_key(None, path)
    assert len(made) == 32 and split_key(None, path) == made
    assert path.stat().st_mode & 0o777 == 0o600
    assert split_key(b"configured", path) == b"configured"


def test_snapshot_is_versioned_by_content_and_keeps_conversations_together(tmp_path: Path) -> None:
    ex = [
        Example(
            f"x{i}",
            f"c{i // 2}",
            (Turn(Role.USER, f"t{i}"),),
            i % 3 == 0,
            ("O1",) if i % 3 == 0 else (),
        )
        for i in range(100)
    ]
    a = write_snapshot(tmp_path, ex, 0.3, KEY)
    b = write_snapshot(tmp_path, list(reversed(ex)), 0.3, KEY)
    assert a.version == b.version and a.path == b.path
    train_convs = {e.conversation_id for e in a.train}
    assert not train_convs & {e.conversation_id for e in a.validation}
    rows, bad = read_rows(a.path / "train.jsonl", PolicyRegistry())
    assert bad == [] and [r.id for r in rows] == [e.id for e in a.train]
    c = write_snapshot(tmp_path, ex[:-1], 0.3, KEY)
    assert c.version != a.version
    # A calibration split: its own file, no conversation shared, a version of its own.
    d = write_snapshot(tmp_path, ex, 0.3, KEY, calibration_fraction=0.3)
    assert d.calibration and d.version != a.version
    assert not {e.conversation_id for e in d.calibration} & (
        {e.conversation_id for e in d.train} | {e.conversation_id for e in d.validation}
    )
    assert [e.id for e in d.validation] == [e.id for e in a.validation]
    rows, bad = read_rows(d.path / "calibration.jsonl", PolicyRegistry())
    assert bad == [] and [r.id for r in rows] == [e.id for e in d.calibration]
    assert a.calibration == [] and (a.path / "calibration.jsonl").read_bytes() == b""


def test_seed_rows_that_cannot_be_read_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "seed.jsonl"
    path.write_text(
        '{"id": "a", "conversation": [{"role": "user", "content": "x"}], "label": "safe"}\n'
        '{"id": "b", "conversation": [], "label": "safe"}\n'
        "garbage\n"
        '{"id": "c", "conversation": [{"role": "user", "content": "x"}], "label": "unsafe",'
        ' "categories": ["O7"]}\n'
    )
    rows, bad = read_rows(path, PolicyRegistry())
    assert [r.id for r in rows] == ["a"]
    assert [b.ref for b in bad] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "unknown categories" in bad[2].reason


def test_rows_with_binary_labels_only_are_left_out_of_training_with_the_reason() -> None:
    """Evaluation sets may say only safe/unsafe; a training answer needs the codes, and
    relabelling such a row safe would teach the model to pass it."""
    from training.dataset import trainable

    turns = (Turn(Role.USER, "x"),)
    good = [
        Example("a", "a", turns, True, ("O3",)),
        Example("b", "b", turns, False, ()),
    ]
    bad = [Example("c", "c", turns, True, ()), Example("d", "d", turns, False, ("O1",))]
    usable, refused = trainable([good[0], bad[0], good[1], bad[1]])
    assert usable == good
    assert [r.ref for r in refused] == ["c", "d"]
    assert all("needs its violated categories" in r.reason for r in refused)


def test_a_reviewed_audit_turn_is_marked_as_the_audit_slice() -> None:
    """Turns sampled from confident verdicts show the misses: evaluation reports them as
    their own source."""
    audit = orjson.loads(flagged("f1"))
    audit["reasons"] = ["audit"]
    examples, _ = join_reviews(
        [orjson.dumps(audit), flagged("f2")],
        [
            review("f1", "unsafe", ["O3"], "2026-11-28T10:00:00Z"),
            review("f2", "safe", [], "2026-11-28T10:00:00Z"),
        ],
        PolicyRegistry(),
    )
    assert {e.id: e.source for e in examples} == {"f1": "audit", "f2": "review"}


def test_with_reviewer_keys_only_reviews_signed_by_their_reviewer_count() -> None:
    """The reviewer is whoever holds the key: an unsigned review, one signed with another
    reviewer's key, or one altered after signing is left out with the reason."""
    from guard.events import decode_review

    keys = {"ann": b"ann-key", "bob": b"bob-key"}
    at = "2026-11-28T10:00:00Z"

    def signed(fid: str, label: str, cats: list[str], reviewer: str, key: bytes) -> bytes:
        return decode_review(review(fid, label, cats, at, reviewer=reviewer)).signed(key).to_json()

    good = signed("f1", "unsafe", ["O3"], "ann", b"ann-key")
    forged = signed("f2", "safe", [], "ann", b"bob-key")  # bob claiming to be ann
    unsigned = review("f3", "safe", [], at, reviewer="ann")
    altered = orjson.loads(signed("f4", "unsafe", ["O3"], "bob", b"bob-key"))
    altered["label"], altered["categories"] = "safe", []
    stranger = signed("f5", "safe", [], "eve", b"eve-key")
    flagged_turns = [flagged(f"f{i}") for i in range(1, 6)]
    examples, rejected = join_reviews(
        flagged_turns,
        [good, forged, unsigned, orjson.dumps(altered), stranger],
        PolicyRegistry(),
        keys,
    )
    assert [e.id for e in examples] == ["f1"]
    assert len(rejected) == 4
    assert all("unsigned, forged or altered" in r.reason for r in rejected)
    # Without keys (a local run), unsigned reviews count.
    examples, rejected = join_reviews(flagged_turns, [unsigned], PolicyRegistry())
    assert [e.id for e in examples] == ["f3"] and rejected == []


def test_a_signature_that_is_not_hex_is_a_malformed_review_not_a_crash() -> None:
    raw = orjson.loads(review("f1", "safe", [], "2026-11-28T10:00:00Z"))
    raw["signature"] = "é" * 64
    examples, rejected = join_reviews(
        [flagged("f1")], [orjson.dumps(raw)], PolicyRegistry(), {"ann": b"ann-key-0123456789"}
    )
    assert examples == [] and "64 hex digits" in rejected[0].reason


def test_a_signed_review_replayed_later_counts_once_at_its_first_arrival() -> None:
    from guard.events import decode_review

    key = b"ann-key-0123456789"
    first = decode_review(review("f1", "unsafe", ["O3"], "2026-11-28T10:00:00Z", rid="r1"))
    correction = decode_review(review("f1", "safe", [], "2026-11-28T11:00:00Z", rid="r2"))
    old, new = first.signed(key).to_json(), correction.signed(key).to_json()
    examples, rejected = join_reviews(
        [flagged("f1")], [old, new, old], PolicyRegistry(), {"ann": key}
    )
    assert rejected == [] and [(e.id, e.unsafe) for e in examples] == [("f1", False)]
