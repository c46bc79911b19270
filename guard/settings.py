"""The one typed settings object.

Every value can be set from the environment with the ``GUARDSTREAM_`` prefix;
nested groups use ``__`` (for example ``GUARDSTREAM_KAFKA__BROKERS`` or
``GUARDSTREAM_WORKER__BATCH_SIZE``). ``docs/settings.md`` lists them all.
Build it once at start-up with :func:`load_settings`.
"""

from __future__ import annotations

import json
import socket
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard.prompt import PromptFormat

#: The regression set that ships with guardstream (``data/regression.jsonl``).
REGRESSION_SET = Path(__file__).resolve().parents[1] / "data" / "regression.jsonl"
REPLAY_SET = Path(__file__).resolve().parents[1] / "data" / "replay.jsonl"
CALIBRATION_SET = Path(__file__).resolve().parents[1] / "data" / "calibration.jsonl"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSettings(BaseModel):
    brokers: str = Field(
        "127.0.0.1:19092", description="Comma-separated bootstrap servers (host:port)."
    )
    security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="Kafka security protocol."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certs.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    client_id: str = Field("guardstream", description="Kafka client id.")
    idle_fetch_backoff_ms: int = Field(
        20,
        ge=0,
        le=5000,
        description=(
            "Client-side pause after a fetch that returned no records (0: off). Kafka holds an"
            " empty fetch for fetch.max.wait.ms (faust's consumer: 1.5 s), longer than the"
            " pause, so there it costs nothing; the embedded local broker answers at once, and"
            " without the pause an idle worker fetches back to back and burns a core. A record"
            " that arrives while a consumer is idle waits at most this long."
        ),
    )

    max_record_bytes: int = Field(
        1_000_000,
        ge=262_144,
        description=(
            "Largest record guardstream writes (the producers' max.request.size; the topics"
            " guardstream creates get max.message.bytes = this + 1 KiB; keep topics created"
            " otherwise at least that). Dead letters and flagged events are cut to fit, and"
            " worker.max_content_bytes must leave room for a flagged turn."
        ),
    )

    def for_local_broker(self, port: int) -> KafkaSettings:
        """These settings pointed at the embedded broker on ``port``."""
        return self.model_copy(update={"brokers": f"127.0.0.1:{port}"})


class TopicSettings(BaseModel):
    input: str = Field("chat-turns.v1", description="Chat turns produced by applications.")
    verdicts: str = Field("verdicts.v1", description="Verdict events for applications.")
    flagged: str = Field("flagged.v1", description="Turns routed to human review.")
    dlq: str = Field("chat-turns.dlq.v1", description="Dead letters: bad input with the reason.")
    reviews: str = Field("reviews.v1", description="Reviewers' decisions on flagged turns.")
    reply_chunks: str = Field(
        "reply-chunks.v1",
        description="Agent replies streamed while they are generated, chunk by chunk.",
    )
    reply_verdicts: str = Field(
        "reply-verdicts.v1",
        description="Verdicts on streamed replies, window by window, then stop or final.",
    )
    partitions: int = Field(
        4, ge=1, description="Partitions used when guardstream creates the topics itself."
    )
    replication_factor: int = Field(
        1, ge=1, description="Replication factor used when guardstream creates topics."
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description=(
            "min.insync.replicas of the topics guardstream creates (at most the replication"
            " factor); unset: the broker's default. With acks=all, a write then needs this"
            " many replicas, so an acknowledged verdict survives a broker loss."
        ),
    )

    @model_validator(mode="after")
    def _insync_within_replication(self) -> TopicSettings:
        if self.min_insync_replicas and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"topics.min_insync_replicas {self.min_insync_replicas} is above"
                f" topics.replication_factor {self.replication_factor}"
            )
        return self


class WorkerSettings(BaseModel):
    app_id: str = Field("guardstream", description="faust app id (the consumer group).")
    batch_size: int = Field(32, ge=1, description="Most turns taken from the stream per batch.")
    batch_window_s: float = Field(
        0.05, gt=0, description="Longest wait (seconds) to fill a batch before sending it."
    )
    max_in_flight: int = Field(
        8,
        ge=1,
        description=(
            "Most Triton requests (one turn each) in flight at once. 8 measured best for the"
            " CPU default model (docs/performance.md); the Helm chart sets 32 for GPU servers."
        ),
    )
    max_content_bytes: int = Field(
        32_768,
        ge=1,
        description=(
            "Turns whose content is larger (UTF-8 bytes) are not judged: they get a"
            " fail-closed verdict (unsafe, fail_closed=too_large) and go to review."
        ),
    )
    max_context_turns: int = Field(
        8, ge=0, description="Prior turns kept per conversation for response checks."
    )
    max_context_chars: int = Field(
        32_768,
        ge=0,
        description=(
            "Most characters of context sent with a turn; the oldest context turns are"
            " dropped to fit, never the turn. With max_content_bytes it must stay within the"
            " Triton model's max_content_chars (65,536), or long earlier turns would push"
            " later turns over it."
        ),
    )
    max_conversations: int = Field(
        100_000, ge=1, description="Conversations whose recent turns the worker keeps in memory."
    )
    max_context_mb: int = Field(
        64,
        ge=1,
        description=(
            "Memory budget (MiB of stored text) of those recent turns; the least recently"
            " used conversations are dropped first."
        ),
    )
    max_batches_in_flight: int = Field(
        2, ge=1, description="Batches being classified at once (pipelining depth)."
    )
    session_timeout_s: float = Field(
        10.0,
        ge=6,
        description="Consumer-group session timeout: how soon a dead worker's "
        "partitions move to the others (Kafka rejects values under 6 s).",
    )
    max_poll_interval_s: float = Field(
        300.0,
        ge=10,
        description=(
            "Longest a worker may go without taking new records (its buffers full while"
            " slow batches are judged) before the broker counts it gone and rebalances."
        ),
    )
    group_instance_id: str | None = Field(
        None,
        description=(
            "Static consumer-group membership id (KIP-345): a restarted worker with the same"
            " id takes its partitions back at once (the local broker hands a dead member's"
            " partitions over no other way). Unique per worker replica; unset: app id, host"
            " name and web port, the same for a worker restarted with the same command."
        ),
    )
    read_ahead: int = Field(
        256, ge=1, description="Most messages buffered per partition ahead of classification."
    )
    web_port: int = Field(6066, description="Port of the health and /metrics endpoints.")
    web_host: str = Field("127.0.0.1", description="Bind address of the health endpoint.")
    data_dir: Path = Field(Path("var/worker"), description="faust's local state directory.")
    log_content: bool = Field(
        False, description="Log chat content (off by default: logs carry ids only)."
    )

    def instance_id(self) -> str:
        """The static membership id in force (see ``group_instance_id``)."""
        return self.group_instance_id or f"{self.app_id}-{socket.gethostname()}-{self.web_port}"


class StreamSettings(BaseModel):
    """Agent replies moderated while they stream (docs/streaming.md)."""

    window_tokens: int = Field(
        64,
        ge=8,
        description=(
            "Tokens (runs of non-space characters) of a reply judged at once; each window"
            " is judged once, when its last token is complete."
        ),
    )
    overlap_tokens: int = Field(
        16,
        ge=0,
        description=(
            "Tokens each window shares with the one before it, so that a harmful sentence"
            " cut by a window's end is judged whole in the next."
        ),
    )
    release_lag_windows: int = Field(
        1,
        ge=0,
        le=16,
        description=(
            "Hold-back: a window's text is released only once this many windows after it"
            " are judged safe too (or the whole reply), so harm that a benign start (a"
            " refusal, padding) outweighs in its own window is caught where it goes on;"
            " each window adds about its length in generation time to what is shown."
        ),
    )
    idle_s: float = Field(
        60.0,
        gt=0,
        description=(
            "A stream with no new chunk for this long is abandoned: it gets a fail-closed"
            " verdict and its state is freed."
        ),
    )
    max_streams: int = Field(
        10_000,
        ge=1,
        description=(
            "Streams a worker follows at once; a chunk that would open one more fails its"
            " stream closed."
        ),
    )
    max_duration_s: float = Field(
        600.0,
        gt=0,
        description=(
            "A stream not finished this long after its first chunk is abandoned (its"
            " chunks hold back the partition's committed offset until it ends)."
        ),
    )
    max_chunks: int = Field(
        4096, ge=1, description="Most chunk records of one stream, repeats included."
    )
    max_chunk_bytes: int = Field(
        16_384, ge=1, description="Largest text delta of one chunk (UTF-8 bytes)."
    )
    max_pending_chunks: int = Field(
        64, ge=1, description="Chunks of one stream that may wait for an earlier one."
    )


class TritonSettings(BaseModel):
    url: str = Field("127.0.0.1:8001", description="Triton gRPC address (host:port).")
    model_name: str = Field("guard", description="Model name in the Triton repository.")
    model_version: str = Field(
        "", description="Model version to call; empty means the server's latest ready version."
    )
    timeout_s: float = Field(30.0, gt=0, description="Per-request deadline, seconds.")
    retries: int = Field(
        3, ge=0, description="Retries of a failed request (the stream app retries forever)."
    )
    deadline_overruns: int = Field(
        3,
        ge=1,
        description=(
            "A turn whose request runs past the deadline this many times while the server"
            " stays live fails closed (`too_slow`, to review) instead of being retried"
            " forever: crafted turns that take longer than the deadline cannot stall a"
            " partition. An outage (server not live) is still retried forever."
        ),
    )
    backoff_initial_s: float = Field(0.2, gt=0, description="First retry delay, seconds.")
    backoff_max_s: float = Field(10.0, gt=0, description="Largest retry delay, seconds.")
    ready_timeout_s: float = Field(
        120.0, gt=0, description="How long start-up waits for the model to be ready."
    )
    control_urls: list[str] = Field(
        default_factory=list,
        description=(
            "Where model loads (retrain, rollback) are sent: every Triton replica, as a JSON"
            ' list of host:port (`["guardstream-triton-headless:8001"]`); a host name that'
            " resolves to several addresses (a Kubernetes headless Service) stands for each."
            " Empty: `url` alone, which reaches one replica behind a Service."
        ),
    )
    model_control_key: SecretStr | None = Field(
        None,
        description=(
            "Sent as the `guardstream-model-control` header on model loads (retrain,"
            " rollback) when Triton restricts its model-repository API; unset: no header."
        ),
    )

    @property
    def control_targets(self) -> list[str]:
        """Where model loads go: ``control_urls``, else ``url``."""
        return self.control_urls or [self.url]


class PolicySettings(BaseModel):
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "p_unsafe at or above which a turn is unsafe, in the served model and when"
            " guardstream scores in process (`retrain`); unset: the `threshold` parameter in"
            " config.pbtxt, else the model's own threshold."
        ),
    )
    default_policy_id: str | None = Field(
        None,
        description=(
            "Policy of a turn that names none, in the served model; unset: the"
            " `default_policy_id` parameter in config.pbtxt, else the model's own taxonomy"
            " (llama-guard-3 for a Llama Guard 3 checkpoint)."
        ),
    )
    prompt_format: PromptFormat | None = Field(
        None,
        description=(
            "Prompt format of a Llama Guard checkpoint (lg1, lg2, lg3, lg3-1b, lg4); unset:"
            " the `prompt_format` parameter in config.pbtxt, else detected from the checkpoint."
        ),
    )
    review_band_low: float = Field(
        0.35, ge=0, le=1, description="Lower edge of the uncertainty band sent to review."
    )
    review_band_high: float = Field(
        0.65, ge=0, le=1, description="Upper edge of the uncertainty band sent to review."
    )
    policy_dir: Path | None = Field(
        None, description="Directory of custom policy files (*.yaml, *.json)."
    )
    audit_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "Share of the verdicts that would not go to review (confident safe ones) sent"
            " to review anyway, reason `audit`: the misses no other rule flags are found,"
            " and the reviewed data reflects traffic. 0: no audit sample."
        ),
    )
    audit_key: SecretStr | None = Field(
        None,
        description=(
            "Key of the audit sample's choice (an HMAC of the event id): producers, who"
            " choose event ids, cannot steer their turns out of it. Unset: a random key per"
            " worker process (the same turn may then be sampled differently after a restart)."
        ),
    )

    @model_validator(mode="after")
    def _band_ordered(self) -> PolicySettings:
        if self.review_band_low > self.review_band_high:
            raise ValueError("review_band_low must not exceed review_band_high")
        return self


class _PolicyFromEnv(BaseSettings, PolicySettings):
    model_config = SettingsConfigDict(env_prefix="GUARDSTREAM_POLICY__", extra="ignore")


def policy_from_env() -> PolicySettings:
    """The policy settings alone (``GUARDSTREAM_POLICY__*``): what the served model
    reads, so that no other setting can stop it from loading."""
    return PolicySettings.model_validate(_PolicyFromEnv().model_dump())


class ReviewSettings(BaseModel):
    """Who reviews: the identity of a review tool, and the reviewers retraining trusts."""

    reviewer: str | None = Field(
        None,
        description=(
            "Reviewer id of this review tool (`guardstream review`); unset: the `--reviewer`"
            " option, else the login name. With `key`, reviews are signed as this reviewer."
        ),
    )
    key: SecretStr | None = Field(
        None,
        description="This reviewer's signing key (HMAC-SHA256 over the review's fields).",
    )

    @model_validator(mode="after")
    def _keys_long_enough(self) -> ReviewSettings:
        short = [r for r, k in self.reviewer_keys.items() if len(k.get_secret_value()) < 16]
        if short or (self.key is not None and len(self.key.get_secret_value()) < 16):
            raise ValueError(
                "review keys must be at least 16 characters"
                + (f" (reviewers {', '.join(sorted(short))})" if short else "")
            )
        return self

    reviewer_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            'Retraining: reviewer id -> key, as JSON (`{"ann": "...", "bob": "..."}`). When'
            " set, only reviews signed with their reviewer's key count (an unsigned review,"
            " or one naming another reviewer, is left out with the reason); unset: reviews"
            " are not authenticated, and retraining says so."
        ),
    )


class ConsoleSettings(BaseModel):
    """The review console in the browser (``guardstream console``; docs/console.md)."""

    host: str = Field("127.0.0.1", description="Address the console listens on.")
    port: int = Field(8088, ge=1, le=65535, description="Port the console listens on.")
    accounts_file: Path | None = Field(
        None,
        description=(
            'Reviewer accounts, JSON: `{"ann": {"password": "<hash>", "tenants": "*"}}`'
            ' (hashes from `guardstream console --hash-password`; `tenants`: `"*"` or a'
            " list, null standing for turns without a tenant). In the chart, a Secret."
        ),
    )
    identity_header: str | None = Field(
        None,
        description=(
            "A header a trusted proxy in front of the console sets to the signed-in user"
            " (OIDC in production); the user must have an account (for their tenants)."
            " Unset: reviewers sign in with a password. Only set it where every request"
            " comes through that proxy."
        ),
    )
    session_key: SecretStr | None = Field(
        None,
        description=(
            "Key that signs session cookies (at least 32 characters); unset: a random key"
            " per process, so sessions end when the console restarts and replicas do not"
            " share them."
        ),
    )
    session_ttl_s: float = Field(28_800, gt=0, description="How long a sign-in lasts.")
    secure_cookies: bool = Field(
        False, description="Send the session cookie over HTTPS only (set it behind TLS)."
    )
    overlap: int = Field(
        2,
        ge=1,
        le=9,
        description="Reviewers an item flagged as uncertain needs (for agreement and labels).",
    )
    hold_s: float = Field(
        600,
        gt=0,
        description=(
            "How long an opened item stays reserved for its reviewer, and a skipped one is"
            " not offered to them again."
        ),
    )

    @model_validator(mode="after")
    def _session_key_long_enough(self) -> ConsoleSettings:
        if self.session_key is not None and len(self.session_key.get_secret_value()) < 32:
            raise ValueError("console.session_key must be at least 32 characters")
        return self


class TrainingSettings(BaseModel):
    """Retraining from reviewed events (``guardstream retrain``)."""

    work_dir: Path = Field(Path("var/training"), description="Dataset snapshots and runs.")
    base_checkpoint: Path | None = Field(
        None, description="Checkpoint to fine-tune; default: the serving version's checkpoint."
    )
    seed_data: list[Path] = Field(
        default_factory=list,
        description="JSONL files of labelled rows mixed into every dataset (eval format).",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of conversations (by id hash) held out for validation."
    )
    calibration_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description=(
            "Share of conversations (by the same hash) kept out of training to hold the"
            " operating point on the deployment's own reviewed safe turns, beside the"
            " calibration set; as large as validation, so the operating point is held as"
            " precisely as the gate checks it (0: the calibration set alone)."
        ),
    )
    epochs: float = Field(2.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=0, description="Stop after this many steps.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step.")
    learning_rate: float = Field(
        1e-4, gt=0, description="AdamW learning rate (LoRA; a full fine-tune wants ~2e-5)."
    )
    lora: bool = Field(
        True,
        description=(
            "Train LoRA adapters (peft, all linear layers) on the frozen base; false: all"
            " weights (fp32 master weights: 16 bytes a parameter, too much for 8B on one GPU)."
        ),
    )
    lora_rank: int = Field(8, ge=1, description="LoRA rank.")
    drop_categories: bool = Field(
        True, description="Augmentation: drop a random subset of non-violated categories."
    )
    drop_violated: bool = Field(
        True, description="Augmentation: drop all violated categories and relabel safe."
    )
    shuffle_codes: bool = Field(
        True, description="Augmentation: shuffle the category order and renumber the codes."
    )
    augment_probability: float = Field(
        0.3, ge=0, le=1, description="Chance that each augmentation applies to an example."
    )
    promotion_margin: float = Field(
        0.01,
        ge=0,
        description="Validation AUPRC the candidate must gain over the serving version.",
    )
    regression_data: Path | None = Field(
        None,
        description=(
            "Fixed regression set (evaluation JSONL, public held-out data never trained on):"
            " the candidate may not do worse on it than the serving version (the gate's"
            " tolerances). Unset: the one guardstream ships, `data/regression.jsonl`."
        ),
    )
    require_approval: bool = Field(
        False,
        description=(
            "Stage a candidate that passes the gate instead of promoting it; a person"
            " promotes it with `guardstream promote --approve ID` (or rejects it)."
        ),
    )
    regression_gate: bool = Field(
        True, description="Hold candidates to the regression set (false: validation only)."
    )
    gate_min_rows: int = Field(
        30,
        ge=1,
        description=(
            "Rows an evaluation set, side or category needs for the gate to count it; a"
            " validation split this small fails the gate."
        ),
    )
    gate_auprc_tolerance: float = Field(
        0.01, ge=0, description="Regression-set AUPRC the candidate may lose."
    )
    gate_recall_tolerance: float = Field(
        0.02, ge=0, description="Recall per side, at the operating threshold, it may lose."
    )
    gate_fpr_tolerance: float = Field(
        0.01, ge=0, description="False-positive rate per side it may add."
    )
    gate_category_tolerance: float = Field(
        0.05, ge=0, description="AUPRC per category it may lose."
    )
    gate_significance: float = Field(
        0.05,
        gt=0,
        le=1,
        description=(
            "A recall fall or FPR rise beyond its tolerance fails the gate only when the"
            " rows whose verdict flipped make it more than chance: one-sided sign test"
            " (exact McNemar) p below this. 1: every rise beyond the tolerance fails."
        ),
    )
    min_examples: int = Field(
        10, ge=1, description="Fewer reviewed examples than this: retraining is skipped."
    )
    seed: int = Field(0, description="Seed of augmentations and training.")
    head_pull: float = Field(
        0.005,
        gt=0,
        description=(
            "Retraining an encoder guard (the shipped default): weight of the squared"
            " distance of its heads to the serving heads; larger keeps the candidate closer"
            " to the serving model."
        ),
    )
    encoder_update: Literal["adapter", "heads"] = Field(
        "heads",
        description=(
            "Retraining an encoder guard: `heads` moves the heads alone on the frozen"
            " encoder (seconds; a side without reviews keeps its scores exactly);"
            " `adapter` also continues its LoRA adapter, on the reviews plus the replay"
            " set (can learn what the frozen encoder cannot separate, and moves its scores"
            " on all traffic; minutes on CPU). docs/retraining.md compares the two."
        ),
    )
    adapter_epochs: int = Field(2, ge=1, description="Passes over reviews and replay rows.")
    adapter_learning_rate: float = Field(
        2e-4, gt=0, description="Learning rate of the encoder's LoRA adapter."
    )
    replay_data: Path | None = Field(
        None,
        description=(
            "Rows the serving model was trained on, trained on again beside the reviews so"
            " that it does not forget them (evaluation JSONL). Unset: the sample of the"
            " shipped model's training data that guardstream ships, `data/replay.jsonl`."
        ),
    )
    hold_operating_point: bool = Field(
        True,
        description=(
            "Retraining an encoder guard: shift the candidate's side heads so that its"
            " false-positive rate per side is at most the serving model's on the"
            " calibration set and on the calibration split's safe reviewed turns (its"
            " gain is then recall at the same false-positive rate)."
        ),
    )
    calibration_data: Path | None = Field(
        None,
        description=(
            "Safe turns of real traffic that nothing trains on, for holding the operating"
            " point (evaluation JSONL; its unsafe rows are ignored). Unset: the one"
            " guardstream ships, `data/calibration.jsonl`."
        ),
    )
    replay_weight: float = Field(
        1.0, ge=0, description="Total weight of the replay rows relative to the reviews."
    )
    split_key: SecretStr | None = Field(
        None,
        description=(
            "Key of the train/validation split (an HMAC of the conversation id): without"
            " it, whoever picks conversation ids cannot pick the split. Unset: a random key"
            " made once and kept in `<model repository>/.guardstream/split.key`."
        ),
    )

    @model_validator(mode="after")
    def _splits_leave_training(self) -> TrainingSettings:
        if self.validation_fraction + self.calibration_fraction >= 1:
            raise ValueError(
                "training.validation_fraction + training.calibration_fraction must be below 1"
            )
        return self


class LocalSettings(BaseModel):
    """Embedded parts for local runs and tests (never used in production)."""

    data_dir: Path = Field(Path("var"), description="Where local runs keep their state.")
    broker_port: int = Field(19092, description="Port of the embedded Kafka-protocol broker.")
    triton_http_port: int = Field(8000, description="HTTP port of the local tritonserver.")
    triton_grpc_port: int = Field(8001, description="gRPC port of the local tritonserver.")
    triton_metrics_port: int = Field(8002, description="Metrics port of the local tritonserver.")
    model_repository: Path = Field(
        Path("model_repo"), description="Model repository served by the local tritonserver."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GUARDSTREAM_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    streams: StreamSettings = StreamSettings()
    triton: TritonSettings = TritonSettings()
    policy: PolicySettings = PolicySettings()
    review: ReviewSettings = ReviewSettings()
    console: ConsoleSettings = ConsoleSettings()
    training: TrainingSettings = TrainingSettings()
    local: LocalSettings = LocalSettings()
    log_level: str = Field("INFO", description="Python log level.")

    @model_validator(mode="after")
    def _content_fits_a_record(self) -> Settings:
        # A flagged event carries the turn and the context it was judged in next to
        # its verdict; what does not fit is cut (FlaggedEvent.to_json), but an
        # ordinary turn of the largest accepted size must arrive whole.
        need = self.worker.max_content_bytes * 2 + 65_536
        if need > self.kafka.max_record_bytes:
            raise ValueError(
                f"worker.max_content_bytes {self.worker.max_content_bytes} needs"
                f" kafka.max_record_bytes >= {need} (is {self.kafka.max_record_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _windows_advance(self) -> Settings:
        if self.streams.overlap_tokens >= self.streams.window_tokens:
            raise ValueError(
                f"streams.overlap_tokens {self.streams.overlap_tokens} must be below"
                f" streams.window_tokens {self.streams.window_tokens}"
            )
        return self

    def to_env(self) -> dict[str, str]:
        """``GUARDSTREAM_*`` variables that make a child process see these settings."""
        env = {"GUARDSTREAM_LOG_LEVEL": self.log_level}
        groups = (
            "kafka",
            "topics",
            "worker",
            "streams",
            "triton",
            "policy",
            "training",
            "console",
            "local",
        )
        for group in groups:
            values = getattr(self, group).model_dump(mode="json")
            for key, value in values.items():
                if isinstance(getattr(getattr(self, group), key), SecretStr):
                    continue  # passed below, or not at all
                if value is not None:
                    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
                    env[f"GUARDSTREAM_{group.upper()}__{key.upper()}"] = text
        if self.kafka.sasl_password is not None:
            env["GUARDSTREAM_KAFKA__SASL_PASSWORD"] = self.kafka.sasl_password.get_secret_value()
        if self.triton.model_control_key is not None:
            key = self.triton.model_control_key.get_secret_value()
            env["GUARDSTREAM_TRITON__MODEL_CONTROL_KEY"] = key
        if self.training.split_key is not None:
            env["GUARDSTREAM_TRAINING__SPLIT_KEY"] = self.training.split_key.get_secret_value()
        if self.console.session_key is not None:
            env["GUARDSTREAM_CONSOLE__SESSION_KEY"] = self.console.session_key.get_secret_value()
        return env

    def for_local_stack(self) -> Settings:
        """These settings pointed at the embedded broker and the local tritonserver."""
        return self.model_copy(
            update={
                "kafka": self.kafka.for_local_broker(self.local.broker_port),
                "triton": self.triton.model_copy(
                    update={"url": f"127.0.0.1:{self.local.triton_grpc_port}"}
                ),
            }
        )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]


def settings_markdown() -> str:
    """The settings reference (docs/settings.md), generated from the fields."""
    lines = [
        "# Settings",
        "",
        "Generated by `guardstream settings` from `guard/settings.py`; a test keeps it current.",
        "Every value comes from the environment: prefix `GUARDSTREAM_`, groups joined with `__`.",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for group_name, group_field in Settings.model_fields.items():
        group_type = group_field.annotation
        if isinstance(group_type, type) and issubclass(group_type, BaseModel):
            for name, field in group_type.model_fields.items():
                var = f"GUARDSTREAM_{group_name.upper()}__{name.upper()}"
                lines.append(f"| `{var}` | `{field.default}` | {field.description} |")
        else:
            var = f"GUARDSTREAM_{group_name.upper()}"
            lines.append(f"| `{var}` | `{group_field.default}` | {group_field.description} |")
    return "\n".join(lines) + "\n"
