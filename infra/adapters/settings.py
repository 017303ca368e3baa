"""Settings for every runledger process, from environment variables (pydantic-settings)."""
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "runledger"}


def env(name: str) -> AliasChoices:
    return AliasChoices(f"RUNLEDGER_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNLEDGER_", extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias=env("KAFKA_BOOTSTRAP"))
    database_url: str = Field("postgresql://runledger:runledger@127.0.0.1:15432/runledger",
                              validation_alias=env("DATABASE_URL"))
    clickhouse_url: str | None = Field(None, validation_alias=env("CLICKHOUSE_URL"))
    chdb_path: str = Field(".runledger/chdb", validation_alias=env("CHDB_PATH"),
                           description="data directory of the embedded ClickHouse engine (one process owns it)")
    topic_prefix: str = Field("ledger", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(6, ge=1, le=1000)
    jwt_secret: SecretStr
    jwt_audience: str = "runledger"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    command_timeout_s: float = Field(10.0, gt=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    batch_max: int = Field(1000, ge=1)
    timer_interval_s: float = Field(0.25, gt=0)
    otel_console: bool = False
    sse_retain: int = Field(100_000, ge=10, description="newest events kept per SSE channel for replay")
    sse_buffer: int = Field(1000, ge=10, description="events buffered per SSE subscriber before it is cut off")
    ops_tenant: str = Field("ops", description="admins of this tenant see platform-wide ops views")
    session_timeout_ms: int = Field(10000, ge=6000, description="broker minimum is 6000 by default")

    @field_validator("jwt_secret")
    @classmethod
    def check_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
            raise ValueError("RUNLEDGER_JWT_SECRET must be a real secret of at least 32 "
                             "characters (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(48))'`)")
        return value

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
