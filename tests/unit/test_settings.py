"""Settings: keyword arguments win over the environment; bad secrets fail fast."""
import pytest
from pydantic import ValidationError

from infra.adapters.settings import Settings

SECRET = "k" * 40


def test_fields_with_env_aliases_still_take_keyword_arguments(monkeypatch):
    monkeypatch.setenv("RUNLEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    settings = Settings(jwt_secret=SECRET, kafka_bootstrap="127.0.0.1:2", database_url="postgresql://x/y")
    assert (settings.kafka_bootstrap, settings.database_url) == ("127.0.0.1:2", "postgresql://x/y")


def test_plain_env_names_are_read(monkeypatch):
    monkeypatch.delenv("RUNLEDGER_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:3")
    assert Settings(jwt_secret=SECRET).kafka_bootstrap == "127.0.0.1:3"


@pytest.mark.parametrize("secret", ["changeme", "short", "secret"])
def test_placeholder_or_short_secrets_are_refused(secret):
    with pytest.raises(ValidationError, match="RUNLEDGER_JWT_SECRET"):
        Settings(jwt_secret=secret)
