"""Settings for every runledger process, from environment variables (pydantic-settings)."""
import base64
import binascii
import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.retention import Rules

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "runledger"}
KEK_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
KEK_HOWTO = "python -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())'"


def env(name: str) -> AliasChoices:
    return AliasChoices(f"RUNLEDGER_{name}", name)


class Settings(BaseSettings):
    # hide_input_in_errors: a refused secret (a KEK of the wrong length, say) is never echoed into a log
    model_config = SettingsConfigDict(env_prefix="RUNLEDGER_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias=env("KAFKA_BOOTSTRAP"))
    database_url: str = Field("postgresql://runledger:runledger@127.0.0.1:15432/runledger",
                              validation_alias=env("DATABASE_URL"))
    clickhouse_url: str | None = Field(None, validation_alias=env("CLICKHOUSE_URL"))
    chdb_path: str = Field(".runledger/chdb", validation_alias=env("CHDB_PATH"),
                           description="data directory of the embedded ClickHouse engine (one process owns it)")
    archive_dir: str = Field(".runledger/archive", validation_alias=env("ARCHIVE_DIR"),
                             description="the archive projection's directory: each tenant's chain as C2SP tlog-tiles "
                                         "(<dir>/<tenant>/), servable read-only by any web server (docs/archive.md)")
    topic_prefix: str = Field("ledger", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(6, ge=1, le=1000)
    replication_factor: int = Field(1, description="RUNLEDGER_REPLICATION_FACTOR: replicas of each ledger topic "
                                    "when it is created (3 on a three-broker cluster; docs/scaling.md)")
    min_insync_replicas: int = Field(1, description="RUNLEDGER_MIN_INSYNC_REPLICAS: the topics' "
                                     "min.insync.replicas: how many replicas must have a write before it is "
                                     "acknowledged (acks=all), so how many brokers may be down (RF − this)")
    projector_replica: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description=(
        "RUNLEDGER_PROJECTOR_REPLICA: names this process's own copy of the read models kept in it (embedded chdb: "
        "audit, cost; the archive files): those projectors join groups <prefix>.projector.<name>.<replica> and "
        "read every partition; unset: one shared group. Give each process with a chdb of its own a different "
        "name (docs/scaling.md)"))
    jwt_secret: SecretStr
    jwt_audience: str = "runledger"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    command_timeout_s: float = Field(10.0, gt=0, description="RUNLEDGER_COMMAND_TIMEOUT_S: the most a command "
                                     "request waits, from producing it to its outcome (else 504 outcome_pending)")
    delivery_timeout_s: float = Field(3.0, gt=0, description="RUNLEDGER_DELIVERY_TIMEOUT_S: the most the API waits, "
                                      "within the command timeout, for the log to confirm a command it produced "
                                      "(else 503 log_unavailable)")
    unavailable_retry_after_s: int = Field(2, ge=1, le=600, description="RUNLEDGER_UNAVAILABLE_RETRY_AFTER_S: the "
                                           "Retry-After of a 503 log_unavailable")
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    batch_max: int = Field(1000, ge=1, description="commands per processor transaction, and the most one "
                           "POST /v1/commands/batch may carry")
    max_batch_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="the largest batch body; each of its "
                                 "commands is also held to RUNLEDGER_MAX_BODY_BYTES")
    clock_skew_s: float = Field(300.0, ge=0, description="how far ahead of the processor's clock a command's "
                                "occurred_at may be")
    client_time_horizon_s: float = Field(30 * 86400.0, gt=0, description="how far back from the processor's "
                                         "clock a command's occurred_at may be")
    timer_interval_s: float = Field(0.25, gt=0)
    otel_console: bool = False
    log_format: Literal["json", "text", "auto"] = Field(
        "auto", description="RUNLEDGER_LOG_FORMAT: json (one object per line, with trace and span ids), text, or "
                            "auto: text when stderr is a terminal, json otherwise")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="RUNLEDGER_METRICS_PORT: also serve the "
                                     "Prometheus page here, without a token, on RUNLEDGER_METRICS_HOST")
    metrics_host: str = Field("127.0.0.1", description="RUNLEDGER_METRICS_HOST: the address of that listener")
    metrics_refresh_s: float = Field(10.0, gt=0, description="RUNLEDGER_METRICS_REFRESH_S: how often the "
                                     "read-model gauges (lag, approval backlog, budgets, violations) are read")
    metrics_query_timeout_s: float = Field(5.0, gt=0, description="RUNLEDGER_METRICS_QUERY_TIMEOUT_S: the longest "
                                           "wait for one such read; slower ones leave the gauges stale, and say so")
    sse_retain: int = Field(100_000, ge=10, description="newest events kept per SSE channel for replay")
    sse_buffer: int = Field(1000, ge=10, description="events buffered per SSE subscriber before it is cut off")
    ops_tenant: str = Field("ops", description="admins of this tenant see platform-wide ops views")
    health_timeout_s: float = Field(1.0, gt=0, le=30, description="RUNLEDGER_HEALTH_TIMEOUT_S: the bound on each "
                                    "health probe (broker metadata, PostgreSQL, ClickHouse, a role's event loop); "
                                    "one that has not answered by then counts as down, and says so")
    health_cache_s: float = Field(2.0, ge=0, le=60, description="RUNLEDGER_HEALTH_CACHE_S: how long a probe's "
                                  "answer is reused, however many health requests arrive")
    health_port: int | None = Field(None, ge=1, le=65535, description="RUNLEDGER_HEALTH_PORT: a process without "
                                    "the API role serves /livez, /readyz and /healthz here (on RUNLEDGER_API_HOST)")
    session_timeout_ms: int = Field(3000, ge=1000, description="RUNLEDGER_SESSION_TIMEOUT_MS: how long the group "
                                    "waits for a killed processor before its partitions move; the broker's "
                                    "group.min.session.timeout.ms must be at most this (Kafka's default is 6000; "
                                    "docs/bench-failover.md)")
    retention_min_days_audit: int = Field(3 * 365, ge=0, description="no tenant may keep audit records "
                                          "(audit/discovery, cost) for fewer days")
    retention_min_days_operational: int = Field(1, ge=0, description="no tenant may keep runs, approvals "
                                                "and SSE channels for fewer days")
    retention_sweep_interval_s: float = Field(3600.0, ge=0, description="how often each processor sweeps "
                                              "its tenants' expired records (0: only when asked)")
    signing_key: SecretStr | None = Field(None, description="RUNLEDGER_SIGNING_KEY: base64 of the 32-byte Ed25519 "
                                          "seed that signs checkpoints; required by the processor role")
    deployment: str = Field("local", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                            description="names this deployment in checkpoint origins: runledger/<deployment>/<tenant>")
    checkpoint_interval_s: float = Field(10.0, ge=0, description="sign every tenant with new events this often "
                                                                 "(0: only every RUNLEDGER_CHECKPOINT_EVERY events)")
    checkpoint_every: int = Field(1000, ge=0, description="sign a tenant's tree head once this many events are "
                                                          "unsigned (0: only on the interval)")
    kek: SecretStr | None = Field(None, description="RUNLEDGER_KEK: base64 of the 32-byte key-encryption key that "
                                  "wraps content data keys (docs/adr/0008)")
    kek_id: str = Field("kek-1", pattern=KEK_ID_PATTERN, description="RUNLEDGER_KEK_ID: the id rows "
                        "wrapped under RUNLEDGER_KEK carry; a new KEK gets a new id")
    previous_keks: dict[str, SecretStr] = Field(
        default_factory=dict, description='RUNLEDGER_PREVIOUS_KEKS: JSON {"<kek id>": "<base64>"} of older KEKs '
        "that rows may still be wrapped under while a rotation runs")
    processor_kafka_client: Literal["aiokafka", "confluent"] = Field(
        "aiokafka", description="RUNLEDGER_PROCESSOR_KAFKA_CLIENT: the processor role's Kafka client, its group "
        "consumer, transactional writers and rebuild readers (docs/adr/0013-kafka-client.md); every other role "
        "stays on aiokafka. `confluent` is faster; not the default until the fix of the ADR's open defect (a "
        "partition untaken for minutes after a broker SIGKILL) has passed the outage tests repeatedly")
    # failover
    heartbeat_interval_ms: int = Field(500, ge=100, description="RUNLEDGER_HEARTBEAT_INTERVAL_MS: how often a "
                                       "processor heartbeats its group (at most a third of the session timeout), so "
                                       "how soon a survivor hears of a rebalance")
    snapshot_every: int = Field(10_000, ge=0, description="RUNLEDGER_SNAPSHOT_EVERY: a processor writes a derived "
                                "snapshot of a partition's fold once this many events were appended or replayed "
                                "since its last one, so a successor replays only what follows (0: never; "
                                "docs/adr/0012-fold-snapshots.md)")
    follow: bool = Field(True, description="RUNLEDGER_FOLLOW: a processor keeps folding the command partitions it "
                         "does not own, so that taking one over replays only the last few transactions (flat in the "
                         "log's length), at the cost of holding every partition's fold and folding each event once "
                         "more per processor (docs/adr/0015-follower-fold.md)")

    @field_validator("jwt_secret")
    @classmethod
    def check_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
            raise ValueError("RUNLEDGER_JWT_SECRET must be a real secret of at least 32 "
                             "characters (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(48))'`)")
        return value

    @field_validator("signing_key")
    @classmethod
    def check_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            kek_bytes("RUNLEDGER_SIGNING_KEY", value)  # the same shape: base64 of 32 random bytes (an Ed25519 seed)
        return value

    @property
    def signing_seed(self) -> bytes | None:
        return kek_bytes("RUNLEDGER_SIGNING_KEY", self.signing_key) if self.signing_key is not None else None

    @field_validator("kek")
    @classmethod
    def check_kek(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            kek_bytes("RUNLEDGER_KEK", value)
        return value

    @field_validator("previous_keks")
    @classmethod
    def check_previous_keks(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for kek_id, kek in value.items():
            if not re.match(KEK_ID_PATTERN, kek_id):
                raise ValueError(f"RUNLEDGER_PREVIOUS_KEKS: KEK id {kek_id!r} does not match {KEK_ID_PATTERN}")
            kek_bytes(f"RUNLEDGER_PREVIOUS_KEKS[{kek_id!r}]", kek)
        return value

    @model_validator(mode="after")
    def check_replication(self) -> "Settings":
        if self.replication_factor < 1:
            raise ValueError(f"RUNLEDGER_REPLICATION_FACTOR must be at least 1, not {self.replication_factor}")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ValueError(f"RUNLEDGER_MIN_INSYNC_REPLICAS must be between 1 and RUNLEDGER_REPLICATION_FACTOR "
                             f"({self.replication_factor}), not {self.min_insync_replicas}: with more in-sync "
                             "replicas required than there are replicas, no write could ever be acknowledged")
        return self

    @model_validator(mode="after")
    def check_kek_ring(self) -> "Settings":
        if self.previous_keks and self.kek is None:
            raise ValueError("RUNLEDGER_PREVIOUS_KEKS is set without RUNLEDGER_KEK: set the current KEK too")
        if self.kek is not None and self.kek_id in self.previous_keks:
            raise ValueError(f"RUNLEDGER_KEK_ID {self.kek_id!r} is also in RUNLEDGER_PREVIOUS_KEKS: "
                             "the current KEK and an old one need different ids")
        return self

    @property
    def retention_rules(self) -> Rules:
        return Rules({"audit": self.retention_min_days_audit, "operational": self.retention_min_days_operational})

    @property
    def commands_topic(self) -> str:
        return f"{self.topic_prefix}.commands"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def replies_topic(self) -> str:
        return f"{self.topic_prefix}.replies"

    @property
    def processor_group(self) -> str:
        return f"{self.topic_prefix}.processor"

    def transactional_id(self, partition: int) -> str:
        return f"{self.topic_prefix}.processor.p{partition}"


def kek_bytes(name: str, value: SecretStr) -> bytes:
    """Decode a KEK setting (base64 of 32 random bytes); refuse placeholders. Messages never show the value."""
    text = value.get_secret_value().strip()
    howto = f"make one with `{KEK_HOWTO}`"
    if text.lower() in PLACEHOLDER_SECRETS:
        raise ValueError(f"{name} is a placeholder, not a key: {howto}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64: it must be base64 of 32 random bytes; {howto}") from None
    if len(raw) != 32:
        raise ValueError(f"{name} decodes to {len(raw)} bytes, not 32: {howto}")
    if len(set(raw)) == 1:
        raise ValueError(f"{name} is one byte repeated, a placeholder, not a key: {howto}")
    return raw
