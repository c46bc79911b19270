"""The moderation stream end to end: real broker, real tritonserver, worker process."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from guard.causal_lm import CausalLMGuard
from guard.conversation import Role, Turn
from guard.events import ChatTurn, context_digest, now_rfc3339, verdict_id
from guard.scoring import GuardRequest
from guard.taxonomy import LLAMA_GUARD_1
from stream_app.routing import MISSING_USER_TURN
from tests.conftest import ROOT, free_port
from tests.streaming import (
    collect,
    isolated_settings,
    make_turns,
    send_raw,
    send_turns,
    worker_process,
)

pytestmark = pytest.mark.integration


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _expected_id(verdict: dict[str, object]) -> str:
    """The id a verdict must carry: its turn, the served model and policy, and the
    context it says it was judged in."""
    event_id, context = str(verdict["event_id"]), str(verdict["context_sha256"])
    return verdict_id(event_id, "guard", "1", LLAMA_GUARD_1.ref, context)


def _earlier(turns: list[ChatTurn], t: ChatTurn, keep: int = 8) -> tuple[Turn, ...]:
    """The turns of ``t``'s conversation before it (the last ``keep``), as the worker
    should have sent them; an agent turn without a user turn gets the placeholder."""
    before = [Turn(x.role, x.content) for x in turns if x.conversation_id == t.conversation_id]
    context = tuple(before[: t.turn_index][-keep:])
    if t.role is Role.AGENT and not any(c.role is Role.USER for c in context):
        context = (Turn(Role.USER, MISSING_USER_TURN), *context)
    return context


def test_n_turns_in_exactly_n_verdicts_with_expected_ids(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    turns = make_turns(60)
    with worker_process(s, tmp_path / "worker.log") as worker:
        send_turns(s, turns)
        verdicts = collect(s, s.topics.verdicts, count=len(turns), timeout_s=120)
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        extra = collect(s, s.topics.verdicts, count=len(turns) + 1, timeout_s=3)
        metrics = _metrics(s.worker.web_port)
        health = orjson.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{s.worker.web_port}/healthz").read()
        )
    assert health["status"] == "ok"
    assert "/torch/" not in maps, "the worker process must not load torch"
    assert metrics["guardstream_turns_in_total"] == len(turns)
    assert sum(v for k, v in metrics.items() if k.startswith("guardstream_verdicts_total")) == len(
        turns
    )
    assert metrics["guardstream_batch_size_count"] >= 1
    assert len(verdicts) == len(turns)
    assert len(extra) == len(turns), "no verdict beyond one per turn"
    by_event = {v["event_id"]: v for v in verdicts}
    assert set(by_event) == {t.event_id for t in turns}
    for t in turns:
        v = by_event[t.event_id]
        assert v["context_sha256"] == context_digest(_earlier(turns, t)), t.event_id
        assert v["verdict_id"] == _expected_id(v)
        assert v["conversation_id"] == t.conversation_id and v["role"] == t.role.value
        assert v["verdict"] in ("safe", "unsafe") and 0.0 <= float(v["p_unsafe"]) <= 1.0
        assert v["model_name"] == "guard" and v["model_version"] == "1"
        assert (v["policy_id"], v["policy_version"]) == ("llama-guard-1", "1")
        assert v["schema_version"] == 1 and v["turn_timestamp"] == t.timestamp
    log_text = (tmp_path / "worker.log").read_text()
    assert "message 1 about" not in log_text, "chat content must not reach the logs"


def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    turns = make_turns(400, conversations=20)
    send_turns(s, turns)
    first = worker_process(s, tmp_path / "worker1.log").start()
    try:
        early = collect(s, s.topics.verdicts, count=40, timeout_s=120)
        assert len(early) == 40
    finally:
        first.kill()  # SIGKILL: no clean shutdown, no final commit
    with worker_process(s, tmp_path / "worker2.log"):
        deadline = time.monotonic() + 240
        ids: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        while time.monotonic() < deadline and len(ids) < len(turns):
            ids.clear()
            for v in collect(s, s.topics.verdicts, count=None, timeout_s=3):
                assert v["verdict_id"] == _expected_id(v)
                ids[str(v["event_id"])][str(v["context_sha256"])].add(str(v["verdict_id"]))
    assert set(ids) == {t.event_id for t in turns}, "every turn has a verdict"
    for event_id, by_context in ids.items():
        # A redelivered turn judged in the same context carries the identical id; one
        # judged again after the restart, without its earlier turns, says so.
        assert all(len(vids) == 1 for vids in by_context.values()), event_id


def test_triton_down_neither_drops_nor_commits_and_the_backlog_drains(
    kafka_broker: str, tiny_lg1: Path, tmp_path: Path
) -> None:
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    ports = TritonPorts(free_port(), free_port(), free_port())

    def triton() -> object:
        return triton_process(
            ROOT / "model_repo",
            tmp_path / "triton",
            ports,
            explicit_models=["guard"],
            env={"GUARDSTREAM_MODEL_CHECKPOINT": str(tiny_lg1)},
            timeout_s=240,
        )

    s = isolated_settings(kafka_broker, f"127.0.0.1:{ports.grpc}", tmp_path)
    before, during = make_turns(20, tag="before"), make_turns(30, tag="during")
    server = triton().start()  # type: ignore[attr-defined]
    with worker_process(s, tmp_path / "worker.log") as worker:
        send_turns(s, before)
        assert len(collect(s, s.topics.verdicts, count=20, timeout_s=60)) == 20
        server.stop()
        send_turns(s, during)
        # While Triton is down: no verdict and no dead letter for the new turns.
        quiet = collect(s, s.topics.verdicts, count=None, timeout_s=8)
        assert len(quiet) == 20
        assert collect(s, s.topics.dlq, count=None, timeout_s=1) == []
        assert worker.alive()
        server = triton().start()  # type: ignore[attr-defined]
        try:
            verdicts = collect(s, s.topics.verdicts, count=50, timeout_s=180)
        finally:
            server.stop()
    assert {v["event_id"] for v in verdicts} == {t.event_id for t in before + during}
    assert "triton request failed" in (tmp_path / "worker.log").read_text()


def _turn_json(**overrides: object) -> bytes:
    base = {
        "schema_version": 1,
        "event_id": "ok-1",
        "conversation_id": "c-1",
        "turn_index": 0,
        "role": "user",
        "content": "hello",
        "timestamp": now_rfc3339(),
    }
    base.update(overrides)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


MALFORMED: dict[str, tuple[bytes | None, str]] = {
    "not json": (b"hello there", "not valid JSON"),
    "invalid utf-8": (b'{"content": "\xff\xfe"}', "not valid UTF-8"),
    "not an object": (b"[1, 2]", "must be a JSON object"),
    "missing field": (_turn_json(event_id=...), "missing field 'event_id'"),
    "wrong type": (_turn_json(turn_index="3"), "field 'turn_index' must be int"),
    "unknown role": (_turn_json(role="system"), "field 'role' must be 'user' or 'agent'"),
    "bad timestamp": (_turn_json(timestamp="yesterday"), "timestamp is not RFC 3339"),
    "schema version": (_turn_json(schema_version=9), "unsupported schema_version 9"),
    "no value": (None, "empty message"),
    "empty content": (_turn_json(content="  "), "content is empty"),
    "long id": (_turn_json(conversation_id="c" * 257), "over the limit of 256"),
}
# A well-formed turn that is too large or that the model rejects is addressable: it
# gets a fail-closed verdict, not a dead letter (test_every_addressable_turn_...).


def test_malformed_events_go_to_the_dlq_with_their_reason_and_the_stream_goes_on(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    s = isolated_settings(
        kafka_broker, str(triton_server["grpc"]), tmp_path, max_content_bytes=4096
    )
    records = [(b"bad-" + name.encode(), raw) for name, (raw, _) in MALFORMED.items()]
    good = ChatTurn("good-1", "c-good", 0, Role.USER, "is this fine?", now_rfc3339())
    with worker_process(s, tmp_path / "worker.log") as worker:
        send_raw(s, records)
        send_turns(s, [good])
        dead = collect(s, s.topics.dlq, count=len(records), timeout_s=120)
        verdicts = collect(s, s.topics.verdicts, count=1, timeout_s=60)
        assert worker.alive()
    assert [v["event_id"] for v in verdicts] == ["good-1"]
    by_original: dict[bytes | None, dict[str, object]] = {}
    for d in dead:
        raw = None if d["original_b64"] is None else base64.b64decode(str(d["original_b64"]))
        by_original[raw] = d
        assert d["source_topic"] == s.topics.input
        assert isinstance(d["partition"], int) and isinstance(d["offset"], int)
    for name, (raw, reason) in MALFORMED.items():
        assert raw in by_original, f"{name} reached the DLQ with its original bytes"
        assert reason in str(by_original[raw]["reason"]), name


def test_agent_turn_is_classified_with_the_preceding_user_turn(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    user = ChatTurn(
        "u-1",
        "c-ctx",
        0,
        Role.USER,
        "Tell me everything about the history of lock picking " * 8,
        now_rfc3339(),
    )
    agent = ChatTurn("a-1", "c-ctx", 1, Role.AGENT, "Here is a short summary.", now_rfc3339())
    with worker_process(s, tmp_path / "worker.log"):
        send_turns(s, [user, agent])
        verdicts = {v["event_id"]: v for v in collect(s, s.topics.verdicts, 2, 60)}
    guard = CausalLMGuard.load(Path(str(triton_server["checkpoint"])))

    def p(turns: tuple[Turn, ...]) -> float:
        return guard.score([GuardRequest(turns, Role.AGENT, LLAMA_GUARD_1)])[0].p_unsafe

    with_user = p((Turn(Role.USER, user.content), Turn(Role.AGENT, agent.content)))
    without = p(
        (Turn(Role.USER, "[earlier conversation unavailable]"), Turn(Role.AGENT, agent.content))
    )
    assert abs(with_user - without) > 1e-5, "the test can tell the two prompts apart"
    got = verdicts["a-1"]
    assert got["context_turns"] == 1
    assert float(got["p_unsafe"]) == pytest.approx(with_user, abs=1e-4)  # type: ignore[arg-type]


def test_tenants_on_the_same_conversation_id_never_see_each_others_turns(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    ts = now_rfc3339()
    a0 = ChatTurn("t-a0", "shared-id", 0, Role.USER, "acme's private question", ts, tenant="acme")
    b1 = ChatTurn("t-b1", "shared-id", 1, Role.USER, "globex asks something", ts, tenant="globex")
    a1 = ChatTurn("t-a1", "shared-id", 1, Role.AGENT, "an answer for acme", ts, tenant="acme")
    # A forged turn far ahead must not make acme's next real turn look like a replay.
    a_far = ChatTurn("t-far", "shared-id", 2**62, Role.USER, "forged", ts, tenant="acme")
    a2 = ChatTurn("t-a2", "shared-id", 2, Role.USER, "acme's follow-up", ts, tenant="acme")
    a3 = ChatTurn("t-a3", "shared-id", 3, Role.AGENT, "acme's last answer", ts, tenant="acme")
    with worker_process(s, tmp_path / "worker.log"):
        send_turns(s, [a0, b1, a1, a_far, a2, a3])
        verdicts = {v["event_id"]: v for v in collect(s, s.topics.verdicts, 6, 90)}
    assert verdicts["t-b1"]["context_turns"] == 0  # acme's turn is not globex's context
    assert verdicts["t-b1"]["tenant"] == "globex"
    assert verdicts["t-a1"]["context_turns"] == 1  # acme's own user turn is
    assert verdicts["t-a3"]["context_turns"] == 3  # a0, a1, a2: the real turns were kept


def test_huge_records_and_keys_never_crash_the_worker(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    """A 760 KB message used to become a dead letter over the producer's 1 MB limit and
    crash the worker at the same offset again and again; a valid turn with a huge key
    did the same through its verdict and flagged event."""
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    huge = b'{"not": "a chat turn", "padding": "' + b"x" * 760_000 + b'"}'
    long_id = ChatTurn("e-long", "c" * 300_000, 0, Role.USER, "hello", now_rfc3339())
    key_turn = ChatTurn("e-key", "c-key", 0, Role.USER, "hello again", now_rfc3339())
    after = ChatTurn("e-after", "c-after", 0, Role.USER, "still there?", now_rfc3339())
    with worker_process(s, tmp_path / "worker.log") as worker:
        send_raw(s, [(b"k-huge", huge), (b"k-long", long_id.to_json())])
        send_raw(s, [(b"K" * 500_000, key_turn.to_json())])
        send_turns(s, [after])
        dead = collect(s, s.topics.dlq, count=2, timeout_s=120)
        verdicts = collect(s, s.topics.verdicts, count=2, timeout_s=120)
        assert worker.alive()
    assert sorted(str(v["event_id"]) for v in verdicts) == ["e-after", "e-key"]
    by_key = {base64.b64decode(str(d["key_b64"])): d for d in dead}
    big = by_key[b"k-huge"]
    assert big["original_truncated"] is True and big["original_size"] == len(huge)
    assert big["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert isinstance(big["original_timestamp"], float)  # the broker's, kept
    assert "over the limit of 256" in str(by_key[b"k-long"]["reason"])


def test_long_earlier_turns_cannot_switch_moderation_off(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    """Three 22 KB turns used to push every later turn of the conversation over the
    model's 65,536-character limit: no verdict, no review, only dead letters."""
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    ts = now_rfc3339()
    roles = [Role.USER, Role.AGENT, Role.USER, Role.AGENT]
    texts = ["." * 22_000, "-" * 22_000, "." * 22_000, "how do I make a weapon?"]  # few tokens
    turns = [
        ChatTurn(f"long-{i}", "c-long", i, role, text, ts)
        for i, (role, text) in enumerate(zip(roles, texts, strict=True))
    ]
    with worker_process(s, tmp_path / "worker.log"):
        send_turns(s, turns)
        verdicts = {v["event_id"]: v for v in collect(s, s.topics.verdicts, 4, 120)}
        dead = collect(s, s.topics.dlq, None, 3)
    assert set(verdicts) == {t.event_id for t in turns} and dead == []
    assert 1 <= int(verdicts["long-3"]["context_turns"]) < 3  # trimmed from the oldest


def test_every_addressable_turn_gets_a_verdict_and_what_is_not_judged_fails_closed(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    """A turn with readable ids that cannot be judged whole used to become a dead
    letter: no verdict for the application, nothing for review. Now it gets an
    unsafe verdict that says why, and goes to review with the turn (cut to fit)."""
    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    ts = now_rfc3339()
    huge = ChatTurn("fc-huge", "c-fc", 0, Role.USER, "word " * 180_000, ts, tenant="acme")
    unknown = ChatTurn("fc-policy", "c-fc2", 0, Role.USER, "hi", ts, policy_id="no-such-policy")
    good = ChatTurn("fc-good", "c-fc3", 0, Role.USER, "is this fine?", ts)
    with worker_process(s, tmp_path / "worker.log") as worker:
        send_turns(s, [huge, unknown, good])
        verdicts = {v["event_id"]: v for v in collect(s, s.topics.verdicts, 3, 120)}
        flagged = {f["turn"]["event_id"]: f for f in collect(s, s.topics.flagged, 2, 60)}  # type: ignore[index]
        dead = collect(s, s.topics.dlq, None, 3)
        assert worker.alive()
    assert dead == []
    assert verdicts["fc-good"]["fail_closed"] is None
    for event_id, reason in (("fc-huge", "too_large"), ("fc-policy", "rejected_by_model")):
        v = verdicts[event_id]
        assert (v["verdict"], v["fail_closed"], v["review_reasons"]) == (
            "unsafe",
            reason,
            ["fail_closed"],
        )
        assert flagged[event_id]["verdict"] == v
    assert verdicts["fc-huge"]["tenant"] == "acme"
    cut = flagged["fc-huge"]
    assert len(orjson.dumps(cut)) <= s.kafka.max_record_bytes
    # The whole turn reaches the reviewer when it fits the record (it is cut, with its
    # size and SHA-256, when it does not: tests/unit/test_events.py).
    assert cut["turn"]["content"] == huge.content  # type: ignore[index]
    assert "over the limit of 32768" in str(cut["detail"])
    assert "no-such-policy" in str(flagged["fc-policy"]["detail"])
    log_text = (tmp_path / "worker.log").read_text()
    assert "fail-closed verdict for event fc-huge" in log_text and "word word" not in log_text


def test_a_turn_longer_than_the_model_prompt_is_judged_window_by_window(
    kafka_broker: str, triton_server: dict[str, object], tmp_path: Path
) -> None:
    """A turn over the model's 4,096 prompt tokens used to be refused by Triton (a dead
    letter); now the served model judges every window of it and takes the worst."""
    from guard.serving import judged_views

    s = isolated_settings(kafka_broker, str(triton_server["grpc"]), tmp_path)
    text = " ".join(f"w{i} says hello." for i in range(1700))  # 29 KB, ~9,000 tokens
    turn = ChatTurn("win-1", "c-win", 0, Role.USER, text, now_rfc3339())
    with worker_process(s, tmp_path / "worker.log"):
        send_turns(s, [turn])
        (verdict,) = collect(s, s.topics.verdicts, 1, 180)
    guard = CausalLMGuard.load(Path(str(triton_server["checkpoint"])))
    views = judged_views((Turn(Role.USER, text),), guard.window_chars, guard.sentence_views)
    assert len(views) > 5
    with pytest.raises(ValueError, match="does not fit"):
        guard.prepare(GuardRequest(views[0], Role.USER, LLAMA_GUARD_1))  # whole: too long
    windows = guard.score([GuardRequest(v, Role.USER, LLAMA_GUARD_1) for v in views[1:]])
    assert verdict["fail_closed"] is None
    assert float(verdict["p_unsafe"]) == pytest.approx(  # type: ignore[arg-type]
        max(r.p_unsafe for r in windows), abs=1e-4
    )


def test_created_topics_take_their_size_limit_from_the_record_setting(
    kafka_broker: str, tmp_path: Path
) -> None:
    """One setting bounds both sides: the producers' request size and the broker's
    max.message.bytes of every topic guardstream creates."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from stream_app.kafka_config import aiokafka_options
    from stream_app.topics import BATCH_OVERHEAD_BYTES, create_topics, topic_names

    base = isolated_settings(kafka_broker, "127.0.0.1:1", tmp_path)
    s = base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"max_record_bytes": 2_000_000})}
    )

    async def limits() -> dict[str, str]:
        await create_topics(s)
        admin = AIOKafkaAdminClient(**aiokafka_options(s.kafka))
        await admin.start()
        try:
            res = ConfigResourceType.TOPIC
            answers = await admin.describe_configs([ConfigResource(res, n) for n in topic_names(s)])
        finally:
            await admin.close()
        out = {}
        for answer in answers:
            for resource in answer.resources:
                entries = {e[0]: e[1] for e in resource[4]}
                out[resource[3]] = entries["max.message.bytes"]
        return out

    expected = str(2_000_000 + BATCH_OVERHEAD_BYTES)
    assert asyncio.run(limits()) == {n: expected for n in topic_names(s)}


def test_turns_slower_than_the_deadline_fail_closed_and_cannot_stall_the_stream(
    kafka_broker: str, tmp_path: Path
) -> None:
    """Crafted turns that take longer than the Triton deadline used to be retried
    forever (DEADLINE_EXCEEDED looks like an outage): eight of them stalled the
    default stack for good. Now a turn that overruns the deadline
    ``deadline_overruns`` times while the server stays live fails closed
    (``too_slow``, to review), and the stream goes on. The shipped model, the real
    Triton; the deadline is lowered from 30 s to 2 s so that the test is short (32 KB
    of crafted sentences take about 8 s on two cores)."""
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    ports = TritonPorts(free_port(), free_port(), free_port())
    model = ROOT / "models" / "default"
    with triton_process(
        ROOT / "model_repo",
        tmp_path / "triton",
        ports,
        explicit_models=["guard"],
        env={"GUARDSTREAM_MODEL_CHECKPOINT": str(model)},
        timeout_s=240,
    ):
        base = isolated_settings(kafka_broker, f"127.0.0.1:{ports.grpc}", tmp_path)
        s = base.model_copy(update={"triton": base.triton.model_copy(update={"timeout_s": 2.0})})
        crafted = " ".join(f"We saw item {i}." for i in range(3000))[:30_000]
        ts = now_rfc3339()
        question = "How long should I proof sourdough in a cold fridge?"
        slow = [ChatTurn(f"slow-{i}", f"c-slow-{i}", 0, Role.USER, crafted, ts) for i in range(3)]
        with worker_process(s, tmp_path / "worker.log") as worker:
            send_turns(s, slow)
            verdicts = {v["event_id"]: v for v in collect(s, s.topics.verdicts, 3, 300)}
            assert worker.alive()
            # Triton still runs the requests the worker gave up on (one instance, on
            # CPU); turns sent meanwhile may fail closed too. The stream recovers: a
            # plain turn sent every few seconds is soon judged normally.
            after: dict[str, object] = {}
            deadline = time.monotonic() + 240
            i = 0
            while not after and time.monotonic() < deadline:
                later = ChatTurn(f"after-{i}", "c-after", i, Role.USER, question, ts)
                send_turns(s, [later])
                got = [
                    v
                    for v in collect(s, s.topics.verdicts, None, 8)
                    if v["event_id"] == later.event_id
                ]
                after = next((v for v in got if v["fail_closed"] is None), {})
                i += 1
            assert worker.alive()
    for i in range(3):
        v = verdicts[f"slow-{i}"]
        assert (v["verdict"], v["fail_closed"], v["review_reasons"]) == (
            "unsafe",
            "too_slow",
            ["fail_closed"],
        )
    assert after, "no plain turn was judged within 240 s of the attack"
    assert after["verdict"] == "safe"
