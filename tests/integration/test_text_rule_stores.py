"""The intake's text rule (domain/text.py) against every store: what it admits, PostgreSQL text and jsonb
and ClickHouse String keep exactly; what it refuses, PostgreSQL really cannot keep (so the rule is
neither too loose nor needlessly strict where it matters)."""
import json
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from domain.text import unstorable
from infra.adapters.clickhouse import ChdbClickHouse
from tests.support import DATABASE_URL

ADMITTED = st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda t: unstorable(t) is None)
EDGES = ["tab\there", "line\nbreak\r\n", "\x7f DEL", "\x85 NEL and \x9f C1", "\u2028\u2029", "\ufeffBOM",
         "\ufffd\uffff\U0010ffff", "e\u0301 combining", "\u202eRTL", "emoji \U0001f600", "'; DROP TABLE x; --",
         "\\u0000 spelled out", "a" * 2000]


@pytest.fixture(scope="module")
def pg():
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def ch(tmp_path_factory):
    engine = ChdbClickHouse(str(tmp_path_factory.mktemp("chdb-text")))
    db = f"rl_text_{uuid.uuid4().hex[:10]}"
    engine.command(f"CREATE DATABASE {db}")
    engine.command(f"CREATE TABLE {db}.t (k UInt64, v String) ENGINE = MergeTree ORDER BY k")
    try:
        yield engine, f"{db}.t"
    finally:
        engine.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        engine.close()


def round_trip_postgres(pg, text: str) -> tuple[str, str]:
    row = pg.execute("SELECT %s::text, (%s::jsonb) ->> 'v'", (text, json.dumps({"v": text}))).fetchone()
    return row[0], row[1]


def round_trip_clickhouse(ch, text: str, key: int) -> str:
    engine, table = ch
    engine.insert(table, ["k", "v"], [(key, text)], ["UInt64", "String"])
    return engine.query(f"SELECT v FROM {table} WHERE k = {{k:UInt64}}", {"k": key})[0]["v"]


@pytest.mark.parametrize("text", EDGES)
def test_edge_text_the_rule_admits_is_kept_exactly_by_every_store(pg, ch, text):
    assert unstorable(text) is None
    assert round_trip_postgres(pg, text) == (text, text)
    assert round_trip_clickhouse(ch, text, abs(hash(text)) % 2**63) == text


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ADMITTED)
def test_any_text_the_rule_admits_is_kept_exactly_by_every_store(pg, ch, text):
    assert round_trip_postgres(pg, text) == (text, text)
    assert round_trip_clickhouse(ch, text, int(uuid.uuid4().int % 2**63)) == text


@pytest.mark.parametrize("text, error", [("before\x00after", psycopg.DataError),
                                         ("lone \ud800 surrogate", UnicodeEncodeError)])
def test_what_the_rule_refuses_postgresql_cannot_keep(pg, text, error):
    assert unstorable(text) is not None
    with pytest.raises(error):
        pg.execute("SELECT %s::text", (text,)).fetchone()


def test_a_nul_escape_is_refused_by_jsonb_as_the_channels_projection_would_meet_it(pg):
    assert unstorable("\x00") is not None
    with pytest.raises(psycopg.DataError):
        pg.execute("SELECT %s::jsonb", (json.dumps({"v": "\x00"}),)).fetchone()
