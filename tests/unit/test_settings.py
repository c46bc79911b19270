from pathlib import Path

import pytest
from pydantic import ValidationError

from guard.settings import Settings, load_settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_environment_overrides_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__BROKERS", "k1:9092,k2:9092")
    monkeypatch.setenv("GUARDSTREAM_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("GUARDSTREAM_WORKER__BATCH_SIZE", "7")
    s = load_settings()
    assert s.kafka.brokers == "k1:9092,k2:9092"
    assert s.worker.batch_size == 7
    assert "hunter2" not in s.model_dump_json()


def test_invalid_values_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_POLICY__REVIEW_BAND_LOW", "0.9")
    monkeypatch.setenv("GUARDSTREAM_POLICY__REVIEW_BAND_HIGH", "0.1")
    with pytest.raises(ValidationError, match="review_band_low"):
        load_settings()


def test_settings_doc_is_current_and_documents_every_field() -> None:
    doc = settings_markdown()
    assert (ROOT / "docs" / "settings.md").read_text() == doc, "regenerate docs/settings.md"
    assert "| None |" not in doc  # every field has a description


def test_idle_fetch_pause_is_on_by_default_and_kept_by_the_local_stack() -> None:
    s = Settings()
    assert s.kafka.idle_fetch_backoff_ms == 20  # `guardstream worker` as the README runs it
    local = s.for_local_stack()
    assert local.kafka.idle_fetch_backoff_ms == 20
    assert local.kafka.brokers == f"127.0.0.1:{s.local.broker_port}"
    chosen = Settings(kafka={"idle_fetch_backoff_ms": 5}).for_local_stack()  # type: ignore[arg-type]
    assert chosen.kafka.idle_fetch_backoff_ms == 5
    # the worker process gets it through its environment
    assert local.to_env()["GUARDSTREAM_KAFKA__IDLE_FETCH_BACKOFF_MS"] == "20"


def test_content_limit_must_fit_in_a_record() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"needs kafka\.max_record_bytes"):
        Settings(worker={"max_content_bytes": 600_000})  # type: ignore[arg-type]
    ok = Settings(
        worker={"max_content_bytes": 600_000},  # type: ignore[arg-type]
        kafka={"max_record_bytes": 2_000_000},  # type: ignore[arg-type]
    )
    assert ok.kafka.max_record_bytes == 2_000_000


def test_static_membership_id_is_stable_per_command_and_distinct_per_process() -> None:
    import socket

    a = Settings(worker={"web_port": 6066})  # type: ignore[arg-type]
    assert a.worker.instance_id() == f"guardstream-{socket.gethostname()}-6066"
    assert a.worker.instance_id() == Settings(worker={"web_port": 6066}).worker.instance_id()  # type: ignore[arg-type]
    assert Settings(worker={"web_port": 6067}).worker.instance_id() != a.worker.instance_id()  # type: ignore[arg-type]
    named = Settings(worker={"group_instance_id": "pod-0"})  # type: ignore[arg-type]
    assert named.worker.instance_id() == "pod-0"


def test_topics_are_created_with_min_insync_replicas_within_the_replication_factor() -> None:
    from stream_app.topics import topic_configs

    assert "min.insync.replicas" not in topic_configs(Settings())  # the broker's default
    s = Settings(topics={"replication_factor": 3, "min_insync_replicas": 2})  # type: ignore[arg-type]
    assert topic_configs(s)["min.insync.replicas"] == "2"
    with pytest.raises(ValueError, match="min_insync_replicas 3 is above"):
        Settings(topics={"replication_factor": 2, "min_insync_replicas": 3})  # type: ignore[arg-type]


def test_review_keys_shorter_than_16_characters_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "GUARDSTREAM_REVIEW__REVIEWER_KEYS", '{"ann": "short", "bob": "long-enough-key-1"}'
    )
    with pytest.raises(ValidationError, match=r"at least 16 characters.*ann"):
        load_settings()
